//! `wschat-bot`: a bot that joins a wschat room, says hello, and answers
//! `!ping` and `!time`. A starting point for bots of your own: connect,
//! publish (with a JWT when the server needs one), react to messages.
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
    if ws.send(frame("hello! say !ping or !time")).await.is_err() {
        return ExitCode::FAILURE;
    }
    while let Some(Ok(incoming)) = ws.next().await {
        let Message::Text(text) = incoming else {
            continue;
        };
        let Ok(message) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if let Some(err) = message["err"].as_str() {
            eprintln!("wschat-bot: the server said {err}: {}", message["detail"]);
            continue;
        }
        if let Some(reply) = answer(&args.name, &message)
            && ws.send(frame(&reply)).await.is_err()
        {
            break;
        }
    }
    eprintln!("wschat-bot: connection closed");
    ExitCode::SUCCESS
}
