//! JWT mode: who may publish. Tokens are HMAC-signed with one shared secret;
//! the algorithm is pinned, so `alg: none` or a swapped algorithm never
//! passes. Minting lives here too, so the operator's `token` command and the
//! check cannot disagree.

use std::fmt;
use std::str::FromStr;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use crate::error::PublishError;
use crate::message::Message;

/// The HMAC algorithm tokens must be signed with.
///
/// ```
/// use wschat_core::JwtAlg;
///
/// assert_eq!("HS384".parse::<JwtAlg>().unwrap(), JwtAlg::Hs384);
/// assert!("RS256".parse::<JwtAlg>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JwtAlg {
    /// HMAC with SHA-256, the default.
    #[default]
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
}

impl JwtAlg {
    fn algorithm(self) -> Algorithm {
        match self {
            JwtAlg::Hs256 => Algorithm::HS256,
            JwtAlg::Hs384 => Algorithm::HS384,
            JwtAlg::Hs512 => Algorithm::HS512,
        }
    }
}

impl FromStr for JwtAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_uppercase().as_str() {
            "HS256" => Ok(JwtAlg::Hs256),
            "HS384" => Ok(JwtAlg::Hs384),
            "HS512" => Ok(JwtAlg::Hs512),
            _ => Err(format!(
                "unknown JWT algorithm {s:?} (expected HS256, HS384 or HS512)"
            )),
        }
    }
}

impl fmt::Display for JwtAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JwtAlg::Hs256 => "HS256",
            JwtAlg::Hs384 => "HS384",
            JwtAlg::Hs512 => "HS512",
        })
    }
}

/// What a token must satisfy for its message to be relayed.
///
/// Its `Debug` form hides the secret, so a configuration can be logged.
///
/// ```
/// use wschat_core::JwtConfig;
///
/// let config = JwtConfig::new("s3cret").usr_claim("sub");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
#[derive(Clone)]
pub struct JwtConfig {
    secret: Vec<u8>,
    alg: JwtAlg,
    validate_exp: bool,
    usr_claim: Option<String>,
}

impl JwtConfig {
    /// HS256 with `secret`, `exp` not checked, `usr` not bound to a claim.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        JwtConfig {
            secret: secret.into(),
            alg: JwtAlg::default(),
            validate_exp: false,
            usr_claim: None,
        }
    }

    /// Pins another algorithm.
    pub fn alg(mut self, alg: JwtAlg) -> Self {
        self.alg = alg;
        self
    }

    /// Rejects tokens whose `exp` has passed (off by default, as in the
    /// original wschat, where tokens were long-lived).
    pub fn validate_exp(mut self, on: bool) -> Self {
        self.validate_exp = on;
        self
    }

    /// Requires the message's `usr` to equal the token's claim `name`, so a
    /// token holder cannot post as somebody else.
    pub fn usr_claim(mut self, name: impl Into<String>) -> Self {
        self.usr_claim = Some(name.into());
        self
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("secret", &"<hidden>")
            .field("alg", &self.alg)
            .field("validate_exp", &self.validate_exp)
            .field("usr_claim", &self.usr_claim)
            .finish()
    }
}

/// Checks and mints tokens for one [`JwtConfig`].
///
/// ```
/// use wschat_core::{JwtConfig, Jwt, Message};
///
/// let jwt = Jwt::new(JwtConfig::new("secret").usr_claim("sub"));
/// let token = jwt.mint("sub", "ann", None).unwrap();
/// let frame = format!(r#"{{"usr":"ann","msg":"hi","jwt":"{token}"}}"#);
/// assert!(jwt.authorize(&Message::parse(&frame).unwrap()).is_ok());
/// let forged = format!(r#"{{"usr":"bob","msg":"hi","jwt":"{token}"}}"#);
/// assert_eq!(jwt.authorize(&Message::parse(&forged).unwrap()).unwrap_err().code(),
///            "unauthorized");
/// ```
pub struct Jwt {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    config: JwtConfig,
}

impl Jwt {
    /// Prepares the keys once, not per message.
    pub fn new(config: JwtConfig) -> Self {
        let mut validation = Validation::new(config.alg.algorithm());
        validation.required_spec_claims.clear();
        validation.validate_exp = config.validate_exp;
        if config.validate_exp {
            validation.required_spec_claims.insert("exp".to_owned());
        }
        validation.validate_aud = false;
        validation.leeway = 0;
        Jwt {
            decoding: DecodingKey::from_secret(&config.secret),
            encoding: EncodingKey::from_secret(&config.secret),
            validation,
            config,
        }
    }

    /// Accepts `message` only if it carries a token that verifies, and (with
    /// a usr claim configured) whose claim equals its `usr`.
    pub fn authorize(&self, message: &Message<'_>) -> Result<(), PublishError> {
        let token = message.jwt().ok_or_else(|| {
            PublishError::Unauthorized("a \"jwt\" string is required to publish".into())
        })?;
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &self.decoding, &self.validation)
                .map_err(|e| {
                    PublishError::Unauthorized(format!("invalid token: {}", describe(&e)))
                })?;
        if let Some(claim) = &self.config.usr_claim {
            match data.claims.get(claim) {
                Some(Value::String(v)) if v == message.usr() => {}
                _ => {
                    return Err(PublishError::Unauthorized(format!(
                        "\"usr\" does not match the token's {claim:?} claim"
                    )));
                }
            }
        }
        Ok(())
    }

    /// A token whose claim `claim` is `usr`, expiring `exp_in_secs` from now
    /// if given, signed with the configured secret and algorithm.
    pub fn mint(
        &self,
        claim: &str,
        usr: &str,
        exp_in_secs: Option<u64>,
    ) -> Result<String, JwtError> {
        let mut claims = Map::new();
        claims.insert(claim.to_owned(), Value::String(usr.to_owned()));
        claims.insert(
            "iat".to_owned(),
            jsonwebtoken::get_current_timestamp().into(),
        );
        if let Some(secs) = exp_in_secs {
            claims.insert(
                "exp".to_owned(),
                jsonwebtoken::get_current_timestamp()
                    .saturating_add(secs)
                    .into(),
            );
        }
        jsonwebtoken::encode(
            &Header::new(self.config.alg.algorithm()),
            &claims,
            &self.encoding,
        )
        .map_err(|e| JwtError(e.to_string()))
    }
}

impl fmt::Debug for Jwt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jwt").field("config", &self.config).finish()
    }
}

/// A token could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot mint token: {0}")]
pub struct JwtError(String);

/// A short reason a token failed, naming the kind of failure only: the
/// library's messages can quote token parts.
fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        InvalidSignature => "wrong signature",
        InvalidAlgorithm | InvalidAlgorithmName => "wrong algorithm",
        ExpiredSignature => "expired",
        ImmatureSignature => "not yet valid",
        MissingRequiredClaim(_) => "missing a required claim",
        _ => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(usr: &str, token: &str) -> String {
        format!(r#"{{"usr":"{usr}","msg":"m","jwt":"{token}"}}"#)
    }

    fn check(jwt: &Jwt, usr: &str, token: &str) -> Result<(), PublishError> {
        jwt.authorize(&Message::parse(&frame(usr, token)).unwrap())
    }

    #[test]
    fn accepts_a_valid_token_in_each_algorithm() {
        for alg in [JwtAlg::Hs256, JwtAlg::Hs384, JwtAlg::Hs512] {
            let jwt = Jwt::new(JwtConfig::new("k").alg(alg));
            let token = jwt.mint("sub", "a", None).unwrap();
            assert_eq!(check(&jwt, "a", &token), Ok(()), "{alg}");
        }
    }

    #[test]
    fn rejects_missing_garbage_wrong_secret_and_wrong_alg() {
        let jwt = Jwt::new(JwtConfig::new("k"));
        let m = Message::parse(r#"{"usr":"a","msg":"m"}"#).unwrap();
        assert!(jwt.authorize(&m).is_err());
        assert!(check(&jwt, "a", "garbage").is_err());
        let other = Jwt::new(JwtConfig::new("other"))
            .mint("sub", "a", None)
            .unwrap();
        assert!(check(&jwt, "a", &other).is_err());
        let hs512 = Jwt::new(JwtConfig::new("k").alg(JwtAlg::Hs512))
            .mint("sub", "a", None)
            .unwrap();
        assert_eq!(
            check(&jwt, "a", &hs512),
            Err(PublishError::Unauthorized(
                "invalid token: wrong algorithm".into()
            ))
        );
    }

    #[test]
    fn rejects_alg_none() {
        // {"alg":"none","typ":"JWT"} . {"sub":"a"} . (no signature)
        let token = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIn0.";
        assert!(check(&Jwt::new(JwtConfig::new("k")), "a", token).is_err());
    }

    #[test]
    fn checks_exp_only_when_asked() {
        let past = jsonwebtoken::get_current_timestamp() - 3600;
        let claims = serde_json::json!({"sub": "a", "exp": past});
        let token =
            jsonwebtoken::encode(&Header::default(), &claims, &EncodingKey::from_secret(b"k"))
                .unwrap();
        assert_eq!(check(&Jwt::new(JwtConfig::new("k")), "a", &token), Ok(()));
        assert_eq!(
            check(
                &Jwt::new(JwtConfig::new("k").validate_exp(true)),
                "a",
                &token
            ),
            Err(PublishError::Unauthorized("invalid token: expired".into()))
        );
    }

    #[test]
    fn binds_usr_to_the_claim() {
        let jwt = Jwt::new(JwtConfig::new("k").usr_claim("sub"));
        let token = jwt.mint("sub", "ann", Some(60)).unwrap();
        assert_eq!(check(&jwt, "ann", &token), Ok(()));
        assert!(check(&jwt, "bob", &token).is_err());
        let no_claim = jwt.mint("name", "ann", None).unwrap();
        assert!(check(&jwt, "ann", &no_claim).is_err());
    }
}
