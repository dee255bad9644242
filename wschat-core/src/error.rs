//! The typed errors of the core, one variant per error code of the wire
//! protocol, so a transport can answer a rejected frame without knowing why
//! it was rejected.

use thiserror::Error;

use crate::frame::Frame;

/// Why a published frame was not relayed.
///
/// Each variant maps one to one onto an error code of the protocol
/// ([`code`](Self::code)); the text is the human-readable `detail`, safe to
/// show to the sender (it never holds a secret or a token).
///
/// ```
/// use wschat_core::PublishError;
///
/// let e = PublishError::RateLimited;
/// assert_eq!(e.code(), "rate_limited");
/// assert_eq!(e.to_frame().as_str(),
///            r#"{"err":"rate_limited","detail":"publishing too fast; slow down"}"#);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The frame is not one JSON object that every strict reader accepts.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// `usr` or `msg` is missing or not a string, or `usr` is empty.
    #[error("{0}")]
    InvalidMessage(String),
    /// JWT mode is on and the message's token does not authorize it.
    #[error("{0}")]
    Unauthorized(String),
    /// The sender is over its publish rate.
    #[error("publishing too fast; slow down")]
    RateLimited,
    /// The frame is binary; messages are JSON text frames.
    #[error("binary frames are not supported; send JSON in a text frame")]
    Unsupported,
    /// The message cannot be relayed now (its log is failing); retry later.
    #[error("{0}")]
    Unavailable(String),
    /// A moderator has muted the message's `usr` (README, "Moderation").
    #[error("{0}")]
    Muted(String),
}

impl PublishError {
    /// The protocol's error code, the `err` field of the error frame.
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::InvalidJson(_) => "invalid_json",
            PublishError::InvalidMessage(_) => "invalid_message",
            PublishError::Unauthorized(_) => "unauthorized",
            PublishError::RateLimited => "rate_limited",
            PublishError::Unsupported => "unsupported",
            PublishError::Unavailable(_) => "unavailable",
            PublishError::Muted(_) => "muted",
        }
    }

    /// The error frame sent to the sender alone:
    /// `{"err": code, "detail": reason}`.
    pub fn to_frame(&self) -> Frame {
        #[derive(serde::Serialize)]
        struct ErrorFrame<'a> {
            err: &'a str,
            detail: String,
        }
        let body = ErrorFrame {
            err: self.code(),
            detail: self.to_string(),
        };
        // Serializing two strings cannot fail.
        Frame::from(serde_json::to_string(&body).unwrap_or_default())
    }
}

/// Why a member receives nothing more.
///
/// ```
/// use wschat_core::RecvError;
///
/// assert_eq!(RecvError::TooSlow.to_string(), "too slow: the send queue is full");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The member fell so far behind that messages it had not read were
    /// dropped; the transport should close it rather than skip them.
    #[error("too slow: the send queue is full")]
    TooSlow,
    /// The room was closed (the server is shutting down).
    #[error("the room is closed")]
    Closed,
}

/// A [`Log`](crate::Log) could not store or read messages.
///
/// ```
/// use wschat_core::LogError;
///
/// let e = LogError::new("disk full");
/// assert_eq!(e.to_string(), "log: disk full");
/// assert_eq!(e.reason(), "disk full");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("log: {reason}")]
pub struct LogError {
    reason: String,
}

impl LogError {
    /// A log error with a reason for the operator's log.
    pub fn new(reason: impl Into<String>) -> Self {
        LogError {
            reason: reason.into(),
        }
    }

    /// What went wrong, without the `log: ` that [`Display`](std::fmt::Display)
    /// puts first: for a message that names the log itself ("archive …").
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl From<std::io::Error> for LogError {
    fn from(e: std::io::Error) -> Self {
        LogError::new(e.to_string())
    }
}
