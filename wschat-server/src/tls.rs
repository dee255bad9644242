//! HTTPS and `wss://` on `--listen` (README, "TLS"): the certificate chain
//! and private key read from PEM files, offered to every new handshake,
//! and swapped for a renewed pair on SIGHUP.
//!
//! The rustls configuration is built once; what it offers comes from a
//! resolver holding the current pair behind a lock, so a reload changes
//! what new handshakes get while connections already open keep the
//! session they have. A pair that cannot be loaded never replaces one
//! that works.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use tokio_rustls::TlsAcceptor;
use x509_cert::der::Decode;

use crate::error::TlsError;

/// The TLS side of the server: the acceptor for new connections, and the
/// files to read again on SIGHUP.
pub(crate) struct Tls {
    cert_path: PathBuf,
    key_path: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Arc<Current>,
    acceptor: TlsAcceptor,
}

/// The pair new handshakes get; swapped whole on reload.
#[derive(Debug)]
struct Current(RwLock<Arc<Pair>>);

/// A certificate chain with its key, checked to belong together.
#[derive(Debug)]
struct Pair {
    key: Arc<CertifiedKey>,
    /// The leaf certificate's `notAfter`, in seconds since the Unix epoch.
    expires: i64,
}

impl Tls {
    /// Reads `cert` (the chain, leaf first) and `key` and builds the
    /// acceptor; fails when either cannot be read or they do not match.
    pub(crate) fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let pair = read_pair(cert, key, &provider)?;
        let current = Arc::new(Current(RwLock::new(Arc::new(pair))));
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // HTTP/1.1 only: the WebSocket upgrade needs it, and hyper serves
        // no other version here.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            cert_path: cert.to_owned(),
            key_path: key.to_owned(),
            provider,
            current,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }

    /// Reads both files again and, if they make a good pair, offers it to
    /// every handshake from now on; otherwise keeps the pair there was.
    /// Returns the new certificate's expiry.
    pub(crate) fn reload(&self) -> Result<i64, TlsError> {
        let pair = read_pair(&self.cert_path, &self.key_path, &self.provider)?;
        let expires = pair.expires;
        *self
            .current
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(pair);
        Ok(expires)
    }

    /// When the certificate served now expires, in seconds since the Unix
    /// epoch.
    pub(crate) fn expires(&self) -> i64 {
        self.current.get().expires
    }

    /// The acceptor that runs a connection's handshake.
    pub(crate) fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

impl Current {
    fn get(&self) -> Arc<Pair> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.get().key.clone())
    }
}

/// Reads and checks a certificate chain and its private key.
fn read_pair(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<Pair, TlsError> {
    let read = |option: &'static str, path: &Path| {
        read_small_file(path).map_err(|source| TlsError::Read {
            option,
            path: path.to_owned(),
            source,
        })
    };
    let cert_pem = read("--tls-cert", cert)?;
    let key_pem = read("--tls-key", key)?;
    let bad_cert = |reason: String| TlsError::Cert {
        path: cert.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_cert(format!("not PEM: {e}")))?;
    let leaf = chain
        .first()
        .ok_or_else(|| bad_cert("holds no PEM CERTIFICATE".to_owned()))?;
    let expires = not_after(leaf).map_err(bad_cert)?;
    // PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    // (`EC PRIVATE KEY`), whichever comes first.
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Key {
        path: key.to_owned(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)".to_owned()
            }
            e => format!("not PEM: {e}"),
        },
    })?;
    let key_pair = CertifiedKey::from_der(chain, private, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Mismatch {
            cert: cert.to_owned(),
            key: key.to_owned(),
        },
        e => TlsError::Key {
            path: key.to_owned(),
            reason: e.to_string(),
        },
    })?;
    Ok(Pair {
        key: Arc::new(key_pair),
        expires,
    })
}

/// The largest certificate or key file read: a chain of a few
/// certificates takes a few kilobytes.
const MAX_PEM_FILE: u64 = 1 << 20;

/// Reads a regular file of at most [`MAX_PEM_FILE`] bytes (symbolic links
/// followed, as certbot's `live/` names are). A FIFO would block the read
/// forever and a device might never end, so neither is read. The file is
/// opened without blocking and its kind checked on the open file, not on
/// the path: a path swapped for a FIFO between a check and the open would
/// otherwise hang the open, and every reload after it.
fn read_small_file(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::{Error, ErrorKind, Read};
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(Error::new(ErrorKind::InvalidInput, "not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_PEM_FILE + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_PEM_FILE {
        return Err(Error::new(
            ErrorKind::InvalidData,
            "larger than 1 MiB: not a certificate or key",
        ));
    }
    Ok(bytes)
}

/// The certificate's `notAfter`, in seconds since the Unix epoch.
fn not_after(cert: &CertificateDer<'_>) -> Result<i64, String> {
    let parsed = x509_cert::Certificate::from_der(cert)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let secs = parsed
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    i64::try_from(secs).map_err(|_| "its expiry is out of range".to_owned())
}

/// `secs` since the Unix epoch as an RFC 3339 UTC time, as `/healthz`
/// shows it.
pub(crate) fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Logs the certificate's expiry after `event` (a start or a reload),
/// as a warning once it has passed: browsers refuse such a certificate.
pub(crate) fn log_expiry(expires: i64, event: &str) {
    let at = rfc3339(expires);
    if expires <= chrono::Utc::now().timestamp() {
        tracing::warn!(expires = %at, "{event}: the certificate has expired; clients will refuse it");
    } else {
        tracing::info!(expires = %at, "{event}");
    }
}
