//! The command line (README, "Command line"): every option, its
//! environment variable and default, and the `token` subcommand.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use wschat_core::{JwtAlg, RoomConfig};

use crate::config::Config;

// The topics `--help` groups the options under.
const NETWORK: &str = "Network";
const TOKENS: &str = "Tokens";
const ARCHIVE: &str = "History and archive";
const CLUSTER: &str = "Cluster";
const LIMITS: &str = "Limits";
const LOGGING: &str = "Logging";

/// wschat: a WebSocket chat server, a real-time public mailing list.
#[derive(Clone, Parser)]
#[command(name = "wschat-server", version, about, long_about = None)]
pub struct Cli {
    /// What to do; without a subcommand, run the server.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The server's options.
    #[command(flatten)]
    pub options: Options,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Print a token signed with the configured secret and algorithm.
    Token(TokenArgs),
}

/// Options of `wschat-server token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user name the token is for.
    #[arg(long)]
    pub usr: String,
    /// The claim that holds the user name.
    #[arg(long, default_value = "sub")]
    pub claim: String,
    /// Make the token expire this many seconds from now.
    #[arg(long, value_name = "SECONDS")]
    pub exp: Option<u64>,
    /// Make it a moderator's token: its --jwt-mod-claim is true.
    #[arg(long = "mod")]
    pub moderator: bool,
}

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The server's options; each also reads the environment variable shown by
/// `--help`.
#[derive(Clone, Args)]
#[command(group = clap::ArgGroup::new("archives").args(["archive", "archive_dir"]).multiple(true))]
pub struct Options {
    /// Address and port to listen on (port 0 picks a free one).
    #[arg(
        help_heading = NETWORK,
        long,
        env = "WSCHAT_LISTEN",
        default_value_t = Config::DEFAULT_LISTEN,
        value_name = "ADDR"
    )]
    pub listen: SocketAddr,

    /// Serve HTTPS and wss:// with this PEM certificate chain, leaf first
    /// (certbot's fullchain.pem); needs --tls-key. SIGHUP reads both again.
    #[arg(help_heading = NETWORK, long, env = "WSCHAT_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    #[arg(help_heading = NETWORK, long, env = "WSCHAT_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Require messages to carry a JWT signed with this secret.
    #[arg(help_heading = TOKENS, long, env = "JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<String>,

    /// The token algorithm: HS256, HS384 or HS512 with a secret; RS256,
    /// RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA with a
    /// public key or key set.
    #[arg(help_heading = TOKENS, long, env = "WSCHAT_JWT_ALG", default_value_t = JwtAlg::default(), global = true)]
    pub jwt_alg: JwtAlg,

    /// Verify tokens with this PEM public key (RSA, EC P-256 or P-384, or
    /// Ed25519) instead of a secret; needs --jwt-alg.
    #[arg(
        help_heading = TOKENS,
        long,
        env = "WSCHAT_JWT_PUBLIC_KEY",
        value_name = "FILE",
        conflicts_with = "jwt_secret"
    )]
    pub jwt_public_key: Option<PathBuf>,

    /// Verify tokens with this JSON Web Key Set, picking the key by the
    /// token's kid: a file, or an http(s) URL fetched at start, every 10
    /// minutes and for an unknown kid; needs --jwt-alg.
    #[arg(
        help_heading = TOKENS,
        long,
        env = "WSCHAT_JWKS",
        value_name = "FILE_OR_URL",
        conflicts_with_all = ["jwt_secret", "jwt_public_key"]
    )]
    pub jwks: Option<String>,

    /// Require the token's `iss` to be ISS.
    #[arg(help_heading = TOKENS, long, env = "WSCHAT_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,

    /// Require the token's `aud` to be AUD (or a list holding it).
    #[arg(help_heading = TOKENS, long, env = "WSCHAT_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,

    /// Accept messages without a token too; a token that is present must
    /// still verify.
    #[arg(help_heading = TOKENS, long, env = "WSCHAT_JWT_OPTIONAL")]
    pub jwt_optional: bool,

    /// Reject tokens whose `exp` has passed.
    #[arg(help_heading = TOKENS, long, env = "WSCHAT_JWT_VALIDATE_EXP")]
    pub jwt_validate_exp: bool,

    /// Require the message's `usr` to equal this claim of its token.
    #[arg(help_heading = TOKENS, long, env = "WSCHAT_JWT_USR_CLAIM", value_name = "NAME")]
    pub jwt_usr_claim: Option<String>,

    /// The claim that makes a token a moderator's when it is `true`.
    #[arg(
        help_heading = TOKENS,
        long,
        env = "WSCHAT_JWT_MOD_CLAIM",
        default_value = Config::DEFAULT_MOD_CLAIM,
        value_name = "NAME",
        global = true
    )]
    pub jwt_mod_claim: String,

    /// Replay the last N messages to each new client.
    #[arg(help_heading = ARCHIVE, long, env = "WSCHAT_HISTORY", default_value_t = RoomConfig::DEFAULT_HISTORY, value_name = "N")]
    pub history: usize,

    /// Append every relayed message to FILE (JSON Lines) before relaying
    /// it; the history is loaded from it at start.
    #[arg(help_heading = ARCHIVE, long, env = "WSCHAT_ARCHIVE", value_name = "FILE")]
    pub archive: Option<PathBuf>,

    /// The archive as one JSON Lines file per UTC day, DIR/YYYY-MM-DD,
    /// like the original wschat's LOG_DIR; DIR is created if missing.
    #[arg(help_heading = ARCHIVE, long, env = "LOG_DIR", value_name = "DIR", conflicts_with = "archive")]
    pub archive_dir: Option<PathBuf>,

    /// Share one room with other instances through this Redis server
    /// (e.g. redis://127.0.0.1:6379/).
    #[arg(help_heading = CLUSTER, long, env = "WSCHAT_REDIS", value_name = "URL")]
    pub redis: Option<String>,

    /// The Redis stream the instances share.
    #[arg(
        help_heading = CLUSTER,
        long,
        env = "WSCHAT_REDIS_KEY",
        default_value = Config::DEFAULT_REDIS_KEY,
        value_name = "NAME"
    )]
    pub redis_key: String,

    /// Sync the archive to disk before relaying each batch.
    #[arg(help_heading = ARCHIVE, long, env = "WSCHAT_ARCHIVE_FSYNC", requires = "archives")]
    pub archive_fsync: bool,

    /// Larger frames or messages close the connection with 1009.
    #[arg(
        help_heading = LIMITS,
        long,
        env = "WSCHAT_MAX_MESSAGE_BYTES",
        default_value_t = Config::DEFAULT_MAX_MESSAGE_BYTES,
        value_name = "N"
    )]
    pub max_message_bytes: usize,

    /// Further upgrades get HTTP 503.
    #[arg(
        help_heading = LIMITS,
        long,
        env = "WSCHAT_MAX_CONNECTIONS",
        default_value_t = Config::DEFAULT_MAX_CONNECTIONS,
        value_name = "N"
    )]
    pub max_connections: usize,

    /// Per-connection publish rate in messages per second; 0 turns it off.
    #[arg(help_heading = LIMITS, long, env = "WSCHAT_RATE", default_value_t = RoomConfig::DEFAULT_RATE, value_name = "R")]
    pub rate: f64,

    /// Per-connection burst of messages above the rate.
    #[arg(help_heading = LIMITS, long, env = "WSCHAT_BURST", default_value_t = RoomConfig::DEFAULT_BURST, value_name = "B")]
    pub burst: u32,

    /// How many messages a client may fall behind before it counts as too
    /// slow (the room's ring, rounded up to a power of two).
    #[arg(help_heading = LIMITS, long, env = "WSCHAT_SEND_QUEUE", default_value_t = RoomConfig::DEFAULT_SEND_QUEUE, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub send_queue: u32,

    /// Seconds between pings to an idle client.
    #[arg(help_heading = LIMITS, long, env = "WSCHAT_PING_INTERVAL", default_value_t = Config::DEFAULT_PING_INTERVAL, value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..=Config::MAX_WAIT_SECONDS))]
    pub ping_interval: u64,

    /// Seconds without any frame from a client before it is closed.
    #[arg(help_heading = LIMITS, long, env = "WSCHAT_IDLE_TIMEOUT", default_value_t = Config::DEFAULT_IDLE_TIMEOUT, value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..=Config::MAX_WAIT_SECONDS))]
    pub idle_timeout: u64,

    /// Seconds a TCP connection has to finish its upgrade.
    #[arg(help_heading = LIMITS, long, env = "WSCHAT_HANDSHAKE_TIMEOUT", default_value_t = Config::DEFAULT_HANDSHAKE_TIMEOUT, value_name = "S",
          value_parser = clap::value_parser!(u64).range(1..=Config::MAX_WAIT_SECONDS))]
    pub handshake_timeout: u64,

    /// Accept upgrades only from this Origin (repeatable); requests without
    /// an Origin are accepted.
    #[arg(
        help_heading = NETWORK,
        long,
        env = "WSCHAT_ALLOWED_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ','
    )]
    pub allowed_origin: Vec<String>,

    /// Serve this directory at / instead of the built-in client.
    #[arg(help_heading = NETWORK, long, env = "WSCHAT_STATIC_DIR", value_name = "DIR")]
    pub static_dir: Option<PathBuf>,

    /// Log format; RUST_LOG sets levels.
    #[arg(help_heading = LOGGING, long, env = "WSCHAT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Options {
    /// Options as the binary would parse them from `args` (without the
    /// program name), for tests and embedding.
    pub fn from_args<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let argv = std::iter::once("wschat-server".into()).chain(args.into_iter().map(Into::into));
        Cli::try_parse_from(argv).map(|cli| cli.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_values() {
        for args in [
            &["--listen", "nowhere"][..],
            &["--jwt-alg", "none"],
            &["--jwt-alg", "HS1024"],
            &["--send-queue", "0"],
            &["--history", "-1"],
        ] {
            assert!(Options::from_args(args).is_err(), "{args:?}");
        }
    }

    #[test]
    fn allowed_origin_repeats() {
        let o = Options::from_args([
            "--allowed-origin",
            "https://a",
            "--allowed-origin",
            "https://b",
        ])
        .unwrap();
        assert_eq!(o.allowed_origin, ["https://a", "https://b"]);
    }

    /// `--help` is grouped by topic: an option added without a heading
    /// would land in a list of its own.
    #[test]
    fn help_is_grouped_by_topic() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        for arg in cli.get_arguments() {
            let id = arg.get_id().as_str();
            if id != "help" && id != "version" {
                assert!(arg.get_help_heading().is_some(), "--{id} has no heading");
            }
        }
        let help = cli.render_help().to_string();
        let at = |heading: &str| {
            help.find(&format!("\n{heading}:\n"))
                .unwrap_or_else(|| panic!("{heading}: {help}"))
        };
        let order = [NETWORK, TOKENS, ARCHIVE, CLUSTER, LIMITS, LOGGING].map(at);
        assert!(order.is_sorted(), "{help}");
        assert!(at(TOKENS) < help.find("--jwt-secret").unwrap());
        assert!(help.find("--jwt-secret").unwrap() < at(ARCHIVE));
    }
}
