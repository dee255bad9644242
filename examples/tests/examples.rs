//! Each example, run as a user would run it, against the real thing.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use support::{Killed, listening_address, server};

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
