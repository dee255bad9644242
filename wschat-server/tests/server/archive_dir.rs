//! The archive as a directory of day files (`--archive-dir` / `LOG_DIR`,
//! README, Archive): written before relay, one file per UTC day of `tim`,
//! read back across days at start.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Client, WAIT, chat, free_port, refused_at_start, signal, spawn_binary};

/// An empty directory of this test's own (its parent exists, it does not).
fn temp_dir(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("wschat-archive-dir-test-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let dir = root.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The files of `dir` and their lines, by name.
fn day_files(dir: &Path) -> Vec<(String, Vec<String>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            (name, text.lines().map(str::to_owned).collect())
        })
        .collect();
    files.sort();
    files
}

/// The files `received` belongs in: by the UTC day of each `tim`.
fn by_day(received: &[String]) -> Vec<(String, Vec<String>)> {
    let mut days: Vec<(String, Vec<String>)> = Vec::new();
    for text in received {
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        let day = v["tim"].as_str().unwrap()[..10].to_owned();
        match days.last_mut() {
            Some((last, lines)) if *last == day => lines.push(text.clone()),
            _ => days.push((day, vec![text.clone()])),
        }
    }
    days
}

/// Connects to `addr`, reads the `replayed` messages of its history
/// (and that no more come), publishes `n` messages and returns what came
/// back: the history, then the messages.
fn visit(addr: &str, replayed: usize, n: usize) -> (Vec<String>, Vec<String>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        let mut c = Client { ws };
        let mut history = Vec::new();
        for _ in 0..replayed {
            history.push(c.recv_text().await);
        }
        c.expect_silence(200).await;
        for i in 0..n {
            c.send(&chat("a", &format!("{i} {}", "x".repeat(i * 31 % 200))))
                .await;
        }
        let mut got = Vec::new();
        for _ in 0..n {
            got.push(c.recv_text().await);
        }
        (history, got)
    })
}

/// A spawned server, killed if a failing test leaves it running.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn spawn(args: &[&str]) -> Self {
        let (child, addr, _) = spawn_binary(args);
        Server { child, addr }
    }

    /// Ends it with SIGTERM; it must exit cleanly.
    fn stop(mut self) {
        signal(&self.child, "-TERM");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status:?}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sigkill_loses_nothing_and_the_files_hold_what_clients_received() {
    let dir = temp_dir("kill");
    let d = dir.to_str().unwrap();
    let server = Server::spawn(&["--rate", "0", "--archive-dir", d, "--archive-fsync"]);
    let (_, received) = visit(&server.addr, 0, 50);
    signal(&server.child, "-KILL");
    drop(server);
    let mut files = day_files(&dir);
    // The file of the day the server started may stay empty (a test run
    // across midnight).
    files.retain(|(_, lines)| !lines.is_empty());
    assert_eq!(files, by_day(&received), "same bytes, same order, by day");
    for (name, _) in &files {
        let mode = std::fs::metadata(dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700,
        "created owner-only"
    );

    // LOG_DIR, the original's name, is the same option.
    let mut env_server = Command::new(env!("CARGO_BIN_EXE_wschat-server"));
    env_server.env("LOG_DIR", &dir);
    let server = spawn_with(env_server, &["--rate", "0", "--history", "5"]);
    let (history, more) = visit(&server.addr, 5, 1);
    assert_eq!(history, received[45..]);
    server.stop();
    let last = day_files(&dir)
        .into_iter()
        .rev()
        .find(|(_, l)| !l.is_empty());
    assert_eq!(
        last.unwrap().1.last(),
        more.last(),
        "written through LOG_DIR"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_restart_reads_history_across_days() {
    let dir = temp_dir("days");
    std::fs::create_dir_all(&dir).unwrap();
    let line = |i: usize, tim: &str| format!(r#"{{"usr":"old","msg":"{i}","tim":"{tim}"}}"#);
    let first = [
        line(0, "2020-01-01T12:00:00.000000000Z"),
        line(1, "2020-01-01T23:59:59.999999999Z"),
    ];
    let second = [line(2, "2020-01-02T00:00:00.000000000Z")];
    std::fs::write(dir.join("2020-01-01"), format!("{}\n", first.join("\n"))).unwrap();
    std::fs::write(dir.join("2020-01-02"), format!("{}\n", second[0])).unwrap();
    std::fs::write(dir.join("README"), "not a day\n").unwrap();
    let d = dir.to_str().unwrap();

    // The newest messages are in an earlier day's file.
    let server = Server::spawn(&["--rate", "0", "--archive-dir", d, "--history", "3"]);
    let want = [first[0].clone(), first[1].clone(), second[0].clone()];
    assert_eq!(visit(&server.addr, 3, 0).0, want);
    // No rotation to do, and a SIGHUP (from a logrotate set up for the
    // original) does not end the server.
    signal(&server.child, "-HUP");
    let (_, new) = visit(&server.addr, 3, 2);
    server.stop();
    assert_eq!(
        std::fs::read_to_string(dir.join("2020-01-02")).unwrap(),
        format!("{}\n", second[0]),
        "an earlier day's file is left as it was"
    );

    let server = Server::spawn(&["--rate", "0", "--archive-dir", d, "--history", "4"]);
    let want = [
        first[1].clone(),
        second[0].clone(),
        new[0].clone(),
        new[1].clone(),
    ];
    assert_eq!(visit(&server.addr, 4, 0).0, want);
    server.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn archive_and_archive_dir_exclude_each_other() {
    let dir = temp_dir("both");
    let file = dir.with_extension("jsonl");
    let (code, stderr) = refused_at_start(
        &[
            "--archive-dir",
            dir.to_str().unwrap(),
            "--archive",
            file.to_str().unwrap(),
        ],
        &[("RUST_LOG", "off")],
        "cannot be used with",
    );
    assert_eq!(code, Some(2), "clap's usage error: {stderr}");
    assert!(!dir.exists() && !file.exists(), "nothing was created");
}

#[test]
fn an_unusable_dir_is_a_one_line_error() {
    let file = temp_dir("in-the-way");
    std::fs::write(&file, "").unwrap();
    let below = file.join("below");
    for dir in [
        file.as_path(),
        below.as_path(),
        Path::new("/proc/wschat-logs"),
    ] {
        let dir_name = dir.to_str().unwrap();
        let (code, stderr) = refused_at_start(
            &["--archive-dir", dir_name],
            &[("RUST_LOG", "off")],
            "wschat-server: archive",
        );
        assert_eq!(code, Some(1), "{dir:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(dir.to_str().unwrap()), "{stderr}");
    }
    std::fs::remove_file(file).unwrap();
}

#[tokio::test]
async fn a_write_that_fails_part_way_leaves_no_partial_line() {
    // RLIMIT_FSIZE makes the disk full at 1024 bytes per file: a write
    // that crosses it is cut short (the rest fails with EFBIG, SIGXFSZ
    // ignored), as on a full disk.
    let dir = temp_dir("part-way");
    let mut wrapped = Command::new("sh");
    wrapped.args([
        "-c",
        r#"trap '' XFSZ; ulimit -f 2; exec "$0" "$@""#,
        env!("CARGO_BIN_EXE_wschat-server"),
    ]);
    let args = ["--rate", "0", "--archive-dir", dir.to_str().unwrap()];
    let server = spawn_with(wrapped, &args);
    let addr = &server.addr;
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let mut c = Client { ws };
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let mut listener = Client { ws };
    let mut received = Vec::new();
    for _ in 0..2 {
        c.send(&chat("a", &"x".repeat(300))).await;
        received.push(listener.recv_text().await);
        c.recv_text().await;
    }
    c.expect_error(&chat("a", &"y".repeat(300)), "unavailable")
        .await;
    listener.expect_silence(300).await;
    c.send(&chat("a", "fits")).await;
    received.push(listener.recv_text().await);
    drop((c, listener));
    server.stop();
    let files = day_files(&dir);
    assert_eq!(files, by_day(&received), "exactly what clients received");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Starts `command` (the server, perhaps wrapped) on a free port with
/// `args`; returns once it accepts connections.
fn spawn_with(mut command: Command, args: &[&str]) -> Server {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = command
        .args(["--listen", &addr])
        .args(args)
        .env_remove("JWT_SECRET")
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let server = Server { child, addr };
    let deadline = Instant::now() + WAIT;
    while std::net::TcpStream::connect(&server.addr).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}
