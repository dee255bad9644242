//! Warnings that clients can cause over and over, such as a log that
//! cannot be read, which every resume and every `GET /messages` would
//! report: each is logged at most once per [`INTERVAL`], saying how many
//! were left out since, so that no client can flood the log.

use std::fmt::Display;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

/// The least time between two warnings of one kind.
const INTERVAL: Duration = Duration::from_secs(10);

/// When one kind of warning was last logged, and how many were left out
/// since.
struct Throttle(Mutex<(Option<Instant>, u64)>);

impl Throttle {
    const fn new() -> Self {
        Throttle(Mutex::new((None, 0)))
    }

    /// How many were left out, when a warning may be logged now.
    fn ready(&self) -> Option<u64> {
        let mut state = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < INTERVAL => {
                state.1 += 1;
                None
            }
            _ => {
                let left_out = state.1;
                *state = (Some(now), 0);
                Some(left_out)
            }
        }
    }
}

static UNREADABLE_LOG: Throttle = Throttle::new();

/// Warns that the archive (or the Redis stream) could not be read for
/// `reading` ("a resume", "GET /messages").
pub(crate) fn unreadable_log(error: &dyn Display, reading: &str) {
    if let Some(left_out) = UNREADABLE_LOG.ready() {
        warn!(%error, left_out, "cannot read the archive for {reading}");
    }
}

static OVERTAKEN: Throttle = Throttle::new();

/// Warns that a batch was refused because other instances kept writing
/// ahead of it: under a load that causes it, it would come every batch.
pub(crate) fn overtaken() {
    if let Some(left_out) = OVERTAKEN.ready() {
        warn!(
            left_out,
            "backplane: other instances kept writing ahead of a batch; its publishers were answered unavailable"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warning_per_interval_counting_the_rest() {
        let throttle = Throttle::new();
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        throttle.0.lock().unwrap().0 = Instant::now().checked_sub(INTERVAL);
        assert_eq!(throttle.ready(), Some(2));
    }
}
