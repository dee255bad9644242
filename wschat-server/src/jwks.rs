//! A JSON Web Key Set fetched from an identity provider over HTTP(S), and
//! kept fresh: again every 10 minutes, and when a token names a key the set
//! does not hold, at most once per 30 seconds. A fetch that fails keeps the
//! keys there were and is logged once, until a fetch succeeds again
//! (README, "Tokens from an identity provider").

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use wschat_core::JwtKeys;

/// How often the set is fetched again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(10 * 60);
/// The shortest time between two fetches asked for by unknown `kid`s, so
/// tokens naming made-up keys cannot make the server hammer the provider.
pub const UNKNOWN_KID_GAP: Duration = Duration::from_secs(30);
/// How long one fetch may take, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The largest key set read; providers publish a few kilobytes.
const MAX_BODY: usize = 1 << 20;

/// Fetches one URL's key set.
pub struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    uri: Uri,
    /// The URL as logged: without user info or query, which can hold
    /// credentials.
    shown: String,
}

impl Fetcher {
    /// A fetcher for `url` (`http` or `https`; https verifies the server
    /// against the Mozilla root certificates, with rustls).
    pub fn new(url: &str) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err("not an absolute http(s) URL".into());
        };
        let host = authority.as_str().rsplit('@').next().unwrap_or_default();
        let shown = format!("{scheme}://{host}{}", uri.path());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| format!("TLS: {e}"))?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Fetcher { client, uri, shown })
    }

    /// The URL, fit for the log.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The document at the URL: a `2xx` answer's body, at most 1 MiB,
    /// within 10 seconds.
    pub async fn fetch(&self) -> Result<Bytes, String> {
        tokio::time::timeout(FETCH_TIMEOUT, self.get())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {FETCH_TIMEOUT:?}")))
    }

    async fn get(&self) -> Result<Bytes, String> {
        let request = hyper::Request::get(self.uri.clone())
            .header(hyper::header::ACCEPT, "application/json")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = self.client.request(request).await.map_err(chain)?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map(|body| body.to_bytes())
            .map_err(|e| format!("reading the answer: {e}"))
    }
}

/// An error with its causes, in one line ("client error (Connect):
/// tcp connect error: Connection refused").
fn chain(e: impl std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Fetches the set into `keys` whenever it is due, until the task is
/// aborted.
pub async fn refresh(fetcher: Fetcher, keys: JwtKeys) {
    let mut schedule = Schedule::new(Instant::now());
    let mut health = Health::default();
    loop {
        tokio::select! {
            () = keys.unknown_kid() => schedule.unknown_kid(),
            () = tokio::time::sleep_until(schedule.due(Instant::now())) => {
                let fetched = fetcher.fetch().await.and_then(|body| {
                    keys.replace(&body).map_err(|e| e.to_string())
                });
                schedule.fetched(Instant::now());
                let url = fetcher.shown();
                match health.record(fetched) {
                    Outcome::Fetched(n) => debug!(url, keys = n, "key set fetched"),
                    Outcome::Recovered(n) => info!(url, keys = n, "key set fetched again"),
                    Outcome::Failed(error) => warn!(
                        url,
                        %error,
                        "cannot fetch the key set; keeping the keys it had"
                    ),
                    Outcome::StillFailing(error) => debug!(url, %error, "key set still failing"),
                }
            }
        }
    }
}

/// When the next fetch is due: every [`REFRESH_EVERY`] after the last
/// fetch, and soon after an unknown `kid`, but never sooner than
/// [`UNKNOWN_KID_GAP`] after the last fetch an unknown `kid` asked for.
#[derive(Debug)]
struct Schedule {
    next_periodic: Instant,
    last_kid_fetch: Option<Instant>,
    kid_wanted: bool,
}

impl Schedule {
    /// Just after the fetch at start (`now`).
    fn new(now: Instant) -> Self {
        Schedule {
            next_periodic: now + REFRESH_EVERY,
            last_kid_fetch: None,
            kid_wanted: false,
        }
    }

    fn unknown_kid(&mut self) {
        self.kid_wanted = true;
    }

    fn due(&self, now: Instant) -> Instant {
        let for_kid = self.kid_wanted.then(|| {
            self.last_kid_fetch
                .map_or(now, |t| now.max(t + UNKNOWN_KID_GAP))
        });
        for_kid.map_or(self.next_periodic, |t| t.min(self.next_periodic))
    }

    /// A fetch ended at `now`, answering any unknown `kid` so far.
    fn fetched(&mut self, now: Instant) {
        if self.kid_wanted {
            self.kid_wanted = false;
            self.last_kid_fetch = Some(now);
        }
        self.next_periodic = now + REFRESH_EVERY;
    }
}

/// Whether fetches fail, so a provider that is down is logged once, not
/// at every try.
#[derive(Debug, Default)]
struct Health {
    failing: bool,
}

/// What a fetch's result means for the log.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Fetched(usize),
    Recovered(usize),
    Failed(String),
    StillFailing(String),
}

impl Health {
    fn record(&mut self, fetched: Result<usize, String>) -> Outcome {
        let was_failing = std::mem::replace(&mut self.failing, fetched.is_err());
        match (fetched, was_failing) {
            (Ok(n), false) => Outcome::Fetched(n),
            (Ok(n), true) => Outcome::Recovered(n),
            (Err(e), false) => Outcome::Failed(e),
            (Err(e), true) => Outcome::StillFailing(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetches_every_ten_minutes_when_nothing_asks() {
        let start = Instant::now();
        let mut s = Schedule::new(start);
        assert_eq!(s.due(start), start + REFRESH_EVERY);
        let later = start + REFRESH_EVERY;
        s.fetched(later);
        assert_eq!(s.due(later), later + REFRESH_EVERY);
    }

    #[test]
    fn an_unknown_kid_fetches_at_once_then_at_most_every_30_seconds() {
        let start = Instant::now();
        let mut s = Schedule::new(start);
        let t1 = start + Duration::from_secs(5);
        s.unknown_kid();
        assert_eq!(s.due(t1), t1, "the first one fetches at once");
        s.fetched(t1);
        assert_eq!(s.due(t1), t1 + REFRESH_EVERY, "answered");

        let t2 = t1 + Duration::from_secs(3);
        s.unknown_kid();
        s.unknown_kid();
        assert_eq!(s.due(t2), t1 + UNKNOWN_KID_GAP, "waits out the gap");
        let t3 = t1 + UNKNOWN_KID_GAP;
        s.fetched(t3);
        assert_eq!(s.due(t3), t3 + REFRESH_EVERY);

        // Long after the last one, a new unknown kid fetches at once.
        let t4 = t3 + Duration::from_secs(100);
        s.unknown_kid();
        assert_eq!(s.due(t4), t4);
    }

    #[test]
    fn a_failing_provider_is_reported_once_until_it_recovers() {
        let mut h = Health::default();
        assert_eq!(h.record(Ok(2)), Outcome::Fetched(2));
        assert_eq!(h.record(Err("down".into())), Outcome::Failed("down".into()));
        assert_eq!(
            h.record(Err("down".into())),
            Outcome::StillFailing("down".into())
        );
        assert_eq!(
            h.record(Err("still".into())),
            Outcome::StillFailing("still".into())
        );
        assert_eq!(h.record(Ok(3)), Outcome::Recovered(3));
        assert_eq!(h.record(Ok(3)), Outcome::Fetched(3));
        assert_eq!(
            h.record(Err("again".into())),
            Outcome::Failed("again".into())
        );
    }

    #[test]
    fn the_logged_url_leaves_out_credentials_and_query() {
        let f = Fetcher::new("https://user:pw@idp.example:8443/realms/R/certs?token=x").unwrap();
        assert_eq!(f.shown(), "https://idp.example:8443/realms/R/certs");
        assert!(Fetcher::new("/relative/path").is_err());
    }
}
