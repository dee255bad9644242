//! `connect`: open and close connections as fast as possible, over plain
//! TCP or (`wss://` URLs, `--tls-ca`) TLS.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;

use crate::Common;
use crate::client::Target;
use crate::procfs::CpuMeter;
use crate::progress;
use crate::report::{Report, round1};
use crate::tls::TlsTarget;

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
    /// Connect over TLS to wss:// URLs, trusting the PEM certificate (or
    /// authority) in FILE; each connection makes a full TLS handshake.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
}

/// How each connection is made.
enum Dialer {
    Plain(Target),
    Tls(TlsTarget),
}

impl Dialer {
    /// Opens one connection, upgrades it and closes it again.
    async fn once(&self) -> Result<(), String> {
        match self {
            Dialer::Plain(target) => {
                target.handshake().await?.close().await;
                Ok(())
            }
            Dialer::Tls(target) => target.handshake_and_close().await,
        }
    }
}

pub async fn run(args: ConnectArgs) -> Result<Report, String> {
    let target = Arc::new(match &args.tls_ca {
        None => Dialer::Plain(Target::new(&args.common.url, &args.common.sources)?),
        Some(_) if !args.common.sources.is_empty() => {
            return Err("--sources is not supported with --tls-ca".into());
        }
        Some(ca) => Dialer::Tls(TlsTarget::new(&args.common.url, ca)?),
    });
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
                match target.once().await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        progress::OPENED.fetch_add(1, Ordering::Relaxed);
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
        .add("tls", args.tls_ca.is_some())
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
