//! [`RoomConfig`]: how a room behaves, with the server's defaults.

use crate::jwt::JwtConfig;
use crate::rate::RateLimit;

/// How a [`Room`](crate::Room) behaves; the defaults are the server's.
///
/// ```
/// use wschat_core::{JwtConfig, RateLimit, RoomConfig};
///
/// let config = RoomConfig::default()
///     .history(100)
///     .send_queue(256)
///     .rate_limit(RateLimit::new(5.0, 10))
///     .jwt(Some(JwtConfig::new("secret")));
/// # let _ = config;
/// ```
#[derive(Debug, Clone)]
pub struct RoomConfig {
    pub(crate) history: usize,
    pub(crate) send_queue: usize,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) jwt: Option<JwtConfig>,
}

impl Default for RoomConfig {
    /// No history, 1024 queued messages per member, 20 messages/s with
    /// bursts of 40, anyone may publish.
    fn default() -> Self {
        RoomConfig {
            history: Self::DEFAULT_HISTORY,
            send_queue: Self::DEFAULT_SEND_QUEUE as usize,
            rate_limit: RateLimit::new(Self::DEFAULT_RATE, Self::DEFAULT_BURST),
            jwt: None,
        }
    }
}

impl RoomConfig {
    /// The default history: none. The server's `--history` default too,
    /// so the two cannot drift apart.
    pub const DEFAULT_HISTORY: usize = 0;
    /// The default ring size (`--send-queue`).
    pub const DEFAULT_SEND_QUEUE: u32 = 1024;
    /// The default publish rate in messages per second (`--rate`).
    pub const DEFAULT_RATE: f64 = 20.0;
    /// The default burst above the rate (`--burst`).
    pub const DEFAULT_BURST: u32 = 40;

    /// Replays the last `n` messages to each member that joins.
    pub fn history(mut self, n: usize) -> Self {
        self.history = n;
        self
    }

    /// How many messages a member may fall behind before it counts as too
    /// slow: the size of the room's ring, rounded up to a power of two.
    pub fn send_queue(mut self, n: usize) -> Self {
        self.send_queue = n.max(1);
        self
    }

    /// Each member's publish rate; `None` for no limit.
    pub fn rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    /// JWT mode: `Some` requires a valid token on every published message.
    pub fn jwt(mut self, jwt: Option<JwtConfig>) -> Self {
        self.jwt = jwt;
        self
    }
}
