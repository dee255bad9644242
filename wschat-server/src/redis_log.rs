//! The Redis backplane: several servers share one room through one Redis
//! stream.
//!
//! A stream, not pub/sub: the stream is one ordered log that every instance
//! reads from the last id it has seen, so all clients everywhere see one
//! order, an instance that loses Redis for a while resumes where it left off
//! (as far as the stream's length cap kept it), and history is the stream's
//! tail with no gap to the live messages after it. Pub/sub would drop what
//! is published while an instance is away, and keeps no history.
//!
//! Publishing: the room validates and stamps (`Room::prepare`), `XADD`
//! appends; nothing is relayed locally until it comes back. Relaying: one
//! task per instance `XREAD BLOCK`s from the last id and hands what it reads
//! to `Room::deliver`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamMaxlen, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client};
use tracing::{error, info, warn};
use wschat_core::{Frame, PublishError, Room};

use crate::metrics::Metrics;

/// The stream keeps at least this many messages (more with `--history`),
/// so an instance that was away for a while can catch up.
const MIN_STREAM_LEN: usize = 10_000;
/// How long one `XREAD` blocks before asking again.
const BLOCK: Duration = Duration::from_secs(5);
/// The longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The stream entry field that holds a message.
const FIELD: &str = "m";

/// One instance's link to the shared stream.
pub(crate) struct Backplane {
    key: String,
    max_len: usize,
    writer: ConnectionManager,
    up: Arc<AtomicBool>,
    relay: tokio::task::JoinHandle<()>,
}

/// Why the backplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    /// The URL is not a Redis URL.
    #[error("--redis: {0}")]
    Url(#[source] redis::RedisError),
    /// Redis did not answer at start.
    #[error("cannot reach Redis: {0}")]
    Unreachable(#[source] redis::RedisError),
}

impl Backplane {
    /// Connects, fills the room's history from the stream's tail, and
    /// starts relaying what is appended after it.
    pub(crate) async fn start(
        url: &str,
        key: &str,
        history: usize,
        room: Room,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, BackplaneError> {
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
        if history > 0 {
            room.deliver(
                tail.ids
                    .iter()
                    .rev()
                    .filter_map(|e| e.get::<String>(FIELD))
                    .map(Frame::from),
            );
        }
        let up = Arc::new(AtomicBool::new(true));
        info!(key, "backplane: Redis connected");
        let relay = tokio::spawn(relay(
            client,
            key.to_owned(),
            last_id,
            room,
            up.clone(),
            metrics,
        ));
        Ok(Arc::new(Backplane {
            key: key.to_owned(),
            max_len: history.max(MIN_STREAM_LEN),
            writer,
            up,
            relay,
        }))
    }

    /// Appends a prepared message to the stream; it reaches this
    /// instance's clients, like every other's, through the stream.
    pub(crate) async fn publish(&self, frame: &Frame) -> Result<(), PublishError> {
        let mut writer = self.writer.clone();
        let added: Result<String, _> = writer
            .xadd_maxlen(
                &self.key,
                StreamMaxlen::Approx(self.max_len),
                "*",
                &[(FIELD, frame.as_str())],
            )
            .await;
        added.map(drop).map_err(|_| {
            PublishError::Unavailable("the backplane (Redis) is unreachable; try again".into())
        })
    }

    /// Stops relaying: part of the server's shutdown, so a stopped server
    /// holds no connection to Redis.
    pub(crate) fn stop(&self) {
        self.relay.abort();
    }

    /// Whether the relaying side is connected to Redis.
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
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
    let mut backoff = Duration::from_millis(100);
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
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        if !up.swap(true, Ordering::Relaxed) {
            metrics.backplane_reconnected();
            info!(%last_id, "backplane: Redis is back; resuming");
        }
        backoff = Duration::from_millis(100);
        loop {
            let read: Result<StreamReadReply, _> =
                reader.xread_options(&[&key], &[&last_id], &options).await;
            let reply = match read {
                Ok(reply) => reply,
                Err(e) => {
                    if up.swap(false, Ordering::Relaxed) {
                        warn!(error = %e, "backplane: lost Redis; reconnecting");
                    }
                    break;
                }
            };
            let mut frames = Vec::new();
            for entry in reply.keys.into_iter().flat_map(|k| k.ids) {
                if let Some(text) = entry.get::<String>(FIELD) {
                    frames.push(Frame::from(text));
                }
                last_id = entry.id;
            }
            room.deliver(frames);
        }
    }
}
