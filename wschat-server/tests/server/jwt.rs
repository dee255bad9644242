//! JWT mode through a real server: every way a token can be right or wrong.

use crate::common::{TestServer, mint};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::json;
use wschat_core::{Jwt, JwtAlg, JwtConfig};

const SECRET: &str = "test-secret";

fn token(secret: &str, alg: JwtAlg, claims: serde_json::Value) -> String {
    let alg = match alg {
        JwtAlg::Hs256 => jsonwebtoken::Algorithm::HS256,
        JwtAlg::Hs384 => jsonwebtoken::Algorithm::HS384,
        JwtAlg::Hs512 => jsonwebtoken::Algorithm::HS512,
        other => panic!("{other} is not signed with a secret"),
    };
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// A message carrying `jwt`, keys in this order: usr, msg, jwt.
fn signed(usr: &str, jwt: &str) -> String {
    format!(
        r#"{{"usr":{},"msg":"hi","jwt":{}}}"#,
        json!(usr),
        json!(jwt)
    )
}

#[tokio::test]
async fn a_valid_token_publishes_and_is_stripped() {
    let server = TestServer::start(&["--jwt-secret", SECRET]).await;
    let mut c = server.client().await;
    let t = token(SECRET, JwtAlg::Hs256, json!({"sub": "ann"}));
    c.send(&signed("ann", &t)).await;
    let text = c.recv_text().await;
    assert!(!text.contains("jwt") && !text.contains(&t), "{text}");
    assert!(
        text.starts_with(r#"{"usr":"ann","msg":"hi","tim":""#),
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_unauthorized_and_relay_nothing() {
    let server = TestServer::start(&["--jwt-secret", SECRET]).await;
    let mut c = server.client().await;
    let mut listener = server.client().await;
    let alg_none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4ifQ.";
    let cases = [
        json!({"usr": "ann", "msg": "no token"}).to_string(),
        json!({"usr": "ann", "msg": "m", "jwt": 42}).to_string(),
        signed("ann", "garbage"),
        signed("ann", "a.b.c"),
        signed(
            "ann",
            &token("wrong-secret", JwtAlg::Hs256, json!({"sub": "ann"})),
        ),
        signed("ann", alg_none),
        signed("ann", &token(SECRET, JwtAlg::Hs512, json!({"sub": "ann"}))),
    ];
    for frame in &cases {
        c.expect_error(frame, "unauthorized").await;
    }
    listener.expect_silence(300).await;
    // Still usable afterwards.
    c.send(&signed("ann", &token(SECRET, JwtAlg::Hs256, json!({}))))
        .await;
    assert_eq!(listener.recv().await["usr"], "ann");
    server.stop().await;
}

#[tokio::test]
async fn listening_needs_no_token() {
    let server = TestServer::start(&["--jwt-secret", SECRET]).await;
    let mut listener = server.client().await;
    let mut c = server.client().await;
    c.send(&signed("ann", &token(SECRET, JwtAlg::Hs256, json!({}))))
        .await;
    assert_eq!(listener.recv().await["msg"], "hi");
    server.stop().await;
}

#[tokio::test]
async fn other_algorithms_when_configured() {
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-alg", "HS384"]).await;
    let mut c = server.client().await;
    c.send(&signed("a", &token(SECRET, JwtAlg::Hs384, json!({}))))
        .await;
    assert_eq!(c.recv().await["usr"], "a");
    c.expect_error(
        &signed("a", &token(SECRET, JwtAlg::Hs256, json!({}))),
        "unauthorized",
    )
    .await;
    server.stop().await;
}

#[tokio::test]
async fn expiry_is_checked_only_with_the_flag() {
    let expired = token(
        SECRET,
        JwtAlg::Hs256,
        json!({"sub": "a", "exp": 1_000_000_000}),
    );
    let lenient = TestServer::start(&["--jwt-secret", SECRET]).await;
    let mut c = lenient.client().await;
    c.send(&signed("a", &expired)).await;
    assert_eq!(c.recv().await["usr"], "a");
    lenient.stop().await;

    let strict = TestServer::start(&["--jwt-secret", SECRET, "--jwt-validate-exp"]).await;
    let mut c = strict.client().await;
    c.expect_error(&signed("a", &expired), "unauthorized").await;
    let fresh = token(
        SECRET,
        JwtAlg::Hs256,
        json!({"exp": jsonwebtoken::get_current_timestamp() + 600}),
    );
    c.send(&signed("a", &fresh)).await;
    assert_eq!(c.recv().await["usr"], "a");
    strict.stop().await;
}

#[tokio::test]
async fn usr_claim_binds_the_sender() {
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-usr-claim", "sub"]).await;
    let mut c = server.client().await;
    let ann = token(SECRET, JwtAlg::Hs256, json!({"sub": "ann"}));
    c.expect_error(&signed("bob", &ann), "unauthorized").await;
    c.expect_error(
        &signed("ann", &token(SECRET, JwtAlg::Hs256, json!({}))),
        "unauthorized",
    )
    .await;
    c.send(&signed("ann", &ann)).await;
    assert_eq!(c.recv().await["usr"], "ann");
    server.stop().await;
}

#[tokio::test]
async fn the_token_subcommand_mints_what_the_server_accepts() {
    let minted = mint(
        &["token", "--usr", "ann", "--exp", "600"],
        &[("JWT_SECRET", SECRET), ("WSCHAT_JWT_ALG", "HS512")],
    );
    assert_eq!(minted.split('.').count(), 3, "{minted}");

    let server = TestServer::start(&[
        "--jwt-secret",
        SECRET,
        "--jwt-alg",
        "HS512",
        "--jwt-usr-claim",
        "sub",
        "--jwt-validate-exp",
    ])
    .await;
    let mut c = server.client().await;
    c.send(&signed("ann", &minted)).await;
    assert_eq!(c.recv().await["usr"], "ann");
    server.stop().await;
    // The same check the core does, to be sure the claim is the name.
    let jwt = Jwt::new(JwtConfig::new(SECRET).alg(JwtAlg::Hs512).usr_claim("sub"));
    let m = signed("ann", &minted);
    assert!(
        jwt.authorize(&wschat_core::Message::parse(&m).unwrap())
            .is_ok()
    );
}

#[tokio::test]
async fn the_token_subcommand_without_a_secret_fails_cleanly() {
    // Also with a public key or key set: those tokens come from the
    // identity provider (no file is read to say so).
    for keys in [
        &[][..],
        &[
            "--jwt-public-key",
            "/nonexistent/key.pem",
            "--jwt-alg",
            "ES256",
        ],
        &["--jwks", "https://idp.example/certs", "--jwt-alg", "RS256"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_wschat-server"))
            .args(keys)
            .args(["token", "--usr", "ann"])
            .env_remove("JWT_SECRET")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("JWT_SECRET"), "{stderr}");
        assert!(stderr.contains("shared secret"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
}

#[tokio::test]
async fn the_token_subcommand_never_mints_what_its_configuration_refuses() {
    // With --jwt-validate-exp a token without `exp` is refused, so minting
    // one without --exp is refused too, in one line that says what to do.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wschat-server"))
        .args(["--jwt-validate-exp", "token", "--usr", "ann"])
        .env("JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "a token was printed");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--exp"), "{stderr}");

    let minted = mint(
        &["token", "--usr", "ann", "--exp", "60"],
        &[("JWT_SECRET", SECRET), ("WSCHAT_JWT_VALIDATE_EXP", "true")],
    );
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-validate-exp"]).await;
    let mut c = server.client().await;
    c.send(&signed("ann", &minted)).await;
    assert_eq!(c.recv().await["usr"], "ann");
    server.stop().await;
}
