//! Signing keys for tests, generated when first asked for: nothing is
//! checked in that could expire or be mistaken for a real key. Shared by the
//! core's unit tests and the server's tests (included by path).

use std::sync::OnceLock;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
use rand::rngs::OsRng;

/// One key pair, as PEM text.
pub struct TestKey {
    /// What kind of key this is, for messages.
    pub name: &'static str,
    /// PKCS#8 private key.
    pub private_pem: String,
    /// SubjectPublicKeyInfo public key, as `--jwt-public-key` reads it.
    pub public_pem: String,
}

impl TestKey {
    /// An RSA key (2048 bits); `n` picks one of two, so a test can have a
    /// wrong RSA key. Generated once per process: RSA key generation is slow.
    pub fn rsa(n: usize) -> &'static TestKey {
        static KEYS: [OnceLock<TestKey>; 2] = [OnceLock::new(), OnceLock::new()];
        KEYS[n].get_or_init(|| {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("RSA key generation");
            TestKey::from_der(
                "RSA",
                key.to_pkcs8_der().unwrap().as_bytes(),
                key.to_public_key().to_public_key_der().unwrap().as_bytes(),
            )
        })
    }

    /// A fresh P-256 key.
    pub fn p256() -> TestKey {
        let key = p256::SecretKey::random(&mut OsRng);
        TestKey::from_der(
            "P-256",
            key.to_pkcs8_der().unwrap().as_bytes(),
            key.public_key().to_public_key_der().unwrap().as_bytes(),
        )
    }

    /// A fresh P-384 key.
    pub fn p384() -> TestKey {
        let key = p384::SecretKey::random(&mut OsRng);
        TestKey::from_der(
            "P-384",
            key.to_pkcs8_der().unwrap().as_bytes(),
            key.public_key().to_public_key_der().unwrap().as_bytes(),
        )
    }

    /// A fresh Ed25519 key.
    pub fn ed25519() -> TestKey {
        let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
        TestKey::from_der(
            "Ed25519",
            key.to_pkcs8_der().unwrap().as_bytes(),
            key.verifying_key().to_public_key_der().unwrap().as_bytes(),
        )
    }

    fn from_der(name: &'static str, private: &[u8], public: &[u8]) -> TestKey {
        TestKey {
            name,
            private_pem: pem("PRIVATE KEY", private),
            public_pem: pem("PUBLIC KEY", public),
        }
    }

    fn encoding_key(&self) -> EncodingKey {
        let pem = self.private_pem.as_bytes();
        match self.name {
            "RSA" => EncodingKey::from_rsa_pem(pem),
            "Ed25519" => EncodingKey::from_ed_pem(pem),
            _ => EncodingKey::from_ec_pem(pem),
        }
        .unwrap()
    }

    fn decoding_key(&self) -> DecodingKey {
        let pem = self.public_pem.as_bytes();
        match self.name {
            "RSA" => DecodingKey::from_rsa_pem(pem),
            "Ed25519" => DecodingKey::from_ed_pem(pem),
            _ => DecodingKey::from_ec_pem(pem),
        }
        .unwrap()
    }

    /// A token with `claims`, signed with this key using `alg`, naming
    /// `kid` if given.
    pub fn sign(&self, alg: Algorithm, claims: &serde_json::Value, kid: Option<&str>) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding_key()).unwrap()
    }

    /// The public key as a JWK with `kid` and `alg`.
    pub fn jwk(&self, kid: &str, alg: Algorithm) -> serde_json::Value {
        let mut jwk = Jwk::from_decoding_key(&self.decoding_key(), Some(alg)).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        serde_json::to_value(jwk).unwrap()
    }
}

/// A JWK Set holding `keys`.
pub fn jwks(keys: &[serde_json::Value]) -> String {
    serde_json::json!({ "keys": keys }).to_string()
}

fn pem(label: &str, der: &[u8]) -> String {
    p256::pkcs8::der::pem::encode_string(label, LineEnding::LF, der).unwrap()
}

/// Every algorithm a public key can sign with, with the key kinds that fit.
pub const ASYMMETRIC: [(Algorithm, &str); 9] = [
    (Algorithm::RS256, "RSA"),
    (Algorithm::RS384, "RSA"),
    (Algorithm::RS512, "RSA"),
    (Algorithm::PS256, "RSA"),
    (Algorithm::PS384, "RSA"),
    (Algorithm::PS512, "RSA"),
    (Algorithm::ES256, "P-256"),
    (Algorithm::ES384, "P-384"),
    (Algorithm::EdDSA, "Ed25519"),
];
