//! The HTTP side: the client page, health, metrics, 404, bad upgrades,
//! and the bounds on request heads and on connections that have not
//! upgraded.

mod common;

use std::time::Duration;

use common::{Answer, TestServer, WAIT, chat, http_get, raw_exchange};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn serves_the_client_health_and_404() {
    let server = TestServer::start(&["--jwt-secret", "s", "--history", "7"]).await;
    let (status, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<script src=\"app.js\"></script>"), "{body}");
    assert_eq!(server.get("/app.js").await.0, 200);
    assert_eq!(server.get("/style.css").await.0, 200);
    assert_eq!(server.get("/nothing-here").await.0, 404);

    let _c = server.client().await;
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connections"], 1);
    assert!(health["uptime_s"].is_u64());
    assert_eq!(
        (health["jwt"].as_bool(), health["history"].as_u64()),
        (Some(true), Some(7))
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_relayed_messages() {
    let server = TestServer::start(&[]).await;
    let mut c = server.client().await;
    c.send(&chat("a", "m")).await;
    c.recv().await;
    c.expect_error("nope", "invalid_json").await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert_lines(
        &body,
        [
            "wschat_connections 1",
            "wschat_messages_received_total 2",
            "wschat_messages_relayed_total 1",
            "wschat_messages_rejected_total{code=\"invalid_json\"} 1",
        ],
    );
    server.stop().await;
}

#[tokio::test]
async fn a_broken_upgrade_is_refused() {
    let server = TestServer::start(&[]).await;
    let (status, _) = http_get(
        server.addr,
        "/",
        &[
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
        ],
    )
    .await;
    assert_eq!(status, 400);
    server.stop().await;
}

#[tokio::test]
async fn static_dir_replaces_the_built_in_client() {
    let dir = std::env::temp_dir().join(format!("wschat-static-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<p>our own client</p>").unwrap();
    std::fs::write(dir.join("app.css"), "p { color: red }").unwrap();
    let server = TestServer::start(&["--static-dir", dir.to_str().unwrap()]).await;
    assert_eq!(
        server.get("/").await,
        (200, "<p>our own client</p>".to_owned())
    );
    assert_eq!(server.get("/app.css").await.0, 200);
    assert_eq!(
        server.get("/app.js").await.0,
        404,
        "the built-in client is not served"
    );
    assert_eq!(server.get("/../Cargo.toml").await.0, 404);
    assert_eq!(server.get("/healthz").await.0, 200);
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

/// Asserts that each of `lines` is a whole line of `text`.
fn assert_lines<L: AsRef<str>>(text: &str, lines: impl IntoIterator<Item = L>) {
    for line in lines {
        let line = line.as_ref();
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

/// The error codes the README's table lists (README, Errors and close
/// codes), with `muted`, which moderation brings.
fn documented_codes() -> Vec<String> {
    let readme = include_str!("../../README.md");
    let mut codes: Vec<String> = readme
        .lines()
        .skip_while(|l| *l != "| `err` | when |")
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1))
        .map(str::to_owned)
        .collect();
    assert!(
        codes.len() >= 6,
        "the README's error table moved: {codes:?}"
    );
    if !codes.iter().any(|c| c == "muted") {
        codes.push("muted".to_owned());
    }
    codes
}

#[tokio::test]
async fn every_rejection_series_starts_at_zero() {
    let server = TestServer::start(&[]).await;
    let (status, body) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert_lines(
        &body,
        documented_codes()
            .iter()
            .map(|code| format!("wschat_messages_rejected_total{{code=\"{code}\"}} 0")),
    );
    server.stop().await;
}

#[tokio::test]
async fn metrics_report_the_history_size() {
    let server = TestServer::start(&["--history", "2"]).await;
    let mut c = server.client().await;
    for n in 0..3 {
        c.send(&chat("a", &n.to_string())).await;
        c.recv().await;
    }
    let (_, body) = server.get("/metrics").await;
    assert_lines(&body, ["wschat_history_messages 2"]);
    server.stop().await;
}

#[tokio::test]
async fn a_request_head_over_16_kib_gets_431() {
    let server = TestServer::start(&[]).await;
    let near = "x".repeat(15 * 1024);
    assert_eq!(
        http_get(server.addr, "/healthz", &[("X-Filler", &near)])
            .await
            .0,
        200,
        "a head under 16 KiB is served"
    );
    let over = "x".repeat(17 * 1024);
    assert_eq!(
        http_get(server.addr, "/healthz", &[("X-Filler", &over)])
            .await
            .0,
        431
    );
    // A head that never ends is refused once 16 KiB have come, without
    // waiting for the rest.
    let endless = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Filler: {over}");
    let answer = Answer::parse(&raw_exchange(server.addr, endless.as_bytes()).await);
    assert_eq!(answer.status, 431, "{answer:?}");
    server.stop().await;
}

/// Reads from an idle connection until the server closes it; `false` if it
/// is still open after `ms` milliseconds.
async fn closed_within(tcp: &mut TcpStream, ms: u64) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_millis(ms), tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn idle_connections_cannot_crowd_out_upgrades() {
    // --max-connections 10 gives the smallest bound on connections that
    // have not upgraded: 64 (README, HTTP endpoints).
    const BOUND: usize = 64;
    let server = TestServer::start(&["--max-connections", "10"]).await;
    let mut idle = Vec::new();
    for _ in 0..BOUND {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // The health check is one more: the oldest idle connection makes room.
    let (status, body) = server.get("/healthz").await;
    assert_eq!(status, 200);
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["pending"], BOUND, "{health}");
    assert!(closed_within(&mut idle[0], WAIT.as_millis() as u64).await);
    assert!(!closed_within(&mut idle[2], 100).await);

    // At the bound again, a real client still upgrades, and chats.
    idle.push(TcpStream::connect(server.addr).await.unwrap());
    let mut c = server.client().await;
    c.send(&chat("a", "still here")).await;
    assert_eq!(c.recv().await["msg"], "still here");
    assert!(closed_within(&mut idle[1], WAIT.as_millis() as u64).await);

    // Upgraded, the client no longer counts; the scrape itself does.
    let (_, metrics) = server.get("/metrics").await;
    assert_lines(
        &metrics,
        [
            format!("wschat_pending_connections {BOUND}"),
            "wschat_connections 1".to_owned(),
        ],
    );
    // Two made room; a third if a connection that just finished was not
    // yet uncounted when the next one came.
    let evicted: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wschat_pending_evicted_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no wschat_pending_evicted_total in\n{metrics}"));
    assert!((2..=3).contains(&evicted), "{evicted}");
    assert!(
        !closed_within(&mut idle[BOUND], 100).await,
        "the newest stays"
    );
    server.stop().await;
}
