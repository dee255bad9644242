//! Chat end to end: relay, stamping, fields, ordering, errors and history,
//! through a real server and real WebSocket clients.

use crate::common;

use crate::common::{TestServer, chat};
use serde_json::Value;

const UNLIMITED: &[&str] = &["--rate", "0"];

#[tokio::test]
async fn relays_to_every_client_including_the_sender() {
    let server = TestServer::start(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(server.client().await);
    }
    clients[0].send(&chat("ann", "hello")).await;
    let mut seen = Vec::new();
    for c in &mut clients {
        seen.push(c.recv_text().await);
    }
    assert!(seen.iter().all(|s| *s == seen[0]), "{seen:?}");
    let m: Value = serde_json::from_str(&seen[0]).unwrap();
    assert_eq!(
        (m["usr"].as_str(), m["msg"].as_str()),
        (Some("ann"), Some("hello"))
    );
    server.stop().await;
}

#[tokio::test]
async fn stamps_tim_in_utc_with_nanoseconds_and_overwrites_the_clients() {
    let server = TestServer::start(&[]).await;
    let mut c = server.client().await;
    let before = chrono::Utc::now();
    c.send(r#"{"usr":"a","msg":"m","tim":"1999-01-01T00:00:00Z"}"#)
        .await;
    let m = c.recv().await;
    let tim = m["tim"].as_str().unwrap();
    assert_eq!(tim.len(), "2020-08-11T22:26:58.118678679Z".len(), "{tim}");
    assert!(tim.ends_with('Z'));
    let parsed: chrono::DateTime<chrono::Utc> = tim.parse().unwrap();
    assert!(parsed >= before && parsed <= chrono::Utc::now(), "{tim}");
    server.stop().await;
}

#[tokio::test]
async fn keeps_other_fields_unchanged_and_in_order() {
    let server = TestServer::start(&[]).await;
    let mut c = server.client().await;
    c.send(
        r#"{"z":1,"usr":"a","big":123456789012345678901234567890,"msg":"m","o":{"k":[1,2.50]}}"#,
    )
    .await;
    let text = c.recv_text().await;
    let (head, tail) = text.split_once(r#","tim":""#).unwrap();
    assert_eq!(
        head,
        r#"{"z":1,"usr":"a","big":123456789012345678901234567890,"msg":"m","o":{"k":[1,2.50]}"#
    );
    assert!(tail.ends_with("\"}"), "{text}");
    server.stop().await;
}

#[tokio::test]
async fn one_order_for_all_across_concurrent_publishers() {
    const N: usize = 200;
    let server = TestServer::start(UNLIMITED).await;
    let mut listeners = vec![server.client().await, server.client().await];
    let mut publishers = Vec::new();
    for p in 0..3 {
        let mut c = server.client().await;
        publishers.push(tokio::spawn(async move {
            for i in 0..N {
                c.send(&chat(&format!("p{p}"), &i.to_string())).await;
            }
            c
        }));
    }
    let mut orders = Vec::new();
    for l in &mut listeners {
        let mut order = Vec::new();
        for _ in 0..3 * N {
            order.push(l.recv().await);
        }
        orders.push(order);
    }
    assert_eq!(orders[0], orders[1], "both listeners see one order");
    let mut next = [0usize; 3];
    let mut last_tim = String::new();
    for m in &orders[0] {
        let p: usize = m["usr"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(m["msg"], next[p].to_string(), "each sender's order is kept");
        next[p] += 1;
        let tim = m["tim"].as_str().unwrap().to_owned();
        assert!(tim > last_tim, "tim goes forward: {tim} after {last_tim}");
        last_tim = tim;
    }
    for p in publishers {
        p.await.unwrap();
    }
    server.stop().await;
}

#[tokio::test]
async fn rejects_bad_frames_to_the_sender_alone_and_stays_open() {
    let server = TestServer::start(&["--rate", "1", "--burst", "8"]).await;
    let mut sender = server.client().await;
    let mut other = server.client().await;
    for (frame, code) in [
        ("not json", "invalid_json"),
        ("[1,2]", "invalid_json"),
        (r#"{"usr":"a","msg":"m","usr":"b"}"#, "invalid_json"),
        (r#"{"msg":"m"}"#, "invalid_message"),
        (r#"{"usr":"","msg":"m"}"#, "invalid_message"),
        (r#"{"usr":"a","msg":5}"#, "invalid_message"),
    ] {
        sender.expect_error(frame, code).await;
    }
    sender.send_binary(b"\x00\x01").await;
    assert_eq!(sender.recv().await["err"], "unsupported");
    // The connection still works, and the other client saw none of it.
    sender.send(&chat("a", "fine")).await;
    assert_eq!(sender.recv().await["msg"], "fine");
    assert_eq!(other.recv().await["msg"], "fine");
    // Eight frames used the burst; the next is over the rate.
    sender
        .expect_error(&chat("a", "too fast"), "rate_limited")
        .await;
    other.expect_silence(300).await;
    server.stop().await;
}

#[tokio::test]
async fn history_is_replayed_before_live_messages() {
    let server = TestServer::start(&["--history", "3", "--rate", "0"]).await;
    let mut first = server.client().await;
    for i in 0..5 {
        first.send(&chat("a", &i.to_string())).await;
        first.recv().await;
    }
    let mut late = server.client().await;
    first.send(&chat("a", "live")).await;
    let got: Vec<Value> = [
        late.recv().await,
        late.recv().await,
        late.recv().await,
        late.recv().await,
    ]
    .into();
    let msgs: Vec<&str> = got.iter().map(|m| m["msg"].as_str().unwrap()).collect();
    assert_eq!(msgs, ["2", "3", "4", "live"]);
    server.stop().await;
}

#[tokio::test]
async fn a_client_gets_everything_relayed_after_its_handshake() {
    let server = TestServer::start(UNLIMITED).await;
    let mut publisher = server.client().await;
    let mut late = server.client().await;
    publisher.send(&chat("a", "right after")).await;
    assert_eq!(late.recv().await["msg"], "right after");
    server.stop().await;
}

#[tokio::test]
async fn a_frame_sent_with_the_upgrade_request_is_not_lost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(&[]).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // The request and a first frame (masked with a zero key) in one write,
    // so the server reads both at once.
    let text = chat("ann", "early");
    let mut bytes = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.addr
    )
    .into_bytes();
    bytes.extend([0x81, 0x80 | text.len() as u8, 0, 0, 0, 0]);
    bytes.extend(text.as_bytes());
    tcp.write_all(&bytes).await.unwrap();
    let mut seen = Vec::new();
    let relayed = tokio::time::timeout(common::WAIT, async {
        let mut buf = [0u8; 1024];
        loop {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains(r#""msg":"early""#) {
                break;
            }
        }
    })
    .await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(relayed.is_ok(), "not relayed; got {seen:?}");
    assert!(seen.starts_with("HTTP/1.1 101"), "{seen:?}");
    server.stop().await;
}
