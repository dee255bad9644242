//! `wschat-loadgen`: a load generator for any WebSocket chat server that
//! speaks the wschat protocol (a JSON text frame with `usr` and `msg` in,
//! every message relayed to every client).
//!
//! ```text
//! wschat-loadgen fanout  --url ws://127.0.0.1:8080/ --listeners 1000 --duration 10
//! wschat-loadgen idle    --url ws://127.0.0.1:8080/ --connections 10000 --pid $SERVER_PID
//! wschat-loadgen connect --url ws://127.0.0.1:8080/ --concurrency 50 --duration 10
//! wschat-loadgen connect --url wss://127.0.0.1:8443/ --tls-ca ca.pem
//! wschat-loadgen archive --out big.jsonl --mib 1024
//! wschat-loadgen catchup --url ws://127.0.0.1:8080/ --messages N --pid $SERVER_PID
//! ```
//!
//! On a terminal, each mode shows its progress live on stderr (what it is
//! doing, connections opened, messages published and seen); piped, it
//! prints nothing there but errors. At the end it prints a summary table
//! (`--json` for one JSON object instead). Give the
//! server's PID (`--pid`) to see its CPU use and memory beside ours.
//! Start wschat with the options a load needs: `--rate 0` (no publish
//! limit), `--max-connections` above the connection count and, for fan-out
//! at full speed, a `--send-queue` above `--in-flight`.

mod archive;
mod catchup;
mod client;
mod connect;
mod fanout;
mod idle;
mod procfs;
mod progress;
mod report;
mod tls;

use std::net::IpAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wschat-loadgen",
    version,
    about = "Load generator for wschat-protocol chat servers"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// N listeners, P publishers: deliveries/s, latency, loss, order.
    Fanout(fanout::FanoutArgs),
    /// Hold N idle connections; with --pid, the server's RSS per connection.
    Idle(idle::IdleArgs),
    /// Connect and close as fast as possible: handshakes/s.
    Connect(connect::ConnectArgs),
    /// Write an archive file as the server writes it, for `catchup`.
    Archive(archive::ArchiveArgs),
    /// Resume from a cursor and read all the server holds: messages/s and
    /// the server's RSS over time.
    Catchup(catchup::CatchupArgs),
}

/// Options every mode takes.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// The server's WebSocket URL; several (comma-separated) spread the
    /// connections over several instances in turn.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/")]
    pub url: Vec<String>,
    /// Local source addresses to spread connections over (comma-separated),
    /// past the ephemeral port limit of one address. By default the
    /// kernel picks one.
    #[arg(long, value_delimiter = ',')]
    pub sources: Vec<IpAddr>,
    /// The server's PID, to report its CPU use and RSS.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wschat-loadgen: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    progress::start(match cli.mode {
        Mode::Fanout(_) => "fanout",
        Mode::Idle(_) => "idle",
        Mode::Connect(_) => "connect",
        Mode::Archive(_) => "archive",
        Mode::Catchup(_) => "catchup",
    });
    let result = runtime.block_on(async {
        match cli.mode {
            Mode::Fanout(args) => fanout::run(args).await,
            Mode::Idle(args) => idle::run(args).await,
            Mode::Connect(args) => connect::run(args).await,
            Mode::Archive(args) => archive::run(args),
            Mode::Catchup(args) => catchup::run(args).await,
        }
    });
    progress::stop();
    match result {
        Ok(report) => {
            report.print();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wschat-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
