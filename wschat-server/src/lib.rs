//! The wschat server: a thin network layer around [`wschat_core::Room`].
//!
//! [`run`] serves HTTP and WebSocket on a listener until a shutdown future
//! resolves, then closes every client with 1001 and returns. The binary
//! (`main.rs`) only parses the command line and calls it; tests call it
//! in-process on a free port.

mod assets;
pub mod cli;
mod connection;
mod http;
mod jwks;
pub mod keys;
mod messages;
mod metrics;
mod redis_log;
pub mod signals;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tracing::{debug, info, warn};
use wschat_core::{Archive, ArchiveDir, JwtConfig, Log, LogError, Room};

pub use cli::{Cli, Command, Options};
pub use redis_log::BackplaneError;

use assets::Assets;
use connection::Limits;
use http::{App, Pending, PendingTicket};
use metrics::Metrics;

/// Request heads larger than this get `431` (README, HTTP endpoints); hyper
/// reads no more than this into a connection's buffer.
const MAX_HEAD: usize = 16 * 1024;

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The archive could not be opened or read.
    #[error("archive {}", .0.to_string().trim_start_matches("log: "))]
    Archive(#[source] LogError),
    /// The Redis backplane could not start.
    #[error(transparent)]
    Backplane(#[from] redis_log::BackplaneError),
    /// A token key could not be loaded or does not fit its algorithm.
    #[error(transparent)]
    Keys(#[from] keys::KeysError),
}

/// The room the options describe: `jwt`'s token rules, its archive, if
/// one is configured, and with `--redis` the stream as its shared log,
/// whose tail is the history.
async fn build_room(
    options: &Options,
    jwt: Option<JwtConfig>,
) -> Result<(Room, Option<redis_log::Link>), ServerError> {
    let mut builder = Room::builder(options.room_config().jwt(jwt));
    if let Some(path) = &options.archive {
        let archive =
            Arc::new(Archive::open(path, options.archive_fsync).map_err(ServerError::Archive)?);
        if options.redis.is_none() {
            // With Redis, the history is the stream's tail instead.
            let recent = archive
                .recent(options.history)
                .map_err(ServerError::Archive)?;
            if archive.skipped_lines() > 0 {
                warn!(
                    path = %path.display(),
                    skipped = archive.skipped_lines(),
                    "skipped archive lines that are not JSON objects (a torn last line after a crash?)"
                );
            }
            builder = builder.history(recent);
        }
        info!(path = %path.display(), fsync = options.archive_fsync, "archive open");
        builder = builder.log(archive);
    }
    if let Some(dir) = &options.archive_dir {
        // The room reads its history from it (unless Redis has it).
        let archive = ArchiveDir::open(dir, options.archive_fsync).map_err(ServerError::Archive)?;
        if let Some(file) = archive.closed_torn_line() {
            warn!(path = %file.display(), "closed a torn last line (a crash mid-write?); it is skipped");
        }
        info!(dir = %dir.display(), fsync = options.archive_fsync, "archive directory open");
        builder = builder.log(Arc::new(archive));
    }
    let link = match &options.redis {
        Some(url) => {
            Some(redis_log::Link::connect(url, &options.redis_key, options.history).await?)
        }
        None => None,
    };
    if let Some(link) = &link {
        builder = builder
            .history(link.history.clone())
            .shared_log(link.log.clone());
    }
    let room = builder.build().map_err(ServerError::Archive)?;
    Ok((room, link))
}

/// Serves `listener` with `options` until `shutdown` resolves; then stops
/// accepting, closes every WebSocket with 1001 and returns once they are
/// closed (or after a few seconds).
pub async fn run(
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let addr = listener.local_addr().map_err(ServerError::Listener)?;
    if options.ping_interval >= options.idle_timeout {
        warn!(
            ping_interval = options.ping_interval,
            idle_timeout = options.idle_timeout,
            "--ping-interval is not below --idle-timeout: quiet clients are closed before they are pinged"
        );
    }
    warn_if_memory_may_run_out(&options);
    let keys::Tokens { config, refresher } = keys::load(&options).await?;
    // Only once the keys are known to be usable: a refused start says one
    // line and nothing else.
    if let Some(bytes) = options.short_secret() {
        warn!(
            bytes,
            "the JWT secret is shorter than {} bytes: tokens signed with it can be \
             forged by guessing it; use a long random secret",
            cli::MIN_SECRET_BYTES
        );
    }
    let (room, link) = build_room(&options, config).await?;
    let archived = options.archive.is_some() || options.archive_dir.is_some();
    let rotation = tokio::spawn(signals::on_hangup(room.clone(), archived));
    let metrics = Arc::new(Metrics::new());
    let backplane = link.map(|link| Arc::new(link.start(room.clone(), metrics.clone())));
    let (stop, stopped) = watch::channel(false);
    let (tasks, mut all_done) = mpsc::channel::<()>(1);
    let app = Arc::new(App {
        room,
        backplane,
        metrics,
        limits: Limits {
            ping_interval: options.ping_interval(),
            idle_timeout: options.idle_timeout(),
        },
        ws_config: ws_config(&options),
        assets: options
            .static_dir
            .clone()
            .map_or_else(Assets::embedded, Assets::dir),
        started: Instant::now(),
        connections: AtomicUsize::new(0),
        pending: Pending::new(options.max_connections),
        shutdown: stopped,
        _tasks: tasks,
        options,
    });
    info!(
        %addr,
        jwt = app.options.jwt_enabled(),
        history = app.options.history,
        "listening on http://{addr}/"
    );
    // Accepting runs as a task, not on the thread that awaits `run`: a
    // connection task it spawns then starts on a worker's own queue
    // instead of waking a worker through the shared one.
    let accepting = tokio::spawn(accept(listener, app.clone()));
    shutdown.await;
    info!("shutting down");
    let _ = stop.send(true);
    let _ = accepting.await;
    app.room.close();
    if let Some(backplane) = &app.backplane {
        backplane.stop();
    }
    rotation.abort();
    drop(refresher);
    drop(app);
    if timeout(SHUTDOWN_GRACE, all_done.recv()).await.is_err() {
        warn!("some connections did not close in time");
    }
    info!("stopped");
    Ok(())
}

/// Says at start when full rings and history of the largest messages
/// could take more memory than the machine has (README, Security): the
/// limits then do not protect it.
fn warn_if_memory_may_run_out(options: &Options) {
    let worst = options.worst_case_message_bytes();
    match total_memory() {
        Some(total) if worst > total => warn!(
            worst_case_bytes = worst,
            total_memory_bytes = total,
            "the messages held (--send-queue, rounded up to a power of two, or \
             --history, times --max-message-bytes) could take more memory than \
             the machine has; lower one of them"
        ),
        _ => {}
    }
}

/// The machine's total memory in bytes, from `/proc/meminfo` (`None` where
/// it cannot be read).
fn total_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line
        .trim_start_matches("MemTotal:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// Accepts connections until the server shuts down, then drops the
/// listener.
async fn accept(listener: TcpListener, app: Arc<App>) {
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

/// Serves one TCP connection's HTTP until it upgrades, ends, times out
/// (`--handshake-timeout`), makes room for a newer one or the server shuts
/// down.
async fn serve_tcp(app: Arc<App>, tcp: TcpStream, peer: SocketAddr, mut pending: PendingTicket) {
    let _ = tcp.set_nodelay(true);
    let limit = app.options.handshake_timeout();
    let mut stopped = app.shutdown.clone();
    let service = {
        let app = app.clone();
        service_fn(move |req| http::handle(app.clone(), req, peer))
    };
    let conn = http1::Builder::new()
        .max_buf_size(MAX_HEAD)
        .max_header_size(MAX_HEAD)
        .serve_connection(TokioIo::new(tcp), service)
        .with_upgrades();
    tokio::select! {
        served = timeout(limit, conn) => match served {
            Ok(Ok(())) => {}
            Ok(Err(e)) => debug!(%peer, error = %e, "http connection error"),
            Err(_) => debug!(%peer, "handshake timeout"),
        },
        () = pending.evicted() => debug!(%peer, "closed to make room for a newer connection"),
        _ = requested(&mut stopped) => {}
    }
}

/// Resolves once the server has started shutting down (the flag is set, or
/// its sender is gone).
async fn requested(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

/// tungstenite's buffers and limits for one connection. The read buffer
/// is allocated up front for every connection, so it is small (256 bytes:
/// 1 KiB cost 0.7 KiB more per idle connection); chat frames are small,
/// and a large one is read in several calls.
fn ws_config(options: &Options) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(options.max_message_bytes))
        .max_frame_size(Some(options.max_message_bytes))
}
