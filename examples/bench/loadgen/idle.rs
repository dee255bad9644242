//! `idle`: hold N connections open and measure what they cost the server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;

use crate::Common;
use crate::client::{Target, connect_many};
use crate::procfs::{CpuMeter, rss_kib};
use crate::progress;
use crate::report::{Report, round1};

#[derive(Args, Clone, Debug)]
pub struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Handshakes in progress at once while connecting.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Seconds to hold the connections before measuring.
    #[arg(long, default_value_t = 5)]
    hold: u64,
}

pub async fn run(args: IdleArgs) -> Result<Report, String> {
    let target = Arc::new(Target::new(&args.common.url, &args.common.sources)?);
    let pid = args.common.pid;
    let before = pid.and_then(rss_kib);
    let cpu = CpuMeter::start(pid);
    let start = Instant::now();
    progress::phase("connecting");
    let held = connect_many(&target, args.connections, args.concurrency).await?;
    let connect_secs = start.elapsed().as_secs_f64();
    progress::phase("holding");
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let after = pid.and_then(rss_kib);
    let (own_cpu, server_cpu) = cpu.stop();
    let per_conn = match (before, after) {
        (Some(b), Some(a)) => Some(round1(
            a.saturating_sub(b) as f64 / held.len().max(1) as f64,
        )),
        _ => None,
    };
    let mut report = Report::new("idle", args.common.json);
    report
        .add("connections", held.len())
        .add("connect_seconds", round1(connect_secs))
        .add("server_rss_before_kib", before)
        .add("server_rss_after_kib", after)
        .add("server_kib_per_connection", per_conn)
        .add("loadgen_rss_kib", rss_kib(std::process::id()))
        .add("loadgen_cpu_pct", round1(own_cpu))
        .add("server_cpu_pct", server_cpu.map(round1));
    drop(held);
    Ok(report)
}
