//! The transport under the routes: the accept loop, each TCP connection's
//! TLS handshake (with `--tls-cert`) and HTTP until it upgrades, and the
//! slots that bound connections, upgraded (`--max-connections`) or not
//! (README, HTTP endpoints).
//!
//! [`App`] is the state every connection shares; `http.rs` decides what
//! each request gets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, warn};
use wschat_core::Room;

use crate::assets::Assets;
use crate::config::{Config, Limits};
use crate::http;
use crate::messages::Reads;
use crate::metrics::Metrics;
use crate::redis_log::Backplane;
use crate::tls::Tls;

/// Request heads larger than this get `431` (README, HTTP endpoints); hyper
/// reads no more than this into a connection's buffer.
const MAX_HEAD: usize = 16 * 1024;

/// Everything a request handler needs, shared by all connections.
///
/// Every task that serves a connection holds an `Arc<App>`; the server's
/// shutdown waits until the last one is gone (`_tasks` closes then).
pub(crate) struct App {
    pub room: Room,
    pub backplane: Option<Arc<Backplane>>,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// The turns of `GET /messages`.
    pub reads: Reads,
    pub ws_config: WebSocketConfig,
    pub assets: Assets,
    pub started: Instant,
    pub connections: AtomicUsize,
    pub pending: Pending,
    /// The certificate and key, when serving HTTPS.
    pub tls: Option<Arc<Tls>>,
    pub shutdown: watch::Receiver<bool>,
    pub _tasks: mpsc::Sender<()>,
}

/// Accepts connections until the server shuts down, then drops the
/// listener.
pub(crate) async fn accept(listener: TcpListener, app: Arc<App>) {
    let mut stopped = app.shutdown.clone();
    loop {
        tokio::select! {
            () = requested(&mut stopped) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Counted here, in the order accepted, so the oldest
                    // is the one that goes when there is no room.
                    let pending = PendingTicket::take(&app);
                    tokio::spawn(serve_tcp(app.clone(), tcp, peer, pending));
                }
                Err(e) => {
                    // Out of file descriptors, most likely: back off and
                    // let connections close rather than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Serves one TCP connection's TLS handshake, if any, and HTTP until it
/// upgrades, ends, times out (`--handshake-timeout`, for the TLS and
/// WebSocket handshakes together), makes room for a newer one or the
/// server shuts down.
async fn serve_tcp(app: Arc<App>, tcp: TcpStream, peer: SocketAddr, mut pending: PendingTicket) {
    let _ = tcp.set_nodelay(true);
    let limit = app.config.limits.handshake_timeout;
    let mut stopped = app.shutdown.clone();
    let served = async {
        match &app.tls {
            None => serve_http(app.clone(), tcp, peer).await,
            Some(tls) => match opens_tls(&tcp).await {
                Some(true) => match tls.acceptor().accept(tcp).await {
                    Ok(stream) => serve_http(app.clone(), stream, peer).await,
                    Err(e) => debug!(%peer, error = %e, "TLS handshake failed"),
                },
                Some(false) => refuse_plain_http(tcp, peer).await,
                None => {}
            },
        }
    };
    tokio::select! {
        served = timeout(limit, served) => if served.is_err() {
            debug!(%peer, "handshake timeout");
        },
        () = pending.evicted() => debug!(%peer, "closed to make room for a newer connection"),
        _ = requested(&mut stopped) => {}
    }
}

/// Whether the client's first byte opens a TLS handshake record (22); a
/// plain HTTP request starts with a letter. `None` if it closed first.
async fn opens_tls(tcp: &TcpStream) -> Option<bool> {
    let mut first = [0u8; 1];
    match tcp.peek(&mut first).await {
        Ok(1..) => Some(first[0] == TLS_HANDSHAKE_RECORD),
        _ => None,
    }
}

/// The content type of a TLS record that carries a handshake message.
const TLS_HANDSHAKE_RECORD: u8 = 22;

/// What a plain HTTP client on the TLS port gets (README, "TLS").
const PLAIN_ON_TLS: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n\
Content-Length: 50\r\nConnection: close\r\n\r\nThis port speaks HTTPS: use https:// (or wss://).\n";

/// Answers a plain HTTP request on the TLS port with a `400` that says
/// so, instead of TLS's alert, which no HTTP client can show. The request
/// is read first and the connection drained after, so that closing it
/// does not reset it under the answer.
async fn refuse_plain_http(mut tcp: TcpStream, peer: SocketAddr) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    debug!(%peer, "plain HTTP on the TLS port");
    let mut buf = [0u8; 1024];
    let _ = tcp.read(&mut buf).await;
    if tcp.write_all(PLAIN_ON_TLS).await.is_err() || tcp.shutdown().await.is_err() {
        return;
    }
    while let Ok(1..) = tcp.read(&mut buf).await {}
}

/// Serves HTTP on `io` (TCP, or TLS over it) until the connection upgrades
/// or ends.
async fn serve_http<S>(app: Arc<App>, io: S, peer: SocketAddr)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| http::handle(app.clone(), req, peer));
    let conn = http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(%peer, error = %e, "http connection error");
    }
}

/// Resolves once the server has started shutting down (the flag is set, or
/// its sender is gone).
async fn requested(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// tungstenite's buffers and limits for one connection. The read buffer
/// is allocated up front for every connection, so it is small (128 bytes:
/// 256 cost 0.13 KiB more per idle connection, 1 KiB 0.7 KiB more); a
/// chat frame of up to about 120 bytes is read in one call, a larger one
/// in one call per 128 bytes (README, "Where a waiting connection's
/// memory goes").
pub(crate) fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(128)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

/// One counted WebSocket connection; dropping it frees the slot.
pub(crate) struct ConnectionSlot {
    pub app: Arc<App>,
}

impl ConnectionSlot {
    /// Counts an upgraded connection, or `None` at `--max-connections`.
    pub(crate) fn take(app: &Arc<App>) -> Option<Self> {
        let max = app.config.limits.max_connections;
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

    /// How many connections have been accepted so far.
    pub(crate) fn accepted(&self) -> u64 {
        self.lock().next
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
