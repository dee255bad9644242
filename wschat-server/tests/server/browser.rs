//! The browser client in a real headless Chromium, driven over WebDriver:
//! two people chat, markup stays text, JWT mode, reconnecting after a
//! server restart and resuming where the page left off. Screenshots go to the test's output folder
//! (`target/tmp/screenshots/`).
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them).

use crate::common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::{TestServer, free_port};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const ENTER: &str = "\u{E007}";

/// JS: whether the token field is actually displayed.
const TOKEN_VISIBLE: &str = "document.getElementById('jwt').getClientRects().length > 0";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// chromedriver on a free port; started again on another when the
    /// port was taken before it could bind it (it exits then).
    fn start() -> Self {
        for _ in 0..5 {
            let port = free_port();
            let mut child = Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver not found: install Debian's chromium and chromium-driver (.ci/run does)");
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                assert!(Instant::now() < deadline, "chromedriver did not start");
                std::thread::sleep(Duration::from_millis(50));
            }
            if child.try_wait().unwrap().is_some() {
                continue;
            }
            return Driver {
                child,
                url: format!("http://127.0.0.1:{port}"),
            };
        }
        panic!("chromedriver exited at start five times");
    }

    /// A new headless browser session with its own profile.
    async fn browser(&self) -> Client {
        self.browser_with(false).await
    }

    /// [`browser`](Self::browser), accepting any TLS certificate (the
    /// tests' own authority is not among the browser's) with
    /// `insecure_certs`.
    async fn browser_with(&self, insecure_certs: bool) -> Client {
        static SESSIONS: AtomicU64 = AtomicU64::new(0);
        let profile = std::env::temp_dir().join(format!(
            "wschat-chromium-{}-{}",
            std::process::id(),
            SESSIONS.fetch_add(1, Ordering::Relaxed)
        ));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=420,760",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        if insecure_certs {
            caps.insert("acceptInsecureCerts".into(), json!(true));
        }
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn save_screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(name), png).unwrap();
}

/// Waits until `script` (a JS expression) is true in the page.
async fn wait_until(browser: &Client, what: &str, script: &str) {
    wait_until_within(Duration::from_secs(20), browser, what, script).await;
}

/// [`wait_until`] with a deadline `within` from now.
async fn wait_until_within(within: Duration, browser: &Client, what: &str, script: &str) {
    let deadline = Instant::now() + within;
    loop {
        let value = browser
            .execute(&format!("return !!({script});"), vec![])
            .await
            .unwrap();
        if value == json!(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn open_as(browser: &Client, addr: SocketAddr, name: &str) {
    open_url_as(browser, &format!("http://{addr}/"), name).await;
}

/// Opens the page at `url`, waits until it is connected and types `name`.
async fn open_url_as(browser: &Client, url: &str, name: &str) {
    browser.goto(url).await.unwrap();
    wait_until(
        browser,
        "connected",
        "document.getElementById('status').dataset.state === 'open'",
    )
    .await;
    let usr = browser.find(Locator::Id("usr")).await.unwrap();
    usr.clear().await.unwrap();
    usr.send_keys(name).await.unwrap();
}

async fn say(browser: &Client, text: &str) {
    let msg = browser.find(Locator::Id("msg")).await.unwrap();
    msg.send_keys(text).await.unwrap();
    msg.send_keys(ENTER).await.unwrap();
}

/// JS: whether a shown message has exactly this text.
fn shown(text: &str) -> String {
    format!(
        "[...document.querySelectorAll('#messages li .msg')].some(e => e.textContent === {})",
        json!(text)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_people_chat_and_markup_stays_text() {
    let server = TestServer::start(&["--history", "20"]).await;
    let driver = Driver::start();
    let ann = driver.browser().await;
    let bob = driver.browser().await;
    open_as(&ann, server.addr, "ann").await;
    open_as(&bob, server.addr, "bob").await;
    // Give the page time to ask the server whether tokens are needed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token_shown = ann
        .execute(&format!("return {TOKEN_VISIBLE};"), vec![])
        .await
        .unwrap();
    assert_eq!(token_shown, json!(false), "no token field without JWT mode");

    say(&ann, "hello bob").await;
    wait_until(&bob, "ann's message at bob", &shown("hello bob")).await;
    say(&bob, "hi ann").await;
    wait_until(&ann, "bob's message at ann", &shown("hi ann")).await;
    wait_until(
        &ann,
        "own messages told apart",
        "document.querySelector('#messages li.own .msg').textContent === 'hello bob'",
    )
    .await;

    let evil = r#"<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>"#;
    say(&ann, evil).await;
    wait_until(&bob, "the markup, shown literally", &shown(evil)).await;
    assert_eq!(bob.execute("return window.__pwned === undefined && document.querySelectorAll('#messages img, #messages script').length === 0;", vec![]).await.unwrap(), json!(true));
    // The time is shown in the reader's local time.
    let time = bob
        .execute(
            "return document.querySelector('#messages li time').textContent;",
            vec![],
        )
        .await
        .unwrap();
    assert!(time.as_str().is_some_and(|t| t.contains(':')), "{time}");

    save_screenshot(&bob, "chat.png").await;

    // The name is remembered across reloads.
    ann.refresh().await.unwrap();
    wait_until(
        &ann,
        "connected again",
        "document.getElementById('status').dataset.state === 'open'",
    )
    .await;
    let name = ann
        .find(Locator::Id("usr"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(name.as_deref(), Some("ann"));
    ann.close().await.unwrap();
    bob.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn jwt_mode_sends_with_a_token_and_explains_a_refusal() {
    let server =
        TestServer::start(&["--jwt-secret", "browser-secret", "--jwt-usr-claim", "sub"]).await;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, server.addr, "ann").await;
    wait_until(&ann, "the token field", TOKEN_VISIBLE).await;

    say(&ann, "no token").await;
    wait_until(
        &ann,
        "the unauthorized error",
        "document.getElementById('error').textContent.includes('Not allowed')",
    )
    .await;
    save_screenshot(&ann, "unauthorized.png").await;

    let token = wschat_core::Jwt::new(wschat_core::JwtConfig::new("browser-secret"))
        .mint("sub", "ann", None)
        .unwrap();
    ann.find(Locator::Id("jwt"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    say(&ann, "with a token").await;
    wait_until(&ann, "the signed message", &shown("with a token")).await;
    ann.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_reconnects_after_a_restart_and_sends_again() {
    // The history survives the restart in the archive, and is replayed to
    // the reconnected page, which must not show it twice.
    let archive = std::env::temp_dir().join(format!("wschat-browser-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&archive);
    let args = ["--archive", archive.to_str().unwrap(), "--history", "20"];
    let server = TestServer::start(&args).await;
    let addr = server.addr;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, addr, "ann").await;
    say(&ann, "before").await;
    wait_until(&ann, "the first message", &shown("before")).await;

    server.stop().await;
    wait_until(
        &ann,
        "the page to notice",
        "document.getElementById('status').dataset.state === 'closed'",
    )
    .await;
    let server = TestServer::start_on(addr, &args).await;
    wait_until(
        &ann,
        "reconnected",
        "document.getElementById('status').dataset.state === 'open'",
    )
    .await;
    say(&ann, "after").await;
    wait_until(&ann, "the message after the restart", &shown("after")).await;
    let count = ann
        .execute("return [...document.querySelectorAll('#messages li .msg')].filter(e => e.textContent === 'before').length;", vec![])
        .await
        .unwrap();
    assert_eq!(count, json!(1), "the replayed history is not shown twice");
    let _ = std::fs::remove_file(&archive);
    save_screenshot(&ann, "reconnected.png").await;
    ann.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_view_follows_new_messages_unless_scrolled_up() {
    let server = TestServer::start(&["--rate", "0"]).await;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, server.addr, "ann").await;
    let mut bot = server.client().await;
    for i in 0..60 {
        bot.send(&common::chat("bot", &format!("filler {i}"))).await;
    }
    wait_until(&ann, "the filler", &shown("filler 59")).await;
    const AT_BOTTOM: &str = "(() => { const m = document.querySelector('main'); \
        return m.scrollHeight - m.scrollTop - m.clientHeight < 40; })()";
    wait_until(&ann, "the view at the newest message", AT_BOTTOM).await;

    // Scrolled up, the reader stays where they are.
    ann.execute("document.querySelector('main').scrollTop = 0;", vec![])
        .await
        .unwrap();
    bot.send(&common::chat("bot", "while you read")).await;
    wait_until(&ann, "the new message", &shown("while you read")).await;
    let top = ann
        .execute("return document.querySelector('main').scrollTop;", vec![])
        .await
        .unwrap();
    assert_eq!(
        top,
        json!(0),
        "the view jumped while the reader was scrolled up"
    );

    // Back at the bottom, the view follows again.
    ann.execute(
        "const m = document.querySelector('main'); m.scrollTop = m.scrollHeight;",
        vec![],
    )
    .await
    .unwrap();
    bot.send(&common::chat("bot", "and now")).await;
    wait_until(&ann, "the last message", &shown("and now")).await;
    wait_until(&ann, "the view following", AT_BOTTOM).await;
    ann.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_says_why_the_server_closed_it() {
    let server = TestServer::start(&["--max-message-bytes", "1024"]).await;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, server.addr, "ann").await;
    ann.execute(
        "document.getElementById('msg').value = 'x'.repeat(2000);",
        vec![],
    )
    .await
    .unwrap();
    say(&ann, "").await;
    const ERROR: &str = "document.getElementById('error').textContent";
    wait_until(
        &ann,
        "the reason for 1009",
        &format!("{ERROR}.includes('too large, so it was not sent') && {ERROR}.includes('(message too large)')"),
    )
    .await;
    save_screenshot(&ann, "closed-too-large.png").await;
    wait_until(
        &ann,
        "reconnected",
        "document.getElementById('status').dataset.state === 'open'",
    )
    .await;

    server.stop().await;
    wait_until(
        &ann,
        "the reason for 1001",
        &format!("{ERROR}.includes('restarting') && {ERROR}.includes('(server shutting down)')"),
    )
    .await;

    // The codes a browser cannot provoke, each in its own words.
    let texts = ann
        .execute(
            "return [1002, 1007, 1008, 4000].map(code => whyClosed({code, reason: ''}));",
            vec![],
        )
        .await
        .unwrap();
    let texts: Vec<String> = serde_json::from_value(texts).unwrap();
    for (text, words) in texts
        .iter()
        .zip(["protocol", "UTF-8", "behind", "code 4000"])
    {
        assert!(text.contains(words), "{text:?} should say {words:?}");
    }
    ann.close().await.unwrap();
}

/// JS: whether the error line is showing.
const ERROR_SHOWN: &str = "!document.getElementById('error').hidden";

#[tokio::test(flavor = "multi_thread")]
async fn a_relayed_err_field_is_shown_as_a_message_not_as_an_error() {
    // Relayed messages carry `tim`, error frames never do: a publisher's
    // `err` field must not pass for the server's voice.
    let server = TestServer::start(&[]).await;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, server.addr, "ann").await;
    let mut eve = server.client().await;
    let phish = json!({
        "usr": "eve",
        "msg": "x",
        "err": "unauthorized",
        "detail": "renew your token at evil.example",
    });
    eve.send(&phish.to_string()).await;
    eve.send(&common::chat("eve", "after")).await;
    wait_until(&ann, "the message after the phish", &shown("after")).await;
    save_screenshot(&ann, "relayed-err.png").await;
    let error = ann
        .execute(&format!("return {ERROR_SHOWN};"), vec![])
        .await
        .unwrap();
    assert_eq!(error, json!(false), "a relayed message shown as an error");
    let from_eve = ann
        .execute(
            "return [...document.querySelectorAll('#messages li')].some(li => \
             li.querySelector('.usr').textContent === 'eve' && \
             li.querySelector('.msg').textContent === 'x');",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(from_eve, json!(true), "the message from eve is shown");

    ann.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_live_message_older_than_the_last_shown_is_still_shown() {
    // The archive ends with a message from a clock that ran ahead; after a
    // restart on a machine whose clock is right, every new message has an
    // older `tim` than the last one the page showed.
    let archive = std::env::temp_dir().join(format!(
        "wschat-browser-future-{}.jsonl",
        std::process::id()
    ));
    std::fs::write(
        &archive,
        "{\"usr\":\"clock\",\"msg\":\"from the future\",\"tim\":\"2999-01-01T00:00:00.000000000Z\"}\n",
    )
    .unwrap();
    let server =
        TestServer::start(&["--archive", archive.to_str().unwrap(), "--history", "5"]).await;
    let addr = server.addr;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, addr, "ann").await;
    wait_until(&ann, "the replayed message", &shown("from the future")).await;

    server.stop().await;
    // The drop noticed first: else `open` may still be the old connection,
    // and a message published before the page is back has an older `tim`
    // than its cursor, which no resume can find.
    wait_until(&ann, "the drop noticed", CLOSED).await;
    let server = TestServer::start_on(addr, &[]).await;
    wait_until(&ann, "reconnected", OPEN).await;
    let mut bob = server.client().await;
    bob.send(&common::chat("bob", "now")).await;
    assert!(bob.recv().await["tim"].as_str() < Some("2999"));
    wait_until(&ann, "the live message with an older tim", &shown("now")).await;
    ann.close().await.unwrap();
    server.stop().await;
    let _ = std::fs::remove_file(&archive);
}

/// A server that completes every WebSocket upgrade and closes the
/// connection at once (one that restarts or sheds load); counts them.
async fn accept_and_drop(addr: SocketAddr) -> (tokio::task::JoinHandle<()>, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let counted = count.clone();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                if let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let _ = ws.close(None).await;
                    while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
                }
            });
        }
    });
    (task, count)
}

/// JS: the page's connection state.
const OPEN: &str = "document.getElementById('status').dataset.state === 'open'";
const CLOSED: &str = "document.getElementById('status').dataset.state === 'closed'";

#[tokio::test(flavor = "multi_thread")]
async fn reconnecting_backs_off_until_a_connection_holds() {
    let server = TestServer::start(&[]).await;
    let addr = server.addr;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, addr, "ann").await;

    // Every connection opens and is dropped at once: the delays must still
    // grow (0.25-0.5 s, 0.5-1 s, 1-2 s, 2-4 s...), not start over at each
    // open, or a restart would bring every tab back at the same moment.
    server.stop().await;
    let (flapping, opened) = accept_and_drop(addr).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    flapping.abort();
    let _ = flapping.await;
    let opened = opened.load(Ordering::Relaxed);
    assert!(
        (1..=5).contains(&opened),
        "{opened} connections in 4 s: the backoff started over at each open"
    );

    // A connection that holds for a while resets the backoff: the next
    // drop is followed by a quick reconnect. (The wait for the first one
    // is the grown delay: up to 16 s.)
    let server = TestServer::start_on(addr, &[]).await;
    wait_until_within(Duration::from_secs(40), &ann, "reconnected", OPEN).await;
    tokio::time::sleep(Duration::from_secs(11)).await;
    server.stop().await;
    let dropped = Instant::now();
    wait_until(&ann, "the drop noticed", CLOSED).await;
    let server = TestServer::start_on(addr, &[]).await;
    wait_until(&ann, "reconnected again", OPEN).await;
    let took = dropped.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "reconnected after {took:?}: the backoff was not reset"
    );
    ann.close().await.unwrap();
    server.stop().await;
}

/// README, "TLS": the page served over HTTPS connects with `wss://` to
/// the same port, and chats.
#[tokio::test(flavor = "multi_thread")]
async fn over_https_the_page_chats_over_wss() {
    use crate::common::tls::{TestCa, files, wss_client};
    let ca = TestCa::new();
    let (_, cert, key) = files("browser");
    ca.leaf((2031, 5, 17)).write(&cert, &key);
    let server = TestServer::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ])
    .await;
    let driver = Driver::start();
    let ann = driver.browser_with(true).await;
    open_url_as(&ann, &format!("https://{}/", server.addr), "ann").await;
    let url = ann.execute("return ws.url;", vec![]).await.unwrap();
    assert_eq!(url, json!(format!("wss://{}/", server.addr)));

    let mut bob = wss_client(server.addr, ca.client_config()).await;
    say(&ann, "over wss").await;
    assert_eq!(bob.recv().await["msg"], "over wss");
    bob.send(&common::chat("bob", "and back")).await;
    wait_until(&ann, "bob's message at ann", &shown("and back")).await;
    save_screenshot(&ann, "https.png").await;
    ann.close().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moderator_retracts_a_message_and_it_vanishes_from_every_page() {
    // README, "Moderation": the public room, where anyone may post and
    // moderators keep order.
    let secret = "browser-moderation-secret-of-32-bytes";
    let server =
        TestServer::start(&["--jwt-secret", secret, "--jwt-optional", "--history", "20"]).await;
    let driver = Driver::start();
    let mo = driver.browser().await;
    let ann = driver.browser().await;
    open_as(&mo, server.addr, "mo").await;
    open_as(&ann, server.addr, "ann").await;
    say(&ann, "buy cheap pills").await;
    say(&ann, "a fine message").await;
    wait_until(&mo, "ann's messages at mo", &shown("a fine message")).await;
    const CONTROLS: &str = "document.querySelectorAll('#messages button').length > 0";
    assert_eq!(
        mo.execute(&format!("return {CONTROLS};"), vec![])
            .await
            .unwrap(),
        json!(false),
        "no moderation controls without a moderator's token"
    );

    let jwt = wschat_core::Jwt::new(wschat_core::JwtConfig::new(secret));
    let token = jwt.mint_moderator("sub", "mo", None).unwrap();
    mo.find(Locator::Id("jwt"))
        .await
        .unwrap()
        .send_keys(&token)
        .await
        .unwrap();
    wait_until(&mo, "moderation controls", CONTROLS).await;
    // A token that is not a moderator's shows none.
    let plain = jwt.mint("sub", "ann", None).unwrap();
    ann.find(Locator::Id("jwt"))
        .await
        .unwrap()
        .send_keys(&plain)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ann.execute(&format!("return {CONTROLS};"), vec![])
            .await
            .unwrap(),
        json!(false)
    );

    // Keyboard only: focus the labelled control and press Enter.
    let retract = mo
        .find(Locator::XPath(
            "//li[span[@class='msg' and .='buy cheap pills']]//button[.='Retract']",
        ))
        .await
        .unwrap();
    let label = retract
        .attr("aria-label")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(label.contains("ann"), "{label}");
    retract.send_keys(ENTER).await.unwrap();
    for page in [&ann, &mo] {
        wait_until(
            page,
            "the retraction's words",
            &shown("Retracted a message from ann."),
        )
        .await;
        wait_until(
            page,
            "the retracted message gone",
            &format!("!{}", shown("buy cheap pills")),
        )
        .await;
        assert_eq!(
            page.execute(&format!("return {};", shown("a fine message")), vec![])
                .await
                .unwrap(),
            json!(true),
            "only that one"
        );
    }
    save_screenshot(&mo, "moderator.png").await;
    // A page opened now is not replayed it.
    let late = driver.browser().await;
    open_as(&late, server.addr, "late").await;
    wait_until(&late, "the history", &shown("a fine message")).await;
    assert_eq!(
        late.execute(&format!("return {};", shown("buy cheap pills")), vec![])
            .await
            .unwrap(),
        json!(false)
    );

    // Mute the sender for an hour, chosen from the list.
    mo.find(Locator::Id("mute-seconds"))
        .await
        .unwrap()
        .select_by_value("3600")
        .await
        .unwrap();
    mo.find(Locator::XPath(
        "//li[span[@class='msg' and .='a fine message']]//button[.='Mute sender']",
    ))
    .await
    .unwrap()
    .send_keys(ENTER)
    .await
    .unwrap();
    wait_until(&ann, "the mute's words", &shown("Muted ann for 1 hour.")).await;
    say(&ann, "let me speak").await;
    wait_until(
        &ann,
        "the muted error in words",
        "document.getElementById('error').textContent.includes('A moderator has muted')",
    )
    .await;
    save_screenshot(&ann, "muted.png").await;
    for page in [mo, ann, late] {
        page.close().await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retraction_naming_the_instant_in_another_form_hides_the_message() {
    // README, "Moderation": a retraction names a message by its `tim` in
    // any RFC 3339 form, and is relayed as the moderator sent it.
    let secret = "browser-moderation-secret-of-32-bytes";
    let server = TestServer::start(&["--jwt-secret", secret, "--jwt-optional"]).await;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, server.addr, "ann").await;
    let mut mo = server.client().await;
    say(&ann, "buy cheap pills").await;
    say(&ann, "a fine message").await;
    let pills = mo.recv().await;
    assert_eq!(pills["msg"], "buy cheap pills");
    wait_until(&ann, "ann's messages", &shown("a fine message")).await;
    let tim: chrono::DateTime<chrono::Utc> = pills["tim"].as_str().unwrap().parse().unwrap();
    // The same instant, an hour east of UTC.
    let east = chrono::FixedOffset::east_opt(3600).unwrap();
    let other = tim
        .with_timezone(&east)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, false);
    assert_ne!(other, pills["tim"].as_str().unwrap());
    let token = wschat_core::Jwt::new(wschat_core::JwtConfig::new(secret))
        .mint_moderator("sub", "mo", None)
        .unwrap();
    mo.send(
        &json!({"usr": "mo", "msg": "Retracted a message from ann.", "mod": {"retract": other}, "jwt": token})
            .to_string(),
    )
    .await;
    wait_until(
        &ann,
        "the retraction's words",
        &shown("Retracted a message from ann."),
    )
    .await;
    wait_until(
        &ann,
        "the retracted message gone",
        &format!("!{}", shown("buy cheap pills")),
    )
    .await;
    assert_eq!(
        ann.execute(&format!("return {};", shown("a fine message")), vec![])
            .await
            .unwrap(),
        json!(true),
        "only that one"
    );
    ann.close().await.unwrap();
    server.stop().await;
}

/// JS: the text of every message shown, in order.
const ALL_SHOWN: &str =
    "return [...document.querySelectorAll('#messages li .msg')].map(e => e.textContent);";

/// A temporary archive path for this test process, removed if present.
fn temp_archive(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "wschat-browser-{name}-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

/// Publishes `texts` as "bot" through `server` and returns once the last
/// has come back: relayed, so in the archive.
async fn publish_all(server: &TestServer, texts: &[String]) {
    let mut bot = server.client().await;
    for text in texts {
        bot.send(&common::chat("bot", text)).await;
    }
    let last = texts.last().expect("something to publish");
    while bot.recv().await["msg"] != json!(last) {}
}

fn numbered(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("m{i}")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_resumes_where_it_left_off_across_a_restart() {
    // README, "Resume": the page reconnects with the `tim` of the last
    // message it showed, so it gets exactly what came after it, however
    // much more than `--history` that is, and nothing twice.
    let archive = temp_archive("resume");
    let args = [
        "--archive",
        archive.to_str().unwrap(),
        "--history",
        "5",
        "--rate",
        "0",
    ];
    let server = TestServer::start(&args).await;
    let addr = server.addr;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, addr, "ann").await;
    publish_all(&server, &numbered(0..10)).await;
    wait_until(&ann, "the first ten", &shown("m9")).await;

    // While the page is away, the room goes on (on another port, in the
    // same archive): 20 messages, four times the history.
    server.stop().await;
    wait_until(&ann, "the page to notice", CLOSED).await;
    let elsewhere = TestServer::start(&args).await;
    publish_all(&elsewhere, &numbered(10..30)).await;
    elsewhere.stop().await;

    let server = TestServer::start_on(addr, &args).await;
    wait_until_within(Duration::from_secs(40), &ann, "reconnected", OPEN).await;
    publish_all(&server, &numbered(30..31)).await;
    wait_until(&ann, "the live message", &shown("m30")).await;
    let texts = ann.execute(ALL_SHOWN, vec![]).await.unwrap();
    assert_eq!(
        texts,
        json!(numbered(0..31)),
        "every message exactly once, in order"
    );
    save_screenshot(&ann, "resumed.png").await;
    ann.close().await.unwrap();
    server.stop().await;
    let _ = std::fs::remove_file(&archive);
}

/// JS: the text of the gap notice shown, or null.
const GAP_SHOWN: &str = "return document.querySelector('#messages li.gap')?.textContent ?? null;";

#[tokio::test(flavor = "multi_thread")]
async fn the_page_says_when_messages_may_be_missing() {
    // A server without an archive forgets the room when it restarts: a
    // page that comes back to it is told, in words, at the place of the
    // gap.
    let server = TestServer::start(&["--history", "5"]).await;
    let addr = server.addr;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, addr, "ann").await;
    publish_all(&server, &["before".to_owned()]).await;
    wait_until(&ann, "the first message", &shown("before")).await;
    server.stop().await;
    wait_until(&ann, "the page to notice", CLOSED).await;

    let archive = temp_archive("gap");
    let args = ["--archive", archive.to_str().unwrap(), "--history", "5"];
    let elsewhere = TestServer::start(&args).await;
    publish_all(&elsewhere, &["after".to_owned()]).await;
    elsewhere.stop().await;
    let server = TestServer::start_on(addr, &args).await;
    wait_until_within(Duration::from_secs(40), &ann, "reconnected", OPEN).await;
    wait_until(&ann, "the message after the gap", &shown("after")).await;

    let gap = ann.execute(GAP_SHOWN, vec![]).await.unwrap();
    let gap = gap.as_str().expect("a gap notice is shown");
    assert!(gap.contains("may be missing"), "{gap:?}");
    let order = ann
        .execute(
            "return [...document.querySelectorAll('#messages li')].map(li => \
             li.classList.contains('gap') ? 'gap' : li.querySelector('.msg').textContent);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(order, json!(["before", "gap", "after"]));
    save_screenshot(&ann, "gap.png").await;

    // The notice names the times it spans, or says the room holds nothing.
    let texts = ann
        .execute(
            "return [describeGap({since: '2026-01-02T03:04:05Z', first: '2026-01-02T04:05:06Z'}), \
                     describeGap({since: '2026-01-02T03:04:05Z', first: null})];",
            vec![],
        )
        .await
        .unwrap();
    let texts: Vec<String> = serde_json::from_value(texts).unwrap();
    let (since, first) = (
        "new Date('2026-01-02T03:04:05Z')",
        "new Date('2026-01-02T04:05:06Z')",
    );
    let times = ann
        .execute(
            &format!("return [formatWhen({since}), formatWhen({first})];"),
            vec![],
        )
        .await
        .unwrap();
    let times: Vec<String> = serde_json::from_value(times).unwrap();
    assert!(
        texts[0].contains(&times[0]) && texts[0].contains(&times[1]),
        "{texts:?} should name {times:?}"
    );
    assert!(
        texts[1].contains(&times[0]) && texts[1].contains("holds none"),
        "{texts:?}"
    );
    ann.close().await.unwrap();
    server.stop().await;
    let _ = std::fs::remove_file(&archive);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_from_another_day_shows_its_date() {
    let archive = temp_archive("day");
    std::fs::write(
        &archive,
        "{\"usr\":\"old\",\"msg\":\"long ago\",\"tim\":\"2020-01-02T12:00:00.000000000Z\"}\n",
    )
    .unwrap();
    let server =
        TestServer::start(&["--archive", archive.to_str().unwrap(), "--history", "5"]).await;
    let driver = Driver::start();
    let ann = driver.browser().await;
    open_as(&ann, server.addr, "ann").await;
    publish_all(&server, &["today".to_owned()]).await;
    wait_until(&ann, "today's message", &shown("today")).await;
    let times = ann
        .execute(
            "return [...document.querySelectorAll('#messages li time')].map(e => e.textContent);",
            vec![],
        )
        .await
        .unwrap();
    let times: Vec<String> = serde_json::from_value(times).unwrap();
    assert_eq!(times.len(), 2, "{times:?}");
    assert!(
        times[0].contains("2020") && times[0].contains(':'),
        "the date and time of an old message: {times:?}"
    );
    let year = chrono::Utc::now().format("%Y").to_string();
    assert!(
        !times[1].contains(&year) && times[1].contains(':'),
        "only the time of today's message: {times:?}"
    );
    save_screenshot(&ann, "another-day.png").await;
    ann.close().await.unwrap();
    server.stop().await;
    let _ = std::fs::remove_file(&archive);
}
