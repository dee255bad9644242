//! The archive (README, Archive): written before relay, read back at
//! start, robust to torn lines, rotated by SIGHUP, failing loudly.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{TestServer, chat, signal, spawn_binary};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wschat-archive-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

fn lines(path: &PathBuf) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn sigkill_loses_nothing_any_client_received_and_a_restart_replays_it() {
    let path = temp_path("kill.jsonl");
    let archive = path.to_str().unwrap();
    let (mut child, addr, _) =
        spawn_binary(&["--rate", "0", "--archive", archive, "--archive-fsync"]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let received: Vec<String> = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        let mut got = Vec::new();
        for i in 0..50 {
            ws.send(Message::text(chat("a", &i.to_string())))
                .await
                .unwrap();
        }
        while got.len() < 50 {
            if let Some(Ok(Message::Text(t))) = ws.next().await {
                got.push(t.to_string());
            }
        }
        got
    });
    signal(&child, "-KILL");
    let _ = child.wait();
    let on_disk = lines(&path);
    for text in &received {
        assert!(on_disk.contains(text), "received but not archived: {text}");
    }
    assert_eq!(on_disk[..], received[..], "same bytes, same order");

    let (mut child, addr, _) =
        spawn_binary(&["--rate", "0", "--archive", archive, "--history", "5"]);
    let replay = rt.block_on(first_texts(&addr, 5));
    assert_eq!(replay[..], received[45..]);
    signal(&child, "-TERM");
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_torn_last_line_is_skipped() {
    let path = temp_path("torn.jsonl");
    let mut file = std::fs::File::create(&path).unwrap();
    writeln!(
        file,
        r#"{{"usr":"a","msg":"whole","tim":"2020-01-01T00:00:00.000000000Z"}}"#
    )
    .unwrap();
    write!(file, r#"{{"usr":"a","msg":"cut sh"#).unwrap();
    drop(file);
    let server = TestServer::start(&["--archive", path.to_str().unwrap(), "--history", "10"]).await;
    let mut c = server.client().await;
    assert_eq!(c.recv().await["msg"], "whole");
    c.send(&chat("a", "next")).await;
    assert_eq!(c.recv().await["msg"], "next");
    server.stop().await;
    let on_disk = lines(&path);
    assert_eq!(on_disk.len(), 3);
    assert!(
        on_disk[2].contains("\"next\""),
        "a new message starts its own line: {on_disk:?}"
    );
}

#[tokio::test]
async fn a_1_gb_archive_loads_its_last_lines_quickly() {
    let path = temp_path("big.jsonl");
    let file = std::fs::File::create(&path).unwrap();
    // Sparse: a gigabyte of file that takes no disk, then real lines.
    file.set_len(1 << 30).unwrap();
    drop(file);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    writeln!(file).unwrap();
    for i in 0..1000 {
        writeln!(
            file,
            r#"{{"usr":"a","msg":"{i}","tim":"2020-01-01T00:00:00.000000000Z"}}"#
        )
        .unwrap();
    }
    drop(file);
    let size = std::fs::metadata(&path).unwrap().len();
    let start = Instant::now();
    let server =
        TestServer::start(&["--archive", path.to_str().unwrap(), "--history", "100"]).await;
    let mut c = server.client().await;
    let first = c.recv().await;
    let took = start.elapsed();
    println!("archive of {size} bytes: first history message after {took:?}");
    assert_eq!(first["msg"], "900");
    assert!(took < Duration::from_secs(1), "{took:?}");
    server.stop().await;
    std::fs::remove_file(path).unwrap();
}

#[test]
fn sighup_after_a_rename_writes_a_new_file() {
    let path = temp_path("rotate.jsonl");
    let rotated = temp_path("rotate.jsonl.1");
    let (mut child, addr, _) = spawn_binary(&["--rate", "0", "--archive", path.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let publish = |text: &'static str| {
        rt.block_on(async {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
                .await
                .unwrap();
            ws.send(Message::text(chat("a", text))).await.unwrap();
            loop {
                if let Some(Ok(Message::Text(_))) = ws.next().await {
                    break;
                }
            }
        })
    };
    publish("before");
    std::fs::rename(&path, &rotated).unwrap();
    signal(&child, "-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no new file after SIGHUP");
        std::thread::sleep(Duration::from_millis(20));
    }
    publish("after");
    signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    assert!(lines(&rotated).len() == 1 && lines(&rotated)[0].contains("before"));
    assert!(lines(&path).len() == 1 && lines(&path)[0].contains("after"));
}

#[tokio::test]
async fn an_unwritable_archive_answers_unavailable_and_keeps_the_client() {
    // /dev/full accepts the open and fails every write, as a full disk does
    // (a read-only file would not stop root).
    let server = TestServer::start(&["--archive", "/dev/full"]).await;
    let mut c = server.client().await;
    let mut listener = server.client().await;
    c.expect_error(&chat("a", "lost?"), "unavailable").await;
    listener.expect_silence(300).await;
    c.expect_error(&chat("a", "still open"), "unavailable")
        .await;
    server.stop().await;
}

#[test]
fn an_unusable_archive_path_is_a_one_line_error() {
    let dir = temp_path("a-directory");
    std::fs::create_dir_all(&dir).unwrap();
    for path in [dir.to_str().unwrap(), "/nonexistent/dir/archive.jsonl"] {
        let out = Command::new(env!("CARGO_BIN_EXE_wschat-server"))
            .args(["--listen", "127.0.0.1:0", "--archive", path])
            .env("RUST_LOG", "off")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{path}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("wschat-server: archive"), "{stderr}");
        assert!(stderr.contains(path), "{stderr}");
    }
}

/// A FIFO nobody reads from: a disk whose writes hang (a dead network
/// volume, a stalled device) once its buffer is full. Sending on the
/// returned channel (or dropping it) makes it read everything, which the
/// returned thread then yields.
fn stuck_disk(
    name: &str,
) -> (
    PathBuf,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<String>,
) {
    use std::io::Read;
    let path = temp_path(name);
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    let (unstick, stuck) = std::sync::mpsc::channel::<()>();
    let fifo = path.clone();
    let disk = std::thread::spawn(move || {
        let mut reader = std::fs::File::open(fifo).unwrap();
        let _ = stuck.recv();
        let mut written = String::new();
        reader.read_to_string(&mut written).unwrap();
        written
    });
    (path, unstick, disk)
}

/// Sends SIGTERM and gives the server `within` to exit; kills it if it
/// has not, so a failing test leaves nothing running. Its exit status, if
/// it exited by itself.
fn terminate(
    child: &mut std::process::Child,
    within: Duration,
) -> Option<std::process::ExitStatus> {
    signal(child, "-TERM");
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let exited = child.try_wait().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    exited
}

#[test]
fn a_stuck_archive_write_holds_its_publishers_not_the_server() {
    // More publishers than the server has worker threads, so that every
    // worker would be held if a waiting write held its thread.
    let workers = std::thread::available_parallelism().map_or(4, |n| n.get());
    stuck_archive_holds_only_its_publishers("stuck.fifo", 2 * workers + 4, 30_000);
}

#[test]
fn six_hundred_publishers_waiting_on_a_hung_disk_hold_nothing_else() {
    // Past tokio's 512 blocking threads: waiting publishers must hold no
    // thread at all. A FIFO's 64 KiB buffer takes about 30 messages of
    // 2 KB before the "disk" hangs, so more than 512 wait.
    stuck_archive_holds_only_its_publishers("stuck-600.fifo", 600, 2_000);
}

/// `publishers` clients publish a message of `size` bytes each while the
/// archive's disk hangs; the server must still answer `/healthz` and
/// upgrades, then relay and archive every message once the disk comes
/// back.
fn stuck_archive_holds_only_its_publishers(fifo: &str, publishers: usize, size: usize) {
    let (path, unstick, disk) = stuck_disk(fifo);
    let (mut child, addr, _) = spawn_binary(&[
        "--rate",
        "0",
        "--max-connections",
        "1000",
        "--archive",
        path.to_str().unwrap(),
    ]);
    let big = "x".repeat(size);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (answered, relayed) = rt.block_on(async {
        let connect = || async {
            tokio_tungstenite::connect_async(format!("ws://{addr}/"))
                .await
                .unwrap()
                .0
        };
        let mut listener = connect().await;
        let mut clients = Vec::new();
        for _ in 0..publishers {
            clients.push(connect().await);
        }
        for (i, ws) in clients.iter_mut().enumerate() {
            ws.send(Message::text(chat(&format!("p{i}"), &big)))
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let health = common::http_get(addr.parse().unwrap(), "/healthz", &[]);
        let answered = tokio::time::timeout(Duration::from_secs(3), health).await;
        let newcomer = tokio::time::timeout(Duration::from_secs(3), connect()).await;
        let _ = unstick.send(());
        let mut relayed = 0;
        while relayed < publishers {
            match tokio::time::timeout(common::WAIT, listener.next()).await {
                Ok(Some(Ok(Message::Text(_)))) => relayed += 1,
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        (answered.is_ok() && newcomer.is_ok(), relayed)
    });
    let exited = terminate(&mut child, common::WAIT);
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    let archived = disk.join().unwrap();
    assert!(
        answered,
        "the server stopped answering while an archive write waited"
    );
    assert_eq!(relayed, publishers, "every message relayed once unstuck");
    assert_eq!(archived.lines().count(), publishers, "and archived");
}

#[test]
fn sigterm_ends_the_server_while_an_archive_write_hangs() {
    let (path, unstick, disk) = stuck_disk("stuck-term.fifo");
    let (mut child, addr, _) = spawn_binary(&["--rate", "0", "--archive", path.to_str().unwrap()]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        for _ in 0..4 {
            let text = chat("a", &"x".repeat(30_000));
            ws.send(Message::text(text)).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    // The publisher's connection cannot close while its message waits for
    // the disk, so the server first waits out its 7 s shutdown grace.
    let exited = terminate(&mut child, Duration::from_secs(20));
    drop(unstick);
    let _ = disk.join();
    assert!(exited.is_some(), "still running 20 s after SIGTERM");
}

/// Starts the binary with `args` under a file-size limit of `max_file`
/// bytes (RLIMIT_FSIZE): a write that crosses it is cut short and the next
/// one fails, as on a full disk, but only for this process's files.
/// SIGXFSZ is ignored, so the write fails instead of killing the server.
fn spawn_with_file_size_limit(max_file: u64, args: &[&str]) -> (std::process::Child, String) {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let limited = format!("trap '' XFSZ; exec prlimit --fsize={max_file} -- \"$@\"");
    let child = Command::new("sh")
        .args(["-c", &limited, "sh", env!("CARGO_BIN_EXE_wschat-server")])
        .args(["--listen", &addr])
        .args(args)
        .env_remove("JWT_SECRET")
        .env("RUST_LOG", "off")
        .spawn()
        .unwrap();
    let deadline = Instant::now() + common::WAIT;
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, addr)
}

/// The next text frame, or `None` when none comes within the wait.
async fn next_text<S>(ws: &mut S) -> Option<String>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(common::WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

/// The first `n` text frames a new client of `addr` receives, or as many
/// as come before they stop.
async fn first_texts(addr: &str, n: usize) -> Vec<String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < n {
        match next_text(&mut ws).await {
            Some(text) => got.push(text),
            None => break,
        }
    }
    got
}

#[test]
fn a_write_that_fails_part_way_leaves_no_partial_line() {
    let path = temp_path("full.jsonl");
    let archive = path.to_str().unwrap();
    // Each line is 60 bytes plus the text: three of 250 fill 930 of the
    // 1024 bytes the disk has, the fourth is written in part and fails.
    let (mut child, addr) =
        spawn_with_file_size_limit(1024, &["--rate", "0", "--archive", archive]);
    let long = "x".repeat(250);
    let texts = [&long, &long, &long, &long, "fits"];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers: Vec<String> = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
            .await
            .unwrap();
        let mut answers = Vec::new();
        for text in texts {
            ws.send(Message::text(chat("a", text))).await.unwrap();
            match next_text(&mut ws).await {
                Some(answer) => answers.push(answer),
                None => break,
            }
        }
        answers
    });
    let exited = terminate(&mut child, common::WAIT);
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    assert_eq!(answers.len(), texts.len(), "an answer to each: {answers:?}");
    assert!(answers[3].contains("unavailable"), "{answers:?}");
    assert!(
        answers[4].contains("\"fits\""),
        "publishing resumes once a write succeeds: {answers:?}"
    );
    let received: Vec<String> = answers
        .into_iter()
        .filter(|a| a.contains("\"tim\""))
        .collect();
    assert_eq!(
        lines(&path),
        received,
        "the archive holds exactly what clients received"
    );

    let (mut child, addr, log) = spawn_binary(&["--archive", archive, "--history", "10"]);
    let replay = rt.block_on(first_texts(&addr, received.len()));
    let exited = terminate(&mut child, common::WAIT);
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    assert_eq!(replay, received, "a restart replays what clients received");
    let log = log.complete();
    assert!(!log.contains("skipped"), "{log}");
}

#[cfg(unix)]
#[test]
fn the_archive_is_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_path("private.jsonl");
    let rotated = temp_path("private.jsonl.1");
    let mode = |p: &PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let (mut child, _, _) = spawn_binary(&["--archive", path.to_str().unwrap()]);
    let at_start = mode(&path);
    std::fs::rename(&path, &rotated).unwrap();
    signal(&child, "-HUP");
    let deadline = Instant::now() + common::WAIT;
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let on_rotation = path.exists().then(|| mode(&path));
    let exited = terminate(&mut child, common::WAIT);
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    assert_eq!(at_start, 0o600, "created at start: {at_start:o}");
    assert_eq!(on_rotation, Some(0o600), "created on rotation");
}
