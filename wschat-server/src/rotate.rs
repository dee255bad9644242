//! Log rotation: SIGHUP reopens the archive by name, so logrotate (or any
//! rename) starts a new file without a restart.

use tracing::{error, info};
use wschat_core::Room;

/// Reopens the room's log on every SIGHUP, for as long as the server runs.
pub(crate) async fn reopen_on_hangup(room: Room) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            error!("cannot listen for SIGHUP; the archive will not be reopened on rotation");
            return;
        };
        while hangups.recv().await.is_some() {
            // Reopening waits for the batch being written, which takes as
            // long as the disk does: never on a runtime worker.
            let room = room.clone();
            match tokio::task::spawn_blocking(move || room.reopen_log()).await {
                Ok(Ok(())) => info!("SIGHUP: archive reopened"),
                Ok(Err(e)) => error!(error = %e, "SIGHUP: cannot reopen the archive"),
                Err(e) => error!(error = %e, "SIGHUP: reopening the archive failed"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = room;
}
