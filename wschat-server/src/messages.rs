//! The archive over HTTP and the cursor in URLs (README, "Resume"):
//! `GET /messages?since=&before=&limit=`, and the `since` of a WebSocket
//! upgrade that resumes.
//!
//! An answer is bounded in bytes, and only a few are read at once, so
//! that reading the archive cannot take the server's memory or the
//! publishers' CPU (README, "The archive over HTTP").
//!
//! The query string is split on `&` and `=` and each value
//! percent-decoded; `+` stays `+`, since a time's offset (`+01:00`) is
//! often sent unencoded.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;
use tokio::sync::Semaphore;
use tokio::time::timeout;
use wschat_core::{Frame, LogError, Room, parse_tim};

/// How many messages `GET /messages` answers by default, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 1000;

/// A query parameter's decoded value, if the query has it.
pub(crate) fn param<'q>(query: Option<&'q str>, name: &str) -> Option<Cow<'q, str>> {
    query?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name).then(|| percent_decode_str(value).decode_utf8_lossy())
    })
}

/// The `since` of a query, if any: the cursor and its text; an error for
/// a `since` that is not an RFC 3339 time.
pub(crate) fn since(query: Option<&str>) -> Result<Option<(DateTime<Utc>, String)>, String> {
    match param(query, "since") {
        None => Ok(None),
        Some(text) => parse_tim(&text)
            .map(|t| Some((t, text.into_owned())))
            .map_err(|e| format!("since: {e}")),
    }
}

/// What `GET /messages` asks for.
#[derive(Debug, PartialEq)]
pub(crate) struct Query {
    pub since: Option<DateTime<Utc>>,
    pub before: Option<DateTime<Utc>>,
    pub limit: usize,
}

impl Query {
    /// Reads the parameters; an error says which one is wrong and why.
    pub(crate) fn parse(query: Option<&str>) -> Result<Self, String> {
        let before = match param(query, "before") {
            None => None,
            Some(text) => Some(parse_tim(&text).map_err(|e| format!("before: {e}"))?),
        };
        let limit = match param(query, "limit") {
            None => DEFAULT_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => return Err(format!("limit: a whole number from 1 to {MAX_LIMIT}")),
            },
        };
        Ok(Query {
            since: since(query)?.map(|(t, _)| t),
            before,
            limit,
        })
    }
}

/// The most bytes of messages one answer holds (README, "The archive over
/// HTTP"); the client pages on with `since`.
const ANSWER_BYTES: usize = 1 << 20;
/// How many answers are read at once: each costs a blocking thread, up to
/// [`ANSWER_BYTES`] twice over (what was read and the answer) and CPU that
/// publishers would otherwise have.
const MAX_READS: usize = 4;
/// How long a request waits for its turn before it gets `503`.
const READ_WAIT: Duration = Duration::from_secs(1);
/// The `Retry-After` of that `503`, in seconds.
pub(crate) const RETRY_AFTER: &str = "1";
/// What relaying adds to a message besides escapes: its `tim` field.
const TIM_FIELD_BYTES: usize = 48;

/// The largest message that `--max-message-bytes` lets the server relay:
/// relaying writes U+0085 (2 bytes) as `\u0085` (6) and U+2028 and U+2029
/// (3) as `\u2028` and `\u2029` (6), so a message can triple, and it adds
/// the `tim` field.
pub(crate) fn largest_relayed(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(3)
        .saturating_add(TIM_FIELD_BYTES)
}

/// How many messages of at most `largest` bytes fit in `bytes`: one at
/// least, `most` at most.
pub(crate) fn fitting(bytes: usize, largest: usize, most: usize) -> usize {
    (bytes / largest.max(1)).clamp(1, most.max(1))
}

/// The turns of `GET /messages`, and how large a message can be.
pub(crate) struct Reads {
    turns: Arc<Semaphore>,
    /// The largest relayed message `--max-message-bytes` allows.
    largest: usize,
}

impl Reads {
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        Reads {
            turns: Arc::new(Semaphore::new(MAX_READS)),
            largest: largest_relayed(max_message_bytes),
        }
    }
}

/// Why there is no answer.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// [`MAX_READS`] others are being read: try again shortly.
    Busy,
    /// The log cannot be read.
    Log(String),
}

/// Sets its flag when dropped: the request was answered, or its client
/// went away and hyper dropped the request.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The answer's body: the messages as one JSON array, exactly as relayed,
/// at most [`ANSWER_BYTES`] of them (one at least). Waits up to
/// [`READ_WAIT`] for one of [`MAX_READS`] turns; stops reading once the
/// client has gone.
pub(crate) async fn read(room: &Room, reads: &Reads, query: Query) -> Result<Bytes, ReadError> {
    let Ok(Ok(turn)) = timeout(READ_WAIT, reads.turns.clone().acquire_owned()).await else {
        return Err(ReadError::Busy);
    };
    let gone = Arc::new(AtomicBool::new(false));
    let _answered = SetOnDrop(gone.clone());
    let room = room.clone();
    let largest = reads.largest;
    // The turn goes with the read: it ends when the reading does, also
    // when the request is dropped half-way.
    let read = tokio::task::spawn_blocking(move || {
        let answer = Answer::read(&room, &query, largest, &gone);
        drop(turn);
        answer
    })
    .await;
    match read {
        Ok(Ok(answer)) => Ok(answer.into_body()),
        Ok(Err(e)) => Err(ReadError::Log(e.to_string())),
        Err(e) => Err(ReadError::Log(e.to_string())),
    }
}

/// An answer being put together, chunk by chunk, oldest first.
struct Answer {
    /// The chunks read, each oldest first, in the order read.
    chunks: Vec<Vec<Frame>>,
    count: usize,
    bytes: usize,
    /// Whether the next message would take the answer past
    /// [`ANSWER_BYTES`].
    full: bool,
}

impl Answer {
    /// Reads what `query` asks for in chunks of [`ANSWER_BYTES`] of the
    /// largest messages (`largest` bytes, or the largest seen), so that
    /// reading holds no more than the answer twice; after `since` oldest
    /// first, else newest first, back from `before`. Stops early once
    /// `gone` is set.
    fn read(
        room: &Room,
        query: &Query,
        mut largest: usize,
        gone: &AtomicBool,
    ) -> Result<Self, LogError> {
        let mut answer = Answer {
            chunks: Vec::new(),
            count: 0,
            bytes: 0,
            full: false,
        };
        let forward = query.since.is_some();
        let (mut since, mut before) = (query.since, query.before);
        while !answer.full && answer.count < query.limit && !gone.load(Ordering::Relaxed) {
            let want = fitting(ANSWER_BYTES, largest, query.limit - answer.count);
            let frames = room.read(since, before, want)?;
            let read = frames.len();
            largest = frames.iter().map(Frame::len).fold(largest, usize::max);
            let chunk = if forward {
                answer.take(frames.into_iter())
            } else {
                let mut chunk = answer.take(frames.into_iter().rev());
                chunk.reverse();
                chunk
            };
            let next = if forward { chunk.last() } else { chunk.first() };
            match next.and_then(Frame::tim) {
                Some(tim) if forward => since = Some(tim),
                Some(tim) => before = Some(tim),
                None => break,
            }
            answer.chunks.push(chunk);
            if read < want {
                break;
            }
        }
        if !forward {
            answer.chunks.reverse();
        }
        Ok(answer)
    }

    /// Takes `frames` in order until the answer is full.
    fn take(&mut self, frames: impl Iterator<Item = Frame>) -> Vec<Frame> {
        let mut chunk = Vec::new();
        for frame in frames {
            // A comma or bracket each.
            let bytes = frame.len() + 1;
            if self.count > 0 && self.bytes + bytes + 1 > ANSWER_BYTES {
                self.full = true;
                break;
            }
            self.bytes += bytes;
            self.count += 1;
            chunk.push(frame);
        }
        chunk
    }

    fn into_body(self) -> Bytes {
        let mut body = Vec::with_capacity(self.bytes + 2);
        body.push(b'[');
        for (i, frame) in self.chunks.iter().flatten().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(frame.as_str().as_bytes());
        }
        body.push(b']');
        Bytes::from(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_percent_encoded_and_plain_offsets() {
        let plain = since(Some("since=2020-01-01T01:00:00+01:00"))
            .unwrap()
            .unwrap();
        let encoded = since(Some("a=1&since=2020-01-01T01%3A00%3A00%2B01%3A00"))
            .unwrap()
            .unwrap();
        assert_eq!(plain.0, encoded.0);
        assert_eq!(plain.1, "2020-01-01T01:00:00+01:00");
        assert!(since(Some("since=2020-01-01T00:00:00")).is_err());
        assert_eq!(since(Some("x=1")).unwrap(), None);
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(Query::parse(None).unwrap().limit, 100);
        assert_eq!(Query::parse(Some("limit=1000")).unwrap().limit, 1000);
        assert!(Query::parse(Some("limit=1001")).is_err());
        assert!(Query::parse(Some("limit=0")).is_err());
        assert!(Query::parse(Some("limit=x")).is_err());
        assert!(Query::parse(Some("before=soon")).is_err());
    }
}
