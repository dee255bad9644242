//! SIGHUP: reopens the archive by name, so logrotate (or any rename)
//! starts a new file without a restart. The handler is installed whatever
//! the configuration, because SIGHUP's default action ends the process:
//! without an archive the signal (`systemctl reload`, a stray `kill -HUP`)
//! is logged and ignored (README, Security).

use std::future::Future;

use tracing::{error, info};
use wschat_core::Room;

/// Installs the SIGHUP handler now (not when the future is first polled,
/// so a SIGHUP right after start-up never ends the process) and returns
/// the future that answers every SIGHUP for as long as it runs: reopening
/// the room's log when `archive` is set, logging otherwise.
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
