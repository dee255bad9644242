//! The signals the server answers: SIGINT (Ctrl-C) and SIGTERM stop it,
//! SIGHUP reopens the archive (README, Security).
//!
//! Each handler is installed when its function is called, not when the
//! returned future is first polled, so a signal that comes right after
//! start-up never gets its default action (death with no close frames).

use std::future::Future;

use tracing::{error, info};
use wschat_core::Room;

/// Resolves when the process receives SIGINT or SIGTERM.
///
/// Call it inside the runtime. A handler that cannot be installed counts
/// as a signal that never comes, so the server still runs.
pub fn shutdown() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        let mut terminate = signal(SignalKind::terminate()).ok();
        async move {
            let interrupted = async {
                match &mut interrupt {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            let terminated = async {
                match &mut terminate {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = interrupted => {}
                () = terminated => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Returns the future that answers every SIGHUP for as long as it runs:
/// reopening the room's log by name when `archive` is set, so logrotate
/// (or any rename) starts a new file without a restart; logging otherwise.
///
/// The handler is installed whatever the configuration, because SIGHUP's
/// default action ends the process: without an archive the signal
/// (`systemctl reload`, a stray `kill -HUP`) is logged and ignored.
pub(crate) fn on_hangup(room: Room, archive: bool) -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = signal(SignalKind::hangup());
        async move {
            let Ok(mut hangups) = hangups else {
                error!("cannot listen for SIGHUP; the archive will not be reopened on rotation");
                return;
            };
            while hangups.recv().await.is_some() {
                if !archive {
                    info!("SIGHUP: no archive to reopen; ignored");
                    continue;
                }
                // Reopening waits for the batch being written, which takes
                // as long as the disk does: never on a runtime worker.
                let room = room.clone();
                match tokio::task::spawn_blocking(move || room.reopen_log()).await {
                    Ok(Ok(())) => info!("SIGHUP: archive reopened"),
                    Ok(Err(e)) => error!(error = %e, "SIGHUP: cannot reopen the archive"),
                    Err(e) => error!(error = %e, "SIGHUP: reopening the archive failed"),
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (room, archive);
        std::future::ready(())
    }
}
