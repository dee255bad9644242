//! TLS for the tests: a certificate authority and certificates made fresh
//! by rcgen on each run (none checked in to expire), the PEM files the
//! server reads, and clients that trust the authority: HTTPS requests and
//! `wss://` WebSockets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{Answer, Client, WAIT};

/// A certificate authority that the test clients trust.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

/// A server certificate for `127.0.0.1` and `localhost`, and its key.
pub struct Leaf {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PEM (PKCS#8 unless made otherwise).
    pub key_pem: String,
    /// The certificate as a client receives it.
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wschat test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate (EC P-256, PKCS#8 key) valid until `not_after`
    /// (year, month, day), at midnight UTC.
    pub fn leaf(&self, not_after: (i32, u8, u8)) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let key_pem = key.serialize_pem();
        self.leaf_for(&key, key_pem, not_after)
    }

    /// A certificate for `key`, whose file is `key_pem` (any PEM form of
    /// the same key).
    pub fn leaf_for(&self, key: &KeyPair, key_pem: String, not_after: (i32, u8, u8)) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let cert = params.signed_by(key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem,
            der: cert.der().clone(),
        }
    }

    /// A client configuration that trusts this authority only, speaking
    /// TLS 1.2 and 1.3.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client_config_for(&[&rustls::version::TLS13, &rustls::version::TLS12])
    }

    /// [`client_config`](Self::client_config) with only `versions`.
    pub fn client_config_for(
        &self,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Leaf {
    /// Writes the certificate and key to `cert` and `key`.
    pub fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).unwrap();
        std::fs::write(key, &self.key_pem).unwrap();
    }
}

/// The midnight (UTC) of `date`, in seconds since the Unix epoch.
pub fn unix_midnight((year, month, day): (i32, u8, u8)) -> i64 {
    chrono::NaiveDate::from_ymd_opt(year, month.into(), day.into())
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp()
}

/// A fresh folder for one test's files; returns it with the paths of a
/// certificate and a key file in it.
pub fn files(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("wschat-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("fullchain.pem"), dir.join("privkey.pem"));
    (dir, cert, key)
}

/// A TLS connection to `addr`, trusting what `config` trusts.
pub async fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    tokio::time::timeout(WAIT, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("the TLS handshake timed out")
        .expect("the TLS handshake failed")
}

/// A GET over HTTPS with `Connection: close`: the whole answer.
pub async fn https_get(addr: SocketAddr, config: Arc<ClientConfig>, path: &str) -> Answer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tls = connect(addr, config).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        // Until the end, or an error after the answer (a close without
        // close_notify).
        while let Ok(n @ 1..) = tls.read(&mut chunk).await {
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("the server neither answered nor closed the connection");
    Answer::parse(&String::from_utf8_lossy(&buf))
}

/// `GET /healthz` over HTTPS, parsed.
pub async fn https_health(addr: SocketAddr, config: Arc<ClientConfig>) -> serde_json::Value {
    let answer = https_get(addr, config, "/healthz").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    serde_json::from_str(&answer.body).unwrap()
}

/// A `wss://` client trusting what `config` trusts.
pub async fn wss_client(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> Client<TlsStream<TcpStream>> {
    let tls = connect(addr, config).await;
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("wss://{addr}/"), tls),
    )
    .await
    .expect("the WebSocket handshake timed out")
    .expect("the WebSocket handshake failed");
    Client { ws }
}

impl Client<TlsStream<TcpStream>> {
    /// The certificate the server showed this client.
    pub fn server_certificate(&self) -> Option<CertificateDer<'static>> {
        self.ws
            .get_ref()
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| cert.clone().into_owned())
    }
}
