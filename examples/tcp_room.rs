//! `wschat-tcp-room`: a wschat room served over plain TCP, one JSON message
//! per line, to show that `wschat-core` needs no WebSocket: the transport
//! reads frames, hands them to `Member::publish`, and writes what
//! `Member::recv` yields. Try it with two terminals:
//!
//! ```text
//! wschat-tcp-room --listen 127.0.0.1:9000
//! nc 127.0.0.1 9000
//! {"usr":"ann","msg":"hello over TCP"}
//! ```

use std::process::ExitCode;

use clap::Parser;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use wschat_core::{Frame, Member, Room, RoomConfig};

#[derive(Parser)]
#[command(
    name = "wschat-tcp-room",
    about = "A wschat room over plain TCP, one JSON message per line"
)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: String,
    /// Messages replayed to each new connection.
    #[arg(long, default_value_t = 20)]
    history: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let listener = match TcpListener::bind(&args.listen).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("wschat-tcp-room: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    if let Ok(addr) = listener.local_addr() {
        eprintln!("listening on {addr}");
    }
    let room = Room::new(RoomConfig::default().history(args.history));
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(serve(tcp, room.join()));
            }
            Err(e) => eprintln!("wschat-tcp-room: accept: {e}"),
        }
    }
}

/// The longest line read; a longer one ends the connection, as an
/// oversized frame does over WebSocket.
const MAX_LINE: u64 = 64 * 1024;

/// One connection: lines in are published, frames out are lines. It does
/// what the core's docs ask of every transport: publish with one verb and
/// answer errors to the sender alone, write everything queued before one
/// flush, and close a member that fell a whole ring behind, also while a
/// write to it is blocked.
async fn serve(tcp: TcpStream, mut member: Member) {
    let (read, write) = tcp.into_split();
    let mut read = BufReader::new(read);
    let mut write = BufWriter::new(write);
    let mut line = Vec::new();
    loop {
        let mut limited = (&mut read).take(MAX_LINE + 1);
        tokio::select! {
            got = limited.read_until(b'\n', &mut line) => {
                let Ok(n) = got else { return };
                if n == 0 || (line.len() as u64 > MAX_LINE && !line.ends_with(b"\n")) {
                    return; // closed, or a line too long
                }
                let text = String::from_utf8_lossy(&line).trim().to_owned();
                line.clear();
                if text.is_empty() {
                    continue;
                }
                if let Err(e) = member.publish(&text).await {
                    let reply = format!("{}\n", e.to_frame());
                    if write.write_all(reply.as_bytes()).await.is_err() || write.flush().await.is_err() {
                        return;
                    }
                }
            },
            frame = member.recv() => {
                let Ok(frame) = frame else {
                    // Too slow (a whole ring behind) or the room closed.
                    return;
                };
                if !write_queued(&mut write, &mut member, frame).await {
                    return;
                }
            },
        }
    }
}

/// Writes `first` and everything already queued, then flushes once;
/// gives up when the member falls a whole ring behind meanwhile.
async fn write_queued(
    write: &mut BufWriter<OwnedWriteHalf>,
    member: &mut Member,
    first: Frame,
) -> bool {
    let mut next = Some(first);
    while let Some(frame) = next.take() {
        let line = async {
            write.write_all(frame.as_str().as_bytes()).await?;
            write.write_all(b"\n").await
        };
        if !unless_too_slow(line, member).await {
            return false;
        }
        next = member.try_recv().ok().flatten();
    }
    unless_too_slow(write.flush(), member).await
}

/// Runs a write unless the member falls a whole ring behind first: a peer
/// that stopped reading must not hold its task forever.
async fn unless_too_slow(
    write: impl std::future::Future<Output = std::io::Result<()>>,
    member: &Member,
) -> bool {
    tokio::pin!(write);
    let mut check = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            done = &mut write => return done.is_ok(),
            _ = check.tick() => {
                if member.is_too_slow() {
                    return false;
                }
            }
        }
    }
}
