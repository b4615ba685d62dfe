//! Token signing keys: RS256 (required by OpenID Connect) and ES256,
//! generated in `data_dir` at first start, rotated by `castellan keys
//! rotate`. A rotated-out key stays published in the JWKS until every token
//! it signed has expired.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::SigningKey as EcSigningKey;
use p256::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};

use rand_core::OsRng;
use rsa::traits::PublicKeyParts;
use rsa::RsaPrivateKey;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The file in `data_dir` that holds the keys (private: mode 0600).
pub const FILE_NAME: &str = "oidc-signing-keys.json";
const RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unreadable key file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("key generation failed: {0}")]
    Generation(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("no active {0} signing key")]
    NoKey(&'static str),
    #[error("signing failed: {0}")]
    Failed(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    RS256,
    ES256,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    alg: Algorithm,
    /// Unix seconds.
    created_at: u64,
    /// Set when rotated out: signs nothing new from then on.
    retired_at: Option<u64>,
    /// Dropped from the JWKS after this (unix seconds).
    unpublish_at: Option<u64>,
    /// PKCS#8 PEM.
    private_key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKeys {
    keys: Vec<StoredKey>,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic
/// order, no whitespace.
fn thumbprint(public_jwk_members: &[(&str, &str)]) -> String {
    let body = public_jwk_members
        .iter()
        .map(|(k, v)| format!("\"{k}\":\"{v}\""))
        .collect::<Vec<_>>()
        .join(",");
    b64(&Sha256::digest(format!("{{{body}}}").as_bytes()))
}

fn rsa_public_members(key: &RsaPrivateKey) -> (String, String) {
    (b64(&key.n().to_bytes_be()), b64(&key.e().to_bytes_be()))
}

fn ec_public_members(key: &EcSigningKey) -> Result<(String, String), KeyError> {
    let point = key.verifying_key().to_encoded_point(false);
    match (point.x(), point.y()) {
        (Some(x), Some(y)) => Ok((b64(x), b64(y))),
        _ => Err(KeyError::Generation("EC point without coordinates".into())),
    }
}

fn generate(alg: Algorithm, now: u64) -> Result<StoredKey, KeyError> {
    let gen = |e: &dyn std::fmt::Display| KeyError::Generation(e.to_string());
    let (kid, private_key) = match alg {
        Algorithm::RS256 => {
            let key = RsaPrivateKey::new(&mut OsRng, RSA_BITS).map_err(|e| gen(&e))?;
            let (n, e) = rsa_public_members(&key);
            let pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, LineEnding::LF)
                .map_err(|e| gen(&e))?;
            (
                thumbprint(&[("e", &e), ("kty", "RSA"), ("n", &n)]),
                pem.to_string(),
            )
        }
        Algorithm::ES256 => {
            let key = EcSigningKey::random(&mut OsRng);
            let (x, y) = ec_public_members(&key)?;
            let pem = key.to_pkcs8_pem(LineEnding::LF).map_err(|e| gen(&e))?;
            (
                thumbprint(&[("crv", "P-256"), ("kty", "EC"), ("x", &x), ("y", &y)]),
                pem.to_string(),
            )
        }
    };
    Ok(StoredKey {
        kid,
        alg,
        created_at: now,
        retired_at: None,
        unpublish_at: None,
        private_key,
    })
}

impl SigningKeys {
    /// A new set: one RS256 and one ES256 key, both active.
    pub fn generate(now: u64) -> Result<Self, KeyError> {
        Ok(Self {
            keys: vec![
                generate(Algorithm::RS256, now)?,
                generate(Algorithm::ES256, now)?,
            ],
        })
    }

    /// The keys in `dir`, or `None` when there are none yet.
    pub fn load(dir: &Path) -> Result<Option<Self>, KeyError> {
        let path = dir.join(FILE_NAME);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(KeyError::Io { path, source }),
        };
        let keys: Self = serde_json::from_str(&text).map_err(|e| KeyError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        // Every key must parse now, not when it is first used.
        for k in &keys.keys {
            keys.check(k).map_err(|reason| KeyError::Corrupt {
                path: path.clone(),
                reason,
            })?;
        }
        Ok(Some(keys))
    }

    fn check(&self, k: &StoredKey) -> Result<(), String> {
        match k.alg {
            Algorithm::RS256 => rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&k.private_key)
                .map(|_: RsaPrivateKey| ())
                .map_err(|e| format!("key {}: {e}", k.kid)),
            Algorithm::ES256 => EcSigningKey::from_pkcs8_pem(&k.private_key)
                .map(|_| ())
                .map_err(|e| format!("key {}: {e}", k.kid)),
        }
    }

    /// Writes the keys to `dir` atomically, readable by the owner only.
    pub fn save(&self, dir: &Path) -> Result<(), KeyError> {
        let path = dir.join(FILE_NAME);
        let io = |source| KeyError::Io {
            path: path.clone(),
            source,
        };
        let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
        let text =
            serde_json::to_string_pretty(self).map_err(|e| KeyError::Generation(e.to_string()))?;
        {
            use std::io::Write as _;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(io)?;
            file.write_all(text.as_bytes()).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, &path).map_err(io)
    }

    /// Retires the active keys (they stay published for `publish_for`
    /// seconds, the longest lifetime of a token they signed) and adds a new
    /// active pair. Returns the new key ids.
    pub fn rotate(&mut self, now: u64, publish_for: u64) -> Result<Vec<String>, KeyError> {
        for k in self.keys.iter_mut().filter(|k| k.retired_at.is_none()) {
            k.retired_at = Some(now);
            k.unpublish_at = Some(now.saturating_add(publish_for));
        }
        self.keys.retain(|k| k.unpublish_at.is_none_or(|t| t > now));
        let fresh = [
            generate(Algorithm::RS256, now)?,
            generate(Algorithm::ES256, now)?,
        ];
        let ids = fresh.iter().map(|k| k.kid.clone()).collect();
        self.keys.extend(fresh);
        Ok(ids)
    }

    /// Every key id in the file, active or still published.
    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.kid.clone()).collect()
    }

    /// The ids of the keys that sign new tokens.
    pub fn active_key_ids(&self) -> Vec<String> {
        self.keys
            .iter()
            .filter(|k| k.retired_at.is_none())
            .map(|k| k.kid.clone())
            .collect()
    }

    /// The public keys published at `now` (RFC 7517 JWK Set).
    pub fn jwks(&self, now: u64) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .filter(|k| k.unpublish_at.is_none_or(|t| t > now))
            .filter_map(|k| match k.alg {
                Algorithm::RS256 => {
                    let key: RsaPrivateKey =
                        rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&k.private_key).ok()?;
                    let (n, e) = rsa_public_members(&key);
                    Some(json!({"kty": "RSA", "use": "sig", "alg": "RS256", "kid": k.kid, "n": n, "e": e}))
                }
                Algorithm::ES256 => {
                    let key = EcSigningKey::from_pkcs8_pem(&k.private_key).ok()?;
                    let (x, y) = ec_public_members(&key).ok()?;
                    Some(json!({"kty": "EC", "use": "sig", "alg": "ES256", "crv": "P-256", "kid": k.kid, "x": x, "y": y}))
                }
            })
            .collect();
        json!({ "keys": keys })
    }
}

/// A private key made ready to sign once, when loaded: RSA as an OpenSSL
/// key (the fastest RSA on the machine, the rate `openssl speed` shows),
/// P-256 as ring's key pair (JWS's fixed r‖s form). jsonwebtoken's
/// `EncodingKey` would re-parse and re-check the key for every token,
/// which cost more than the RSA operation itself.
enum PreparedKey {
    Rsa(castellan_signing::RsaSha256),
    Ec(Box<ring::signature::EcdsaKeyPair>),
}

/// The keys made ready for signing and verifying: parsed once when loaded,
/// not on every token.
pub struct Keyring {
    keys: SigningKeys,
    /// The active key per algorithm.
    signing: Vec<(Algorithm, String, PreparedKey)>,
    /// Every key still in the file, by kid.
    verifying: std::collections::HashMap<String, (Algorithm, jsonwebtoken::DecodingKey)>,
}

impl Algorithm {
    pub fn jose(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "RS256" => Some(Algorithm::RS256),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }
}

impl Keyring {
    pub fn new(keys: SigningKeys) -> Result<Self, KeyError> {
        let bad = |kid: &str, e: &dyn std::fmt::Display| KeyError::Corrupt {
            path: PathBuf::from(FILE_NAME),
            reason: format!("key {kid}: {e}"),
        };
        let mut signing = Vec::new();
        let mut verifying = std::collections::HashMap::new();
        for k in &keys.keys {
            let (encoding, decoding) = match k.alg {
                Algorithm::RS256 => {
                    let key: RsaPrivateKey =
                        rsa::pkcs8::DecodePrivateKey::from_pkcs8_pem(&k.private_key)
                            .map_err(|e| bad(&k.kid, &e))?;
                    let der = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_der(&key)
                        .map_err(|e| bad(&k.kid, &e))?;
                    let (n, e) = rsa_public_members(&key);
                    let private = openssl::rsa::Rsa::private_key_from_der(der.as_bytes())
                        .and_then(openssl::pkey::PKey::from_rsa)
                        .map_err(|e| bad(&k.kid, &e))?;
                    (
                        PreparedKey::Rsa(castellan_signing::RsaSha256::new(private)),
                        jsonwebtoken::DecodingKey::from_rsa_components(&n, &e)
                            .map_err(|e| bad(&k.kid, &e))?,
                    )
                }
                Algorithm::ES256 => {
                    let key = EcSigningKey::from_pkcs8_pem(&k.private_key)
                        .map_err(|e| bad(&k.kid, &e))?;
                    let der = key.to_pkcs8_der().map_err(|e| bad(&k.kid, &e))?;
                    let (x, y) = ec_public_members(&key)?;
                    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(
                        &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        der.as_bytes(),
                        &ring::rand::SystemRandom::new(),
                    )
                    .map_err(|e| bad(&k.kid, &e))?;
                    (
                        PreparedKey::Ec(Box::new(pair)),
                        jsonwebtoken::DecodingKey::from_ec_components(&x, &y)
                            .map_err(|e| bad(&k.kid, &e))?,
                    )
                }
            };
            if k.retired_at.is_none() {
                // The newest active key of an algorithm signs.
                signing.retain(|(alg, _, _)| *alg != k.alg);
                signing.push((k.alg, k.kid.clone(), encoding));
            }
            verifying.insert(k.kid.clone(), (k.alg, decoding));
        }
        Ok(Self {
            keys,
            signing,
            verifying,
        })
    }

    pub fn keys(&self) -> &SigningKeys {
        &self.keys
    }

    /// The kid of the active key for `alg`.
    pub fn signing_kid(&self, alg: Algorithm) -> Option<&str> {
        self.signing
            .iter()
            .find(|(a, _, _)| *a == alg)
            .map(|(_, kid, _)| kid.as_str())
    }

    /// The JWS signature of `input` (`header.payload`) with the active key
    /// for `alg`: RSASSA-PKCS1-v1_5 SHA-256, or ECDSA P-256 SHA-256 as r‖s.
    pub fn sign(&self, alg: Algorithm, input: &[u8]) -> Result<Vec<u8>, SignError> {
        let key = self
            .signing
            .iter()
            .find(|(a, _, _)| *a == alg)
            .map(|(_, _, key)| key)
            .ok_or(SignError::NoKey(alg.name()))?;
        match key {
            PreparedKey::Rsa(rsa) => rsa
                .sign(input)
                .map_err(|e| SignError::Failed(e.to_string())),
            PreparedKey::Ec(pair) => pair
                .sign(&ring::rand::SystemRandom::new(), input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|e| SignError::Failed(e.to_string())),
        }
    }

    /// The key with `kid`, active or retired but still in the file.
    pub fn verifying_key(&self, kid: &str) -> Option<(Algorithm, &jsonwebtoken::DecodingKey)> {
        self.verifying.get(kid).map(|(alg, key)| (*alg, key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        assert_eq!(
            thumbprint(&[("e", "AQAB"), ("kty", "RSA"), ("n", n)]),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generated_keys_round_trip_through_the_file() {
        let dir = std::env::temp_dir().join(format!("castellan-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert!(SigningKeys::load(&dir).unwrap().is_none());
        let keys = SigningKeys::generate(1_000).unwrap();
        keys.save(&dir).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(FILE_NAME))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = SigningKeys::load(&dir).unwrap().unwrap();
        assert_eq!(loaded.key_ids(), keys.key_ids());
        let jwks = loaded.jwks(1_000);
        let published: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(
            published,
            keys.key_ids()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
        assert_eq!(jwks["keys"][0]["alg"], "RS256");
        assert_eq!(jwks["keys"][1]["crv"], "P-256");
        assert!(
            jwks.to_string().find("\"d\"").is_none(),
            "no private member published"
        );
        std::fs::write(dir.join(FILE_NAME), "{not json").unwrap();
        assert!(matches!(
            SigningKeys::load(&dir),
            Err(KeyError::Corrupt { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rotation_keeps_old_keys_published_until_their_tokens_expire() {
        let mut keys = SigningKeys::generate(1_000).unwrap();
        let old = keys.key_ids();
        let new = keys.rotate(2_000, 3_600).unwrap();
        assert_eq!(keys.active_key_ids(), new);
        let published = |keys: &SigningKeys, now| {
            keys.jwks(now)["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(published(&keys, 2_001).len(), 4);
        assert_eq!(
            published(&keys, 5_601),
            new,
            "old keys gone after their window"
        );
        assert!(old.iter().all(|k| !new.contains(k)));
    }
}
