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
use crate::moderation::{Action, Moderated, Rebuild};

/// How long a read by cursor waits for the moderation state before it
/// fails (`unavailable` for a transport), a huge archive still being read.
const WAIT: Duration = Duration::from_secs(10);
/// The first wait before reading again after a failed read; it doubles.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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

/// Every action the logs hold, oldest first, each once.
fn read_back(log: &dyn Log, shared: Option<&dyn SharedLog>) -> Result<Vec<Moderated>, LogError> {
    let mut rebuild = Rebuild::default();
    log.scan(&mut |line| rebuild.line(line))?;
    if let Some(shared) = shared {
        scan_pages(
            |after, limit| shared.read_after(after, limit),
            &mut |line| rebuild.line(line),
        )?;
    }
    Ok(rebuild.finish())
}

impl Engine {
    /// Reads the actions back from the logs and applies them: in place
    /// when reading cannot block (the in-memory log), else on a thread of
    /// its own, trying again with backoff until it succeeds.
    pub fn rebuild(self: &Arc<Self>) {
        let (log, shared) = (self.log_arc(), self.shared_arc());
        if !log.blocks() && shared.is_none() {
            match read_back(log.as_ref(), None) {
                Ok(actions) => self.merge(&actions),
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
            if let Ok(actions) = read_back(log.as_ref(), shared.as_deref()) {
                self.merge(&actions);
            }
            self.rebuilt.finish();
        }
    }

    /// Applies actions read back from the logs.
    fn merge(&self, actions: &[Moderated]) {
        let mut state = lock(&self.state);
        let mut mutes = lock(&self.mutes);
        for acted in actions {
            match acted.action() {
                Action::Retract { tim } => state.retract(*tim),
                _ => mutes.apply(acted),
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
            Ok(actions) => {
                engine.merge(&actions);
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
    pub(crate) fn merge_read_back(&self, actions: &[Moderated]) {
        self.shared.engine.merge(actions);
    }
}
