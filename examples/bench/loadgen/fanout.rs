//! `fanout`: N listeners, P publishers. Publishers stamp each message with
//! their id, a sequence number and the send time; listeners check order,
//! loss and duplicates per publisher and record the latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use hdrhistogram::Histogram;
use tokio::sync::{Notify, watch};

use crate::Common;
use crate::client::{Frame, Target, Ws, connect_many};
use crate::procfs::{CpuMeter, rss_kib};
use crate::progress;
use crate::report::{Report, round1};

#[derive(Args, Clone, Debug)]
pub struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    /// Connections that only listen.
    #[arg(long, default_value_t = 1000)]
    listeners: usize,
    /// Connections that publish (and receive their own messages).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Size of each published frame in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Total publish rate in messages/s over all publishers; 0 for as fast
    /// as the in-flight bound allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Messages a publisher may have sent but not yet seen relayed back
    /// (split over the publishers).
    #[arg(long, default_value_t = 1000)]
    in_flight: u64,
    /// Seconds to publish for.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds listeners may take after publishing stops to receive the rest.
    #[arg(long, default_value_t = 10)]
    drain: u64,
    /// Number this process's publishers from here, when several loadgen
    /// processes share one load (each with its own publishers).
    #[arg(long, default_value_t = 0)]
    publisher_offset: usize,
    /// Publishers over all processes (default: this process's); listeners
    /// check order and gaps for all of them, completeness for their own,
    /// and (as the others' last messages may come later) listen for the
    /// whole drain time; the script that runs them checks the sum of
    /// deliveries.
    #[arg(long)]
    total_publishers: Option<usize>,
    /// Start publishing at this time (Unix seconds) rather than once
    /// connected, so that several processes sharing one load publish over
    /// the same window; `late_start_s` in the report says by how much
    /// connecting overran it.
    #[arg(long)]
    start_at: Option<f64>,
    /// Add the whole latency distribution to the report, as
    /// `latency_histogram_us`: `[microseconds, count]` pairs, for charts
    /// and for merging several processes' distributions exactly.
    #[arg(long)]
    latency_histogram: bool,
}

/// What one listener saw.
struct Seen {
    received: u64,
    /// Received from, and lost from, this process's own publishers.
    own_received: u64,
    own_lost: u64,
    lost: u64,
    out_of_order: u64,
    errors: u64,
    closed: Option<u16>,
    last: Option<Instant>,
    latency_us: Histogram<u64>,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Publisher id, sequence number and send time of one relayed frame.
/// Relies only on `usr` coming before `msg`, as publishers send them.
fn parse(text: &[u8]) -> Option<(usize, u64, u64)> {
    let rest = after(text, b"\"usr\":\"p")?;
    let (id, rest) = number(rest)?;
    let rest = after(rest, b"\"msg\":\"")?;
    let (seq, rest) = number(rest)?;
    let (sent_ns, _) = number(rest.get(1..)?)?;
    Some((id as usize, seq, sent_ns))
}

/// The bytes after the first `pattern` in `text`.
fn after<'a>(text: &'a [u8], pattern: &[u8]) -> Option<&'a [u8]> {
    let at = text.windows(pattern.len()).position(|w| w == pattern)?;
    Some(&text[at + pattern.len()..])
}

/// A leading decimal number and the rest.
fn number(text: &[u8]) -> Option<(u64, &[u8])> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    let value = text[..digits]
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Some((value, &text[digits..]))
}

pub async fn run(args: FanoutArgs) -> Result<Report, String> {
    let target = Arc::new(Target::new(&args.common.url, &args.common.sources)?);
    progress::phase("connecting");
    let listeners = connect_many(&target, args.listeners, 200).await?;
    let publishers = connect_many(&target, args.publishers.max(1), 50).await?;
    let p = publishers.len();
    let offset = args.publisher_offset;
    let total = args.total_publishers.unwrap_or(offset + p).max(offset + p);
    let shared = total > p;

    // The final sent count per publisher, once publishing has stopped.
    let (final_tx, final_rx) = watch::channel::<Option<Arc<Vec<u64>>>>(None);

    let mut listener_tasks = Vec::with_capacity(listeners.len());
    for ws in listeners {
        listener_tasks.push(tokio::spawn(listen(
            ws,
            total,
            offset,
            p,
            args.drain,
            shared,
            final_rx.clone(),
        )));
    }
    let mut late_start_s = None;
    let mut start = Instant::now();
    if let Some(at) = args.start_at {
        let wait = at - now_ns() as f64 / 1e9;
        if wait > 0.0 {
            start += Duration::from_secs_f64(wait);
        } else {
            late_start_s = Some(round1(-wait));
        }
    }
    let deadline = start + Duration::from_secs(args.duration);
    let per_publisher_rate = args.rate / p as f64;
    let window = (args.in_flight / p as u64).max(1);
    let mut publisher_tasks = Vec::new();
    for (id, ws) in publishers.into_iter().enumerate() {
        publisher_tasks.push(tokio::spawn(publish(
            ws,
            offset + id,
            args.size,
            per_publisher_rate,
            window,
            start,
            deadline,
        )));
    }
    // The publishers read (and answer the server's pings) from now on,
    // however long they wait for `start`: a connection that answers no
    // ping is closed as idle.
    if start > Instant::now() {
        progress::phase("waiting for --start-at");
        tokio::time::sleep_until(start.into()).await;
    }
    let cpu = CpuMeter::start(args.common.pid);
    progress::phase("publishing");

    let mut sent = Vec::with_capacity(p);
    let mut publisher_errors = 0;
    for task in publisher_tasks {
        let (count, errors) = task.await.map_err(|e| e.to_string())?;
        sent.push(count);
        publisher_errors += errors;
    }
    // Publishing stops at the deadline; the wait for echoes after it is
    // not publishing time.
    let publish_secs = (deadline - start).as_secs_f64();
    let _ = final_tx.send(Some(Arc::new(sent.clone())));
    progress::phase("draining");

    let drain_until = tokio::time::Instant::now() + Duration::from_secs(args.drain);
    let mut seen = Vec::with_capacity(listener_tasks.len());
    for task in listener_tasks {
        // Listeners end by themselves at the drain's end; the slack is for
        // thousands of them closing at once on a busy machine.
        match tokio::time::timeout_at(drain_until + Duration::from_secs(10), task).await {
            Ok(Ok(s)) => seen.push(s),
            _ => return Err("a listener did not finish".into()),
        }
    }
    let (own_cpu, server_cpu) = cpu.stop();

    let sent_sum: u64 = sent.iter().sum();
    let mut latency =
        Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?;
    let mut received = 0;
    let (mut lost, mut out_of_order, mut errors, mut dropped) = (0, 0, 0, 0);
    let mut last = start;
    for s in &seen {
        received += s.received;
        lost += s.lost;
        out_of_order += s.out_of_order;
        errors += s.errors;
        dropped += u64::from(s.closed.is_some());
        last = last.max(s.last.unwrap_or(start));
        let _ = latency.add(&s.latency_us);
    }
    // Completeness is known for this process's publishers only.
    let expected = sent_sum * seen.len() as u64;
    let own_received: u64 = seen.iter().map(|s| s.own_received).sum();
    let missing =
        expected.saturating_sub(own_received + seen.iter().map(|s| s.own_lost).sum::<u64>());
    let span = (last - start).as_secs_f64().max(1e-9);
    let q = |x: f64| round1(latency.value_at_quantile(x) as f64 / 1000.0);
    let mut report = Report::new("fanout", args.common.json);
    report
        .add("listeners", seen.len())
        .add("late_start_s", late_start_s)
        .add("publishers", p)
        .add("message_bytes", args.size)
        .add("published", sent_sum)
        .add("publish_rate_per_s", round1(sent_sum as f64 / publish_secs))
        .add("deliveries", received)
        .add("deliveries_per_s", round1(received as f64 / span))
        .add("latency_p50_ms", q(0.5))
        .add("latency_p99_ms", q(0.99))
        .add("latency_p999_ms", q(0.999))
        .add("latency_max_ms", round1(latency.max() as f64 / 1000.0))
        .add("lost", lost + missing)
        .add("out_of_order_or_dup", out_of_order)
        .add("error_frames", errors + publisher_errors)
        .add("listeners_closed", dropped)
        .add("loadgen_cpu_pct", round1(own_cpu))
        .add("server_cpu_pct", server_cpu.map(round1))
        .add("server_rss_kib", args.common.pid.and_then(rss_kib));
    if args.latency_histogram {
        let pairs: Vec<serde_json::Value> = latency
            .iter_recorded()
            .map(|v| serde_json::json!([v.value_iterated_to(), v.count_at_value()]))
            .collect();
        report.add("latency_histogram_us", pairs);
    }
    Ok(report)
}

/// Sends until `deadline`, keeping at most `window` messages unechoed;
/// returns how many it sent and how many error frames it got.
async fn publish(
    ws: Ws,
    id: usize,
    size: usize,
    rate: f64,
    window: u64,
    begin: Instant,
    deadline: Instant,
) -> (u64, u64) {
    let Ws { mut reader, writer } = ws;
    let echoed = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let wake = Arc::new(Notify::new());
    let reader = {
        let (echoed, errors, wake, writer) =
            (echoed.clone(), errors.clone(), wake.clone(), writer.clone());
        tokio::spawn(async move {
            while let Some(frame) = reader.next(&writer).await {
                match frame {
                    Frame::Text(text) => match parse(text) {
                        Some((from, _, _)) if from == id => {
                            echoed.fetch_add(1, Ordering::Relaxed);
                            wake.notify_one();
                        }
                        Some(_) => {}
                        None => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    },
                    Frame::Close(_) => break,
                    Frame::Other => {}
                }
            }
        })
    };
    let prefix = format!(r#"{{"usr":"p{id}","msg":""#);
    tokio::time::sleep_until(begin.into()).await;
    let start = Instant::now();
    let mut sent: u64 = 0;
    while Instant::now() < deadline {
        let by_rate = if rate > 0.0 {
            // The first message goes at once, then one every 1/rate s.
            ((start.elapsed().as_secs_f64() * rate) as u64 + 1).saturating_sub(sent)
        } else {
            u64::MAX
        };
        let by_window = window.saturating_sub(sent - echoed.load(Ordering::Relaxed).min(sent));
        let n = by_rate.min(by_window).min(256);
        if n == 0 {
            if by_window == 0 {
                let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            continue;
        }
        let batch: Vec<String> = (sent..sent + n)
            .map(|seq| {
                let mut frame = format!("{prefix}{seq} {} ", now_ns());
                let pad = size.saturating_sub(frame.len() + 2);
                frame.extend(std::iter::repeat_n('x', pad));
                frame.push_str("\"}");
                frame
            })
            .collect();
        if writer.send_texts(&batch).await.is_err() {
            break;
        }
        sent += n;
        progress::PUBLISHED.fetch_add(n, Ordering::Relaxed);
    }
    // Give the echoes a moment, then stop reading.
    let settle = Instant::now() + Duration::from_secs(2);
    while echoed.load(Ordering::Relaxed) < sent && Instant::now() < settle {
        let _ = tokio::time::timeout(Duration::from_millis(50), wake.notified()).await;
    }
    reader.abort();
    writer.close().await;
    (sent, errors.load(Ordering::Relaxed))
}

/// Receives until every published message has arrived (known once
/// publishing stops), the drain time ends, or the server closes.
async fn listen(
    ws: Ws,
    publishers: usize,
    own_from: usize,
    own_count: usize,
    drain_secs: u64,
    shared: bool,
    final_sent: watch::Receiver<Option<Arc<Vec<u64>>>>,
) -> Seen {
    let Ws { mut reader, writer } = ws;
    let mut seen = Seen {
        received: 0,
        own_received: 0,
        own_lost: 0,
        lost: 0,
        out_of_order: 0,
        errors: 0,
        closed: None,
        last: None,
        // Two significant digits up to a minute: 20 KiB per listener (three
        // digits up to an hour took 200 KiB, 2.9 GB for 14,000 listeners).
        latency_us: Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"),
    };
    let mut next = vec![0u64; publishers];
    let mut unreported = 0;
    let mut expected: Option<Arc<Vec<u64>>> = None;
    // Both futures live across the loop: polling them again is cheap, and
    // `biased` polls them only when no frame is ready.
    let mut watcher = final_sent.clone();
    let stopped = async move {
        let _ = watcher.wait_for(Option::is_some).await;
    };
    tokio::pin!(stopped);
    let drain = tokio::time::sleep(Duration::from_secs(365 * 24 * 3600));
    tokio::pin!(drain);
    loop {
        if let Some(sent) = &expected
            && !shared
            && next[own_from..]
                .iter()
                .zip(sent.iter())
                .all(|(n, s)| n >= s)
        {
            break;
        }
        tokio::select! {
            biased;
            frame = reader.next(&writer) => match frame {
                Some(Frame::Text(text)) => {
                    let now = now_ns();
                    match parse(text) {
                        Some((p, seq, t)) if p < publishers => {
                            let own = p >= own_from && p < own_from + own_count;
                            if seq >= next[p] {
                                let gap = seq - next[p];
                                seen.lost += gap;
                                next[p] = seq + 1;
                                seen.received += 1;
                                if own {
                                    seen.own_lost += gap;
                                    seen.own_received += 1;
                                }
                            } else {
                                seen.out_of_order += 1;
                            }
                            seen.latency_us.saturating_record((now.saturating_sub(t) / 1000).max(1));
                            seen.last = Some(Instant::now());
                            unreported += 1;
                            if unreported == 256 {
                                progress::SEEN.fetch_add(unreported, Ordering::Relaxed);
                                unreported = 0;
                            }
                        }
                        _ => seen.errors += 1,
                    }
                }
                Some(Frame::Close(code)) => {
                    seen.closed = Some(code);
                    break;
                }
                Some(Frame::Other) => {}
                None => {
                    seen.closed = Some(1006);
                    break;
                }
            },
            () = &mut stopped, if expected.is_none() => {
                expected = final_sent.borrow().clone();
                drain.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(drain_secs));
            }
            () = &mut drain => break,
        }
    }
    progress::SEEN.fetch_add(unreported, Ordering::Relaxed);
    writer.close().await;
    seen
}
