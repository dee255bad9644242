// The peer wschat is compared with: a Node.js relay on the `ws` package
// doing the same work (parse, check usr/msg, stamp tim, relay to all).
// Usage: node node-relay.js PORT
"use strict";
const { WebSocketServer } = require("ws");

const port = Number(process.argv[2] || 8090);
const wss = new WebSocketServer({ host: "127.0.0.1", port });

wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => {
    if (isBinary) return ws.send('{"err":"unsupported"}');
    let m;
    try { m = JSON.parse(data); } catch { return ws.send('{"err":"invalid_json"}'); }
    if (m === null || typeof m !== "object" || typeof m.usr !== "string" || typeof m.msg !== "string") {
      return ws.send('{"err":"invalid_message"}');
    }
    delete m.jwt;
    m.tim = new Date().toISOString();
    const out = JSON.stringify(m);
    for (const client of wss.clients) {
      if (client.readyState === 1) client.send(out);
    }
  });
});
wss.on("listening", () => console.error(`listening on http://127.0.0.1:${port}/`));
