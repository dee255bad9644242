//! `wss://` for the `connect` load: a full TLS handshake each time (no
//! session resumption, as a new visitor's browser makes), then the same
//! upgrade and close as over plain TCP, so the two rates compare the cost
//! of TLS alone.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client::close_frame;

/// One server to connect to.
struct Endpoint {
    addr: SocketAddr,
    host: String,
    path: String,
    name: ServerName<'static>,
}

/// The servers of `wss://` URLs, and the one certificate (authority)
/// trusted for them.
pub struct TlsTarget {
    endpoints: Vec<Endpoint>,
    connector: TlsConnector,
    next: AtomicUsize,
}

impl TlsTarget {
    /// Targets `urls` (all `wss://`), trusting the PEM certificates in `ca`.
    pub fn new(urls: &[String], ca: &Path) -> Result<Self, String> {
        let endpoints = urls
            .iter()
            .map(|url| endpoint(url))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.is_empty() {
            return Err("no --url".into());
        }
        let mut roots = RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?
        {
            let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        if roots.is_empty() {
            return Err(format!("{}: no PEM certificate", ca.display()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Ok(TlsTarget {
            endpoints,
            connector: TlsConnector::from(Arc::new(config)),
            next: AtomicUsize::new(0),
        })
    }

    /// Connects to the next server, completes the TLS handshake and the
    /// upgrade, then sends a close frame and closes without waiting.
    pub async fn handshake_and_close(&self) -> Result<(), String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let server = &self.endpoints[n % self.endpoints.len()];
        let tcp = TcpStream::connect(server.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut tls = self
            .connector
            .connect(server.name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            server.path, server.host
        );
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let mut buf = [0u8; 1024];
        let mut len = 0;
        loop {
            let n = tls
                .read(&mut buf[len..])
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            if n == 0 {
                return Err("handshake: connection closed".into());
            }
            len += n;
            if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
            if len == buf.len() {
                return Err("handshake: response too long".into());
            }
        }
        if !buf.starts_with(b"HTTP/1.1 101") {
            let head = String::from_utf8_lossy(&buf[..len]);
            return Err(format!(
                "handshake: {}",
                head.lines().next().unwrap_or_default()
            ));
        }
        let _ = tls.write_all(&close_frame()).await;
        let _ = tls.shutdown().await;
        Ok(())
    }
}

/// Parses a `wss://host:port/path` URL.
fn endpoint(url: &str) -> Result<Endpoint, String> {
    let rest = url
        .strip_prefix("wss://")
        .ok_or_else(|| format!("{url}: with --tls-ca, every URL is wss://"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let addr = host
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned()).map_err(|e| format!("{url}: {e}"))?;
    Ok(Endpoint {
        addr,
        host: host.to_owned(),
        path,
        name,
    })
}
