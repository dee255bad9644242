//! The signals that stop the server: SIGINT (Ctrl-C) and SIGTERM.

/// Resolves when the process receives SIGINT or SIGTERM.
///
/// The handlers are installed by this call, not when the future is first
/// polled, so a signal that comes right after start-up is never the
/// default action (death with no close frames). Call it inside the
/// runtime. A handler that cannot be installed counts as a signal that
/// never comes, so the server still runs.
pub fn signal() -> impl std::future::Future<Output = ()> {
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

/// Resolves once the server has started shutting down (the flag is set, or
/// its sender is gone).
pub(crate) async fn requested(flag: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}
