//! Per-member publish rate: a token bucket, so a client may send a burst
//! and then a steady rate, and a flood costs the room nothing beyond the
//! rejection.

use std::time::Instant;

/// A rate limit: `rate` messages per second on average, `burst` at once.
///
/// ```
/// use wschat_core::RateLimit;
///
/// assert!(RateLimit::new(0.0, 40).is_none(), "rate 0 turns the limit off");
/// assert!(RateLimit::new(20.0, 40).is_some());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
}

impl RateLimit {
    /// The limit, or `None` (no limit) when `rate` is zero or less.
    /// A burst below one is raised to one, so the limit can be met.
    pub fn new(rate: f64, burst: u32) -> Option<Self> {
        (rate > 0.0 && rate.is_finite()).then(|| RateLimit {
            rate,
            burst: f64::from(burst.max(1)),
        })
    }
}

/// One member's bucket, full at the start.
///
/// ```
/// use std::time::{Duration, Instant};
/// use wschat_core::{RateLimit, TokenBucket};
///
/// let t0 = Instant::now();
/// let mut bucket = TokenBucket::new(RateLimit::new(1.0, 2).unwrap(), t0);
/// assert!(bucket.try_take(t0) && bucket.try_take(t0));
/// assert!(!bucket.try_take(t0));
/// assert!(bucket.try_take(t0 + Duration::from_secs(1)));
/// ```
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at time `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        TokenBucket {
            limit,
            tokens: limit.burst,
            last: now,
        }
    }

    /// Takes one token if there is one at time `now`.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + elapsed * self.limit.rate).min(self.limit.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RateLimit::new(10.0, 5).unwrap(), t0);
        assert_eq!((0..10).filter(|_| b.try_take(t0)).count(), 5);
        let t1 = t0 + Duration::from_millis(300);
        assert_eq!((0..10).filter(|_| b.try_take(t1)).count(), 3);
        let t2 = t1 + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| b.try_take(t2)).count(), 5);
    }

    #[test]
    fn a_clock_going_backwards_adds_nothing() {
        let t1 = Instant::now() + Duration::from_secs(1);
        let mut b = TokenBucket::new(RateLimit::new(1.0, 1).unwrap(), t1);
        assert!(b.try_take(t1));
        assert!(!b.try_take(t1 - Duration::from_millis(900)));
    }
}
