//! Several instances sharing one room through a real `redis-server`
//! (contract section 7).

mod common;

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Client, TestServer, WAIT, chat, free_port};
use serde_json::Value;

/// A redis-server on a free port, without persistence; killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Self {
        let port = free_port();
        Self::start_on(port)
    }

    fn start_on(port: u16) -> Self {
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
        let redis = Redis { child, port };
        let deadline = Instant::now() + WAIT;
        while !redis.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
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

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn instances(redis: &Redis, n: usize, extra: &[&str]) -> Vec<TestServer> {
    let url = redis.url();
    let mut args = vec!["--redis", url.as_str(), "--rate", "0"];
    args.extend_from_slice(extra);
    let mut servers = Vec::new();
    for _ in 0..n {
        servers.push(TestServer::start(&args).await);
    }
    servers
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
    let redis = Redis::start();
    let servers = instances(&redis, 3, &["--history", "5"]).await;
    let mut listeners = Vec::new();
    for s in &servers {
        listeners.push(s.client().await);
    }
    let mut publishers = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let mut c = s.client().await;
        publishers.push(tokio::spawn(async move {
            for k in 0..N {
                c.send(&chat(&format!("p{i}"), &k.to_string())).await;
            }
            c
        }));
    }
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
    for s in servers {
        s.stop().await;
    }
    late.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn losing_redis_answers_unavailable_keeps_listeners_and_resumes() {
    let mut redis = Redis::start();
    let port = redis.port;
    let servers = instances(&redis, 2, &[]).await;
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

    redis = Redis::start_on(port);
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
    for s in servers {
        s.stop().await;
    }
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
    let redis = Redis::start();
    let servers = instances(&redis, 1, &[]).await;
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
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_instance_lets_go_of_redis() {
    let redis = Redis::start();
    let servers = instances(&redis, 1, &[]).await;
    let deadline = Instant::now() + WAIT;
    while redis.other_clients() < 2 {
        assert!(
            Instant::now() < deadline,
            "the instance never connected its writer and reader"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in servers {
        s.stop().await;
    }
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
