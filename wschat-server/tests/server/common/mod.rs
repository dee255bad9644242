//! Test helpers: a real server on a free port, real WebSocket clients.

pub mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wschat_server::Config;

/// How long a test waits for something that should happen.
pub const WAIT: Duration = Duration::from_secs(10);

/// A server running in this process.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts a server with `args` (as on the command line) on a free port.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), args).await
    }

    /// Starts a server on `addr`, e.g. the one a stopped server had.
    pub async fn start_on(addr: SocketAddr, args: &[&str]) -> Self {
        let config = Config::from_args(args).expect("test options parse");
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            wschat_server::run(listener, config, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/", self.addr)
    }

    pub async fn client(&self) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(self.url()).await.unwrap();
        Client { ws }
    }

    /// A client whose socket receive buffer is only `bytes` large, so that
    /// the server's writes to it block after a few messages unread.
    pub async fn client_with_receive_buffer(&self, bytes: u32) -> WebSocketStream<TcpStream> {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let tcp = socket.connect(self.addr).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(self.url(), tcp)
            .await
            .unwrap();
        ws
    }

    /// Stops the server and starts another with `args` on its address, as
    /// a restart does.
    pub async fn restart(self, args: &[&str]) -> Self {
        let addr = self.addr;
        self.stop().await;
        Self::start_on(addr, args).await
    }

    /// Stops the server and waits until `run` has returned.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .unwrap()
            .unwrap();
    }

    /// A plain HTTP GET: status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, path, &[]).await
    }

    /// A WebSocket upgrade request to `path`, read as plain HTTP: status
    /// and body (for upgrades the server refuses).
    pub async fn get_upgrade(&self, path: &str) -> (u16, String) {
        let headers = [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Version", "13"),
        ];
        http_get(self.addr, path, &headers).await
    }
}

/// Stops every server in `servers`, one after the other.
pub async fn stop_all(servers: impl IntoIterator<Item = TestServer>) {
    for server in servers {
        server.stop().await;
    }
}

/// Reads from a connection until the server closes it; `false` if it is
/// still open after `ms` milliseconds.
pub async fn closed_within(tcp: &mut TcpStream, ms: u64) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_millis(ms), tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Sends a raw HTTP/1.1 request and reads the whole answer.
pub async fn http_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let answer = http_request(addr, path, headers).await;
    (answer.status, answer.body)
}

/// An HTTP answer as received.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Answer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Parses a raw answer; status 0 when there was none.
    pub fn parse(text: &str) -> Self {
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text, ""));
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Answer {
            status,
            headers,
            body: body.to_owned(),
        }
    }
}

/// A GET with `Connection: close` and `headers`: the whole answer.
pub async fn http_request(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    Answer::parse(&raw_exchange(addr, req.as_bytes()).await)
}

/// Writes `request` on a new connection and reads until the server
/// closes it (a reset ends the answer too); panics after [`WAIT`].
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before reading it all.
    let _ = tcp.write_all(request).await;
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("the server neither answered nor closed the connection");
    String::from_utf8_lossy(&buf).into_owned()
}

/// A real WebSocket client, over plain TCP unless `S` says otherwise (a
/// TLS stream: [`tls::wss_client`]).
pub struct Client<S = MaybeTlsStream<TcpStream>> {
    pub ws: WebSocketStream<S>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::Binary(Bytes::copy_from_slice(data)))
            .await
            .unwrap();
    }

    /// The next text frame, as sent.
    pub async fn recv_text(&mut self) -> String {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a message")
                .expect("connection ended")
                .expect("connection error");
            match msg {
                Message::Text(t) => return t.to_string(),
                Message::Close(c) => panic!("closed while waiting for a message: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next text frame, parsed.
    pub async fn recv(&mut self) -> Value {
        serde_json::from_str(&self.recv_text().await).unwrap()
    }

    /// Sends `frame` and expects the error code `code` back.
    pub async fn expect_error(&mut self, frame: &str, code: &str) {
        self.send(frame).await;
        let reply = self.recv().await;
        assert_eq!(reply["err"], code, "reply to {frame:?}: {reply}");
        assert!(
            reply["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{reply}"
        );
    }

    /// Asserts that no text frame arrives within `ms` milliseconds.
    pub async fn expect_silence(&mut self, ms: u64) {
        let got = tokio::time::timeout(Duration::from_millis(ms), async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => return Some(t.to_string()),
                    Some(Ok(_)) => continue,
                    _ => return None,
                }
            }
        })
        .await;
        if let Ok(Some(text)) = got {
            panic!("expected nothing, got {text}");
        }
    }

    /// Reads until the server's close frame and returns it, after reading
    /// on until the server ends the connection, cleanly (no reset), and
    /// closing the socket's sending side as a client does then.
    pub async fn recv_close(&mut self) -> Option<CloseFrame> {
        use tokio::io::AsyncWriteExt;
        tokio::time::timeout(WAIT, async {
            while let Some(msg) = self.ws.next().await {
                match msg {
                    Ok(Message::Close(frame)) => {
                        if let Some(Err(e)) = self.ws.next().await {
                            panic!("error after the close frame: {e}");
                        }
                        let _ = self.ws.get_mut().shutdown().await;
                        return frame;
                    }
                    Ok(_) => continue,
                    Err(e) => panic!("error before close frame: {e}"),
                }
            }
            panic!("connection ended without a close frame");
        })
        .await
        .expect("timed out waiting for close")
    }
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The stderr of a spawned server, collected as it comes.
#[derive(Clone, Default)]
pub struct Log {
    text: std::sync::Arc<std::sync::Mutex<String>>,
    ended: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Log {
    /// Everything logged so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// The whole log, once the server has closed its stderr (exited).
    pub fn complete(&self) -> String {
        let deadline = std::time::Instant::now() + WAIT;
        while !self.ended.load(std::sync::atomic::Ordering::Acquire) {
            assert!(
                std::time::Instant::now() < deadline,
                "the server's stderr never closed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        self.text()
    }
}

/// Starts the binary on a free port with `args`; returns it, the address
/// its "listening" log line names (`http://` or `https://`), and its log.
/// The caller stops it.
pub fn spawn_binary(args: &[&str]) -> (std::process::Child, String, Log) {
    spawn_binary_logging(args, "info")
}

/// [`spawn_binary`] with `RUST_LOG` set to `level`.
pub fn spawn_binary_logging(args: &[&str], level: &str) -> (std::process::Child, String, Log) {
    spawn_binary_with_env(args, &[("RUST_LOG", level)])
}

/// [`spawn_binary`] with more environment variables.
pub fn spawn_binary_with_env(
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Child, String, Log) {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let mut child = Command::new(env!("CARGO_BIN_EXE_wschat-server"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .env_remove("JWT_SECRET")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = Log::default();
    let (tx, rx) = std::sync::mpsc::channel();
    let collected = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut text = collected.text.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
            drop(text);
            let _ = tx.send(line);
        }
        collected
            .ended
            .store(true, std::sync::atomic::Ordering::Release);
    });
    let deadline = Instant::now() + WAIT;
    loop {
        let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server printed no listening line:\n{}", log.text());
        };
        let listening = ["listening on http://", "listening on https://"]
            .iter()
            .find_map(|prefix| line.split(prefix).nth(1));
        if let Some(rest) = listening {
            let addr = rest.split('/').next().unwrap_or_default().to_owned();
            return (child, addr, log);
        }
    }
}

/// Sends `sig` (e.g. "-TERM") to a spawned server.
pub fn signal(child: &std::process::Child, sig: &str) {
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args([sig, &pid])
        .status();
    assert!(sent.is_ok_and(|s| s.success()), "kill {sig} {pid} failed");
}

/// A chat message frame.
pub fn chat(usr: &str, msg: &str) -> String {
    serde_json::json!({"usr": usr, "msg": msg}).to_string()
}

/// Runs the binary with `args` and the environment variables `env`,
/// expecting success; the token it prints (the `token` subcommand).
pub fn mint(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wschat-server"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Runs the binary with `args` (on a free port unless they say
/// `--listen`) and `env`, expecting it to refuse to start, at once: a
/// non-zero exit, no panic, the first line on stderr holding `needle`. A
/// refusal of wschat's own, rather than clap's usage text, is one line and
/// exit status 1 (README, "Command line"). Returns the exit code and
/// stderr.
pub fn refused_at_start(
    args: &[&str],
    env: &[(&str, &str)],
    needle: &str,
) -> (Option<i32>, String) {
    use std::io::Read;
    use std::process::{Command, Stdio};
    use std::time::Instant;
    let mut command = Command::new(env!("CARGO_BIN_EXE_wschat-server"));
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    let mut child = command
        .args(args)
        .env_remove("JWT_SECRET")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A start that should have been refused must fail the test, not hang
    // it; and a file that blocks a read must not hang the start.
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: the server neither started nor exited");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "{args:?} started:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.contains(needle), "{args:?}: {needle:?} in {stderr}");
    if first.starts_with("wschat-server: ") {
        assert_eq!(status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
    }
    (status.code(), stderr)
}
