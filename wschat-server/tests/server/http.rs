//! The HTTP side: the client page, health, metrics, 404, bad upgrades,
//! security headers, caching validators, and the bounds on request heads
//! and on connections that have not upgraded.

use crate::common::{
    Answer, TestServer, WAIT, chat, closed_within, http_get, http_request, raw_exchange,
};
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
/// codes).
fn documented_codes() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let codes: Vec<String> = readme
        .lines()
        .skip_while(|l| *l != "| `err` | when |")
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .filter_map(|l| l.split('`').nth(1))
        .map(str::to_owned)
        .collect();
    assert!(
        codes.len() >= 7 && codes.iter().any(|c| c == "muted"),
        "the README's error table moved: {codes:?}"
    );
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

/// The headers every page and file carries (README, HTTP endpoints).
fn assert_hardened(what: &str, answer: &Answer) {
    assert_eq!(
        answer.header("x-content-type-options"),
        Some("nosniff"),
        "{what}: {answer:?}"
    );
    let csp = answer
        .header("content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy: {answer:?}"));
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for wanted in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "connect-src 'self' ws: wss:",
        "frame-ancestors 'none'",
    ] {
        assert!(
            directives.contains(&wanted),
            "{what}: {wanted:?} not in {csp:?}"
        );
    }
    assert!(!csp.contains("unsafe"), "{what}: {csp}");
}

#[tokio::test]
async fn pages_and_files_carry_nosniff_and_a_strict_csp() {
    let server = TestServer::start(&[]).await;
    for path in [
        "/",
        "/index.html",
        "/app.js",
        "/style.css",
        "/nothing-here",
        "/healthz",
    ] {
        assert_hardened(path, &http_request(server.addr, path, &[]).await);
    }
    server.stop().await;

    let dir = temp_dir("csp");
    std::fs::write(dir.join("index.html"), "<p>own</p>").unwrap();
    std::fs::write(dir.join("a.js"), "1").unwrap();
    let server = TestServer::start(&["--static-dir", dir.to_str().unwrap()]).await;
    for path in ["/", "/a.js", "/missing.css"] {
        assert_hardened(path, &http_request(server.addr, path, &[]).await);
    }
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn the_built_in_client_answers_conditional_requests() {
    let server = TestServer::start(&[]).await;
    for path in ["/", "/app.js", "/style.css"] {
        let first = http_request(server.addr, path, &[]).await;
        assert_eq!(first.status, 200, "{path}");
        let etag = first
            .header("etag")
            .unwrap_or_else(|| panic!("{path}: no ETag: {first:?}"))
            .to_owned();
        assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
        let again = http_request(server.addr, path, &[("If-None-Match", &etag)]).await;
        assert_eq!((again.status, again.body.as_str()), (304, ""), "{path}");
        assert_eq!(again.header("etag"), Some(etag.as_str()));
        let listed = format!("\"other\", W/{etag}");
        let weak = http_request(server.addr, path, &[("If-None-Match", &listed)]).await;
        assert_eq!(weak.status, 304, "{path}: weak comparison");
        let other = http_request(server.addr, path, &[("If-None-Match", "\"other\"")]).await;
        assert_eq!(other.status, 200, "{path}");
        assert_eq!(other.body, first.body);
    }
    let (index, app) = (
        http_request(server.addr, "/", &[]).await,
        http_request(server.addr, "/app.js", &[]).await,
    );
    assert_ne!(index.header("etag"), app.header("etag"));
    server.stop().await;
}

#[tokio::test]
async fn static_dir_files_answer_conditional_requests() {
    let dir = temp_dir("cond");
    std::fs::write(dir.join("index.html"), "<p>own</p>").unwrap();
    let server = TestServer::start(&["--static-dir", dir.to_str().unwrap()]).await;
    let first = http_request(server.addr, "/index.html", &[]).await;
    assert_eq!(first.status, 200);
    let again = match (first.header("etag"), first.header("last-modified")) {
        (Some(etag), _) => http_request(server.addr, "/", &[("If-None-Match", etag)]).await,
        (None, Some(date)) => http_request(server.addr, "/", &[("If-Modified-Since", date)]).await,
        (None, None) => panic!("no validator: {first:?}"),
    };
    assert_eq!((again.status, again.body.as_str()), (304, ""));
    server.stop().await;
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn static_dir_never_serves_dotfiles_or_escapes_through_symlinks() {
    let root = temp_dir("dots");
    let dir = root.join("www");
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("index.html"), "<p>own</p>").unwrap();
    std::fs::write(dir.join("sub/page.html"), "inside").unwrap();
    std::fs::write(dir.join(".env"), "SECRET=1").unwrap();
    std::fs::write(dir.join(".git/config"), "SECRET=2").unwrap();
    std::fs::write(root.join("outside.txt"), "SECRET=3").unwrap();
    std::os::unix::fs::symlink(root.join("outside.txt"), dir.join("out.txt")).unwrap();
    std::os::unix::fs::symlink(&root, dir.join("up")).unwrap();
    std::os::unix::fs::symlink(dir.join(".env"), dir.join("env.txt")).unwrap();
    std::os::unix::fs::symlink(dir.join("sub/page.html"), dir.join("link.html")).unwrap();
    let server = TestServer::start(&["--static-dir", dir.to_str().unwrap()]).await;
    for path in [
        "/.env",
        "/.git/config",
        "/%2eenv",
        "/%2Egit/config",
        "/sub%2F..%2F.env",
        "/sub/%2e%2e/.env",
        "/out.txt",
        "/up/outside.txt",
        "/env.txt",
        "/.git/",
        "/sub",
        "/sub/",
    ] {
        let answer = http_request(server.addr, path, &[]).await;
        assert_eq!(answer.status, 404, "{path}: {answer:?}");
        assert!(!answer.body.contains("SECRET"), "{path}: {answer:?}");
    }
    assert_eq!(
        server.get("/sub/page.html").await,
        (200, "inside".to_owned())
    );
    assert_eq!(
        server.get("/link.html").await,
        (200, "inside".to_owned()),
        "a symlink that stays inside the folder is served"
    );
    server.stop().await;
    std::fs::remove_dir_all(root).unwrap();
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

/// A fresh folder for one test.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("wschat-http-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
