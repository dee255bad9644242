//! The server's configuration, built once from the command line: what
//! [`run`](crate::run) takes. Every default lives here (or, for the room,
//! in [`RoomConfig`]'s constants), and the command line's defaults are
//! these, so `--help`, [`Config::default`] and the README cannot drift
//! apart. Checks that need no file or network (an empty secret, half a TLS
//! pair, a key without its algorithm) are made here, once, whether the
//! configuration came from the command line or was built by hand.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use wschat_core::{JwtAlg, JwtConfig, RateLimit, RoomConfig};

use crate::cli::{LogFormat, Options};
use crate::error::{ConfigError, KeysError, TlsError};

/// Below this many bytes a JWT secret is warned about at start: HS256's
/// key should be at least as long as its 32-byte hash (RFC 7518, 3.2),
/// and a short one can be guessed offline from any token.
pub const MIN_SECRET_BYTES: usize = 32;

/// What the server does, and with what (README, "Command line").
///
/// ```
/// use wschat_server::Config;
///
/// let config = Config::from_args(["--history", "100"]).unwrap();
/// assert_eq!(config.history, 100);
/// assert_eq!(config.limits.max_connections, Config::default().limits.max_connections);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Where to listen (`--listen`); [`run`](crate::run) is handed its
    /// listener, the binary binds this.
    pub listen: SocketAddr,
    /// HTTPS and wss:// with these files (`--tls-cert`, `--tls-key`).
    pub tls: Option<TlsFiles>,
    /// Which tokens a message needs (README, "JWT mode").
    pub tokens: Tokens,
    /// How many messages each new client is replayed (`--history`).
    pub history: usize,
    /// How far a client may fall behind (`--send-queue`).
    pub send_queue: u32,
    /// Each connection's publish rate; `None` for no limit (`--rate`,
    /// `--burst`).
    pub rate_limit: Option<RateLimit>,
    /// Where relayed messages are written (`--archive`, `--archive-dir`).
    pub archive: Option<ArchiveConfig>,
    /// The room shared through Redis (`--redis`, `--redis-key`).
    pub redis: Option<RedisConfig>,
    /// What one client may do and for how long.
    pub limits: Limits,
    /// Origins allowed to upgrade; empty allows every one
    /// (`--allowed-origin`).
    pub allowed_origins: Vec<String>,
    /// Serve this directory at / instead of the built-in page
    /// (`--static-dir`).
    pub static_dir: Option<PathBuf>,
    /// How log lines are written (`--log-format`).
    pub log_format: LogFormat,
}

/// A TLS certificate chain and its private key, both PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The chain, leaf first.
    pub cert: PathBuf,
    /// The chain's private key.
    pub key: PathBuf,
}

/// Where the keys that verify tokens come from.
#[derive(Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum KeySource {
    /// None: anyone may publish.
    #[default]
    None,
    /// A shared secret (`JWT_SECRET`).
    Secret(String),
    /// A PEM public key file (`--jwt-public-key`).
    PublicKey(PathBuf),
    /// A JSON Web Key Set, a file or an http(s) URL (`--jwks`).
    KeySet(String),
}

impl fmt::Debug for KeySource {
    /// Never shows the secret, nor a URL's user info or query: a
    /// configuration printed into a log must not carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::None => f.write_str("None"),
            KeySource::Secret(_) => f.write_str("Secret(..)"),
            KeySource::PublicKey(path) => f.debug_tuple("PublicKey").field(path).finish(),
            KeySource::KeySet(source) => f
                .debug_tuple("KeySet")
                .field(&without_credentials(source))
                .finish(),
        }
    }
}

/// The token rules (README, "JWT mode" and "Tokens from an identity
/// provider").
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Tokens {
    /// The key, secret or key set.
    pub keys: KeySource,
    /// The one algorithm accepted; never taken from a token.
    pub alg: JwtAlg,
    /// Messages without a token are accepted too.
    pub optional: bool,
    /// Tokens whose `exp` has passed are refused.
    pub validate_exp: bool,
    /// The claim `usr` must equal.
    pub usr_claim: Option<String>,
    /// The claim that makes a token a moderator's.
    pub mod_claim: String,
    /// The `iss` required.
    pub issuer: Option<String>,
    /// The `aud` required.
    pub audience: Option<String>,
}

/// Which archive, and whether each batch is synced to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveConfig {
    /// One file, or a directory of one file per day.
    pub place: ArchivePlace,
    /// Sync before relaying each batch (`--archive-fsync`).
    pub fsync: bool,
}

/// Where the archive is (README, "Archive").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchivePlace {
    /// One JSON Lines file (`--archive`).
    File(PathBuf),
    /// One file per UTC day in this directory (`--archive-dir`).
    Dir(PathBuf),
}

/// The Redis server and stream instances share (README, "Several
/// instances (Redis)").
#[derive(Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// E.g. `redis://127.0.0.1:6379/`.
    pub url: String,
    /// The stream's key.
    pub key: String,
}

impl fmt::Debug for RedisConfig {
    /// Without the URL's password (README, Security, recommends one).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &without_credentials(&self.url))
            .field("key", &self.key)
            .finish()
    }
}

/// `url` without user info, query or fragment, which can hold
/// credentials; what is not a URL is shown as it is (a file's path).
fn without_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = rest.split(['?', '#']).next().unwrap_or_default();
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}{path}")
}

/// What one client may do, and how long it may take (README, "Limits").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Larger frames or messages close the connection with 1009; it also
    /// sizes catch-up pages and `GET /messages` reads.
    pub max_message_bytes: usize,
    /// Further upgrades get 503.
    pub max_connections: usize,
    /// Quiet for this long, a client is pinged.
    pub ping_interval: Duration,
    /// Quiet for this long, a client is closed.
    pub idle_timeout: Duration,
    /// A TCP connection's time to finish its upgrade.
    pub handshake_timeout: Duration,
}

impl Config {
    /// `--listen`'s default: loopback only, so a first run is not public.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8080));
    /// `--redis-key`'s default.
    pub const DEFAULT_REDIS_KEY: &str = "wschat";
    /// `--jwt-mod-claim`'s default.
    pub const DEFAULT_MOD_CLAIM: &str = "mod";
    /// `--max-message-bytes`'s default: 64 KiB.
    pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 65536;
    /// `--max-connections`'s default.
    pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
    /// `--ping-interval`'s default, in seconds.
    pub const DEFAULT_PING_INTERVAL: u64 = 30;
    /// `--idle-timeout`'s default, in seconds.
    pub const DEFAULT_IDLE_TIMEOUT: u64 = 60;
    /// `--handshake-timeout`'s default, in seconds.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: u64 = 10;
    /// The longest `--ping-interval`, `--idle-timeout` and
    /// `--handshake-timeout`, in seconds: a day. Pings keep a quiet
    /// client open for as long as it likes; longer waits only hold dead
    /// connections, and deadlines far in the future overflow the clock.
    pub const MAX_WAIT_SECONDS: u64 = 24 * 3600;

    /// The configuration the binary would run with for `args` (without
    /// the program name), for tests and embedding.
    pub fn from_args<I, T>(args: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let options = Options::from_args(args).map_err(Box::new)?;
        Config::try_from(options)
    }

    /// Refuses what must not run (README, Security): an empty JWT secret,
    /// which is what an unset variable in a compose file gives, would let
    /// anyone sign tokens; half a TLS pair; a key and an algorithm that
    /// do not go together. Messages are one line and never hold a secret.
    pub fn check(&self) -> Result<(), ConfigError> {
        self.tokens.check()?;
        self.limits.check()?;
        if self.send_queue == 0 {
            return Err(ConfigError::Range {
                option: "--send-queue",
                bound: "at least 1",
            });
        }
        Ok(())
    }

    /// The JWT secret's length in bytes when it is shorter than
    /// [`MIN_SECRET_BYTES`]: the server starts, with a warning.
    pub fn short_secret(&self) -> Option<usize> {
        match &self.tokens.keys {
            KeySource::Secret(secret) if secret.len() < MIN_SECRET_BYTES => Some(secret.len()),
            _ => None,
        }
    }

    /// The room this configuration describes, with `jwt`'s token rules.
    pub fn room_config(&self, jwt: Option<JwtConfig>) -> RoomConfig {
        RoomConfig::default()
            .history(self.history)
            .send_queue(self.send_queue as usize)
            .rate_limit(self.rate_limit)
            .jwt(jwt)
    }

    /// The most memory the room's messages can take: each as large as
    /// `--max-message-bytes`, in a full ring (`--send-queue`, rounded up to
    /// a power of two as the ring is) or a full history, whichever holds
    /// more (the two share each message, so it is held once).
    pub fn worst_case_message_bytes(&self) -> u64 {
        let ring = u64::from(self.send_queue).next_power_of_two();
        let held = ring.max(self.history as u64);
        held.saturating_mul(self.limits.max_message_bytes as u64)
    }
}

impl Default for Config {
    /// What `wschat-server` runs with when given no option and no
    /// environment variable.
    fn default() -> Self {
        Config {
            listen: Config::DEFAULT_LISTEN,
            tls: None,
            tokens: Tokens::default(),
            history: RoomConfig::DEFAULT_HISTORY,
            send_queue: RoomConfig::DEFAULT_SEND_QUEUE,
            rate_limit: RateLimit::new(RoomConfig::DEFAULT_RATE, RoomConfig::DEFAULT_BURST),
            archive: None,
            redis: None,
            limits: Limits::default(),
            allowed_origins: Vec::new(),
            static_dir: None,
            log_format: LogFormat::Text,
        }
    }
}

impl Default for Tokens {
    /// No token needed; HS256 once a secret is set.
    fn default() -> Self {
        Tokens {
            keys: KeySource::None,
            alg: JwtAlg::default(),
            optional: false,
            validate_exp: false,
            usr_claim: None,
            mod_claim: Config::DEFAULT_MOD_CLAIM.to_owned(),
            issuer: None,
            audience: None,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: Config::DEFAULT_MAX_MESSAGE_BYTES,
            max_connections: Config::DEFAULT_MAX_CONNECTIONS,
            ping_interval: Duration::from_secs(Config::DEFAULT_PING_INTERVAL),
            idle_timeout: Duration::from_secs(Config::DEFAULT_IDLE_TIMEOUT),
            handshake_timeout: Duration::from_secs(Config::DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

impl Limits {
    /// Each wait between a second and [`Config::MAX_WAIT_SECONDS`], as
    /// the command line takes them.
    fn check(&self) -> Result<(), ConfigError> {
        let range = 1..=Config::MAX_WAIT_SECONDS;
        for (option, wait) in [
            ("--ping-interval", self.ping_interval),
            ("--idle-timeout", self.idle_timeout),
            ("--handshake-timeout", self.handshake_timeout),
        ] {
            if wait.subsec_nanos() != 0 || !range.contains(&wait.as_secs()) {
                return Err(ConfigError::Range {
                    option,
                    bound: "whole seconds from 1 to 86400 (a day)",
                });
            }
        }
        Ok(())
    }
}

impl Tokens {
    /// Whether publishing needs a token at all.
    pub fn enabled(&self) -> bool {
        self.keys != KeySource::None
    }

    /// The rules for a shared secret, if that is the key: what the `token`
    /// subcommand signs with. Rules for a public key or key set need files
    /// and the network: [`run`](crate::run) reads them.
    pub fn secret_rules(&self) -> Option<JwtConfig> {
        match &self.keys {
            KeySource::Secret(secret) => {
                Some(self.rules(JwtConfig::new(secret.as_bytes()).alg(self.alg)))
            }
            _ => None,
        }
    }

    /// Adds the rules every kind of key shares to `config`: expiry, the
    /// usr and moderator claims, issuer, audience, whether a token is
    /// optional.
    pub(crate) fn rules(&self, mut config: JwtConfig) -> JwtConfig {
        config = config
            .validate_exp(self.validate_exp)
            .optional(self.optional)
            .mod_claim(&self.mod_claim);
        if let Some(claim) = &self.usr_claim {
            config = config.usr_claim(claim);
        }
        if let Some(issuer) = &self.issuer {
            config = config.issuer(issuer);
        }
        if let Some(audience) = &self.audience {
            config = config.audience(audience);
        }
        config
    }

    /// Keys and algorithms that cannot go together.
    fn check(&self) -> Result<(), ConfigError> {
        let alg = self.alg;
        match &self.keys {
            KeySource::Secret(secret) if secret.is_empty() => Err(ConfigError::EmptySecret),
            KeySource::None | KeySource::Secret(_) if !alg.is_hmac() => {
                Err(KeysError::NoPublicKey(alg).into())
            }
            KeySource::None if self.optional => Err(KeysError::OptionalWithoutKey.into()),
            KeySource::PublicKey(_) if alg.is_hmac() => Err(KeysError::SecretAlg {
                option: "--jwt-public-key",
                alg,
            }
            .into()),
            KeySource::KeySet(_) if alg.is_hmac() => Err(KeysError::SecretAlg {
                option: "--jwks",
                alg,
            }
            .into()),
            _ => Ok(()),
        }
    }
}

impl TryFrom<Options> for Config {
    type Error = ConfigError;

    /// The one place the command line's options become the configuration.
    fn try_from(o: Options) -> Result<Config, ConfigError> {
        let tls = match (o.tls_cert, o.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
            (None, None) => None,
            (Some(_), None) => Err(TlsError::Half {
                given: "--tls-cert",
                missing: "--tls-key",
            })?,
            (None, Some(_)) => Err(TlsError::Half {
                given: "--tls-key",
                missing: "--tls-cert",
            })?,
        };
        // The command line refuses two of these; options can reach here
        // other ways (a global flag after a subcommand, built by hand).
        let keys = match (o.jwt_secret, o.jwt_public_key, o.jwks) {
            (Some(secret), None, None) => KeySource::Secret(secret),
            (None, Some(path), None) => KeySource::PublicKey(path),
            (None, None, Some(source)) => KeySource::KeySet(source),
            (None, None, None) => KeySource::None,
            _ => Err(ConfigError::Conflict(
                "--jwt-secret, --jwt-public-key and --jwks",
            ))?,
        };
        if !(o.rate.is_finite() && o.rate >= 0.0) {
            Err(ConfigError::Range {
                option: "--rate",
                bound: "a number of messages per second, 0 or more",
            })?;
        }
        let archive = match (o.archive, o.archive_dir) {
            (Some(path), None) => Some(ArchivePlace::File(path)),
            (None, Some(dir)) => Some(ArchivePlace::Dir(dir)),
            (None, None) => None,
            (Some(_), Some(_)) => Err(ConfigError::Conflict("--archive and --archive-dir"))?,
        }
        .map(|place| ArchiveConfig {
            place,
            fsync: o.archive_fsync,
        });
        let config = Config {
            listen: o.listen,
            tls,
            tokens: Tokens {
                keys,
                alg: o.jwt_alg,
                optional: o.jwt_optional,
                validate_exp: o.jwt_validate_exp,
                usr_claim: o.jwt_usr_claim,
                mod_claim: o.jwt_mod_claim,
                issuer: o.jwt_issuer,
                audience: o.jwt_audience,
            },
            history: o.history,
            send_queue: o.send_queue,
            rate_limit: RateLimit::new(o.rate, o.burst),
            archive,
            redis: o.redis.map(|url| RedisConfig {
                url,
                key: o.redis_key,
            }),
            limits: Limits {
                max_message_bytes: o.max_message_bytes,
                max_connections: o.max_connections,
                ping_interval: Duration::from_secs(o.ping_interval),
                idle_timeout: Duration::from_secs(o.idle_timeout),
                handshake_timeout: Duration::from_secs(o.handshake_timeout),
            },
            allowed_origins: o.allowed_origin,
            static_dir: o.static_dir,
            log_format: o.log_format,
        };
        config.check()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command line's defaults are [`Config::default`]'s: one home.
    #[test]
    fn no_options_is_the_default_configuration() {
        assert_eq!(
            Config::from_args(Vec::<String>::new()).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn defaults_match_the_readme() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(
            (
                c.history,
                c.limits.max_message_bytes,
                c.limits.max_connections
            ),
            (0, 65536, 10000)
        );
        assert_eq!(c.rate_limit, RateLimit::new(20.0, 40));
        assert_eq!(c.send_queue, 1024);
        assert_eq!(
            (
                c.limits.ping_interval.as_secs(),
                c.limits.idle_timeout.as_secs(),
                c.limits.handshake_timeout.as_secs()
            ),
            (30, 60, 10)
        );
        assert_eq!(c.tokens.alg, JwtAlg::Hs256);
        assert!(!c.tokens.enabled() && !c.tokens.optional && c.allowed_origins.is_empty());
        assert!(c.tokens.issuer.is_none() && c.tokens.audience.is_none());
        assert!(c.tls.is_none() && c.archive.is_none() && c.redis.is_none());
        assert_eq!(c.tokens.mod_claim, "mod");
    }

    #[test]
    fn tls_takes_both_files_or_neither() {
        let check = |args: &[&str]| Config::from_args(args).map_err(|e| e.to_string());
        assert_eq!(check(&[]).unwrap().tls, None);
        let both = check(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).unwrap();
        assert_eq!(both.tls.unwrap().key, PathBuf::from("k.pem"));
        let one = check(&["--tls-cert", "c.pem"]).unwrap_err();
        assert!(one.starts_with("--tls-cert needs --tls-key"), "{one}");
        let other = check(&["--tls-key", "k.pem"]).unwrap_err();
        assert!(other.starts_with("--tls-key needs --tls-cert"), "{other}");
    }

    #[test]
    fn an_empty_secret_is_refused_and_never_shown() {
        let empty = Config::from_args(["--jwt-secret", ""]).unwrap_err();
        assert!(matches!(empty, ConfigError::EmptySecret), "{empty}");
        let config = Config::from_args(["--jwt-secret", "hunter2"]).unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert_eq!(config.short_secret(), Some(7));
    }

    #[test]
    fn keys_and_algorithms_that_do_not_go_together_are_refused() {
        for (args, says) in [
            (
                &["--jwt-alg", "RS256"][..],
                "needs --jwt-public-key or --jwks",
            ),
            (&["--jwt-optional"], "--jwt-optional needs a key"),
            (
                &["--jwt-public-key", "k.pem"],
                "--jwt-public-key needs --jwt-alg",
            ),
            (&["--jwks", "k.json"], "--jwks needs --jwt-alg"),
        ] {
            let e = Config::from_args(args).unwrap_err().to_string();
            assert!(e.contains(says), "{args:?}: {e}");
        }
    }

    #[test]
    fn credentials_never_reach_debug_output() {
        let c = Config::from_args([
            "--redis",
            "redis://:hunter2@h:6379/0",
            "--jwks",
            "https://u:pw@idp/certs?api_key=k1",
            "--jwt-alg",
            "ES256",
        ])
        .unwrap();
        let shown = format!("{c:?}");
        for secret in ["hunter2", "pw", "k1"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("redis://h:6379/0") && shown.contains("https://idp/certs"));
        assert_eq!(without_credentials("keys/set.json"), "keys/set.json");
    }

    #[test]
    fn waits_and_rates_outside_their_range_are_refused_also_built_by_hand() {
        for args in [
            &["--idle-timeout", "86401"][..],
            &["--ping-interval", "18446744073709551615"],
            &["--rate", "NaN"],
            &["--rate=-1"],
            &["--rate", "inf"],
        ] {
            assert!(Config::from_args(args).is_err(), "{args:?}");
        }
        assert!(Config::from_args(["--idle-timeout", "86400"]).is_ok());
        let mut c = Config::default();
        c.limits.idle_timeout = Duration::ZERO;
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("--idle-timeout")
        );
        let mut c = Config::default();
        c.limits.handshake_timeout = Duration::from_secs(u64::MAX);
        assert!(c.check().is_err());
        let c = Config {
            send_queue: 0,
            ..Config::default()
        };
        assert!(c.check().is_err());
    }

    #[test]
    fn two_key_sources_or_two_archives_are_refused_however_they_come() {
        let mut o = Options::from_args(["--jwt-secret", "s"]).unwrap();
        o.jwt_public_key = Some("k.pem".into());
        let e = Config::try_from(o).unwrap_err().to_string();
        assert!(e.contains("--jwt-public-key"), "{e}");
        let mut o = Options::from_args(["--archive", "a"]).unwrap();
        o.archive_dir = Some("d".into());
        assert!(Config::try_from(o).is_err());
        // A global flag after the subcommand gets past clap's conflicts.
        let cli = <crate::Cli as clap::Parser>::try_parse_from([
            "wschat-server",
            "--jwt-public-key",
            "k.pem",
            "token",
            "--jwt-secret",
            "s",
            "--usr",
            "a",
        ]);
        if let Ok(cli) = cli {
            assert!(Config::try_from(cli.options).is_err());
        }
    }

    #[test]
    fn an_archive_and_redis_are_read_together() {
        let c = Config::from_args([
            "--archive-dir",
            "logs",
            "--archive-fsync",
            "--redis",
            "redis://h/",
        ])
        .unwrap();
        assert_eq!(
            c.archive,
            Some(ArchiveConfig {
                place: ArchivePlace::Dir("logs".into()),
                fsync: true
            })
        );
        assert_eq!(c.redis.unwrap().key, "wschat");
    }
}
