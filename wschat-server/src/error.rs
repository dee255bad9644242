//! Why the server cannot start, in one place: each kind of failure is a
//! variant that keeps its cause as its [`source`](std::error::Error::source),
//! and its message says what failed, then the cause, on one line (the
//! binary prints it after `wschat-server: `).

use std::error::Error;
use std::path::PathBuf;

use wschat_core::{JwtAlg, LogError};

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration must not run.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listener's address could not be read.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),
    /// The archive could not be opened or read.
    #[error("archive {}", .0.reason())]
    Archive(#[source] LogError),
    /// The Redis backplane could not start.
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
    /// A token key could not be loaded or does not fit its algorithm.
    #[error(transparent)]
    Keys(#[from] KeysError),
    /// The TLS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A configuration that must not run, found before anything is opened
/// (README, "Command line" and "Security").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line does not parse; its message is clap's, with usage.
    #[error(transparent)]
    CommandLine(#[from] Box<clap::Error>),
    /// An empty JWT secret, which is what an unset variable in a compose
    /// file gives, would let anyone sign tokens.
    #[error(
        "JWT_SECRET (--jwt-secret) is empty, and an empty key lets anyone sign tokens: \
         give it a secret, or unset it to run without JWT mode"
    )]
    EmptySecret,
    /// Half a TLS pair.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Options that exclude each other, given together.
    #[error("{0}: give one of them")]
    Conflict(&'static str),
    /// A value the server cannot run with.
    #[error("{option} must be {bound}")]
    Range {
        /// The option.
        option: &'static str,
        /// What it must be.
        bound: &'static str,
    },
    /// A key and an algorithm that do not go together.
    #[error(transparent)]
    Keys(#[from] KeysError),
}

/// Why the Redis backplane could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    /// The URL is not a Redis URL.
    #[error("--redis: {0}")]
    Url(#[source] redis::RedisError),
    /// Redis did not answer at start.
    #[error("cannot reach Redis: {0}")]
    Unreachable(#[source] redis::RedisError),
}

/// A token key that cannot serve, or token options that do not go
/// together (README, "Tokens from an identity provider").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeysError {
    /// A public-key algorithm without a public key.
    #[error(
        "--jwt-alg {0} needs --jwt-public-key or --jwks (a shared secret signs HS256, HS384 or HS512)"
    )]
    NoPublicKey(JwtAlg),
    /// `--jwt-optional` without any key.
    #[error("--jwt-optional needs a key: --jwt-secret, --jwt-public-key or --jwks")]
    OptionalWithoutKey,
    /// A public key (the option named) with a shared-secret algorithm.
    #[error(
        "{option} needs --jwt-alg set to the key's algorithm (RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA), not {alg}"
    )]
    SecretAlg {
        /// `--jwt-public-key` or `--jwks`.
        option: &'static str,
        /// The algorithm `--jwt-alg` names.
        alg: JwtAlg,
    },
    /// The `--jwt-public-key` file cannot be read or is not a fit key.
    #[error("--jwt-public-key {}: {source}", path.display())]
    PublicKey {
        /// The file.
        path: PathBuf,
        /// Why it cannot serve.
        source: Box<dyn Error + Send + Sync>,
    },
    /// The `--jwks` file or URL cannot be read or holds no fit key set.
    #[error("--jwks {name}: {source}")]
    KeySet {
        /// The file or URL, as given.
        name: String,
        /// Why it cannot serve.
        source: Box<dyn Error + Send + Sync>,
    },
}

/// A TLS certificate and key that cannot serve (README, "TLS").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// One of the two files without the other.
    #[error("{given} needs {missing} too (the certificate and its key, both PEM)")]
    Half {
        /// The option given.
        given: &'static str,
        /// The option missing.
        missing: &'static str,
    },
    /// A file cannot be read.
    #[error("{option} {}: {source}", path.display())]
    Read {
        /// `--tls-cert` or `--tls-key`.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no usable certificate.
    #[error("--tls-cert {}: {reason}", path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key file holds no usable private key.
    #[error("--tls-key {}: {reason}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error(
        "--tls-key {} is not the key of the certificate in --tls-cert {}",
        key.display(),
        cert.display()
    )]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// rustls refused the configuration.
    #[error("TLS: {0}")]
    Config(#[source] rustls::Error),
}
