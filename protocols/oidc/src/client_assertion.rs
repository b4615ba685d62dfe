//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OIDC Core
//! §9): the client signs a short-lived JWT with its own key; the provider
//! checks it against the client's registered `jwks` (inline) or `jwks_uri`
//! (fetched, cached for a while, refetched once when an unknown key id
//! shows up), and keeps its `jti` in the shared store until it expires, so
//! that no node accepts it twice.

use crate::client::OidcClient;
use crate::error::{ErrorCode, OAuthError};
use crate::parameters::MAX_TOKEN_LEN;
use crate::provider::Provider;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use castellan_core::{Engine, StoreError};
pub use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use url::Url;

/// `client_assertion_type` of a JWT bearer assertion (RFC 7523 §2.2).
pub const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// The signing algorithms accepted (and published in discovery).
pub const ALGORITHMS: [&str; 3] = ["RS256", "PS256", "ES256"];
/// An assertion is for one request: its `exp` may be at most this far ahead.
pub const MAX_LIFETIME: u64 = 600;
/// Clock difference tolerated between the client and us (seconds).
const LEEWAY: u64 = 30;
const MAX_JTI_LEN: usize = 256;
/// A fetched key set is kept this long.
pub const JWKS_TTL: Duration = Duration::from_secs(300);
/// An unknown `kid` refetches the set, at most this often (an attacker's
/// made-up key ids must not turn us into a fetching loop).
const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(2);
/// Largest key set read, from the configuration or a `jwks_uri`.
pub const MAX_JWKS_BYTES: usize = 64 * 1024;
const MAX_KEYS: usize = 32;
/// Key sets kept at most (one per `jwks_uri`; clients are few).
const MAX_CACHED_SETS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("malformed client assertion: {0}")]
    Malformed(&'static str),
    #[error("no client {0:?} authenticating with private_key_jwt")]
    UnknownClient(String),
    #[error("no key of the client verifies the assertion")]
    NoKey,
    #[error("the assertion is not valid: {0}")]
    Invalid(String),
    #[error("the assertion was already used")]
    Replayed,
    #[error("the client's jwks_uri could not be read: {0}")]
    Fetch(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A client's keys, as registered.
#[derive(Debug, Clone)]
pub enum ClientKeys {
    Inline(Arc<JwkSet>),
    Remote(Url),
}

/// The registration of a client's keys is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysConfigError {
    #[error("jwks is not a JSON Web Key Set with at least one RS256, PS256 or ES256 key")]
    BadJwks,
    #[error("jwks_uri is not an absolute https URI (http on loopback only)")]
    BadJwksUri,
    #[error("give jwks or jwks_uri, not both")]
    Both,
    #[error("private_key_jwt needs jwks or jwks_uri")]
    Missing,
}

impl ClientKeys {
    pub fn parse(jwks: Option<&str>, jwks_uri: Option<&str>) -> Result<Self, KeysConfigError> {
        match (jwks, jwks_uri) {
            (Some(_), Some(_)) => Err(KeysConfigError::Both),
            (None, None) => Err(KeysConfigError::Missing),
            (Some(text), None) => {
                let set = parse_jwks(text.as_bytes()).ok_or(KeysConfigError::BadJwks)?;
                Ok(ClientKeys::Inline(Arc::new(set)))
            }
            (None, Some(uri)) => {
                let url = Url::parse(uri).map_err(|_| KeysConfigError::BadJwksUri)?;
                let loopback = matches!(url.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
                match url.scheme() {
                    "https" => Ok(ClientKeys::Remote(url)),
                    "http" if loopback => Ok(ClientKeys::Remote(url)),
                    _ => Err(KeysConfigError::BadJwksUri),
                }
            }
        }
    }
}

/// The verification keys of a JWK Set: each key read on its own (a set may
/// hold encryption keys or kinds we do not know), those usable for
/// signatures kept, at most [`MAX_KEYS`]. `None`: not a set, or no such key.
pub fn parse_jwks(bytes: &[u8]) -> Option<JwkSet> {
    if bytes.len() > MAX_JWKS_BYTES {
        return None;
    }
    #[derive(Deserialize)]
    struct Raw {
        keys: Vec<serde_json::Value>,
    }
    let raw: Raw = serde_json::from_slice(bytes).ok()?;
    let keys: Vec<Jwk> = raw
        .keys
        .into_iter()
        .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
        .filter(|k| {
            !matches!(
                k.common.public_key_use,
                Some(PublicKeyUse::Encryption | PublicKeyUse::Other(_))
            ) && ALGORITHMS.iter().any(|a| fits(k, alg_of(a)))
        })
        .take(MAX_KEYS)
        .collect();
    (!keys.is_empty()).then_some(JwkSet { keys })
}

fn alg_of(name: &str) -> Algorithm {
    match name {
        "PS256" => Algorithm::PS256,
        "ES256" => Algorithm::ES256,
        _ => Algorithm::RS256,
    }
}

/// Whether `key` may verify a signature of `alg`: its kind (an RSA key for
/// RS256 and PS256, a P-256 key for ES256) and, when it names one, its
/// algorithm.
fn fits(key: &Jwk, alg: Algorithm) -> bool {
    let kind = match (&key.algorithm, alg) {
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::PS256) => true,
        (AlgorithmParameters::EllipticCurve(ec), Algorithm::ES256) => {
            ec.curve == EllipticCurve::P256
        }
        _ => false,
    };
    let named = key
        .common
        .key_algorithm
        .and_then(|a| format!("{a:?}").parse::<Algorithm>().ok());
    kind && named.is_none_or(|n| n == alg)
}

/// The claims of an assertion (RFC 7523 §3).
#[derive(Debug, Deserialize)]
struct AssertionClaims {
    jti: String,
    exp: u64,
    #[serde(default)]
    iat: Option<u64>,
}

/// The client an assertion claims to come from, read before its signature
/// is checked (to find the keys): `iss` and `sub` must both be it.
pub fn claimed_client(assertion: &str) -> Result<String, AssertionError> {
    if assertion.len() > MAX_TOKEN_LEN {
        return Err(AssertionError::Malformed("too long"));
    }
    let mut parts = assertion.split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AssertionError::Malformed("not a compact JWS"));
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| AssertionError::Malformed("payload is not base64url"))?;
    #[derive(Deserialize)]
    struct Who {
        iss: String,
        sub: String,
    }
    let who: Who =
        serde_json::from_slice(&bytes).map_err(|_| AssertionError::Malformed("no iss and sub"))?;
    if who.iss != who.sub {
        return Err(AssertionError::Invalid("iss and sub differ".into()));
    }
    Ok(who.iss)
}

/// Checks an assertion's signature with the client's `keys` and its claims:
/// `iss` = `sub` = `client_id`, `aud` one of `audiences`, `exp` in the
/// future but at most [`MAX_LIFETIME`] ahead, a `jti`. Returns the `jti`
/// and `exp`. `Err(NoKey)`: no key of `keys` has the header's `kid` (or
/// none fits without one).
pub fn verify(
    assertion: &str,
    client_id: &str,
    keys: &JwkSet,
    audiences: &[String],
    now: u64,
) -> Result<(String, u64), AssertionError> {
    let header = jsonwebtoken::decode_header(assertion)
        .map_err(|_| AssertionError::Malformed("bad header"))?;
    let alg = header.alg;
    if !ALGORITHMS.iter().any(|a| alg_of(a) == alg) {
        return Err(AssertionError::Invalid(format!(
            "alg {alg:?} is not accepted"
        )));
    }
    let key = match &header.kid {
        Some(kid) => keys.find(kid).filter(|k| fits(k, alg)),
        None => {
            let mut fitting = keys.keys.iter().filter(|k| fits(k, alg));
            match (fitting.next(), fitting.next()) {
                (Some(one), None) => Some(one),
                _ => None,
            }
        }
    }
    .ok_or(AssertionError::NoKey)?;
    let key = DecodingKey::from_jwk(key).map_err(|e| AssertionError::Invalid(e.to_string()))?;
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[client_id]);
    validation.sub = Some(client_id.to_owned());
    validation.set_audience(audiences);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.required_spec_claims =
        HashSet::from(["iss", "sub", "aud", "exp"].map(str::to_owned));
    let claims = jsonwebtoken::decode::<AssertionClaims>(assertion, &key, &validation)
        .map_err(|e| AssertionError::Invalid(e.to_string()))?
        .claims;
    if claims.exp + LEEWAY <= now {
        return Err(AssertionError::Invalid("expired".into()));
    }
    if claims.exp > now + MAX_LIFETIME {
        return Err(AssertionError::Invalid(format!(
            "exp is more than {MAX_LIFETIME} s ahead"
        )));
    }
    if claims.iat.is_some_and(|iat| iat > now + LEEWAY) {
        return Err(AssertionError::Invalid("issued in the future".into()));
    }
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
        return Err(AssertionError::Invalid("jti is missing or too long".into()));
    }
    Ok((claims.jti, claims.exp))
}

/// The store key of a used `jti`: hashed, so that its length is fixed.
pub fn jti_key(client_id: &str, jti: &str) -> String {
    let mut h = Sha256::new();
    for part in [client_id, jti] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    format!("oidc:jti:{}", URL_SAFE_NO_PAD.encode(h.finalize()))
}

struct CachedSet {
    keys: Arc<JwkSet>,
    fetched: Instant,
}

/// The key sets fetched from clients' `jwks_uri`, per configuration
/// generation.
#[derive(Default)]
pub struct JwksCache {
    http: Option<reqwest::Client>,
    sets: Mutex<HashMap<String, CachedSet>>,
    /// One fetch at a time: requests arriving together with a cold cache
    /// wait for the first one's answer instead of fetching too.
    fetching: tokio::sync::Mutex<()>,
}

impl JwksCache {
    pub fn new(http: reqwest::Client) -> Self {
        Self {
            http: Some(http),
            ..Self::default()
        }
    }

    /// The cached set of `uri`, when fresh; `refetch`: also when it holds
    /// no `kid` and was fetched long enough ago.
    fn cached(&self, uri: &Url, kid: Option<&str>) -> Option<Arc<JwkSet>> {
        let sets = self.sets.lock();
        let c = sets.get(uri.as_str())?;
        let age = c.fetched.elapsed();
        let unknown_kid = kid.is_some_and(|k| c.keys.find(k).is_none());
        if age > JWKS_TTL || (unknown_kid && age > JWKS_REFETCH_INTERVAL) {
            None
        } else {
            Some(c.keys.clone())
        }
    }

    /// The key set of `uri`, fetched when not cached, or when it lacks
    /// `kid` (once per [`JWKS_REFETCH_INTERVAL`]).
    pub async fn get(&self, uri: &Url, kid: Option<&str>) -> Result<Arc<JwkSet>, AssertionError> {
        if let Some(keys) = self.cached(uri, kid) {
            return Ok(keys);
        }
        let _one_at_a_time = self.fetching.lock().await;
        if let Some(keys) = self.cached(uri, kid) {
            return Ok(keys);
        }
        let keys = Arc::new(self.fetch(uri).await?);
        let mut sets = self.sets.lock();
        if sets.len() >= MAX_CACHED_SETS && !sets.contains_key(uri.as_str()) {
            sets.retain(|_, c| c.fetched.elapsed() <= JWKS_TTL);
            if sets.len() >= MAX_CACHED_SETS {
                sets.clear();
            }
        }
        sets.insert(
            uri.as_str().to_owned(),
            CachedSet {
                keys: keys.clone(),
                fetched: Instant::now(),
            },
        );
        Ok(keys)
    }

    async fn fetch(&self, uri: &Url) -> Result<JwkSet, AssertionError> {
        let fail = |e: &dyn std::fmt::Display| AssertionError::Fetch(e.to_string());
        let http = self.http.as_ref().ok_or_else(|| fail(&"no HTTP client"))?;
        let mut response = http
            .get(uri.clone())
            .header("accept", "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| fail(&e))?;
        if !response.status().is_success() {
            return Err(fail(&format!("status {}", response.status())));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(fail(&"the key set is too large"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| fail(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(fail(&"the key set is too large"));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body).ok_or_else(|| fail(&"not a JWK Set with a signing key"))
    }
}

impl Provider {
    /// Authenticates the client of a request carrying `client_assertion`
    /// (RFC 7523 §2.2): the only method it may use (no secret beside it).
    pub(crate) async fn authenticate_by_assertion(
        &self,
        engine: &Engine,
        basic: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Result<&OidcClient, OAuthError> {
        let invalid = |e: AssertionError| {
            tracing::warn!(error = %e, "client assertion refused");
            match e {
                AssertionError::Store(e) => OAuthError::from(e),
                other => OAuthError::new(ErrorCode::InvalidClient, other.to_string()),
            }
        };
        if basic.is_some() || params.contains_key("client_secret") {
            return Err(OAuthError::new(
                ErrorCode::InvalidClient,
                "more than one client authentication method",
            ));
        }
        if params.get("client_assertion_type").map(String::as_str) != Some(JWT_BEARER) {
            return Err(OAuthError::new(
                ErrorCode::InvalidClient,
                format!("client_assertion_type must be {JWT_BEARER}"),
            ));
        }
        let assertion = params
            .get("client_assertion")
            .ok_or_else(|| invalid(AssertionError::Malformed("client_assertion is missing")))?;
        let client_id = claimed_client(assertion).map_err(invalid)?;
        if params.get("client_id").is_some_and(|c| *c != client_id) {
            return Err(invalid(AssertionError::Invalid(
                "client_id differs from the assertion's".into(),
            )));
        }
        let client = self.clients.get(&client_id);
        let Some((client, keys)) = client.and_then(|c| c.assertion_keys.as_ref().map(|k| (c, k)))
        else {
            return Err(invalid(AssertionError::UnknownClient(client_id)));
        };
        let now = self.now();
        let audiences = self.assertion_audiences();
        let (jti, exp) = match keys {
            ClientKeys::Inline(set) => verify(assertion, &client_id, set, &audiences, now),
            ClientKeys::Remote(uri) => {
                let kid = jsonwebtoken::decode_header(assertion)
                    .ok()
                    .and_then(|h| h.kid);
                let set = self
                    .jwks_cache
                    .get(uri, kid.as_deref())
                    .await
                    .map_err(invalid)?;
                verify(assertion, &client_id, &set, &audiences, now)
            }
        }
        .map_err(invalid)?;
        // RFC 7523 §3 (7): one use per jti, on every node.
        let ttl = Duration::from_secs(exp.saturating_sub(now) + LEEWAY);
        if !engine
            .store()
            .add_record(&jti_key(&client_id, &jti), b"", ttl)
            .await?
        {
            return Err(invalid(AssertionError::Replayed));
        }
        Ok(client)
    }

    /// The `aud` values an assertion may name: the issuer, or the endpoint
    /// URL of any endpoint that authenticates clients (as
    /// node-oidc-provider accepts).
    fn assertion_audiences(&self) -> Vec<String> {
        let i = &self.issuer;
        vec![
            i.clone(),
            format!("{i}/token"),
            format!("{i}/par"),
            format!("{i}/introspect"),
            format!("{i}/revoke"),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const AUD: &str = "https://idp.example/oidc/token";

    /// An ES256 key pair: the JWK of its public half, and its signing key.
    fn es256() -> (serde_json::Value, EncodingKey) {
        use p256::ecdsa::SigningKey;
        use p256::pkcs8::EncodePrivateKey;
        let sk = SigningKey::random(&mut rand_core::OsRng);
        let point = sk.verifying_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "ec1", "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        });
        let der = sk.to_pkcs8_der().unwrap();
        (jwk, EncodingKey::from_ec_der(der.as_bytes()))
    }

    fn now() -> u64 {
        1_800_000_000
    }

    fn assertion(key: &EncodingKey, kid: Option<&str>, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = kid.map(str::to_owned);
        encode(&header, &claims, key).unwrap()
    }

    fn claims(aud: &str, exp: u64) -> serde_json::Value {
        json!({"iss": "c1", "sub": "c1", "aud": aud, "exp": exp, "jti": "j-1", "iat": now()})
    }

    fn set(jwk: serde_json::Value) -> JwkSet {
        parse_jwks(json!({ "keys": [jwk] }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_good_assertion_verifies_and_gives_its_jti() {
        let (jwk, key) = es256();
        let keys = set(jwk);
        let a = assertion(&key, Some("ec1"), claims(AUD, now() + 60));
        assert_eq!(claimed_client(&a).unwrap(), "c1");
        let (jti, exp) = verify(&a, "c1", &keys, &[AUD.to_owned()], now()).unwrap();
        assert_eq!((jti.as_str(), exp), ("j-1", now() + 60));
        // Without a kid, the one fitting key is used.
        let a = assertion(&key, None, claims(AUD, now() + 60));
        assert!(verify(&a, "c1", &keys, &[AUD.to_owned()], now()).is_ok());
    }

    #[test]
    fn wrong_audience_client_lifetime_and_key_are_refused() {
        let (jwk, key) = es256();
        let keys = set(jwk);
        let auds = [AUD.to_owned()];
        let check = |a: &str| verify(a, "c1", &keys, &auds, now());
        let other_aud = assertion(&key, Some("ec1"), claims("https://other/token", now() + 60));
        assert!(matches!(check(&other_aud), Err(AssertionError::Invalid(_))));
        let expired = assertion(&key, Some("ec1"), claims(AUD, now() - LEEWAY));
        assert!(matches!(check(&expired), Err(AssertionError::Invalid(_))));
        let long = assertion(&key, Some("ec1"), claims(AUD, now() + MAX_LIFETIME + 1));
        assert!(matches!(check(&long), Err(AssertionError::Invalid(_))));
        let a = assertion(&key, Some("ec1"), claims(AUD, now() + 60));
        assert!(verify(&a, "c2", &keys, &auds, now()).is_err());
        let unknown_kid = assertion(&key, Some("nope"), claims(AUD, now() + 60));
        assert!(matches!(check(&unknown_kid), Err(AssertionError::NoKey)));
        // Signed by another key under the registered kid.
        let (_, stranger) = es256();
        let forged = assertion(&stranger, Some("ec1"), claims(AUD, now() + 60));
        assert!(matches!(check(&forged), Err(AssertionError::Invalid(_))));
        // No jti.
        let mut c = claims(AUD, now() + 60);
        c.as_object_mut().unwrap().remove("jti");
        assert!(check(&assertion(&key, Some("ec1"), c)).is_err());
    }

    #[test]
    fn symmetric_and_none_algorithms_are_refused() {
        let (jwk, _) = es256();
        let keys = set(jwk);
        let body = URL_SAFE_NO_PAD.encode(claims(AUD, now() + 60).to_string());
        let none = format!(
            "{}.{body}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","kid":"ec1"}"#)
        );
        assert!(verify(&none, "c1", &keys, &[AUD.to_owned()], now()).is_err());
        let hs = encode(
            &Header::new(Algorithm::HS256),
            &claims(AUD, now() + 60),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(matches!(
            verify(&hs, "c1", &keys, &[AUD.to_owned()], now()),
            Err(AssertionError::Invalid(_))
        ));
        // An "oct" key is never a client's verification key.
        assert!(parse_jwks(br#"{"keys":[{"kty":"oct","k":"a2V5","kid":"h"}]}"#).is_none());
    }

    #[test]
    fn claimed_client_needs_equal_iss_and_sub() {
        let enc =
            |v: serde_json::Value| format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(v.to_string()));
        assert!(claimed_client(&enc(json!({"iss": "a", "sub": "b"}))).is_err());
        assert!(claimed_client(&enc(json!({"iss": "a"}))).is_err());
        assert!(claimed_client("a.b").is_err());
        assert!(claimed_client("a.!!.c").is_err());
        assert_eq!(
            claimed_client(&enc(json!({"iss": "a", "sub": "a"}))).unwrap(),
            "a"
        );
    }

    #[test]
    fn key_registrations_are_checked() {
        let (jwk, _) = es256();
        let text = json!({ "keys": [jwk] }).to_string();
        assert!(ClientKeys::parse(Some(&text), None).is_ok());
        assert_eq!(
            ClientKeys::parse(Some("{}"), None).unwrap_err(),
            KeysConfigError::BadJwks
        );
        assert_eq!(
            ClientKeys::parse(None, Some("http://keys.example/jwks")).unwrap_err(),
            KeysConfigError::BadJwksUri
        );
        assert!(ClientKeys::parse(None, Some("http://127.0.0.1:9/jwks")).is_ok());
        assert_eq!(
            ClientKeys::parse(Some(&text), Some("https://k/jwks")).unwrap_err(),
            KeysConfigError::Both
        );
        assert_eq!(
            ClientKeys::parse(None, None).unwrap_err(),
            KeysConfigError::Missing
        );
    }

    #[test]
    fn jti_keys_are_per_client_and_bounded() {
        assert_ne!(jti_key("a", "bc"), jti_key("ab", "c"));
        assert_eq!(
            jti_key("a", &"x".repeat(200)).len(),
            jti_key("a", "x").len()
        );
    }
}
