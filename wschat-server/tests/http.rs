//! The HTTP side: the client page, health, metrics, 404, and bad upgrades.

mod common;

use common::{TestServer, chat, http_get};

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
