//! [`Frame`]: one serialized outgoing message, shared by every recipient.

use std::fmt;

use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::message::Message;

/// The UTF-8 text of one outgoing message, reference-counted.
///
/// A relayed message is serialized once; each member gets a clone, which
/// costs a reference count, not a copy. The text is always valid UTF-8, so a
/// transport can hand [`into_bytes`](Self::into_bytes) to a text-frame type
/// without checking it again.
///
/// ```
/// use wschat_core::Frame;
///
/// let f = Frame::from(String::from("{}"));
/// let g = f.clone();
/// assert_eq!(f.as_str(), "{}");
/// assert_eq!(f.into_bytes().as_ptr(), g.into_bytes().as_ptr());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Frame(Bytes);

impl Frame {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Only constructed from `String` or checked bytes.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The text's bytes, guaranteed to be valid UTF-8.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Wraps bytes that are valid UTF-8, or gives them back.
    ///
    /// ```
    /// use wschat_core::Frame;
    ///
    /// assert!(Frame::try_from_bytes(bytes::Bytes::from_static(b"ok")).is_ok());
    /// assert!(Frame::try_from_bytes(bytes::Bytes::from_static(b"\xff")).is_err());
    /// ```
    pub fn try_from_bytes(bytes: Bytes) -> Result<Self, Bytes> {
        match std::str::from_utf8(&bytes) {
            Ok(_) => Ok(Frame(bytes)),
            Err(_) => Err(bytes),
        }
    }
}

impl Frame {
    /// The message's `tim`, its place in the room's order (see
    /// [`Room`](crate::Room)); `None` for a frame without one (an error
    /// frame).
    ///
    /// ```
    /// use wschat_core::Frame;
    ///
    /// let f = Frame::from(r#"{"usr":"a","msg":"m","tim":"2020-08-11T22:26:58.118678679Z"}"#.to_owned());
    /// assert_eq!(f.tim().unwrap().to_rfc3339(), "2020-08-11T22:26:58.118678679+00:00");
    /// assert_eq!(Frame::from(r#"{"err":"x"}"#.to_owned()).tim(), None);
    /// ```
    pub fn tim(&self) -> Option<DateTime<Utc>> {
        #[derive(serde::Deserialize)]
        struct Tim<'a> {
            #[serde(borrow)]
            tim: Option<std::borrow::Cow<'a, str>>,
        }
        let tim: Tim<'_> = serde_json::from_str(self.as_str()).ok()?;
        DateTime::parse_from_rfc3339(&tim.tim?)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Checks that `text` is a message as a room relays it (one line, a
    /// valid message with a `tim`), for frames read from a log another
    /// process wrote: what fails here must never be relayed.
    ///
    /// ```
    /// use wschat_core::Frame;
    ///
    /// let ok = r#"{"usr":"a","msg":"m","tim":"2020-08-11T22:26:58.118678679Z"}"#;
    /// assert!(Frame::relayed(ok.to_owned()).is_ok());
    /// assert!(Frame::relayed(r#"{"usr":"a","msg":"m"}"#.to_owned()).is_err());
    /// assert!(Frame::relayed("hello".to_owned()).is_err());
    /// ```
    pub fn relayed(text: String) -> Result<Frame, String> {
        if text.contains(['\n', '\r']) {
            return Err("more than one line".into());
        }
        Message::parse(&text).map_err(|e| e.to_string())?;
        let frame = Frame::from(text);
        match frame.tim() {
            Some(_) => Ok(frame),
            None => Err("no valid \"tim\"".into()),
        }
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Self {
        Frame(Bytes::from(s))
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
