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
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use wschat_core::{Member, RecvError, Room, RoomConfig};

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

/// One connection: lines in are published, frames out are lines.
async fn serve(tcp: TcpStream, mut member: Member) {
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read).lines();
    loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) if line.trim().is_empty() => {}
                Ok(Some(line)) => {
                    if let Err(e) = member.publish(&line) {
                        let reply = format!("{}\n", e.to_frame());
                        if write.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                _ => return,
            },
            frame = member.recv() => match frame {
                Ok(frame) => {
                    let line = format!("{frame}\n");
                    if write.write_all(line.as_bytes()).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::TooSlow) => {
                    let _ = write.write_all(b"{\"err\":\"too_slow\"}\n").await;
                    return;
                }
                Err(_) => return,
            },
        }
    }
}
