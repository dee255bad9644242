//! Every close the server starts reaches the client with its code, tried
//! many times at once and with client input still in flight: after its
//! close frame the server reads on until the client closes (README, Errors
//! and close codes), so unread input never makes the kernel reset the
//! connection before the client has read why it was closed.

use crate::common;

use std::time::Duration;

use crate::common::{TestServer, WAIT};
use futures_util::future::join_all;
use futures_util::{SinkExt, Stream, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message};

/// Tries of each kind, all at once.
const TRIES: usize = 30;

/// Reads until the server's close frame and on to the end of the
/// connection: the close code, or what came instead. A reset counts as a
/// failure even after the close frame: on a real network it destroys a
/// close frame still waiting in the server's send queue, and a client that
/// is writing (a browser) gives up on the reset before it reads the frame.
async fn close_code<W>(ws: &mut W) -> Result<u16, String>
where
    W: Stream<Item = Result<Message, WsError>> + Unpin,
{
    let read = tokio::time::timeout(WAIT, async {
        let mut code = None;
        loop {
            match (ws.next().await, code) {
                (Some(Ok(Message::Close(Some(frame)))), None) => {
                    code = Some(u16::from(frame.code));
                }
                (Some(Ok(Message::Close(None))), None) => {
                    return Err("a close frame without a code".to_owned());
                }
                (Some(Ok(_)), _) => continue,
                (Some(Err(e)), None) => return Err(format!("no close frame: {e}")),
                (Some(Err(e)), Some(code)) => return Err(format!("{code}, then {e}")),
                (None, None) => return Err("no close frame: the connection ended".to_owned()),
                (None, Some(code)) => return Ok(code),
            }
        }
    })
    .await;
    read.unwrap_or_else(|_| Err("timed out".to_owned()))
}

/// Asserts that every try got `code`, saying how many did not and why.
fn assert_all_got(kind: &str, code: u16, results: &[Result<u16, String>]) {
    let failed: Vec<_> = results.iter().filter(|r| **r != Ok(code)).collect();
    assert!(
        failed.is_empty(),
        "{kind}: {} of {} tries did not get {code}: {failed:?}",
        failed.len(),
        results.len()
    );
}

fn frame(opcode: OpCode, payload: &[u8], last: bool) -> Message {
    Message::Frame(Frame::message(
        Bytes::copy_from_slice(payload),
        opcode,
        last,
    ))
}

const TEXT: OpCode = OpCode::Data(Data::Text);
const MORE: OpCode = OpCode::Data(Data::Continue);

/// Connects, sends `frames` one by one (the later ones are still unread or
/// on their way when the server closes), and returns the close code the
/// client reads.
async fn send_and_read_close(server: &TestServer, frames: Vec<Message>) -> Result<u16, String> {
    let mut ws = server.client().await.ws;
    for frame in frames {
        // The server may have closed already; a reset fails the try.
        if let Err(e) = ws.send(frame).await {
            return Err(format!("sending failed: {e}"));
        }
    }
    close_code(&mut ws).await
}

#[tokio::test(flavor = "multi_thread")]
async fn every_oversized_message_gets_1009_whole_or_in_fragments() {
    let server = TestServer::start(&["--max-message-bytes", "1024", "--rate", "0"]).await;
    let part = [b'x'; 800];
    let fragmented = (0..40).map(|_| {
        send_and_read_close(
            &server,
            vec![
                frame(TEXT, &part, false),
                frame(MORE, &part, false),
                frame(MORE, &part, true),
            ],
        )
    });
    let whole = (0..TRIES).map(|i| {
        let size = if i % 2 == 0 { 2_000 } else { 100_000 };
        send_and_read_close(&server, vec![Message::text("x".repeat(size))])
    });
    let (fragmented, whole) = tokio::join!(join_all(fragmented), join_all(whole));
    assert_all_got("2,400 bytes in 3 fragments", 1009, &fragmented);
    assert_all_got("one oversized frame", 1009, &whole);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_frame_gets_1007_or_1002_with_more_input_behind_it() {
    let server = TestServer::start(&["--rate", "0"]).await;
    let more = || {
        let text = serde_json::json!({"usr": "a", "msg": "y".repeat(800)}).to_string();
        (0..3).map(move |_| Message::text(text.clone()))
    };
    let bad_utf8 = (0..TRIES).map(|_| {
        let frames = std::iter::once(frame(TEXT, b"{\"usr\":\"\xff\"}", true)).chain(more());
        send_and_read_close(&server, frames.collect())
    });
    // A continuation frame with no message to continue.
    let protocol = (0..TRIES).map(|_| {
        let frames = std::iter::once(frame(MORE, b"x", true)).chain(more());
        send_and_read_close(&server, frames.collect())
    });
    let (bad_utf8, protocol) = tokio::join!(join_all(bad_utf8), join_all(protocol));
    assert_all_got("invalid UTF-8", 1007, &bad_utf8);
    assert_all_got("protocol error", 1002, &protocol);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_too_slow_gets_1008() {
    // A ring of 64 with batches of 16 keeps the publisher's own connection,
    // which reads everything, well within the ring; the slow ones' small
    // receive buffers fill after a few messages.
    let server = TestServer::start(&["--send-queue", "64", "--rate", "0"]).await;
    let mut slow = Vec::new();
    for _ in 0..TRIES {
        slow.push(server.client_with_receive_buffer(4096).await);
    }
    let (mut tx, mut rx) = server.client().await.ws.split();
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });
    let body = "z".repeat(20_000);
    let dropped = format!("wschat_clients_dropped_slow_total {TRIES}");
    let deadline = tokio::time::Instant::now() + WAIT;
    'flood: loop {
        for _ in 0..16 {
            tx.send(Message::text(common::chat("pub", &body)))
                .await
                .unwrap();
        }
        let (_, metrics) = server.get("/metrics").await;
        if metrics.contains(&dropped) {
            break 'flood;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every slow client was dropped: {metrics}"
        );
    }
    let results = join_all(slow.iter_mut().map(close_code)).await;
    assert_all_got("too slow", 1008, &results);
    drop(tx);
    reader.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_idle_client_gets_1001() {
    let server = TestServer::start(&["--ping-interval", "1", "--idle-timeout", "2"]).await;
    let mut idle = Vec::new();
    for _ in 0..TRIES {
        idle.push(server.client().await.ws);
    }
    // Not reading also means not answering the server's pings.
    tokio::time::sleep(Duration::from_millis(3_000)).await;
    let results = join_all(idle.iter_mut().map(close_code)).await;
    assert_all_got("idle timeout", 1001, &results);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_gets_1001_on_shutdown_while_it_sends() {
    let server = TestServer::start(&["--rate", "0"]).await;
    let mut tries = Vec::new();
    for _ in 0..TRIES {
        let (mut tx, mut rx) = server.client().await.ws.split();
        // One message that never ends: input is always in flight, and
        // nothing is relayed to the others.
        let sender = tokio::spawn(async move {
            if tx.send(frame(TEXT, b"{", false)).await.is_err() {
                return;
            }
            while tx.send(frame(MORE, b" ", false)).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        tries.push(tokio::spawn(async move {
            let code = close_code(&mut rx).await;
            sender.abort();
            code
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop().await;
    let results: Vec<_> = join_all(tries)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_all_got("shutdown", 1001, &results);
}
