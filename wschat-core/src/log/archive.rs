//! The archive: a [`Log`] that appends every relayed message to a JSON Lines
//! file, so a restart serves the history from it and a message any client
//! saw is on disk (handed to the OS before relay; synced first with
//! `fsync`).
//!
//! Reading the last N lines seeks backwards from the end, so the history
//! at start costs what N lines cost, not what the file does. The
//! moderation actions are read back at start in one sequential read of
//! the file ([`Log::scan`]), which parses only the lines that hold a
//! `"mod":` key.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, Utc};

use super::{Log, lines};
use crate::error::LogError;
use crate::frame::Frame;

/// How much is read at a time when scanning backwards for lines.
const CHUNK: usize = 64 * 1024;

/// A JSON Lines file of relayed messages.
///
/// ```
/// use wschat_core::{Archive, Log, Room, RoomConfig};
///
/// let path = std::env::temp_dir().join(format!("wschat-doc-{}.jsonl", std::process::id()));
/// let archive = Archive::open(&path, false).unwrap();
/// let room = Room::with_log(RoomConfig::default(), std::sync::Arc::new(archive)).unwrap();
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// room.publish(r#"{"usr":"a","msg":"kept"}"#).await.unwrap();
/// # });
///
/// let reopened = Archive::open(&path, false).unwrap();
/// assert!(reopened.recent(10).unwrap()[0].as_str().contains("kept"));
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Debug)]
pub struct Archive {
    path: PathBuf,
    fsync: bool,
    file: Mutex<File>,
    skipped: AtomicUsize,
    places: lines::Places,
    places_before: lines::Places,
}

impl Archive {
    /// Opens (or creates, readable by its owner only) `path` for appending.
    /// With `fsync`, every batch is synced to disk before it is relayed. A
    /// batch that fails is cut off again, so the file holds exactly the
    /// batches that were relayed.
    ///
    /// A last line cut short by a crash is closed with a newline, so later
    /// messages start on a line of their own, and is then skipped when
    /// reading like any line that is not a JSON object.
    pub fn open(path: impl AsRef<Path>, fsync: bool) -> Result<Self, LogError> {
        let path = path.as_ref().to_path_buf();
        let file = open_append(&path)?;
        let archive = Archive {
            path,
            fsync,
            file: Mutex::new(file),
            skipped: AtomicUsize::new(0),
            places: lines::Places::default(),
            places_before: lines::Places::default(),
        };
        archive.terminate_torn_line()?;
        Ok(archive)
    }

    /// How many lines the last [`recent`](Log::recent) skipped because they
    /// were not JSON objects (a torn last line after a crash, most likely):
    /// the operator should hear of it.
    pub fn skipped_lines(&self) -> usize {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn terminate_torn_line(&self) -> Result<(), LogError> {
        let mut file = self.lock();
        let len = file.metadata()?.len();
        if len == 0 || !file.metadata()?.is_file() {
            return Ok(());
        }
        let mut last = [0u8; 1];
        let mut reader = File::open(&self.path)?;
        reader.seek(SeekFrom::Start(len - 1))?;
        reader.read_exact(&mut last)?;
        if last[0] != b'\n' {
            file.write_all(b"\n")?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, File> {
        self.file.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last `n` lines of the file that are JSON objects, oldest first,
    /// and how many lines on the way were skipped as not JSON objects.
    fn tail(&self, n: usize) -> Result<(Vec<Frame>, usize), LogError> {
        let mut file = File::open(&self.path)?;
        if n == 0 || !file.metadata()?.is_file() {
            return Ok((Vec::new(), 0));
        }
        let mut end = file.metadata()?.len();
        // The start of a line that began in an earlier chunk.
        let mut carry: Vec<u8> = Vec::new();
        let (mut frames, mut skipped) = (Vec::new(), 0);
        while end > 0 && frames.len() < n {
            let start = end.saturating_sub(CHUNK as u64);
            let mut chunk = vec![0u8; (end - start) as usize];
            file.seek(SeekFrom::Start(start))?;
            file.read_exact(&mut chunk)?;
            chunk.extend_from_slice(&carry);
            let mut lines = chunk.split(|b| *b == b'\n');
            let first = if start > 0 { lines.next() } else { None };
            for line in lines.rev() {
                if frames.len() == n {
                    break;
                }
                match to_frame(line) {
                    Some(frame) => frames.push(frame),
                    None if line.is_empty() => {}
                    None => skipped += 1,
                }
            }
            carry = first.map(<[u8]>::to_vec).unwrap_or_default();
            end = start;
        }
        frames.reverse();
        Ok((frames, skipped))
    }
}

/// A line as a frame, if it is one JSON object.
fn to_frame(line: &[u8]) -> Option<Frame> {
    let text = std::str::from_utf8(line).ok()?;
    let value: &serde_json::value::RawValue = serde_json::from_str(text).ok()?;
    value
        .get()
        .starts_with('{')
        .then(|| Frame::from(text.to_owned()))
}

/// Opens `path` for appending. A file it creates is readable by its owner
/// only (mode 0600: the archive holds every message, also retracted ones),
/// and its folder is synced, so the file's name survives a power loss.
fn open_append(path: &Path) -> Result<File, LogError> {
    let fail = |e: std::io::Error| LogError::new(format!("{}: {e}", path.display()));
    let mut options = OpenOptions::new();
    options.append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.clone().create_new(true).open(path) {
        Ok(file) => {
            sync_folder(path).map_err(fail)?;
            Ok(file)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => options.open(path).map_err(fail),
        Err(e) => Err(fail(e)),
    }
}

/// Syncs the folder that holds `path`, so an entry just created in it is
/// on disk.
fn sync_folder(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let folder = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(folder)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl Log for Archive {
    fn append(&self, frames: &[Frame]) -> Result<(), LogError> {
        let mut batch = Vec::with_capacity(frames.iter().map(|f| f.len() + 1).sum());
        for frame in frames {
            batch.extend_from_slice(frame.as_str().as_bytes());
            batch.push(b'\n');
        }
        let mut file = self.lock();
        // A regular file's length before the batch: what a failed batch is
        // cut back to, so that it leaves no partial line for the next
        // batch to be glued to, and no line that no client received
        // (README, Archive).
        let meta = file.metadata()?;
        let before = meta.is_file().then_some(meta.len());
        let mut written = file.write_all(&batch);
        if written.is_ok() && self.fsync {
            written = file.sync_data();
        }
        let Err(e) = written else {
            return Ok(());
        };
        if let Some(Err(cut)) = before.map(|len| file.set_len(len)) {
            return Err(LogError::new(format!(
                "{e}, and the part written cannot be cut off: {cut}"
            )));
        }
        Err(e.into())
    }

    fn recent(&self, n: usize) -> Result<Vec<Frame>, LogError> {
        let (frames, skipped) = self.tail(n)?;
        self.skipped.store(skipped, Ordering::Relaxed);
        Ok(frames)
    }

    fn read_after(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        Ok(Some(lines::read_after(
            &self.path,
            after,
            limit,
            Some(&self.places),
        )?))
    }

    fn read_before(
        &self,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        Ok(Some(lines::read_before(
            &self.path,
            before,
            limit,
            Some(&self.places_before),
        )?))
    }

    fn scan(&self, each: &mut dyn FnMut(&str)) -> Result<(), LogError> {
        Ok(lines::scan(&self.path, each)?)
    }

    fn reopen(&self) -> Result<(), LogError> {
        let fresh = open_append(&self.path)?;
        *self.lock() = fresh;
        self.places.clear();
        self.places_before.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("wschat-archive-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        dir
    }

    fn frames(n: usize) -> Vec<Frame> {
        (0..n)
            .map(|i| Frame::from(format!(r#"{{"usr":"a","msg":"{i}"}}"#)))
            .collect()
    }

    #[test]
    fn appends_lines_and_reads_the_last_n_back() {
        let path = temp("tail");
        let archive = Archive::open(&path, true).unwrap();
        archive.append(&frames(5)).unwrap();
        assert_eq!(archive.recent(3).unwrap(), frames(5)[2..].to_vec());
        assert_eq!(archive.recent(10).unwrap(), frames(5));
        assert_eq!(archive.recent(0).unwrap(), vec![]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn reads_lines_that_cross_chunk_boundaries() {
        let path = temp("chunks");
        let archive = Archive::open(&path, false).unwrap();
        let big: Vec<Frame> = (0..40)
            .map(|i| Frame::from(format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat(9000 + i))))
            .collect();
        archive.append(&big).unwrap();
        assert_eq!(archive.recent(40).unwrap(), big);
        assert_eq!(archive.recent(7).unwrap(), big[33..].to_vec());
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_closed() {
        let path = temp("torn");
        std::fs::write(&path, "{\"usr\":\"a\",\"msg\":\"0\"}\n{\"usr\":\"a\",\"ms").unwrap();
        let archive = Archive::open(&path, false).unwrap();
        assert_eq!(archive.recent(5).unwrap().len(), 1);
        assert_eq!(archive.skipped_lines(), 1);
        archive.append(&frames(1)).unwrap();
        assert_eq!(
            archive.recent(5).unwrap().len(),
            2,
            "the next message starts on its own line"
        );
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn reopen_follows_a_rename() {
        let path = temp("rotate");
        let rotated = temp("rotate.1");
        let archive = Archive::open(&path, false).unwrap();
        archive.append(&frames(1)).unwrap();
        std::fs::rename(&path, &rotated).unwrap();
        archive.reopen().unwrap();
        archive.append(&frames(2)[1..]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
        assert_eq!(
            std::fs::read_to_string(&rotated).unwrap().lines().count(),
            1
        );
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(rotated).unwrap();
    }

    #[test]
    fn a_failing_disk_is_an_error() {
        let archive = Archive::open("/dev/full", false).unwrap();
        assert!(archive.append(&frames(1)).is_err());
    }
}
