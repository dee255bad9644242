//! The archive over HTTP and the cursor in URLs (README, "Resume"):
//! `GET /messages?since=&before=&limit=`, and the `since` of a WebSocket
//! upgrade that resumes.
//!
//! The query string is split on `&` and `=` and each value
//! percent-decoded; `+` stays `+`, since a time's offset (`+01:00`) is
//! often sent unencoded.

use std::borrow::Cow;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use percent_encoding::percent_decode_str;
use wschat_core::{Frame, Room, parse_tim};

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

/// The answer's body: the messages as one JSON array, exactly as relayed.
pub(crate) async fn read(room: &Room, query: Query) -> Result<Bytes, String> {
    let room = room.clone();
    let read =
        tokio::task::spawn_blocking(move || room.read(query.since, query.before, query.limit))
            .await;
    let frames: Vec<Frame> = match read {
        Ok(Ok(frames)) => frames,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(e) => return Err(e.to_string()),
    };
    let mut body = Vec::with_capacity(frames.iter().map(|f| f.len() + 1).sum::<usize>() + 2);
    body.push(b'[');
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(frame.as_str().as_bytes());
    }
    body.push(b']');
    Ok(Bytes::from(body))
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
