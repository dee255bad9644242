//! Tokens from an identity provider, through a real server: a public key
//! (`--jwt-public-key`), a key set from a file or a URL (`--jwks`), issuer
//! and audience, `--jwt-optional`, and every bad start.

use crate::common;
#[path = "../../../wschat-core/tests/support/keys.rs"]
mod keys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::{Client, TestServer, chat, spawn_binary};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use keys::{ASYMMETRIC, TestKey, jwks};
use serde_json::json;

/// A message carrying `jwt`.
fn signed(usr: &str, jwt: &str) -> String {
    json!({"usr": usr, "msg": "hi", "jwt": jwt}).to_string()
}

/// Sends a message from `usr` with `token` and expects it relayed.
async fn passes(c: &mut Client, usr: &str, token: &str) {
    c.send(&signed(usr, token)).await;
    assert_eq!(c.recv().await["usr"], usr, "a token that should pass");
}

/// A file in a fresh temporary directory, removed with it at exit.
fn temp_file(name: &str, contents: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "wschat-keys-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

fn alg_name(alg: Algorithm) -> String {
    format!("{alg:?}")
}

/// A server that verifies tokens with `key`'s public half and `alg`.
async fn with_public_key(key: &TestKey, alg: Algorithm, more: &[&str]) -> TestServer {
    let file = temp_file("key.pem", &key.public_pem);
    let alg = alg_name(alg);
    let mut args = vec![
        "--jwt-public-key",
        file.to_str().unwrap(),
        "--jwt-alg",
        &alg,
    ];
    args.extend_from_slice(more);
    TestServer::start(&args).await
}

/// The key of `kind` ("RSA", "P-256", ...): `fresh` asks for another one
/// than the first of its kind.
fn key_of(kind: &str, fresh: bool) -> TestKey {
    let rsa = |n: usize| {
        let k = TestKey::rsa(n);
        TestKey {
            name: k.name,
            private_pem: k.private_pem.clone(),
            public_pem: k.public_pem.clone(),
        }
    };
    match (kind, fresh) {
        ("RSA", false) => rsa(0),
        ("RSA", true) => rsa(1),
        ("P-256", _) => TestKey::p256(),
        ("P-384", _) => TestKey::p384(),
        _ => TestKey::ed25519(),
    }
}

#[tokio::test]
async fn each_algorithm_takes_its_key_and_refuses_every_other() {
    let others = [
        (TestKey::rsa(1), Algorithm::RS256),
        (&TestKey::p256(), Algorithm::ES256),
        (&TestKey::p384(), Algorithm::ES384),
        (&TestKey::ed25519(), Algorithm::EdDSA),
    ];
    for (alg, kind) in ASYMMETRIC {
        let key = key_of(kind, false);
        let server = with_public_key(&key, alg, &[]).await;
        let mut c = server.client().await;
        // A single public key ignores `kid`.
        passes(&mut c, "ann", &key.sign(alg, &json!({}), Some("any"))).await;
        // The same kind of key, but another one, with the right algorithm.
        let same_kind = key_of(kind, true);
        c.expect_error(
            &signed("ann", &same_kind.sign(alg, &json!({}), None)),
            "unauthorized",
        )
        .await;
        // Every other key, with the algorithm it fits.
        for (other, other_alg) in &others {
            if other.public_pem == key.public_pem {
                continue;
            }
            c.expect_error(
                &signed("ann", &other.sign(*other_alg, &json!({}), None)),
                "unauthorized",
            )
            .await;
        }
        c.expect_error(&chat("ann", "no token"), "unauthorized")
            .await;
        drop(c);
        server.stop().await;
    }
}

#[tokio::test]
async fn algorithm_confusion_none_and_other_algorithms_are_refused() {
    let key = TestKey::rsa(0);
    let server = with_public_key(key, Algorithm::RS256, &[]).await;
    let mut c = server.client().await;
    let mut listener = server.client().await;
    // The classic attack: HMAC "signed" with the public key's PEM text.
    let confused = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "ann"}),
        &EncodingKey::from_secret(key.public_pem.as_bytes()),
    )
    .unwrap();
    // {"alg":"none","typ":"JWT"} . {"sub":"ann"} . (no signature)
    let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4ifQ.";
    for token in [
        confused,
        none.to_owned(),
        key.sign(Algorithm::PS256, &json!({}), None),
        key.sign(Algorithm::RS512, &json!({}), None),
    ] {
        c.expect_error(&signed("ann", &token), "unauthorized").await;
    }
    listener.expect_silence(200).await;
    c.send(&signed(
        "ann",
        &key.sign(Algorithm::RS256, &json!({}), None),
    ))
    .await;
    assert_eq!(listener.recv().await["usr"], "ann");
    server.stop().await;
}

#[tokio::test]
async fn a_key_set_file_picks_the_key_by_kid() {
    let (a, b) = (TestKey::p256(), TestKey::p256());
    let set = jwks(&[a.jwk("a", Algorithm::ES256), b.jwk("b", Algorithm::ES256)]);
    let file = temp_file("jwks.json", &set);
    let server = TestServer::start(&["--jwks", file.to_str().unwrap(), "--jwt-alg", "ES256"]).await;
    let mut c = server.client().await;
    for (key, kid) in [(&a, "a"), (&b, "b")] {
        passes(
            &mut c,
            kid,
            &key.sign(Algorithm::ES256, &json!({}), Some(kid)),
        )
        .await;
    }
    for token in [
        a.sign(Algorithm::ES256, &json!({}), Some("b")),
        a.sign(Algorithm::ES256, &json!({}), Some("c")),
        a.sign(Algorithm::ES256, &json!({}), None),
    ] {
        c.expect_error(&signed("x", &token), "unauthorized").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn a_key_set_of_one_key_takes_tokens_without_kid() {
    let key = TestKey::ed25519();
    let file = temp_file("jwks.json", &jwks(&[key.jwk("only", Algorithm::EdDSA)]));
    let server = TestServer::start(&["--jwks", file.to_str().unwrap(), "--jwt-alg", "EdDSA"]).await;
    let mut c = server.client().await;
    passes(&mut c, "ann", &key.sign(Algorithm::EdDSA, &json!({}), None)).await;
    server.stop().await;
}

/// A tiny JWKS endpoint: serves whatever `body` holds (HTTP 503 while it
/// holds nothing) and counts requests.
struct Idp {
    addr: SocketAddr,
    body: Arc<Mutex<Option<String>>>,
    hits: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(body: String) -> Idp {
        use http_body_util::Full;
        use hyper::service::service_fn;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(Some(body)));
        let hits = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (body.clone(), hits.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (served, counted) = (served.clone(), counted.clone());
                let service = service_fn(move |_req| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let answer = match served.lock().unwrap().clone() {
                        Some(b) => hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(bytes::Bytes::from(b))),
                        None => hyper::Response::builder()
                            .status(503)
                            .body(Full::new(bytes::Bytes::from("down"))),
                    };
                    async move { answer }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        Idp { addr, body, hits }
    }

    fn url(&self) -> String {
        format!(
            "http://{}/realms/test/protocol/openid-connect/certs",
            self.addr
        )
    }

    fn serve(&self, body: Option<String>) {
        *self.body.lock().unwrap() = body;
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Waits until the endpoint has been asked `n` times.
    async fn wait_for_hits(&self, n: usize) {
        let deadline = Instant::now() + common::WAIT;
        while self.hits() < n {
            assert!(
                Instant::now() < deadline,
                "{} fetches, not {n}",
                self.hits()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn a_key_set_url_is_fetched_at_start_and_for_an_unknown_kid() {
    let (k1, k2, k3) = (TestKey::p384(), TestKey::p384(), TestKey::p384());
    let idp = Idp::start(jwks(&[k1.jwk("k1", Algorithm::ES384)])).await;
    let server = TestServer::start(&["--jwks", &idp.url(), "--jwt-alg", "ES384"]).await;
    let mut c = server.client().await;
    assert_eq!(idp.hits(), 1, "fetched once at start");
    let t1 = signed("ann", &k1.sign(Algorithm::ES384, &json!({}), Some("k1")));
    c.send(&t1).await;
    assert_eq!(c.recv().await["usr"], "ann");

    // The provider rotates: a token naming the new kid makes the server
    // fetch the set again, and once it has, the token passes.
    idp.serve(Some(jwks(&[k2.jwk("k2", Algorithm::ES384)])));
    let t2 = signed("bob", &k2.sign(Algorithm::ES384, &json!({}), Some("k2")));
    c.expect_error(&t2, "unauthorized").await;
    idp.wait_for_hits(2).await;
    let deadline = Instant::now() + common::WAIT;
    loop {
        c.send(&t2).await;
        let reply = c.recv().await;
        if reply["usr"] == "bob" {
            break;
        }
        assert!(Instant::now() < deadline, "the new key never came: {reply}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The set was replaced: the retired key no longer verifies.
    c.expect_error(&t1, "unauthorized").await;

    // Unknown kids fetch at most once per 30 seconds, however many come.
    idp.serve(Some(jwks(&[k3.jwk("k3", Algorithm::ES384)])));
    let t3 = signed("cy", &k3.sign(Algorithm::ES384, &json!({}), Some("k3")));
    for _ in 0..5 {
        c.expect_error(&t3, "unauthorized").await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(idp.hits(), 2, "an unknown kid fetched again within 30 s");
    server.stop().await;
}

// Two workers: the provider keeps answering while this test blocks on
// the binary's start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_url_that_goes_down_keeps_the_keys_it_had() {
    let key = TestKey::p256();
    let idp = Idp::start(jwks(&[key.jwk("k1", Algorithm::ES256)])).await;
    let (mut child, addr, log) = spawn_binary(&["--jwks", &idp.url(), "--jwt-alg", "ES256"]);
    idp.serve(None);
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .unwrap();
    let mut c = common::Client { ws };
    c.expect_error(
        &signed("ann", &key.sign(Algorithm::ES256, &json!({}), Some("k9"))),
        "unauthorized",
    )
    .await;
    idp.wait_for_hits(2).await;
    let deadline = Instant::now() + common::WAIT;
    while !log.text().contains("keeping") {
        assert!(Instant::now() < deadline, "no warning: {}", log.text());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    passes(
        &mut c,
        "ann",
        &key.sign(Algorithm::ES256, &json!({}), Some("k1")),
    )
    .await;
    common::signal(&child, "-TERM");
    assert!(child.wait().unwrap().success());
    let log = log.complete();
    let warnings: Vec<_> = log.lines().filter(|l| l.contains("keeping")).collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains(&idp.url()), "{log}");
}

#[tokio::test]
async fn issuer_and_audience_must_match_when_given() {
    let key = TestKey::p256();
    let token =
        |claims: serde_json::Value| signed("ann", &key.sign(Algorithm::ES256, &claims, None));
    let server = with_public_key(
        &key,
        Algorithm::ES256,
        &[
            "--jwt-issuer",
            "https://idp.example/realms/R",
            "--jwt-audience",
            "wschat",
        ],
    )
    .await;
    let mut c = server.client().await;
    let iss = "https://idp.example/realms/R";
    for good in [
        json!({"iss": iss, "aud": "wschat"}),
        json!({"iss": iss, "aud": ["account", "wschat"]}),
    ] {
        c.send(&token(good)).await;
        assert_eq!(c.recv().await["usr"], "ann");
    }
    for bad in [
        json!({"iss": iss, "aud": "other"}),
        json!({"iss": iss, "aud": ["account", "other"]}),
        json!({"iss": iss}),
        json!({"iss": "https://evil.example", "aud": "wschat"}),
        json!({"aud": "wschat"}),
    ] {
        c.expect_error(&token(bad), "unauthorized").await;
    }
    server.stop().await;

    // Not given: not checked.
    let server = with_public_key(&key, Algorithm::ES256, &[]).await;
    let mut c = server.client().await;
    c.send(&token(json!({"iss": "anyone", "aud": "anything"})))
        .await;
    assert_eq!(c.recv().await["usr"], "ann");
    server.stop().await;
}

#[tokio::test]
async fn jwt_optional_accepts_no_token_but_checks_a_present_one() {
    let key = TestKey::ed25519();
    let server = with_public_key(&key, Algorithm::EdDSA, &["--jwt-optional"]).await;
    let mut c = server.client().await;
    c.send(&chat("anyone", "no token")).await;
    assert_eq!(c.recv().await["usr"], "anyone");
    for bad in [
        "garbage".to_owned(),
        String::new(),
        TestKey::ed25519().sign(Algorithm::EdDSA, &json!({}), None),
    ] {
        c.expect_error(&signed("ann", &bad), "unauthorized").await;
    }
    passes(&mut c, "ann", &key.sign(Algorithm::EdDSA, &json!({}), None)).await;
    server.stop().await;

    let server = TestServer::start(&["--jwt-secret", "a-shared-secret", "--jwt-optional"]).await;
    let mut c = server.client().await;
    c.send(&chat("anyone", "no token")).await;
    assert_eq!(c.recv().await["usr"], "anyone");
    c.expect_error(&signed("ann", "a.b.c"), "unauthorized")
        .await;
    server.stop().await;
}

/// Runs the binary with `args`; expects a non-zero exit, no panic, and a
/// first line that names the problem (`needle`). Errors of ours are one
/// line; clap's may add its usage lines.
fn refused(args: &[&str], needle: &str) {
    common::refused_at_start(args, &[], needle);
}

#[test]
fn bad_keys_and_combinations_are_one_line_and_a_nonzero_exit() {
    let rsa = temp_file("rsa.pem", &TestKey::rsa(0).public_pem);
    let p256 = temp_file("p256.pem", &TestKey::p256().public_pem);
    let private = temp_file("private.pem", &TestKey::p256().private_pem);
    let garbage = temp_file("garbage.pem", "not a key\n");
    let set = temp_file(
        "jwks.json",
        &jwks(&[TestKey::p256().jwk("a", Algorithm::ES256)]),
    );
    let not_json = temp_file("jwks.json", "{ nope");
    let (rsa, p256, private, garbage, set, not_json) = (
        rsa.to_str().unwrap(),
        p256.to_str().unwrap(),
        private.to_str().unwrap(),
        garbage.to_str().unwrap(),
        set.to_str().unwrap(),
        not_json.to_str().unwrap(),
    );
    let missing = "/nonexistent/wschat/key.pem";
    refused(
        &["--jwt-public-key", missing, "--jwt-alg", "RS256"],
        missing,
    );
    refused(
        &["--jwt-public-key", garbage, "--jwt-alg", "RS256"],
        garbage,
    );
    refused(
        &["--jwt-public-key", private, "--jwt-alg", "ES256"],
        "private",
    );
    refused(&["--jwt-public-key", rsa, "--jwt-alg", "ES256"], "ES256");
    refused(&["--jwt-public-key", p256, "--jwt-alg", "ES384"], "ES384");
    refused(&["--jwt-public-key", p256], "HS256");
    refused(&["--jwt-public-key", p256, "--jwt-alg", "HS512"], "HS512");
    refused(&["--jwks", set], "HS256");
    refused(&["--jwks", set, "--jwt-alg", "ES384"], "ES384");
    refused(&["--jwks", not_json, "--jwt-alg", "ES256"], not_json);
    refused(&["--jwks", missing, "--jwt-alg", "ES256"], missing);
    refused(
        &[
            "--jwks",
            set,
            "--jwt-public-key",
            p256,
            "--jwt-alg",
            "ES256",
        ],
        "--jwks",
    );
    refused(
        &[
            "--jwt-secret",
            "s3cret",
            "--jwt-public-key",
            p256,
            "--jwt-alg",
            "ES256",
        ],
        "--jwt-secret",
    );
    refused(&["--jwt-secret", "s3cret", "--jwt-alg", "ES256"], "ES256");
    refused(&["--jwt-alg", "EdDSA"], "EdDSA");
    refused(&["--jwt-optional"], "--jwt-optional");
    let port = common::free_port();
    let down = format!("http://127.0.0.1:{port}/certs");
    refused(&["--jwks", &down, "--jwt-alg", "ES256"], &down);
}
