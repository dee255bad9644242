//! The wschat server: a thin network layer around [`wschat_core::Room`].
//!
//! [`run`] serves HTTP and WebSocket on a listener until a shutdown future
//! resolves, then closes every client with 1001 and returns. The binary
//! (`main.rs`) only parses the command line and calls it; tests call it
//! in-process on a free port.

mod assets;
pub mod cli;
pub mod config;
mod connection;
mod counted;
mod error;
mod http;
mod jwks;
mod keys;
mod messages;
mod metrics;
mod read_ahead;
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
pub use config::Config;
pub use error::{BackplaneError, ConfigError, KeysError, ServerError, TlsError};

use assets::Assets;
use config::{ArchiveConfig, ArchivePlace};
use metrics::Metrics;
use server::{App, Pending};

/// How long shutdown waits for connections to finish closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(7);

/// The room the configuration describes: `jwt`'s token rules, its
/// archive, if one is configured, and with Redis the stream as its shared
/// log, whose tail is the history.
async fn build_room(
    config: &Config,
    jwt: Option<JwtConfig>,
) -> Result<(Room, Option<redis_log::Link>), ServerError> {
    let mut builder = Room::builder(config.room_config(jwt));
    match &config.archive {
        Some(ArchiveConfig {
            place: ArchivePlace::File(path),
            fsync,
        }) => {
            let archive = Arc::new(Archive::open(path, *fsync).map_err(ServerError::Archive)?);
            if config.redis.is_none() {
                // With Redis, the history is the stream's tail instead. One
                // at least, with no history too: reads by cursor stop at
                // the newest message the room knows of.
                let recent = archive
                    .recent(config.history.max(1))
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
            info!(path = %path.display(), fsync, "archive open");
            builder = builder.log(archive);
        }
        Some(ArchiveConfig {
            place: ArchivePlace::Dir(dir),
            fsync,
        }) => {
            // The room reads its history from it (unless Redis has it).
            let archive = ArchiveDir::open(dir, *fsync).map_err(ServerError::Archive)?;
            if let Some(file) = archive.closed_torn_line() {
                warn!(path = %file.display(), "closed a torn last line (a crash mid-write?); it is skipped");
            }
            info!(dir = %dir.display(), fsync, "archive directory open");
            builder = builder.log(Arc::new(archive));
        }
        None => {}
    }
    let link = match &config.redis {
        Some(redis) => {
            Some(redis_log::Link::connect(&redis.url, &redis.key, config.history).await?)
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

/// Serves `listener` as `config` says until `shutdown` resolves; then
/// stops accepting, closes every WebSocket with 1001 and returns once they
/// are closed (or after a few seconds).
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    config.check()?;
    let addr = listener.local_addr().map_err(ServerError::Listener)?;
    // First, so that a bad pair is the only line a refused start says.
    let tls = match &config.tls {
        Some(files) => Some(Arc::new(tls::Tls::load(&files.cert, &files.key)?)),
        None => None,
    };
    let limits = &config.limits;
    if limits.ping_interval >= limits.idle_timeout {
        warn!(
            ping_interval = limits.ping_interval.as_secs(),
            idle_timeout = limits.idle_timeout.as_secs(),
            "--ping-interval is not below --idle-timeout: quiet clients are closed before they are pinged"
        );
    }
    warn_if_memory_may_run_out(&config);
    let keys::Loaded {
        config: jwt,
        refresher,
    } = keys::load(&config.tokens).await?;
    // Only once the keys are known to be usable: a refused start says one
    // line and nothing else.
    if let Some(bytes) = config.short_secret() {
        warn!(
            bytes,
            "the JWT secret is shorter than {} bytes: tokens signed with it can be \
             forged by guessing it; use a long random secret",
            config::MIN_SECRET_BYTES
        );
    }
    let (room, link) = build_room(&config, jwt).await?;
    let archived = config.archive.is_some();
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
        reads: messages::Reads::new(config.limits.max_message_bytes),
        ws_config: server::ws_config(&config.limits),
        assets: config
            .static_dir
            .clone()
            .map_or_else(Assets::embedded, Assets::dir),
        started: Instant::now(),
        connections: AtomicUsize::new(0),
        pending: Pending::new(config.limits.max_connections),
        tls,
        shutdown: stopped,
        _tasks: tasks,
        config,
    });
    let scheme = if app.tls.is_some() { "https" } else { "http" };
    info!(
        %addr,
        jwt = app.config.tokens.enabled(),
        history = app.config.history,
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
fn warn_if_memory_may_run_out(config: &Config) {
    let worst = config.worst_case_message_bytes();
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
