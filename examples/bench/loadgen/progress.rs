//! The live progress line: what the load generator is doing, connections
//! opened, messages published and seen, redrawn in place a few times a
//! second when stderr is a terminal, and nothing at all when it is not
//! (a script reading `--json`, or a log file, wants no progress noise).
//!
//! The counters are process-wide atomics, bumped in batches by the tasks
//! that do the work, so counting costs the load nothing it would notice.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Connections whose upgrade completed.
pub static OPENED: AtomicU64 = AtomicU64::new(0);
/// Messages sent by publishers.
pub static PUBLISHED: AtomicU64 = AtomicU64::new(0);
/// Messages received by listeners (deliveries).
pub static SEEN: AtomicU64 = AtomicU64::new(0);

static PHASE: Mutex<&str> = Mutex::new("starting");
static STOP: AtomicBool = AtomicBool::new(false);
static DRAWER: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);

/// Says what the load generator is doing now.
pub fn phase(what: &'static str) {
    *PHASE.lock().unwrap_or_else(|e| e.into_inner()) = what;
}

/// Redraws the line until [`stop`], when stderr is a terminal. Runs on its
/// own thread, so a busy runtime does not freeze it.
pub fn start(mode: &'static str) {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let started = Instant::now();
    let drawer = std::thread::spawn(move || {
        let mut last = (Instant::now(), 0);
        let mut rate = 0.0;
        while !STOP.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            let seen = SEEN.load(Ordering::Relaxed);
            let now = Instant::now();
            if now - last.0 >= Duration::from_secs(1) {
                rate = (seen - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, seen);
            }
            let phase = *PHASE.lock().unwrap_or_else(|e| e.into_inner());
            let line = format!(
                "\r\x1b[K{mode} {:>5.1}s  {phase:<24} opened {:>7}  published {:>9}  seen {:>11} ({:>9.0}/s)",
                started.elapsed().as_secs_f64(),
                OPENED.load(Ordering::Relaxed),
                PUBLISHED.load(Ordering::Relaxed),
                seen,
                rate,
            );
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(line.as_bytes());
            let _ = err.flush();
        }
        let _ = std::io::stderr().write_all(b"\r\x1b[K");
    });
    *DRAWER.lock().unwrap_or_else(|e| e.into_inner()) = Some(drawer);
}

/// Clears the line for good (the summary follows on stdout).
pub fn stop() {
    STOP.store(true, Ordering::Relaxed);
    let drawer = DRAWER.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(drawer) = drawer {
        let _ = drawer.join();
    }
}
