//! HTTPS and `wss://` without a proxy (README, "TLS"): chat and the HTTP
//! endpoints over TLS 1.2 and 1.3, every PEM key form, a plain client on
//! the TLS port, the handshake bounds, a SIGHUP certificate swap (and a
//! broken one) under open connections, and every bad start.

use std::process::Command;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::common::tls::{
    Leaf, TestCa, connect, files, https_get, https_health, unix_midnight, wss_client,
};
use crate::common::{
    Answer, Log, TestServer, WAIT, chat, closed_within, raw_exchange, signal, spawn_binary,
};

/// When the first test certificate expires, and the renewed one.
const FIRST: (i32, u8, u8) = (2031, 5, 17);
const RENEWED: (i32, u8, u8) = (2031, 8, 15);

/// An in-process server serving `leaf`, with `args` besides.
async fn tls_server(name: &str, leaf: &Leaf, args: &[&str]) -> TestServer {
    let (_, cert, key) = files(name);
    leaf.write(&cert, &key);
    let mut all = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    TestServer::start(&all).await
}

#[tokio::test]
async fn chat_the_page_and_the_endpoints_over_tls() {
    let ca = TestCa::new();
    let leaf = ca.leaf(FIRST);
    let server = tls_server("chat", &leaf, &[]).await;
    let trust = ca.client_config();

    // Chat over wss://, with one client on TLS 1.2 and one on 1.3.
    let mut a = wss_client(
        server.addr,
        ca.client_config_for(&[&rustls::version::TLS12]),
    )
    .await;
    let mut b = wss_client(
        server.addr,
        ca.client_config_for(&[&rustls::version::TLS13]),
    )
    .await;
    assert_eq!(a.server_certificate(), Some(leaf.der.clone()));
    a.send(&chat("ann", "over TLS 1.2")).await;
    assert_eq!(b.recv().await["msg"], "over TLS 1.2");
    assert_eq!(a.recv().await["msg"], "over TLS 1.2");
    b.send(&chat("bob", "over TLS 1.3")).await;
    assert_eq!(a.recv().await["msg"], "over TLS 1.3");
    for (version, name) in [
        (&rustls::version::TLS12, rustls::ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let tls = connect(server.addr, ca.client_config_for(&[version])).await;
        assert_eq!(tls.get_ref().1.protocol_version(), Some(name));
    }

    // The page, and /healthz and /metrics with the certificate's expiry.
    let page = https_get(server.addr, trust.clone(), "/").await;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("app.js"), "{}", page.body);
    let script = https_get(server.addr, trust.clone(), "/app.js").await;
    assert!(
        script
            .body
            .contains(r#"location.protocol === "https:" ? "wss:" : "ws:""#),
        "the page connects with wss:// when served over HTTPS"
    );
    let health = https_health(server.addr, trust.clone()).await;
    assert_eq!(health["tls"], true, "{health}");
    assert_eq!(
        health["tls_cert_expires"], "2031-05-17T00:00:00Z",
        "{health}"
    );
    let metrics = https_get(server.addr, trust, "/metrics").await.body;
    let gauge = format!(
        "wschat_tls_cert_expiry_timestamp_seconds {}",
        unix_midnight(FIRST)
    );
    assert!(metrics.lines().any(|l| l == gauge), "{gauge} in\n{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn a_plain_server_says_tls_is_off() {
    let server = TestServer::start(&[]).await;
    let (_, body) = server.get("/healthz").await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["tls"], false, "{health}");
    assert!(health["tls_cert_expires"].is_null(), "{health}");
    let (_, metrics) = server.get("/metrics").await;
    assert!(!metrics.contains("tls_cert_expiry"), "{metrics}");
    server.stop().await;
}

#[tokio::test]
async fn keys_in_pkcs8_pkcs1_and_sec1_are_all_read() {
    use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let ca = TestCa::new();

    let ec = rcgen::KeyPair::generate().unwrap();
    let sec1 = p256::SecretKey::from_pkcs8_der(&ec.serialize_der())
        .unwrap()
        .to_sec1_pem(LineEnding::LF)
        .unwrap();
    assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"));

    let rsa = rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap();
    let pkcs1 = rsa.to_pkcs1_pem(LineEnding::LF).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let rsa_signer = rcgen::KeyPair::from_pem(&rsa.to_pkcs8_pem(LineEnding::LF).unwrap()).unwrap();

    for (form, leaf) in [
        ("pkcs8", ca.leaf(FIRST)),
        ("sec1", ca.leaf_for(&ec, sec1.to_string(), FIRST)),
        ("pkcs1", ca.leaf_for(&rsa_signer, pkcs1.to_string(), FIRST)),
    ] {
        let server = tls_server(form, &leaf, &[]).await;
        let mut client = wss_client(server.addr, ca.client_config()).await;
        assert_eq!(
            client.server_certificate(),
            Some(leaf.der.clone()),
            "{form}"
        );
        client.send(&chat("ann", form)).await;
        assert_eq!(client.recv().await["msg"], form);
        server.stop().await;
    }
}

#[tokio::test]
async fn a_plain_client_on_the_tls_port_is_refused_and_harms_nothing() {
    let ca = TestCa::new();
    let server = tls_server("plain-client", &ca.leaf(FIRST), &[]).await;
    let mut chatting = wss_client(server.addr, ca.client_config()).await;

    // A plain request gets a 400 that says why, and nothing of the server.
    let answer = Answer::parse(
        &raw_exchange(server.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await,
    );
    assert_eq!(answer.status, 400, "{answer:?}");
    assert_eq!(answer.header("content-length"), Some("50"));
    assert_eq!(
        answer.body,
        "This port speaks HTTPS: use https:// (or wss://).\n"
    );
    // A plain WebSocket client too.
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/", server.addr))
            .await
            .is_err()
    );

    chatting.send(&chat("ann", "still fine")).await;
    assert_eq!(chatting.recv().await["msg"], "still fine");
    let health = https_health(server.addr, ca.client_config()).await;
    assert_eq!(health["connections"], 1, "{health}");
    server.stop().await;
}

#[tokio::test]
async fn a_slow_tls_handshake_is_bounded_like_a_plain_one() {
    let ca = TestCa::new();
    let leaf = ca.leaf(FIRST);
    // Half a ClientHello: a TLS record header announcing more than comes.
    const PARTIAL_HELLO: &[u8] = &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01];

    // Within --handshake-timeout, the TLS handshake included.
    let server = tls_server("slow-timeout", &leaf, &["--handshake-timeout", "1"]).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut partial, PARTIAL_HELLO)
        .await
        .unwrap();
    let started = Instant::now();
    for tcp in [&mut silent, &mut partial] {
        assert!(closed_within(tcp, 5_000).await, "not dropped");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    server.stop().await;

    // Counted among the connections not upgraded: the 64 places (the
    // fewest) taken by handshakes that never finish, a newer connection
    // closes the oldest, and a real client still gets through.
    const BOUND: usize = 64;
    let server = tls_server("slow-bound", &leaf, &["--max-connections", "10"]).await;
    let mut stalled = Vec::new();
    for _ in 0..BOUND {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut tcp, PARTIAL_HELLO)
            .await
            .unwrap();
        stalled.push(tcp);
    }
    let mut client = wss_client(server.addr, ca.client_config()).await;
    assert!(closed_within(&mut stalled[0], WAIT.as_millis() as u64).await);
    assert!(!closed_within(&mut stalled[2], 100).await);
    client.send(&chat("ann", "through")).await;
    assert_eq!(client.recv().await["msg"], "through");
    let health = https_health(server.addr, ca.client_config()).await;
    assert_eq!(health["pending"], BOUND, "{health}");
    server.stop().await;
}

/// A spawned server, killed if the test ends before stopping it.
struct Spawned(std::process::Child);

impl Spawned {
    /// Stops it with SIGTERM, expecting a clean exit.
    fn stop(mut self) {
        signal(&self.0, "-TERM");
        assert!(self.0.wait().unwrap().success());
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary serving `leaf` from fresh files; returns it, its address,
/// its log and the two files.
fn spawn_tls_binary(
    name: &str,
    leaf: &Leaf,
) -> (
    Spawned,
    std::net::SocketAddr,
    Log,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let (_, cert, key) = files(name);
    leaf.write(&cert, &key);
    let (child, addr, log) = spawn_binary(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    assert!(
        log.text().contains("listening on https://"),
        "{}",
        log.text()
    );
    (Spawned(child), addr.parse().unwrap(), log, cert, key)
}

/// Waits until the log holds `count` lines containing `needle`.
fn wait_for_log(log: &Log, needle: &str, count: usize) {
    let deadline = Instant::now() + WAIT;
    while log.text().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            log.text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn sighup_swaps_the_certificate_for_new_connections_while_old_ones_chat() {
    let ca = TestCa::new();
    let (first, renewed) = (ca.leaf(FIRST), ca.leaf(RENEWED));
    let (child, addr, log, cert, key) = spawn_tls_binary("swap", &first);
    runtime().block_on(async {
        let mut old = wss_client(addr, ca.client_config()).await;
        assert_eq!(old.server_certificate(), Some(first.der.clone()));

        // certbot renews: new files, then the deploy hook's SIGHUP.
        renewed.write(&cert, &key);
        signal(&child.0, "-HUP");
        wait_for_log(&log, "SIGHUP: certificate reloaded", 1);

        let mut new = wss_client(addr, ca.client_config()).await;
        assert_eq!(new.server_certificate(), Some(renewed.der.clone()));
        old.send(&chat("old", "still here")).await;
        assert_eq!(new.recv().await["msg"], "still here");
        assert_eq!(old.recv().await["msg"], "still here");
        new.send(&chat("new", "welcome")).await;
        assert_eq!(old.recv().await["msg"], "welcome");
        assert_eq!(new.recv().await["msg"], "welcome");

        let health = https_health(addr, ca.client_config()).await;
        assert_eq!(health["tls_cert_expires"], "2031-08-15T00:00:00Z");
        assert_eq!(health["connections"], 2, "{health}");
    });
    child.stop();
}

#[test]
fn a_broken_swap_keeps_the_old_certificate() {
    let ca = TestCa::new();
    let (first, other) = (ca.leaf(FIRST), ca.leaf(RENEWED));
    let (child, addr, log, cert, key) = spawn_tls_binary("broken-swap", &first);
    runtime().block_on(async {
        let mut old = wss_client(addr, ca.client_config()).await;
        // Each broken pair in turn: a key that is not the certificate's,
        // a key file that holds no key, a certificate that is gone.
        type Breaking<'a> = Box<dyn Fn() + 'a>;
        let broken: [(&str, Breaking); 3] = [
            (
                "is not the key of the certificate",
                Box::new(|| std::fs::write(&key, &other.key_pem).unwrap()),
            ),
            (
                "holds no PEM private key",
                Box::new(|| std::fs::write(&key, "not a key\n").unwrap()),
            ),
            (
                "No such file",
                Box::new(|| {
                    first.write(&cert, &key);
                    std::fs::remove_file(&cert).unwrap();
                }),
            ),
        ];
        for (n, (why, breaking)) in broken.iter().enumerate() {
            breaking();
            signal(&child.0, "-HUP");
            wait_for_log(&log, "SIGHUP: cannot reload the certificate", n + 1);
            assert!(log.text().contains(why), "{why}: {}", log.text());
            let mut new = wss_client(addr, ca.client_config()).await;
            assert_eq!(new.server_certificate(), Some(first.der.clone()), "{why}");
            new.send(&chat("new", why)).await;
            assert_eq!(old.recv().await["msg"], *why);
        }
        let health = https_health(addr, ca.client_config()).await;
        assert_eq!(health["tls_cert_expires"], "2031-05-17T00:00:00Z");

        // Fixed, the next SIGHUP takes the new pair.
        other.write(&cert, &key);
        signal(&child.0, "-HUP");
        wait_for_log(&log, "SIGHUP: certificate reloaded", 1);
        let new = wss_client(addr, ca.client_config()).await;
        assert_eq!(new.server_certificate(), Some(other.der.clone()));
    });
    child.stop();
}

/// Runs the binary with `args` (and `env`), expecting exit status 1 and
/// exactly one line on stderr, holding `needle`.
fn fails_with_one_line(args: &[&str], env: &[(&str, &str)], needle: &str) {
    let (_, stderr) = crate::common::refused_at_start(args, env, needle);
    assert!(stderr.starts_with("wschat-server: "), "{stderr}");
}

#[test]
fn every_bad_tls_start_is_one_line_and_exit_status_1() {
    let ca = TestCa::new();
    let (dir, cert, key) = files("bad-start");
    let (good, other) = (ca.leaf(FIRST), ca.leaf(FIRST));
    good.write(&cert, &key);
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap();
        path(name)
    };
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let garbage = write("garbage.pem", "this is not PEM at all\n");
    let torn = write(
        "torn.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 !!!\n-----END CERTIFICATE-----\n",
    );
    let not_x509 = write(
        "not-x509.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    let other_key = write("other-key.pem", &other.key_pem);
    let missing = path("missing.pem");
    let a_dir = dir.to_str().unwrap();
    // A FIFO would block the read forever; a device could never end.
    let fifo = path("fifo.pem");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );

    // One of the two alone, as an option or from the environment.
    fails_with_one_line(&["--tls-cert", cert], &[], "--tls-cert needs --tls-key");
    fails_with_one_line(&["--tls-key", key], &[], "--tls-key needs --tls-cert");
    fails_with_one_line(&[], &[("WSCHAT_TLS_CERT", cert)], "needs --tls-key");
    // Unreadable files.
    fails_with_one_line(
        &["--tls-cert", &missing, "--tls-key", key],
        &[],
        "--tls-cert",
    );
    fails_with_one_line(
        &["--tls-cert", cert, "--tls-key", &missing],
        &[],
        "--tls-key",
    );
    fails_with_one_line(&["--tls-cert", a_dir, "--tls-key", key], &[], "--tls-cert");
    fails_with_one_line(
        &["--tls-cert", &fifo, "--tls-key", key],
        &[],
        "not a regular file",
    );
    fails_with_one_line(
        &["--tls-cert", cert, "--tls-key", "/dev/zero"],
        &[],
        "not a regular file",
    );
    let huge = write("huge.pem", &"A".repeat((1 << 20) + 1));
    fails_with_one_line(
        &["--tls-cert", &huge, "--tls-key", key],
        &[],
        "larger than 1 MiB",
    );
    // Files that hold no certificate or key.
    fails_with_one_line(
        &["--tls-cert", &garbage, "--tls-key", key],
        &[],
        "holds no PEM CERTIFICATE",
    );
    fails_with_one_line(&["--tls-cert", &torn, "--tls-key", key], &[], "--tls-cert");
    fails_with_one_line(
        &["--tls-cert", &not_x509, "--tls-key", key],
        &[],
        "not an X.509 certificate",
    );
    fails_with_one_line(
        &["--tls-cert", key, "--tls-key", key],
        &[],
        "holds no PEM CERTIFICATE",
    );
    fails_with_one_line(
        &["--tls-cert", cert, "--tls-key", &garbage],
        &[],
        "holds no PEM private key",
    );
    fails_with_one_line(
        &["--tls-cert", cert, "--tls-key", cert],
        &[],
        "holds no PEM private key",
    );
    // A key that is not the certificate's.
    fails_with_one_line(
        &["--tls-cert", cert, "--tls-key", &other_key],
        &[],
        "is not the key of the certificate",
    );
}
