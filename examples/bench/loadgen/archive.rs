//! `archive`: write an archive file as the server writes it (one relayed
//! message per line, `tim` last, strictly increasing), so the catch-up
//! from a large archive can be measured without publishing it first.
//! README, "Resume".

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::time::Instant;

use chrono::{TimeDelta, Utc};
use clap::Args;

use crate::report::{Report, round1};

#[derive(Args, Clone, Debug)]
pub struct ArchiveArgs {
    /// The file to write; it must not exist yet.
    #[arg(long)]
    out: PathBuf,
    /// About how large to make it, in MiB.
    #[arg(long, default_value_t = 1024)]
    mib: u64,
    /// Bytes of text in each message's `msg`.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// Milliseconds between two messages' `tim`s; the last is a second ago.
const STEP_MS: i64 = 1;

pub fn run(args: ArchiveArgs) -> Result<Report, String> {
    let start = Instant::now();
    let fail = |e: std::io::Error| format!("{}: {e}", args.out.display());
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&args.out)
        .map_err(fail)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let pad: String = (b'a'..=b'z')
        .cycle()
        .take(args.size)
        .map(char::from)
        .collect();
    let line = |i: u64, tim: &str| {
        let text = format!("{i:010} {pad}");
        let msg = &text[..args.size.max(10)];
        format!(
            "{{\"usr\":\"u{:03}\",\"msg\":\"{msg}\",\"tim\":\"{tim}\"}}\n",
            i % 1000
        )
    };
    // Every line has the same length (the `tim` format is fixed-width).
    let sample = line(0, &wschat_core::format_tim(Utc::now()));
    let count = (args.mib << 20).div_ceil(sample.len() as u64).max(1);
    let last = Utc::now() - TimeDelta::seconds(1);
    let first = last - TimeDelta::milliseconds(STEP_MS * (count as i64 - 1));
    let mut tim = first;
    let mut bytes = 0u64;
    for i in 0..count {
        let text = line(i, &wschat_core::format_tim(tim));
        out.write_all(text.as_bytes()).map_err(fail)?;
        bytes += text.len() as u64;
        tim += TimeDelta::milliseconds(STEP_MS);
    }
    out.flush().map_err(fail)?;
    let mut report = Report::new("archive", args.json);
    report
        .add("file", args.out.display().to_string())
        .add("messages", count)
        .add("bytes", bytes)
        .add("first_tim", wschat_core::format_tim(first))
        .add("last_tim", wschat_core::format_tim(last))
        .add("seconds", round1(start.elapsed().as_secs_f64()));
    Ok(report)
}
