//! Lean WebSocket clients for load: a plain TCP socket, the upgrade written
//! by hand, and frames parsed in place from one small read buffer, so the
//! generator spends its CPU on the server's messages, not on itself.
//! Outgoing frames use a zero masking key (valid, and free to apply).

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

use crate::progress;

/// One server to connect to (also over TLS).
pub(crate) struct Endpoint {
    pub(crate) addr: SocketAddr,
    /// As in the URL: `host:port`.
    pub(crate) host: String,
    path: String,
}

impl Endpoint {
    /// Parses a `{scheme}host:port/path` URL; `wrong` says why a URL of
    /// another scheme is refused.
    pub(crate) fn parse(url: &str, scheme: &str, wrong: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix(scheme)
            .ok_or_else(|| format!("{url}: {wrong}"))?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let addr = host
            .to_socket_addrs()
            .map_err(|e| format!("{url}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: no address"))?;
        Ok(Endpoint {
            addr,
            host: host.to_owned(),
            path,
        })
    }
}

/// Each of `urls` parsed by `parse`; at least one.
pub(crate) fn endpoints<T>(
    urls: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let endpoints = urls
        .iter()
        .map(|url| parse(url))
        .collect::<Result<Vec<_>, _>>()?;
    if endpoints.is_empty() {
        return Err("no --url".into());
    }
    Ok(endpoints)
}

/// Sends the upgrade request for `server` over `stream` and reads the
/// response's head into `buf`: where the head ends and how much was read
/// (the first frames may follow the head). An error unless the server
/// switched protocols.
pub(crate) async fn upgrade<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    server: &Endpoint,
    buf: &mut [u8],
) -> Result<(usize, usize), String> {
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        server.path, server.host
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let mut len = 0;
    let end = loop {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        if n == 0 {
            return Err("handshake: connection closed".into());
        }
        len += n;
        if let Some(end) = buf[..len].windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if len == buf.len() {
            return Err("handshake: response too long".into());
        }
    };
    if !buf.starts_with(b"HTTP/1.1 101") {
        let head = String::from_utf8_lossy(&buf[..end]);
        return Err(format!(
            "handshake: {}",
            head.lines().next().unwrap_or_default()
        ));
    }
    Ok((end, len))
}

/// Where to connect and from where; hands out servers and source
/// addresses in turn. Without sources, the kernel picks the source
/// address, which saves a `bind` call per connection.
pub struct Target {
    endpoints: Vec<Endpoint>,
    sources: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Target {
    pub fn new(urls: &[String], sources: &[IpAddr]) -> Result<Self, String> {
        Ok(Target {
            endpoints: endpoints(urls, |url| {
                Endpoint::parse(url, "ws://", "only ws:// URLs are supported")
            })?,
            sources: sources.to_vec(),
            next: AtomicUsize::new(0),
        })
    }

    /// Opens one WebSocket to the next server from the next source address.
    pub async fn connect(&self) -> Result<Ws, String> {
        Ok(self.handshake().await?.into_ws())
    }

    /// Opens a connection and completes the upgrade, nothing more: the
    /// `connect` load only closes it again, so it is not split into
    /// halves and gets only the buffer the response needs.
    pub async fn handshake(&self) -> Result<Upgraded, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let server = &self.endpoints[n % self.endpoints.len()];
        let socket = if server.addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(source) = self.sources.get(n % self.sources.len().max(1)) {
            socket
                .bind(SocketAddr::new(*source, 0))
                .map_err(|e| format!("bind {source}: {e}"))?;
        }
        let mut tcp = socket
            .connect(server.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut buf = vec![0u8; HANDSHAKE_BUFFER];
        let (end, len) = upgrade(&mut tcp, server, &mut buf).await?;
        Ok(Upgraded {
            tcp,
            buf,
            start: end,
            end: len,
        })
    }
}

/// A connection whose upgrade succeeded, with what was read after the
/// response.
pub struct Upgraded {
    tcp: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Upgraded {
    /// Splits the connection for reading and writing frames.
    pub fn into_ws(self) -> Ws {
        let Upgraded {
            tcp,
            mut buf,
            start,
            end,
        } = self;
        // Frames go out as they are written. (The handshake needs no
        // NODELAY: each of its writes waits for the previous one's answer.)
        let _ = tcp.set_nodelay(true);
        let (read, write) = tcp.into_split();
        buf.copy_within(start..end, 0);
        buf.resize(READ_BUFFER, 0);
        Ws {
            reader: Reader {
                read,
                buf,
                start: 0,
                end: end - start,
            },
            writer: Writer {
                write: Arc::new(tokio::sync::Mutex::new(write)),
            },
        }
    }

    /// Sends a close frame and closes the socket without waiting for the
    /// server's answer. The frame is sent with `MSG_MORE`, so the FIN that
    /// closing queues leaves in the same segment: one packet fewer for
    /// both ends to process.
    pub async fn close(self) {
        let frame = close_frame();
        let socket = socket2::SockRef::from(&self.tcp);
        let sent = self.tcp.try_io(Interest::WRITABLE, || {
            socket.send_with_flags(&frame, libc::MSG_MORE)
        });
        if !matches!(sent, Ok(n) if n == frame.len()) {
            let mut tcp = self.tcp;
            let _ = tcp.write_all(&frame).await;
        }
    }
}

const READ_BUFFER: usize = 16 * 1024;
/// Room for the upgrade response (and a first frame behind it).
const HANDSHAKE_BUFFER: usize = 1024;

/// One connection, splittable into its reading and writing halves.
pub struct Ws {
    pub reader: Reader,
    pub writer: Writer,
}

/// What a received frame was.
pub enum Frame<'a> {
    Text(&'a [u8]),
    Close(u16),
    Other,
}

/// Parses frames in place from its buffer.
pub struct Reader {
    read: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Reader {
    /// The next frame, or `None` when the connection ended. Pings are
    /// answered through `writer`. Fragmented messages are not expected from
    /// a chat server and count as `Other`.
    pub async fn next(&mut self, writer: &Writer) -> Option<Frame<'_>> {
        loop {
            if let Some((opcode, payload, total)) = parse_header(&self.buf[self.start..self.end]) {
                let at = self.start;
                self.start += total;
                let body = at + payload.0..at + payload.1;
                match opcode {
                    0x1 => return Some(Frame::Text(&self.buf[body])),
                    0x8 => {
                        let code = self
                            .buf
                            .get(body.start..body.start + 2)
                            .map_or(1005, |b| u16::from_be_bytes([b[0], b[1]]));
                        return Some(Frame::Close(code));
                    }
                    0x9 => {
                        let data = self.buf[body].to_vec();
                        let _ = writer.send(0xA, &data).await;
                        continue;
                    }
                    _ => return Some(Frame::Other),
                }
            }
            // Need more bytes: compact, grow for a large frame, read.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.end == self.buf.len() {
                let need = frame_len(&self.buf[..self.end]).unwrap_or(self.buf.len() * 2);
                self.buf.resize(need.max(self.buf.len() * 2), 0);
            }
            match self.read.read(&mut self.buf[self.end..]).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.end += n,
            }
        }
    }
}

/// The total length of the frame at the start of `b`, if its header is in.
fn frame_len(b: &[u8]) -> Option<usize> {
    let (_, (_, end), _) = header(b)?;
    Some(end)
}

/// (opcode, payload range, header+payload) of a complete frame.
fn parse_header(b: &[u8]) -> Option<(u8, (usize, usize), usize)> {
    let (opcode, (start, end), _) = header(b)?;
    (b.len() >= end).then_some((opcode, (start, end), end))
}

fn header(b: &[u8]) -> Option<(u8, (usize, usize), ())> {
    if b.len() < 2 {
        return None;
    }
    let opcode = b[0] & 0x0f;
    let masked = b[1] & 0x80 != 0;
    let (len, mut at) = match b[1] & 0x7f {
        126 => (u16::from_be_bytes([*b.get(2)?, *b.get(3)?]) as usize, 4),
        127 => (
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (n as usize, 2),
    };
    if masked {
        at += 4;
    }
    Some((opcode, (at, at + len), ()))
}

/// The writing half; cheap to clone, shared by a publisher and its reader.
#[derive(Clone)]
pub struct Writer {
    write: Arc<tokio::sync::Mutex<OwnedWriteHalf>>,
}

impl Writer {
    /// Sends one frame with `opcode`.
    pub async fn send(&self, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        encode(&mut frame, opcode, payload);
        self.write.lock().await.write_all(&frame).await
    }

    /// Sends many text frames in one write.
    pub async fn send_texts(&self, frames: &[String]) -> std::io::Result<()> {
        let mut out = Vec::with_capacity(frames.iter().map(|f| f.len() + 14).sum());
        for f in frames {
            encode(&mut out, 0x1, f.as_bytes());
        }
        self.write.lock().await.write_all(&out).await
    }

    /// Sends a close frame.
    pub async fn close(&self) {
        let _ = self.write.lock().await.write_all(&close_frame()).await;
    }
}

/// A masked close frame with code 1000 (normal closure).
pub(crate) fn close_frame() -> Vec<u8> {
    let mut frame = Vec::with_capacity(8);
    encode(&mut frame, 0x8, &1000u16.to_be_bytes());
    frame
}

/// Appends a final, masked (zero key) frame.
fn encode(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= u16::MAX as usize => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

/// Opens `n` connections, at most `concurrency` at a time.
pub async fn connect_many(
    target: &Arc<Target>,
    n: usize,
    concurrency: usize,
) -> Result<Vec<Ws>, String> {
    use futures_util::StreamExt;
    let results: Vec<Result<Ws, String>> = futures_util::stream::iter(0..n)
        .map(|_| {
            let target = target.clone();
            async move {
                let ws = target.connect().await?;
                progress::OPENED.fetch_add(1, Ordering::Relaxed);
                Ok(ws)
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}
