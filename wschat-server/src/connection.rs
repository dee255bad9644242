//! One WebSocket connection: read frames and publish them, write what the
//! member reads from the room, keep the connection alive, and close it with
//! the code README, "Errors and close codes", names.
//!
//! One task owns the socket and does both directions, so nothing is shared
//! and no lock is held while writing. Every frame already readable is
//! written before one flush, so under load one write carries many frames.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::stream::FusedStream;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use wschat_core::{
    CatchUp, Frame, LogError, Member, Moderated, Publish, PublishError, RecvError, Step,
};

use crate::config::Limits;
use crate::counted::Counted;
use crate::messages::{fitting, largest_relayed};
use crate::metrics::Metrics;
use crate::server::ConnectionSlot;

/// How long sending a close frame may take: a stalled peer that resumes
/// reading within it still learns why it was closed.
const CLOSE_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the server keeps reading after its close frame, waiting for the
/// client's answer (see [`close`]): long enough for a client to
/// read the close frame and answer across a slow link, short enough that a
/// client that never answers holds its slot only briefly.
const CLOSE_LINGER: Duration = Duration::from_secs(2);
/// The most the server reads and discards after its close frame: more than
/// a client usually has in flight (the rest of an oversized message it was
/// still writing, a few socket buffers' worth), and reading it costs well
/// under a millisecond; a client that sends more is cut off at once.
const CLOSE_LINGER_BYTES: usize = 1 << 20;

/// How many of one connection's messages may await their commit at once
/// (a slow disk, a Redis round trip) before the connection stops reading
/// more from its client: publishing pipelines, and the wait stays bounded.
const MAX_IN_FLIGHT: usize = 64;

/// Why a connection ended, for the log line.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The client closed or vanished.
    ByClient,
    /// The server closed it with this code and reason.
    Closed(CloseCode, &'static str),
    /// A transport error.
    Error(WsError),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::ByClient => f.write_str("by the client"),
            Ended::Closed(code, reason) => write!(f, "by the server, {code} ({reason})"),
            Ended::Error(e) => write!(f, "on error: {e}"),
        }
    }
}

/// A WebSocket connection once it is open and joined, as its task holds
/// it for the connection's life.
pub(crate) struct Open<S> {
    pub ws: WebSocketStream<Counted<S>>,
    pub member: Member,
    /// Its place under `--max-connections`, and the server's state.
    pub slot: ConnectionSlot,
    pub peer: SocketAddr,
}

/// How a connection starts: joined, or resuming from a cursor.
pub(crate) enum Start {
    /// Joined at the upgrade: the history, then live.
    Member(Member),
    /// Resuming: what came after the cursor, at the client's pace, then
    /// live.
    CatchUp(CatchUp),
}

/// The most bytes of messages one catch-up page holds (README, "Resume"):
/// what a resumer that stops reading keeps the server holding for it.
const CATCH_UP_PAGE_BYTES: usize = 1 << 20;
/// The most messages one catch-up page holds, however small they are.
const CATCH_UP_PAGE: usize = 256;

/// Makes the connection a member: at once, or after catching a resuming
/// client up. When that fails the connection is closed (with a close
/// frame, when the server ends it) and why is returned.
pub(crate) async fn join<S>(
    ws: &mut WebSocketStream<Counted<S>>,
    start: Start,
    limits: &Limits,
    metrics: &Metrics,
) -> Result<Member, Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let catch_up = match start {
        Start::Member(member) => return Ok(member),
        Start::CatchUp(catch_up) => catch_up,
    };
    let ended = match Box::pin(catch_up_then_join(ws, catch_up, limits, metrics)).await {
        Ok(member) => return Ok(member),
        Err(ended) => ended,
    };
    finish(ws, &ended).await;
    Err(ended)
}

/// Closes the connection as README, "Errors and close codes" says, when
/// the server ended it; after [`serve`], once the member has left.
pub(crate) async fn finish<S>(ws: &mut WebSocketStream<S>, ended: &Ended)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Ended::Closed(code, reason) = ended {
        Box::pin(close(ws, *code, reason)).await;
    }
}

/// Sends what came after a resuming client's cursor, a page at a time at
/// the client's pace (the next page is read once the last is written),
/// and returns its member once it is caught up. A client whose socket
/// takes nothing for the idle timeout is closed (README, "Resume").
async fn catch_up_then_join<S>(
    ws: &mut WebSocketStream<Counted<S>>,
    mut catch_up: CatchUp,
    limits: &Limits,
    metrics: &Metrics,
) -> Result<Member, Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut largest = largest_relayed(limits.max_message_bytes);
    loop {
        let read = tokio::task::spawn_blocking(move || {
            let page = read_page(&mut catch_up, &mut largest);
            (catch_up, largest, page)
        })
        .await;
        let (page, member) = match read {
            Ok((rest, seen, Ok(page))) => {
                (catch_up, largest) = (rest, seen);
                page
            }
            Ok((_, _, Err(e))) => {
                crate::warn_every::unreadable_log(&e, "a resume");
                return Err(Ended::Closed(
                    CloseCode::Again,
                    "cannot read the archive now",
                ));
            }
            Err(_) => return Err(Ended::Closed(CloseCode::Error, "internal error")),
        };
        if !page.is_empty() {
            let bytes = Box::pin(write_page(ws, page, limits.idle_timeout)).await?;
            metrics.sent(bytes);
        }
        if let Some(member) = member {
            return Ok(member);
        }
    }
}

/// Reads the next page of a catch-up, and its member once caught up (the
/// rest then comes as the member's replay). A page holds at most
/// [`CATCH_UP_PAGE`] messages and [`CATCH_UP_PAGE_BYTES`] even if every
/// message still to read were `largest` bytes: the largest message
/// `--max-message-bytes` lets the server relay, or the largest seen in
/// the log (one written under a larger limit), which it raises. A log
/// read asks for no more messages than that bound allows, so small
/// messages take several reads to fill a page; one message at least.
fn read_page(
    catch_up: &mut CatchUp,
    largest: &mut usize,
) -> Result<(Vec<Frame>, Option<Member>), LogError> {
    let mut page: Vec<Frame> = Vec::new();
    let mut bytes = 0;
    loop {
        let room = CATCH_UP_PAGE_BYTES.saturating_sub(bytes);
        let limit = fitting(room, *largest, CATCH_UP_PAGE.saturating_sub(page.len()));
        if !page.is_empty() && (page.len() >= CATCH_UP_PAGE || limit * *largest > room) {
            return Ok((page, None));
        }
        match catch_up.next(limit)? {
            Step::Page(frames) => {
                for frame in &frames {
                    bytes += frame.len();
                    *largest = (*largest).max(frame.len());
                }
                page.extend(frames);
            }
            Step::Live(member) => return Ok((page, Some(member))),
        }
    }
}

/// Writes one catch-up page and flushes it; its bytes. Gives up only when
/// the socket accepts no byte for `idle`, however long the whole page
/// takes a slow reader (README, "Resume"): each frame is let go once
/// written.
async fn write_page<S>(
    ws: &mut WebSocketStream<Counted<S>>,
    page: Vec<Frame>,
    idle: Duration,
) -> Result<usize, Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut frames = page.into_iter();
    let mut next = frames.next();
    let mut bytes = 0;
    let mut seen = ws.get_ref().written();
    let mut deadline = pin!(tokio::time::sleep(idle));
    poll_fn(|cx| {
        loop {
            match next.take() {
                Some(frame) => match ws.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        bytes += frame.len();
                        if let Err(e) = ws.start_send_unpin(text_message(frame)) {
                            return Poll::Ready(Err(Ended::Error(e)));
                        }
                        next = frames.next();
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Ended::Error(e))),
                    Poll::Pending => next = Some(frame),
                },
                None => {
                    if let Poll::Ready(flushed) = ws.poll_flush_unpin(cx) {
                        return Poll::Ready(flushed.map(|()| bytes).map_err(Ended::Error));
                    }
                }
            }
            // Blocked on the socket: the deadline moves on with every byte
            // it took since.
            let written = ws.get_ref().written();
            if written != seen {
                seen = written;
                deadline.as_mut().reset(Instant::now() + idle);
            }
            ready!(deadline.as_mut().poll(cx));
            return Poll::Ready(Err(idle_close()));
        }
    })
    .await
}

/// Serves a joined member until the connection ends.
///
/// Takes the connection by reference: the caller's task holds it, once,
/// for the connection's whole life, and this future adds only the loop's
/// own state. (Passed by value into an `async fn` it would be stored
/// twice, as its argument and as the local moved from it, and each
/// argument is kept beside the local made from it: what a waiting
/// connection costs is mostly this future, README "Performance".)
/// For the same reason the wait and the work are apart: while waiting, the
/// task holds the keepalive timer, the publishes in flight and the
/// `select!`'s futures; what an event needs written is a boxed future, so
/// nothing of the work is stored beside the wait.
pub(crate) async fn serve<S>(open: &mut Open<S>) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Each part is reached through `open` where it is used: a local
    // naming one would be kept in the waiting state too.
    // Keepalive: one timer, re-armed only when it fires (incoming frames
    // just move `last_seen`), for the next ping or the idle deadline.
    let mut last_seen = Instant::now();
    let mut pinged = false;
    let keepalive = tokio::time::sleep_until(last_seen + open.slot.app.config.limits.ping_interval);
    tokio::pin!(keepalive);
    // Publishes awaiting their commit, answered in order.
    let mut in_flight = InFlight::default();
    loop {
        // The event ends in this block, before the write is awaited.
        let write: Write<'_> = {
            let event = tokio::select! {
                // Shutdown closes the room: what is queued is written,
                // then `recv` says `Closed`.
                delivery = open.member.recv() => Event::Delivery(delivery),
                outcome = next_outcome(&mut in_flight), if !in_flight.is_empty() => {
                    Event::Outcome(outcome)
                }
                incoming = open.ws.next(), if in_flight.len() < MAX_IN_FLIGHT => Event::Incoming(incoming),
                () = &mut keepalive => Event::Keepalive,
            };
            let metrics = &*open.slot.app.metrics;
            let idle_at = last_seen + open.slot.app.config.limits.idle_timeout;
            match event {
                Event::Delivery(Ok(frame)) => Box::pin(write_queued(
                    &mut open.ws,
                    &mut open.member,
                    frame,
                    metrics,
                    idle_at,
                )),
                Event::Delivery(Err(RecvError::TooSlow)) => return too_slow(metrics),
                Event::Delivery(Err(_)) => {
                    return Ended::Closed(CloseCode::Away, "server shutting down");
                }
                Event::Outcome(outcome) => match answer(outcome, metrics) {
                    Some(err) => reject(&mut open.ws, &open.member, metrics, err, idle_at),
                    None => continue,
                },
                Event::Incoming(incoming) => {
                    last_seen = Instant::now();
                    pinged = false;
                    let reply = match incoming {
                        None | Some(Err(WsError::ConnectionClosed | WsError::AlreadyClosed)) => {
                            return Ended::ByClient;
                        }
                        Some(Err(WsError::Capacity(_))) => {
                            return Ended::Closed(CloseCode::Size, "message too large");
                        }
                        Some(Err(WsError::Utf8(_))) => {
                            return Ended::Closed(
                                CloseCode::Invalid,
                                "invalid UTF-8 in a text frame",
                            );
                        }
                        Some(Err(WsError::Protocol(_))) => {
                            return Ended::Closed(CloseCode::Protocol, "protocol error");
                        }
                        Some(Err(e)) => return Ended::Error(e),
                        Some(Ok(Message::Text(text))) => {
                            metrics.received();
                            let mut publish = open.member.publish(&text);
                            // Answered now when the log has already
                            // committed it (always, in memory) and nothing
                            // is ahead of it.
                            match in_flight
                                .is_empty()
                                .then(|| publish.try_outcome())
                                .flatten()
                            {
                                Some(outcome) => answer(outcome, metrics),
                                None => {
                                    in_flight.push_back(publish);
                                    None
                                }
                            }
                        }
                        Some(Ok(Message::Binary(_))) => {
                            metrics.received();
                            Some(
                                open.member
                                    .check_rate()
                                    .err()
                                    .unwrap_or(PublishError::Unsupported),
                            )
                        }
                        // Pongs to pings are queued by tungstenite itself;
                        // a close from the client is answered the same way.
                        Some(Ok(_)) => None,
                    };
                    match reply {
                        // `last_seen` is now: the idle deadline moved.
                        Some(err) => {
                            let idle_at = last_seen + open.slot.app.config.limits.idle_timeout;
                            reject(&mut open.ws, &open.member, metrics, err, idle_at)
                        }
                        None => continue,
                    }
                }
                Event::Keepalive => {
                    let now = Instant::now();
                    if now >= idle_at {
                        return idle_close();
                    }
                    let ping =
                        !pinged && now >= last_seen + open.slot.app.config.limits.ping_interval;
                    pinged |= ping;
                    // Nothing is read while the ping is written, so
                    // `last_seen` cannot move meanwhile: the timer is
                    // re-armed for the same instant as after the write.
                    let next = if pinged {
                        open.slot.app.config.limits.idle_timeout
                    } else {
                        open.slot.app.config.limits.ping_interval
                    };
                    keepalive.as_mut().reset(last_seen + next);
                    if !ping {
                        continue;
                    }
                    let sent = open.ws.send(Message::Ping(Default::default()));
                    Box::pin(unless_stalled(sent, &open.member, metrics, idle_at))
                }
            }
        };
        if let Err(ended) = write.await {
            return ended;
        }
    }
}

/// What the serving loop woke up for.
enum Event {
    Delivery(Result<Frame, RecvError>),
    Outcome(Result<Frame, PublishError>),
    Incoming(Option<Result<Message, WsError>>),
    Keepalive,
}

/// A write the serving loop awaits: one pointer in its state, whichever
/// write it is.
type Write<'a> = Pin<Box<dyn Future<Output = Result<(), Ended>> + Send + 'a>>;

/// Counts a rejected frame and writes its error frame.
fn reject<'a, S>(
    ws: &'a mut WebSocketStream<S>,
    member: &'a Member,
    metrics: &'a Metrics,
    err: PublishError,
    idle_at: Instant,
) -> Write<'a>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    metrics.rejected(&err);
    let sent = ws.send(text_message(err.to_frame()));
    Box::pin(unless_stalled(sent, member, metrics, idle_at))
}

/// The outcome of the oldest publish in flight, once it is known.
async fn next_outcome(in_flight: &mut InFlight) -> Result<Frame, PublishError> {
    let outcome = poll_fn(|cx| match in_flight.front_mut() {
        Some(oldest) => Pin::new(oldest).poll(cx),
        None => Poll::Pending,
    })
    .await;
    in_flight.pop_front();
    outcome
}

/// The publishes of one connection awaiting their commit, oldest first.
/// Behind a pointer, allocated on the first one: most connections never
/// wait for a commit (the in-memory log commits at once), and a waiting
/// connection then holds one pointer instead of a `VecDeque` (README,
/// "Where a waiting connection's memory goes").
#[derive(Default)]
#[allow(clippy::box_collection)] // the point: one pointer while empty
struct InFlight(Option<Box<VecDeque<Publish>>>);

impl InFlight {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |queue| queue.len())
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push_back(&mut self, publish: Publish) {
        self.0.get_or_insert_default().push_back(publish);
    }

    fn front_mut(&mut self) -> Option<&mut Publish> {
        self.0.as_mut()?.front_mut()
    }

    fn pop_front(&mut self) -> Option<Publish> {
        self.0.as_mut()?.pop_front()
    }
}

/// Counts a publish's outcome; the error frame to send, if any.
fn answer(outcome: Result<Frame, PublishError>, metrics: &Metrics) -> Option<PublishError> {
    match outcome {
        Ok(frame) => {
            metrics.relayed();
            if let Some(acted) = Moderated::of(&frame) {
                metrics.moderated(&acted);
            }
            None
        }
        Err(e) => Some(e),
    }
}

/// Writes `first` and everything else already queued, then flushes once.
///
/// One hand-written poll loop for the whole batch: this is the path every
/// delivery takes, and a future (with a stall check) per frame cost 8% of
/// the server's time at full fan-out. Only when the socket blocks does the
/// [`StallCheck`] start.
async fn write_queued<S>(
    ws: &mut WebSocketStream<S>,
    member: &mut Member,
    first: Frame,
    metrics: &Metrics,
    idle_at: Instant,
) -> Result<(), Ended>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut next = Some(first);
    let mut bytes = 0;
    let mut stall = StallCheck::new(idle_at);
    let written = poll_fn(|cx| {
        loop {
            let blocked = match next.take() {
                Some(frame) => match ws.poll_ready_unpin(cx) {
                    Poll::Ready(Ok(())) => {
                        bytes += frame.len();
                        if let Err(e) = ws.start_send_unpin(text_message(frame)) {
                            return Poll::Ready(Err(Ended::Error(e)));
                        }
                        next = match member.try_recv() {
                            Ok(next) => next,
                            Err(RecvError::TooSlow) => return Poll::Ready(Err(too_slow(metrics))),
                            Err(_) => {
                                return Poll::Ready(Err(Ended::Closed(
                                    CloseCode::Away,
                                    "server shutting down",
                                )));
                            }
                        };
                        false
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Ended::Error(e))),
                    Poll::Pending => {
                        next = Some(frame);
                        true
                    }
                },
                None => match ws.poll_flush_unpin(cx) {
                    Poll::Ready(flushed) => return Poll::Ready(flushed.map_err(Ended::Error)),
                    Poll::Pending => true,
                },
            };
            if !blocked {
                continue;
            }
            return stall.poll(cx, member, metrics).map(Err);
        }
    })
    .await;
    if written.is_ok() {
        metrics.sent(bytes);
    }
    written
}

/// How often a blocked write checks whether its member fell too far behind.
const STALL_CHECK: Duration = Duration::from_millis(200);

/// Lets a write blocked on a peer give up once the peer's member has fallen
/// a whole ring behind (a peer that stopped reading must not hold its task
/// forever), or at the idle timeout: nothing is read while a write is
/// blocked, so a peer that stopped reading and answering is closed when it
/// would be if nothing were being written (README, Errors and close codes).
/// Polled only after a write returned `Pending`, so its timer is armed only
/// then.
struct StallCheck {
    timer: Option<Pin<Box<Sleep>>>,
    /// The idle deadline: the peer's last frame plus the idle timeout.
    idle_at: Instant,
}

impl StallCheck {
    fn new(idle_at: Instant) -> Self {
        StallCheck {
            timer: None,
            idle_at,
        }
    }

    /// Ready with why the write gives up; checks every [`STALL_CHECK`] and
    /// at the idle deadline.
    fn poll(&mut self, cx: &mut Context<'_>, member: &Member, metrics: &Metrics) -> Poll<Ended> {
        let idle_at = self.idle_at;
        let next_check = move || (Instant::now() + STALL_CHECK).min(idle_at);
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(next_check())));
        loop {
            ready!(timer.as_mut().poll(cx));
            if member.is_too_slow() {
                return Poll::Ready(too_slow(metrics));
            }
            if Instant::now() >= idle_at {
                return Poll::Ready(idle_close());
            }
            timer.as_mut().reset(next_check());
        }
    }
}

/// Runs a write unless the member falls a whole ring behind or the idle
/// deadline `idle_at` passes first (see [`StallCheck`]).
async fn unless_stalled(
    write: impl Future<Output = Result<(), WsError>>,
    member: &Member,
    metrics: &Metrics,
    idle_at: Instant,
) -> Result<(), Ended> {
    let mut write = pin!(write);
    let mut stall = StallCheck::new(idle_at);
    poll_fn(|cx| {
        if let Poll::Ready(written) = write.as_mut().poll(cx) {
            return Poll::Ready(written.map_err(Ended::Error));
        }
        stall.poll(cx, member, metrics).map(Err)
    })
    .await
}

/// The close for a client that sent nothing, not even a pong, for the idle
/// timeout.
fn idle_close() -> Ended {
    Ended::Closed(CloseCode::Away, "idle timeout")
}

fn too_slow(metrics: &Metrics) -> Ended {
    metrics.dropped_slow();
    Ended::Closed(CloseCode::Policy, "too slow: send queue full")
}

/// Sends a close frame, then lingers (README, Errors and close codes):
/// reads and discards the client's input until its answering close frame,
/// for at most [`CLOSE_LINGER`] and [`CLOSE_LINGER_BYTES`]. Closing a
/// socket with unread input, or input arriving after it is closed, makes
/// the kernel reset the connection, which discards a close frame still in
/// flight and makes a client that is writing give up before it reads why
/// it was closed.
async fn close<S>(ws: &mut WebSocketStream<S>, code: CloseCode, reason: &'static str)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    // A client that does not take the close frame within the timeout is
    // not reading: it would not learn why, so there is nothing to wait for.
    if let Ok(Ok(())) = timeout(CLOSE_SEND_TIMEOUT, ws.close(Some(frame))).await {
        let _ = timeout(CLOSE_LINGER, linger(ws)).await;
    }
}

/// Discards the client's input until its close frame, or at most
/// [`CLOSE_LINGER_BYTES`] of it. Once tungstenite's stream has ended on an
/// error (after a frame too large its buffer is mid-frame), the socket
/// itself is read instead, after a half-close, until the client closes
/// its side, as clients do once they have read the close frame.
async fn linger<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut left = CLOSE_LINGER_BYTES;
    while !ws.is_terminated() {
        match ws.next().await {
            Some(Ok(Message::Close(_))) | None => return,
            Some(Ok(message)) => left = left.saturating_sub(message.len()),
            Some(Err(_)) => {}
        }
        if left == 0 {
            return;
        }
    }
    let stream = ws.get_mut();
    if stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0; 4096];
    while left > 0 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

fn text_message(frame: Frame) -> Message {
    // SAFETY: a `Frame` is valid UTF-8 by construction (see its docs), so
    // the check `Utf8Bytes::try_from` would repeat for every recipient of
    // every message is skipped.
    Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(frame.into_bytes()) })
}
