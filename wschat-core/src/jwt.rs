//! JWT mode: who may publish. A token is checked against a shared secret
//! (HMAC), one public key, or a key set (JWKS) that the transport keeps
//! fresh, so an identity provider can issue tokens without wschat ever
//! holding a signing key. The algorithm is pinned by the configuration and
//! never read from the token: `alg: none`, another algorithm, or an HMAC
//! token "signed" with a public key's text never passes. Minting lives here
//! too, so the operator's `token` command and the check cannot disagree.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::error::PublishError;
use crate::message::Message;

/// The algorithm tokens must be signed with: HMAC with a shared secret, or
/// RSA, RSA-PSS, ECDSA or Ed25519 with a public key.
///
/// ```
/// use wschat_core::JwtAlg;
///
/// assert_eq!("HS384".parse::<JwtAlg>().unwrap(), JwtAlg::Hs384);
/// assert_eq!("eddsa".parse::<JwtAlg>().unwrap().to_string(), "EdDSA");
/// assert!("RS256".parse::<JwtAlg>().is_ok_and(|a| !a.is_hmac()));
/// assert!("none".parse::<JwtAlg>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JwtAlg {
    /// HMAC with SHA-256, the default.
    #[default]
    Hs256,
    /// HMAC with SHA-384.
    Hs384,
    /// HMAC with SHA-512.
    Hs512,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (an RSA key).
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384 (an RSA key).
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512 (an RSA key).
    Rs512,
    /// RSASSA-PSS with SHA-256 (an RSA key).
    Ps256,
    /// RSASSA-PSS with SHA-384 (an RSA key).
    Ps384,
    /// RSASSA-PSS with SHA-512 (an RSA key).
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
}

/// Every algorithm, its name and jsonwebtoken's.
const ALGS: [(JwtAlg, &str, Algorithm); 12] = [
    (JwtAlg::Hs256, "HS256", Algorithm::HS256),
    (JwtAlg::Hs384, "HS384", Algorithm::HS384),
    (JwtAlg::Hs512, "HS512", Algorithm::HS512),
    (JwtAlg::Rs256, "RS256", Algorithm::RS256),
    (JwtAlg::Rs384, "RS384", Algorithm::RS384),
    (JwtAlg::Rs512, "RS512", Algorithm::RS512),
    (JwtAlg::Ps256, "PS256", Algorithm::PS256),
    (JwtAlg::Ps384, "PS384", Algorithm::PS384),
    (JwtAlg::Ps512, "PS512", Algorithm::PS512),
    (JwtAlg::Es256, "ES256", Algorithm::ES256),
    (JwtAlg::Es384, "ES384", Algorithm::ES384),
    (JwtAlg::EdDsa, "EdDSA", Algorithm::EdDSA),
];

impl JwtAlg {
    fn entry(self) -> &'static (JwtAlg, &'static str, Algorithm) {
        ALGS.iter()
            .find(|(alg, _, _)| *alg == self)
            .expect("every algorithm is in the table")
    }

    fn algorithm(self) -> Algorithm {
        self.entry().2
    }

    /// Whether this is an HMAC algorithm, signed with a shared secret
    /// rather than a private key.
    pub fn is_hmac(self) -> bool {
        matches!(self, JwtAlg::Hs256 | JwtAlg::Hs384 | JwtAlg::Hs512)
    }
}

impl FromStr for JwtAlg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ALGS.iter()
            .find(|(_, name, _)| name.eq_ignore_ascii_case(s))
            .map(|(alg, _, _)| *alg)
            .ok_or_else(|| {
                let names: Vec<&str> = ALGS.iter().map(|(_, name, _)| *name).collect();
                format!("unknown JWT algorithm {s:?} (expected {})", one_of(&names))
            })
    }
}

impl fmt::Display for JwtAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.entry().1)
    }
}

/// "A, B or C".
fn one_of(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// A key that cannot serve: unreadable, not a public key, or not fit for
/// the configured algorithm. The text says which, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyError(String);

/// The kinds of public key there are algorithms for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
}

impl KeyKind {
    /// What kind of public key `key` is, read from its bytes (not from
    /// any label that came with it).
    fn of(key: &DecodingKey) -> Result<KeyKind, KeyError> {
        let invalid = || KeyError("not a valid public key".into());
        if key.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            return Err(KeyError("a shared secret, not a public key".into()));
        }
        match Jwk::from_decoding_key(key, None)
            .map_err(|_| invalid())?
            .algorithm
        {
            AlgorithmParameters::RSA(_) => Ok(KeyKind::Rsa),
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
                Ok(KeyKind::P256)
            }
            AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P384 => {
                Ok(KeyKind::P384)
            }
            AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
                Ok(KeyKind::Ed25519)
            }
            _ => Err(invalid()),
        }
    }

    fn name(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::P256 => "an EC P-256 key",
            KeyKind::P384 => "an EC P-384 key",
            KeyKind::Ed25519 => "an Ed25519 key",
        }
    }

    fn algs(self) -> &'static [JwtAlg] {
        use JwtAlg::*;
        match self {
            KeyKind::Rsa => &[Rs256, Rs384, Rs512, Ps256, Ps384, Ps512],
            KeyKind::P256 => &[Es256],
            KeyKind::P384 => &[Es384],
            KeyKind::Ed25519 => &[EdDsa],
        }
    }
}

/// Checks, when a key is loaded rather than when the first token comes,
/// that `key` is a public key that verifies `alg` signatures.
fn check_fit(key: &DecodingKey, alg: JwtAlg) -> Result<(), KeyError> {
    let kind = KeyKind::of(key)?;
    if !kind.algs().contains(&alg) {
        let fits: Vec<String> = kind.algs().iter().map(JwtAlg::to_string).collect();
        let fits: Vec<&str> = fits.iter().map(String::as_str).collect();
        return Err(KeyError(format!(
            "{} does not fit {alg} (it fits {})",
            kind.name(),
            one_of(&fits)
        )));
    }
    // The backend parses the key before it checks a signature: an EC point
    // off its curve or a bad Ed25519 key fails here, once.
    jsonwebtoken::crypto::verify("", b"", key, alg.algorithm())
        .map(drop)
        .map_err(|_| {
            KeyError(format!(
                "not a valid key: {} that does not parse",
                kind.name()
            ))
        })
}

/// Reads a PEM public key: RSA (`PUBLIC KEY` or `RSA PUBLIC KEY`), EC
/// P-256 or P-384, or Ed25519.
fn public_key_from_pem(pem: &[u8]) -> Result<DecodingKey, KeyError> {
    if pem.windows(16).any(|w| w == b"PRIVATE KEY-----") {
        return Err(KeyError(
            "a private key: give the public key (wschat never needs the private one)".into(),
        ));
    }
    DecodingKey::from_rsa_pem(pem)
        .or_else(|_| DecodingKey::from_ec_pem(pem))
        .or_else(|_| DecodingKey::from_ed_pem(pem))
        .map_err(|_| KeyError("not a PEM public key (RSA, EC P-256 or P-384, or Ed25519)".into()))
}

/// A key set (JWKS) for one asymmetric algorithm, shared by the [`Jwt`]
/// that checks tokens with it and whoever keeps it fresh: the server
/// fetches it from an identity provider again now and then, and when
/// [`unknown_kid`](Self::unknown_kid) says a token named a key it does not
/// hold. Cheap to clone; clones share the keys.
///
/// ```
/// use wschat_core::{JwtAlg, JwtKeys};
///
/// let keys = JwtKeys::new(JwtAlg::Rs256).unwrap();
/// assert!(keys.is_empty());
/// assert!(keys.replace(br#"{"keys": []}"#).is_err(), "a set without a usable key");
/// assert!(JwtKeys::new(JwtAlg::Hs256).is_err(), "HMAC has no public keys");
/// ```
#[derive(Clone)]
pub struct JwtKeys(Arc<KeySet>);

struct KeySet {
    alg: JwtAlg,
    /// Replaced whole, never edited, so a reader never sees half a set.
    keys: RwLock<Arc<[SetKey]>>,
    unknown_kid: Notify,
}

struct SetKey {
    kid: Option<String>,
    key: DecodingKey,
}

impl JwtKeys {
    /// An empty set for `alg`, which must be an asymmetric algorithm;
    /// fill it with [`replace`](Self::replace).
    pub fn new(alg: JwtAlg) -> Result<Self, KeyError> {
        if alg.is_hmac() {
            return Err(KeyError(format!(
                "a key set needs an algorithm for public keys, not {alg}"
            )));
        }
        Ok(JwtKeys(Arc::new(KeySet {
            alg,
            keys: RwLock::new(Arc::new([])),
            unknown_kid: Notify::new(),
        })))
    }

    /// The algorithm every key of the set is for.
    pub fn alg(&self) -> JwtAlg {
        self.0.alg
    }

    /// Replaces the keys with those of `jwks`, a JSON Web Key Set, that fit
    /// the algorithm; returns how many do. Keys of another type or curve,
    /// for encryption, for another algorithm, or that do not parse are
    /// skipped (providers publish such keys side by side). A document that
    /// is not a key set, or holds no key that fits, is an error and leaves
    /// the keys as they were. Costs time linear in the document's size.
    pub fn replace(&self, jwks: &[u8]) -> Result<usize, KeyError> {
        let alg = self.0.alg;
        let doc: Value = serde_json::from_slice(jwks)
            .map_err(|e| KeyError(format!("not a JSON Web Key Set: {e}")))?;
        let Some(Value::Array(entries)) = doc.get("keys") else {
            return Err(KeyError("not a JSON Web Key Set: no \"keys\" array".into()));
        };
        let total = entries.len();
        let keys: Vec<SetKey> = entries
            .iter()
            .filter_map(|entry| {
                let jwk = Jwk::deserialize(entry).ok()?;
                let for_signing = matches!(
                    jwk.common.public_key_use,
                    None | Some(PublicKeyUse::Signature)
                );
                let for_alg = jwk
                    .common
                    .key_algorithm
                    .is_none_or(|a| a == KeyAlgorithm::from(alg.algorithm()));
                if !(for_signing && for_alg) {
                    return None;
                }
                let key = DecodingKey::from_jwk(&jwk).ok()?;
                check_fit(&key, alg).ok()?;
                Some(SetKey {
                    kid: jwk.common.key_id,
                    key,
                })
            })
            .collect();
        if keys.is_empty() {
            return Err(KeyError(format!(
                "no key in the set fits {alg} (it has {total})"
            )));
        }
        let n = keys.len();
        *self.0.keys.write().unwrap_or_else(PoisonError::into_inner) = keys.into();
        Ok(n)
    }

    /// How many keys the set holds.
    pub fn len(&self) -> usize {
        self.current().len()
    }

    /// Whether the set holds no key yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Resolves once a token has named a `kid` the set does not hold
    /// (since the last time this resolved), so the owner can fetch the set
    /// again. Requests that come meanwhile count as one.
    pub async fn unknown_kid(&self) {
        self.0.unknown_kid.notified().await;
    }

    fn current(&self) -> Arc<[SetKey]> {
        self.0
            .keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The key a token's `kid` names; without a `kid`, the only key, if
    /// the set holds one.
    fn pick(&self, kid: Option<&str>) -> Result<DecodingKey, PublishError> {
        let keys = self.current();
        let found = match kid {
            Some(kid) => keys.iter().find(|k| k.kid.as_deref() == Some(kid)),
            None if keys.len() == 1 => keys.first(),
            None => {
                return Err(unauthorized(
                    "the token names no key (kid) and there are several",
                ));
            }
        };
        match found {
            Some(k) => Ok(k.key.clone()),
            None => {
                self.0.unknown_kid.notify_one();
                Err(unauthorized(
                    "unknown key (kid); if the key is new, try again shortly",
                ))
            }
        }
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("alg", &self.0.alg)
            .field("len", &self.len())
            .finish()
    }
}

/// Where the keys that verify tokens come from.
#[derive(Clone)]
enum Key {
    Secret(Vec<u8>),
    Public(DecodingKey),
    Set(JwtKeys),
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
    key: Key,
    alg: JwtAlg,
    validate_exp: bool,
    usr_claim: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    optional: bool,
    mod_claim: String,
}

impl JwtConfig {
    /// HS256 with the shared `secret`, `exp` not checked, `usr` not bound
    /// to a claim.
    pub fn new(secret: impl Into<Vec<u8>>) -> Self {
        JwtConfig::with_key(Key::Secret(secret.into()), JwtAlg::default())
    }

    /// Tokens signed by the private half of a PEM public key (RSA, EC
    /// P-256 or P-384, or Ed25519) with `alg`, which must fit the key. The
    /// token's `kid` is not looked at.
    pub fn public_key_pem(pem: &[u8], alg: JwtAlg) -> Result<Self, KeyError> {
        let config = JwtConfig::with_key(Key::Public(public_key_from_pem(pem)?), alg);
        config.check()?;
        Ok(config)
    }

    /// Tokens signed by a key of `keys`, picked by the token's `kid`, with
    /// the set's algorithm.
    pub fn key_set(keys: JwtKeys) -> Self {
        let alg = keys.alg();
        JwtConfig::with_key(Key::Set(keys), alg)
    }

    fn with_key(key: Key, alg: JwtAlg) -> Self {
        JwtConfig {
            key,
            alg,
            validate_exp: false,
            usr_claim: None,
            issuer: None,
            audience: None,
            optional: false,
            mod_claim: "mod".to_owned(),
        }
    }

    /// Pins another algorithm. A shared secret signs HS256, HS384 or
    /// HS512; a key fits the algorithms of its kind. A configuration whose
    /// key does not fit its algorithm refuses every token: see
    /// [`check`](Self::check).
    pub fn alg(mut self, alg: JwtAlg) -> Self {
        self.alg = alg;
        self
    }

    /// Rejects tokens whose `exp` has passed, and tokens without `exp`
    /// (off by default, as in the original wschat, where tokens were
    /// long-lived).
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

    /// Requires the token's `iss` to be `issuer` (not checked otherwise).
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires the token's `aud` to be `audience`, or a list that holds
    /// it (not checked otherwise).
    pub fn audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Accepts messages without a `jwt` too (their `usr` is bound to
    /// nothing); a `jwt` that is present must still verify.
    pub fn optional(mut self, on: bool) -> Self {
        self.optional = on;
        self
    }

    /// The claim that makes a token a moderator's when it is `true`
    /// (default `mod`; README, "Moderation").
    ///
    /// ```
    /// use wschat_core::{Jwt, JwtConfig, Message};
    ///
    /// let jwt = Jwt::new(JwtConfig::new("secret").mod_claim("admin"));
    /// let token = jwt.mint_moderator("sub", "mo", None).unwrap();
    /// let frame = format!(r#"{{"usr":"mo","msg":"m","jwt":"{token}"}}"#);
    /// let claims = jwt.authorize(&Message::parse(&frame).unwrap()).unwrap().unwrap();
    /// assert!(claims.is_true("admin") && jwt.is_moderator(&claims));
    /// ```
    pub fn mod_claim(mut self, name: impl Into<String>) -> Self {
        self.mod_claim = name.into();
        self
    }

    /// Whether the key fits the algorithm. A configuration that does not
    /// refuses every token and mints none; check it at start.
    ///
    /// ```
    /// use wschat_core::{JwtAlg, JwtConfig};
    ///
    /// assert!(JwtConfig::new("secret").alg(JwtAlg::Hs512).check().is_ok());
    /// assert!(JwtConfig::new("secret").alg(JwtAlg::Rs256).check().is_err());
    /// ```
    pub fn check(&self) -> Result<(), KeyError> {
        match &self.key {
            Key::Secret(_) if self.alg.is_hmac() => Ok(()),
            Key::Secret(_) => Err(KeyError(format!(
                "a shared secret signs HS256, HS384 or HS512, not {}",
                self.alg
            ))),
            Key::Public(key) => check_fit(key, self.alg),
            Key::Set(keys) if keys.alg() == self.alg => Ok(()),
            Key::Set(keys) => Err(KeyError(format!(
                "the key set is for {}, not {}",
                keys.alg(),
                self.alg
            ))),
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key: &dyn fmt::Debug = match &self.key {
            Key::Secret(_) => &"<hidden secret>",
            Key::Public(_) => &"<public key>",
            Key::Set(keys) => keys,
        };
        f.debug_struct("JwtConfig")
            .field("key", key)
            .field("alg", &self.alg)
            .field("validate_exp", &self.validate_exp)
            .field("usr_claim", &self.usr_claim)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("optional", &self.optional)
            .field("mod_claim", &self.mod_claim)
            .finish()
    }
}

/// The claims of a token that verified, for checks that come after the
/// signature (is this a moderator's token?).
///
/// ```
/// use wschat_core::{Jwt, JwtConfig, Message};
///
/// let jwt = Jwt::new(JwtConfig::new("secret"));
/// let token = jwt.mint("sub", "ann", None).unwrap();
/// let frame = format!(r#"{{"usr":"ann","msg":"hi","jwt":"{token}"}}"#);
/// let claims = jwt.authorize(&Message::parse(&frame).unwrap()).unwrap().unwrap();
/// assert_eq!(claims.get("sub").and_then(|v| v.as_str()), Some("ann"));
/// assert!(!claims.is_true("mod"));
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Claims(Map<String, Value>);

impl Claims {
    /// The claim `name`, if the token has it.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name)
    }

    /// Whether the claim `name` is the JSON value `true`.
    pub fn is_true(&self, name: &str) -> bool {
        self.get(name) == Some(&Value::Bool(true))
    }
}

/// The key a [`Jwt`] verifies with.
enum Verifier {
    One(DecodingKey),
    Set(JwtKeys),
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
    verifier: Verifier,
    encoding: Option<EncodingKey>,
    validation: Validation,
    config: JwtConfig,
}

impl Jwt {
    /// Prepares the keys once, not per message.
    pub fn new(config: JwtConfig) -> Self {
        let mut validation = Validation::new(config.alg.algorithm());
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        validation.validate_exp = config.validate_exp;
        if config.validate_exp {
            validation.required_spec_claims.insert("exp".to_owned());
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        match &config.audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".to_owned());
            }
            None => validation.validate_aud = false,
        }
        let (verifier, encoding) = match &config.key {
            Key::Secret(secret) => (
                Verifier::One(DecodingKey::from_secret(secret)),
                Some(EncodingKey::from_secret(secret)),
            ),
            Key::Public(key) => (Verifier::One(key.clone()), None),
            Key::Set(keys) => (Verifier::Set(keys.clone()), None),
        };
        Jwt {
            verifier,
            encoding,
            validation,
            config,
        }
    }

    /// Accepts `message` only if it carries a token that verifies, and (with
    /// a usr claim configured) whose claim equals its `usr`; returns the
    /// token's claims. With [`JwtConfig::optional`], a message without a
    /// token is accepted too, with no claims.
    pub fn authorize(&self, message: &Message<'_>) -> Result<Option<Claims>, PublishError> {
        let Some(token) = message.jwt() else {
            if self.config.optional {
                return Ok(None);
            }
            return Err(unauthorized("a \"jwt\" string is required to publish"));
        };
        let claims = self.verify(token)?;
        if let Some(claim) = &self.config.usr_claim {
            match claims.get(claim) {
                Some(Value::String(v)) if v == message.usr() => {}
                _ => {
                    return Err(PublishError::Unauthorized(format!(
                        "\"usr\" does not match the token's {claim:?} claim"
                    )));
                }
            }
        }
        Ok(Some(claims))
    }

    /// The claims of `token` if it verifies with the pinned algorithm.
    fn verify(&self, token: &str) -> Result<Claims, PublishError> {
        let invalid = |e: jsonwebtoken::errors::Error| {
            PublishError::Unauthorized(format!("invalid token: {}", describe(&e)))
        };
        let key = match &self.verifier {
            Verifier::One(key) => Cow::Borrowed(key),
            Verifier::Set(keys) => {
                let header = jsonwebtoken::decode_header(token).map_err(invalid)?;
                // Only a token of the pinned algorithm may ask for a fetch.
                if header.alg != self.config.alg.algorithm() {
                    return Err(unauthorized("invalid token: wrong algorithm"));
                }
                Cow::Owned(keys.pick(header.kid.as_deref())?)
            }
        };
        jsonwebtoken::decode::<Map<String, Value>>(token, &key, &self.validation)
            .map(|data| Claims(data.claims))
            .map_err(invalid)
    }

    /// Whether verified `claims` are a moderator's: the configured
    /// [`mod_claim`](JwtConfig::mod_claim) is `true`.
    pub fn is_moderator(&self, claims: &Claims) -> bool {
        claims.is_true(&self.config.mod_claim)
    }

    /// A token whose claim `claim` is `usr`, expiring `exp_in_secs` from now
    /// if given, with the configured issuer and audience, signed with the
    /// shared secret and algorithm. Tokens for a public key are issued by
    /// whoever holds its private key, never here.
    pub fn mint(
        &self,
        claim: &str,
        usr: &str,
        exp_in_secs: Option<u64>,
    ) -> Result<String, JwtError> {
        self.mint_with(claim, usr, exp_in_secs, false)
    }

    /// [`mint`](Self::mint) a moderator's token: its
    /// [`mod_claim`](JwtConfig::mod_claim) is `true`.
    pub fn mint_moderator(
        &self,
        claim: &str,
        usr: &str,
        exp_in_secs: Option<u64>,
    ) -> Result<String, JwtError> {
        self.mint_with(claim, usr, exp_in_secs, true)
    }

    fn mint_with(
        &self,
        claim: &str,
        usr: &str,
        exp_in_secs: Option<u64>,
        moderator: bool,
    ) -> Result<String, JwtError> {
        let Some(encoding) = &self.encoding else {
            return Err(JwtError(
                "tokens for a public key are issued by whoever holds its private key".into(),
            ));
        };
        let now = jsonwebtoken::get_current_timestamp();
        let mut claims = Map::new();
        claims.insert(claim.to_owned(), Value::String(usr.to_owned()));
        claims.insert("iat".to_owned(), now.into());
        if let Some(secs) = exp_in_secs {
            claims.insert("exp".to_owned(), now.saturating_add(secs).into());
        }
        if let Some(issuer) = &self.config.issuer {
            claims.insert("iss".to_owned(), issuer.as_str().into());
        }
        if let Some(audience) = &self.config.audience {
            claims.insert("aud".to_owned(), audience.as_str().into());
        }
        if moderator {
            claims.insert(self.config.mod_claim.clone(), Value::Bool(true));
        }
        jsonwebtoken::encode(&Header::new(self.config.alg.algorithm()), &claims, encoding)
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

fn unauthorized(detail: &str) -> PublishError {
    PublishError::Unauthorized(detail.to_owned())
}

/// A short reason a token failed, naming the kind of failure only: the
/// library's messages can quote token parts.
fn describe(e: &jsonwebtoken::errors::Error) -> &'static str {
    use jsonwebtoken::errors::ErrorKind::*;
    match e.kind() {
        InvalidSignature => "wrong signature",
        InvalidAlgorithm | InvalidAlgorithmName => "wrong algorithm",
        ExpiredSignature => "expired",
        ImmatureSignature => "not yet valid",
        InvalidIssuer => "wrong issuer (iss)",
        InvalidAudience => "wrong audience (aud)",
        MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "no expiry (exp)",
            "iss" => "no issuer (iss)",
            "aud" => "no audience (aud)",
            _ => "missing a required claim",
        },
        _ => "malformed",
    }
}

#[cfg(test)]
#[path = "../tests/support/keys.rs"]
mod test_keys;

#[cfg(test)]
mod tests {
    use super::test_keys::{ASYMMETRIC, TestKey, jwks};
    use super::*;
    use serde_json::json;

    fn frame(usr: &str, token: &str) -> String {
        format!(r#"{{"usr":"{usr}","msg":"m","jwt":"{token}"}}"#)
    }

    fn check(jwt: &Jwt, usr: &str, token: &str) -> Result<(), PublishError> {
        jwt.authorize(&Message::parse(&frame(usr, token)).unwrap())
            .map(drop)
    }

    fn alg_of(algorithm: Algorithm) -> JwtAlg {
        ALGS.iter().find(|(_, _, a)| *a == algorithm).unwrap().0
    }

    /// One key of each kind, a second RSA key, and every algorithm each
    /// of them signs with.
    fn all_keys() -> Vec<(&'static str, TestKey)> {
        let rsa = |n| {
            let k = TestKey::rsa(n);
            TestKey {
                name: k.name,
                private_pem: k.private_pem.clone(),
                public_pem: k.public_pem.clone(),
            }
        };
        vec![
            ("RSA", rsa(0)),
            ("RSA", rsa(1)),
            ("P-256", TestKey::p256()),
            ("P-384", TestKey::p384()),
            ("Ed25519", TestKey::ed25519()),
        ]
    }

    #[test]
    fn each_public_key_algorithm_takes_its_key_and_refuses_every_other() {
        let keys = all_keys();
        for (i, (kind, key)) in keys.iter().enumerate() {
            for (algorithm, _) in ASYMMETRIC.iter().filter(|(_, k)| k == kind) {
                let alg = alg_of(*algorithm);
                let jwt =
                    Jwt::new(JwtConfig::public_key_pem(key.public_pem.as_bytes(), alg).unwrap());
                let good = key.sign(*algorithm, &json!({"sub": "a"}), Some("ignored"));
                assert_eq!(check(&jwt, "a", &good), Ok(()), "{alg} with its key");
                // Every other key, with every algorithm it signs with.
                for (j, (other_kind, other)) in keys.iter().enumerate() {
                    for (other_alg, _) in ASYMMETRIC.iter().filter(|(_, k)| k == other_kind) {
                        if i == j && other_alg == algorithm {
                            continue;
                        }
                        let token = other.sign(*other_alg, &json!({}), None);
                        assert!(
                            check(&jwt, "a", &token).is_err(),
                            "{alg} took {other_alg:?} by {other_kind} key {j}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_key_that_does_not_fit_the_algorithm_is_refused_at_load() {
        for (kind, key) in all_keys() {
            for (alg, _, _) in ALGS {
                let fits = ASYMMETRIC
                    .iter()
                    .any(|(a, k)| *k == kind && alg_of(*a) == alg);
                let loaded = JwtConfig::public_key_pem(key.public_pem.as_bytes(), alg);
                match (fits, loaded) {
                    (true, Ok(_)) => {}
                    (false, Err(e)) => assert!(e.to_string().contains(&alg.to_string()), "{e}"),
                    (fits, other) => panic!("{kind} with {alg}: fits {fits}, got {other:?}"),
                }
            }
        }
        let e = JwtConfig::public_key_pem(TestKey::p256().public_pem.as_bytes(), JwtAlg::Es384)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "an EC P-256 key does not fit ES384 (it fits ES256)"
        );
    }

    #[test]
    fn what_is_not_a_public_key_is_refused_at_load() {
        let private = TestKey::p256().private_pem;
        let e = JwtConfig::public_key_pem(private.as_bytes(), JwtAlg::Es256).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        for garbage in [
            &b""[..],
            b"not a key",
            b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        ] {
            let e = JwtConfig::public_key_pem(garbage, JwtAlg::Rs256).unwrap_err();
            assert!(e.to_string().contains("not a PEM public key"), "{e}");
        }
    }

    #[test]
    fn hmac_signed_with_the_public_key_text_is_refused() {
        for (kind, key) in all_keys() {
            let (algorithm, _) = ASYMMETRIC.iter().find(|(_, k)| *k == kind).unwrap();
            let jwt = Jwt::new(
                JwtConfig::public_key_pem(key.public_pem.as_bytes(), alg_of(*algorithm)).unwrap(),
            );
            for hmac in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
                let confused = jsonwebtoken::encode(
                    &Header::new(hmac),
                    &json!({"sub": "a"}),
                    &EncodingKey::from_secret(key.public_pem.as_bytes()),
                )
                .unwrap();
                assert_eq!(
                    check(&jwt, "a", &confused),
                    Err(unauthorized("invalid token: wrong algorithm")),
                    "{kind} {hmac:?}"
                );
            }
            let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIn0.";
            assert!(check(&jwt, "a", none).is_err());
        }
    }

    #[test]
    fn a_key_set_picks_by_kid_and_asks_for_unknown_ones() {
        let (a, b) = (TestKey::p256(), TestKey::p256());
        let keys = JwtKeys::new(JwtAlg::Es256).unwrap();
        let set = jwks(&[
            a.jwk("a", Algorithm::ES256),
            b.jwk("b", Algorithm::ES256),
            // Skipped: another curve, another algorithm, for encryption,
            // an unknown kind of key, not a key at all.
            TestKey::p384().jwk("p384", Algorithm::ES384),
            TestKey::p256().jwk("for-es384", Algorithm::ES384),
            {
                let mut enc = TestKey::p256().jwk("enc", Algorithm::ES256);
                enc["use"] = json!("enc");
                enc
            },
            json!({"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "x"}),
            json!(42),
        ]);
        assert_eq!(keys.replace(set.as_bytes()), Ok(2));
        assert_eq!(keys.len(), 2);
        let jwt = Jwt::new(JwtConfig::key_set(keys.clone()));
        let es256 = |key: &TestKey, kid: Option<&str>| key.sign(Algorithm::ES256, &json!({}), kid);
        assert_eq!(check(&jwt, "a", &es256(&a, Some("a"))), Ok(()));
        assert_eq!(check(&jwt, "a", &es256(&b, Some("b"))), Ok(()));
        assert!(check(&jwt, "a", &es256(&a, Some("b"))).is_err());
        assert!(
            check(&jwt, "a", &es256(&a, None)).is_err(),
            "two keys, no kid"
        );

        // An unknown kid is refused and asks the owner to fetch again.
        let asked = || {
            let mut wait = std::pin::pin!(keys.unknown_kid());
            let waker = std::task::Waker::noop();
            wait.as_mut()
                .poll(&mut std::task::Context::from_waker(waker))
                .is_ready()
        };
        use std::future::Future;
        assert!(!asked());
        assert!(check(&jwt, "a", &es256(&a, Some("new"))).is_err());
        assert!(asked());
        assert!(!asked(), "one request per unknown kid");
        // A token of another algorithm never asks.
        let hs = jsonwebtoken::encode(
            &Header {
                kid: Some("new".into()),
                ..Header::new(Algorithm::HS256)
            },
            &json!({}),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(check(&jwt, "a", &hs).is_err());
        assert!(!asked());

        // A bad document, or one without a fitting key, keeps the keys.
        for bad in [
            "nope".to_owned(),
            json!({"nokeys": []}).to_string(),
            jwks(&[TestKey::p384().jwk("p384", Algorithm::ES384)]),
        ] {
            assert!(keys.replace(bad.as_bytes()).is_err(), "{bad}");
        }
        assert_eq!(check(&jwt, "a", &es256(&a, Some("a"))), Ok(()));

        // Rotation: the new set replaces the old one whole.
        keys.replace(jwks(&[b.jwk("b2", Algorithm::ES256)]).as_bytes())
            .unwrap();
        assert!(check(&jwt, "a", &es256(&a, Some("a"))).is_err());
        assert_eq!(check(&jwt, "a", &es256(&b, Some("b2"))), Ok(()));
        assert_eq!(check(&jwt, "a", &es256(&b, None)), Ok(()), "the only key");
    }

    #[test]
    fn issuer_and_audience_are_checked_only_when_given() {
        let key = TestKey::ed25519();
        let config = JwtConfig::public_key_pem(key.public_pem.as_bytes(), JwtAlg::EdDsa).unwrap();
        let token = |claims| key.sign(Algorithm::EdDSA, &claims, None);
        let open = Jwt::new(config.clone());
        assert_eq!(
            check(&open, "a", &token(json!({"iss": "x", "aud": "y"}))),
            Ok(())
        );
        let strict = Jwt::new(config.issuer("https://idp").audience("chat"));
        for (claims, result) in [
            (json!({"iss": "https://idp", "aud": "chat"}), Ok(())),
            (json!({"iss": "https://idp", "aud": ["a", "chat"]}), Ok(())),
            (
                json!({"iss": "https://idp", "aud": ["a", "b"]}),
                Err("invalid token: wrong audience (aud)"),
            ),
            (
                json!({"iss": "https://idp"}),
                Err("invalid token: no audience (aud)"),
            ),
            (
                json!({"iss": "https://other", "aud": "chat"}),
                Err("invalid token: wrong issuer (iss)"),
            ),
            (
                json!({"aud": "chat"}),
                Err("invalid token: no issuer (iss)"),
            ),
        ] {
            assert_eq!(
                check(&strict, "a", &token(claims.clone())),
                result.map_err(unauthorized),
                "{claims}"
            );
        }
    }

    #[test]
    fn minted_tokens_pass_the_same_configuration() {
        let config = JwtConfig::new("k")
            .alg(JwtAlg::Hs384)
            .issuer("wschat")
            .audience("room")
            .usr_claim("sub");
        let jwt = Jwt::new(config);
        let token = jwt.mint("sub", "ann", Some(60)).unwrap();
        assert_eq!(check(&jwt, "ann", &token), Ok(()));
        let key = TestKey::p256();
        let public =
            Jwt::new(JwtConfig::public_key_pem(key.public_pem.as_bytes(), JwtAlg::Es256).unwrap());
        assert!(public.mint("sub", "ann", None).is_err());
    }

    #[test]
    fn optional_accepts_no_token_but_checks_a_present_one() {
        let jwt = Jwt::new(JwtConfig::new("k").optional(true));
        let bare = Message::parse(r#"{"usr":"a","msg":"m"}"#).unwrap();
        assert_eq!(jwt.authorize(&bare), Ok(None));
        assert!(check(&jwt, "a", "garbage").is_err());
        assert!(check(&jwt, "a", "").is_err());
        let token = jwt.mint("mod", "x", None).unwrap();
        let claims = jwt
            .authorize(&Message::parse(&frame("a", &token)).unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(claims.get("mod"), Some(&json!("x")));
    }

    #[test]
    fn a_key_that_does_not_fit_its_algorithm_refuses_everything() {
        let misfit = JwtConfig::new("k").alg(JwtAlg::Rs256);
        assert!(misfit.check().is_err());
        let jwt = Jwt::new(misfit);
        assert!(jwt.mint("sub", "a", None).is_err());
        let hs = Jwt::new(JwtConfig::new("k"))
            .mint("sub", "a", None)
            .unwrap();
        assert!(check(&jwt, "a", &hs).is_err());
        let keys = JwtKeys::new(JwtAlg::Es256).unwrap();
        let set = JwtConfig::key_set(keys).alg(JwtAlg::Es384);
        assert_eq!(
            set.check().unwrap_err().to_string(),
            "the key set is for ES256, not ES384"
        );
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
