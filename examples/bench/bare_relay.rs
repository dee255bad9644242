//! `bare-relay`: the ceiling `examples/bench/compare.sh` measures wschat
//! against. A hand-rolled tokio-tungstenite relay with wschat's transport
//! techniques (small buffers, one shared copy of each message, every
//! queued frame written before one flush) and none of its work: no
//! parsing, no `tim`, no limits, no HTTP besides the upgrade.
//!
//! ```text
//! bare-relay 127.0.0.1:8090
//! ```
//!
//! It prints the address it listens on (port 0 picks a free one).

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

#[tokio::main]
async fn main() -> Result<(), String> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".into());
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    if let Ok(addr) = listener.local_addr() {
        eprintln!("listening on {addr}");
    }
    // Accepting on a worker, as wschat does: spawned tasks then start on
    // that worker's queue.
    tokio::spawn(accept(listener))
        .await
        .map_err(|e| e.to_string())
}

async fn accept(listener: TcpListener) {
    let (relay, _) = broadcast::channel::<Utf8Bytes>(65536);
    loop {
        match listener.accept().await {
            Ok((tcp, _)) => {
                tokio::spawn(serve(tcp, relay.clone()));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

async fn serve(tcp: TcpStream, relay: broadcast::Sender<Utf8Bytes>) {
    let _ = tcp.set_nodelay(true);
    let config = WebSocketConfig::default()
        .read_buffer_size(256)
        .write_buffer_size(16 * 1024);
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else {
        return;
    };
    let mut messages = relay.subscribe();
    loop {
        tokio::select! {
            message = messages.recv() => {
                let Ok(mut text) = message else { return };
                loop {
                    if ws.feed(Message::Text(text)).await.is_err() {
                        return;
                    }
                    text = match messages.try_recv() {
                        Ok(text) => text,
                        Err(TryRecvError::Empty) => break,
                        Err(_) => return,
                    };
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let _ = relay.send(text);
                }
                Some(Ok(_)) => {}
                _ => return,
            },
        }
    }
}
