//! The archive as a directory of day files: a [`Log`] that writes each
//! message to `DIR/YYYY-MM-DD`, the UTC day of its `tim`, as the original
//! wschat named its log files, so an operator keeps the files (and the
//! `LOG_DIR`) they had, written before relay, with no rotation to run.
//!
//! Every file is JSON Lines in `tim` order and the days sort by name, so a
//! cursor read finds its day by name and its place in that day's file by
//! binary search, then walks on day by day.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, NaiveDate, Utc};

use super::{Log, lines};
use crate::error::LogError;
use crate::frame::Frame;

/// How a day file is named: `YYYY-MM-DD`, as the original wschat named it.
const DAY: &str = "%Y-%m-%d";

/// A directory of JSON Lines files, one per UTC day of the messages' `tim`
/// (`DIR/2020-08-11`); no rotation is needed, and reads walk across days.
///
/// ```
/// use wschat_core::{ArchiveDir, Log, Room, RoomConfig};
///
/// let dir = std::env::temp_dir().join(format!("wschat-doc-dir-{}", std::process::id()));
/// let archive = ArchiveDir::open(&dir, false).unwrap();
/// let room = Room::with_log(RoomConfig::default(), std::sync::Arc::new(archive)).unwrap();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// room.publish(r#"{"usr":"a","msg":"kept"}"#).await.unwrap();
/// # });
///
/// let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
/// assert!(std::fs::read_to_string(dir.join(today)).unwrap().contains("kept"));
/// let reopened = ArchiveDir::open(&dir, false).unwrap();
/// assert!(reopened.recent(10).unwrap()[0].as_str().contains("kept"));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug)]
pub struct ArchiveDir {
    dir: PathBuf,
    fsync: bool,
    writer: Mutex<Writer>,
    closed_torn_line: Option<PathBuf>,
    /// Where reads of the cursor's own day file ended.
    places: lines::Places,
    /// Where reads back of the cursor's own day file started.
    places_before: lines::Places,
}

/// A day file and the length to cut it back to.
type Cut = (NaiveDate, u64);

/// What the one writer keeps between batches.
#[derive(Debug, Default)]
struct Writer {
    /// The day file written last, open for the next batch.
    open: Option<(NaiveDate, File)>,
    /// Day files a failed batch left longer than they were, with the length
    /// to cut them back to, when cutting them failed too: nothing more is
    /// written until they are cut.
    owed: Vec<Cut>,
}

impl ArchiveDir {
    /// Opens `dir`, creating it (owner only, mode 0700) if missing, and
    /// today's file in it, so a directory that takes no files fails here
    /// rather than at the first message. With `fsync`, every batch is
    /// synced to disk before it is relayed, and the directory after a day
    /// file is created in it (so the file's name survives a power loss as
    /// its lines do).
    ///
    /// A last line cut short by a crash, in the newest day file, is closed
    /// with a newline, so later messages start on a line of their own, and
    /// is then skipped when reading like any line that is not a message.
    pub fn open(dir: impl AsRef<Path>, fsync: bool) -> Result<Self, LogError> {
        let dir = dir.as_ref().to_path_buf();
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(at(&dir))?;
        let mut archive = ArchiveDir {
            dir,
            fsync,
            writer: Mutex::new(Writer::default()),
            closed_torn_line: None,
            places: lines::Places::default(),
            places_before: lines::Places::default(),
        };
        archive.closed_torn_line = archive.close_torn_line()?;
        let today = Utc::now().date_naive();
        let file = archive.open_day(today)?;
        archive.lock().open = Some((today, file));
        Ok(archive)
    }

    /// The directory's path.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The day file whose torn last line [`open`](Self::open) closed, if
    /// it found one (after a crash in the middle of a write): the operator
    /// should hear of it.
    pub fn closed_torn_line(&self) -> Option<&Path> {
        self.closed_torn_line.as_deref()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, day: NaiveDate) -> PathBuf {
        self.dir.join(day.format(DAY).to_string())
    }

    /// The days that have a file, oldest first; other names are not ours.
    fn days(&self) -> Result<Vec<NaiveDate>, LogError> {
        let mut days = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(at(&self.dir))? {
            let entry = entry.map_err(at(&self.dir))?;
            days.extend(entry.file_name().to_str().and_then(day_of_name));
        }
        days.sort_unstable();
        Ok(days)
    }

    /// Ends the newest non-empty day file with a newline if it lacks one.
    fn close_torn_line(&self) -> Result<Option<PathBuf>, LogError> {
        for day in self.days()?.into_iter().rev() {
            let path = self.path_of(day);
            let meta = std::fs::metadata(&path).map_err(at(&path))?;
            if !meta.is_file() || meta.len() == 0 {
                continue;
            }
            let mut file = OpenOptions::new()
                .read(true)
                .append(true)
                .open(&path)
                .map_err(at(&path))?;
            let mut last = [0u8; 1];
            file.read_exact_at(&mut last, meta.len() - 1)
                .map_err(at(&path))?;
            if last[0] == b'\n' {
                return Ok(None);
            }
            file.write_all(b"\n").map_err(at(&path))?;
            return Ok(Some(path));
        }
        Ok(None)
    }

    /// Opens `day`'s file for appending, creating it with mode 0600.
    fn open_day(&self, day: NaiveDate) -> Result<File, LogError> {
        let path = self.path_of(day);
        let created = OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&path);
        match created {
            Ok(file) => {
                if self.fsync {
                    File::open(&self.dir)
                        .and_then(|dir| dir.sync_all())
                        .map_err(at(&self.dir))?;
                }
                Ok(file)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(at(&path)),
            Err(e) => Err(at(&path)(e)),
        }
    }

    /// Writes `frames` day by day, noting in `touched` each file's length
    /// before its lines, to cut it back to should a later write fail.
    fn write(
        &self,
        writer: &mut Writer,
        frames: &[Frame],
        touched: &mut Vec<Cut>,
    ) -> Result<(), LogError> {
        let days: Vec<NaiveDate> = frames.iter().map(day_of).collect();
        let mut lines = Vec::new();
        let mut start = 0;
        while start < frames.len() {
            let day = days[start];
            let end = start + days[start..].iter().take_while(|d| **d == day).count();
            lines.clear();
            for frame in &frames[start..end] {
                lines.extend_from_slice(frame.as_str().as_bytes());
                lines.push(b'\n');
            }
            let path = self.path_of(day);
            let open = match writer.open.take() {
                Some((open, file)) if open == day => (open, file),
                _ => (day, self.open_day(day)?),
            };
            let (_, file) = writer.open.insert(open);
            touched.push((day, file.metadata().map_err(at(&path))?.len()));
            file.write_all(&lines).map_err(at(&path))?;
            if self.fsync {
                file.sync_data().map_err(at(&path))?;
            }
            start = end;
        }
        Ok(())
    }

    /// Makes each cut in turn; the error and the cuts not made if one
    /// fails.
    fn cut_back(&self, cuts: Vec<Cut>) -> Result<(), (LogError, Vec<Cut>)> {
        for (i, &(day, len)) in cuts.iter().enumerate() {
            if let Err(e) = self.cut(day, len) {
                return Err((at(&self.path_of(day))(e), cuts[i..].to_vec()));
            }
        }
        Ok(())
    }

    /// Cuts `day`'s file back to `len` bytes.
    fn cut(&self, day: NaiveDate, len: u64) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(self.path_of(day))?;
        file.set_len(len)?;
        if self.fsync {
            file.sync_data()?;
        }
        Ok(())
    }
}

/// The UTC day of a frame's `tim`; today for a frame without one (which a
/// room never relays).
fn day_of(frame: &Frame) -> NaiveDate {
    frame.tim().unwrap_or_else(Utc::now).date_naive()
}

/// The day a file is for, if its name is exactly `YYYY-MM-DD`.
fn day_of_name(name: &str) -> Option<NaiveDate> {
    let day = NaiveDate::parse_from_str(name, DAY).ok()?;
    (day.format(DAY).to_string() == name).then_some(day)
}

/// An I/O error as a log error that names the file.
fn at(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |e| LogError::new(format!("{}: {e}", path.display()))
}

impl Log for ArchiveDir {
    /// Writes each message to its day's file; a batch that crosses
    /// midnight is split. A write that fails part-way is cut back, in
    /// every file of the batch, so no line of a batch that was not relayed
    /// stays behind (README, Archive).
    fn append(&self, frames: &[Frame]) -> Result<(), LogError> {
        let mut writer = self.lock();
        if let Err((e, owed)) = self.cut_back(std::mem::take(&mut writer.owed)) {
            writer.owed = owed;
            return Err(e);
        }
        let mut touched = Vec::new();
        let written = self.write(&mut writer, frames, &mut touched);
        if written.is_err() {
            // Last first: a file written twice is cut to its first length.
            touched.reverse();
            if let Err((_, owed)) = self.cut_back(touched) {
                writer.owed = owed;
            }
        }
        written
    }

    fn recent(&self, n: usize) -> Result<Vec<Frame>, LogError> {
        self.read_before(None, n).map(Option::unwrap_or_default)
    }

    fn read_after(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        // Earlier days hold only messages before `after`'s day.
        let first = after.map(|t| t.date_naive());
        let mut frames = Vec::new();
        for day in self.days()? {
            if frames.len() >= limit {
                break;
            }
            if first.is_some_and(|first| day < first) {
                continue;
            }
            let path = self.path_of(day);
            // A place is an offset in the file of its `tim`'s day: only
            // that file's read may use one.
            let places = (first == Some(day)).then_some(&self.places);
            let page = lines::read_after(&path, after, limit - frames.len(), places);
            frames.extend(page.map_err(at(&path))?);
        }
        Ok(Some(frames))
    }

    fn scan(&self, each: &mut dyn FnMut(&str)) -> Result<(), LogError> {
        for day in self.days()? {
            let path = self.path_of(day);
            lines::scan(&path, each).map_err(at(&path))?;
        }
        Ok(())
    }

    fn read_before(
        &self,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        // Later days hold only messages after `before`'s day.
        let last = before.map(|t| t.date_naive());
        let (mut pages, mut read) = (Vec::new(), 0);
        for day in self.days()?.into_iter().rev() {
            if read >= limit {
                break;
            }
            if last.is_some_and(|last| day > last) {
                continue;
            }
            let path = self.path_of(day);
            let places = (last == Some(day)).then_some(&self.places_before);
            let page =
                lines::read_before(&path, before, limit - read, places).map_err(at(&path))?;
            read += page.len();
            pages.push(page);
        }
        Ok(Some(pages.into_iter().rev().flatten().collect()))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wschat-archive-dir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// Messages on four days (none on 2020-01-03), the middle ones around
    /// two midnights.
    fn conversation() -> Vec<Frame> {
        let mut tims: Vec<String> = (0..3)
            .map(|s| format!("2019-12-31T12:00:0{s}.000000000Z"))
            .collect();
        tims.extend((57..60).map(|s| format!("2019-12-31T23:59:{s}.500000000Z")));
        tims.extend((0..4).map(|s| format!("2020-01-01T00:00:0{s}.000000000Z")));
        tims.extend((55..60).map(|s| format!("2020-01-01T23:59:{s}.999999999Z")));
        tims.extend((0..3).map(|s| format!("2020-01-02T00:00:0{s}.000000000Z")));
        tims.extend((0..5).map(|s| format!("2020-01-04T08:00:0{s}.000000000Z")));
        tims.iter()
            .enumerate()
            .map(|(i, tim)| {
                let pad = "x".repeat(i * 53 % 300);
                Frame::from(format!(r#"{{"usr":"a","msg":"{i}{pad}","tim":"{tim}"}}"#))
            })
            .collect()
    }

    fn at(frame: &Frame) -> Option<DateTime<Utc>> {
        frame.tim()
    }

    fn lines_of(frames: &[Frame]) -> String {
        frames.iter().map(|f| format!("{f}\n")).collect()
    }

    /// `conversation()` written in batches, one crossing a midnight and one
    /// crossing two.
    fn written(name: &str) -> (PathBuf, ArchiveDir, Vec<Frame>) {
        let dir = temp(name);
        let archive = ArchiveDir::open(&dir, true).unwrap();
        let all = conversation();
        for batch in [&all[..2], &all[2..9], &all[9..13], &all[13..20], &all[20..]] {
            archive.append(batch).unwrap();
        }
        (dir, archive, all)
    }

    #[test]
    fn each_message_goes_to_the_file_of_its_day() {
        let (dir, _archive, all) = written("days");
        for (day, range) in [
            ("2019-12-31", 0..6),
            ("2020-01-01", 6..15),
            ("2020-01-02", 15..18),
            ("2020-01-04", 18..23),
        ] {
            let text = std::fs::read_to_string(dir.join(day)).unwrap();
            assert_eq!(text, lines_of(&all[range]), "{day}");
        }
        assert!(!dir.join("2020-01-03").exists());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pages_across_days_from_every_cursor() {
        let (dir, archive, all) = written("pages");
        let n = all.len();
        for limit in [1, 4, 100] {
            for (i, frame) in all.iter().enumerate() {
                let after = archive.read_after(at(frame), limit).unwrap().unwrap();
                assert_eq!(
                    after,
                    all[i + 1..(i + 1 + limit).min(n)],
                    "after {i}, {limit}"
                );
                let before = archive.read_before(at(frame), limit).unwrap().unwrap();
                assert_eq!(
                    before,
                    all[i.saturating_sub(limit)..i],
                    "before {i}, {limit}"
                );
            }
            let first = archive.read_after(None, limit).unwrap().unwrap();
            assert_eq!(first, all[..limit.min(n)]);
            let last = archive.read_before(None, limit).unwrap().unwrap();
            assert_eq!(last, all[n.saturating_sub(limit)..]);
        }
        // Cursors between messages: a midnight, a day without a file, and
        // before and after everything.
        for (cursor, after, before) in [
            ("2020-01-02T00:00:00Z", 16..18, 13..15),
            ("2020-01-03T12:00:00Z", 18..20, 16..18),
            ("2030-01-01T00:00:00Z", n..n, 21..23),
            ("2000-01-01T00:00:00Z", 0..2, 0..0),
        ] {
            let at = cursor.parse().ok();
            let got = archive.read_after(at, 2).unwrap().unwrap();
            assert_eq!(got, all[after], "after {cursor}");
            let got = archive.read_before(at, 2).unwrap().unwrap();
            assert_eq!(got, all[before], "before {cursor}");
        }
        assert_eq!(archive.read_after(None, 0).unwrap().unwrap(), vec![]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn recent_reads_back_across_days() {
        let (dir, archive, all) = written("recent");
        for n in 0..all.len() + 3 {
            let want = &all[all.len().saturating_sub(n)..];
            assert_eq!(archive.recent(n).unwrap(), want, "{n}");
        }
        let reopened = ArchiveDir::open(&dir, false).unwrap();
        assert_eq!(reopened.recent(8).unwrap(), all[all.len() - 8..]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_dir_is_created_and_files_are_owner_only() {
        let root = temp("created");
        let dir = root.join("a").join("b");
        let archive = ArchiveDir::open(&dir, false).unwrap();
        let all = conversation();
        archive.append(&all[..1]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("2019-12-31")), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // A frame without a `tim` (not one a room relays) goes to today's.
        archive
            .append(&[Frame::from(r#"{"usr":"a","msg":"m"}"#.to_owned())])
            .unwrap();
        let today = Utc::now().date_naive().format("%Y-%m-%d").to_string();
        assert_eq!(
            std::fs::read_to_string(dir.join(&today)).unwrap(),
            "{\"usr\":\"a\",\"msg\":\"m\"}\n"
        );
        assert_eq!(mode(&dir.join(today)), 0o600);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn other_files_in_the_dir_are_ignored() {
        let (dir, archive, all) = written("others");
        let stray = lines_of(&all[20..]);
        for name in [
            "notes",
            "2020-01-05.gz",
            "2020-1-05",
            "2020-01-05~",
            "2020-13-01",
        ] {
            std::fs::write(dir.join(name), &stray).unwrap();
        }
        std::fs::create_dir(dir.join("2020-01-06")).unwrap();
        assert_eq!(archive.recent(3).unwrap(), all[20..]);
        let last = all.last().and_then(Frame::tim);
        assert_eq!(archive.read_after(last, 5).unwrap().unwrap(), vec![]);
        assert_eq!(archive.read_before(None, 2).unwrap().unwrap(), all[21..]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_closed_at_open_and_skipped() {
        let (dir, archive, all) = written("torn");
        drop(archive);
        let newest = dir.join("2020-01-04");
        let mut text = std::fs::read_to_string(&newest).unwrap();
        text.push_str(r#"{"usr":"a","msg":"cut sh"#);
        std::fs::write(&newest, text).unwrap();
        let archive = ArchiveDir::open(&dir, false).unwrap();
        assert_eq!(archive.closed_torn_line(), Some(newest.as_path()));
        let next = Frame::from(
            r#"{"usr":"a","msg":"next","tim":"2020-01-04T09:00:00.000000000Z"}"#.to_owned(),
        );
        archive.append(std::slice::from_ref(&next)).unwrap();
        let mut want = all[all.len() - 2..].to_vec();
        want.push(next.clone());
        assert_eq!(archive.recent(3).unwrap(), want);
        assert_eq!(
            archive.read_after(all[21].tim(), 5).unwrap().unwrap(),
            want[1..]
        );
        let text = std::fs::read_to_string(&newest).unwrap();
        assert!(text.ends_with(&format!("\"cut sh\n{next}\n")), "{text}");
        assert_eq!(
            ArchiveDir::open(&dir, false).unwrap().closed_torn_line(),
            None
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_batch_that_fails_on_its_second_day_leaves_nothing_of_it() {
        let dir = temp("half");
        let archive = ArchiveDir::open(&dir, false).unwrap();
        let all = conversation();
        archive.append(&all[..12]).unwrap();
        // The next day's file cannot be opened: a directory is in the way.
        std::fs::create_dir(dir.join("2020-01-02")).unwrap();
        assert!(archive.append(&all[12..16]).is_err());
        assert_eq!(
            std::fs::read_to_string(dir.join("2020-01-01")).unwrap(),
            lines_of(&all[6..12]),
            "the first day's lines of the failed batch are cut"
        );
        std::fs::remove_dir(dir.join("2020-01-02")).unwrap();
        archive.append(&all[12..]).unwrap();
        assert_eq!(archive.read_after(None, 100).unwrap().unwrap(), all);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_in_the_way_is_an_error() {
        let path = temp("in-the-way");
        std::fs::write(&path, "").unwrap();
        for dir in [path.clone(), path.join("below")] {
            let err = ArchiveDir::open(&dir, false).unwrap_err().to_string();
            assert!(err.contains(path.to_str().unwrap()), "{err}");
        }
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_day_file_name_is_exactly_yyyy_mm_dd() {
        assert_eq!(
            day_of_name("2020-01-02"),
            NaiveDate::from_ymd_opt(2020, 1, 2)
        );
        for name in [
            "2020-1-02",
            "2020-01-2",
            "20-01-02",
            "2020-01-02 ",
            "2020-02-30",
            "x",
        ] {
            assert_eq!(day_of_name(name), None, "{name}");
        }
    }
}
