//! The ordering and commit engine: stamps messages in one order, writes
//! them to the log in batches (group commit), and only then relays them.
//!
//! One lock (`order`) fixes the order: under it a message gets its `tim`
//! and joins the queue for the log. One writer at a time takes the whole
//! queue, appends it to the log and relays it: in place, by whichever
//! publisher gets there first, when the log never blocks; on the room's
//! own writer thread when it may (a disk), so a hung disk holds that thread
//! and the publishers awaiting their [`Ack`], never a runtime's worker.
//! Relaying takes a third, brief lock (`state`) that joining also takes, so
//! joining never waits for a disk.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{broadcast, oneshot};

use crate::clock::{Clock, format_tim};
use crate::error::LogError;
use crate::frame::Frame;
use crate::log::{Ack, Log, SharedLog, Stamped};
use crate::message::Message;
use crate::moderation::{Action, Moderated, Mutes, Retractions};

/// Locks, ignoring poisoning: a panic elsewhere cannot leave the room
/// half-updated in a way that matters more than stopping it would.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the log has committed: the ring members read, and the window of
/// recent messages (the history is its newest part).
pub(crate) struct State {
    /// `None` once the room is closed.
    pub ring: Option<broadcast::Sender<Frame>>,
    /// The last relayed messages with their `tim`, oldest first: at most
    /// `recent_cap`, the larger of the history and the ring, so a member
    /// resuming near the end finds what the ring no longer shows it.
    pub recent: VecDeque<(DateTime<Utc>, Frame)>,
    pub recent_cap: usize,
    pub history_cap: usize,
    /// The `tim` of the last message relayed (or, at start, the newest the
    /// log held): reads of the log stop there, since what is past it may
    /// still be refused.
    last_tim: Option<DateTime<Utc>>,
    /// The messages moderators retracted: never replayed again, neither
    /// from `recent` (they are taken out of it) nor from the log.
    pub retractions: Retractions,
}

impl State {
    /// An empty state for a ring of `ring_cap` and a history of
    /// `history_cap`, filled with the last `history_cap` of `history`
    /// (oldest first; its newest is the newest message the log holds)
    /// that `retractions` do not hide.
    pub fn new(
        ring_cap: usize,
        history_cap: usize,
        mut history: Vec<Frame>,
        retractions: Retractions,
    ) -> Self {
        let recent_cap = history_cap.max(ring_cap.next_power_of_two());
        let last_tim = history.iter().rev().find_map(Frame::tim);
        history.retain(|frame| !retractions.hides(frame));
        let mut state = State {
            ring: Some(broadcast::channel(ring_cap).0),
            recent: VecDeque::new(),
            recent_cap,
            history_cap,
            last_tim,
            retractions,
        };
        let skip = history.len().saturating_sub(history_cap);
        for frame in history.into_iter().skip(skip) {
            // A line without `tim` (written by hand?) is still history; it
            // sorts with the message before it.
            let tim = frame
                .tim()
                .or(state.recent.back().map(|(t, _)| *t))
                .unwrap_or(DateTime::<Utc>::MIN_UTC);
            state.remember(tim, frame);
        }
        state
    }

    fn remember(&mut self, tim: DateTime<Utc>, frame: Frame) {
        if self.recent.len() == self.recent_cap {
            self.recent.pop_front();
        }
        self.recent.push_back((tim, frame));
    }

    /// Adds one committed frame to the recent window and the ring.
    fn relay(&mut self, tim: DateTime<Utc>, frame: Frame) {
        if let Some(ring) = &self.ring {
            // Fails only when nobody is listening.
            let _ = ring.send(frame.clone());
        }
        self.remember(tim, frame);
        self.last_tim = Some(tim);
    }

    /// Takes the message with `tim` out of every later replay.
    pub fn retract(&mut self, tim: DateTime<Utc>) {
        self.retractions.insert(tim);
        let at = self.recent.partition_point(|(t, _)| *t < tim);
        if self.recent.get(at).is_some_and(|(t, _)| *t == tim) {
            self.recent.remove(at);
        }
    }

    /// Takes the messages moderators retracted out of `frames`.
    pub fn drop_retracted(&self, frames: &mut Vec<Frame>) {
        if !self.retractions.is_empty() {
            frames.retain(|f| !self.retractions.hides(f));
        }
    }

    /// The history a joining member is replayed, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Frame> {
        let skip = self.recent.len().saturating_sub(self.history_cap);
        self.recent.iter().skip(skip).map(|(_, f)| f)
    }

    /// The `tim` of the last relayed message.
    pub fn last_tim(&self) -> Option<DateTime<Utc>> {
        self.last_tim
    }
}

/// How long the writer thread waits for more messages before it writes a
/// batch, when the last batch was small and ended less than this long ago
/// (a stream of messages, not a lone one): PostgreSQL's `commit_delay`.
/// Writing to the page cache takes microseconds, so without it each batch
/// held two or three messages and cost a thread wake-up and its context
/// switches, several times the write (README, "What the archive costs").
/// A few hundred microseconds is small next to a network round trip, and
/// an idle room writes a lone message at once.
const COMMIT_DELAY: Duration = Duration::from_micros(250);

/// A batch this large needs no commit delay: the load already gathers
/// messages, so the next batch is written as soon as it is seen, and a
/// lingering writer stops waiting when the queue reaches it.
const FULL_BATCH: usize = 64;

/// Messages stamped, in order, and not yet handed to the log.
struct Order {
    last_tim: DateTime<Utc>,
    queue: Vec<(Frame, DateTime<Utc>, Ack)>,
    /// Set when the room is gone: the writer thread ends.
    closed: bool,
    /// What the writer thread waits for: publishers wake it only then, so
    /// a message queued while it writes or lingers costs no system call.
    writer: Waiting,
    /// The queue holds frames a shared log delivered: they come a read at
    /// a time, the next only once these are relayed, so lingering for
    /// more would only delay them.
    delivered: bool,
}

/// What the writer thread is waiting for, if anything.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// It is writing, or about to look at the queue.
    Nothing,
    /// The queue is empty and it sleeps until a message comes.
    Message,
    /// It lingers for more (the commit delay) until the queue holds a
    /// full batch.
    FullBatch,
}

/// The engine one room owns.
pub(crate) struct Engine {
    clock: Arc<dyn Clock>,
    log: Arc<dyn Log>,
    shared: Option<Arc<dyn SharedLog>>,
    order: Mutex<Order>,
    /// Wakes the writer thread when the queue fills.
    queued: Condvar,
    /// Held while a batch is written: one writer at a time, in order.
    writing: Mutex<()>,
    /// Who is muted until when: checked on every publish, so under a lock
    /// of its own rather than `state`'s.
    pub(super) mutes: Mutex<Mutes>,
    /// Whether the moderation state has been read back from the logs.
    pub(super) rebuilt: super::rebuild::Rebuilt,
    /// Whether the writer thread runs; without it batches are written in
    /// place.
    threaded: std::sync::atomic::AtomicBool,
    pub state: Mutex<State>,
    /// How many times the writer lingered, for tests.
    #[cfg(test)]
    pub(super) lingers: std::sync::atomic::AtomicUsize,
}

/// What a publisher awaits: its message's commit.
pub(crate) type Receipt = oneshot::Receiver<Result<(), LogError>>;

impl Engine {
    /// An engine, and its writer thread when the log may block.
    pub fn start(
        clock: Arc<dyn Clock>,
        log: Arc<dyn Log>,
        shared: Option<Arc<dyn SharedLog>>,
        state: State,
        mutes: Mutes,
    ) -> Arc<Self> {
        let last_tim = state.last_tim().unwrap_or(DateTime::<Utc>::MIN_UTC);
        let engine = Arc::new(Engine {
            clock,
            log,
            shared,
            order: Mutex::new(Order {
                last_tim,
                queue: Vec::new(),
                closed: false,
                writer: Waiting::Nothing,
                delivered: false,
            }),
            queued: Condvar::new(),
            writing: Mutex::new(()),
            mutes: Mutex::new(mutes),
            rebuilt: Default::default(),
            threaded: std::sync::atomic::AtomicBool::new(false),
            #[cfg(test)]
            lingers: std::sync::atomic::AtomicUsize::new(0),
            state: Mutex::new(state),
        });
        if engine.log.blocks() {
            let writer = engine.clone();
            // A thread rather than a task: the log's `append` blocks, and
            // the core needs no runtime. If it cannot be spawned, batches
            // are written in place instead (see `kick`).
            let spawned = std::thread::Builder::new()
                .name("wschat-log".into())
                .spawn(move || writer.write_forever());
            engine
                .threaded
                .store(spawned.is_ok(), std::sync::atomic::Ordering::Release);
        }
        engine
    }

    /// Stamps a parsed message and queues it for the log (or hands it to
    /// the shared log), in one order for all publishers.
    pub fn submit(&self, message: &Message<'_>, source: &str) -> (Frame, Receipt) {
        let (tx, rx) = oneshot::channel();
        let mut order = lock(&self.order);
        let tim = self
            .clock
            .now()
            .max(order.last_tim + TimeDelta::nanoseconds(1));
        order.last_tim = tim;
        let frame = Frame::from(message.render(&format_tim(tim)));
        match &self.shared {
            Some(shared) => {
                shared.append(Stamped::new(frame.clone(), tim, source), Ack(tx));
                return (frame, rx);
            }
            None => order.queue.push((frame.clone(), tim, Ack(tx))),
        }
        self.kick(order);
        (frame, rx)
    }

    /// The latest `tim` any message has now: the clock's, or the last
    /// stamped or delivered if that is later. A message's `tim` is never
    /// later.
    pub fn latest_tim(&self) -> DateTime<Utc> {
        let last = lock(&self.order).last_tim;
        self.clock.now().max(last)
    }

    /// Queues frames a shared log has committed, in its order, to be
    /// written to this room's log and relayed.
    pub fn deliver(&self, frames: impl IntoIterator<Item = Frame>) -> Vec<Receipt> {
        let mut order = lock(&self.order);
        let receipts = frames
            .into_iter()
            .map(|frame| {
                // Frames from a shared log were checked to have a `tim`.
                let tim = frame.tim().unwrap_or(order.last_tim);
                order.last_tim = order.last_tim.max(tim);
                let (tx, rx) = oneshot::channel();
                order.queue.push((frame, tim, Ack(tx)));
                rx
            })
            .collect();
        order.delivered = true;
        self.kick(order);
        receipts
    }

    /// Gets the queue written: wakes the writer thread if it waits for
    /// what the queue now holds, or writes in place when the log never
    /// blocks.
    fn kick(&self, mut order: MutexGuard<'_, Order>) {
        if self.threaded.load(std::sync::atomic::Ordering::Acquire) {
            let wake = match order.writer {
                Waiting::Nothing => false,
                Waiting::Message => true,
                Waiting::FullBatch => order.queue.len() >= FULL_BATCH,
            };
            if wake {
                order.writer = Waiting::Nothing;
                // Under the lock: were this thread preempted between the
                // two, no later publisher would wake the writer.
                self.queued.notify_one();
            }
        } else {
            drop(order);
            self.write_batch();
        }
    }

    /// Writes everything queued so far as one batch, then relays it.
    /// Returns how many messages it wrote.
    fn write_batch(&self) -> usize {
        let _writing = lock(&self.writing);
        let batch = std::mem::take(&mut lock(&self.order).queue);
        let len = batch.len();
        if len > 0 {
            self.commit(batch);
        }
        len
    }

    fn commit(&self, batch: Vec<(Frame, DateTime<Utc>, Ack)>) {
        let mut frames = Vec::with_capacity(batch.len());
        let mut rest = Vec::with_capacity(batch.len());
        for (frame, tim, ack) in batch {
            frames.push(frame);
            rest.push((tim, ack));
        }
        match self.log.append(&frames) {
            Ok(()) => {
                // Found before taking the lock; most batches hold none.
                let mut actions: Vec<(usize, Moderated)> = frames
                    .iter()
                    .enumerate()
                    .filter_map(|(i, frame)| Moderated::of(frame).map(|acted| (i, acted)))
                    .collect();
                actions.reverse();
                let mut state = lock(&self.state);
                for (i, (frame, (tim, _))) in frames.into_iter().zip(&rest).enumerate() {
                    // Applied before anyone sees the action.
                    if actions.last().is_some_and(|(at, _)| *at == i)
                        && let Some((_, acted)) = actions.pop()
                    {
                        self.moderate(&mut state, &acted);
                    }
                    state.relay(*tim, frame);
                }
                drop(state);
                for (_, ack) in rest {
                    ack.send(Ok(()));
                }
            }
            Err(e) => {
                for (_, ack) in rest {
                    ack.send(Err(e.clone()));
                }
            }
        }
    }

    /// Applies a relayed moderation action.
    fn moderate(&self, state: &mut State, acted: &Moderated) {
        match acted.action() {
            Action::Retract { tim } => state.retract(*tim),
            _ => lock(&self.mutes).apply(acted),
        }
    }

    /// When `usr`'s mute ends, if it is muted now.
    pub fn muted_until(&self, usr: &str) -> Option<DateTime<Utc>> {
        let mutes = lock(&self.mutes);
        if mutes.is_empty() {
            return None;
        }
        mutes.until(usr, self.clock.now())
    }

    /// The writer thread: writes batches until the room is gone. When the
    /// last batch was small, quickly written and recent, it first lingers
    /// for more (see [`COMMIT_DELAY`]), so one wake-up serves many
    /// messages; never for frames a shared log delivered.
    fn write_forever(&self) {
        // When the last batch was written, if lingering for the next may
        // pay: it was small and quickly written.
        let mut linger_after: Option<Instant> = None;
        loop {
            let mut order = lock(&self.order);
            while order.queue.is_empty() && !order.closed {
                order.writer = Waiting::Message;
                order = self.queued.wait(order).unwrap_or_else(|e| e.into_inner());
            }
            order.writer = Waiting::Nothing;
            if order.queue.is_empty() {
                return;
            }
            let delivered = std::mem::take(&mut order.delivered);
            let recent = linger_after.filter(|at| at.elapsed() < COMMIT_DELAY);
            if let Some(at) = recent.filter(|_| !delivered) {
                let until = at + COMMIT_DELAY;
                while order.queue.len() < FULL_BATCH && !order.closed {
                    let Some(left) = until
                        .checked_duration_since(Instant::now())
                        .filter(|left| !left.is_zero())
                    else {
                        break;
                    };
                    order.writer = Waiting::FullBatch;
                    order = self
                        .queued
                        .wait_timeout(order, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                order.writer = Waiting::Nothing;
                #[cfg(test)]
                self.lingers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            drop(order);
            let started = Instant::now();
            let len = self.write_batch();
            // A slow write (a sync, a slow disk) gathered the next batch
            // already, and frames a shared log delivered come a read at a
            // time, the next only once these are relayed: no linger after
            // either.
            let quick = started.elapsed() < COMMIT_DELAY;
            linger_after = (quick && len < FULL_BATCH && !delivered).then(Instant::now);
        }
    }

    /// The room's own log.
    pub fn log(&self) -> &dyn Log {
        self.log.as_ref()
    }

    /// The room's own log, shared.
    pub(super) fn log_arc(&self) -> Arc<dyn Log> {
        self.log.clone()
    }

    /// The shared log, if any, shared.
    pub(super) fn shared_arc(&self) -> Option<Arc<dyn SharedLog>> {
        self.shared.clone()
    }

    /// The shared log, if the room has one.
    pub fn shared(&self) -> Option<&dyn SharedLog> {
        self.shared.as_deref()
    }

    /// Ends the writer thread once the queue is written.
    pub fn stop(&self) {
        let mut order = lock(&self.order);
        order.closed = true;
        order.writer = Waiting::Nothing;
        drop(order);
        self.queued.notify_all();
    }

    /// Reopens the log between batches (log rotation).
    pub fn reopen(&self) -> Result<(), LogError> {
        let _between_batches = lock(&self.writing);
        self.log.reopen()
    }
}
