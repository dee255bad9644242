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
//! The stream's entry ids are the messages' `tim`s (milliseconds, then the
//! nanoseconds within them), so the stream itself is the cluster's cursor:
//! Redis refuses an id that is not above the stream's last, which is how an
//! instance whose clock is behind learns to stamp after what the stream
//! holds, and reading by cursor is an `XRANGE` from an id.
//!
//! Writing: [`RedisLog`] is the room's [`SharedLog`]. The room hands it
//! each stamped message in stamp order; one writer task appends whatever
//! has queued in one script call (so a publisher is not held to one round
//! trip per message, and each sender's order is kept): the script refuses
//! the batch when its first id is not above the stream's last, and the
//! writer then stamps the batch a round trip past that id, or at its
//! clock's time if that is later, and tries again, a little further ahead
//! on each try (busy instances write ahead of a batch while it makes its
//! round trip; see [`restamp_floor`]). Reading:
//! one task `XREAD BLOCK`s from the last id and hands what it reads to
//! `Room::deliver`, which writes it to the instance's archive, if any,
//! before relaying it.
//!
//! Every failed Redis call waits with backoff before the next: a Redis
//! that answers errors is never hammered. While the writer backs off,
//! publishing answers `unavailable` at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamId, StreamRangeReply, StreamReadOptions, StreamReadReply};
use redis::{AsyncCommands, AsyncConnectionConfig, Client};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{error, info, warn};
use wschat_core::{Ack, Frame, LogError, Room, SharedLog, Stamped};

use crate::error::BackplaneError;
use crate::metrics::Metrics;
use crate::warn_every;

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
/// How often a batch is stamped again after another instance wrote first.
const MAX_RESTAMPS: usize = 8;
/// How far past the stream's last `tim` (or this clock's time) the second
/// restamp of a batch goes; each later one doubles it (1.6 ms for the
/// last try).
const RESTAMP_MARGIN: TimeDelta = TimeDelta::microseconds(50);
/// The most a refused call's round trip moves a batch past the stream's
/// last `tim`: a stalled Redis must not push stamps far into the future.
const MAX_ROUND_TRIP_LEAD: TimeDelta = TimeDelta::milliseconds(100);
/// Appends a batch whose ids must be above the stream's last: `KEYS[1]` the
/// stream; ARGV the length cap, then id and message pairs. Answers `ok`, or
/// the stream's last id when the first id is not above it.
const APPEND: &str = r"
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then
  local last = top[1][1]
  local lm, ls = string.match(last, '^(%d+)-(%d+)$')
  local fm, fs = string.match(ARGV[2], '^(%d+)-(%d+)$')
  lm, ls, fm, fs = tonumber(lm), tonumber(ls), tonumber(fm), tonumber(fs)
  if fm < lm or (fm == lm and fs <= ls) then
    return last
  end
end
for i = 2, #ARGV, 2 do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], ARGV[i], 'm', ARGV[i + 1])
end
return 'ok'
";
/// The stream entry field that holds a message.
const FIELD: &str = "m";

/// The room's side of the stream: queues messages for the writer task, and
/// reads the stream back by cursor.
pub(crate) struct RedisLog {
    queue: mpsc::UnboundedSender<(Stamped, Ack)>,
    readers: Readers,
    key: String,
}

impl SharedLog for RedisLog {
    fn append(&self, entry: Stamped, ack: Ack) {
        // Fails only once the writer has stopped (shutdown); the ack is
        // then dropped, which answers `unavailable`.
        let _ = self.queue.send((entry, ack));
    }

    fn read_after(
        &self,
        after: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        // A cursor before 1970 is before every entry (ids are never
        // negative).
        let start = match after {
            Some(t) if t > DateTime::UNIX_EPOCH => format!("({}", stream_id(t)),
            _ => "-".to_owned(),
        };
        let range: StreamRangeReply = self.query(
            redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(start)
                .arg("+")
                .arg("COUNT")
                .arg(limit),
        )?;
        Ok(Some(range.ids.into_iter().filter_map(message).collect()))
    }

    fn read_before(
        &self,
        before: Option<DateTime<Utc>>,
        limit: usize,
    ) -> Result<Option<Vec<Frame>>, LogError> {
        let end = match before {
            None => "+".to_owned(),
            Some(t) if t > DateTime::UNIX_EPOCH => format!("({}", stream_id(t)),
            // Nothing is before 1970.
            Some(_) => return Ok(Some(Vec::new())),
        };
        let range: StreamRangeReply = self.query(
            redis::cmd("XREVRANGE")
                .arg(&self.key)
                .arg(end)
                .arg("-")
                .arg("COUNT")
                .arg(limit),
        )?;
        let mut frames: Vec<Frame> = range.ids.into_iter().filter_map(message).collect();
        frames.reverse();
        Ok(Some(frames))
    }
}

impl RedisLog {
    /// One blocking command on one of the [`Readers`]: reads by cursor run
    /// on the blocking pool, never on the writer's or reader's link.
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, LogError> {
        self.readers.query(cmd)
    }

    /// Lets go of the idle connections: part of the server's shutdown.
    fn close(&self) {
        self.readers.close();
    }
}

/// How many connections reads by cursor (`GET /messages`, catch-up pages)
/// use at once; more wait for one. Each is kept for the next read, so a
/// read costs no TCP connection (README, "Several instances (Redis)").
const MAX_READERS: usize = 8;
/// How long a read waits for a connection before it fails.
const READER_WAIT: Duration = Duration::from_secs(5);
/// How long connecting, and then each answer, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The connections of reads by cursor: at most [`MAX_READERS`], kept
/// open between reads.
struct Readers {
    client: Client,
    state: Mutex<ReadersState>,
    freed: Condvar,
}

#[derive(Default)]
struct ReadersState {
    idle: Vec<redis::Connection>,
    /// Connections idle or in use.
    open: usize,
    /// The server is shutting down: connections are not kept.
    closed: bool,
}

impl Readers {
    fn new(client: Client) -> Self {
        Readers {
            client,
            state: Mutex::new(ReadersState::default()),
            freed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadersState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `cmd` on a kept connection, or a new one; a kept connection
    /// that turns out broken (Redis restarted) is replaced once.
    fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, LogError> {
        let failed = |e: &dyn std::fmt::Display| LogError::new(format!("Redis: {e}"));
        let (mut con, mut kept) = self.take().map_err(|e| failed(&e))?;
        loop {
            match cmd.query(&mut con) {
                Ok(answer) => {
                    self.give_back(Some(con));
                    return Ok(answer);
                }
                Err(e) if kept && (e.is_io_error() || e.is_connection_dropped()) => {
                    match self.connect() {
                        Ok(new) => (con, kept) = (new, false),
                        Err(e) => {
                            self.give_back(None);
                            return Err(failed(&e));
                        }
                    }
                }
                Err(e) => {
                    self.give_back(None);
                    return Err(failed(&e));
                }
            }
        }
    }

    /// A connection, and whether it was kept from an earlier read; waits
    /// up to [`READER_WAIT`] while [`MAX_READERS`] are in use.
    fn take(&self) -> Result<(redis::Connection, bool), String> {
        let deadline = std::time::Instant::now() + READER_WAIT;
        let mut state = self.lock();
        loop {
            if let Some(con) = state.idle.pop() {
                return Ok((con, true));
            }
            if state.open < MAX_READERS {
                state.open += 1;
                drop(state);
                return self
                    .connect()
                    .map(|con| (con, false))
                    .inspect_err(|_| self.give_back(None))
                    .map_err(|e| e.to_string());
            }
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err("too many reads at once".to_owned());
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn connect(&self) -> redis::RedisResult<redis::Connection> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(READ_TIMEOUT))?;
        Ok(con)
    }

    /// Keeps `con` for the next read (`None`: it was let go).
    fn give_back(&self, con: Option<redis::Connection>) {
        let mut state = self.lock();
        match con {
            Some(con) if !state.closed => state.idle.push(con),
            _ => state.open -= 1,
        }
        drop(state);
        self.freed.notify_one();
    }

    fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        state.open -= state.idle.len();
        state.idle.clear();
    }
}

/// A `tim` as a stream entry id: milliseconds, then the nanoseconds within
/// them, so ids order as `tim`s do.
fn stream_id(tim: DateTime<Utc>) -> String {
    format!(
        "{}-{}",
        tim.timestamp_millis(),
        tim.timestamp_subsec_nanos() % 1_000_000
    )
}

/// The latest `tim` a stream entry id allows, the inverse of [`stream_id`].
fn id_tim(id: &str) -> Option<DateTime<Utc>> {
    let (ms, ns) = id.split_once('-')?;
    let t = DateTime::from_timestamp_millis(ms.parse().ok()?)?;
    Some(t + TimeDelta::nanoseconds(ns.parse::<i64>().ok()?.min(999_999)))
}

/// A connection to the stream, made before the room exists: the room is
/// built with its [`RedisLog`] and the stream's tail as history.
pub(crate) struct Link {
    client: Client,
    writer: ConnectionManager,
    key: String,
    max_len: usize,
    last_id: String,
    queue: mpsc::UnboundedReceiver<(Stamped, Ack)>,
    /// The room's shared log.
    pub log: Arc<RedisLog>,
    /// The stream's last `--history` messages (at least one), oldest first.
    pub history: Vec<Frame>,
}

/// One instance's running link to the stream: its two tasks.
pub(crate) struct Backplane {
    up: Arc<AtomicBool>,
    tasks: [tokio::task::JoinHandle<()>; 2],
    log: Arc<RedisLog>,
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
        // Oldest first; all of them, even with no history: the newest tells
        // the room where reads of the stream stop.
        let mut frames: Vec<Frame> = tail.ids.into_iter().filter_map(message).collect();
        frames.reverse();
        let (tx, queue) = mpsc::unbounded_channel();
        let reading = Readers::new(client.clone());
        info!(key, "backplane: Redis connected");
        Ok(Link {
            client,
            writer,
            key: key.to_owned(),
            max_len: history.max(MIN_STREAM_LEN),
            last_id,
            queue,
            log: Arc::new(RedisLog {
                queue: tx,
                readers: reading,
                key: key.to_owned(),
            }),
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
            log: self.log,
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
        self.log.close();
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
    mut queue: mpsc::UnboundedReceiver<(Stamped, Ack)>,
) {
    let script = redis::Script::new(APPEND);
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
        let outcome = match append(&script, &mut writer, &key, max_len, &mut batch).await {
            Ok(()) => {
                backoff = Backoff::new();
                retry_at = None;
                Ok(())
            }
            // Redis answers: no backoff, the next batch tries at once.
            Err(Append::Overtaken) => {
                warn_every::overtaken();
                Err(LogError::new(
                    "other instances kept writing ahead of this one",
                ))
            }
            Err(Append::Failed(e)) => {
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

/// Why a batch was not appended.
enum Append {
    /// Redis failed or could not be reached.
    Failed(String),
    /// Other instances wrote ahead of every try.
    Overtaken,
}

/// Appends one batch, stamping it again after the stream's last entry when
/// another instance wrote first.
async fn append(
    script: &redis::Script,
    writer: &mut ConnectionManager,
    key: &str,
    max_len: usize,
    batch: &mut [(Stamped, Ack)],
) -> Result<(), Append> {
    for tries in 0..MAX_RESTAMPS {
        let mut call = script.key(key);
        call.arg(max_len);
        for (entry, _) in batch.iter() {
            call.arg(stream_id(entry.tim())).arg(entry.frame().as_str());
        }
        let sent = Instant::now();
        let answer: String = call
            .invoke_async(writer)
            .await
            .map_err(|e| Append::Failed(e.to_string()))?;
        if answer == "ok" {
            return Ok(());
        }
        // Not a `tim`: written by something else than wschat. Taking it
        // for success would drop the batch without a word.
        let last = id_tim(&answer).ok_or_else(|| {
            Append::Failed(format!(
                "the stream's last id {answer:?} is not a wschat tim"
            ))
        })?;
        if tries + 1 == MAX_RESTAMPS {
            break;
        }
        let round_trip = TimeDelta::from_std(sent.elapsed())
            .unwrap_or(MAX_ROUND_TRIP_LEAD)
            .min(MAX_ROUND_TRIP_LEAD);
        // Each message after the last, in order, one nanosecond apart at
        // least.
        let mut floor = restamp_floor(last, round_trip, Utc::now(), tries);
        for (entry, _) in batch.iter_mut() {
            if entry.tim() < floor {
                entry.restamp(floor);
            }
            floor = entry.tim() + TimeDelta::nanoseconds(1);
        }
    }
    Err(Append::Overtaken)
}

/// The least `tim` of a batch stamped again after the stream's `last`, at
/// its `tries`th refusal, `now` by this instance's clock, the refused call
/// having taken `round_trip`.
///
/// Other instances go on writing while the batch makes its round trip, each
/// stamping with its clock: stamped just above the stream's last, a batch
/// of a busy room would be refused again and again. So it goes past what
/// they will have written by the time it arrives, as well as this clock
/// can tell: the stream's last plus a round trip (the others' clocks moved
/// on that much since), or this clock's time if later; and from the second
/// refusal on a margin past that, doubling each time ([`RESTAMP_MARGIN`]),
/// for clocks that disagree or round trips that vary.
fn restamp_floor(
    last: DateTime<Utc>,
    round_trip: TimeDelta,
    now: DateTime<Utc>,
    tries: usize,
) -> DateTime<Utc> {
    let above = last + TimeDelta::nanoseconds(1);
    let ahead = (last + round_trip).max(now);
    match tries {
        0 => above.max(ahead),
        n => above.max(ahead + RESTAMP_MARGIN * (1 << (n - 1).min(16))),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(micros: i64) -> DateTime<Utc> {
        DateTime::UNIX_EPOCH + TimeDelta::microseconds(micros)
    }

    #[test]
    fn a_refused_batch_is_stamped_past_the_stream_and_the_clock_and_further_each_try() {
        let one = TimeDelta::nanoseconds(1);
        let rtt = |micros| TimeDelta::microseconds(micros);
        // The first restamp: the stream's last plus a round trip, or the
        // clock's time if later; never at or below the last.
        assert_eq!(restamp_floor(at(100), rtt(0), at(500), 0), at(500));
        assert_eq!(restamp_floor(at(100), rtt(600), at(500), 0), at(700));
        assert_eq!(restamp_floor(at(500), rtt(0), at(100), 0), at(500) + one);
        // Then a margin past that, doubling, up to the last try's.
        let floors: Vec<_> = (1..MAX_RESTAMPS - 1)
            .map(|tries| restamp_floor(at(1_000), rtt(100), at(400), tries))
            .collect();
        let expected: Vec<_> = [50, 100, 200, 400, 800, 1_600]
            .iter()
            .map(|m| at(1_100 + m))
            .collect();
        assert_eq!(floors, expected);
        assert_eq!(restamp_floor(at(400), rtt(100), at(1_000), 1), at(1_050));
    }
}
