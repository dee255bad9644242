//! Gives the memory that bursts of connections leave free inside the heap
//! back to the system once the burst has settled (README, "Where a waiting
//! connection's memory goes").
//!
//! Each handshake's short-lived buffers (hyper's 8 KiB read and write
//! buffers, its connection task) are freed between the long-lived
//! allocations of the connections opened meanwhile. glibc keeps those
//! holes resident until `malloc_trim` hands their pages back, so after a
//! burst the server asks for that once, on a blocking thread. Elsewhere
//! (another allocator or C library) this does nothing.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::server::App;

/// How often the connection counts are looked at: a burst has settled
/// when they did not move for this long.
const TICK: Duration = Duration::from_secs(1);
/// The least time between two trims: walking a large heap holds the
/// allocator's locks for a while, so a steady trickle of connections
/// trims at most this often.
const MIN_GAP: u32 = 10;

/// Decides when to trim from the connection counts seen at each tick.
#[derive(Debug, Default)]
pub(crate) struct Settle<T> {
    last: Option<T>,
    /// Connections came or went since the last trim.
    moved: bool,
    /// Ticks since the last trim; `None` before the first.
    since_trim: Option<u32>,
}

impl<T: PartialEq> Settle<T> {
    /// Takes the counts at one tick; whether to trim now: they moved since
    /// the last trim, not since the last tick, and the last trim is at
    /// least [`MIN_GAP`] ticks ago.
    pub(crate) fn tick(&mut self, counts: T) -> bool {
        let moving = self.last.as_ref().is_some_and(|last| *last != counts);
        self.last = Some(counts);
        self.moved |= moving;
        if let Some(ticks) = &mut self.since_trim {
            *ticks = ticks.saturating_add(1);
        }
        let due = self.since_trim.is_none_or(|ticks| ticks >= MIN_GAP);
        if self.moved && !moving && due {
            self.moved = false;
            self.since_trim = Some(0);
            return true;
        }
        false
    }
}

/// Trims after each burst of connections until the server is gone.
pub(crate) async fn after_bursts(app: Weak<App>) {
    let mut settle = Settle::default();
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(app) = app.upgrade() else { return };
        let counts = counts(&app);
        drop(app);
        if settle.tick(counts) {
            let _ = tokio::task::spawn_blocking(release_free_pages).await;
        }
    }
}

/// Connections accepted so far and upgraded connections open now: when
/// neither moved, no handshake ran and none closed.
fn counts(app: &Arc<App>) -> (u64, usize) {
    (
        app.pending.accepted(),
        app.connections.load(Ordering::Relaxed),
    )
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free_pages() {
    // SAFETY: `malloc_trim` only walks the allocator's own free lists,
    // under its locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free_pages() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_a_burst_settles() {
        let mut settle = Settle::default();
        assert!(!settle.tick(0), "nothing happened yet");
        assert!(!settle.tick(5), "a burst is under way");
        assert!(!settle.tick(9), "still under way");
        assert!(settle.tick(9), "settled: trim");
        assert!(!settle.tick(9), "once");
        assert!(!settle.tick(9));
    }

    #[test]
    fn a_trickle_trims_at_most_every_min_gap_ticks() {
        let mut settle = Settle::default();
        let mut count = 0;
        let mut trims = 0;
        for tick in 0..100 {
            // A connection every other tick.
            if tick % 2 == 0 {
                count += 1;
            }
            if settle.tick(count) {
                trims += 1;
            }
        }
        assert!(trims > 0);
        assert!(trims <= 100 / MIN_GAP as usize, "{trims} trims");
    }
}
