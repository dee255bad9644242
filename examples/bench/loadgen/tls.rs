//! `wss://` for the `connect` load: a full TLS handshake each time (no
//! session resumption, as a new visitor's browser makes), then the same
//! upgrade and close as over plain TCP, so the two rates compare the cost
//! of TLS alone.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::client::{Endpoint, close_frame, endpoints, upgrade};

/// One server to connect to, and the name its certificate is checked for.
struct Server {
    at: Endpoint,
    name: ServerName<'static>,
}

/// The servers of `wss://` URLs, and the one certificate (authority)
/// trusted for them.
pub struct TlsTarget {
    servers: Vec<Server>,
    connector: TlsConnector,
    next: AtomicUsize,
}

impl TlsTarget {
    /// Targets `urls` (all `wss://`), trusting the PEM certificates in `ca`.
    pub fn new(urls: &[String], ca: &Path) -> Result<Self, String> {
        let servers = endpoints(urls, server)?;
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
            servers,
            connector: TlsConnector::from(Arc::new(config)),
            next: AtomicUsize::new(0),
        })
    }

    /// Connects to the next server, completes the TLS handshake and the
    /// upgrade, then sends a close frame and closes without waiting.
    pub async fn handshake_and_close(&self) -> Result<(), String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let server = &self.servers[n % self.servers.len()];
        let tcp = TcpStream::connect(server.at.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let mut tls = self
            .connector
            .connect(server.name.clone(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        upgrade(&mut tls, &server.at, &mut [0u8; 1024]).await?;
        let _ = tls.write_all(&close_frame()).await;
        let _ = tls.shutdown().await;
        Ok(())
    }
}

/// Parses a `wss://host:port/path` URL.
fn server(url: &str) -> Result<Server, String> {
    let at = Endpoint::parse(url, "wss://", "with --tls-ca, every URL is wss://")?;
    let host = at.host.as_str();
    let bare = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let bare = bare.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_owned()).map_err(|e| format!("{url}: {e}"))?;
    Ok(Server { at, name })
}
