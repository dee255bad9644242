//! The room's log: where committed messages go before anyone sees them.
//!
//! "The room is a log, fan-out follows the log": the room appends each
//! stamped message to its [`Log`] and only then hands it to members, so
//! whatever a log promises (durability, for a file) holds for every message
//! any member received. The default [`MemoryLog`] keeps nothing beyond the
//! room's own history ring.

use crate::error::LogError;
use crate::frame::Frame;

/// Storage the room writes every relayed message to, in relay order.
///
/// The room calls `append` with every message stamped since the last call
/// (group commit: while one batch is being written, the next one gathers),
/// one call at a time, and relays a batch only once `append` has returned
/// `Ok`. An error makes each message of the batch fail with `unavailable`;
/// none of them is relayed.
///
/// ```
/// use std::sync::Mutex;
/// use wschat_core::{Frame, Log, LogError, Room, RoomConfig};
///
/// #[derive(Default)]
/// struct Recorder(Mutex<Vec<String>>);
///
/// impl Log for Recorder {
///     fn append(&self, frames: &[Frame]) -> Result<(), LogError> {
///         let mut seen = self.0.lock().unwrap();
///         seen.extend(frames.iter().map(|f| f.to_string()));
///         Ok(())
///     }
///     fn recent(&self, _n: usize) -> Result<Vec<Frame>, LogError> {
///         Ok(Vec::new())
///     }
/// }
///
/// let log = std::sync::Arc::new(Recorder::default());
/// let room = Room::with_log(RoomConfig::default(), log.clone()).unwrap();
/// room.publish(r#"{"usr":"a","msg":"hi"}"#).unwrap();
/// assert_eq!(log.0.lock().unwrap().len(), 1);
/// ```
pub trait Log: Send + Sync {
    /// Stores `frames`, in order, before they are relayed.
    fn append(&self, frames: &[Frame]) -> Result<(), LogError>;

    /// The last `n` stored messages, oldest first, to fill the history at
    /// start.
    fn recent(&self, n: usize) -> Result<Vec<Frame>, LogError>;

    /// Reopens the storage by name (after log rotation renamed it); the
    /// default does nothing.
    fn reopen(&self) -> Result<(), LogError> {
        Ok(())
    }
}

/// The default log: stores nothing; the room's history ring is all there is.
///
/// ```
/// use wschat_core::{Log, MemoryLog};
///
/// assert!(MemoryLog.recent(10).unwrap().is_empty());
/// ```
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryLog;

impl Log for MemoryLog {
    fn append(&self, _frames: &[Frame]) -> Result<(), LogError> {
        Ok(())
    }

    fn recent(&self, _n: usize) -> Result<Vec<Frame>, LogError> {
        Ok(Vec::new())
    }
}
