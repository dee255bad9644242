//! The log seam: where committed messages go before anyone sees them.
//!
//! "The room is a log, fan-out follows the log": the room appends each
//! stamped message to its log and only then hands it to members, so
//! whatever a log promises (durability, for a file) holds for every message
//! any member received, and the log's order is the order every member sees.
//!
//! Two kinds of log plug in here:
//!
//! * a [`Log`] the room orders itself: [`MemoryLog`] (the default, which
//!   keeps nothing beyond the room's history), [`Archive`] (a JSON Lines
//!   file) and [`ArchiveDir`] (a JSON Lines file per UTC day). The room
//!   appends batches to it from one writer and relays each batch once it is
//!   written.
//! * a [`SharedLog`] that orders messages itself, shared by several rooms
//!   (the server's Redis stream): the room hands it each stamped message in
//!   stamp order and relays only what the transport reads back from it
//!   through [`Room::deliver`](crate::Room::deliver), which goes through the
//!   room's own [`Log`] first (an archive of what this room relayed).

mod archive;
mod archive_dir;
mod lines;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::error::LogError;
use crate::frame::Frame;

pub use archive::Archive;
pub use archive_dir::ArchiveDir;

/// Storage the room writes every relayed message to, in relay order.
///
/// The room calls `append` with every message stamped since the last call
/// (group commit: while one batch is being written, the next one gathers;
/// a log with a writer thread also waits up to 250 µs for more while
/// messages stream in), from one writer at a time, and relays a batch only
/// once `append` has returned `Ok`. An error makes each message of the
/// batch fail with `unavailable`; none of them is relayed.
///
/// A log whose `append` may block (a disk) is written from a thread of the
/// room's own, so a slow or hung disk holds only the publishers awaiting
/// it; one that never blocks ([`blocks`](Self::blocks) is `false`) is
/// written in place by the publisher.
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
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let log = std::sync::Arc::new(Recorder::default());
/// let room = Room::with_log(RoomConfig::default(), log.clone()).unwrap();
/// room.publish(r#"{"usr":"a","msg":"hi"}"#).await.unwrap();
/// assert_eq!(log.0.lock().unwrap().len(), 1);
/// # });
/// ```
pub trait Log: Send + Sync + 'static {
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

    /// Whether `append` may block (waits for a disk or a network): such a
    /// log gets a writer thread of its own. The default is `true`.
    fn blocks(&self) -> bool {
        true
    }

    /// Up to `limit` stored messages whose `tim` is strictly after `after`
    /// (from the oldest when `None`), oldest first: the cursor reads of
    /// resume and the archive over HTTP. `None` when the log keeps nothing
    /// to read back (the room's in-memory history is then all there is),
    /// which is the default. May block; call it where blocking is allowed.
    fn read_after(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        let _ = (after, limit);
        Ok(None)
    }

    /// Up to `limit` stored messages whose `tim` is strictly before
    /// `before` (up to the newest when `None`), oldest first: the last
    /// `limit` of them. `None` as for [`read_after`](Self::read_after).
    fn read_before(
        &self,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        let _ = (before, limit);
        Ok(None)
    }

    /// Calls `each` with the text of every stored message, oldest first:
    /// how the room rebuilds, at start, the state it derives from the log
    /// (retractions and mutes; README, "Moderation"). The default pages
    /// through [`read_after`](Self::read_after); a file reads itself once,
    /// front to back. May block.
    fn scan(&self, each: &mut dyn FnMut(&str)) -> Result<(), LogError> {
        scan_pages(|after, limit| self.read_after(after, limit), each)
    }
}

/// How many messages a paged [`Log::scan`] reads at a time.
const SCAN_PAGE: usize = 1000;

/// [`Log::scan`] by pages of `read_after`, until a page comes back short.
pub(crate) fn scan_pages(
    mut read_after: impl FnMut(Option<DateTime<Utc>>, usize) -> Result<Option<Vec<Frame>>, LogError>,
    each: &mut dyn FnMut(&str),
) -> Result<(), LogError> {
    let mut after = None;
    loop {
        let Some(page) = read_after(after, SCAN_PAGE)? else {
            return Ok(());
        };
        for frame in &page {
            each(frame.as_str());
        }
        match page.last().and_then(Frame::tim) {
            Some(last) if page.len() == SCAN_PAGE => after = Some(last),
            _ => return Ok(()),
        }
    }
}

/// The default log: stores nothing; the room's history ring is all there
/// is. Appending never blocks, so publishers commit in place.
///
/// ```
/// use wschat_core::{Log, MemoryLog};
///
/// assert!(MemoryLog.recent(10).unwrap().is_empty());
/// assert!(!MemoryLog.blocks());
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

    fn blocks(&self) -> bool {
        false
    }
}

/// A log that orders messages itself and is shared by several rooms, such
/// as a stream in a server that several processes write to.
///
/// The room calls [`append`](Self::append) under its ordering lock, in
/// stamp order, so an implementation that writes its queue in order keeps
/// each publisher's order (and the room's stamp order) in the shared log.
/// The room relays nothing itself: the transport reads the shared log and
/// hands what it reads, in the log's order, to
/// [`Room::deliver`](crate::Room::deliver).
///
/// ```
/// use std::sync::Mutex;
/// use wschat_core::{Ack, Frame, Room, RoomConfig, SharedLog, Stamped};
///
/// /// Accepts everything; a real one would write to a server.
/// #[derive(Default)]
/// struct Queue(Mutex<Vec<Frame>>);
///
/// impl SharedLog for Queue {
///     fn append(&self, entry: Stamped, ack: Ack) {
///         self.0.lock().unwrap().push(entry.frame().clone());
///         ack.send(Ok(()));
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let shared = std::sync::Arc::new(Queue::default());
/// let room = Room::with_shared_log(RoomConfig::default(), shared.clone());
/// let mut m = room.join();
/// room.publish(r#"{"usr":"a","msg":"hi"}"#).await.unwrap();
/// assert_eq!(m.try_recv(), Ok(None), "relayed only once read back");
/// let written = shared.0.lock().unwrap().clone();
/// room.deliver(written.clone()).await.unwrap();
/// assert_eq!(m.try_recv(), Ok(Some(written[0].clone())));
/// # });
/// ```
pub trait SharedLog: Send + Sync + 'static {
    /// Queues `entry` to be appended after every entry queued before it,
    /// and answers through `ack` once it is appended (or cannot be). Called
    /// with the room's ordering lock held: must not block.
    fn append(&self, entry: Stamped, ack: Ack);

    /// Reads the shared log back by cursor, as [`Log::read_after`]; `None`
    /// (the default) when it cannot be read back. May block.
    fn read_after(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        let _ = (after, limit);
        Ok(None)
    }

    /// Reads the shared log back by cursor, as [`Log::read_before`].
    fn read_before(
        &self,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        let _ = (before, limit);
        Ok(None)
    }
}

/// A stamped message on its way to a [`SharedLog`]. Another writer of the
/// shared log may be ahead of this room's clock: the log can then move the
/// message's `tim` past what it holds ([`restamp`](Self::restamp)), so
/// `tim` strictly increases in the shared log's order, whatever the
/// writers' clocks say.
#[derive(Debug, Clone)]
pub struct Stamped {
    frame: Frame,
    tim: DateTime<Utc>,
    /// The publisher's frame, to render again with another `tim`.
    source: Box<str>,
}

impl Stamped {
    pub(crate) fn new(frame: Frame, tim: DateTime<Utc>, source: &str) -> Self {
        Stamped {
            frame,
            tim,
            source: source.into(),
        }
    }

    /// The message as it is to be relayed.
    pub fn frame(&self) -> &Frame {
        &self.frame
    }

    /// Its `tim`.
    pub fn tim(&self) -> DateTime<Utc> {
        self.tim
    }

    /// Gives the message another `tim`, rendering it again.
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use wschat_core::{Ack, Room, RoomConfig, SharedLog, Stamped};
    ///
    /// #[derive(Default)]
    /// struct Keep(Mutex<Vec<Stamped>>);
    /// impl SharedLog for Keep {
    ///     fn append(&self, entry: Stamped, ack: Ack) {
    ///         self.0.lock().unwrap().push(entry);
    ///         ack.send(Ok(()));
    ///     }
    /// }
    /// let keep = Arc::new(Keep::default());
    /// let room = Room::with_shared_log(RoomConfig::default(), keep.clone());
    /// let _ = room.publish(r#"{"usr":"a","msg":"m","jwt":"x"}"#);
    /// let mut entry = keep.0.lock().unwrap().pop().unwrap();
    /// entry.restamp("2030-01-01T00:00:00Z".parse().unwrap());
    /// assert_eq!(entry.frame().as_str(),
    ///            r#"{"usr":"a","msg":"m","tim":"2030-01-01T00:00:00.000000000Z"}"#);
    /// ```
    pub fn restamp(&mut self, tim: DateTime<Utc>) {
        if let Ok(message) = crate::message::Message::parse(&self.source) {
            self.frame = Frame::from(message.render(&crate::clock::format_tim(tim)));
            self.tim = tim;
        }
    }
}

/// The answer a log owes one publisher: whether its message was
/// committed. Dropping it unanswered tells the publisher its message was
/// not (`unavailable`).
#[derive(Debug)]
pub struct Ack(pub(crate) oneshot::Sender<Result<(), LogError>>);

impl Ack {
    /// Tells the publisher the outcome; a publisher that stopped waiting
    /// is not an error.
    pub fn send(self, outcome: Result<(), LogError>) {
        let _ = self.0.send(outcome);
    }
}
