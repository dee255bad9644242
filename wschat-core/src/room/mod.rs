//! The [`Room`]: members, ordering, fan-out and history.
//!
//! A published frame is parsed, authorized, stamped, rendered once and
//! appended to the log; only then is it put in the room's ring of recent
//! messages (the engine in `commit.rs`). Members read the ring at their
//! own pace ("fan-out follows the log"): publishing costs the same for ten
//! members or ten thousand, and the room never waits for anyone. A member
//! that falls a whole ring behind has lost messages, and is told it was
//! too slow. Writing to sockets is the transport's business, outside any
//! lock.

mod commit;
mod config;
mod member;
mod rebuild;
mod resume;

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;

use crate::clock::{Clock, SystemClock, format_tim};
use crate::error::{LogError, PublishError};
use crate::frame::Frame;
use crate::jwt::Jwt;
use crate::log::{Log, MemoryLog, SharedLog};
use crate::message::Message;
use crate::moderation::{self, Action, Rebuild};
use crate::rate::TokenBucket;

use commit::{Engine, State, lock};
pub use config::RoomConfig;
pub use member::{Member, Publish};
pub use resume::{CatchUp, Step};

/// One public room. Cheap to clone; clones share the room.
///
/// ```
/// use wschat_core::{Room, RoomConfig};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let room = Room::new(RoomConfig::default());
/// let mut ann = room.join();
/// let mut bob = room.join();
/// ann.publish(r#"{"usr":"ann","msg":"hi bob"}"#).await.unwrap();
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
    engine: Arc<Engine>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.engine.stop();
    }
}

/// Builds a [`Room`] with another log or clock than the defaults.
///
/// ```
/// use std::sync::Arc;
/// use chrono::{DateTime, Utc};
/// use wschat_core::{Clock, MemoryLog, Room, RoomConfig};
///
/// /// A clock stopped at one time.
/// struct Stopped(DateTime<Utc>);
///
/// impl Clock for Stopped {
///     fn now(&self) -> DateTime<Utc> {
///         self.0
///     }
/// }
///
/// let t = "2020-08-11T22:26:58.118678679Z".parse().unwrap();
/// let room = Room::builder(RoomConfig::default())
///     .log(Arc::new(MemoryLog))
///     .clock(Arc::new(Stopped(t)))
///     .build()
///     .unwrap();
/// let out = room.publish(r#"{"usr":"a","msg":"m"}"#).try_outcome().unwrap().unwrap();
/// assert_eq!(out.as_str(), r#"{"usr":"a","msg":"m","tim":"2020-08-11T22:26:58.118678679Z"}"#);
/// ```
#[must_use]
pub struct RoomBuilder {
    config: RoomConfig,
    log: Arc<dyn Log>,
    shared_log: Option<Arc<dyn SharedLog>>,
    clock: Arc<dyn Clock>,
    history: Option<Vec<Frame>>,
    /// Whether `build` reads the moderation state back from the logs.
    rebuild: bool,
}

impl RoomBuilder {
    /// The log the room writes every relayed message to before relaying it
    /// (default [`MemoryLog`]); the history is filled from its last
    /// messages unless [`history`](Self::history) gives it.
    pub fn log(mut self, log: Arc<dyn Log>) -> Self {
        self.log = log;
        self
    }

    /// A log shared with other rooms that orders messages itself: see
    /// [`SharedLog`]. The room's own [`log`](Self::log) then records what
    /// [`Room::deliver`] relays.
    pub fn shared_log(mut self, shared: Arc<dyn SharedLog>) -> Self {
        self.shared_log = Some(shared);
        self
    }

    /// Where `tim` comes from (default: the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The history to start with, oldest first, instead of the log's last
    /// messages: for a shared log, whose tail is the history. It must end
    /// with the newest message the logs hold, even when the configured
    /// history is shorter (only the last of it is replayed): reads by
    /// cursor stop at that message until the room relays more.
    pub fn history(mut self, frames: Vec<Frame>) -> Self {
        self.history = Some(frames);
        self
    }

    /// The room; fails when the log's history cannot be read.
    ///
    /// The retractions and mutes the logs hold (README, "Moderation") are
    /// read back too: those in the history at once, the rest on a thread
    /// of the room's own, which reads the room's log whole, front to back
    /// (a file in one sequential read), and a shared log that can be read
    /// back. Reads by cursor ([`Room::read`], [`Room::catch_up`]) wait
    /// for it.
    pub fn build(self) -> Result<Room, LogError> {
        let config = self.config;
        let recent = match self.history {
            Some(frames) => frames,
            // One at least: the newest message tells where reads stop.
            None => self.log.recent(config.history.max(1))?,
        };
        // The history holds every action about its own messages; the
        // rest of the logs is read back on a thread (`rebuild.rs`).
        let mut in_history = Rebuild::default();
        for frame in &recent {
            in_history.line(frame.as_str());
        }
        let (retractions, mutes) = in_history.into_parts();
        let state = State::new(config.send_queue, config.history, recent, retractions);
        let engine = Engine::start(self.clock, self.log, self.shared_log, state, mutes);
        if self.rebuild {
            engine.rebuild();
        } else {
            engine.rebuilt.finish();
        }
        Ok(Room {
            shared: Arc::new(Shared {
                jwt: config.jwt.clone().map(Jwt::new),
                config,
                engine,
            }),
        })
    }
}

impl Room {
    /// An empty room with the in-memory log and the system clock.
    pub fn new(config: RoomConfig) -> Self {
        Self::builder(config)
            .history(Vec::new())
            .build()
            .unwrap_or_else(|_| unreachable!("a given history is never read from the log"))
    }

    /// A room with other parts than the defaults.
    pub fn builder(config: RoomConfig) -> RoomBuilder {
        RoomBuilder {
            config,
            log: Arc::new(MemoryLog),
            shared_log: None,
            clock: Arc::new(SystemClock),
            history: None,
            rebuild: true,
        }
    }

    /// A room writing to `log`, its history filled from the log's last
    /// messages.
    pub fn with_log(config: RoomConfig, log: Arc<dyn Log>) -> Result<Self, LogError> {
        Self::builder(config).log(log).build()
    }

    /// A room whose messages are ordered by `shared`, a log it shares with
    /// other rooms: see [`SharedLog`]. It starts with no history and no
    /// moderation state; [`Room::builder`] reads both back from the log.
    pub fn with_shared_log(config: RoomConfig, shared: Arc<dyn SharedLog>) -> Self {
        let mut builder = Self::builder(config).shared_log(shared).history(Vec::new());
        builder.rebuild = false;
        builder
            .build()
            .unwrap_or_else(|_| unreachable!("a given history is never read from the log"))
    }

    /// A room that reads the time from `clock`, for tests (with the
    /// `test-util` feature; [`Room::builder`] takes any clock).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use wschat_core::{ManualClock, Room, RoomConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let t = "2020-08-11T22:26:58.118678679Z".parse().unwrap();
    /// let room = Room::with_clock(RoomConfig::default(), Arc::new(ManualClock::new(t)));
    /// let out = room.publish(r#"{"usr":"a","msg":"m"}"#).await.unwrap();
    /// assert_eq!(out.as_str(), r#"{"usr":"a","msg":"m","tim":"2020-08-11T22:26:58.118678679Z"}"#);
    /// # });
    /// ```
    #[cfg(any(test, feature = "test-util"))]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub fn with_clock(config: RoomConfig, clock: Arc<dyn Clock>) -> Self {
        Self::builder(config)
            .clock(clock)
            .history(Vec::new())
            .build()
            .unwrap_or_else(|_| unreachable!("a given history is never read from the log"))
    }

    /// Adds a member. It receives the history, then every message relayed
    /// after this call, with no gap and no duplicate.
    pub fn join(&self) -> Member {
        let state = self.lock();
        let ring = self.subscribe(&state);
        let replay: Vec<Frame> = state.history().cloned().collect();
        drop(state);
        self.member(replay, ring)
    }

    /// A place in the ring, from the next message relayed on.
    fn subscribe(&self, state: &State) -> broadcast::Receiver<Frame> {
        match &state.ring {
            Some(ring) => ring.subscribe(),
            // Closed: a receiver whose sender is already gone.
            None => broadcast::channel(1).1,
        }
    }

    fn log(&self) -> &dyn Log {
        self.shared.engine.log()
    }

    fn shared_log(&self) -> Option<&dyn SharedLog> {
        self.shared.engine.shared()
    }

    fn member(&self, replay: Vec<Frame>, ring: broadcast::Receiver<Frame>) -> Member {
        Member {
            replay: (!replay.is_empty()).then(|| Box::new(replay.into_iter())),
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
    /// validates, authorizes, stamps and queues it at once; the returned
    /// [`Publish`] resolves to the relayed frame once the log has
    /// committed it.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let room = Room::new(RoomConfig::default());
    /// assert_eq!(room.publish("not json").await.unwrap_err().code(), "invalid_json");
    /// # });
    /// ```
    pub fn publish(&self, frame: &str) -> Publish {
        let message = match self.check(frame) {
            Ok(message) => message,
            Err(e) => return Publish::failed(e),
        };
        let (frame, receipt) = self.shared.engine.submit(&message, frame);
        Publish::waiting(frame, receipt)
    }

    /// Parses and authorizes a frame: its token, a moderation action
    /// (only a moderator's, and well-formed: README, "Moderation"), and
    /// whether its `usr` is muted (actions are not refused by a mute).
    fn check<'a>(&self, frame: &'a str) -> Result<Message<'a>, PublishError> {
        let message = Message::parse(frame)?;
        let claims = match &self.shared.jwt {
            Some(jwt) => jwt.authorize(&message)?,
            None => None,
        };
        if let Some(action) = message.field("mod") {
            let moderator = self
                .shared
                .jwt
                .as_ref()
                .zip(claims.as_ref())
                .is_some_and(|(jwt, claims)| jwt.is_moderator(claims));
            if !moderator {
                return Err(PublishError::Unauthorized(
                    "only a moderator's token may send \"mod\"".into(),
                ));
            }
            if let Action::Retract { tim } = Action::from_raw(action)?
                && tim > self.shared.engine.latest_tim()
            {
                return Err(PublishError::InvalidMessage(format!(
                    "\"mod\": \"retract\" names {}, later than every message",
                    format_tim(tim)
                )));
            }
            // A moderator is trusted with actions even while muted (a
            // mute of their name, or of a shared one, must not stop them
            // lifting it); the mute holds for their other messages.
            return Ok(message);
        }
        if let Some(until) = self.shared.engine.muted_until(message.usr()) {
            return Err(moderation::muted(message.usr(), until));
        }
        Ok(message)
    }

    /// Relays frames a [`SharedLog`] has committed, in its order: each is
    /// written to the room's own log, then joins the history and reaches
    /// every member. Resolves once they are relayed, or fails (relaying
    /// none of the batch) when the room's log refuses them.
    pub async fn deliver(&self, frames: impl IntoIterator<Item = Frame>) -> Result<(), LogError> {
        let receipts = self.shared.engine.deliver(frames);
        for receipt in receipts {
            match receipt.await {
                Ok(outcome) => outcome?,
                Err(_) => return Err(LogError::new("the log stopped")),
            }
        }
        Ok(())
    }

    /// Reopens the log by name, for log rotation (SIGHUP). Waits for the
    /// batch being written, so call it where blocking is allowed.
    pub fn reopen_log(&self) -> Result<(), LogError> {
        self.shared.engine.reopen()
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
        self.lock().history().cloned().collect()
    }

    /// How many messages [`history`](Self::history) would return, without
    /// copying them: cheap enough to ask on every metrics scrape.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// let room = Room::new(RoomConfig::default().history(2));
    /// for msg in ["a", "b", "c"] {
    ///     let mut publish = room.publish(&format!(r#"{{"usr":"ann","msg":"{msg}"}}"#));
    ///     publish.try_outcome().unwrap().unwrap();
    /// }
    /// assert_eq!(room.history_len(), 2);
    /// ```
    pub fn history_len(&self) -> usize {
        let state = self.lock();
        state.recent.len().min(state.history_cap)
    }

    /// Closes the room: every member receives what is already queued, then
    /// [`RecvError::Closed`](crate::RecvError::Closed); members joining later
    /// get only that.
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.shared.engine.state)
    }
}

impl fmt::Debug for Room {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Room")
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::error::RecvError;
    use crate::jwt::JwtConfig;
    use chrono::{DateTime, Utc};
    use std::sync::Mutex;

    const HI: &str = r#"{"usr":"a","msg":"hi"}"#;

    fn unlimited() -> RoomConfig {
        RoomConfig::default().rate_limit(None)
    }

    /// Waits for a publish, as a transport would, on this thread.
    fn wait(publish: Publish) -> Result<Frame, PublishError> {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(publish)
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
            .map(|i| wait(room.publish(&format!(r#"{{"usr":"u{}","msg":"{i}"}}"#, i % 3))).unwrap())
            .collect();
        for m in &mut members {
            assert_eq!(drain(m), published);
        }
    }

    #[test]
    fn rejected_frames_reach_nobody() {
        let room = Room::new(unlimited());
        let mut m = room.join();
        assert!(wait(room.publish("{")).is_err());
        assert_eq!(drain(&mut m), vec![]);
    }

    #[test]
    fn stamps_never_go_backwards() {
        let t: DateTime<Utc> = "2020-01-01T00:00:10Z".parse().unwrap();
        let clock = Arc::new(ManualClock::new(t));
        let room = Room::with_clock(unlimited(), clock.clone());
        let first = wait(room.publish(HI)).unwrap();
        clock.set("2020-01-01T00:00:05Z".parse().unwrap());
        let second = wait(room.publish(HI)).unwrap();
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
            .map(|i| wait(room.publish(&format!(r#"{{"usr":"a","msg":"{i}"}}"#))).unwrap())
            .collect();
        let mut m = room.join();
        let live = wait(room.publish(HI)).unwrap();
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
            wait(room.publish(HI)).unwrap();
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
            wait(room.publish(HI)).unwrap();
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
        assert_eq!(wait(room.publish(HI)).unwrap_err().code(), "unavailable");
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
                        wait(room.publish(&format!(r#"{{"usr":"t{t}","msg":"{i}"}}"#))).unwrap();
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
    fn a_stream_of_messages_to_a_fast_log_is_written_in_few_batches() {
        // A log as fast as the page cache: without a commit delay the
        // writer thread would wake for nearly every message of a stream
        // (README, "What the archive costs").
        #[derive(Default)]
        struct Fast(Mutex<Vec<usize>>);
        impl Log for Fast {
            fn append(&self, frames: &[Frame]) -> Result<(), LogError> {
                self.0.lock().unwrap().push(frames.len());
                Ok(())
            }
            fn recent(&self, _: usize) -> Result<Vec<Frame>, LogError> {
                Ok(Vec::new())
            }
        }
        let log = Arc::new(Fast::default());
        let room = Room::with_log(unlimited(), log.clone()).unwrap();
        let mut m = room.join();
        let n = 300;
        let mut publishes = Vec::new();
        for i in 0..n {
            // One message every 50 µs, as from busy publishers.
            let at = std::time::Instant::now();
            while at.elapsed() < std::time::Duration::from_micros(50) {
                std::hint::spin_loop();
            }
            publishes.push(room.publish(&format!(r#"{{"usr":"a","msg":"{i}"}}"#)));
        }
        for publish in publishes {
            wait(publish).unwrap();
        }
        assert_eq!(drain(&mut m).len(), n, "every message relayed");
        let batches = log.0.lock().unwrap();
        assert_eq!(batches.iter().sum::<usize>(), n);
        assert!(
            batches.len() <= n / 3,
            "{} batches for {n} messages: {batches:?}",
            batches.len()
        );
    }

    #[test]
    fn frames_a_shared_log_delivers_are_written_without_lingering() {
        // The Redis reader relays a read, then reads again once it is
        // relayed: a commit delay could only hold each read back.
        let log = Arc::new(MemoryLogThatBlocks);
        let room = Room::with_log(unlimited(), log).unwrap();
        let mut m = room.join();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let frame = |i: i64| {
            let tim = crate::clock::format_tim(
                chrono::DateTime::UNIX_EPOCH + chrono::TimeDelta::seconds(i),
            );
            Frame::from(format!(r#"{{"usr":"a","msg":"{i}","tim":"{tim}"}}"#))
        };
        for i in 0..200 {
            rt.block_on(room.deliver([frame(2 * i), frame(2 * i + 1)]))
                .unwrap();
        }
        assert_eq!(drain(&mut m).len(), 400, "every frame relayed");
        let lingers = room
            .shared
            .engine
            .lingers
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(lingers, 0, "lingered for delivered frames");
    }

    #[test]
    fn an_idle_room_writes_a_lone_message_at_once() {
        use std::time::{Duration, Instant};
        let log = Arc::new(MemoryLogThatBlocks);
        let room = Room::with_log(unlimited(), log).unwrap();
        for i in 0..20 {
            std::thread::sleep(Duration::from_millis(2));
            let at = Instant::now();
            wait(room.publish(&format!(r#"{{"usr":"a","msg":"{i}"}}"#))).unwrap();
            // Slack for a busy machine; the commit delay alone would show
            // as about its own length on every message.
            if at.elapsed() < Duration::from_micros(150) {
                return;
            }
        }
        panic!("no lone message was written at once");
    }

    /// A log that keeps nothing but is written from the writer thread.
    struct MemoryLogThatBlocks;
    impl Log for MemoryLogThatBlocks {
        fn append(&self, _: &[Frame]) -> Result<(), LogError> {
            Ok(())
        }
        fn recent(&self, _: usize) -> Result<Vec<Frame>, LogError> {
            Ok(Vec::new())
        }
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
        let publisher = room.publish(HI);
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
        wait(publisher).unwrap();
        assert_eq!(drain(&mut early).len(), 1);
        assert_eq!(
            drain(&mut late).len(),
            1,
            "a member that joined during the write gets it"
        );
    }

    /// A log whose writes wait until the test opens the gate, as a hung
    /// disk's do.
    #[derive(Default)]
    struct Gate {
        open: Mutex<bool>,
        opened: std::sync::Condvar,
        batches: Mutex<Vec<usize>>,
    }

    impl Gate {
        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.opened.notify_all();
        }
    }

    impl Log for Gate {
        fn append(&self, frames: &[Frame]) -> Result<(), LogError> {
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.opened.wait(open).unwrap();
            }
            self.batches.lock().unwrap().push(frames.len());
            Ok(())
        }
        fn recent(&self, _: usize) -> Result<Vec<Frame>, LogError> {
            Ok(Vec::new())
        }
    }

    #[test]
    fn a_hung_log_holds_its_publishers_not_their_thread() {
        let gate = Arc::new(Gate::default());
        let room = Room::with_log(unlimited(), gate.clone()).unwrap();
        let mut m = room.join();
        let mut first = room.publish(r#"{"usr":"a","msg":"1"}"#);
        let dropped = room.publish(r#"{"usr":"a","msg":"2"}"#);
        drop(dropped);
        let third = room.publish(r#"{"usr":"a","msg":"3"}"#);
        // Publishing returned at once, and waiting does not block.
        assert!(first.try_outcome().is_none(), "not committed yet");
        assert_eq!(drain(&mut m).len(), 0, "nothing relayed before the write");
        let _late = room.join();
        assert_eq!(room.members(), 2, "joining does not wait for the disk");
        gate.open();
        let relayed = wait(third).unwrap();
        let seen = drain(&mut m);
        assert_eq!(seen.len(), 3, "the dropped one too, in stamp order");
        assert_eq!(seen[2], relayed);
        assert_eq!(wait(first).unwrap(), seen[0]);
        assert_eq!(drain(&mut m).len(), 0, "and relayed only once");
        assert!(
            gate.batches.lock().unwrap().len() <= 2,
            "written in batches"
        );
    }

    #[test]
    fn a_shared_log_orders_and_the_room_relays_what_it_reads_back() {
        #[derive(Default)]
        struct Queue(Mutex<Vec<(Frame, crate::log::Ack)>>);
        impl SharedLog for Queue {
            fn append(&self, entry: crate::log::Stamped, ack: crate::log::Ack) {
                self.0.lock().unwrap().push((entry.frame().clone(), ack));
            }
        }
        let shared = Arc::new(Queue::default());
        let log = Arc::new(Gate::default());
        log.open();
        let room = Room::builder(unlimited())
            .log(log.clone())
            .shared_log(shared.clone())
            .build()
            .unwrap();
        let mut m = room.join();
        let mut publishes: Vec<Publish> = (0..3)
            .map(|i| room.publish(&format!(r#"{{"usr":"a","msg":"{i}"}}"#)))
            .collect();
        let queued: Vec<_> = std::mem::take(&mut *shared.0.lock().unwrap());
        assert_eq!(queued.len(), 3, "handed over in stamp order");
        let frames: Vec<Frame> = queued.iter().map(|(f, _)| f.clone()).collect();
        let mut queued = queued.into_iter();
        let (_, ack) = queued.next().unwrap();
        ack.send(Ok(()));
        let (_, ack) = queued.next().unwrap();
        ack.send(Err(LogError::new("down")));
        drop(queued);
        assert!(publishes[0].try_outcome().unwrap().is_ok());
        assert_eq!(
            publishes[1].try_outcome().unwrap().unwrap_err().code(),
            "unavailable"
        );
        assert_eq!(
            publishes[2].try_outcome().unwrap().unwrap_err().code(),
            "unavailable",
            "an ack dropped unanswered is a refusal"
        );
        assert_eq!(drain(&mut m).len(), 0, "nothing relayed until read back");
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(room.deliver(frames[..1].to_vec()))
            .unwrap();
        assert_eq!(drain(&mut m), frames[..1].to_vec());
        assert_eq!(log.batches.lock().unwrap().as_slice(), &[1], "logged first");
    }

    #[test]
    fn jwt_mode_rejects_unsigned_messages() {
        let room = Room::new(unlimited().jwt(Some(JwtConfig::new("k"))));
        assert_eq!(wait(room.publish(HI)).unwrap_err().code(), "unauthorized");
    }
}
