//! Each example, run as a user would run it, against the real thing.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use support::{Killed, listening_address, server, server_until};

async fn next_text(
    ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin),
) -> serde_json::Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bot_publishes_with_a_token_and_answers_ping() {
    let addr = server(&["--jwt-secret", "s3cret", "--jwt-usr-claim", "sub"]).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let _bot = bot(addr, "s3cret");
    let hello = next_text(&mut ws).await;
    assert_eq!(hello["usr"], "robo", "{hello}");
    let token = wschat_core::Jwt::new(wschat_core::JwtConfig::new("s3cret"))
        .mint("sub", "ann", None)
        .unwrap();
    let ping = serde_json::json!({"usr": "ann", "msg": "!ping", "jwt": token}).to_string();
    ws.send(Message::text(ping)).await.unwrap();
    assert_eq!(next_text(&mut ws).await["msg"], "!ping");
    let reply = next_text(&mut ws).await;
    assert_eq!(
        (reply["usr"].as_str(), reply["msg"].as_str()),
        (Some("robo"), Some("pong, ann"))
    );
}

/// Waits (at most 10 s) for a child to exit; returns how, and what it
/// printed on stderr.
async fn exited(mut child: Killed) -> (ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    (status, stderr)
}

/// Starts the bot against `addr` with its stderr captured.
fn bot(addr: std::net::SocketAddr, secret: &str) -> Killed {
    Killed(
        Command::new(env!("CARGO_BIN_EXE_wschat-bot"))
            .args(["--url", &format!("ws://{addr}/"), "--name", "robo"])
            .env("JWT_SECRET", secret)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bot_stops_when_the_server_refuses_its_token() {
    let addr = server(&["--jwt-secret", "s3cret"]).await;
    let (status, stderr) = exited(bot(addr, "not the secret")).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("unauthorized"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bot_reports_how_the_server_closed_it() {
    // Its hello is larger than the server takes: closed with 1009.
    let addr = server(&["--max-message-bytes", "16"]).await;
    let (status, stderr) = exited(bot(addr, "s3cret")).await;
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("closed by the server: 1009"), "{stderr}");
}

/// The number of open WebSockets the server at `addr` reports.
fn connections(addr: std::net::SocketAddr) -> u64 {
    let mut http = std::net::TcpStream::connect(addr).unwrap();
    http.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    let body = &response[response.find("\r\n\r\n").unwrap()..];
    serde_json::from_str::<serde_json::Value>(body.trim()).unwrap()["connections"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_reports_the_server_shutting_down() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = server_until(&[], async move {
        let _ = stopped.await;
    })
    .await;
    let listen = Killed(
        Command::new(env!("CARGO_BIN_EXE_wschat-listen"))
            .args(["--url", &format!("ws://{addr}/")])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while connections(addr) == 0 {
        assert!(Instant::now() < deadline, "the listener never connected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.send(()).unwrap();
    let (status, stderr) = exited(listen).await;
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "wschat-listen: closed by the server: 1001 (server shutting down)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_prints_json_lines() {
    let addr = server(&[]).await;
    let mut listen = Killed(
        Command::new(env!("CARGO_BIN_EXE_wschat-listen"))
            .args(["--url", &format!("ws://{addr}/")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = listen.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    // The listener may connect after a first message: publish until it prints.
    let mut printed = None;
    for i in 0..50 {
        ws.send(Message::text(format!(r#"{{"usr":"a","msg":"{i}"}}"#)))
            .await
            .unwrap();
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            printed = Some(line);
            break;
        }
    }
    let line = printed.expect("the listener printed nothing");
    let m: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(m["usr"], "a");
    assert!(m["tim"].is_string());
}

/// Publishes `texts` as "a" to the server at `addr`; returns their
/// `tim`s once each has come back (relayed).
async fn publish_all(addr: std::net::SocketAddr, texts: &[&str]) -> Vec<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    for text in texts {
        let frame = serde_json::json!({"usr": "a", "msg": text}).to_string();
        ws.send(Message::text(frame)).await.unwrap();
    }
    let mut tims = Vec::new();
    while tims.len() < texts.len() {
        let m = next_text(&mut ws).await;
        if m["msg"] == texts[tims.len()] {
            tims.push(m["tim"].as_str().unwrap().to_owned());
        }
    }
    tims
}

/// Starts `wschat-listen` against `addr` with `args`, stdout and stderr
/// captured; stdout's lines come through the receiver.
fn listen(
    addr: std::net::SocketAddr,
    args: &[&str],
) -> (Killed, std::sync::mpsc::Receiver<serde_json::Value>) {
    let mut child = Killed(
        Command::new(env!("CARGO_BIN_EXE_wschat-listen"))
            .args(["--url", &format!("ws://{addr}/")])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str(&line).unwrap());
        }
    });
    (child, rx)
}

/// The `msg` of the next `n` lines printed.
fn next_msgs(rx: &std::sync::mpsc::Receiver<serde_json::Value>, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            let m = rx.recv_timeout(Duration::from_secs(10)).expect("a line");
            m["msg"].as_str().expect("a message").to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_resumes_from_a_cursor() {
    // README, "Resume": only what came after the cursor, then live.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = server_until(&["--history", "10", "--rate", "0"], async move {
        let _ = stopped.await;
    })
    .await;
    let tims = publish_all(addr, &["m0", "m1", "m2", "m3"]).await;
    let (listener, rx) = listen(addr, &["--since", &tims[1]]);
    assert_eq!(next_msgs(&rx, 2), ["m2", "m3"]);
    publish_all(addr, &["m4"]).await;
    assert_eq!(next_msgs(&rx, 1), ["m4"]);
    stop.send(()).unwrap();
    let (status, stderr) = exited(listener).await;
    assert!(status.success(), "{stderr}");
    assert!(rx.try_recv().is_err(), "nothing more printed");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listener_says_on_stderr_when_messages_may_be_missing() {
    // The server holds only the last 2: the gap is told on stderr, and
    // stdout holds only messages, so its last line is always a cursor.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let addr = server_until(&["--history", "2", "--rate", "0"], async move {
        let _ = stopped.await;
    })
    .await;
    let tims = publish_all(addr, &["m0", "m1", "m2", "m3"]).await;
    let (listener, rx) = listen(addr, &["--since", &tims[0]]);
    assert_eq!(next_msgs(&rx, 2), ["m2", "m3"]);
    stop.send(()).unwrap();
    let (status, stderr) = exited(listener).await;
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "messages between {} and {} may be missing",
            tims[0], tims[2]
        )),
        "{stderr}"
    );
}

#[test]
fn the_listener_refuses_a_cursor_that_is_not_a_time() {
    let output = Command::new(env!("CARGO_BIN_EXE_wschat-listen"))
        .args(["--url", "ws://127.0.0.1:9/", "--since", "yesterday"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("RFC 3339"), "{stderr}");
}

#[test]
fn the_tcp_room_relays_lines_between_connections() {
    let mut room = Killed(
        Command::new(env!("CARGO_BIN_EXE_wschat-tcp-room"))
            .args(["--listen", "127.0.0.1:0"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let addr = listening_address(&mut room.0);
    let ann = std::net::TcpStream::connect(&addr).unwrap();
    let bob = std::net::TcpStream::connect(&addr).unwrap();
    bob.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    ann.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    (&ann)
        .write_all(b"not json\n{\"usr\":\"ann\",\"msg\":\"over tcp\"}\n")
        .unwrap();
    let mut ann_lines = BufReader::new(&ann).lines();
    assert!(ann_lines.next().unwrap().unwrap().contains("invalid_json"));
    let mut bob_line = String::new();
    BufReader::new(&bob).read_line(&mut bob_line).unwrap();
    let m: serde_json::Value = serde_json::from_str(&bob_line).unwrap();
    assert_eq!(
        (m["usr"].as_str(), m["msg"].as_str()),
        (Some("ann"), Some("over tcp"))
    );
}
