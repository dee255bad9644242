//! Each example, run as a user would run it, against the real thing.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

/// A wschat server in this process; dropped with the test's runtime.
async fn server(args: &[&str]) -> SocketAddr {
    let options = wschat_server::Options::from_args(args).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(wschat_server::run(
        listener,
        options,
        std::future::pending(),
    ));
    addr
}

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
    let _bot = Killed(
        Command::new(env!("CARGO_BIN_EXE_wschat-bot"))
            .args(["--url", &format!("ws://{addr}/"), "--name", "robo"])
            .env("JWT_SECRET", "s3cret")
            .spawn()
            .unwrap(),
    );
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

/// Runs `wschat-loadgen MODE` with `common` and `args` and `--json`;
/// returns its report.
async fn loadgen(mode: &str, common: &[&str], args: &[&str]) -> serde_json::Value {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wschat-loadgen"));
    command.arg(mode).args(common).args(args).arg("--json");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Checks that a fan-out report saw every message reach every listener.
fn assert_all_delivered(report: &serde_json::Value, listeners: u64) {
    assert!(report["published"].as_u64() > Some(0), "{report}");
    assert_eq!(
        report["deliveries"].as_u64(),
        report["published"].as_u64().map(|p| p * listeners),
        "{report}"
    );
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["out_of_order_or_dup"], 0, "{report}");
}

/// The address in the first line a child prints on stderr
/// (`listening on ADDR`).
fn listening_address(child: &mut Child) -> String {
    let mut first = String::new();
    BufReader::new(child.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    first
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_load_generator_measures_each_load() {
    let addr = server(&["--rate", "0"]).await;
    let url = format!("ws://{addr}/");
    let pid = std::process::id().to_string();
    let common = ["--url", &url, "--pid", &pid];

    let fanout = loadgen(
        "fanout",
        &common,
        &[
            "--listeners",
            "20",
            "--publishers",
            "2",
            "--rate",
            "50",
            "--duration",
            "1",
        ],
    )
    .await;
    assert_all_delivered(&fanout, 20);
    assert!(fanout["server_rss_kib"].as_u64() > Some(0), "{fanout}");

    let connect = loadgen(
        "connect",
        &common,
        &["--concurrency", "4", "--duration", "1"],
    )
    .await;
    assert!(connect["handshakes"].as_u64() > Some(0), "{connect}");
    assert_eq!(connect["failed"], 0, "{connect}");
    assert!(
        connect["server_cpu_us_per_handshake"].as_f64() > Some(0.0),
        "{connect}"
    );

    let idle = loadgen("idle", &common, &["--connections", "50", "--hold", "0"]).await;
    assert_eq!(idle["connections"], 50, "{idle}");
    assert!(idle["server_rss_after_kib"].as_u64() > Some(0), "{idle}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bare_relay_relays_what_the_load_generator_sends() {
    let mut relay = Killed(
        Command::new(env!("CARGO_BIN_EXE_bare-relay"))
            .arg("127.0.0.1:0")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let url = format!("ws://{}/", listening_address(&mut relay.0));
    let fanout = loadgen(
        "fanout",
        &["--url", &url],
        &[
            "--listeners",
            "10",
            "--publishers",
            "1",
            "--rate",
            "50",
            "--duration",
            "1",
        ],
    )
    .await;
    assert_all_delivered(&fanout, 10);
}
