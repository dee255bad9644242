//! Hundreds of malformed frames thrown at a real server: each gets an
//! answer or a close, never a crash, and a fresh client still chats.

use crate::common::{TestServer, chat};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Bytes;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

/// A small deterministic generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test]
async fn malformed_frames_are_answered_and_the_server_keeps_working() {
    let server = TestServer::start(&["--rate", "0"]).await;
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut c = server.client().await;

    let deep_object = format!(
        r#"{{"usr":"a","msg":"m","d":{}{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let deep_array = "[".repeat(10_000) + &"]".repeat(10_000);
    let fixed = [
        deep_array.clone(),
        "{".repeat(10_000),
        r#"{"usr":"a","msg":"m","n":1e999999}"#.to_owned(),
        r#"{"usr":"a","msg":"m","n":-123456789012345678901234567890e-999}"#.to_owned(),
        r#"{"usr":"a","msg":"\ud800"}"#.to_owned(),
        "\u{0}\u{1}".to_owned(),
        String::new(),
    ];
    let mut answered = 0;
    for frame in fixed.iter().cloned().chain((0..300).map(|_| {
        let n = (rng.next() % 200) as usize;
        String::from_utf8_lossy(&rng.bytes(n)).into_owned()
    })) {
        c.send(&frame).await;
        // Text, not parsed: a relayed 1e999999 is valid JSON that
        // serde_json's Value cannot hold.
        let reply = c.recv_text().await;
        assert!(
            reply.starts_with(r#"{"err":""#) || reply.contains(r#""tim":""#),
            "{reply}"
        );
        answered += 1;
    }
    for _ in 0..100 {
        let n = (rng.next() % 200) as usize;
        c.send_binary(&rng.bytes(n)).await;
        assert_eq!(c.recv().await["err"], "unsupported");
        answered += 1;
    }
    assert_eq!(answered, fixed.len() + 400);

    // Nesting 10,000 deep is refused (README, "Publishing"); 64 levels,
    // the limit, are relayed unchanged.
    c.expect_error(&deep_object, "invalid_json").await;
    let deepest = format!(
        r#"{{"usr":"a","msg":"m","d":{}{}}}"#,
        "[".repeat(63),
        "]".repeat(63)
    );
    c.send(&deepest).await;
    let text = c.recv_text().await;
    assert!(
        text.starts_with(&deepest[..deepest.len() - 1]),
        "64 levels relayed"
    );

    // Invalid UTF-8 in a text frame breaks the protocol: closed with 1007.
    let mut bad = server.client().await;
    let frame = Frame::message(
        Bytes::from_static(b"{\"usr\":\"\xff\"}"),
        OpCode::Data(Data::Text),
        true,
    );
    bad.ws.send(Message::Frame(frame)).await.unwrap();
    let close = bad.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1007);

    let mut fresh = server.client().await;
    fresh.send(&chat("after", "all that")).await;
    assert_eq!(fresh.recv().await["usr"], "after");
    server.stop().await;
}
