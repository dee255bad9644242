//! Reading the moderation state back from the logs when a room starts
//! (README, "Moderation"), without holding up the start.
//!
//! The history a room starts with holds every action that concerns it (an
//! action comes after the message it names), so joining members are
//! replayed the right history at once. The rest of the log (a whole
//! archive, the Redis stream) is read on a thread of its own, and what it
//! finds is applied when it is done, under the rule that a later decision
//! about a name wins: actions relayed meanwhile are never undone. Reads by
//! cursor wait for it, since they may reach any message the log holds.

use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::commit::{Engine, lock};
use crate::error::LogError;
use crate::log::{Log, SharedLog, scan_pages};
use crate::moderation::Rebuild;

/// How long a read by cursor waits for the moderation state before it
/// fails (`unavailable` for a transport), a huge archive still being read.
const WAIT: Duration = Duration::from_secs(10);
/// The first wait before reading again after a failed read; it doubles.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How many read-back decisions are merged under one hold of a lock.
const MERGE_CHUNK: usize = 1024;

/// Whether the moderation state has been read back, and why not yet.
#[derive(Debug, Default)]
pub(crate) struct Rebuilt {
    state: Mutex<Progress>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct Progress {
    done: bool,
    /// Why the last try failed, while it is retried.
    failed: Option<LogError>,
}

impl Rebuilt {
    /// Waits until the state is read back; an error after [`WAIT`].
    pub fn wait(&self) -> Result<(), LogError> {
        let deadline = Instant::now() + WAIT;
        let mut progress = lock(&self.state);
        while !progress.done {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let why = progress
                    .failed
                    .as_ref()
                    .map_or_else(String::new, |e| format!(" ({e})"));
                return Err(LogError::new(format!(
                    "still reading the moderation actions back from the log{why}"
                )));
            }
            progress = self
                .changed
                .wait_timeout(progress, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// Marks the state read back.
    pub fn finish(&self) {
        lock(&self.state).done = true;
        self.changed.notify_all();
    }

    fn failed(&self, e: LogError) {
        lock(&self.state).failed = Some(e);
    }
}

/// What the actions each log holds decide, read a line at a time: each
/// log in its own order, so each is read back as the room applied it.
fn read_back(log: &dyn Log, shared: Option<&dyn SharedLog>) -> Result<Vec<Rebuild>, LogError> {
    let mut own = Rebuild::default();
    log.scan(&mut |line| own.line(line))?;
    let mut rebuilds = vec![own];
    if let Some(shared) = shared {
        let mut stream = Rebuild::default();
        scan_pages(
            |after, limit| shared.read_after(after, limit),
            &mut |line| stream.line(line),
        )?;
        rebuilds.push(stream);
    }
    Ok(rebuilds)
}

impl Engine {
    /// Reads the actions back from the logs and applies them: in place
    /// when reading cannot block (the in-memory log), else on a thread of
    /// its own, trying again with backoff until it succeeds.
    pub fn rebuild(self: &Arc<Self>) {
        let (log, shared) = (self.log_arc(), self.shared_arc());
        if !log.blocks() && shared.is_none() {
            match read_back(log.as_ref(), None) {
                Ok(rebuilds) => self.merge(rebuilds),
                Err(e) => self.rebuilt.failed(e),
            }
            self.rebuilt.finish();
            return;
        }
        let engine = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("wschat-rebuild".into())
            .spawn(move || rebuild_until_done(&engine, log.as_ref(), shared.as_deref()));
        if spawned.is_err() {
            // No thread: read it here, once.
            let (log, shared) = (self.log_arc(), self.shared_arc());
            if let Ok(rebuilds) = read_back(log.as_ref(), shared.as_deref()) {
                self.merge(rebuilds);
            }
            self.rebuilt.finish();
        }
    }

    /// Applies what was read back from the logs, a chunk at a time under
    /// each lock, so relaying and publishing meanwhile wait for one chunk
    /// at most. Relayed actions are never undone: a later decision about
    /// a name wins, and retractions only add up.
    fn merge(&self, rebuilds: Vec<Rebuild>) {
        for rebuild in rebuilds {
            let (retractions, mutes) = rebuild.into_parts();
            let mut tims = retractions.into_tims().peekable();
            while tims.peek().is_some() {
                let mut state = lock(&self.state);
                for tim in tims.by_ref().take(MERGE_CHUNK) {
                    state.retract(tim);
                }
            }
            for chunk in mutes.into_decisions().chunks(MERGE_CHUNK) {
                lock(&self.mutes).merge(chunk);
            }
        }
    }
}

/// The rebuild thread: reads until it succeeds or the room is gone.
fn rebuild_until_done(engine: &Weak<Engine>, log: &dyn Log, shared: Option<&dyn SharedLog>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let outcome = read_back(log, shared);
        let Some(engine) = engine.upgrade() else {
            return;
        };
        match outcome {
            Ok(rebuilds) => {
                engine.merge(rebuilds);
                engine.rebuilt.finish();
                return;
            }
            Err(e) => engine.rebuilt.failed(e),
        }
        drop(engine);
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
impl super::Room {
    /// Applies `actions` as if read back from the log, for tests.
    pub(crate) fn merge_read_back(&self, actions: &[crate::moderation::Moderated]) {
        let mut rebuild = Rebuild::default();
        for acted in actions {
            rebuild.apply(acted);
        }
        self.shared.engine.merge(vec![rebuild]);
    }
}
