//! The HTTP routes (README, HTTP endpoints): WebSocket upgrades on any
//! path, the browser client, `/healthz`, `/metrics`, `/messages`, and 404
//! for the rest; and the headers every answer carries.
//!
//! hyper parses HTTP; this file only decides what each request gets. An
//! upgrade joins the room *before* the 101 response is sent, so a client
//! receives every message relayed after its handshake completed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::future;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{debug, info, warn};

use crate::assets::Body;
use crate::connection::{self, Open, Start};
use crate::counted::Counted;
use crate::messages;
use crate::read_ahead::ReadAhead;
use crate::server::{App, ConnectionSlot};
use crate::tls;

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
                "jwt": app.config.tokens.enabled(),
                // The page shows moderation controls to a token with it.
                "mod_claim": app.config.tokens.enabled().then_some(&app.config.tokens.mod_claim),
                "history": app.config.history,
                "backplane": match &app.backplane {
                    None => "none",
                    Some(b) if b.is_up() => "up",
                    Some(_) => "down",
                },
                "tls": app.tls.is_some(),
                "tls_cert_expires": app.tls.as_ref().map(|tls| tls::rfc3339(tls.expires())),
            });
            respond(StatusCode::OK, "application/json", body.to_string().into())
        }
        "/messages" => match messages::Query::parse(req.uri().query()) {
            Err(detail) => bad_request(&detail),
            Ok(query) => match messages::read(&app.room, &app.reads, query).await {
                Ok(body) => respond(StatusCode::OK, "application/json", body),
                Err(messages::ReadError::Busy) => {
                    let body = serde_json::json!({"err": "unavailable", "detail": "too many reads of the archive at once; try again"});
                    let mut response = respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        body.to_string().into(),
                    );
                    response.headers_mut().insert(
                        header::RETRY_AFTER,
                        HeaderValue::from_static(messages::RETRY_AFTER),
                    );
                    response
                }
                Err(messages::ReadError::Log(e)) => {
                    crate::warn_every::unreadable_log(&e, "GET /messages");
                    let body = serde_json::json!({"err": "unavailable", "detail": "cannot read the archive now"});
                    respond(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        body.to_string().into(),
                    )
                }
            },
        },
        "/metrics" => {
            if let Some(tls) = &app.tls {
                app.metrics.tls_cert_expires(tls.expires());
            }
            respond(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                app.metrics
                    .encode(app.room.history_len(), app.pending.len())
                    .into(),
            )
        }
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
    if !origin_allowed(&app.config.allowed_origins, headers.get(header::ORIGIN)) {
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
    let setup = Box::new(Setup {
        on_upgrade,
        start,
        slot,
        peer,
    });
    tokio::spawn(serve_upgraded(setup));
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

/// What an accepted upgrade needs until hyper hands the socket over.
struct Setup {
    on_upgrade: OnUpgrade,
    start: Start,
    slot: ConnectionSlot,
    peer: SocketAddr,
}

/// The socket hyper handed over, with what it had read past the upgrade
/// request, and the rest of the setup.
struct Handed<S> {
    io: S,
    read: Vec<u8>,
    start: Start,
    slot: ConnectionSlot,
    peer: SocketAddr,
}

/// A plain TCP or a TLS socket, each behind a pointer: the task holds
/// either one until the WebSocket is open.
enum Handover {
    Tcp(Box<Handed<TcpStream>>),
    Tls(Box<Handed<TlsStream<TcpStream>>>),
}

/// An upgraded connection's task. Its future is most of what a waiting
/// connection costs (README, Performance), so it holds each part once:
/// the setup by pointer until the socket is open (the opening is boxed,
/// and freed once done), then the open connection, and the serving loop's
/// own state beside it. A TLS connection's state is larger, so it is
/// boxed: plain connections do not carry its size.
async fn serve_upgraded(setup: Box<Setup>) {
    // Bound whole and moved on, so the task keeps no copy of it.
    let Some(handover) = Box::pin(handover(setup)).await else {
        return;
    };
    serve_handover(handover).await;
}

/// Serves a handed-over socket: a plain one in the task itself, a TLS
/// one behind a pointer.
fn serve_handover(handover: Handover) -> impl Future<Output = ()> + Send {
    match handover {
        Handover::Tcp(handed) => future::Either::Left(serve_handed(handed)),
        Handover::Tls(handed) => future::Either::Right(Box::pin(serve_handed(handed))),
    }
}

/// Waits for hyper to hand the socket over; `None` when the upgrade
/// failed.
async fn handover(setup: Box<Setup>) -> Option<Handover> {
    let Setup {
        on_upgrade,
        start,
        slot,
        peer,
    } = *setup;
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(e) => {
            debug!(%peer, error = %e, "upgrade failed");
            return None;
        }
    };
    // Back to the bare TcpStream (or TLS stream) that hyper boxed when it
    // handed the socket over, so no layer sits under every read and
    // write. The read buffer is copied out and let go at once: even
    // empty, it holds on to hyper's whole 8 KiB buffer.
    let upgraded = match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let read = parts.read_buf.to_vec();
            let io = parts.io.into_inner();
            return Some(Handover::Tcp(Box::new(Handed {
                io,
                read,
                start,
                slot,
                peer,
            })));
        }
        Err(upgraded) => upgraded,
    };
    match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
        Ok(parts) => {
            let read = parts.read_buf.to_vec();
            let io = parts.io.into_inner();
            Some(Handover::Tls(Box::new(Handed {
                io,
                read,
                start,
                slot,
                peer,
            })))
        }
        Err(_) => {
            warn!(%peer, "upgraded connection is not a TCP or TLS stream");
            None
        }
    }
}

/// Serves one handed-over socket until the connection ends.
async fn serve_handed<S>(handed: Box<Handed<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let Some(mut open) = Box::pin(open(handed)).await else {
        return;
    };
    let ended = connection::serve(&mut open).await;
    // Out of the room before the close handshake's linger.
    drop(open.member);
    connection::finish(&mut open.ws, &ended).await;
    info!(peer = %open.peer, %ended, "connection closed");
}

/// Starts the WebSocket on a handed-over socket and joins (catching a
/// resuming client up); `None` when the connection ended meanwhile.
async fn open<S>(handed: Box<Handed<S>>) -> Option<Open<ReadAhead<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Handed {
        io,
        read,
        start,
        slot,
        peer,
    } = *handed;
    let app = &slot.app;
    // [`Counted`] adds up what the socket takes, for the catch-up's stall
    // check; it sits under every read and write, at the cost of a count.
    // [`ReadAhead`] reads a large frame in buffer-fulls, not 128 bytes at
    // a time, and holds no buffer while the connection waits.
    let mut ws = WebSocketStream::from_partially_read(
        Counted::new(ReadAhead::new(io)),
        read,
        Role::Server,
        Some(app.ws_config),
    )
    .await;
    info!(%peer, "connection opened");
    match connection::join(&mut ws, start, &app.config.limits, &app.metrics).await {
        Ok(member) => Some(Open {
            ws,
            member,
            slot,
            peer,
        }),
        Err(ended) => {
            info!(%peer, %ended, "connection closed");
            None
        }
    }
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

    fn returned<A, R>(_: impl FnOnce(A) -> R) -> usize {
        std::mem::size_of::<R>()
    }

    /// README, "Where a waiting connection's memory goes": tokio keeps a
    /// task's future in a cell with 104 bytes of its own (header,
    /// scheduler, id, stage tag, trailer), rounded up to 128-byte lines.
    /// A waiting connection's task is that cell: it fits in 1 KiB.
    #[test]
    fn a_connection_task_fits_in_one_kib() {
        let future = returned(serve_upgraded);
        assert!(future + 104 <= 1024, "the task's future is {future} bytes");
    }
}
