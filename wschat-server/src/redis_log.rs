//! The Redis stream as the room's log: several servers share one room
//! through one stream (README, "Several instances").
//!
//! A stream, not pub/sub: the stream is one ordered log that every instance
//! reads from the last id it has seen, so all clients everywhere see one
//! order, an instance that loses Redis for a while resumes where it left off
//! (as far as the stream's length cap kept it), and history is the stream's
//! tail with no gap to the live messages after it. Pub/sub would drop what
//! is published while an instance is away, and keeps no history.
//!
//! Writing: [`RedisLog`] is the room's [`SharedLog`]. The room hands it
//! each stamped message in stamp order; one writer task appends whatever
//! has queued in one `MULTI`/`XADD`…/`EXEC` round trip (so a publisher is
//! not held to one round trip per message, and each sender's order is
//! kept), and answers each publisher. Reading: one task `XREAD BLOCK`s from
//! the last id and hands what it reads to `Room::deliver`, which writes it
//! to the instance's archive, if any, before relaying it.
//!
//! Every failed Redis call waits with backoff before the next: a Redis
//! that answers errors is never hammered. While the writer backs off,
//! publishing answers `unavailable` at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{
    StreamId, StreamMaxlen, StreamRangeReply, StreamReadOptions, StreamReadReply,
};
use redis::{AsyncCommands, AsyncConnectionConfig, Client};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};
use wschat_core::{Ack, Frame, LogError, Room, SharedLog};

use crate::error::BackplaneError;
use crate::metrics::Metrics;

/// The stream keeps at least this many messages (more with `--history`),
/// so an instance that was away for a while can catch up.
const MIN_STREAM_LEN: usize = 10_000;
/// How long one `XREAD` blocks before asking again.
const BLOCK: Duration = Duration::from_secs(5);
/// The first wait after a failure; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between tries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The most messages appended in one round trip.
const MAX_BATCH: usize = 512;
/// The stream entry field that holds a message.
const FIELD: &str = "m";

/// The room's side of the stream: queues messages for the writer task.
pub(crate) struct RedisLog(mpsc::UnboundedSender<(Frame, Ack)>);

impl SharedLog for RedisLog {
    fn append(&self, frame: Frame, ack: Ack) {
        // Fails only once the writer has stopped (shutdown); the ack is
        // then dropped, which answers `unavailable`.
        let _ = self.0.send((frame, ack));
    }
}

/// A connection to the stream, made before the room exists: the room is
/// built with its [`RedisLog`] and the stream's tail as history.
pub(crate) struct Link {
    client: Client,
    writer: ConnectionManager,
    key: String,
    max_len: usize,
    last_id: String,
    queue: mpsc::UnboundedReceiver<(Frame, Ack)>,
    /// The room's shared log.
    pub log: Arc<RedisLog>,
    /// The stream's last `--history` messages, oldest first.
    pub history: Vec<Frame>,
}

/// One instance's running link to the stream: its two tasks.
pub(crate) struct Backplane {
    up: Arc<AtomicBool>,
    tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Link {
    /// Connects and reads the stream's tail.
    pub(crate) async fn connect(
        url: &str,
        key: &str,
        history: usize,
    ) -> Result<Self, BackplaneError> {
        let client = Client::open(url).map_err(BackplaneError::Url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        let mut writer = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(BackplaneError::Unreachable)?;
        // The newest entries, newest first; the id of the newest is where
        // live reading starts, so nothing falls between history and live.
        let tail: StreamRangeReply = writer
            .xrevrange_count(key, "+", "-", history.max(1))
            .await
            .map_err(BackplaneError::Unreachable)?;
        let last_id = tail
            .ids
            .first()
            .map_or_else(|| "0-0".to_owned(), |e| e.id.clone());
        let mut frames: Vec<Frame> = tail.ids.into_iter().filter_map(message).collect();
        frames.reverse();
        frames.truncate(history);
        let (tx, queue) = mpsc::unbounded_channel();
        info!(key, "backplane: Redis connected");
        Ok(Link {
            client,
            writer,
            key: key.to_owned(),
            max_len: history.max(MIN_STREAM_LEN),
            last_id,
            queue,
            log: Arc::new(RedisLog(tx)),
            history: frames,
        })
    }

    /// Starts writing what the room queues and relaying what the stream
    /// holds after the tail read at connection.
    pub(crate) fn start(self, room: Room, metrics: Arc<Metrics>) -> Backplane {
        let up = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn(write(
            self.writer,
            self.key.clone(),
            self.max_len,
            self.queue,
        ));
        let reader = tokio::spawn(relay(
            self.client,
            self.key,
            self.last_id,
            room,
            up.clone(),
            metrics,
        ));
        Backplane {
            up,
            tasks: [writer, reader],
        }
    }
}

impl Backplane {
    /// Stops writing and relaying: part of the server's shutdown, so a
    /// stopped server holds no connection to Redis.
    pub(crate) fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }

    /// Whether the relaying side is connected to Redis.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// A stream entry as a relayable frame; anything else is skipped with a
/// warning (a foreign writer, or a forged entry), never relayed.
fn message(entry: StreamId) -> Option<Frame> {
    let checked = match entry.get::<String>(FIELD) {
        Some(text) => Frame::relayed(text),
        None => Err(format!("no field {FIELD:?}")),
    };
    checked
        .inspect_err(|why| warn!(id = %entry.id, why, "backplane: skipped a stream entry that is not a wschat message"))
        .ok()
}

/// Doubling waits between failed tries.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Self {
        Backoff(MIN_BACKOFF)
    }

    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        wait
    }
}

/// Appends what the room queues, in order, batch by batch, and answers
/// each publisher.
async fn write(
    mut writer: ConnectionManager,
    key: String,
    max_len: usize,
    mut queue: mpsc::UnboundedReceiver<(Frame, Ack)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut backoff = Backoff::new();
    let mut retry_at: Option<Instant> = None;
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if retry_at.is_some_and(|at| Instant::now() < at) {
            // Backing off: answer at once rather than try Redis again.
            for (_, ack) in batch.drain(..) {
                ack.send(Err(LogError::new("Redis is unreachable")));
            }
            continue;
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (frame, _) in &batch {
            pipe.xadd_maxlen(
                &key,
                StreamMaxlen::Approx(max_len),
                "*",
                &[(FIELD, frame.as_str())],
            )
            .ignore();
        }
        let outcome: Result<(), _> = pipe.query_async(&mut writer).await;
        let outcome = match outcome {
            Ok(()) => {
                backoff = Backoff::new();
                retry_at = None;
                Ok(())
            }
            Err(e) => {
                if retry_at.is_none() {
                    error!(error = %e, "backplane: cannot write to Redis; publishing answers unavailable");
                }
                retry_at = Some(Instant::now() + backoff.next());
                Err(LogError::new("Redis is unreachable"))
            }
        };
        for (_, ack) in batch.drain(..) {
            ack.send(outcome.clone());
        }
    }
}

/// Reads the stream from `last_id` and delivers to the room, forever;
/// reconnects with backoff, resuming from the last id delivered.
async fn relay(
    client: Client,
    key: String,
    mut last_id: String,
    room: Room,
    up: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(BLOCK + Duration::from_secs(5)));
    let options = StreamReadOptions::default()
        .block(BLOCK.as_millis() as usize)
        .count(1024);
    let mut backoff = Backoff::new();
    loop {
        let mut reader = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(reader) => reader,
            Err(e) => {
                if up.swap(false, Ordering::Relaxed) {
                    error!(error = %e, "backplane: Redis is down; publishing answers unavailable");
                }
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        loop {
            let read: Result<StreamReadReply, _> =
                reader.xread_options(&[&key], &[&last_id], &options).await;
            let reply = match read {
                Ok(reply) => reply,
                Err(e) => {
                    if up.swap(false, Ordering::Relaxed) {
                        warn!(error = %e, "backplane: lost Redis; reconnecting");
                    }
                    // Every failure waits, also a read right after a
                    // reconnect (LOADING, WRONGTYPE, NOAUTH...).
                    tokio::time::sleep(backoff.next()).await;
                    break;
                }
            };
            // Only a read that worked says Redis is back.
            backoff = Backoff::new();
            if !up.swap(true, Ordering::Relaxed) {
                metrics.backplane_reconnected();
                info!(%last_id, "backplane: Redis is back; resuming");
            }
            let mut frames = Vec::new();
            let mut next_id = last_id.clone();
            for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                next_id.clone_from(&entry.id);
                frames.extend(message(entry));
            }
            deliver(&room, frames).await;
            last_id = next_id;
        }
    }
}

/// Relays what was read, retrying with backoff while the instance's own
/// archive refuses it: the archive must hold what clients receive, so this
/// instance's clients wait for the disk rather than miss a message.
async fn deliver(room: &Room, frames: Vec<Frame>) {
    if frames.is_empty() {
        return;
    }
    let mut backoff = Backoff::new();
    loop {
        match room.deliver(frames.iter().cloned()).await {
            Ok(()) => return,
            Err(e) => {
                error!(error = %e, "backplane: cannot archive what Redis relayed; retrying");
                tokio::time::sleep(backoff.next()).await;
            }
        }
    }
}
