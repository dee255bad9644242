//! Resume by cursor and the archive over HTTP (README, "Resume"), through
//! the real server and real clients.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{Client, TestServer, chat, spawn_binary};
use futures_util::StreamExt;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

fn temp_path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("wschat-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

async fn connect(addr: impl std::fmt::Display, query: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/{query}"))
        .await
        .unwrap();
    Client { ws }
}

async fn publish_n(server: &TestServer, n: usize) -> Vec<String> {
    let mut c = server.client().await;
    let mut sent = Vec::new();
    for i in 0..n {
        c.send(&chat("a", &i.to_string())).await;
        sent.push(c.recv_text().await);
    }
    sent
}

fn tim(frame: &str) -> String {
    let v: Value = serde_json::from_str(frame).unwrap();
    v["tim"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resumes_after_a_restart_with_no_gap_and_no_duplicate() {
    let path = temp_path("restart.jsonl");
    let args = ["--rate", "0", "--archive", path.to_str().unwrap()];
    let server = TestServer::start(&args).await;
    let sent = publish_n(&server, 10).await;
    let server = server.restart(&args).await;
    let since = tim(&sent[3]);
    let mut resumed = connect(server.addr, &format!("?since={since}")).await;
    for expected in &sent[4..] {
        assert_eq!(&resumed.recv_text().await, expected);
    }
    let mut other = server.client().await;
    other.send(&chat("b", "live")).await;
    assert_eq!(
        resumed.recv().await["msg"],
        "live",
        "then live, nothing twice"
    );
    server.stop().await;
    std::fs::remove_file(path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_in_any_rfc_3339_form_is_read_and_others_get_400() {
    let server = TestServer::start(&["--rate", "0", "--history", "10"]).await;
    let sent = publish_n(&server, 3).await;
    // The same instant with an offset, percent-encoded and not.
    let t = chrono::DateTime::parse_from_rfc3339(&tim(&sent[0])).unwrap();
    let shifted = t
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339();
    let encoded = shifted.replace(':', "%3A").replace('+', "%2B");
    for query in [format!("?since={shifted}"), format!("?since={encoded}")] {
        let mut c = connect(server.addr, &query).await;
        assert_eq!(c.recv_text().await, sent[1], "{query}");
        assert_eq!(c.recv_text().await, sent[2], "{query}");
    }
    for bad in [
        "yesterday",
        "2020-01-01T00:00:00",
        "2020-13-01T00:00:00Z",
        "",
    ] {
        let (status, body) = server.get_upgrade(&format!("/?since={bad}")).await;
        assert_eq!(status, 400, "since={bad}: {body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_older_than_the_history_gets_the_gap_notice_first() {
    let server = TestServer::start(&["--rate", "0", "--history", "3"]).await;
    let mut c = connect(server.addr, "?since=2001-01-01T00:00:00Z").await;
    let notice = c.recv().await;
    assert_eq!(
        notice["gap"]["first"],
        Value::Null,
        "an empty room: {notice}"
    );
    assert!(notice.get("tim").is_none());
    let sent = publish_n(&server, 6).await;
    let mut c = connect(server.addr, &format!("?since={}", tim(&sent[0]))).await;
    let notice = c.recv().await;
    assert_eq!(notice["gap"]["since"], tim(&sent[0]));
    assert_eq!(notice["gap"]["first"], tim(&sent[3]));
    for expected in &sent[3..] {
        assert_eq!(&c.recv_text().await, expected);
    }
    let mut c = connect(server.addr, &format!("?since={}", tim(&sent[3]))).await;
    assert_eq!(c.recv_text().await, sent[4], "the oldest held: no notice");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn get_messages_pages_the_archive() {
    let path = temp_path("messages.jsonl");
    let server = TestServer::start(&["--rate", "0", "--archive", path.to_str().unwrap()]).await;
    let sent = publish_n(&server, 12).await;
    let get = |query: String| {
        let server = &server;
        async move {
            let (status, body) = server.get(&format!("/messages{query}")).await;
            assert_eq!(status, 200, "{query}: {body}");
            // Exactly as relayed: each element's own text.
            let frames: Vec<Box<serde_json::value::RawValue>> =
                serde_json::from_str(&body).unwrap();
            frames
                .iter()
                .map(|v| v.get().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(get(String::new()).await, sent, "the newest 100");
    assert_eq!(get("?limit=2".into()).await, sent[10..]);
    let t = |i: usize| tim(&sent[i]);
    assert_eq!(get(format!("?since={}&limit=3", t(2))).await, sent[3..6]);
    assert_eq!(get(format!("?before={}&limit=3", t(5))).await, sent[2..5]);
    assert_eq!(
        get(format!("?since={}&before={}", t(2), t(5))).await,
        sent[3..5]
    );
    for bad in ["?limit=0", "?limit=1001", "?since=soon", "?before=2020"] {
        let (status, body) = server.get(&format!("/messages{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        let err: Value = serde_json::from_str(&body).unwrap();
        assert!(
            err["err"].is_string() && err["detail"].is_string(),
            "{body}"
        );
    }
    server.stop().await;
    std::fs::remove_file(path).unwrap();
}

/// The server's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_catch_up_of_100k_messages_read_slowly_streams_in_bounded_memory() {
    const N: usize = 100_000;
    let path = temp_path("big.jsonl");
    let pad = "x".repeat(1000);
    let mut text = String::with_capacity(N * 1100);
    let start = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z").unwrap();
    let mut tims = Vec::with_capacity(N);
    for i in 0..N {
        let t = wschat_core::format_tim((start + chrono::Duration::milliseconds(i as i64)).into());
        text.push_str(&format!(
            "{{\"usr\":\"a\",\"msg\":\"{i}\",\"pad\":\"{pad}\",\"tim\":\"{t}\"}}\n"
        ));
        tims.push(t);
    }
    std::fs::write(&path, text).unwrap();
    // A ring of 16: a catch-up that went through the ring would be closed
    // as too slow at once.
    let (mut child, addr, _) = spawn_binary(&[
        "--archive",
        path.to_str().unwrap(),
        "--send-queue",
        "16",
        "--rate",
        "0",
    ]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (got, peak, base) = rt.block_on(async {
        let base = rss_kib(child.id());
        let mut c = connect(&addr, &format!("?since={}", tims[0])).await;
        let mut publisher = connect(&addr, "").await;
        let (mut got, mut peak) = (0usize, base);
        while got < N - 1 {
            let msg = tokio::time::timeout(common::WAIT, c.ws.next())
                .await
                .expect("the catch-up stalled")
                .expect("closed")
                .expect("error");
            let Message::Text(text) = msg else { continue };
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(v["msg"], (got + 1).to_string(), "in order, none missing");
            got += 1;
            if got % 5_000 == 0 {
                // Read slowly, while the room goes on publishing.
                tokio::time::sleep(Duration::from_millis(50)).await;
                publisher.send(&chat("b", "meanwhile")).await;
                peak = peak.max(rss_kib(child.id()));
            }
        }
        // Then what was published meanwhile, and live.
        let mut meanwhile = 0;
        while meanwhile < (N - 1) / 5_000 {
            assert_eq!(c.recv().await["msg"], "meanwhile");
            meanwhile += 1;
        }
        (got, peak, base)
    });
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_file(path).unwrap();
    assert_eq!(got, N - 1);
    // 100k messages of 1 KB are 100 MB: the server must not hold them.
    assert!(
        peak - base < 30 * 1024,
        "RSS grew from {base} KiB to {peak} KiB during the catch-up"
    );
}

/// An archive of `n` messages each padded to about `bytes`, a millisecond
/// apart from 2020 on: the largest messages a publisher may post.
fn large_archive(name: &str, n: usize, bytes: usize) -> (PathBuf, Vec<String>) {
    let path = temp_path(name);
    let pad = "x".repeat(bytes.saturating_sub(100));
    let start = chrono::DateTime::parse_from_rfc3339("2020-01-01T00:00:00Z").unwrap();
    let mut text = String::with_capacity(n * bytes);
    let mut tims = Vec::with_capacity(n);
    for i in 0..n {
        let t = wschat_core::format_tim((start + chrono::Duration::milliseconds(i as i64)).into());
        text.push_str(&format!(
            "{{\"usr\":\"a\",\"msg\":\"{i}\",\"pad\":\"{pad}\",\"tim\":\"{t}\"}}\n"
        ));
        tims.push(t);
    }
    std::fs::write(&path, text).unwrap();
    (path, tims)
}

/// A WebSocket client whose socket receives at most about `bytes` before
/// its reader reads.
async fn connect_with_receive_buffer(
    addr: &str,
    query: &str,
    bytes: u32,
) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(bytes).unwrap();
    let tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    let (ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/{query}"), tcp)
        .await
        .unwrap();
    ws
}

#[test]
fn resumers_that_never_read_large_messages_keep_memory_bounded() {
    // Each page of a catch-up is bounded in bytes (README, "Resume"), so a
    // resumer that reads nothing holds about 1 MiB of the server's memory,
    // however large the messages it asked for.
    const CLIENTS: usize = 30;
    let (path, tims) = large_archive("stall.jsonl", 600, 60_000);
    let (mut child, addr, _) =
        spawn_binary(&["--archive", path.to_str().unwrap(), "--history", "1"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (base, peak) = rt.block_on(async {
        let base = rss_kib(child.id());
        let mut stalled = Vec::new();
        for _ in 0..CLIENTS {
            let query = format!("?since={}", tims[0]);
            stalled.push(connect_with_receive_buffer(&addr, &query, 4096).await);
        }
        let mut peak = base;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            peak = peak.max(rss_kib(child.id()));
        }
        drop(stalled);
        eprintln!("RSS {base} KiB, {peak} KiB with {CLIENTS} stalled resumers");
        (base, peak)
    });
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_file(path).unwrap();
    assert!(
        peak - base < 100 * 1024,
        "{CLIENTS} stalled resumers took the server's RSS from {base} KiB to {peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_but_steady_catch_up_reader_is_never_closed() {
    // README, "Resume": a catching-up reader is closed only when it reads
    // nothing for the idle timeout, however long one page takes it.
    // 10 MB: more than socket buffers hold.
    const N: usize = 160;
    let (path, tims) = large_archive("steady.jsonl", N, 60_000);
    let server = TestServer::start(&[
        "--archive",
        path.to_str().unwrap(),
        "--history",
        "1",
        "--idle-timeout",
        "2",
        "--ping-interval",
        "1",
    ])
    .await;
    let addr = server.addr.to_string();
    let mut ws =
        connect_with_receive_buffer(&addr, &format!("?since={}", tims[0]), 16 * 1024).await;
    // About 1 MB/s, steadily, for more than two idle timeouts.
    for i in 1..N {
        let text = loop {
            let msg = tokio::time::timeout(common::WAIT, ws.next())
                .await
                .expect("the catch-up stalled")
                .expect("closed")
                .expect("error");
            match msg {
                Message::Text(text) => break text,
                Message::Close(close) => panic!("message {i}: closed {close:?}"),
                _ => {}
            }
        };
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["msg"], i.to_string(), "in order, none missing");
        // The last 4 MB at once: socket buffers hold that much, and once
        // live, a write blocked that long on a client not heard from
        // counts as idle (README, "Errors and close codes").
        if i < N - 70 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    let mut publisher = server.client().await;
    publisher.send(&chat("b", "live")).await;
    let live = loop {
        let msg = tokio::time::timeout(common::WAIT, ws.next())
            .await
            .expect("nothing live")
            .expect("closed")
            .expect("error");
        if let Message::Text(text) = msg {
            break serde_json::from_str::<Value>(&text).unwrap();
        }
    };
    assert_eq!(live["msg"], "live", "then live");
    server.stop().await;
    std::fs::remove_file(path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn get_messages_answers_at_most_1_mib_and_pages_on() {
    // README, "The archive over HTTP": an answer stops short of `limit`
    // at 1 MiB; paging on with `since` reads everything once.
    let (path, tims) = large_archive("cap.jsonl", 100, 60_000);
    let server = TestServer::start(&["--archive", path.to_str().unwrap(), "--history", "1"]).await;
    let get = |query: String| {
        let server = &server;
        async move {
            let (status, body) = server.get(&format!("/messages{query}")).await;
            assert_eq!(status, 200, "{query}");
            assert!(body.len() <= 1 << 20, "{query}: {} bytes", body.len());
            let frames: Vec<Value> = serde_json::from_str(&body).unwrap();
            frames
                .iter()
                .map(|f| f["tim"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    let newest = get("?limit=1000".into()).await;
    assert!(!newest.is_empty() && newest.len() < 100, "{}", newest.len());
    assert_eq!(newest[..], tims[100 - newest.len()..], "the newest");
    let older = get(format!("?before={}&limit=1000", newest[0])).await;
    assert!(!older.is_empty());
    assert_eq!(
        older[..],
        tims[100 - newest.len() - older.len()..100 - newest.len()]
    );
    let mut got = Vec::new();
    let mut cursor = "2019-12-31T00:00:00Z".to_owned();
    loop {
        let page = get(format!("?since={cursor}&limit=1000")).await;
        let Some(last) = page.last() else { break };
        cursor = last.clone();
        got.extend(page);
    }
    assert_eq!(got, tims, "every message once, in order");
    server.stop().await;
    std::fs::remove_file(path).unwrap();
}
