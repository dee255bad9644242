//! Where the keys that verify tokens come from, as the command line names
//! them: a shared secret, a PEM public key, or a JSON Web Key Set from a
//! file or a URL (kept fresh by the `jwks` module). Every key that cannot
//! serve (unreadable, not a key, not fit for `--jwt-alg`) stops the start
//! with one line (README, "Tokens from an identity provider").

use std::error::Error;

use tokio::task::JoinHandle;
use tracing::info;
use wschat_core::{JwtConfig, JwtKeys};

use crate::Options;
use crate::error::KeysError;
use crate::jwks::{self, Fetcher};

/// The token rules the options describe, and the task that keeps a key set
/// from a URL fresh (abort it to stop).
#[derive(Debug)]
pub struct Tokens {
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

/// Reads the key the options name (fetching a key set URL once) and checks
/// it fits `--jwt-alg`.
pub async fn load(options: &Options) -> Result<Tokens, KeysError> {
    let alg = options.jwt_alg;
    let keyed = options.jwt_public_key.is_some() || options.jwks.is_some();
    if !keyed {
        if !alg.is_hmac() {
            return Err(KeysError::NoPublicKey(alg));
        }
        if options.jwt_optional && options.jwt_secret.is_none() {
            return Err(KeysError::OptionalWithoutKey);
        }
        return Ok(Tokens {
            config: options.jwt(),
            refresher: None,
        });
    }
    if alg.is_hmac() {
        let option = match options.jwt_public_key {
            Some(_) => "--jwt-public-key",
            None => "--jwks",
        };
        return Err(KeysError::SecretAlg { option, alg });
    }
    if let Some(path) = &options.jwt_public_key {
        let named = |e: Box<dyn Error + Send + Sync>| KeysError::PublicKey {
            path: path.clone(),
            source: e,
        };
        let pem = std::fs::read(path).map_err(|e| named(e.into()))?;
        let config = JwtConfig::public_key_pem(&pem, alg).map_err(|e| named(e.into()))?;
        info!(path = %path.display(), %alg, "tokens are verified with a public key");
        return Ok(Tokens {
            config: Some(rules(options, config)),
            refresher: None,
        });
    }
    let source = options.jwks.as_deref().unwrap_or_default();
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
    Ok(Tokens {
        config: Some(rules(options, JwtConfig::key_set(keys))),
        refresher,
    })
}

/// Adds the rules every kind of key shares: expiry, the usr claim, issuer,
/// audience and whether a token is optional.
pub(crate) fn rules(options: &Options, mut config: JwtConfig) -> JwtConfig {
    config = config
        .validate_exp(options.jwt_validate_exp)
        .optional(options.jwt_optional)
        .mod_claim(&options.jwt_mod_claim);
    if let Some(claim) = &options.jwt_usr_claim {
        config = config.usr_claim(claim);
    }
    if let Some(issuer) = &options.jwt_issuer {
        config = config.issuer(issuer);
    }
    if let Some(audience) = &options.jwt_audience {
        config = config.audience(audience);
    }
    config
}

fn is_url(source: &str) -> bool {
    let lower = source.get(..8).unwrap_or(source).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}
