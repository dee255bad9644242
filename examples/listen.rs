//! `wschat-listen`: print every message of a wschat room as one JSON object
//! per line on stdout, to pipe into other tools (`jq`, a file, a database
//! loader). Errors and the server's close reason go to stderr; the exit
//! status is non-zero when messages may be missing (a failed connection,
//! or a close other than a shutdown, such as 1008 for a listener that fell
//! too far behind).
//!
//! With `--since TIM` it resumes: it prints what came after that `tim`
//! (the server's archive, read at the listener's pace), then goes on
//! live. stdout holds only messages, so its last line's `tim` is always
//! the cursor to resume from; the server's `gap` notice, when it holds
//! nothing as old as `TIM`, goes to stderr in words. It leaves the exit
//! status alone: a cursor from before the archive, to read all of it,
//! always gets one.
//!
//! ```text
//! wschat-listen --url ws://127.0.0.1:8080/ | jq -r '"\(.usr): \(.msg)"'
//! wschat-listen --since 2026-12-01T00:00:00Z | jq -r .msg
//! ```

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[derive(Parser)]
#[command(
    name = "wschat-listen",
    about = "Print a wschat room's messages as JSON Lines"
)]
struct Args {
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// Resume: first print what came after this `tim` (an RFC 3339 time
    /// with its offset) that the server holds, instead of its recent
    /// history. Empty means no cursor, so that
    /// `--since "$(tail -n1 FILE | jq -r .tim)"` works on an empty FILE.
    #[arg(long, value_name = "TIM", value_parser = cursor)]
    since: Option<String>,
}

/// A `--since` value: empty, or a time the server will take.
fn cursor(text: &str) -> Result<String, String> {
    if !text.is_empty() {
        wschat_core::parse_tim(text)?;
    }
    Ok(text.to_owned())
}

/// `url` with `?since=TIM` (or `&since=`), the cursor percent-encoded.
fn resume_url(url: &str, since: Option<&str>) -> String {
    let Some(since) = since.filter(|s| !s.is_empty()) else {
        return url.to_owned();
    };
    let encoded: String = since
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}since={encoded}")
}

/// The server's gap notice (`{"gap":{"since":..,"first":..}}`) in words,
/// if `text` is one: it has no `tim`, which every relayed message has.
/// (Only frames that start as the notice does are parsed.)
fn gap(text: &str) -> Option<String> {
    if !text.starts_with(r#"{"gap":"#) {
        return None;
    }
    let notice: serde_json::Value = serde_json::from_str(text).ok()?;
    if notice.get("tim").is_some() {
        return None;
    }
    let gap = notice.get("gap")?;
    let since = gap.get("since")?.as_str()?;
    Some(match gap.get("first").and_then(|f| f.as_str()) {
        Some(first) => format!(
            "messages between {since} and {first} may be missing: the server no longer holds them"
        ),
        None => format!("messages after {since} may be missing: the server holds none"),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let url = resume_url(&args.url, args.since.as_deref());
    let (mut ws, _) = match tokio_tungstenite::connect_async(url.as_str()).await {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("wschat-listen: cannot connect to {}: {e}", args.url);
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    while let Some(incoming) = ws.next().await {
        match incoming {
            Ok(Message::Text(text)) => {
                // The gap notice goes to stderr, keeping stdout to messages.
                if let Some(words) = gap(&text) {
                    eprintln!("wschat-listen: {words}");
                    continue;
                }
                // The server relays one JSON object per frame, never a newline.
                if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                    return ExitCode::SUCCESS; // stdout closed: the reader is done
                }
            }
            Ok(Message::Close(frame)) => return closed(frame),
            Ok(_) => {}
            Err(e) => {
                eprintln!("wschat-listen: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

/// Reports the server's close frame; a close other than a normal one or
/// the server going away (1001, a shutdown) means messages may be missing
/// (1008: the listener was too slow), so the exit status says so.
fn closed(frame: Option<CloseFrame>) -> ExitCode {
    let Some(CloseFrame { code, reason }) = frame else {
        eprintln!("wschat-listen: closed by the server");
        return ExitCode::SUCCESS;
    };
    eprintln!("wschat-listen: closed by the server: {code} ({reason})");
    match code {
        CloseCode::Normal | CloseCode::Away => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_goes_into_the_url_percent_encoded() {
        assert_eq!(resume_url("ws://h/", None), "ws://h/");
        assert_eq!(resume_url("ws://h/", Some("")), "ws://h/");
        assert_eq!(
            resume_url("ws://h/", Some("2026-12-01T08:00:00.5+01:00")),
            "ws://h/?since=2026-12-01T08:00:00.5%2B01:00"
        );
        assert_eq!(
            resume_url("ws://h/?room=a", Some("2026-12-01T07:00:00Z")),
            "ws://h/?room=a&since=2026-12-01T07:00:00Z"
        );
    }

    #[test]
    fn only_the_gap_notice_is_taken_for_one() {
        assert_eq!(
            gap(r#"{"gap":{"since":"S","first":null}}"#).as_deref(),
            Some("messages after S may be missing: the server holds none")
        );
        assert_eq!(gap(r#"{"gap":{"since":"S"},"tim":"T"}"#), None);
        assert_eq!(gap(r#"{"usr":"a","msg":"m","tim":"T"}"#), None);
    }
}
