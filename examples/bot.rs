//! `wschat-bot`: a bot that joins a wschat room, says hello, and answers
//! `!ping` and `!time`. A starting point for bots of your own: connect,
//! publish (with a JWT when the server needs one), react to messages. It
//! stops with a one-line error and a non-zero status when the server
//! refuses what it publishes for good (a wrong token, say) or closes it for
//! any reason but a shutdown; a `rate_limited` or `unavailable` answer is
//! reported and the bot carries on.
//!
//! ```text
//! wschat-bot --url ws://127.0.0.1:8080/ --name bot
//! JWT_SECRET=change-me wschat-bot --name bot      # mints its own token
//! wschat-bot --name bot --jwt eyJ...               # or is handed one
//! ```

use std::process::ExitCode;

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wschat_core::{Jwt, JwtConfig};

#[derive(Parser)]
#[command(
    name = "wschat-bot",
    about = "A wschat bot that answers !ping and !time"
)]
struct Args {
    /// The server's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/")]
    url: String,
    /// The bot's name (`usr`).
    #[arg(long, default_value = "bot")]
    name: String,
    /// A token to publish with.
    #[arg(long, env = "WSCHAT_BOT_JWT", hide_env_values = true)]
    jwt: Option<String>,
    /// Or the server's secret, to mint a token whose `sub` is the name.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    jwt_secret: Option<String>,
}

/// What the bot says to `message`, if anything.
fn answer(name: &str, message: &Value) -> Option<String> {
    let usr = message["usr"].as_str()?;
    if usr == name {
        return None;
    }
    match message["msg"].as_str()?.trim() {
        "!ping" => Some(format!("pong, {usr}")),
        "!time" => Some(format!("it is {} here", message["tim"].as_str()?)),
        _ => None,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    let token = match (&args.jwt, &args.jwt_secret) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(secret)) => {
            match Jwt::new(JwtConfig::new(secret.as_bytes())).mint("sub", &args.name, None) {
                Ok(token) => Some(token),
                Err(e) => {
                    eprintln!("wschat-bot: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        (None, None) => None,
    };
    let (mut ws, _) = match tokio_tungstenite::connect_async(args.url.as_str()).await {
        Ok(connected) => connected,
        Err(e) => {
            eprintln!("wschat-bot: cannot connect to {}: {e}", args.url);
            return ExitCode::FAILURE;
        }
    };
    let frame = |msg: &str| {
        let mut m = json!({"usr": args.name, "msg": msg});
        if let Some(token) = &token {
            m["jwt"] = token.clone().into();
        }
        Message::text(m.to_string())
    };
    if let Err(e) = ws.send(frame("hello! say !ping or !time")).await {
        eprintln!("wschat-bot: {e}");
        return ExitCode::FAILURE;
    }
    while let Some(incoming) = ws.next().await {
        let text = match incoming {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(frame)) => return closed(frame),
            Ok(_) => continue,
            Err(e) => {
                eprintln!("wschat-bot: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        // An error frame answers what the bot published. Only a rate limit
        // or an outage passes; anything else refuses every later message.
        if let Some(err) = message["err"].as_str() {
            let detail = message["detail"].as_str().unwrap_or_default();
            eprintln!("wschat-bot: the server said {err}: {detail}");
            match err {
                "rate_limited" | "unavailable" => continue,
                _ => return ExitCode::FAILURE,
            }
        }
        if let Some(reply) = answer(&args.name, &message)
            && let Err(e) = ws.send(frame(&reply)).await
        {
            eprintln!("wschat-bot: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Reports the server's close frame; a close other than a normal one or
/// the server going away (1001, a shutdown) means the bot was refused.
fn closed(frame: Option<CloseFrame>) -> ExitCode {
    let Some(CloseFrame { code, reason }) = frame else {
        eprintln!("wschat-bot: closed by the server");
        return ExitCode::SUCCESS;
    };
    eprintln!("wschat-bot: closed by the server: {code} ({reason})");
    match code {
        CloseCode::Normal | CloseCode::Away => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}
