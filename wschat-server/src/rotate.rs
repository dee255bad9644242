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
            match room.reopen_log() {
                Ok(()) => info!("SIGHUP: archive reopened"),
                Err(e) => error!(error = %e, "SIGHUP: cannot reopen the archive"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = room;
}
