//! `wschat-listen`: print every message of a wschat room as one JSON object
//! per line on stdout, to pipe into other tools (`jq`, a file, a database
//! loader). Errors and the server's close reason go to stderr; the exit
//! status is non-zero when messages may be missing (a failed connection,
//! or a close other than a shutdown, such as 1008 for a listener that fell
//! too far behind).
//!
//! ```text
//! wschat-listen --url ws://127.0.0.1:8080/ | jq -r '"\(.usr): \(.msg)"'
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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let (mut ws, _) = match tokio_tungstenite::connect_async(args.url.as_str()).await {
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
