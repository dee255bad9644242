//! Resume by cursor: a member that comes back with the `tim` of the last
//! message it saw first reads what came after it from the log, page by
//! page at its own pace, then joins the live ring with no gap and no
//! duplicate. Also the reads of the archive over HTTP ([`Room::read`]).
//!
//! The log holds everything it committed, in `tim` order, so catching up
//! is reading it by cursor; a member is joined to the ring only once a
//! read comes close enough to the end that the room's window of recent
//! messages covers the rest. A catch-up therefore never lags the ring,
//! however long it is, and holds one page in memory at a time.

use chrono::{DateTime, Utc};

use super::Room;
use super::member::Member;
use crate::error::LogError;
use crate::frame::Frame;

/// The frames up to `relayed`, the `tim` of the last relayed message.
fn only_relayed(mut frames: Vec<Frame>, relayed: Option<DateTime<Utc>>) -> Vec<Frame> {
    frames.retain(|f| relayed.is_some_and(|last| f.tim().is_some_and(|t| t <= last)));
    frames
}

/// The notice that nothing between `since` and `first` (the oldest
/// message held, if any) can be replayed.
fn gap_notice(since: &str, first: Option<DateTime<Utc>>) -> Frame {
    let notice = serde_json::json!({
        "gap": {
            "since": since,
            "first": first.map(crate::clock::format_tim),
        }
    });
    Frame::from(notice.to_string())
}

/// What a read of the log by cursor gives back (`None` when the log keeps
/// nothing to read), and the `tim` of the last message relayed when it
/// began.
type RelayedRead = (Option<Vec<Frame>>, Option<DateTime<Utc>>);

/// A member's way back from a cursor: see [`Room::catch_up`].
#[derive(Debug)]
pub struct CatchUp {
    room: Room,
    since: DateTime<Utc>,
    /// The client's `since` as it gave it, for the gap notice.
    since_text: String,
    cursor: DateTime<Utc>,
    started: bool,
}

/// What a catch-up yields next.
#[derive(Debug)]
pub enum Step {
    /// Frames to send, oldest first, before asking for the next step (a
    /// gap notice, when there is one, comes first in the first page).
    Page(Vec<Frame>),
    /// Caught up: the member, which replays the rest and then goes live.
    Live(Member),
}

impl Room {
    /// Starts a catch-up from `since` (the `tim` of the last message a
    /// client saw; `since_text` is how it wrote it). Call
    /// [`CatchUp::next`] until it yields [`Step::Live`], sending each page
    /// before asking for the next.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig, Step};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let room = Room::new(RoomConfig::default().history(10));
    /// let first = room.publish(r#"{"usr":"a","msg":"1"}"#).await.unwrap();
    /// let second = room.publish(r#"{"usr":"a","msg":"2"}"#).await.unwrap();
    /// let since = first.tim().unwrap();
    /// let mut catch_up = room.catch_up(since, &since.to_rfc3339());
    /// let Step::Live(mut member) = catch_up.next(100).unwrap() else { panic!() };
    /// assert_eq!(member.try_recv(), Ok(Some(second)), "only what came after");
    /// # });
    /// ```
    pub fn catch_up(&self, since: DateTime<Utc>, since_text: &str) -> CatchUp {
        CatchUp {
            room: self.clone(),
            since,
            since_text: since_text.to_owned(),
            cursor: since,
            started: false,
        }
    }

    /// Up to `limit` messages, oldest first, strictly after `since` and
    /// strictly before `before` when given; with `before` alone the last
    /// `limit` before it, with neither the newest `limit`; never a
    /// retracted one. Reads the log when it can be read back, else the
    /// in-memory history. May block on a disk.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let room = Room::new(RoomConfig::default().history(10));
    /// for i in 0..5 {
    ///     room.publish(&format!(r#"{{"usr":"a","msg":"{i}"}}"#)).await.unwrap();
    /// }
    /// let newest = room.read(None, None, 2).unwrap();
    /// assert!(newest[1].as_str().contains(r#""msg":"4""#));
    /// let after = room.read(newest[0].tim(), None, 10).unwrap();
    /// assert_eq!(after, newest[1..]);
    /// # });
    /// ```
    pub fn read(
        &self,
        since: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Vec<Frame>, LogError> {
        self.shared.engine.rebuilt.wait()?;
        let read = match since {
            Some(_) => self.read_forward(since, before, limit)?,
            None => self.read_backward(before, limit)?,
        };
        let mut frames = match read {
            Some(frames) => frames,
            None => self.read_memory(since, before, limit),
        };
        if let Some(before) = before {
            frames.retain(|f| f.tim().is_some_and(|t| t < before));
        }
        Ok(frames)
    }

    /// `frames`, a read of the log after `after` in `tim` order, with
    /// what the window holds in the same span and the read lacks (the
    /// log lost it: a trimmed stream, a failover that dropped writes; the
    /// server still holds it, so the client gets it), less what
    /// moderators retracted.
    fn held_after(&self, after: DateTime<Utc>, frames: Vec<Frame>) -> Vec<Frame> {
        let Some(last) = frames.last().and_then(Frame::tim) else {
            return self.unretracted(frames);
        };
        let state = self.lock();
        let held = &state.recent;
        let from = held.partition_point(|(t, _)| *t <= after);
        let to = from.max(held.partition_point(|(t, _)| *t <= last));
        let mut window = held.range(from..to).peekable();
        let mut merged = Vec::with_capacity(frames.len());
        for frame in frames {
            let tim = frame.tim();
            while let Some((_, f)) = window.next_if(|(t, _)| tim.is_some_and(|tim| *t < tim)) {
                merged.push(f.clone());
            }
            window.next_if(|(t, _)| tim == Some(*t));
            merged.push(frame);
        }
        state.drop_retracted(&mut merged);
        merged
    }

    /// Takes the retracted messages out of `frames`.
    fn unretracted(&self, mut frames: Vec<Frame>) -> Vec<Frame> {
        self.lock().drop_retracted(&mut frames);
        frames
    }

    /// Up to `limit` unretracted messages after `since` (and before
    /// `before`) from the log, reading on past the retracted ones.
    fn read_forward(
        &self,
        since: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        let (mut frames, mut cursor) = (Vec::new(), since);
        loop {
            let Some(page) = self.read_after(cursor, limit)? else {
                return Ok(None);
            };
            let full = page.len() == limit;
            cursor = page.last().and_then(Frame::tim).or(cursor);
            frames.extend(self.unretracted(page));
            let past = before.is_some_and(|b| cursor.is_some_and(|c| c >= b));
            if !full || past || frames.len() >= limit {
                frames.truncate(limit);
                return Ok(Some(frames));
            }
        }
    }

    /// The last `limit` unretracted messages before `before` from the
    /// log, reading on past the retracted ones.
    fn read_backward(
        &self,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        let (mut pages, mut held, mut cursor) = (Vec::new(), 0, before);
        loop {
            let Some(page) = self.read_before(cursor, limit)? else {
                return Ok(None);
            };
            let full = page.len() == limit;
            let first = page.first().and_then(Frame::tim);
            let page = self.unretracted(page);
            held += page.len();
            pages.push(page);
            if !full || held >= limit || first.is_none() {
                let mut frames: Vec<Frame> = pages.into_iter().rev().flatten().collect();
                frames.drain(..frames.len().saturating_sub(limit));
                return Ok(Some(frames));
            }
            cursor = first;
        }
    }

    /// [`read`](Self::read) from the in-memory history.
    fn read_memory(
        &self,
        since: Option<DateTime<Utc>>,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Vec<Frame> {
        // By the `tim`s the window keeps beside each frame, in `tim`
        // order: two binary searches, and only what is returned is cloned,
        // so the room's lock is held briefly whatever the history's size.
        let state = self.lock();
        let held = &state.recent;
        let start = held.len().saturating_sub(state.history_cap);
        let from = start.max(held.partition_point(|(t, _)| since.is_some_and(|s| *t <= s)));
        let to = from.max(held.partition_point(|(t, _)| before.is_none_or(|b| *t < b)));
        let take = limit.min(to - from);
        let range = if since.is_some() {
            from..from + take
        } else {
            to - take..to
        };
        held.range(range).map(|(_, f)| f.clone()).collect()
    }

    /// Reads the log that holds the most: the shared log when it can be
    /// read back, else the room's own; only what has been relayed (a log
    /// holds a batch before it is relayed, and a batch may yet be refused).
    fn read_after(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        Ok(self.read_relayed(after, limit)?.0)
    }

    /// [`read_after`](Self::read_after), and the `tim` of the last message
    /// relayed when it started: the read holds everything after `after`
    /// up to that (or `limit`), and nothing later.
    fn read_relayed(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<RelayedRead, LogError> {
        let relayed = self.lock().last_tim();
        let read = match self
            .shared_log()
            .map(|s| s.read_after(after, limit))
            .transpose()?
            .flatten()
        {
            Some(frames) => Some(frames),
            None => self.log().read_after(after, limit)?,
        };
        Ok((read.map(|frames| only_relayed(frames, relayed)), relayed))
    }

    fn read_before(
        &self,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        // Never past what was relayed: read before the next `tim`.
        let Some(relayed) = self.lock().last_tim() else {
            return Ok(self.log().read_before(before, 0)?.map(|_| Vec::new()));
        };
        let bound = relayed + chrono::TimeDelta::nanoseconds(1);
        let before = Some(before.map_or(bound, |b| b.min(bound)));
        match self
            .shared_log()
            .map(|s| s.read_before(before, limit))
            .transpose()?
            .flatten()
        {
            Some(frames) => Ok(Some(frames)),
            None => self.log().read_before(before, limit),
        }
    }

    /// The oldest message the room holds, if any.
    fn oldest(&self) -> Result<Option<Frame>, LogError> {
        Ok(match self.read_after(None, 1)? {
            Some(frames) => frames.into_iter().next(),
            None => self.lock().history().next().cloned(),
        })
    }
}

impl CatchUp {
    /// The next step: a page of at most `limit` messages after the cursor,
    /// or the member once the rest is recent enough to replay from
    /// memory. Reads the log, so it may block on a disk: call it where
    /// blocking is allowed (an async transport: `spawn_blocking`).
    pub fn next(&mut self, limit: usize) -> Result<Step, LogError> {
        self.room.shared.engine.rebuilt.wait()?;
        let mut page = Vec::new();
        if !self.started {
            self.started = true;
            let oldest = self.room.oldest()?;
            let first_tim = oldest.as_ref().and_then(Frame::tim);
            if first_tim.is_none_or(|first| first > self.since) {
                page.push(gap_notice(&self.since_text, first_tim));
            }
        }
        let limit = limit.max(1);
        loop {
            let (read, relayed) = self.room.read_relayed(Some(self.cursor), limit)?;
            let Some(frames) = read else {
                // Nothing to read back: the in-memory history is all there
                // is.
                return Ok(self
                    .join(page, Replay::History)
                    .map_or_else(Step::Page, Step::Live));
            };
            let full = frames.len() == limit;
            let after = self.cursor;
            if let Some(tim) = frames.last().and_then(Frame::tim) {
                self.cursor = tim;
            }
            page.extend(self.room.held_after(after, frames));
            if full {
                return Ok(Step::Page(page));
            }
            match self.join(page, Replay::Window(relayed)) {
                Ok(member) => return Ok(Step::Live(member)),
                // The room relayed more than its window holds while the
                // log was read: the log holds it, so read on (the next
                // read finds at least the window's first message).
                Err(read) if read.is_empty() => page = read,
                Err(read) => return Ok(Step::Page(read)),
            }
        }
    }

    /// Joins replaying `page`, then what the room holds after the cursor;
    /// the ring then brings what is relayed after joining, so nothing
    /// comes twice. [`Replay`] says what it holds (the history, or the
    /// window after a short read). Gives `page` back, not joining, when
    /// the window starts after what the read could see: the room relayed
    /// more than the window holds meanwhile, and the log has the rest.
    fn join(&self, mut page: Vec<Frame>, replay: Replay) -> Result<Member, Vec<Frame>> {
        let state = self.room.lock();
        let mut after = state.recent.partition_point(|(t, _)| *t <= self.cursor);
        match replay {
            Replay::History => {
                let start = state.recent.len().saturating_sub(state.history_cap);
                after = after.max(start);
            }
            Replay::Window(relayed) => {
                let covered = after > 0 || state.last_tim().is_none_or(|last| last <= self.cursor);
                if !covered {
                    let first = state.recent.front().map(|(t, _)| *t);
                    if first.is_some_and(|first| relayed.is_none_or(|r| first > r)) {
                        return Err(page);
                    }
                    page.push(gap_notice(&crate::clock::format_tim(self.cursor), first));
                }
            }
        }
        let ring = self.room.subscribe(&state);
        page.extend(state.recent.range(after..).map(|(_, f)| f.clone()));
        drop(state);
        Ok(self.room.member(page, ring))
    }
}

/// What a catch-up replays from memory when it joins.
#[derive(Debug, Clone, Copy)]
enum Replay {
    /// The history after the cursor: the room keeps no log to read back.
    History,
    /// The room's window of recent messages after the cursor, after a
    /// short read (the log holds nothing more that was relayed when it was
    /// read). Reads stop at the last relayed `tim` and the window ends
    /// there, so the window holds everything after the cursor, unless the
    /// log has lost messages the window still holds (an archive rotated
    /// away, a Redis stream that lost entries): then a gap notice says so,
    /// and the window is replayed from its start. Unless the window starts
    /// after the `tim` of the last message relayed when the read began
    /// (held here): then the room relayed more than the window holds
    /// during the read, the log holds what the window lost, and it is
    /// read, not reported as a gap.
    Window(Option<DateTime<Utc>>),
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::log::Archive;
    use crate::room::RoomConfig;

    fn archive_room(name: &str, config: RoomConfig) -> (Room, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("wschat-resume-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = Arc::new(Archive::open(&path, false).unwrap());
        (Room::with_log(config, log).unwrap(), path)
    }

    fn wait(room: &Room, i: usize) -> Frame {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(room.publish(&format!(r#"{{"usr":"a","msg":"{i}"}}"#)))
            .unwrap()
    }

    /// Runs a catch-up to the end, publishing `during` messages after each
    /// page; everything it yields, and the member.
    fn run(
        room: &Room,
        since: DateTime<Utc>,
        limit: usize,
        during: usize,
        sent: &mut Vec<Frame>,
    ) -> (Vec<Frame>, Member) {
        let mut catch_up = room.catch_up(since, "x");
        let mut got = Vec::new();
        loop {
            match catch_up.next(limit).unwrap() {
                Step::Page(page) => {
                    got.extend(page);
                    for _ in 0..during {
                        let n = sent.len();
                        sent.push(wait(room, n));
                    }
                }
                Step::Live(mut member) => {
                    while let Ok(Some(f)) = member.try_recv() {
                        got.push(f);
                    }
                    return (got, member);
                }
            }
        }
    }

    #[test]
    fn a_long_catch_up_with_publishing_meanwhile_has_no_gap_and_no_duplicate() {
        // A ring of 4: the catch-up is far longer than the ring, and the
        // room goes on publishing between pages.
        let config = RoomConfig::default().rate_limit(None).send_queue(4);
        let (room, path) = archive_room("long", config);
        let mut sent: Vec<Frame> = (0..300).map(|i| wait(&room, i)).collect();
        let since = sent[9].tim().unwrap();
        let (got, mut member) = run(&room, since, 32, 3, &mut sent);
        assert_eq!(got, sent[10..].to_vec());
        assert!(!member.is_too_slow());
        let live = wait(&room, 999);
        assert_eq!(member.try_recv(), Ok(Some(live)), "then live");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_log_rotated_away_ends_the_catch_up_with_a_gap_not_a_spin() {
        // After a rotation the archive is empty while the room's window
        // still holds what was relayed: a catch-up from before the window
        // must end, with a notice for what only the old file holds.
        let (room, path) = archive_room("rotated", RoomConfig::default().rate_limit(None));
        let sent: Vec<Frame> = (0..5).map(|i| wait(&room, i)).collect();
        let rotated = path.with_extension("1");
        std::fs::rename(&path, &rotated).unwrap();
        room.reopen_log().unwrap();
        let mut catch_up = room.catch_up("2001-01-01T00:00:00Z".parse().unwrap(), "x");
        let mut got = Vec::new();
        for _ in 0..10 {
            match catch_up.next(10).unwrap() {
                Step::Page(page) => {
                    assert!(!page.is_empty(), "an empty page: the reader would spin");
                    got.extend(page);
                }
                Step::Live(mut member) => {
                    while let Ok(Some(f)) = member.try_recv() {
                        got.push(f);
                    }
                    let first = crate::clock::format_tim(sent[0].tim().unwrap());
                    assert_eq!(
                        got.iter().filter(|f| f.tim().is_none()).count(),
                        2,
                        "a notice for the empty log, then for the window: {got:?}"
                    );
                    assert!(got[1].as_str().contains(&first), "{got:?}");
                    assert_eq!(got[2..], sent[..], "then the window, whole");
                    std::fs::remove_file(path).unwrap();
                    std::fs::remove_file(rotated).unwrap();
                    return;
                }
            }
        }
        panic!("the catch-up never ended: {got:?}");
    }

    #[test]
    fn a_cursor_past_the_last_message_goes_live_and_misses_nothing() {
        // A cursor ahead of everything relayed (a clock that ran ahead
        // before a restart): the member is caught up, and what is relayed
        // next reaches it even though its `tim` is below the cursor.
        let (room, path) = archive_room("ahead", RoomConfig::default().rate_limit(None));
        wait(&room, 0);
        let (got, mut member) = run(
            &room,
            "2999-01-01T00:00:00Z".parse().unwrap(),
            10,
            0,
            &mut Vec::new(),
        );
        assert!(got.is_empty(), "{got:?}");
        let live = wait(&room, 1);
        assert_eq!(member.try_recv(), Ok(Some(live)));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_cursor_older_than_anything_held_starts_with_a_gap_notice() {
        let (room, path) = archive_room("gap", RoomConfig::default().rate_limit(None));
        let before: DateTime<Utc> = "2001-01-01T00:00:00Z".parse().unwrap();
        let (got, _) = run(&room, before, 10, 0, &mut Vec::new());
        assert_eq!(
            got[0].as_str(),
            r#"{"gap":{"first":null,"since":"x"}}"#,
            "an empty room"
        );
        let sent: Vec<Frame> = (0..3).map(|i| wait(&room, i)).collect();
        let (got, _) = run(&room, before, 10, 0, &mut Vec::new());
        let notice: serde_json::Value = serde_json::from_str(got[0].as_str()).unwrap();
        assert_eq!(
            notice["gap"]["first"].as_str().unwrap(),
            crate::clock::format_tim(sent[0].tim().unwrap())
        );
        assert_eq!(got[1..], sent[..]);
        let (got, _) = run(&room, sent[0].tim().unwrap(), 10, 0, &mut Vec::new());
        assert_eq!(got, sent[1..], "the oldest held as cursor: no notice");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn without_a_log_to_read_the_history_is_what_is_held() {
        let room = Room::new(RoomConfig::default().rate_limit(None).history(3));
        let sent: Vec<Frame> = (0..6).map(|i| wait(&room, i)).collect();
        let (got, _) = run(&room, sent[1].tim().unwrap(), 10, 0, &mut Vec::new());
        assert!(got[0].as_str().starts_with(r#"{"gap":"#), "{got:?}");
        assert_eq!(got[1..], sent[3..]);
        let (got, _) = run(&room, sent[3].tim().unwrap(), 10, 0, &mut Vec::new());
        assert_eq!(got, sent[4..], "the oldest held: no notice");
    }

    #[test]
    fn what_the_log_holds_but_has_not_relayed_is_never_read() {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// An archive whose next append writes, then hangs before it
        /// answers (as a sync that never returns).
        struct Stalling {
            archive: Archive,
            stall: AtomicBool,
        }
        impl crate::log::Log for Stalling {
            fn append(&self, frames: &[Frame]) -> Result<(), LogError> {
                self.archive.append(frames)?;
                while self.stall.load(Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Ok(())
            }
            fn recent(&self, n: usize) -> Result<Vec<Frame>, LogError> {
                self.archive.recent(n)
            }
            fn read_after(
                &self,
                after: Option<DateTime<Utc>>,
                limit: usize,
            ) -> Result<Option<Vec<Frame>>, LogError> {
                self.archive.read_after(after, limit)
            }
            fn read_before(
                &self,
                before: Option<DateTime<Utc>>,
                limit: usize,
            ) -> Result<Option<Vec<Frame>>, LogError> {
                self.archive.read_before(before, limit)
            }
        }
        let path = std::env::temp_dir().join(format!("wschat-resume-{}-stall", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = Arc::new(Stalling {
            archive: Archive::open(&path, false).unwrap(),
            stall: AtomicBool::new(false),
        });
        let room = Room::with_log(RoomConfig::default().rate_limit(None), log.clone()).unwrap();
        let first = wait(&room, 0);
        log.stall.store(true, Ordering::Release);
        let mut pending = room.publish(r#"{"usr":"a","msg":"not yet"}"#);
        while std::fs::read_to_string(&path).unwrap().lines().count() < 2 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(pending.try_outcome().is_none(), "written, not relayed");
        assert_eq!(room.read(None, None, 10).unwrap(), vec![first.clone()]);
        assert_eq!(
            room.read(Some(DateTime::<Utc>::MIN_UTC), None, 10).unwrap(),
            vec![first]
        );
        log.stall.store(false, Ordering::Release);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_room_that_outruns_a_read_misses_nothing_and_claims_no_gap() {
        // While a catch-up reads the log, the room relays more than its
        // window holds: what was relayed meanwhile is in the log, so the
        // catch-up must read it (not report a gap and skip it).
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let (room, log, path) = lossy_room("race");
        let mut sent: Vec<Frame> = (0..10).map(|i| wait(&room, i)).collect();
        let since = sent[4].tim().unwrap();
        let catch_up = room.catch_up(since, "x");
        let publisher = room.clone();
        let during: Arc<Mutex<Vec<Frame>>> = Arc::default();
        let meanwhile = during.clone();
        let reads = Arc::new(AtomicUsize::new(0));
        let counted = reads.clone();
        *log.during_read.lock().unwrap() = Some(Box::new(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            let mut got = meanwhile.lock().unwrap();
            got.extend((100..110).map(|i| wait(&publisher, i)));
        }));
        let got = to_the_end(catch_up);
        assert_eq!(reads.load(Ordering::Relaxed), 1, "the hook ran in a read");
        sent.extend(during.lock().unwrap().iter().cloned());
        assert!(
            got.iter().all(|f| f.tim().is_some()),
            "no gap notice: the log holds everything: {got:?}"
        );
        assert_eq!(
            got,
            sent[5..],
            "everything after the cursor, once, in order"
        );
        std::fs::remove_file(path).unwrap();
    }

    /// An archive that has lost some entries (a trimmed stream, a failover
    /// that lost acknowledged writes), and may run a hook during a read
    /// by cursor (a busy room).
    struct Lossy {
        archive: Archive,
        lost: std::sync::Mutex<Vec<DateTime<Utc>>>,
        during_read: std::sync::Mutex<Option<Box<dyn FnOnce() + Send>>>,
    }

    impl crate::log::Log for Lossy {
        fn append(&self, frames: &[Frame]) -> Result<(), LogError> {
            self.archive.append(frames)
        }
        fn recent(&self, n: usize) -> Result<Vec<Frame>, LogError> {
            self.archive.recent(n)
        }
        fn read_after(
            &self,
            after: Option<DateTime<Utc>>,
            limit: usize,
        ) -> Result<Option<Vec<Frame>>, LogError> {
            let read = self.archive.read_after(after, limit + 16)?;
            if after.is_some() {
                let hook = self.during_read.lock().unwrap().take();
                if let Some(hook) = hook {
                    hook();
                }
            }
            let lost = self.lost.lock().unwrap().clone();
            Ok(read.map(|mut frames| {
                frames.retain(|f| !f.tim().is_some_and(|t| lost.contains(&t)));
                frames.truncate(limit);
                frames
            }))
        }
    }

    fn lossy_room(name: &str) -> (Room, Arc<Lossy>, std::path::PathBuf) {
        let path =
            std::env::temp_dir().join(format!("wschat-resume-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let log = Arc::new(Lossy {
            archive: Archive::open(&path, false).unwrap(),
            lost: Default::default(),
            during_read: Default::default(),
        });
        let config = RoomConfig::default().rate_limit(None).send_queue(2);
        (Room::with_log(config, log.clone()).unwrap(), log, path)
    }

    fn to_the_end(mut catch_up: CatchUp) -> Vec<Frame> {
        let mut got = Vec::new();
        let mut member = loop {
            match catch_up.next(100).unwrap() {
                Step::Page(page) => got.extend(page),
                Step::Live(member) => break member,
            }
        };
        while let Ok(Some(f)) = member.try_recv() {
            got.push(f);
        }
        got
    }

    #[test]
    fn what_the_log_lost_and_the_window_holds_is_replayed_from_the_window() {
        // The log lost a message in the middle of what a read returns;
        // the room's window still holds it, so the client gets it.
        let (room, log, path) = lossy_room("lost-middle");
        let sent: Vec<Frame> = (0..10).map(|i| wait(&room, i)).collect();
        *log.lost.lock().unwrap() = vec![sent[8].tim().unwrap()];
        let got = to_the_end(room.catch_up(sent[4].tim().unwrap(), "x"));
        assert_eq!(got, sent[5..], "everything after the cursor, 8 from memory");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_room_that_outruns_a_read_of_a_lossy_log_still_replays_what_it_holds() {
        // The room relays more than its window while a read runs, and the
        // log lost some of it: what the window still holds is replayed.
        let (room, log, path) = lossy_room("lost-outrun");
        let sent: Vec<Frame> = (0..10).map(|i| wait(&room, i)).collect();
        let publisher = room.clone();
        let lossy = log.clone();
        let during: Arc<std::sync::Mutex<Vec<Frame>>> = Arc::default();
        let meanwhile = during.clone();
        *log.during_read.lock().unwrap() = Some(Box::new(move || {
            let fresh: Vec<Frame> = (100..110).map(|i| wait(&publisher, i)).collect();
            // 104 to 108 lost; the window holds 108 and 109.
            *lossy.lost.lock().unwrap() = fresh[4..9].iter().filter_map(Frame::tim).collect();
            meanwhile.lock().unwrap().extend(fresh);
        }));
        let got = to_the_end(room.catch_up(sent[4].tim().unwrap(), "x"));
        let fresh = during.lock().unwrap().clone();
        let mut held = sent[5..].to_vec();
        held.extend_from_slice(&fresh[..4]);
        held.extend_from_slice(&fresh[8..]);
        assert_eq!(got, held, "all the log and the window hold, once, in order");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn reads_pages_by_cursor_both_ways() {
        let (room, path) = archive_room("read", RoomConfig::default().rate_limit(None));
        let sent: Vec<Frame> = (0..20).map(|i| wait(&room, i)).collect();
        let t = |i: usize| sent[i].tim();
        assert_eq!(room.read(None, None, 3).unwrap(), sent[17..]);
        assert_eq!(room.read(t(4), None, 3).unwrap(), sent[5..8]);
        assert_eq!(room.read(None, t(4), 3).unwrap(), sent[1..4]);
        assert_eq!(room.read(t(4), t(7), 10).unwrap(), sent[5..7]);
        std::fs::remove_file(path).unwrap();
    }
}
