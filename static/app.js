// The wschat browser client: connect, show messages as text, send,
// reconnect with backoff and resume where the page left off. Every text
// goes through textContent, never HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const list = $("messages");
const form = $("compose");
const usrInput = $("usr");
const jwtInput = $("jwt");
const msgInput = $("msg");

usrInput.value = localStorage.getItem("wschat.usr") || "";
jwtInput.value = localStorage.getItem("wschat.jwt") || "";

let ws = null;
let attempt = 0;
// A connection must stay open this long before the backoff starts over:
// a server that accepts and drops at once (restarting, shedding load)
// then still sees every tab come back spread out, not all at once.
const STABLE_MS = 10000;
// Every `tim` shown. A page that reconnects asks for what came after the
// last one (`lastTim`), but a server that does not resume (an older one)
// first replays its history, which the page may have shown already:
// while that replay lasts (until the first message not shown yet), a
// message with a `tim` shown before is skipped. Live messages are never
// compared: their `tim` may be older than one shown (a clock that ran
// ahead, a restart), and they are new all the same.
const shownTims = new Set();
let replaying = false;
// The `tim` of the last message shown: the cursor the page resumes from
// (README, "Resume").
let lastTim = null;

fetch("/healthz").then((r) => r.json()).then((cfg) => {
  $("token-label").hidden = !cfg.jwt;
  modClaim = typeof cfg.mod_claim === "string" ? cfg.mod_claim : null;
  updateModeration();
}).catch(() => {});

function setStatus(state, text) {
  const el = $("status");
  el.dataset.state = state;
  el.textContent = text;
}

function showError(text) {
  const el = $("error");
  el.textContent = text;
  el.hidden = !text;
}

function connect() {
  ws = new WebSocket(socketUrl());
  setStatus("connecting", "connecting…");
  const socket = ws;
  ws.onopen = () => {
    setStatus("open", "connected");
    replaying = shownTims.size > 0;
    setTimeout(() => {
      if (ws === socket && socket.readyState === WebSocket.OPEN) attempt = 0;
    }, STABLE_MS);
  };
  ws.onmessage = (event) => {
    let data;
    try { data = JSON.parse(event.data); } catch { return; }
    if (data === null || typeof data !== "object") return;
    // Relayed messages carry `tim`; the server's error and notice frames
    // never do. An `err` field in a relayed message is just a field its
    // publisher sent: it is shown as part of a message, never as an error.
    if (typeof data.tim !== "string") {
      if (typeof data.err === "string") showError(describe(data));
      else if (isGap(data)) showGap(data.gap);
      return;
    }
    if (replaying && shownTims.has(data.tim)) return;
    replaying = false;
    shownTims.add(data.tim);
    lastTim = data.tim;
    show(data);
    applyModeration(data);
  };
  ws.onclose = (event) => {
    showError(whyClosed(event));
    const delay = Math.min(30000, 500 * 2 ** attempt) * (0.5 + Math.random() / 2);
    attempt += 1;
    setStatus("closed", "disconnected; retrying in " + Math.round(delay / 1000) + " s");
    setTimeout(connect, delay);
  };
}

const ERRORS = {
  invalid_json: "The server could not read that message.",
  invalid_message: "A message needs a name and a text.",
  unauthorized: "Not allowed to send: check your token.",
  rate_limited: "You are sending too fast; wait a moment.",
  unsupported: "That kind of message is not supported.",
  unavailable: "The server cannot relay messages right now; try again soon.",
  muted: "A moderator has muted this name for now, so your message was not sent.",
};

// Why the connection closed, by close code (the server's are listed in the
// README, "Errors and close codes"); 1006 means no close frame came.
const CLOSES = {
  1001: "The server closed the connection: it is restarting, or it heard nothing from this page for too long.",
  1002: "The server closed the connection: this browser broke the WebSocket protocol.",
  1007: "The server closed the connection: a message was not valid UTF-8 text.",
  1008: "The server closed the connection: this page fell too far behind the chat (a slow network?).",
  1009: "Your message was too large, so it was not sent and the server closed the connection.",
  1006: "The connection to the server was lost.",
};

function whyClosed(event) {
  const text = CLOSES[event.code]
    || "The connection closed (code " + event.code + ").";
  return text + (event.reason ? " (" + event.reason + ")" : "");
}

function describe(err) {
  let detail = typeof err.detail === "string" ? err.detail : "";
  if (err.err === "muted") {
    // Until when, in the reader's local time.
    detail = detail.replace(/\d{4}-\d\d-\d\dT[\d:.]+Z/, (tim) => {
      const until = new Date(tim);
      return isNaN(until) ? tim : until.toLocaleString();
    });
  }
  return (ERRORS[err.err] || "Error") + (detail ? " (" + detail + ")" : "");
}

function show(m) {
  const follow = following();
  const li = document.createElement("li");
  if (m.usr === usrInput.value) li.classList.add("own");
  if (m.mod !== undefined) li.classList.add("mod");
  li.dataset.tim = String(m.tim);
  li.dataset.usr = String(m.usr);
  const usr = document.createElement("span");
  usr.className = "usr";
  usr.textContent = String(m.usr);
  const msg = document.createElement("span");
  msg.className = "msg";
  msg.textContent = String(m.msg);
  const time = document.createElement("time");
  time.dateTime = String(m.tim);
  const when = new Date(m.tim);
  time.textContent = formatWhen(when);
  if (!isNaN(when)) time.title = when.toLocaleString();
  li.append(usr, msg, time);
  if (moderating) addControls(li);
  list.append(li);
  if (follow) li.scrollIntoView({ block: "end" });
}

// Whether the view shows the newest message: new ones then stay in view.
function following() {
  const view = list.parentElement;
  return view.scrollHeight - view.scrollTop - view.clientHeight < 40;
}

// A message's time in the reader's locale; with its day when it is not
// from today, and its year when not from this year.
function formatWhen(when, now = new Date()) {
  if (isNaN(when)) return "";
  const time = when.toLocaleTimeString();
  if (when.toDateString() === now.toDateString()) return time;
  const day = { weekday: "short", day: "numeric", month: "short" };
  if (when.getFullYear() !== now.getFullYear()) day.year = "numeric";
  return when.toLocaleDateString(undefined, day) + " " + time;
}

// --- Resume (README, "Resume") ---

// The WebSocket URL: once a message has been shown, with `?since=` its
// `tim`, so the server sends exactly what came after it (instead of its
// history), also across a drop or a restart.
function socketUrl() {
  const url = new URL("/", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (lastTim) url.searchParams.set("since", lastTim);
  return url.href;
}

// The server's gap notice: it holds nothing as old as the page's cursor,
// so messages between the two may be missing.
function isGap(data) {
  return data.gap !== null && typeof data.gap === "object"
    && typeof data.gap.since === "string";
}

function describeGap(gap) {
  const since = formatWhen(new Date(gap.since));
  if (typeof gap.first !== "string") {
    return "Messages after " + since + " may be missing: the server holds none.";
  }
  return "Messages between " + since + " and " + formatWhen(new Date(gap.first))
    + " may be missing: the server no longer holds them.";
}

// The gap notice in the list, where the gap is; once, however often the
// page reconnects to a room that still holds nothing after it.
function showGap(gap) {
  const text = describeGap(gap);
  const last = list.lastElementChild;
  if (last && last.classList.contains("gap") && last.textContent === text) return;
  const follow = following();
  const li = document.createElement("li");
  li.className = "gap";
  li.setAttribute("role", "note");
  li.textContent = text;
  list.append(li);
  if (follow) li.scrollIntoView({ block: "end" });
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    showError("Not connected yet; your message was not sent.");
    return;
  }
  const message = { usr: usrInput.value.trim(), msg: msgInput.value };
  if (jwtInput.value) message.jwt = jwtInput.value.trim();
  localStorage.setItem("wschat.usr", message.usr);
  localStorage.setItem("wschat.jwt", jwtInput.value.trim());
  ws.send(JSON.stringify(message));
  msgInput.value = "";
  showError("");
});

// Moderation (README, "Moderation"). With a moderator's token entered,
// each message offers "Retract" and "Mute sender" (for the time chosen in
// "Mute for"); the server refuses anyone else, so the token's payload is
// only read here to decide whether to show the controls, never trusted.
let modClaim = null;
let moderating = false;
const muteSeconds = $("mute-seconds");

function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

function updateModeration() {
  const claims = modClaim ? tokenClaims(jwtInput.value.trim()) : null;
  const on = claims !== null && typeof claims === "object" && claims[modClaim] === true;
  if (on === moderating) return;
  moderating = on;
  $("mute-label").hidden = !on;
  for (const li of list.querySelectorAll("li[data-tim]")) {
    const controls = li.querySelector(".mod-controls");
    if (on && !controls) addControls(li);
    if (!on && controls) controls.remove();
  }
}

jwtInput.addEventListener("input", updateModeration);

function addControls(li) {
  const who = li.dataset.usr;
  const when = li.querySelector("time").textContent;
  const controls = document.createElement("span");
  controls.className = "mod-controls";
  const retract = document.createElement("button");
  retract.type = "button";
  retract.textContent = "Retract";
  retract.setAttribute("aria-label", "Retract the message from " + who + (when ? " at " + when : ""));
  retract.addEventListener("click", () =>
    moderate({ retract: li.dataset.tim }, "Retracted a message from " + who + "."));
  const mute = document.createElement("button");
  mute.type = "button";
  mute.textContent = "Mute sender";
  mute.setAttribute("aria-label", "Mute " + who + " (for the time chosen in Mute for)");
  mute.addEventListener("click", () => {
    const seconds = Number(muteSeconds.value);
    const words = seconds === 0
      ? "Lifted the mute on " + who + "."
      : "Muted " + who + " for " + muteSeconds.selectedOptions[0].textContent + ".";
    moderate({ mute: who, seconds }, words);
  });
  controls.append(retract, mute);
  li.append(controls);
}

// Sends a moderation action; its `msg` says what happened in words, for
// pages that know nothing of moderation.
function moderate(action, words) {
  const usr = usrInput.value.trim();
  if (!usr) {
    showError("Enter your name before moderating.");
    usrInput.focus();
    return;
  }
  if (!ws || ws.readyState !== WebSocket.OPEN) {
    showError("Not connected yet; nothing was done.");
    return;
  }
  ws.send(JSON.stringify({ usr, msg: words, mod: action, jwt: jwtInput.value.trim() }));
  showError("");
}

// A retraction hides the message it names wherever it is shown. It names
// it by instant, in any RFC 3339 form (README, "Moderation"), and is
// relayed as the moderator sent it, so instants are compared, not text.
function applyModeration(m) {
  const mod = m.mod;
  if (mod === null || typeof mod !== "object" || typeof mod.retract !== "string") return;
  const named = instant(mod.retract);
  if (named === null) return;
  for (const li of list.querySelectorAll("li[data-tim]")) {
    if (instant(li.dataset.tim) === named) li.remove();
  }
}

// The instant an RFC 3339 time names, as text that two forms of one
// instant share (another offset, more or fewer fractional digits): whole
// seconds since 1970 and nine fractional digits, read as the server reads
// them (digits past the ninth are dropped). Exact to the nanosecond, which
// a Date is not. null when it is no such time.
function instant(tim) {
  const m = /^(\d{4})-(\d\d)-(\d\d)[Tt ](\d\d):(\d\d):(\d\d)(?:\.(\d+))?(?:[Zz]|([+-])(\d\d):(\d\d))$/.exec(tim);
  if (m === null) return null;
  const day = new Date(0);
  day.setUTCFullYear(+m[1], +m[2] - 1, +m[3]);
  let seconds = day.getTime() / 1000 + +m[4] * 3600 + +m[5] * 60 + +m[6];
  if (m[8] !== undefined) seconds -= (m[8] === "-" ? -1 : 1) * (+m[9] * 3600 + +m[10] * 60);
  return seconds + "." + ((m[7] || "") + "000000000").slice(0, 9);
}

connect();
