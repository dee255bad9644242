//! The HTTP front (README, HTTP endpoints): WebSocket upgrades on any path,
//! the browser client, `/healthz`, `/metrics`, and 404 for the rest; the
//! headers every answer carries; and the bound on connections that have
//! not upgraded.
//!
//! hyper parses HTTP; this file only decides what each request gets. An
//! upgrade joins the room *before* the 101 response is sent, so a client
//! receives every message relayed after its handshake completed.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::{debug, info, warn};
use wschat_core::Room;

use crate::assets::{Assets, Body};
use crate::cli::Options;
use crate::connection::{self, Limits, Start};
use crate::messages;
use crate::metrics::Metrics;
use crate::redis_log::Backplane;

/// Everything a request handler needs, shared by all connections.
///
/// Every task that serves a connection holds an `Arc<App>`; the server's
/// shutdown waits until the last one is gone (`_tasks` closes then).
pub(crate) struct App {
    pub room: Room,
    pub backplane: Option<Arc<Backplane>>,
    pub options: Options,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub ws_config: WebSocketConfig,
    pub assets: Assets,
    pub started: Instant,
    pub connections: AtomicUsize,
    pub pending: Pending,
    pub shutdown: watch::Receiver<bool>,
    pub _tasks: mpsc::Sender<()>,
}

/// What a browser may do with a page from wschat: load the page's own
/// scripts and styles, connect to its own origin (`ws:` and `wss:` are
/// named too, as `'self'` does not cover WebSocket URLs in every browser),
/// and nothing else: no inline script or style, no plugin, no `<base>`, no
/// form sent anywhere, no framing by any site (README, HTTP endpoints).
const CONTENT_SECURITY_POLICY: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self' ws: wss:; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
);

/// Answers one request, with the headers every answer carries.
pub(crate) async fn handle(
    app: Arc<App>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let mut response = route(app, req, peer).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    Ok(response)
}

/// What a request gets.
async fn route(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    if is_upgrade(req.headers()) {
        return upgrade(app, req, peer);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match req.uri().path() {
        "/healthz" => {
            let body = serde_json::json!({
                "status": "ok",
                "connections": app.connections.load(Ordering::Relaxed),
                "pending": app.pending.len(),
                "uptime_s": app.started.elapsed().as_secs(),
                "jwt": app.options.jwt_enabled(),
                "history": app.options.history,
                "backplane": match &app.backplane {
                    None => "none",
                    Some(b) if b.is_up() => "up",
                    Some(_) => "down",
                },
            });
            respond(StatusCode::OK, "application/json", body.to_string().into())
        }
        "/messages" => match messages::Query::parse(req.uri().query()) {
            Err(detail) => bad_request(&detail),
            Ok(query) => match messages::read(&app.room, query).await {
                Ok(body) => respond(StatusCode::OK, "application/json", body),
                Err(e) => {
                    warn!(error = %e, "GET /messages: cannot read the archive");
                    let body = serde_json::json!({"err": "unavailable", "detail": "cannot read the archive now"});
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        body.to_string().into(),
                    )
                }
            },
        },
        "/metrics" => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            app.metrics
                .encode(app.room.history_len(), app.pending.len())
                .into(),
        ),
        _ => match app.assets.serve(req).await {
            Some(response) => response,
            None => status(StatusCode::NOT_FOUND, "not found\n"),
        },
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    header_has_token(headers, header::CONNECTION, "upgrade")
        && header_has_token(headers, header::UPGRADE, "websocket")
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Checks and accepts a WebSocket upgrade, and starts its connection task.
fn upgrade(app: Arc<App>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let headers = req.headers();
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if req.method() == Method::GET => key.clone(),
        _ => return status(StatusCode::BAD_REQUEST, "bad WebSocket upgrade\n"),
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = status(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let since = match messages::since(req.uri().query()) {
        Ok(since) => since,
        Err(detail) => return bad_request(&detail),
    };
    if !origin_allowed(&app.options.allowed_origin, headers.get(header::ORIGIN)) {
        debug!(%peer, "upgrade refused: origin not allowed");
        return status(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    let Some(slot) = ConnectionSlot::take(&app) else {
        debug!(%peer, "upgrade refused: connection limit reached");
        return status(StatusCode::SERVICE_UNAVAILABLE, "too many connections\n");
    };
    // Joined before the 101 is sent, so the client misses nothing relayed
    // after its handshake; a resume reads from its cursor instead.
    let start = match since {
        None => Start::Member(app.room.join()),
        Some((since, text)) => Start::CatchUp(app.room.catch_up(since, &text)),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                debug!(%peer, error = %e, "upgrade failed");
                return;
            }
        };
        let app = &slot.app;
        // Back to the bare TcpStream that hyper boxed when it handed the
        // socket over, so no layer sits under every read and write. The
        // read buffer is copied out and let go at once: even empty, it
        // holds on to hyper's whole 8 KiB buffer.
        let (tcp, read) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (parts.io.into_inner(), parts.read_buf.to_vec()),
            Err(_) => {
                warn!(%peer, "upgraded connection is not a TCP stream");
                return;
            }
        };
        let ws = WebSocketStream::from_partially_read(tcp, read, Role::Server, Some(app.ws_config))
            .await;
        info!(%peer, "connection opened");
        let ended = connection::serve(ws, start, &app.limits, &app.metrics).await;
        info!(%peer, %ended, "connection closed");
        drop(slot);
    });
    let mut response = Response::new(Either::Left(Full::default()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&derive_accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// `400` with a JSON `{"err", "detail"}` body.
fn bad_request(detail: &str) -> Response<Body> {
    let body = serde_json::json!({"err": "bad_request", "detail": detail});
    respond(
        StatusCode::BAD_REQUEST,
        "application/json",
        body.to_string().into(),
    )
}

/// Requests without an Origin come from non-browser clients and are
/// accepted; browsers always send one.
fn origin_allowed(allowed: &[String], origin: Option<&HeaderValue>) -> bool {
    match origin {
        _ if allowed.is_empty() => true,
        None => true,
        Some(origin) => {
            let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
            allowed
                .iter()
                .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
        }
    }
}

/// One counted WebSocket connection; dropping it frees the slot.
struct ConnectionSlot {
    app: Arc<App>,
}

impl ConnectionSlot {
    fn take(app: &Arc<App>) -> Option<Self> {
        let max = app.options.max_connections;
        app.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        app.metrics.connection_opened();
        Some(ConnectionSlot { app: app.clone() })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.app.connections.fetch_sub(1, Ordering::AcqRel);
        self.app.metrics.connection_closed();
    }
}

/// The fewest connections not upgraded that are let in at once, whatever
/// `--max-connections` says.
const MIN_PENDING: usize = 64;

/// The TCP connections that have not upgraded: plain HTTP (keep-alive
/// included), or a handshake under way (README, HTTP endpoints). At most a
/// tenth of `--max-connections` (at least [`MIN_PENDING`]) at once; a new one
/// past that closes the oldest. A real client's handshake takes a round
/// trip, so idle or slow connections are the ones that go, and keeping
/// every place taken needs a flood of new connections, not a trickle.
pub(crate) struct Pending {
    limit: usize,
    open: Mutex<PendingSet>,
}

#[derive(Default)]
struct PendingSet {
    next: u64,
    /// Each connection's line to its task, oldest first: dropping it
    /// closes that connection.
    by_age: BTreeMap<u64, oneshot::Sender<()>>,
}

impl Pending {
    pub(crate) fn new(max_connections: usize) -> Self {
        Pending {
            limit: (max_connections / 10).max(MIN_PENDING),
            open: Mutex::default(),
        }
    }

    /// How many connections have not upgraded now.
    pub(crate) fn len(&self) -> usize {
        self.lock().by_age.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PendingSet> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One connection counted in [`Pending`]; dropping it (the connection
/// upgraded or ended) frees its place.
pub(crate) struct PendingTicket {
    app: Arc<App>,
    id: u64,
    evicted: oneshot::Receiver<()>,
}

impl PendingTicket {
    /// Counts a connection just accepted, closing the oldest one not
    /// upgraded if there is no room for it.
    pub(crate) fn take(app: &Arc<App>) -> Self {
        let (line, evicted) = oneshot::channel();
        let mut open = app.pending.lock();
        if open.by_age.len() >= app.pending.limit && open.by_age.pop_first().is_some() {
            app.metrics.pending_evicted();
        }
        let id = open.next;
        open.next += 1;
        open.by_age.insert(id, line);
        drop(open);
        PendingTicket {
            app: app.clone(),
            id,
            evicted,
        }
    }

    /// Resolves once a newer connection has taken this one's place.
    pub(crate) async fn evicted(&mut self) {
        let _ = (&mut self.evicted).await;
    }
}

impl Drop for PendingTicket {
    fn drop(&mut self) {
        self.app.pending.lock().by_age.remove(&self.id);
    }
}

fn respond(code: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut response = Response::new(Either::Left(Full::new(body)));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn status(code: StatusCode, text: &'static str) -> Response<Body> {
    respond(
        code,
        "text/plain; charset=utf-8",
        Bytes::from_static(text.as_bytes()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_list() {
        let allowed = vec!["https://chat.example".to_owned()];
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert!(origin_allowed(&[], Some(&v("https://evil.example"))));
        assert!(origin_allowed(&allowed, None));
        assert!(origin_allowed(&allowed, Some(&v("https://CHAT.example/"))));
        assert!(!origin_allowed(&allowed, Some(&v("https://evil.example"))));
        assert!(!origin_allowed(&allowed, Some(&v("null"))));
    }

    #[test]
    fn upgrade_detection_reads_token_lists() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_upgrade(&h));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        assert!(!is_upgrade(&h));
    }
}
