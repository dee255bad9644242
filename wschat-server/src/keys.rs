//! Where the keys that verify tokens come from, as the command line names
//! them: a shared secret, a PEM public key, or a JSON Web Key Set from a
//! file or a URL (kept fresh by the `jwks` module). Every key that cannot
//! serve (unreadable, not a key, not fit for `--jwt-alg`) stops the start
//! with one line (README, "Tokens from an identity provider").

use std::error::Error;

use tokio::task::JoinHandle;
use tracing::info;
use wschat_core::{JwtConfig, JwtKeys};

use crate::config::{self, KeySource};
use crate::error::KeysError;
use crate::jwks::{self, Fetcher};

/// The token rules the configuration describes, and the task that keeps a key set
/// from a URL fresh (abort it to stop).
#[derive(Debug)]
pub struct Loaded {
    /// The rules; `None` when publishing needs no token.
    pub config: Option<JwtConfig>,
    /// Fetches a URL's key set again now and then, while it lives.
    pub refresher: Option<Refresher>,
}

/// The task that keeps a key set fresh; dropping it stops the task.
#[derive(Debug)]
pub struct Refresher(JoinHandle<()>);

impl Drop for Refresher {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Reads the key `tokens` names (fetching a key set URL once) and checks
/// it fits the algorithm; which keys go with which algorithms was checked
/// with the rest of the [`Config`](crate::Config).
pub async fn load(tokens: &config::Tokens) -> Result<Loaded, KeysError> {
    let alg = tokens.alg;
    let source = match &tokens.keys {
        KeySource::None | KeySource::Secret(_) => {
            return Ok(Loaded {
                config: tokens.secret_rules(),
                refresher: None,
            });
        }
        KeySource::PublicKey(path) => {
            let named = |e: Box<dyn Error + Send + Sync>| KeysError::PublicKey {
                path: path.clone(),
                source: e,
            };
            let pem = std::fs::read(path).map_err(|e| named(e.into()))?;
            let config = JwtConfig::public_key_pem(&pem, alg).map_err(|e| named(e.into()))?;
            info!(path = %path.display(), %alg, "tokens are verified with a public key");
            return Ok(Loaded {
                config: Some(tokens.rules(config)),
                refresher: None,
            });
        }
        KeySource::KeySet(source) => source.as_str(),
    };
    let named = |e: Box<dyn Error + Send + Sync>| KeysError::KeySet {
        name: source.to_owned(),
        source: e,
    };
    let keys = JwtKeys::new(alg).map_err(|e| named(e.into()))?;
    let refresher = if is_url(source) {
        let fetcher = Fetcher::new(source).map_err(|e| named(e.into()))?;
        let body = fetcher.fetch().await.map_err(|e| named(e.into()))?;
        let n = keys.replace(&body).map_err(|e| named(e.into()))?;
        info!(url = fetcher.shown(), keys = n, %alg, "tokens are verified with a key set");
        Some(Refresher(tokio::spawn(jwks::refresh(
            fetcher,
            keys.clone(),
        ))))
    } else {
        let body = std::fs::read(source).map_err(|e| named(e.into()))?;
        let n = keys.replace(&body).map_err(|e| named(e.into()))?;
        info!(path = source, keys = n, %alg, "tokens are verified with a key set");
        None
    };
    Ok(Loaded {
        config: Some(tokens.rules(JwtConfig::key_set(keys))),
        refresher,
    })
}

fn is_url(source: &str) -> bool {
    let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}
