//! `catchup`: one client resumes with `?since=` and reads everything the
//! server holds after the cursor (an archive, say, from `archive`) as
//! fast as it can: messages/s, and the server's RSS over the catch-up,
//! which must stay flat however long the archive (README, "Resume").

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::Common;
use crate::client::{Frame, Target};
use crate::procfs::{CpuMeter, rss_kib};
use crate::report::{Report, round1};

#[derive(Args, Clone, Debug)]
pub struct CatchupArgs {
    #[command(flatten)]
    common: Common,
    /// The cursor to resume from; before the oldest message (the default)
    /// reads everything held, after a `gap` notice.
    #[arg(long, default_value = "1970-01-01T00:00:00Z")]
    since: String,
    /// Stop once this many messages have arrived (the archive's count).
    #[arg(long)]
    messages: u64,
    /// How often to sample the server's RSS, in milliseconds.
    #[arg(long, default_value_t = 100)]
    sample_ms: u64,
    /// Give up after this many seconds without a frame.
    #[arg(long, default_value_t = 30)]
    timeout: u64,
}

/// One RSS sample: seconds since the start, messages read, KiB.
type Sample = (f64, u64, Option<u64>);

pub async fn run(args: CatchupArgs) -> Result<Report, String> {
    let url = args.common.url.first().ok_or("no --url")?;
    let separator = if url.contains('?') { '&' } else { '?' };
    let since = args.since.replace('+', "%2B");
    let target = Target::new(&[format!("{url}{separator}since={since}")], &[])?;
    let pid = args.common.pid;
    let rss_start = pid.and_then(rss_kib);
    let cpu = CpuMeter::start(pid);
    let start = Instant::now();

    let read = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(
        pid,
        Duration::from_millis(args.sample_ms.max(1)),
        start,
        read.clone(),
        done.clone(),
    ));

    let mut ws = target.connect().await?;
    let (mut bytes, mut gaps, mut disorder) = (0u64, 0u64, 0u64);
    let mut last_tim: Vec<u8> = Vec::new();
    let mut count = 0u64;
    let silence = Duration::from_secs(args.timeout);
    let mut progress = Instant::now();
    while count < args.messages {
        let frame = tokio::time::timeout(silence, ws.reader.next(&ws.writer))
            .await
            .map_err(|_| format!("nothing for {} s after {count} messages", args.timeout))?;
        match frame {
            Some(Frame::Text(text)) => {
                bytes += text.len() as u64;
                match tim(text) {
                    Some(t) => {
                        if t <= last_tim.as_slice() {
                            disorder += 1;
                        }
                        last_tim.clear();
                        last_tim.extend_from_slice(t);
                        count += 1;
                        read.store(count, Ordering::Relaxed);
                    }
                    None if text.starts_with(br#"{"gap":"#) => gaps += 1,
                    None => {}
                }
            }
            Some(Frame::Close(code)) => {
                return Err(format!("closed by the server ({code}) after {count}"));
            }
            Some(Frame::Other) => {}
            None => return Err(format!("connection lost after {count} messages")),
        }
        if progress.elapsed() >= Duration::from_secs(1) {
            progress = Instant::now();
            eprintln!(
                "{count} messages, {:.0}/s, server RSS {} KiB",
                count as f64 / start.elapsed().as_secs_f64(),
                pid.and_then(rss_kib)
                    .map_or("-".to_owned(), |k| k.to_string())
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (own_cpu, server_cpu) = cpu.stop();
    done.store(true, Ordering::Relaxed);
    ws.writer.close().await;
    let samples = sampler.await.map_err(|e| e.to_string())?;
    let rss_end = pid.and_then(rss_kib);
    let peak = samples.iter().filter_map(|s| s.2).max();

    let mut report = Report::new("catchup", args.common.json);
    report
        .add("messages", count)
        .add("bytes", bytes)
        .add("seconds", round1(secs))
        .add("messages_per_s", round1(count as f64 / secs))
        .add("mib_per_s", round1(bytes as f64 / secs / 1048576.0))
        .add("gap_notices", gaps)
        .add("out_of_order_or_dup", disorder)
        .add("server_rss_start_kib", rss_start)
        .add("server_rss_peak_kib", peak)
        .add("server_rss_end_kib", rss_end)
        .add("server_cpu_pct", server_cpu.map(round1))
        .add("loadgen_cpu_pct", round1(own_cpu))
        .add("rss_over_time", over_time(&samples, 20));
    Ok(report)
}

/// The `tim` of a relayed message: the value of its last `"tim"` key
/// (the server writes it last unless the publisher sent one first).
fn tim(text: &[u8]) -> Option<&[u8]> {
    const KEY: &[u8] = br#""tim":""#;
    let at = text.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let len = text[at..].iter().position(|b| *b == b'"')?;
    Some(&text[at..at + len])
}

/// Samples the server's RSS every `every` until `done`.
async fn sample(
    pid: Option<u32>,
    every: Duration,
    start: Instant,
    read: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(every);
    while !done.load(Ordering::Relaxed) {
        tick.tick().await;
        samples.push((
            start.elapsed().as_secs_f64(),
            read.load(Ordering::Relaxed),
            pid.and_then(rss_kib),
        ));
    }
    samples
}

/// About `points` samples spread evenly over the run, each with the
/// largest RSS seen since the one before, so no peak is left out.
fn over_time(samples: &[Sample], points: usize) -> Value {
    let per = samples.len().div_ceil(points.max(1)).max(1);
    Value::Array(
        samples
            .chunks(per)
            .filter_map(|chunk| {
                let (secs, read, _) = chunk.last()?;
                let kib = chunk.iter().filter_map(|s| s.2).max();
                Some(json!({"seconds": round1(*secs), "messages": read, "rss_kib": kib}))
            })
            .collect(),
    )
}
