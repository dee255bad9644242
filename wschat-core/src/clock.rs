//! Where `tim` comes from: a [`Clock`] the room reads, and the stamp format
//! (UTC, RFC 3339, nanoseconds, `Z`).
//!
//! The clock is a trait so tests can set the time (`ManualClock`, with the
//! `test-util` feature); the room, not the clock, guarantees that stamps
//! never go backwards in relay order.

#[cfg(any(test, feature = "test-util"))]
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};

/// A source of the current UTC time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
///
/// ```
/// use wschat_core::{Clock, SystemClock};
///
/// assert!(SystemClock.now().timestamp() > 1_600_000_000);
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that shows whatever it was last set to, for tests (with the
/// `test-util` feature).
///
/// ```
/// use wschat_core::{Clock, ManualClock};
///
/// let t = "2020-08-11T22:26:58.118678679Z".parse().unwrap();
/// let clock = ManualClock::new(t);
/// assert_eq!(clock.now(), t);
/// ```
#[cfg(any(test, feature = "test-util"))]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

#[cfg(any(test, feature = "test-util"))]
impl ManualClock {
    /// A clock stopped at `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock(Mutex::new(now))
    }

    /// Moves the clock to `now`, backwards too.
    pub fn set(&self, now: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = now;
    }
}

#[cfg(any(test, feature = "test-util"))]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Formats a stamp as the protocol's `tim`: RFC 3339, UTC, nanoseconds, `Z`.
///
/// ```
/// let t = "2020-08-11T22:26:58.1Z".parse().unwrap();
/// assert_eq!(wschat_core::format_tim(t), "2020-08-11T22:26:58.100000000Z");
/// ```
pub fn format_tim(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Reads a cursor: a `tim` as relayed, or any RFC 3339 time with its
/// offset (`Z` or `±hh:mm`), with or without a fraction. Anything else is
/// refused, with why.
///
/// ```
/// use wschat_core::{format_tim, parse_tim};
///
/// let t = parse_tim("2020-08-11T23:26:58.5+01:00").unwrap();
/// assert_eq!(format_tim(t), "2020-08-11T22:26:58.500000000Z");
/// assert!(parse_tim("2020-08-11T22:26:58").is_err(), "no offset");
/// assert!(parse_tim("yesterday").is_err());
/// ```
pub fn parse_tim(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time with an offset ({e})"))
}
