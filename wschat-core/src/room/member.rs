//! [`Member`]: one client's place in a room (its read position in the ring
//! and its publish rate), and [`Publish`], the commit it awaits.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::broadcast::{self, error::RecvError as RingError, error::TryRecvError};

use super::Room;
use super::commit::Receipt;
use crate::error::{PublishError, RecvError};
use crate::frame::Frame;
use crate::rate::TokenBucket;

/// One member of a room: its place in the room's ring of messages and its
/// publish rate. Dropping it leaves the room.
pub struct Member {
    pub(super) room: Room,
    /// History still to deliver, before the ring; `None` once delivered
    /// (or when there was none), so a waiting member holds one pointer,
    /// not an iterator (README, "Where a waiting connection's memory
    /// goes").
    pub(super) replay: Option<Box<std::vec::IntoIter<Frame>>>,
    pub(super) ring: broadcast::Receiver<Frame>,
    pub(super) too_slow: bool,
    pub(super) bucket: Option<TokenBucket>,
}

impl Member {
    /// The next frame for this member, waiting for one.
    ///
    /// Fails with [`RecvError::TooSlow`] once the member has fallen a whole
    /// ring behind (messages it has not read were overwritten), and with
    /// [`RecvError::Closed`] after [`Room::close`] once the rest is read.
    pub async fn recv(&mut self) -> Result<Frame, RecvError> {
        if let Some(frame) = self.next_replayed() {
            return Ok(frame);
        }
        if self.too_slow {
            return Err(RecvError::TooSlow);
        }
        match self.ring.recv().await {
            Ok(frame) => Ok(frame),
            Err(RingError::Lagged(_)) => self.fail_too_slow(),
            Err(RingError::Closed) => Err(RecvError::Closed),
        }
    }

    /// The next frame if one is ready, without waiting: lets a transport
    /// write everything queued before one flush.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let room = Room::new(RoomConfig::default());
    /// let mut m = room.join();
    /// assert_eq!(m.try_recv(), Ok(None));
    /// room.publish(r#"{"usr":"a","msg":"m"}"#).await.unwrap();
    /// assert!(m.try_recv().unwrap().is_some());
    /// # });
    /// ```
    pub fn try_recv(&mut self) -> Result<Option<Frame>, RecvError> {
        if let Some(frame) = self.next_replayed() {
            return Ok(Some(frame));
        }
        if self.too_slow {
            return Err(RecvError::TooSlow);
        }
        match self.ring.try_recv() {
            Ok(frame) => Ok(Some(frame)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Lagged(_)) => self.fail_too_slow(),
            Err(TryRecvError::Closed) => Err(RecvError::Closed),
        }
    }

    /// Whether the member has fallen so far behind that it has lost
    /// messages. Cheap, and takes `&self`, so a transport blocked writing to
    /// a stalled peer can check it now and then and give up.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let room = Room::new(RoomConfig::default().send_queue(2));
    /// let slow = room.join();
    /// for _ in 0..2 {
    ///     room.publish(r#"{"usr":"a","msg":"m"}"#).await.unwrap();
    /// }
    /// assert!(!slow.is_too_slow());
    /// room.publish(r#"{"usr":"a","msg":"m"}"#).await.unwrap();
    /// assert!(slow.is_too_slow());
    /// # });
    /// ```
    pub fn is_too_slow(&self) -> bool {
        self.too_slow || self.ring.len() > self.room.shared.config.send_queue.next_power_of_two()
    }

    /// The next frame of the history to replay, freeing it once done.
    fn next_replayed(&mut self) -> Option<Frame> {
        let replay = self.replay.as_mut()?;
        let frame = replay.next();
        if frame.is_none() {
            self.replay = None;
        }
        frame
    }

    fn fail_too_slow<T>(&mut self) -> Result<T, RecvError> {
        self.too_slow = true;
        Err(RecvError::TooSlow)
    }

    /// Publishes a raw text frame from this member: the one verb, whatever
    /// the room's log. Counts against the rate limit (every frame does,
    /// valid or not), then validates, authorizes, stamps and queues the
    /// message at once, so the order of calls is the order of messages;
    /// the returned [`Publish`] resolves to the relayed frame once the log
    /// has committed it. A transport may so keep several publishes in
    /// flight and answer them in order.
    ///
    /// ```
    /// use wschat_core::{RateLimit, Room, RoomConfig};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let room = Room::new(RoomConfig::default().rate_limit(RateLimit::new(1.0, 1)));
    /// let mut m = room.join();
    /// let frame = r#"{"usr":"a","msg":"m"}"#;
    /// assert!(m.publish(frame).await.is_ok());
    /// assert_eq!(m.publish(frame).await.unwrap_err().code(), "rate_limited");
    /// # });
    /// ```
    pub fn publish(&mut self, frame: &str) -> Publish {
        match self.check_rate() {
            Ok(()) => self.room.publish(frame),
            Err(e) => Publish::failed(e),
        }
    }

    /// Counts one frame against the rate limit without publishing it, for
    /// frames rejected before they reach the room (binary frames).
    pub fn check_rate(&mut self) -> Result<(), PublishError> {
        let now = Instant::now();
        match self.bucket.as_mut().map(|b| b.try_take(now)) {
            Some(false) => Err(PublishError::RateLimited),
            _ => Ok(()),
        }
    }
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("too_slow", &self.too_slow)
            .finish_non_exhaustive()
    }
}

/// A published message on its way through the log: resolves to the
/// relayed frame once the log has committed it, or to why it was not
/// relayed. The message is already queued: dropping this does not withdraw
/// it. Holds no lock and no thread while it waits.
#[derive(Debug)]
#[must_use = "the publisher learns whether its message was relayed only by awaiting it"]
pub struct Publish(Inner);

#[derive(Debug)]
enum Inner {
    Failed(Option<PublishError>),
    Waiting(Option<Frame>, Receipt),
}

impl Publish {
    pub(super) fn failed(e: PublishError) -> Self {
        Publish(Inner::Failed(Some(e)))
    }

    pub(super) fn waiting(frame: Frame, receipt: Receipt) -> Self {
        Publish(Inner::Waiting(Some(frame), receipt))
    }

    /// The outcome if it is already known, without waiting: with a log that
    /// never blocks (the default), it always is.
    ///
    /// ```
    /// use wschat_core::{Room, RoomConfig};
    ///
    /// let room = Room::new(RoomConfig::default());
    /// let mut publish = room.publish(r#"{"usr":"a","msg":"m"}"#);
    /// assert!(publish.try_outcome().unwrap().is_ok());
    /// ```
    pub fn try_outcome(&mut self) -> Option<Result<Frame, PublishError>> {
        let waker = std::task::Waker::noop();
        match Pin::new(self).poll(&mut Context::from_waker(waker)) {
            Poll::Ready(outcome) => Some(outcome),
            Poll::Pending => None,
        }
    }
}

impl Future for Publish {
    type Output = Result<Frame, PublishError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            Inner::Failed(e) => Poll::Ready(Err(e
                .take()
                .unwrap_or(PublishError::Unavailable("already answered".into())))),
            Inner::Waiting(frame, receipt) => {
                let outcome = std::task::ready!(Pin::new(receipt).poll(cx));
                Poll::Ready(match outcome {
                    Ok(Ok(())) => frame
                        .take()
                        .ok_or_else(|| PublishError::Unavailable("already answered".into())),
                    Ok(Err(e)) => Err(PublishError::Unavailable(format!(
                        "cannot relay now ({e}); try again later"
                    ))),
                    Err(_) => Err(PublishError::Unavailable(
                        "cannot relay now (the log stopped); try again later".into(),
                    )),
                })
            }
        }
    }
}
