//! CPU time and memory of a process, read from /proc.

use std::time::Instant;

/// Clock ticks per second of /proc/*/stat times (Linux's USER_HZ).
const TICKS_PER_SEC: f64 = 100.0;

/// The resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User plus system CPU seconds `pid` has used.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SEC)
}

/// Measures CPU use of this process and, if given, the server over a span.
pub struct CpuMeter {
    start: Instant,
    own: f64,
    server: Option<(u32, f64)>,
}

impl CpuMeter {
    pub fn start(server: Option<u32>) -> Self {
        CpuMeter {
            start: Instant::now(),
            own: cpu_seconds("self").unwrap_or(0.0),
            server: server.and_then(|pid| Some((pid, cpu_seconds(&pid.to_string())?))),
        }
    }

    /// (own, server) CPU use since start, in percent of one core.
    pub fn stop(&self) -> (f64, Option<f64>) {
        let wall = self.start.elapsed().as_secs_f64().max(1e-9);
        let own = (cpu_seconds("self").unwrap_or(0.0) - self.own) / wall * 100.0;
        let server = self.server.and_then(|(pid, before)| {
            Some((cpu_seconds(&pid.to_string())? - before) / wall * 100.0)
        });
        (own, server)
    }
}
