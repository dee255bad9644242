//! The [`Room`]: members, ordering, fan-out and history.
//!
//! A published frame is parsed, authorized, stamped, rendered once and
//! appended to the log; only then is it put in the room's ring of recent
//! messages. Batches are written and relayed one at a time, in stamp order,
//! so every member sees one order; joining waits only for a relay, never
//! for the log's write (a disk can take its time). Members
//! read the ring at their own pace ("fan-out follows the log"): publishing
//! costs the same for ten members or ten thousand, and the room never waits
//! for anyone. A member that falls a whole ring behind has lost messages,
//! and is told it was too slow. Writing to sockets is the transport's
//! business, outside the lock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::broadcast::{self, error::RecvError as RingError, error::TryRecvError};

use crate::clock::{Clock, SystemClock, format_tim};
use crate::error::{LogError, PublishError, RecvError};
use crate::frame::Frame;
use crate::jwt::{Jwt, JwtConfig};
use crate::log::{Log, MemoryLog};
use crate::message::Message;
use crate::rate::{RateLimit, TokenBucket};

/// How a [`Room`] behaves; the defaults are the server's.
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
    history: usize,
    send_queue: usize,
    rate_limit: Option<RateLimit>,
    jwt: Option<JwtConfig>,
}

impl Default for RoomConfig {
    /// No history, 1024 queued messages per member, 20 messages/s with
    /// bursts of 40, anyone may publish.
    fn default() -> Self {
        RoomConfig {
            history: 0,
            send_queue: 1024,
            rate_limit: RateLimit::new(20.0, 40),
            jwt: None,
        }
    }
}

impl RoomConfig {
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

/// One public room. Cheap to clone; clones share the room.
///
/// ```
/// use wschat_core::{Room, RoomConfig};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let room = Room::new(RoomConfig::default());
/// let mut ann = room.join();
/// let mut bob = room.join();
/// ann.publish(r#"{"usr":"ann","msg":"hi bob"}"#).unwrap();
/// let seen = bob.recv().await.unwrap();
/// assert!(seen.as_str().starts_with(r#"{"usr":"ann","msg":"hi bob","tim":""#));
/// assert_eq!(ann.recv().await.unwrap(), seen, "the sender gets its own message");
/// # });
/// ```
#[derive(Clone)]
pub struct Room {
    shared: Arc<Shared>,
}

struct Shared {
    config: RoomConfig,
    jwt: Option<Jwt>,
    clock: Arc<dyn Clock>,
    log: Arc<dyn Log>,
    /// Taken briefly: stamps and queues a message for the log.
    order: Mutex<Order>,
    /// Held while a batch is written to the log, which may take as long as
    /// a disk does; nothing but publishing waits for it.
    commit: Mutex<Commit>,
    /// Taken briefly, to relay a written batch or to join.
    state: Mutex<State>,
}

/// Messages stamped, in order, and not yet handed to the log.
struct Order {
    last_tim: DateTime<Utc>,
    next_seq: u64,
    pending: Vec<(u64, Frame)>,
}

/// How far the log has got.
struct Commit {
    /// Every message numbered below this has been written (or has failed).
    committed: u64,
    /// Why the log refused messages whose publishers have not looked yet.
    failed: HashMap<u64, LogError>,
}

/// What the log has committed: the ring members read and the history.
struct State {
    /// `None` once the room is closed.
    ring: Option<broadcast::Sender<Frame>>,
    history: VecDeque<Frame>,
}

impl Room {
    /// An empty room with the in-memory log and the system clock.
    pub fn new(config: RoomConfig) -> Self {
        Self::build(
            config,
            Arc::new(SystemClock),
            Arc::new(MemoryLog),
            Vec::new(),
        )
    }

    /// A room writing to `log`, its history filled from the log's last
    /// messages.
    pub fn with_log(config: RoomConfig, log: Arc<dyn Log>) -> Result<Self, LogError> {
        let recent = log.recent(config.history)?;
        Ok(Self::build(config, Arc::new(SystemClock), log, recent))
    }

    /// A room that reads the time from `clock`, for tests.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wschat_core::{ManualClock, Room, RoomConfig};
    ///
    /// let t = "2020-08-11T22:26:58.118678679Z".parse().unwrap();
    /// let room = Room::with_clock(RoomConfig::default(), Arc::new(ManualClock::new(t)));
    /// let out = room.publish(r#"{"usr":"a","msg":"m"}"#).unwrap();
    /// assert_eq!(out.as_str(), r#"{"usr":"a","msg":"m","tim":"2020-08-11T22:26:58.118678679Z"}"#);
    /// ```
    pub fn with_clock(config: RoomConfig, clock: Arc<dyn Clock>) -> Self {
        Self::build(config, clock, Arc::new(MemoryLog), Vec::new())
    }

    fn build(
        config: RoomConfig,
        clock: Arc<dyn Clock>,
        log: Arc<dyn Log>,
        recent: Vec<Frame>,
    ) -> Self {
        let ring = broadcast::channel(config.send_queue).0;
        let mut history: VecDeque<Frame> = recent.into();
        while history.len() > config.history {
            history.pop_front();
        }
        Room {
            shared: Arc::new(Shared {
                jwt: config.jwt.clone().map(Jwt::new),
                clock,
                log,
                config,
                order: Mutex::new(Order {
                    last_tim: DateTime::<Utc>::MIN_UTC,
                    next_seq: 0,
                    pending: Vec::new(),
                }),
                commit: Mutex::new(Commit {
                    committed: 0,
                    failed: HashMap::new(),
                }),
                state: Mutex::new(State {
                    ring: Some(ring),
                    history,
                }),
            }),
        }
    }

    /// Adds a member. It receives the history, then every message relayed
    /// after this call, with no gap and no duplicate.
    pub fn join(&self) -> Member {
        let state = self.lock();
        let ring = match &state.ring {
            Some(ring) => ring.subscribe(),
            // Closed: a receiver whose sender is already gone.
            None => broadcast::channel(1).1,
        };
        let replay: Vec<Frame> = state.history.iter().cloned().collect();
        drop(state);
        Member {
            replay: replay.into_iter(),
            ring,
            too_slow: false,
            bucket: self
                .shared
                .config
                .rate_limit
                .map(|limit| TokenBucket::new(limit, Instant::now())),
            room: self.clone(),
        }
    }

    /// Publishes a raw text frame on behalf of no member (no rate limit):
    /// validates, authorizes, stamps, logs and relays it, and returns the
    /// relayed frame.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// let room = Room::new(RoomConfig::default());
    /// assert_eq!(room.publish("not json").unwrap_err().code(), "invalid_json");
    /// ```
    pub fn publish(&self, frame: &str) -> Result<Frame, PublishError> {
        self.submit(frame)?.commit()
    }

    /// The first half of [`publish`](Self::publish): validates, authorizes,
    /// stamps and queues the frame for the log, and returns at once. The
    /// message joins the next batch the log writes, whoever writes it; it
    /// is relayed once that batch is written, and the publisher learns the
    /// outcome from [`Pending::commit`]. An async transport can so wait
    /// for its turn without holding a thread while a disk is slow.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// let room = Room::new(RoomConfig::default());
    /// let mut m = room.join();
    /// let pending = room.submit(r#"{"usr":"a","msg":"m"}"#).unwrap();
    /// assert_eq!(m.try_recv(), Ok(None), "queued for the log, not relayed");
    /// let relayed = pending.commit().unwrap();
    /// assert_eq!(m.try_recv(), Ok(Some(relayed)));
    /// ```
    pub fn submit(&self, frame: &str) -> Result<Pending, PublishError> {
        let (seq, frame) = self.stamp(frame, true)?;
        Ok(Pending {
            room: self.clone(),
            seq,
            frame,
        })
    }

    /// Validates, authorizes, stamps and renders a frame without relaying
    /// it: for a log outside the room that orders messages itself (Redis,
    /// shared by several servers) and hands them back to every room through
    /// [`deliver`](Self::deliver). The room's own [`Log`] is not used.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// let room = Room::new(RoomConfig::default());
    /// let mut m = room.join();
    /// let stamped = room.prepare(r#"{"usr":"a","msg":"via elsewhere"}"#).unwrap();
    /// assert_eq!(m.try_recv(), Ok(None), "not relayed yet");
    /// room.deliver([stamped.clone()]);
    /// assert_eq!(m.try_recv(), Ok(Some(stamped)));
    /// ```
    pub fn prepare(&self, frame: &str) -> Result<Frame, PublishError> {
        self.stamp(frame, false).map(|(_, out)| out)
    }

    /// Relays frames an outside log has committed, in its order: they join
    /// the history and reach every member. See [`prepare`](Self::prepare).
    pub fn deliver(&self, frames: impl IntoIterator<Item = Frame>) {
        let mut state = self.lock();
        for frame in frames {
            self.relay(&mut state, frame);
        }
    }

    /// Parses, authorizes, stamps and renders; with `queue`, also numbers
    /// the message and queues it for this room's log.
    fn stamp(&self, frame: &str, queue: bool) -> Result<(u64, Frame), PublishError> {
        let message = Message::parse(frame)?;
        if let Some(jwt) = &self.shared.jwt {
            jwt.authorize(&message)?;
        }
        let mut order = lock(&self.shared.order);
        let tim = self
            .shared
            .clock
            .now()
            .max(order.last_tim + TimeDelta::nanoseconds(1));
        order.last_tim = tim;
        let out = Frame::from(message.render(&format_tim(tim)));
        let seq = order.next_seq;
        if queue {
            order.next_seq += 1;
            order.pending.push((seq, out.clone()));
        }
        Ok((seq, out))
    }

    /// Adds one committed frame to the history and the ring.
    fn relay(&self, state: &mut State, frame: Frame) {
        if self.shared.config.history > 0 {
            if state.history.len() == self.shared.config.history {
                state.history.pop_front();
            }
            state.history.push_back(frame.clone());
        }
        if let Some(ring) = &state.ring {
            // Fails only when nobody is listening.
            let _ = ring.send(frame);
        }
    }

    /// Writes every pending message to the log, then relays them in order.
    /// Only the commit lock is held while the log writes: joining members,
    /// the history and the member count never wait for a disk.
    fn commit(&self, commit: &mut Commit) {
        let batch = std::mem::take(&mut lock(&self.shared.order).pending);
        let Some(&(last, _)) = batch.last() else {
            return;
        };
        let frames: Vec<Frame> = batch.into_iter().map(|(_, frame)| frame).collect();
        match self.shared.log.append(&frames) {
            Ok(()) => {
                let mut state = self.lock();
                for frame in frames {
                    self.relay(&mut state, frame);
                }
            }
            Err(e) => {
                let first = last + 1 - frames.len() as u64;
                commit
                    .failed
                    .extend((first..=last).map(|seq| (seq, e.clone())));
            }
        }
        commit.committed = last + 1;
    }

    /// Reopens the log by name, for log rotation (SIGHUP).
    pub fn reopen_log(&self) -> Result<(), LogError> {
        let _between_batches = lock(&self.shared.commit);
        self.shared.log.reopen()
    }

    /// How many members are joined.
    pub fn members(&self) -> usize {
        self.lock()
            .ring
            .as_ref()
            .map_or(0, broadcast::Sender::receiver_count)
    }

    /// The history a joining member would get now, oldest first.
    pub fn history(&self) -> Vec<Frame> {
        self.lock().history.iter().cloned().collect()
    }

    /// Closes the room: every member receives what is already queued, then
    /// [`RecvError::Closed`]; members joining later get only that.
    ///
    /// ```
    /// use wschat_core::{RecvError, Room, RoomConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let room = Room::new(RoomConfig::default());
    /// let mut m = room.join();
    /// room.close();
    /// assert_eq!(m.recv().await, Err(RecvError::Closed));
    /// # });
    /// ```
    pub fn close(&self) {
        self.lock().ring = None;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }
}

/// Locks, ignoring poisoning: a panic elsewhere cannot leave the room
/// half-updated in a way that matters more than stopping it would.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

/// One member of a room: its place in the room's ring of messages and its
/// publish rate. Dropping it leaves the room.
pub struct Member {
    room: Room,
    /// History still to deliver, before the ring.
    replay: std::vec::IntoIter<Frame>,
    ring: broadcast::Receiver<Frame>,
    too_slow: bool,
    bucket: Option<TokenBucket>,
}

impl Member {
    /// The next frame for this member, waiting for one.
    ///
    /// Fails with [`RecvError::TooSlow`] once the member has fallen a whole
    /// ring behind (messages it has not read were overwritten), and with
    /// [`RecvError::Closed`] after [`Room::close`] once the rest is read.
    pub async fn recv(&mut self) -> Result<Frame, RecvError> {
        if let Some(frame) = self.replay.next() {
            return Ok(frame);
        }
        if self.too_slow {
            return Err(RecvError::TooSlow);
        }
        match self.ring.recv().await {
            Ok(frame) => Ok(frame),
            Err(RingError::Lagged(_)) => self.fail_too_slow(),
            Err(RingError::Closed) => Err(RecvError::Closed),
        }
    }

    /// The next frame if one is ready, without waiting: lets a transport
    /// write everything queued before one flush.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// let room = Room::new(RoomConfig::default());
    /// let mut m = room.join();
    /// assert_eq!(m.try_recv(), Ok(None));
    /// room.publish(r#"{"usr":"a","msg":"m"}"#).unwrap();
    /// assert!(m.try_recv().unwrap().is_some());
    /// ```
    pub fn try_recv(&mut self) -> Result<Option<Frame>, RecvError> {
        if let Some(frame) = self.replay.next() {
            return Ok(Some(frame));
        }
        if self.too_slow {
            return Err(RecvError::TooSlow);
        }
        match self.ring.try_recv() {
            Ok(frame) => Ok(Some(frame)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Lagged(_)) => self.fail_too_slow(),
            Err(TryRecvError::Closed) => Err(RecvError::Closed),
        }
    }

    /// Whether the member has fallen so far behind that it has lost
    /// messages. Cheap, and takes `&self`, so a transport blocked writing to
    /// a stalled peer can check it now and then and give up.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// let room = Room::new(RoomConfig::default().send_queue(2));
    /// let slow = room.join();
    /// for _ in 0..2 {
    ///     room.publish(r#"{"usr":"a","msg":"m"}"#).unwrap();
    /// }
    /// assert!(!slow.is_too_slow());
    /// room.publish(r#"{"usr":"a","msg":"m"}"#).unwrap();
    /// assert!(slow.is_too_slow());
    /// ```
    pub fn is_too_slow(&self) -> bool {
        self.too_slow || self.ring.len() > self.room.shared.config.send_queue.next_power_of_two()
    }

    fn fail_too_slow<T>(&mut self) -> Result<T, RecvError> {
        self.too_slow = true;
        Err(RecvError::TooSlow)
    }

    /// Publishes a raw text frame from this member: counts against its rate
    /// limit (every frame does, valid or not), then as [`Room::publish`].
    ///
    /// ```
    /// use wschat_core::{RateLimit, Room, RoomConfig};
    ///
    /// let room = Room::new(RoomConfig::default().rate_limit(RateLimit::new(1.0, 1)));
    /// let mut m = room.join();
    /// let frame = r#"{"usr":"a","msg":"m"}"#;
    /// assert!(m.publish(frame).is_ok());
    /// assert_eq!(m.publish(frame).unwrap_err().code(), "rate_limited");
    /// ```
    pub fn publish(&mut self, frame: &str) -> Result<Frame, PublishError> {
        self.check_rate()?;
        self.room.publish(frame)
    }

    /// Like [`publish`](Self::publish) but only queues the message for the
    /// log: counts against the rate limit, then as [`Room::submit`].
    pub fn submit(&mut self, frame: &str) -> Result<Pending, PublishError> {
        self.check_rate()?;
        self.room.submit(frame)
    }

    /// Like [`publish`](Self::publish) but relays nothing: counts against
    /// the rate limit, then as [`Room::prepare`].
    pub fn prepare(&mut self, frame: &str) -> Result<Frame, PublishError> {
        self.check_rate()?;
        self.room.prepare(frame)
    }

    /// Counts one frame against the rate limit without publishing it, for
    /// frames rejected before they reach the room (binary frames).
    pub fn check_rate(&mut self) -> Result<(), PublishError> {
        let now = Instant::now();
        match self.bucket.as_mut().map(|b| b.try_take(now)) {
            Some(false) => Err(PublishError::RateLimited),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("too_slow", &self.too_slow)
            .finish_non_exhaustive()
    }
}

/// A message the room has stamped and queued for its log but not yet
/// relayed; see [`Room::submit`]. Dropping it does not withdraw the
/// message: it is written and relayed with the next batch committed.
#[derive(Debug)]
#[must_use = "the publisher learns whether its message was relayed only from `commit`"]
pub struct Pending {
    room: Room,
    seq: u64,
    frame: Frame,
}

impl Pending {
    /// Waits until the log has written this message, writing the batch
    /// itself (everything queued so far) when no one else is, and returns
    /// the relayed frame. Blocks for as long as the log's write takes.
    ///
    /// Fails with `unavailable` when the log refused the batch; the
    /// message was then not relayed.
    pub fn commit(self) -> Result<Frame, PublishError> {
        let room = &self.room;
        // Group commit: whoever holds the commit lock writes every message
        // stamped so far in one batch; the others find theirs written.
        let mut commit = lock(&room.shared.commit);
        if commit.committed <= self.seq {
            room.commit(&mut commit);
        }
        match commit.failed.remove(&self.seq) {
            None => Ok(self.frame),
            Some(e) => Err(PublishError::Unavailable(format!(
                "cannot relay now ({e}); try again later"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    const HI: &str = r#"{"usr":"a","msg":"hi"}"#;

    fn unlimited() -> RoomConfig {
        RoomConfig::default().rate_limit(None)
    }

    fn drain(m: &mut Member) -> Vec<Frame> {
        std::iter::from_fn(|| m.try_recv().ok().flatten()).collect()
    }

    #[test]
    fn shared_types_can_cross_threads() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Room>();
        send::<Member>();
    }

    #[test]
    fn every_member_sees_one_order() {
        let room = Room::new(unlimited());
        let mut members: Vec<_> = (0..5).map(|_| room.join()).collect();
        let published: Vec<Frame> = (0..100)
            .map(|i| {
                room.publish(&format!(r#"{{"usr":"u{}","msg":"{i}"}}"#, i % 3))
                    .unwrap()
            })
            .collect();
        for m in &mut members {
            assert_eq!(drain(m), published);
        }
    }

    #[test]
    fn rejected_frames_reach_nobody() {
        let room = Room::new(unlimited());
        let mut m = room.join();
        assert!(room.publish("{").is_err());
        assert_eq!(drain(&mut m), vec![]);
    }

    #[test]
    fn stamps_never_go_backwards() {
        let t: DateTime<Utc> = "2020-01-01T00:00:10Z".parse().unwrap();
        let clock = Arc::new(ManualClock::new(t));
        let room = Room::with_clock(unlimited(), clock.clone());
        let first = room.publish(HI).unwrap();
        clock.set("2020-01-01T00:00:05Z".parse().unwrap());
        let second = room.publish(HI).unwrap();
        assert!(
            first
                .as_str()
                .contains("\"tim\":\"2020-01-01T00:00:10.000000000Z\"")
        );
        assert!(
            second
                .as_str()
                .contains("\"tim\":\"2020-01-01T00:00:10.000000001Z\"")
        );
    }

    #[test]
    fn history_replays_the_last_n_then_live() {
        let room = Room::new(unlimited().history(3));
        let sent: Vec<_> = (0..5)
            .map(|i| {
                room.publish(&format!(r#"{{"usr":"a","msg":"{i}"}}"#))
                    .unwrap()
            })
            .collect();
        let mut m = room.join();
        let live = room.publish(HI).unwrap();
        let mut expected = sent[2..].to_vec();
        expected.push(live);
        assert_eq!(drain(&mut m), expected);
        assert_eq!(room.history().len(), 3);
    }

    #[test]
    fn falling_a_ring_behind_is_too_slow_for_that_member_only() {
        let room = Room::new(unlimited().send_queue(2));
        let mut slow = room.join();
        let mut fast = room.join();
        for _ in 0..3 {
            room.publish(HI).unwrap();
            assert_eq!(drain(&mut fast).len(), 1);
        }
        assert!(slow.is_too_slow() && !fast.is_too_slow());
        assert_eq!(slow.try_recv(), Err(RecvError::TooSlow));
        assert_eq!(slow.try_recv(), Err(RecvError::TooSlow), "and stays so");
    }

    #[test]
    fn history_larger_than_the_ring_is_replayed_whole() {
        let room = Room::new(unlimited().history(10).send_queue(2));
        for _ in 0..10 {
            room.publish(HI).unwrap();
        }
        let mut m = room.join();
        assert_eq!(drain(&mut m).len(), 10);
        assert!(!m.is_too_slow());
    }

    #[test]
    fn leaving_removes_the_member() {
        let room = Room::new(unlimited());
        let m = room.join();
        assert_eq!(room.members(), 1);
        drop(m);
        assert_eq!(room.members(), 0);
    }

    #[test]
    fn a_failing_log_relays_nothing() {
        struct Broken;
        impl Log for Broken {
            fn append(&self, _: &[Frame]) -> Result<(), LogError> {
                Err(LogError::new("disk full"))
            }
            fn recent(&self, _: usize) -> Result<Vec<Frame>, LogError> {
                Ok(vec![Frame::from("{\"old\":1}".to_owned())])
            }
        }
        let room = Room::with_log(unlimited().history(5), Arc::new(Broken)).unwrap();
        let mut m = room.join();
        assert_eq!(room.publish(HI).unwrap_err().code(), "unavailable");
        assert_eq!(
            drain(&mut m).len(),
            1,
            "only the history loaded from the log"
        );
    }

    #[test]
    fn concurrent_publishers_are_committed_in_stamp_order_in_batches() {
        #[derive(Default)]
        struct Batches(Mutex<Vec<usize>>);
        impl Log for Batches {
            fn append(&self, frames: &[Frame]) -> Result<(), LogError> {
                std::thread::sleep(std::time::Duration::from_millis(2));
                self.0.lock().unwrap().push(frames.len());
                Ok(())
            }
            fn recent(&self, _: usize) -> Result<Vec<Frame>, LogError> {
                Ok(Vec::new())
            }
        }
        let log = Arc::new(Batches::default());
        let room = Room::with_log(unlimited(), log.clone()).unwrap();
        let mut m = room.join();
        std::thread::scope(|s| {
            for t in 0..4 {
                let room = room.clone();
                s.spawn(move || {
                    for i in 0..25 {
                        room.publish(&format!(r#"{{"usr":"t{t}","msg":"{i}"}}"#))
                            .unwrap();
                    }
                });
            }
        });
        let seen = drain(&mut m);
        assert_eq!(seen.len(), 100);
        let tims: Vec<String> = seen
            .iter()
            .map(|f| f.as_str().split("\"tim\":\"").nth(1).unwrap().to_owned())
            .collect();
        assert!(
            tims.windows(2).all(|w| w[0] < w[1]),
            "relayed in stamp order"
        );
        let batches = log.0.lock().unwrap();
        assert_eq!(batches.iter().sum::<usize>(), 100);
        assert!(
            batches.len() < 100,
            "some batches held several messages: {batches:?}"
        );
    }

    #[test]
    fn joining_never_waits_for_the_log() {
        use std::sync::mpsc;
        use std::time::Duration;
        /// A log whose writes wait until the test lets them go, as a hung
        /// disk's do.
        struct Hung {
            writing: mpsc::SyncSender<()>,
            release: Mutex<mpsc::Receiver<()>>,
        }
        impl Log for Hung {
            fn append(&self, _: &[Frame]) -> Result<(), LogError> {
                let _ = self.writing.send(());
                let _ = self.release.lock().unwrap().recv();
                Ok(())
            }
            fn recent(&self, _: usize) -> Result<Vec<Frame>, LogError> {
                Ok(Vec::new())
            }
        }
        let (writing, started) = mpsc::sync_channel(1);
        let (release, released) = mpsc::channel();
        let log = Hung {
            writing,
            release: Mutex::new(released),
        };
        let room = Room::with_log(unlimited().history(5), Arc::new(log)).unwrap();
        let mut early = room.join();
        let publisher = {
            let room = room.clone();
            std::thread::spawn(move || room.publish(HI))
        };
        started.recv().unwrap();
        let (done, joined) = mpsc::channel();
        {
            let room = room.clone();
            std::thread::spawn(move || {
                let late = room.join();
                let _ = done.send((late, room.history().len(), room.members()));
            });
        }
        let waited = joined.recv_timeout(Duration::from_secs(5));
        release.send(()).unwrap();
        let (mut late, history, members) = waited.expect("join waited for the log's write");
        assert_eq!(
            (history, members),
            (0, 2),
            "nothing relayed before the write"
        );
        publisher.join().unwrap().unwrap();
        assert_eq!(drain(&mut early).len(), 1);
        assert_eq!(
            drain(&mut late).len(),
            1,
            "a member that joined during the write gets it"
        );
    }

    #[test]
    fn one_commit_writes_everything_submitted_before_it() {
        let room = Room::new(unlimited());
        let mut m = room.join();
        let first = room.submit(r#"{"usr":"a","msg":"1"}"#).unwrap();
        let dropped = room.submit(r#"{"usr":"a","msg":"2"}"#).unwrap();
        drop(dropped);
        let third = room.submit(r#"{"usr":"a","msg":"3"}"#).unwrap();
        assert_eq!(drain(&mut m).len(), 0);
        let relayed = third.commit().unwrap();
        let seen = drain(&mut m);
        assert_eq!(seen.len(), 3, "the dropped one too, in stamp order");
        assert_eq!(seen[2], relayed);
        assert_eq!(first.commit().unwrap(), seen[0], "already written");
        assert_eq!(drain(&mut m).len(), 0, "and relayed only once");
    }

    #[test]
    fn jwt_mode_rejects_unsigned_messages() {
        let room = Room::new(unlimited().jwt(Some(JwtConfig::new("k"))));
        assert_eq!(room.publish(HI).unwrap_err().code(), "unauthorized");
    }
}
