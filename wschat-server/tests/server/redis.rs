//! Several instances sharing one room through a real `redis-server`
//! (README, "Several instances (Redis)").

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Client, TestServer, WAIT, chat, free_port, stop_all};
use serde_json::Value;
use tokio::task::JoinHandle;

/// A redis-server on a free port, without persistence; killed when dropped
/// (also used by the moderation tests).
pub(crate) struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    /// A redis-server on a free port. A port found free can be taken
    /// before redis-server binds it (by another test): then it exits, and
    /// it is started again on another.
    pub(crate) fn start() -> Self {
        for _ in 0..5 {
            if let Some(redis) = Self::start_on(free_port()) {
                return redis;
            }
        }
        panic!("redis-server exited at start five times");
    }

    /// `None` when redis-server exits before answering.
    fn start_on(port: u16) -> Option<Self> {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server not found: install Debian's redis-server (.ci/run does)");
        let mut redis = Redis { child, port };
        let deadline = Instant::now() + WAIT;
        while !redis.answers_ping() {
            if redis.child.try_wait().unwrap().is_some() {
                return None;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(redis)
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut tcp) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let mut reply = [0u8; 7];
        tcp.write_all(b"PING\r\n").is_ok()
            && tcp.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A redis-server and `n` instances sharing a room through it, each with
/// `extra` options.
async fn cluster(n: usize, extra: &[&str]) -> (Redis, Vec<TestServer>) {
    let redis = Redis::start();
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--rate", "0"];
    args.extend_from_slice(extra);
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(TestServer::start(&args).await);
    }
    (redis, servers)
}

/// A listener on each instance, then a publisher on each that sends `n`
/// messages meanwhile (the `i`-th as `usr` "p{i}", `msg` "0", "1", ...):
/// the listeners, and the publishers' tasks.
async fn listen_and_publish(
    servers: &[TestServer],
    n: usize,
) -> (Vec<Client>, Vec<JoinHandle<Client>>) {
    let mut listeners = Vec::new();
    for s in servers {
        listeners.push(s.client().await);
    }
    let mut publishers = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let mut c = s.client().await;
        publishers.push(tokio::spawn(async move {
            for k in 0..n {
                c.send(&chat(&format!("p{i}"), &k.to_string())).await;
            }
            c
        }));
    }
    (listeners, publishers)
}

async fn recv_n(c: &mut Client, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        got.push(c.recv_text().await);
    }
    got
}

#[tokio::test(flavor = "multi_thread")]
async fn every_client_of_every_instance_gets_every_message_once_in_one_order() {
    const N: usize = 30;
    let (redis, servers) = cluster(3, &["--history", "5"]).await;
    let (mut listeners, publishers) = listen_and_publish(&servers, N).await;
    let mut orders = Vec::new();
    for l in &mut listeners {
        orders.push(recv_n(l, 3 * N).await);
    }
    assert!(
        orders.iter().all(|o| *o == orders[0]),
        "one order on every instance"
    );
    let mut next = [0usize; 3];
    for text in &orders[0] {
        let m: Value = serde_json::from_str(text).unwrap();
        let p: usize = m["usr"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(
            m["msg"],
            next[p].to_string(),
            "each sender's order kept, no duplicate"
        );
        next[p] += 1;
    }
    for l in &mut listeners {
        l.expect_silence(300).await;
    }

    // History lives in Redis: the same replay on every instance, even one
    // started now, and live messages follow it with no gap.
    let late = TestServer::start(&["--redis", &redis.url(), "--history", "5"]).await;
    let mut replays = Vec::new();
    for s in servers.iter().chain([&late]) {
        let mut c = s.client().await;
        replays.push(recv_n(&mut c, 5).await);
    }
    assert!(
        replays.iter().all(|r| r[..] == orders[0][3 * N - 5..]),
        "{replays:?}"
    );

    for p in publishers {
        p.await.unwrap();
    }
    stop_all(servers).await;
    late.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_redis_answers_unavailable_keeps_listeners_and_resumes() {
    let (mut redis, servers) = cluster(2, &[]).await;
    let port = redis.port;
    let mut publisher = servers[0].client().await;
    let mut listener = servers[1].client().await;
    publisher.send(&chat("a", "before")).await;
    assert_eq!(publisher.recv().await["msg"], "before");
    assert_eq!(listener.recv().await["msg"], "before");

    drop(redis);
    publisher
        .expect_error(&chat("a", "while down"), "unavailable")
        .await;
    let (_, health) = servers[1].get("/healthz").await;
    let deadline = Instant::now() + WAIT;
    let mut health = health;
    while !health.contains("\"backplane\":\"down\"") {
        assert!(
            Instant::now() < deadline,
            "healthz never said down: {health}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        health = servers[1].get("/healthz").await.1;
    }

    redis = Redis::start_on(port).expect("redis-server starts again on its port");
    // Publish until the instance has reconnected; the listener, still
    // connected, gets the first message that went through.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publisher.send(&chat("a", "after")).await;
        let reply = publisher.recv().await;
        if reply["msg"] == "after" {
            break;
        }
        assert_eq!(reply["err"], "unavailable", "{reply}");
        assert!(Instant::now() < deadline, "publishing never resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(listener.recv().await["msg"], "after");
    let (_, metrics) = servers[1].get("/metrics").await;
    assert!(
        metrics.contains("wschat_backplane_reconnects_total 1"),
        "{metrics}"
    );
    stop_all(servers).await;
    drop(redis);
}

#[test]
fn an_unreachable_redis_at_start_is_a_one_line_error() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_wschat-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &format!("redis://127.0.0.1:{port}/"),
        ])
        .env("RUST_LOG", "off")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot reach Redis"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_instance_stays_connected_across_read_timeouts() {
    // XREAD BLOCK gives up every 5 s with a nil reply; that is not a lost
    // connection, and must not look like one.
    let (_redis, servers) = cluster(1, &[]).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (_, metrics) = servers[0].get("/metrics").await;
    assert!(
        metrics.contains("wschat_backplane_reconnects_total 0"),
        "{metrics}"
    );
    let (_, health) = servers[0].get("/healthz").await;
    assert!(health.contains("\"backplane\":\"up\""), "{health}");
    let mut c = servers[0].client().await;
    c.send(&chat("a", "after a quiet while")).await;
    assert_eq!(c.recv().await["msg"], "after a quiet while");
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_instance_lets_go_of_redis() {
    let (redis, servers) = cluster(1, &[]).await;
    let deadline = Instant::now() + WAIT;
    while redis.other_clients() < 2 {
        assert!(
            Instant::now() < deadline,
            "the instance never connected its writer and reader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Reads by cursor keep their connections for the next read.
    let (status, _) = servers[0].get("/messages").await;
    assert_eq!(status, 200);
    stop_all(servers).await;
    let deadline = Instant::now() + WAIT;
    while redis.other_clients() > 0 {
        assert!(
            Instant::now() < deadline,
            "the stopped instance still holds Redis connections"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Redis {
    /// How many clients other than the asking one are connected.
    fn other_clients(&self) -> usize {
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        tcp.write_all(b"CLIENT LIST\r\n").unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 4096];
        // A bulk string: "$<len>\r\n<lines>\r\n".
        loop {
            let n = tcp.read(&mut buf).unwrap();
            reply.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&reply);
            if let Some((len, rest)) = text.strip_prefix('$').and_then(|t| t.split_once("\r\n")) {
                let len: usize = len.parse().unwrap();
                if rest.len() >= len {
                    return rest[..len]
                        .lines()
                        .filter(|l| !l.contains("cmd=client|list"))
                        .count();
                }
            }
            assert!(n > 0, "redis closed the connection");
        }
    }
}

impl Redis {
    /// A command through the redis crate's plain connection.
    fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con).unwrap()
    }

    /// Connections Redis has accepted since it started.
    fn connections_received(&self) -> u64 {
        let info: String = self.cmd(&["INFO", "stats"]);
        info.lines()
            .find_map(|l| l.strip_prefix("total_connections_received:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap()
    }

    /// The `tim`s of the stream's messages, in stream order.
    fn stream_tims(&self) -> Vec<String> {
        let entries: Vec<(String, Vec<(String, String)>)> =
            self.cmd(&["XRANGE", "wschat", "-", "+"]);
        entries
            .into_iter()
            .flat_map(|(_, fields)| fields)
            .map(|(_, m)| {
                let v: Value = serde_json::from_str(&m).unwrap();
                v["tim"].as_str().unwrap().to_owned()
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_archive_each_instance_writes_what_it_relays_in_relay_order() {
    let redis = Redis::start();
    let dir = std::env::temp_dir().join(format!("wschat-redis-archive-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<_> = (0..2).map(|i| dir.join(format!("{i}.jsonl"))).collect();
    let mut servers = Vec::new();
    for path in &paths {
        let _ = std::fs::remove_file(path);
        let url = redis.url();
        let args = [
            "--redis",
            &url,
            "--rate",
            "0",
            "--archive",
            path.to_str().unwrap(),
        ];
        servers.push(TestServer::start(&args).await);
    }
    let (mut listeners, publishers) = listen_and_publish(&servers, 20).await;
    let mut seen = Vec::new();
    for l in &mut listeners {
        seen.push(recv_n(l, 40).await);
    }
    for p in publishers {
        p.await.unwrap();
    }
    stop_all(servers).await;
    for (path, seen) in paths.iter().zip(&seen) {
        let archived: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(
            &archived, seen,
            "the archive holds what its clients received"
        );
    }
    assert_eq!(seen[0], seen[1], "one order on both instances");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_instance_appends_to_the_stream_in_tim_order() {
    let (redis, servers) = cluster(1, &[]).await;
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(servers[0].client().await);
    }
    let mut tasks = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for k in 0..40 {
                c.send(&chat(&format!("p{i}"), &k.to_string())).await;
            }
            recv_n(&mut c, 8 * 40).await
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let tims = redis.stream_tims();
    assert_eq!(tims.len(), 8 * 40);
    assert!(
        tims.windows(2).all(|w| w[0] < w[1]),
        "the stream is in tim order"
    );
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn entries_that_are_not_wschat_messages_are_never_relayed() {
    let (redis, servers) = cluster(1, &[]).await;
    let mut listener = servers[0].client().await;
    let forged = r#"{"usr":"admin","msg":"forged"}"#;
    let _: String = redis.cmd(&["XADD", "wschat", "*", "m", "not json"]);
    let _: String = redis.cmd(&["XADD", "wschat", "*", "other", "field"]);
    let _: String = redis.cmd(&["XADD", "wschat", "*", "m", forged]);
    let two_lines =
        "{\"usr\":\"a\",\"msg\":\"x\",\"tim\":\"2020-01-01T00:00:00.000000000Z\",\"y\":[\n1]}";
    let _: String = redis.cmd(&["XADD", "wschat", "*", "m", two_lines]);
    let mut publisher = servers[0].client().await;
    publisher.send(&chat("a", "real")).await;
    assert_eq!(listener.recv().await["msg"], "real", "only the real one");
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_read_waits_before_trying_again() {
    let (redis, servers) = cluster(1, &[]).await;
    let mut c = servers[0].client().await;
    c.send(&chat("a", "up")).await;
    assert_eq!(c.recv().await["msg"], "up");
    let _: () = redis.cmd(&["DEL", "wschat"]);
    // The stream's key replaced by a string: every XREAD fails (WRONGTYPE),
    // at the latest once the read blocked now gives up (5 s).
    let _: () = redis.cmd(&["SET", "wschat", "not a stream"]);
    let before = redis.connections_received();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let made = redis.connections_received() - before;
    assert!(
        made < 30,
        "{made} connections in 7 s: Redis is being hammered"
    );
    stop_all(servers).await;
}

async fn connect_to(addr: impl std::fmt::Display, query: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/{query}"))
        .await
        .unwrap();
    Client { ws }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_resumes_on_another_instance_from_the_stream() {
    let (_redis, servers) = cluster(2, &[]).await;
    let mut publisher = servers[0].client().await;
    let mut sent = Vec::new();
    for i in 0..10 {
        publisher.send(&chat("a", &i.to_string())).await;
        sent.push(publisher.recv_text().await);
    }
    let since: Value = serde_json::from_str(&sent[3]).unwrap();
    let since = since["tim"].as_str().unwrap();
    // Without --history the other instance holds nothing in memory: what
    // it sends comes from the stream.
    let mut resumed = connect_to(servers[1].addr, &format!("?since={since}")).await;
    for expected in &sent[4..] {
        assert_eq!(&resumed.recv_text().await, expected);
    }
    publisher.send(&chat("a", "live")).await;
    assert_eq!(
        resumed.recv().await["msg"],
        "live",
        "then live, nothing twice"
    );
    let (status, body) = servers[1]
        .get(&format!("/messages?since={since}&limit=2"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, format!("[{},{}]", sent[4], sent[5]));
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tim_strictly_increases_across_instances_whose_clocks_disagree() {
    let redis = Redis::start();
    let url = redis.url();
    let args = ["--redis", url.as_str(), "--rate", "0"];
    let ahead = TestServer::start(&args).await;
    // The other instance's clock is 30 s behind (libfaketime, from
    // Debian's faketime; timers keep the real monotonic clock).
    let (mut behind, behind_addr, _) = crate::common::spawn_binary_with_env(
        &args,
        &[
            (
                "LD_PRELOAD",
                "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
            ),
            ("FAKETIME", "-30s"),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ],
    );
    let a = ahead.client().await;
    let b = connect_to(&behind_addr, "").await;
    let mut listener = connect_to(&behind_addr, "").await;
    // Both publish at once, so each instance stamps before it has read
    // what the other just wrote.
    const N: usize = 40;
    let send = |mut c: Client, who: &'static str| {
        tokio::spawn(async move {
            for i in 0..N {
                c.send(&chat(who, &i.to_string())).await;
            }
            c
        })
    };
    let (a, b) = (send(a, "a"), send(b, "b"));
    let mut tims = Vec::new();
    let mut next = [0usize; 2];
    for _ in 0..2 * N {
        let m = listener.recv().await;
        let who = usize::from(m["usr"] == "b");
        assert_eq!(
            m["msg"],
            next[who].to_string(),
            "each sender's order, nothing lost"
        );
        next[who] += 1;
        tims.push(m["tim"].as_str().unwrap().to_owned());
    }
    let _ = (a.await, b.await);
    assert!(
        tims.windows(2).all(|w| w[0] < w[1]),
        "tim strictly increases in relay order: {tims:?}"
    );
    let _ = behind.kill();
    let _ = behind.wait();
    ahead.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_publishes_while_others_write_the_stream_without_pause() {
    const N: usize = 20;
    let redis = Redis::start();
    let url = redis.url();
    // A queue long enough for the client to read everything the other
    // writers write meanwhile, late.
    let server =
        TestServer::start(&["--redis", &url, "--rate", "0", "--send-queue", "65536"]).await;
    let mut c = server.client().await;
    // Two writers append to the stream without pause for half a second,
    // as busy instances do: each message stamped with the time it is
    // written, its id that `tim` (README, "Several instances (Redis)").
    // Whatever this instance stamps before a round trip is below the
    // stream's last after it.
    let others: Vec<_> = (0..2)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || {
                let mut con = redis::Client::open(url).unwrap().get_connection().unwrap();
                let until = Instant::now() + Duration::from_millis(500);
                let mut written = 0usize;
                while Instant::now() < until {
                    let now = chrono::Utc::now();
                    let tim = wschat_core::format_tim(now);
                    let id = format!(
                        "{}-{}",
                        now.timestamp_millis(),
                        now.timestamp_subsec_nanos() % 1_000_000
                    );
                    let frame = format!(r#"{{"usr":"other","msg":"x","tim":"{tim}"}}"#);
                    // Refused when the other writer got there first.
                    let added: redis::RedisResult<String> = redis::cmd("XADD")
                        .arg("wschat")
                        .arg(id)
                        .arg("m")
                        .arg(frame)
                        .query(&mut con);
                    written += usize::from(added.is_ok());
                }
                written
            })
        })
        .collect();
    // Meanwhile this instance's client publishes, 20 messages at once.
    tokio::time::sleep(Duration::from_millis(50)).await;
    for i in 0..N {
        c.send(&chat("me", &i.to_string())).await;
    }
    let written: usize = others.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        written > 100,
        "the other writers wrote only {written} messages"
    );
    let mut mine = 0;
    while mine < N {
        let m = c.recv().await;
        assert!(m.get("err").is_none(), "message {mine} refused: {m}");
        if m["usr"] == "me" {
            assert_eq!(m["msg"], mine.to_string(), "in order");
            mine += 1;
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_whose_last_id_is_no_tim_refuses_publishing_aloud() {
    let redis = Redis::start();
    let server = TestServer::start(&["--redis", redis.url().as_str()]).await;
    let mut c = server.client().await;
    // Something else than wschat wrote an id no `tim` can be: the
    // instance cannot append after it, and must say so, not drop.
    let _: String = redis.cmd(&["XADD", "wschat", "99999999999999999-0", "m", "x"]);
    c.expect_error(&chat("a", "lost?"), "unavailable").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_an_archive_dir_an_instance_writes_what_it_relays() {
    let redis = Redis::start();
    let dir = std::env::temp_dir().join(format!("wschat-redis-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = redis.url();
    let d = dir.to_str().unwrap();
    let servers = [
        TestServer::start(&["--redis", &url, "--rate", "0", "--archive-dir", d]).await,
        TestServer::start(&["--redis", &url, "--rate", "0"]).await,
    ];
    let mut listener = servers[0].client().await;
    let mut c = servers[1].client().await;
    for k in 0..5 {
        c.send(&chat("a", &k.to_string())).await;
    }
    let seen = recv_n(&mut listener, 5).await;
    stop_all(servers).await;
    let mut days: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    days.sort();
    let archived: Vec<String> = days
        .iter()
        .flat_map(|day| {
            std::fs::read_to_string(day)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        archived, seen,
        "what its clients received, from either instance"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_before_1970_reads_the_stream_from_its_start() {
    let (_redis, servers) = cluster(1, &[]).await;
    let mut c = servers[0].client().await;
    c.send(&chat("a", "hello")).await;
    let sent = c.recv_text().await;
    let since = "1969-12-31T23:59:59Z";
    let (status, body) = servers[0].get(&format!("/messages?since={since}")).await;
    assert_eq!((status, body), (200, format!("[{sent}]")));
    let (status, body) = servers[0].get(&format!("/messages?before={since}")).await;
    assert_eq!((status, body.as_str()), (200, "[]"));
    let mut resumed = connect_to(servers[0].addr, &format!("?since={since}")).await;
    let notice = resumed.recv().await;
    assert_eq!(notice["gap"]["since"], since, "held: nothing that old");
    assert_eq!(resumed.recv_text().await, sent);
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_by_cursor_reuse_their_redis_connections() {
    let (redis, servers) = cluster(1, &[]).await;
    let mut c = servers[0].client().await;
    c.send(&chat("a", "hello")).await;
    let sent: Value = serde_json::from_str(&c.recv_text().await).unwrap();
    let before = redis.connections_received();
    for _ in 0..50 {
        let (status, _) = servers[0].get("/messages?limit=1").await;
        assert_eq!(status, 200);
    }
    for _ in 0..10 {
        let since = "2001-01-01T00:00:00Z";
        let mut resumed = connect_to(servers[0].addr, &format!("?since={since}")).await;
        assert!(resumed.recv().await.get("gap").is_some());
        assert_eq!(resumed.recv().await["tim"], sent["tim"]);
    }
    // One of them is the one asking.
    let made = redis.connections_received() - before;
    assert!(made <= 5, "{made} Redis connections for 70 reads");
    stop_all(servers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reads_beyond_the_bound_get_503_with_retry_after() {
    // README, "The archive over HTTP": a few reads run at once; the rest
    // wait briefly, then get 503.
    let (redis, servers) = cluster(1, &[]).await;
    let mut c = servers[0].client().await;
    c.send(&chat("a", "hello")).await;
    c.recv_text().await;
    let addr = servers[0].addr;
    // Warm: connections made before Redis stops answering.
    for _ in 0..4 {
        assert_eq!(servers[0].get("/messages").await.0, 200);
    }
    // Redis answers nothing for 4 s: every read waits for it.
    let _: () = redis.cmd(&["CLIENT", "PAUSE", "4000", "ALL"]);
    let start = Instant::now();
    let requests: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                let answer = crate::common::http_request(addr, "/messages", &[]).await;
                (answer, start.elapsed())
            })
        })
        .collect();
    let mut busy = 0;
    for request in requests {
        let (answer, took) = request.await.unwrap();
        if answer.status == 503 {
            busy += 1;
            assert!(took < Duration::from_millis(3500), "503 after {took:?}");
            assert!(answer.header("retry-after").is_some(), "{answer:?}");
            let err: Value = serde_json::from_str(&answer.body).unwrap();
            assert_eq!(err["err"], "unavailable", "{answer:?}");
        } else {
            assert_eq!(answer.status, 200, "{answer:?}");
        }
    }
    assert!(busy > 0, "16 reads at once all waited for Redis");
    stop_all(servers).await;
}
