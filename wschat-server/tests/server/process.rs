//! The binary as an operator meets it: bad configuration, signals.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{signal, spawn_binary, spawn_binary_logging};

fn server() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wschat-server"));
    cmd.env_remove("JWT_SECRET").env("RUST_LOG", "info");
    cmd
}

/// Runs the binary with `args`, expecting a quick failure with one line.
fn fails_with_one_line(args: &[&str], needle: &str) {
    common::refused_at_start(args, &[], needle);
}

#[test]
fn bad_configuration_is_one_line_and_a_nonzero_exit() {
    fails_with_one_line(&["--listen", "not-an-address"], "--listen");
    fails_with_one_line(&["--jwt-alg", "RS256"], "RS256");
    // A deadline this far away overflowed the clock in every connection.
    fails_with_one_line(
        &["--idle-timeout", "18446744073709551615"],
        "--idle-timeout",
    );
    fails_with_one_line(&["--rate", "NaN"], "--rate");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = server().args(["--listen", &addr]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let errors: Vec<_> = stderr
        .lines()
        .filter(|l| l.starts_with("wschat-server:"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("cannot listen on"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let (mut child, addr, _) = spawn_binary(&[]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        let mut clients = Vec::new();
        for _ in 0..3 {
            let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
                .await
                .unwrap();
            clients.push(ws);
        }
        signal(&child, "-TERM");
        for ws in &mut clients {
            let close = tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Close(frame))) => return frame,
                        Some(Ok(_)) => continue,
                        other => panic!("no close frame: {other:?}"),
                    }
                }
            })
            .await
            .unwrap();
            assert_eq!(u16::from(close.unwrap().code), 1001);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "server did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
}

/// Runs the binary at `RUST_LOG=level`, runs `session` against its
/// address, stops it with SIGTERM and returns its whole log.
fn log_of<F: std::future::Future<Output = ()>>(
    args: &[&str],
    level: &str,
    session: impl FnOnce(String) -> F,
) -> String {
    let (mut child, addr, log) = spawn_binary_logging(args, level);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(session(addr));
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    log.complete()
}

#[test]
fn secrets_and_tokens_never_reach_the_log_even_at_trace_level() {
    const SECRET: &str = "s3cret-that-must-not-leak";
    let token = wschat_core::Jwt::new(wschat_core::JwtConfig::new(SECRET))
        .mint("sub", "ann", None)
        .unwrap();
    let frame = format!(r#"{{"usr":"ann","msg":"hi","jwt":"{token}"}}"#);
    let log = log_of(&["--jwt-secret", SECRET], "trace", |addr| async move {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        ws.send(Message::text(frame)).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() {
                break;
            }
        }
    });
    assert!(log.contains("DEBUG"), "the log is verbose: {log}");
    assert!(!log.contains(SECRET), "the secret was logged");
    let signature = token.rsplit('.').next().unwrap();
    assert!(!log.contains(signature), "the token was logged");
}

#[test]
fn the_websocket_crates_follow_rust_log_below_debug() {
    let log = log_of(&[], "info", |addr| async move {
        use futures_util::StreamExt;
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        ws.close(None).await.unwrap();
        while let Some(Ok(_)) = ws.next().await {}
    });
    assert!(log.contains("connection closed"), "the log: {log}");
    assert!(
        !log.contains("DEBUG"),
        "debug lines at RUST_LOG=info: {log}"
    );
}

/// Waits up to `within` for the process to exit; its status if it did.
fn exited_within(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sighup_without_an_archive_is_logged_and_ignored() {
    let (mut child, addr, log) = spawn_binary(&[]);
    for _ in 0..3 {
        signal(&child, "-HUP");
        std::thread::sleep(Duration::from_millis(100));
    }
    let died = exited_within(&mut child, Duration::from_millis(500));
    if died.is_some() {
        panic!("SIGHUP ended the server: {died:?}\n{}", log.text());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, _) = rt.block_on(common::http_get(addr.parse().unwrap(), "/healthz", &[]));
    assert_eq!(status, 200, "still serving after SIGHUP");
    signal(&child, "-TERM");
    let status = exited_within(&mut child, common::WAIT).expect("SIGTERM ends it");
    assert_eq!(status.code(), Some(0));
    let log = log.complete();
    assert!(log.contains("SIGHUP"), "the signal is logged: {log}");
}

/// Runs `cmd`, expecting a quick failure whose stderr is one line
/// containing `needle`.
fn fails_with_exactly_one_line(cmd: &mut Command, needle: &str) {
    use std::process::Stdio;
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if exited_within(&mut child, common::WAIT).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{cmd:?} is still running: it was accepted");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{cmd:?} succeeded");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{cmd:?}: {stderr}");
    assert!(stderr.contains(needle), "{cmd:?}: {stderr}");
}

#[test]
fn an_empty_jwt_secret_is_refused_at_start() {
    // An unset variable in a compose file (`JWT_SECRET: ${JWT_SECRET}`)
    // arrives as an empty one: with it anyone could sign tokens.
    let listen = ["--listen", "127.0.0.1:0"];
    fails_with_exactly_one_line(server().args(listen).env("JWT_SECRET", ""), "empty");
    fails_with_exactly_one_line(server().args(listen).args(["--jwt-secret", ""]), "empty");
    fails_with_exactly_one_line(
        server()
            .args(["token", "--usr", "ann"])
            .env("JWT_SECRET", ""),
        "empty",
    );
}

#[test]
fn a_short_jwt_secret_starts_with_a_warning_that_hides_it() {
    const SECRET: &str = "only-19-bytes-long!";
    let log = log_of(&["--jwt-secret", SECRET], "info", |_| async {});
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("32 bytes"))
        .unwrap_or_else(|| panic!("no warning about the secret's length: {log}"));
    assert!(warning.contains("19"), "{warning}");
    assert!(!log.contains(SECRET), "the secret was logged: {log}");

    let long = "a-secret-of-at-least-thirty-two-bytes";
    let log = log_of(&["--jwt-secret", long], "info", |_| async {});
    assert!(
        !log.contains("32 bytes"),
        "a warning for a long secret: {log}"
    );
}

#[test]
fn settings_that_could_outgrow_the_machine_are_warned_about_at_start() {
    // 2^20 messages of up to 2^30 bytes: a petabyte, held by the history.
    let huge = ["--history", "1048576", "--max-message-bytes", "1073741824"];
    let log = log_of(&huge, "info", |_| async {});
    let warning = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("memory"))
        .unwrap_or_else(|| panic!("no warning about memory: {log}"));
    assert!(warning.contains("--history"), "{warning}");
    let log = log_of(&[], "info", |_| async {});
    assert!(
        !log.contains("memory"),
        "a warning with the defaults: {log}"
    );
}
