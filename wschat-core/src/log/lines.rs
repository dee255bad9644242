//! Reading a JSON Lines file of relayed messages by cursor (`tim`): the
//! file is in `tim` order, so the place of a cursor is found by binary
//! search over byte offsets, and a page costs what its lines cost, not
//! what the file does (a resume into a gigabyte archive reads a few
//! kilobytes to find its place).
//!
//! Lines that are not messages with a `tim` (a torn line after a crash)
//! are skipped; so is a last line without its newline, which a writer may
//! be in the middle of.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::frame::Frame;

/// How much is read at a time.
const CHUNK: usize = 16 * 1024;

/// How many read positions [`Places`] keeps: about one per catch-up
/// under way.
const PLACES: usize = 64;

/// Where recent reads by cursor of one file ended: the offset of the line
/// after the message with a given `tim`. A catch-up reads on from where
/// its last page ended, and finding that place again by binary search
/// reads some thirty chunks of a gigabyte file, more than a page of small
/// messages costs. The file only grows (a cut-back after a failed write
/// removes lines never relayed, so never read), so a place stays right
/// until the file is replaced: [`clear`](Self::clear) then.
#[derive(Debug, Default)]
pub(crate) struct Places(Mutex<std::collections::VecDeque<(DateTime<Utc>, u64)>>);

impl Places {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(DateTime<Utc>, u64)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, tim: DateTime<Utc>) -> Option<u64> {
        self.lock()
            .iter()
            .rev()
            .find(|(t, _)| *t == tim)
            .map(|(_, pos)| *pos)
    }

    fn put(&self, tim: DateTime<Utc>, pos: u64) {
        let mut places = self.lock();
        if places.len() == PLACES {
            places.pop_front();
        }
        places.push_back((tim, pos));
    }

    /// Forgets every place: the file was replaced (reopened after a
    /// rotation).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }
}

/// Up to `limit` messages with `tim` strictly after `after` (from the
/// start when `None`), oldest first. `places`, if given, remembers where
/// the read ended, and tells where one ended before at `after`.
pub(crate) fn read_after(
    path: &Path,
    after: Option<DateTime<Utc>>,
    limit: usize,
    places: Option<&Places>,
) -> io::Result<Vec<Frame>> {
    let Some(file) = open(path)? else {
        return Ok(Vec::new());
    };
    let start = match after {
        Some(after) => file.place(places, after, |tim| tim > after)?,
        None => 0,
    };
    let mut frames = Vec::new();
    let mut pos = start;
    while frames.len() < limit {
        let Some((line, end)) = file.line_at(pos)? else {
            break;
        };
        frames.extend(message(line));
        pos = end;
    }
    if let (Some(places), Some(tim)) = (places, frames.last().and_then(Frame::tim)) {
        places.put(tim, pos);
    }
    Ok(frames)
}

/// Up to `limit` messages with `tim` strictly before `before` (up to the
/// end when `None`), oldest first: the last `limit` of them. `places`
/// (not those of [`read_after`]) remembers where the oldest read starts,
/// so that reading on backwards from it needs no search.
pub(crate) fn read_before(
    path: &Path,
    before: Option<DateTime<Utc>>,
    limit: usize,
    places: Option<&Places>,
) -> io::Result<Vec<Frame>> {
    let Some(file) = open(path)? else {
        return Ok(Vec::new());
    };
    let mut end = match before {
        Some(before) => file.place(places, before, |tim| tim >= before)?,
        None => file.len,
    };
    let mut frames = Vec::new();
    let mut oldest = None;
    while end > 0 && frames.len() < limit {
        let start = file.line_start_before(end)?;
        if let Some(frame) = file.line_at(start)?.and_then(|(line, _)| message(line)) {
            oldest = frame.tim().map(|tim| (tim, start));
            frames.push(frame);
        }
        end = start;
    }
    if let (Some(places), Some((tim, start))) = (places, oldest) {
        places.put(tim, start);
    }
    frames.reverse();
    Ok(frames)
}

/// Lines longer than this are passed over by [`scan`] rather than held
/// in memory whole (a message is far smaller; a damaged file may not be).
const MAX_SCANNED_LINE: usize = 16 * 1024 * 1024;

/// Calls `each` with every whole line of the file that is UTF-8 text,
/// front to back, in one sequential read holding at most one line (a last
/// line without its newline is left out, as in the reads by cursor, and so
/// is a line longer than [`MAX_SCANNED_LINE`]).
pub(crate) fn scan(path: &Path, each: &mut dyn FnMut(&str)) -> io::Result<()> {
    use std::io::BufRead;
    let Some(Lines { file, .. }) = open(path)? else {
        return Ok(());
    };
    let mut reader = io::BufReader::with_capacity(16 * CHUNK, file);
    let (mut line, mut too_long) = (Vec::new(), false);
    loop {
        let buf = reader.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        let (taken, ends) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (buf.len(), false),
        };
        too_long |= line.len() + taken > MAX_SCANNED_LINE;
        if !too_long {
            line.extend_from_slice(&buf[..taken]);
        }
        reader.consume(taken + usize::from(ends));
        if ends {
            if let (false, Ok(text)) = (too_long, std::str::from_utf8(&line)) {
                each(text);
            }
            line.clear();
            too_long = false;
        }
    }
}

/// A line as a relayable frame with its `tim`, if it is one.
fn message(line: Vec<u8>) -> Option<Frame> {
    let frame = Frame::try_from_bytes(line.into()).ok()?;
    frame.tim().map(|_| frame)
}

/// The file at `path` to read; `None` when there is none, or it is not
/// a regular file.
fn open(path: &Path) -> io::Result<Option<Lines>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Ok(None);
    }
    Ok(Some(Lines {
        len: meta.len(),
        file,
    }))
}

/// A file read by byte offset, as it was when opened (later appends are
/// beyond `len`).
struct Lines {
    file: File,
    len: u64,
}

impl Lines {
    /// The line that starts at `pos` (without its newline) and where the
    /// next one starts; `None` at the end, or for a last line without its
    /// newline.
    fn line_at(&self, pos: u64) -> io::Result<Option<(Vec<u8>, u64)>> {
        let mut line = Vec::new();
        let mut at = pos;
        let mut buf = vec![0u8; CHUNK];
        while at < self.len {
            let want = CHUNK.min((self.len - at) as usize);
            let n = self.file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
                line.extend_from_slice(&buf[..i]);
                return Ok(Some((line, at + i as u64 + 1)));
            }
            line.extend_from_slice(&buf[..n]);
            at += n as u64;
        }
        Ok(None)
    }

    /// The start of the first line that begins at or after `pos`.
    fn line_start_from(&self, pos: u64) -> io::Result<u64> {
        if pos == 0 {
            return Ok(0);
        }
        let mut at = pos - 1;
        let mut buf = vec![0u8; CHUNK];
        while at < self.len {
            let want = CHUNK.min((self.len - at) as usize);
            let n = self.file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
                return Ok(at + i as u64 + 1);
            }
            at += n as u64;
        }
        Ok(self.len)
    }

    /// The start of the line that ends just before `end` (a line start).
    fn line_start_before(&self, end: u64) -> io::Result<u64> {
        // `end - 1` is the newline ending that line; look before it.
        let mut hi = end.saturating_sub(1);
        let mut buf = vec![0u8; CHUNK];
        while hi > 0 {
            let lo = hi.saturating_sub(CHUNK as u64);
            let n = (hi - lo) as usize;
            self.file.read_exact_at(&mut buf[..n], lo)?;
            if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
                return Ok(lo + i as u64 + 1);
            }
            hi = lo;
        }
        Ok(0)
    }

    /// Where a read at `cursor` starts: where one ended at it before, as
    /// `places` remembers (if still within the file), else the first
    /// message line whose `tim` satisfies `pred`.
    fn place(
        &self,
        places: Option<&Places>,
        cursor: DateTime<Utc>,
        pred: impl Fn(DateTime<Utc>) -> bool,
    ) -> io::Result<u64> {
        match places
            .and_then(|p| p.get(cursor))
            .filter(|pos| *pos <= self.len)
        {
            Some(pos) => Ok(pos),
            None => self.first_where(pred),
        }
    }

    /// The start of the first message line whose `tim` satisfies `pred`
    /// (or the end of the file), for a `pred` that is false and then true
    /// along the file, as it is for a cursor in a file in `tim` order.
    fn first_where(&self, pred: impl Fn(DateTime<Utc>) -> bool) -> io::Result<u64> {
        // Every message line that starts before `lo` fails `pred`; every
        // one that starts at or after `hi` satisfies it.
        let (mut lo, mut hi) = (0u64, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let mut start = self.line_start_from(mid)?;
            // The first message line from `start` on, before `hi`.
            let mut found = None;
            while start < hi {
                let Some((line, next)) = self.line_at(start)? else {
                    break;
                };
                if let Some(tim) = message(line).and_then(|f| f.tim()) {
                    found = Some((start, next, tim));
                    break;
                }
                start = next;
            }
            match found {
                None => hi = mid,
                Some((_, next, tim)) if !pred(tim) => lo = next,
                Some((start, _, _)) => hi = start,
            }
        }
        Ok(lo)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tim(i: usize) -> String {
        format!("2020-01-01T00:00:{:02}.000000000Z", i)
    }

    fn file_of(name: &str, lines: &[String]) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("wschat-lines-{}-{name}", std::process::id()));
        std::fs::write(&path, lines.concat()).unwrap();
        path
    }

    fn messages(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                format!(
                    "{{\"usr\":\"a\",\"msg\":\"{}\",\"tim\":\"{}\"}}\n",
                    "x".repeat(i * 37 % 500),
                    tim(i)
                )
            })
            .collect()
    }

    fn msgs(frames: &[Frame]) -> Vec<String> {
        frames.iter().map(|f| format!("{f}\n")).collect()
    }

    fn at(i: usize) -> Option<DateTime<Utc>> {
        Some(tim(i).parse().unwrap())
    }

    #[test]
    fn pages_after_and_before_any_cursor() {
        let all = messages(50);
        let path = file_of("pages", &all);
        // One set of places for all the reads: a read after `i` finds the
        // place where the read after `i - 7` ended.
        let places = Places::default();
        let back = Places::default();
        for i in (0..50).rev() {
            assert_eq!(
                msgs(&read_after(&path, at(i), 7, Some(&places)).unwrap()),
                all[(i + 1).min(50)..(i + 8).min(50)].to_vec(),
                "after {i}"
            );
            assert_eq!(
                msgs(&read_before(&path, at(i), 7, Some(&back)).unwrap()),
                all[i.saturating_sub(7)..i].to_vec(),
                "before {i}"
            );
        }
        assert_eq!(
            msgs(&read_after(&path, None, 3, Some(&places)).unwrap()),
            all[..3].to_vec()
        );
        assert_eq!(
            msgs(&read_before(&path, None, 3, Some(&back)).unwrap()),
            all[47..].to_vec()
        );
        assert!(
            read_after(&path, at(59), 3, Some(&places))
                .unwrap()
                .is_empty()
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn paging_on_from_a_remembered_place_reads_what_was_appended() {
        let all = messages(30);
        let path = file_of("places", &all[..20]);
        let places = Places::default();
        let mut got = Vec::new();
        let mut cursor = None;
        loop {
            let page = read_after(&path, cursor, 6, Some(&places)).unwrap();
            let Some(last) = page.last() else { break };
            cursor = last.tim();
            got.extend(msgs(&page));
        }
        assert_eq!(got, all[..20].to_vec());
        // The file grows; the place where the last read ended still holds.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        std::io::Write::write_all(&mut file, all[20..].concat().as_bytes()).unwrap();
        assert_eq!(
            msgs(&read_after(&path, cursor, 100, Some(&places)).unwrap()),
            all[20..].to_vec()
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn skips_torn_lines_and_an_unfinished_last_line() {
        let mut all = messages(10);
        all.insert(4, "{\"usr\":\"a\",\"ms\n".to_owned());
        all.push("{\"usr\":\"a\",\"msg\":\"half".to_owned());
        let path = file_of("torn", &all);
        let got = msgs(&read_after(&path, at(2), 100, None).unwrap());
        let mut want = messages(10)[3..].to_vec();
        want.truncate(7);
        assert_eq!(got, want);
        assert_eq!(
            msgs(&read_before(&path, None, 2, None).unwrap()),
            messages(10)[8..].to_vec()
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_missing_file_holds_nothing() {
        let path = std::env::temp_dir().join("wschat-lines-missing-nothing-here");
        assert!(read_after(&path, None, 3, None).unwrap().is_empty());
        assert!(read_before(&path, None, 3, None).unwrap().is_empty());
    }
}
