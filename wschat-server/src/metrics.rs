//! What the operator sees at `/metrics` (Prometheus text format) and
//! `/healthz`.
//!
//! Counters are atomics; connection tasks add per write batch, not per
//! delivery, so the hot path does not contend on one cache line.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wschat_core::{Action, Moderated, PublishError, format_tim};

/// Every rejection code the server can send (README, Errors and close
/// codes); each has its series from the start, at 0, so rates and alerts
/// work before the first rejection.
const REJECTION_CODES: [&str; 7] = [
    "invalid_json",
    "invalid_message",
    "unauthorized",
    "rate_limited",
    "unsupported",
    "unavailable",
    "muted",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

/// Every kind of moderation action (README, "Moderation"), each with its
/// series from the start.
const ACTIONS: [&str; 3] = ["retract", "mute", "unmute"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

/// The server's figures.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    connections: Gauge<i64, AtomicI64>,
    received: Counter<u64, AtomicU64>,
    relayed: Counter<u64, AtomicU64>,
    rejected: Family<CodeLabel, Counter<u64, AtomicU64>>,
    moderation: Family<ActionLabel, Counter<u64, AtomicU64>>,
    bytes_sent: Counter<u64, AtomicU64>,
    dropped_slow: Counter<u64, AtomicU64>,
    history: Gauge<i64, AtomicI64>,
    backplane_reconnects: Counter<u64, AtomicU64>,
    pending: Gauge<i64, AtomicI64>,
    pending_evicted: Counter<u64, AtomicU64>,
    /// The served certificate's expiry; registered only with TLS on, so
    /// an alert on it never fires for a server without a certificate.
    tls_cert_expiry: Gauge<i64, AtomicI64>,
    /// Whether the last publish failed as `unavailable`, so the log says
    /// so once per change, not once per message.
    unavailable: AtomicBool,
}

impl Metrics {
    /// The registry; `tls` says whether a certificate's expiry is served.
    pub(crate) fn new(tls: bool) -> Self {
        let mut registry = Registry::with_prefix("wschat");
        let metrics = Metrics {
            connections: Gauge::default(),
            received: Counter::default(),
            relayed: Counter::default(),
            rejected: Family::default(),
            moderation: Family::default(),
            bytes_sent: Counter::default(),
            dropped_slow: Counter::default(),
            history: Gauge::default(),
            backplane_reconnects: Counter::default(),
            pending: Gauge::default(),
            pending_evicted: Counter::default(),
            tls_cert_expiry: Gauge::default(),
            unavailable: AtomicBool::new(false),
            registry: Registry::default(),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            metrics.connections.clone(),
        );
        registry.register(
            "messages_received",
            "Frames received from clients",
            metrics.received.clone(),
        );
        registry.register(
            "messages_relayed",
            "Messages accepted and relayed",
            metrics.relayed.clone(),
        );
        for code in REJECTION_CODES {
            let _ = metrics.rejected.get_or_create(&CodeLabel { code });
        }
        registry.register(
            "messages_rejected",
            "Frames rejected, by error code",
            metrics.rejected.clone(),
        );
        for action in ACTIONS {
            let _ = metrics.moderation.get_or_create(&ActionLabel { action });
        }
        registry.register(
            "moderation_actions",
            "Moderation actions accepted from this instance's clients, by action",
            metrics.moderation.clone(),
        );
        registry.register(
            "bytes_sent",
            "Message bytes written to clients",
            metrics.bytes_sent.clone(),
        );
        registry.register(
            "clients_dropped_slow",
            "Clients closed because their send queue was full",
            metrics.dropped_slow.clone(),
        );
        registry.register(
            "history_messages",
            "Messages held for replay",
            metrics.history.clone(),
        );
        registry.register(
            "backplane_reconnects",
            "Times the Redis backplane came back after being lost",
            metrics.backplane_reconnects.clone(),
        );
        registry.register(
            "pending_connections",
            "TCP connections not upgraded (yet): plain HTTP, or a handshake under way",
            metrics.pending.clone(),
        );
        registry.register(
            "pending_evicted",
            "Connections not upgraded that were closed to make room for a newer one",
            metrics.pending_evicted.clone(),
        );
        if tls {
            registry.register(
                "tls_cert_expiry_timestamp_seconds",
                "When the TLS certificate served now expires (its notAfter), in seconds since the Unix epoch",
                metrics.tls_cert_expiry.clone(),
            );
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
    }

    pub(crate) fn connection_closed(&self) {
        self.connections.dec();
    }

    pub(crate) fn received(&self) {
        self.received.inc();
    }

    pub(crate) fn relayed(&self) {
        self.relayed.inc();
        if self.unavailable.load(Ordering::Relaxed)
            && self.unavailable.swap(false, Ordering::Relaxed)
        {
            tracing::info!("relaying again");
        }
    }

    pub(crate) fn rejected(&self, error: &PublishError) {
        if let PublishError::Unavailable(reason) = error
            && !self.unavailable.swap(true, Ordering::Relaxed)
        {
            tracing::error!(%reason, "cannot relay: publishing answers unavailable until this clears");
        }
        self.rejected
            .get_or_create(&CodeLabel { code: error.code() })
            .inc();
    }

    /// Counts a moderation action this instance's client sent, and logs
    /// who did what (names and times, never the token, which the relayed
    /// frame no longer holds).
    pub(crate) fn moderated(&self, acted: &Moderated) {
        let moderator = acted.moderator();
        let at = format_tim(acted.tim());
        let action = match acted.action() {
            Action::Retract { tim } => {
                let retracted = format_tim(*tim);
                tracing::info!(
                    moderator,
                    tim = at,
                    retracted,
                    "moderation: {moderator:?} retracted the message of {retracted}"
                );
                "retract"
            }
            Action::Mute { usr, seconds: 0 } => {
                tracing::info!(
                    moderator,
                    tim = at,
                    usr,
                    "moderation: {moderator:?} lifted the mute on {usr:?}"
                );
                "unmute"
            }
            Action::Mute { usr, seconds } => {
                tracing::info!(
                    moderator,
                    tim = at,
                    usr,
                    seconds,
                    "moderation: {moderator:?} muted {usr:?} for {seconds} s"
                );
                "mute"
            }
            _ => return,
        };
        self.moderation.get_or_create(&ActionLabel { action }).inc();
    }

    pub(crate) fn sent(&self, bytes: usize) {
        self.bytes_sent.inc_by(bytes as u64);
    }

    pub(crate) fn backplane_reconnected(&self) {
        self.backplane_reconnects.inc();
    }

    pub(crate) fn dropped_slow(&self) {
        self.dropped_slow.inc();
    }

    pub(crate) fn pending_evicted(&self) {
        self.pending_evicted.inc();
    }

    /// Records when the certificate served now expires.
    pub(crate) fn tls_cert_expires(&self, unix_secs: i64) {
        self.tls_cert_expiry.set(unix_secs);
    }

    /// The Prometheus text exposition, with the history size and the
    /// connections not upgraded as of now.
    pub(crate) fn encode(&self, history: usize, pending: usize) -> String {
        self.history.set(history as i64);
        self.pending.set(pending as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_the_core_sends_has_a_series() {
        let s = String::new;
        for error in [
            PublishError::InvalidJson(s()),
            PublishError::InvalidMessage(s()),
            PublishError::Unauthorized(s()),
            PublishError::RateLimited,
            PublishError::Unsupported,
            PublishError::Unavailable(s()),
            PublishError::Muted(s()),
        ] {
            assert!(REJECTION_CODES.contains(&error.code()), "{}", error.code());
        }
    }
}
