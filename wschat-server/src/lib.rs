//! The wschat server: a thin network layer around [`wschat_core::Room`].
//!
//! [`run`] serves HTTP and WebSocket on a listener until a shutdown future
//! resolves, then closes every client with 1001 and returns. The binary
//! (`main.rs`) only parses the command line and calls it; tests call it
//! in-process on a free port.

mod assets;
pub mod cli;
mod connection;
mod counted;
mod error;
mod http;
mod jwks;
pub mod keys;
mod messages;
mod metrics;
mod redis_log;
mod server;
pub mod signals;
mod tls;
mod trim;
mod warn_every;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tracing::{info, warn};
use wschat_core::{Archive, ArchiveDir, JwtConfig, Log, Room};

pub use cli::{Cli, Command, Options};
pub use error::{BackplaneError, KeysError, ServerError, TlsError};

use assets::Assets;
use connection::Limits;
use metrics::Metrics;
use server::{App, Pending};

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

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
            // With Redis, the history is the stream's tail instead. One at
            // least, with no history too: reads by cursor stop at the
            // newest message the room knows of.
            let recent = archive
                .recent(options.history.max(1))
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
    // First, so that a bad pair is the only line a refused start says.
    let tls = match options.tls_files()? {
        Some((cert, key)) => Some(Arc::new(tls::Tls::load(cert, key)?)),
        None => None,
    };
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
    if let Some(tls) = &tls {
        tls::log_expiry(tls.expires(), "TLS on");
    }
    let rotation = tokio::spawn(signals::on_hangup(room.clone(), archived, tls.clone()));
    let metrics = Arc::new(Metrics::new(tls.is_some()));
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
            max_message_bytes: options.max_message_bytes,
        },
        reads: messages::Reads::new(options.max_message_bytes),
        ws_config: server::ws_config(&options),
        assets: options
            .static_dir
            .clone()
            .map_or_else(Assets::embedded, Assets::dir),
        started: Instant::now(),
        connections: AtomicUsize::new(0),
        pending: Pending::new(options.max_connections),
        tls,
        shutdown: stopped,
        _tasks: tasks,
        options,
    });
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    info!(
        %addr,
        jwt = app.options.jwt_enabled(),
        history = app.options.history,
        tls = app.tls.is_some(),
        "listening on {scheme}://{addr}/"
    );
    // Accepting runs as a task, not on the thread that awaits `run`: a
    // connection task it spawns then starts on a worker's own queue
    // instead of waking a worker through the shared one.
    let accepting = tokio::spawn(server::accept(listener, app.clone()));
    let trimming = tokio::spawn(trim::after_bursts(Arc::downgrade(&app)));
    shutdown.await;
    info!("shutting down");
    let _ = stop.send(true);
    let _ = accepting.await;
    app.room.close();
    if let Some(backplane) = &app.backplane {
        backplane.stop();
    }
    rotation.abort();
    trimming.abort();
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
