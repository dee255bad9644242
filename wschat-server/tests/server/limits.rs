//! Holding up on the open internet: size and rate limits, slow clients,
//! keepalive, handshake timeout, connection limit and origin checks.

use std::time::Duration;

use crate::common::{TestServer, WAIT, chat};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

fn close_code(frame: Option<tokio_tungstenite::tungstenite::protocol::CloseFrame>) -> u16 {
    u16::from(frame.expect("a close frame with a code").code)
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009_and_the_server_stays_up() {
    let server = TestServer::start(&["--max-message-bytes", "1024"]).await;
    let mut big = server.client().await;
    big.send(&chat("a", &"x".repeat(2000))).await;
    assert_eq!(close_code(big.recv_close().await), 1009);
    let mut ok = server.client().await;
    ok.send(&chat("a", &"x".repeat(900))).await;
    assert_eq!(ok.recv().await["usr"], "a");
    server.stop().await;
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_a_pause_restores_publishing() {
    let server = TestServer::start(&["--rate", "5", "--burst", "3"]).await;
    let mut c = server.client().await;
    for i in 0..3 {
        c.send(&chat("a", &i.to_string())).await;
        assert_eq!(c.recv().await["msg"], i.to_string());
    }
    c.expect_error(&chat("a", "flood"), "rate_limited").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    c.send(&chat("a", "after a pause")).await;
    assert_eq!(c.recv().await["msg"], "after a pause");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_with_1008_and_others_get_everything() {
    const N: usize = 600;
    let server = TestServer::start(&["--send-queue", "8", "--rate", "0"]).await;
    let mut slow = server.client().await;
    let (mut tx, mut rx) = server.client().await.ws.split();
    let body = "x".repeat(60_000);
    // The publisher is also the reading client, and never runs more than
    // half a send queue ahead of what it has read: only the slow client
    // may fall behind. Unpaced, the writer's task sends dozens of frames
    // before the reader's task runs again, which on a loaded machine puts
    // the reading client more than 8 messages behind, and the server
    // rightly drops it too.
    let ahead = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let read = ahead.clone();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            ahead.acquire().await.unwrap().forget();
            let frame = format!(r#"{{"usr":"pub","msg":"{body}","i":{i}}}"#);
            tx.send(Message::text(frame)).await.unwrap();
        }
        tx
    });
    // The reading client reads in a task of its own, so that the slow one
    // can take its close frame as soon as it is dropped: the server gives
    // up on a client that takes nothing for 5 s after its close frame
    // (README, "Errors and close codes"), and reading 36 MB on a loaded
    // machine can take longer than that.
    let reading = tokio::spawn(async move {
        for i in 0..N {
            let msg = tokio::time::timeout(WAIT, rx.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            let Message::Text(text) = msg else {
                panic!("the reading client was sent {msg:?} before message {i}")
            };
            let m: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(m["i"], i, "the reading client gets every message, in order");
            read.add_permits(1);
        }
    });
    // The slow client reads nothing, so the server's write to it is
    // blocked on a full socket: the server must notice by itself.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, metrics) = server.get("/metrics").await;
        if metrics.contains("wschat_clients_dropped_slow_total 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never dropped while blocked: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let close = slow.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert!(close.reason.contains("too slow"), "{}", close.reason);
    reading.await.unwrap();
    let _tx = writer.await.unwrap();
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_neither_reads_nor_answers_is_closed_at_the_idle_timeout_while_blocked() {
    const N: usize = 500;
    let server = TestServer::start(&[
        "--ping-interval",
        "1",
        "--idle-timeout",
        "2",
        "--send-queue",
        "1024",
        "--rate",
        "0",
    ])
    .await;
    let started = tokio::time::Instant::now();
    let mut silent = server.client_with_receive_buffer(4096).await;
    // The silent client reads nothing until well past the idle timeout,
    // then takes what it is sent, in a task of its own: the server gives
    // up on a client that has not taken its close frame 5 s after sending
    // it (README, "Errors and close codes"), and publishing 10 MB on a
    // loaded machine can take longer than that.
    let silent = tokio::spawn(async move {
        tokio::time::sleep_until(started + Duration::from_millis(3500)).await;
        let mut delivered = 0;
        let close = tokio::time::timeout(WAIT, async {
            loop {
                match silent.next().await.expect("a close frame").unwrap() {
                    Message::Text(_) => delivered += 1,
                    Message::Close(close) => return close.expect("a close code"),
                    _ => {}
                }
            }
        })
        .await
        .unwrap();
        (delivered, close, silent)
    });
    // The publisher reads everything, so only the silent client lags.
    let (mut tx, mut rx) = server.client().await.ws.split();
    let reader = tokio::spawn(async move {
        for _ in 0..N {
            rx.next().await.unwrap().unwrap();
        }
        rx
    });
    let body = "x".repeat(20_000);
    for i in 0..N {
        let frame = format!(r#"{{"usr":"pub","msg":"{body}","i":{i}}}"#);
        tx.send(Message::text(frame)).await.unwrap();
    }
    let _rx = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    // The server's write to the silent client is blocked, far from a whole
    // ring behind, past the idle timeout: it must give up by itself.
    tokio::time::sleep_until(started + Duration::from_millis(3500)).await;
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("wschat_clients_dropped_slow_total 0"),
        "{metrics}"
    );
    let (delivered, close, silent) = silent.await.unwrap();
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "idle timeout");
    // Had the write waited for the client to read again, every message
    // would have come before the close.
    assert!(
        delivered < N,
        "the write waited for the client to read again ({delivered} of {N} delivered)"
    );
    drop(silent);
    server.stop().await;
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout_and_a_live_one_is_not() {
    let server = TestServer::start(&["--ping-interval", "1", "--idle-timeout", "2"]).await;
    let mut silent = server.client().await;
    let mut live = server.client().await;
    // Reading answers the server's pings with pongs.
    live.expect_silence(3500).await;
    live.send(&chat("a", "still here")).await;
    assert_eq!(live.recv().await["msg"], "still here");
    let close = silent.recv_close().await.expect("a close frame");
    assert_eq!(u16::from(close.code), 1001);
    assert_eq!(close.reason.as_str(), "idle timeout");
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_upgrades_is_dropped() {
    let server = TestServer::start(&["--handshake-timeout", "1"]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    for tcp in [&mut silent, &mut partial] {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
            .await
            .expect("the server should have dropped the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn upgrades_past_the_connection_limit_get_503() {
    let server = TestServer::start(&["--max-connections", "2"]).await;
    let first = server.client().await;
    let _second = server.client().await;
    match tokio_tungstenite::connect_async(server.url()).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 503),
        other => panic!("expected 503, got {other:?}"),
    }
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio_tungstenite::connect_async(server.url())
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slot was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_gets_403() {
    let server = TestServer::start(&["--allowed-origin", "https://chat.example"]).await;
    let with_origin = |origin: &'static str| {
        let mut req = server.url().into_client_request().unwrap();
        req.headers_mut().insert("Origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(with_origin("https://evil.example")).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(
        tokio_tungstenite::connect_async(with_origin("https://chat.example"))
            .await
            .is_ok()
    );
    assert!(
        tokio_tungstenite::connect_async(server.url()).await.is_ok(),
        "no Origin: accepted"
    );
    server.stop().await;
}
