//! `wschat-server`: parse the command line, then run the server or mint a
//! token. Errors end the process with one line on stderr and exit status 1.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tokio::net::TcpListener;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{FilterExt, Targets};
use tracing_subscriber::prelude::*;
use wschat_core::Jwt;
use wschat_server::cli::{LogFormat, TokenArgs};
use wschat_server::{Cli, Command, Config, Options};

fn main() -> ExitCode {
    let Cli { command, options } = Cli::parse();
    let result = match &command {
        Some(Command::Token(args)) => token(options, args),
        None => Config::try_from(options)
            .map_err(|e| e.to_string())
            .and_then(serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wschat-server: {message}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> Result<(), String> {
    init_logging(config.log_format);
    raise_open_file_limit(config.limits.max_connections);
    let runtime = tokio::runtime::Runtime::new().map_err(|e| format!("cannot start: {e}"))?;
    let served = runtime.block_on(async {
        let stop = wschat_server::signals::shutdown();
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        wschat_server::run(listener, config, stop)
            .await
            .map_err(|e| e.to_string())
    });
    // A write to a hung disk may never return; do not wait for it on the
    // way out (its messages were never relayed).
    runtime.shutdown_timeout(EXIT_GRACE);
    served
}

/// How long an exiting server waits for threads still busy (a write).
const EXIT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Each connection is a file descriptor: lift the soft limit to the hard
/// one, and say so when even that is below `--max-connections`.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < max_connections as u64 + 64 => tracing::warn!(
            limit,
            max_connections,
            "the open-file limit is below --max-connections; upgrades will fail before it"
        ),
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Why `token` cannot sign without a secret (README, JWT mode): said
/// before anything else is checked.
const NO_SECRET: &str = "token: signing needs a shared secret: set JWT_SECRET (or --jwt-secret); \
                         with --jwt-public-key or --jwks, the identity provider issues tokens";

fn token(options: Options, args: &TokenArgs) -> Result<(), String> {
    if options.jwt_secret.is_none() {
        return Err(NO_SECRET.to_owned());
    }
    let config = Config::try_from(options).map_err(|e| e.to_string())?;
    let rules = config.tokens.secret_rules().ok_or(NO_SECRET)?;
    rules.check().map_err(|e| format!("token: {e}"))?;
    if config.tokens.validate_exp && args.exp.is_none() {
        // The server would refuse the token (README, JWT mode).
        return Err(
            "token: with --jwt-validate-exp a token without exp is refused; \
                    pass --exp SECONDS"
                .to_owned(),
        );
    }
    let jwt = Jwt::new(rules);
    let token = if args.moderator {
        jwt.mint_moderator(&args.claim, &args.usr, args.exp)
    } else {
        jwt.mint(&args.claim, &args.usr, args.exp)
    }
    .map_err(|e| e.to_string())?;
    println!("{token}");
    Ok(())
}

/// Logs to stderr at `RUST_LOG`'s levels (default `info`), except that the
/// WebSocket crates stop at `debug`: at `trace` they print whole frames,
/// and a frame can carry a token. The cap is a second filter, so it only
/// ever removes lines: it never turns on the crates' debug lines.
fn init_logging(format: LogFormat) {
    let levels = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let cap = Targets::new()
        .with_default(Level::TRACE)
        .with_target("tungstenite", Level::DEBUG)
        .with_target("tokio_tungstenite", Level::DEBUG);
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let layer = match format {
        LogFormat::Text => layer.boxed(),
        LogFormat::Json => layer.json().boxed(),
    };
    tracing_subscriber::registry()
        .with(layer.with_filter(levels.and(cap)))
        .init();
}
