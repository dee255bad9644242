//! `connect`: open and close connections as fast as possible.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use crate::Common;
use crate::client::Target;
use crate::procfs::CpuMeter;
use crate::progress;
use crate::report::{Report, round1};

#[derive(Args, Clone, Debug)]
pub struct ConnectArgs {
    #[command(flatten)]
    common: Common,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 50)]
    concurrency: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

pub async fn run(args: ConnectArgs) -> Result<Report, String> {
    let target = Arc::new(Target::new(&args.common.url, &args.common.sources)?);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let cpu = CpuMeter::start(args.common.pid);
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration);
    progress::phase("connecting and closing");
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (target, ok, failed) = (target.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let mut first_error = None;
            while Instant::now() < deadline {
                match target.handshake().await {
                    Ok(upgraded) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        progress::OPENED.fetch_add(1, Ordering::Relaxed);
                        upgraded.close().await;
                    }
                    Err(e) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        first_error.get_or_insert(e);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            first_error
        }));
    }
    let mut first_error = None;
    for task in tasks {
        if let Ok(Some(e)) = task.await {
            first_error.get_or_insert(e);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let (own_cpu, server_cpu) = cpu.stop();
    let handshakes = ok.load(Ordering::Relaxed);
    // Percent of a core over `secs`, as µs of CPU per handshake.
    let per_handshake =
        |pct: f64| (handshakes > 0).then(|| round1(pct / 100.0 * secs * 1e6 / handshakes as f64));
    let mut report = Report::new("connect", args.common.json);
    report
        .add("concurrency", args.concurrency)
        .add("handshakes", handshakes)
        .add("handshakes_per_s", round1(handshakes as f64 / secs))
        .add("failed", failed.load(Ordering::Relaxed))
        .add("first_error", first_error)
        .add("loadgen_cpu_pct", round1(own_cpu))
        .add("server_cpu_pct", server_cpu.map(round1))
        // CPU per handshake says more than the rate when server and
        // generator share the cores: the rate is bounded by their sum.
        .add("loadgen_cpu_us_per_handshake", per_handshake(own_cpu))
        .add(
            "server_cpu_us_per_handshake",
            server_cpu.and_then(per_handshake),
        );
    Ok(report)
}
