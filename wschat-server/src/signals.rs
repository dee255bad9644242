//! The signals the server answers: SIGINT (Ctrl-C) and SIGTERM stop it,
//! SIGHUP reopens the archive (README, Security) and reads the TLS
//! certificate and key again (README, "TLS").
//!
//! Each handler is installed when its function is called, not when the
//! returned future is first polled, so a signal that comes right after
//! start-up never gets its default action (death with no close frames).

use std::future::Future;
use std::sync::Arc;

use tracing::{error, info};
use wschat_core::Room;

use crate::tls::{self, Tls};

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
/// reading the TLS certificate and key again when `tls` is set, so a
/// renewed certificate serves new handshakes while open connections go
/// on; reopening the room's log by name when `archive` is set, so
/// logrotate (or any rename) starts a new file without a restart.
///
/// The handler is installed whatever the configuration, because SIGHUP's
/// default action ends the process: with neither, the signal
/// (`systemctl reload`, a stray `kill -HUP`) is logged and ignored.
pub(crate) fn on_hangup(
    room: Room,
    archive: bool,
    tls: Option<Arc<Tls>>,
) -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let hangups = signal(SignalKind::hangup());
        async move {
            let Ok(mut hangups) = hangups else {
                error!(
                    "cannot listen for SIGHUP; neither the archive nor the certificate will be reloaded"
                );
                return;
            };
            while hangups.recv().await.is_some() {
                if let Some(tls) = &tls {
                    reload_certificate(tls.clone()).await;
                }
                if !archive {
                    if tls.is_none() {
                        info!("SIGHUP: no archive to reopen, no certificate to reload; ignored");
                    }
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
        let _ = (room, archive, tls);
        std::future::ready(())
    }
}

/// Reads the certificate and key again (off the runtime's workers: a file
/// read can block); a pair that cannot be loaded leaves the one in use.
async fn reload_certificate(tls: Arc<Tls>) {
    let reloading = tls.clone();
    match tokio::task::spawn_blocking(move || reloading.reload()).await {
        Ok(Ok(expires)) => tls::log_expiry(expires, "SIGHUP: certificate reloaded"),
        Ok(Err(e)) => error!(
            error = %e,
            "SIGHUP: cannot reload the certificate; still serving the one from before"
        ),
        Err(e) => error!(error = %e, "SIGHUP: reloading the certificate failed"),
    }
}
