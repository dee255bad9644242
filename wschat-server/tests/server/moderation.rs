//! Moderation (README, "Moderation") through the real server: retraction
//! seen live and absent from every replay (also after a restart with an
//! archive or archive directory, and on other instances through Redis),
//! mutes with expiry, lifting and restarts, and every way an action is
//! refused.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::{self, Client, TestServer, chat, spawn_binary};
use crate::redis::Redis;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "moderation-test-secret-of-32-bytes";

fn temp_path(name: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("wschat-moderation-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

/// An HS256 token with `claims`, signed with [`SECRET`].
fn token(claims: Value) -> String {
    jsonwebtoken::encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

/// A moderator's token for `usr` (claim `mod` true).
fn moderator(usr: &str) -> String {
    token(json!({"sub": usr, "mod": true}))
}

/// A moderation action from `usr` with `token`.
fn action(usr: &str, token: &str, action: Value) -> String {
    json!({"usr": usr, "msg": "a moderator acted", "mod": action, "jwt": token}).to_string()
}

fn retract(tim: &str) -> String {
    action("mo", &moderator("mo"), json!({ "retract": tim }))
}

fn mute(usr: &str, seconds: u64) -> String {
    action(
        "mo",
        &moderator("mo"),
        json!({"mute": usr, "seconds": seconds}),
    )
}

async fn connect(addr: impl std::fmt::Display, query: &str) -> Client {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/{query}"))
        .await
        .unwrap();
    Client { ws }
}

/// Sends `frame` and returns it as relayed back to the sender.
async fn publish(c: &mut Client, frame: &str) -> Value {
    c.send(frame).await;
    let got = c.recv().await;
    assert!(got["tim"].is_string(), "not relayed: {got}");
    got
}

/// The `msg` of every frame a client replays before `marker`, which the
/// test publishes after connecting it.
async fn replayed_until(c: &mut Client, marker: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let v = c.recv().await;
        if v["msg"] == marker {
            return got;
        }
        got.push(v);
    }
}

fn msgs(frames: &[Value]) -> Vec<&str> {
    frames.iter().filter_map(|v| v["msg"].as_str()).collect()
}

/// Every replay a server offers: history on join, `?since=`, and
/// `GET /messages`; what each holds, by `msg`.
async fn every_replay(server: &TestServer, since: &str) -> Vec<Vec<String>> {
    // A marker no earlier call published: what comes before it is replay.
    static MARKERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let marker = format!(
        "marker {}",
        MARKERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let mut replays = Vec::new();
    let mut joined = server.client().await;
    let mut resumed = connect(server.addr, &format!("?since={since}")).await;
    let mut marking = server.client().await;
    publish(&mut marking, &chat("x", &marker)).await;
    for c in [&mut joined, &mut resumed] {
        let frames = replayed_until(c, &marker).await;
        replays.push(msgs(&frames).iter().map(|s| s.to_string()).collect());
    }
    let (status, body) = server.get("/messages?limit=1000").await;
    assert_eq!(status, 200, "{body}");
    let frames: Vec<Value> = serde_json::from_str(&body).unwrap();
    replays.push(msgs(&frames).iter().map(|s| s.to_string()).collect());
    let (_, body) = server.get(&format!("/messages?since={since}")).await;
    let frames: Vec<Value> = serde_json::from_str(&body).unwrap();
    replays.push(msgs(&frames).iter().map(|s| s.to_string()).collect());
    replays
}

/// Publishes "zero", "first" and "bad" from `ann`, and checks that each
/// of `others` receives the three: them as relayed. (Resumes start after
/// "zero", so they hold "first".)
async fn zero_first_bad(ann: &mut Client, others: [&mut Client; 2]) -> [Value; 3] {
    let sent = [
        publish(ann, &chat("ann", "zero")).await,
        publish(ann, &chat("ann", "first")).await,
        publish(ann, &chat("ann", "bad")).await,
    ];
    for c in others {
        for m in &sent {
            assert_eq!(c.recv().await, *m);
        }
    }
    sent
}

/// [`every_replay`], each checked to hold "first" but not the retracted
/// "bad".
async fn replays_without_bad(server: &TestServer, since: &str) -> Vec<Vec<String>> {
    let replays = every_replay(server, since).await;
    for replay in &replays {
        assert!(!replay.contains(&"bad".to_owned()), "{replay:?}");
        assert!(replay.contains(&"first".to_owned()), "{replay:?}");
    }
    replays
}

/// A retraction reaches every client, and no replay of a server started
/// with `archive` (the options naming its archive) shows the message
/// again, also after a restart.
async fn retraction_with(archive: &[&str], kept: impl Fn() -> String) {
    let mut args = vec![
        "--jwt-secret",
        SECRET,
        "--jwt-optional",
        "--history",
        "50",
        "--rate",
        "0",
    ];
    args.extend_from_slice(archive);
    let server = TestServer::start(&args).await;
    let mut ann = server.client().await;
    let mut bob = server.client().await;
    let mut mo = server.client().await;
    let [zero, _, bad] = zero_first_bad(&mut ann, [&mut bob, &mut mo]).await;
    let tim = bad["tim"].as_str().unwrap();

    mo.send(&retract(tim)).await;
    for c in [&mut ann, &mut bob, &mut mo] {
        let got = c.recv().await;
        assert_eq!(got["mod"]["retract"], tim, "{got}");
        assert_eq!(got["usr"], "mo");
        assert!(got.get("jwt").is_none(), "the token is never relayed");
    }

    let since = zero["tim"].as_str().unwrap();
    for replay in replays_without_bad(&server, since).await {
        assert!(
            replay.contains(&"a moderator acted".to_owned()),
            "{replay:?}"
        );
    }
    assert!(kept().contains(r#""msg":"bad""#), "the archive keeps it");
    // After a restart the archive still says it was retracted.
    let server = server.restart(&args).await;
    replays_without_bad(&server, since).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retraction_reaches_everyone_and_no_replay_shows_the_message_again() {
    let path = temp_path("retract.jsonl");
    let file = path.to_str().unwrap();
    retraction_with(&["--archive", file], || {
        std::fs::read_to_string(&path).unwrap()
    })
    .await;
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retraction_holds_across_a_restart_with_an_archive_directory() {
    let dir = temp_path("retract-dir");
    let _ = std::fs::remove_dir_all(&dir);
    let kept = || {
        let mut all = String::new();
        for day in std::fs::read_dir(&dir).unwrap() {
            all.push_str(&std::fs::read_to_string(day.unwrap().path()).unwrap());
        }
        all
    };
    retraction_with(&["--archive-dir", dir.to_str().unwrap()], kept).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn retractions_and_mutes_hold_on_every_instance_through_redis() {
    let redis = Redis::start();
    let url = redis.url();
    let args = [
        "--redis",
        &url,
        "--jwt-secret",
        SECRET,
        "--jwt-optional",
        "--history",
        "50",
        "--rate",
        "0",
    ];
    let one = TestServer::start(&args).await;
    let two = TestServer::start(&args).await;
    let mut ann = one.client().await;
    let mut bob = two.client().await;
    let mut mo = two.client().await;
    let [zero, _, bad] = zero_first_bad(&mut ann, [&mut bob, &mut mo]).await;
    let tim = bad["tim"].as_str().unwrap();

    // Acted on at the second instance, seen and applied at the first.
    let action = publish(&mut mo, &retract(tim)).await;
    assert_eq!(ann.recv().await, action);
    assert_eq!(bob.recv().await, action);
    let mute = publish(&mut mo, &mute("spam", 3600)).await;
    assert_eq!(ann.recv().await, mute);
    ann.expect_error(&chat("spam", "hello?"), "muted").await;

    let since = zero["tim"].as_str().unwrap();
    // An instance started now rebuilds both from the stream.
    let three = TestServer::start(&args).await;
    for server in [&one, &two, &three] {
        replays_without_bad(server, since).await;
        let mut spam = server.client().await;
        spam.send(&chat("spam", "still?")).await;
        // Past the history it is replayed first.
        let reply = loop {
            let got = spam.recv().await;
            if !got["tim"].is_string() {
                break got;
            }
            assert_ne!(got["msg"], "still?", "relayed: {got}");
        };
        assert_eq!(reply["err"], "muted", "{reply}");
    }
    common::stop_all([one, two, three]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retraction_older_than_the_history_still_hides_the_message_after_a_restart() {
    let path = temp_path("old-retract.jsonl");
    let args = [
        "--jwt-secret",
        SECRET,
        "--jwt-optional",
        "--history",
        "2",
        "--rate",
        "0",
        "--archive",
        path.to_str().unwrap(),
    ];
    let server = TestServer::start(&args).await;
    let mut ann = server.client().await;
    let first = publish(&mut ann, &chat("ann", "first")).await;
    let bad = publish(&mut ann, &chat("ann", "bad")).await;
    publish(&mut ann, &retract(bad["tim"].as_str().unwrap())).await;
    for i in 0..5 {
        publish(&mut ann, &chat("ann", &format!("later {i}"))).await;
    }
    let server = server.restart(&args).await;
    let (_, body) = server
        .get(&format!(
            "/messages?since={}",
            first["tim"].as_str().unwrap()
        ))
        .await;
    let frames: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(msgs(&frames).len(), 6, "{body}");
    assert!(!msgs(&frames).contains(&"bad"), "{body}");
    server.stop().await;
    std::fs::remove_file(path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mute_rejects_its_name_until_it_expires() {
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-optional"]).await;
    let mut spam = server.client().await;
    let mut mo = server.client().await;
    publish(&mut spam, &chat("spam", "before")).await;
    mo.recv().await;
    publish(&mut mo, &mute("spam", 1)).await;
    spam.recv().await;
    spam.send(&chat("spam", "during")).await;
    let err = spam.recv().await;
    assert_eq!(err["err"], "muted", "{err}");
    let detail = err["detail"].as_str().unwrap();
    assert!(detail.contains("spam") && detail.contains("until"), "{err}");
    mo.expect_silence(200).await;
    publish(&mut spam, &chat("eggs", "another name is not muted")).await;
    mo.recv().await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publish(&mut spam, &chat("spam", "after")).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mute_survives_a_restart_and_zero_seconds_lifts_it() {
    let path = temp_path("mute.jsonl");
    let args = [
        "--jwt-secret",
        SECRET,
        "--jwt-optional",
        "--archive",
        path.to_str().unwrap(),
    ];
    let server = TestServer::start(&args).await;
    let mut mo = server.client().await;
    publish(&mut mo, &mute("spam", 3600)).await;
    for i in 0..3 {
        publish(&mut mo, &chat("mo", &format!("filler {i}"))).await;
    }
    let server = server.restart(&args).await;
    // Reads wait until the archive is read back; so does this test (a
    // mute older than the history applies once it is: README,
    // "Moderation").
    assert_eq!(server.get("/messages").await.0, 200);
    let mut spam = server.client().await;
    spam.expect_error(&chat("spam", "still?"), "muted").await;
    let mut mo = server.client().await;
    publish(&mut mo, &mute("spam", 0)).await;
    spam.recv().await;
    publish(&mut spam, &chat("spam", "free again")).await;
    server.stop().await;
    std::fs::remove_file(path).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthorised_actions_are_refused_and_reach_nobody() {
    let tim = "2020-08-11T22:26:58.118678679Z";
    let what = json!({ "retract": tim });
    // No key configured: nobody can moderate.
    let open = TestServer::start(&[]).await;
    let (_, health) = open.get("/healthz").await;
    assert!(health.contains(r#""mod_claim":null"#), "{health}");
    let mut c = open.client().await;
    let mut listener = open.client().await;
    let plain = json!({"usr": "mo", "msg": "m", "mod": what}).to_string();
    c.expect_error(&plain, "unauthorized").await;
    c.expect_error(
        &action("mo", &moderator("mo"), what.clone()),
        "unauthorized",
    )
    .await;
    listener.expect_silence(200).await;
    open.stop().await;

    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-optional"]).await;
    let mut c = server.client().await;
    let mut listener = server.client().await;
    c.expect_error(&plain, "unauthorized").await;
    for claims in [
        json!({"sub": "mo"}),
        json!({"sub": "mo", "mod": "true"}),
        json!({"sub": "mo", "mod": 1}),
        json!({"sub": "mo", "mod": false}),
        json!({"sub": "mo", "admin": true}),
    ] {
        c.expect_error(&action("mo", &token(claims), what.clone()), "unauthorized")
            .await;
    }
    let forged = jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": "mo", "mod": true}),
        &EncodingKey::from_secret(b"another secret"),
    )
    .unwrap();
    c.expect_error(&action("mo", &forged, what.clone()), "unauthorized")
        .await;
    listener.expect_silence(200).await;
    server.stop().await;

    // Another claim names the moderators.
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-mod-claim", "admin"]).await;
    // The page learns the claim from /healthz (README, "HTTP endpoints").
    let (_, health) = server.get("/healthz").await;
    assert!(health.contains(r#""mod_claim":"admin""#), "{health}");
    let mut c = server.client().await;
    c.expect_error(
        &action("mo", &moderator("mo"), what.clone()),
        "unauthorized",
    )
    .await;
    let admin = token(json!({"sub": "mo", "admin": true}));
    publish(&mut c, &action("mo", &admin, what)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_actions_are_invalid_messages() {
    let server = TestServer::start(&["--jwt-secret", SECRET]).await;
    let mut c = server.client().await;
    let mut listener = server.client().await;
    let tim = "2020-08-11T22:26:58.118678679Z";
    for bad in [
        json!(null),
        json!(1),
        json!("retract"),
        json!([tim]),
        json!({}),
        json!({ "retract": 5 }),
        json!({"retract": "yesterday"}),
        json!({"retract": tim, "extra": 1}),
        json!({"retract": tim, "mute": "spam", "seconds": 1}),
        json!({"mute": "spam"}),
        json!({"mute": "spam", "seconds": -1}),
        json!({"mute": "spam", "seconds": 1.5}),
        json!({"mute": "spam", "seconds": "1"}),
        json!({"mute": "spam", "seconds": 1e300}),
        json!({"mute": "spam", "seconds": 18446744073709551615u64}),
        json!({"mute": "", "seconds": 1}),
        json!({"mute": 5, "seconds": 1}),
        json!({"seconds": 1}),
    ] {
        c.expect_error(&action("mo", &moderator("mo"), bad), "invalid_message")
            .await;
    }
    listener.expect_silence(200).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retraction_of_a_time_after_every_message_is_refused() {
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-optional"]).await;
    let mut c = server.client().await;
    let mut listener = server.client().await;
    let sent = publish(&mut c, &chat("ann", "real")).await;
    listener.recv().await;
    c.send(&retract("2999-01-01T00:00:00Z")).await;
    let err = c.recv().await;
    assert_eq!(err["err"], "invalid_message", "{err}");
    let detail = err["detail"].as_str().unwrap();
    assert!(detail.contains("later than every message"), "{err}");
    listener.expect_silence(200).await;
    // A message's own `tim` still retracts it.
    let action = publish(&mut c, &retract(sent["tim"].as_str().unwrap())).await;
    assert_eq!(listener.recv().await, action);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_muted_moderator_still_moderates_but_says_nothing_else() {
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-optional"]).await;
    let mut mo = server.client().await;
    let mut listener = server.client().await;
    let muted = publish(&mut mo, &mute("mo", 3600)).await;
    assert_eq!(listener.recv().await, muted);
    let with_token = json!({"usr": "mo", "msg": "hi", "jwt": moderator("mo")}).to_string();
    mo.expect_error(&with_token, "muted").await;
    mo.expect_error(&chat("mo", "hi"), "muted").await;
    listener.expect_silence(200).await;
    let lifted = publish(&mut mo, &mute("mo", 0)).await;
    assert_eq!(listener.recv().await, lifted);
    publish(&mut mo, &chat("mo", "free again")).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn actions_are_counted_and_logged_without_the_token() {
    let (mut child, addr, log) = spawn_binary(&["--jwt-secret", SECRET, "--jwt-optional"]);
    let (_, body) = common::http_get(addr.parse().unwrap(), "/metrics", &[]).await;
    for kind in ["retract", "mute"] {
        let series = format!("wschat_moderation_actions_total{{action=\"{kind}\"}} 0");
        assert!(body.contains(&series), "{series} in\n{body}");
    }
    assert!(
        body.contains("wschat_messages_rejected_total{code=\"muted\"} 0"),
        "{body}"
    );
    let mut c = connect(&addr, "").await;
    let bad = publish(&mut c, &chat("ann", "bad")).await;
    let tim = bad["tim"].as_str().unwrap();
    let mo = moderator("mo");
    publish(&mut c, &action("mo", &mo, json!({ "retract": tim }))).await;
    publish(
        &mut c,
        &action("mo", &mo, json!({"mute": "ann", "seconds": 60})),
    )
    .await;
    c.expect_error(&chat("ann", "again"), "muted").await;
    // A name with a line break cannot forge a log line.
    publish(
        &mut c,
        &action("mo", &mo, json!({"mute": "x\nFORGED by mo", "seconds": 0})),
    )
    .await;
    let (_, body) = common::http_get(addr.parse().unwrap(), "/metrics", &[]).await;
    for kind in ["retract", "mute"] {
        let series = format!("wschat_moderation_actions_total{{action=\"{kind}\"}} 1");
        assert!(body.contains(&series), "{series} in\n{body}");
    }
    assert!(
        body.contains("wschat_messages_rejected_total{code=\"muted\"} 1"),
        "{body}"
    );
    common::signal(&child, "-TERM");
    let _ = child.wait();
    let text = log.complete();
    let retracted = text
        .lines()
        .find(|l| l.contains("retract"))
        .unwrap_or_else(|| panic!("no retraction logged:\n{text}"));
    assert!(
        retracted.contains("mo") && retracted.contains(tim),
        "{retracted}"
    );
    let muted = text
        .lines()
        .find(|l| l.contains("mute") && l.contains("ann"))
        .unwrap_or_else(|| panic!("no mute logged:\n{text}"));
    assert!(muted.contains("60"), "{muted}");
    assert!(!text.contains(&mo), "a token was logged:\n{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("FORGED")),
        "a forged line:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_subcommand_mints_moderators() {
    let mint = |args: &[&str]| common::mint(args, &[("JWT_SECRET", SECRET)]);
    let plain = mint(&["token", "--usr", "mo"]);
    let minted = mint(&["token", "--usr", "mo", "--mod"]);
    let admin = mint(&["--jwt-mod-claim", "admin", "token", "--usr", "mo", "--mod"]);
    let what = json!({"retract": "2020-08-11T22:26:58.118678679Z"});

    let server = TestServer::start(&["--jwt-secret", SECRET]).await;
    let mut c = server.client().await;
    c.expect_error(&action("mo", &plain, what.clone()), "unauthorized")
        .await;
    c.expect_error(&action("mo", &admin, what.clone()), "unauthorized")
        .await;
    publish(&mut c, &action("mo", &minted, what.clone())).await;
    server.stop().await;
    let server = TestServer::start(&["--jwt-secret", SECRET, "--jwt-mod-claim", "admin"]).await;
    let mut c = server.client().await;
    publish(&mut c, &action("mo", &admin, what)).await;
    server.stop().await;
}
