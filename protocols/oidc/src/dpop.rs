//! DPoP (RFC 9449): proofs of possession of a key, sent by a client in the
//! `DPoP` header, that bind its access and refresh tokens to that key.
//!
//! [`verify`] holds the rules of one proof (§4.3) and needs no store; the
//! provider adds the one-time `jti` (through the ticket store, so that it
//! holds across nodes) and the binding of tokens. Server nonces (§8) are
//! derived, as node-oidc-provider does: an HMAC of a time step under a
//! secret every node shares, so they need no storage either.

use crate::client::OidcClient;
use crate::error::{ErrorCode, OAuthError};
use crate::provider::Provider;
use crate::records::{encode, refresh_key, RefreshRecord, RefreshToken};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use castellan_core::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::time::Duration;
use subtle::ConstantTimeEq;

/// A proof is a small JWT; anything longer is refused unread.
pub const MAX_PROOF_LEN: usize = 8 * 1024;
/// `dpop_signing_alg_values_supported`.
pub const ALGORITHMS: &[&str] = &["ES256", "RS256", "PS256", "EdDSA"];
/// How old a proof's `iat` may be, and how far ahead (clock skew).
pub const MAX_AGE_SECS: u64 = 300;
pub const MAX_AHEAD_SECS: u64 = 60;
const MAX_JTI_LEN: usize = 256;
/// JWK members that only a private key has (RFC 7517, RFC 7518 §6).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    #[error("invalid DPoP proof: {0}")]
    Invalid(&'static str),
    /// §8: the proof lacks the server's current nonce.
    #[error("the DPoP proof must carry the server's nonce")]
    UseNonce,
    #[error("the DPoP proof was used before")]
    Replay,
}

impl From<DpopError> for OAuthError {
    fn from(e: DpopError) -> Self {
        let code = match e {
            DpopError::UseNonce => ErrorCode::UseDpopNonce,
            DpopError::Invalid(_) | DpopError::Replay => ErrorCode::InvalidDpopProof,
        };
        OAuthError::new(code, e.to_string())
    }
}

/// What the request the proof came with was.
#[derive(Debug, Clone, Copy)]
pub struct ProofContext<'a> {
    /// The HTTP method, upper case.
    pub method: &'a str,
    /// The endpoint's URL as clients know it (under the issuer).
    pub url: &'a str,
    /// At a resource endpoint: the access token presented with the proof
    /// (§4.3 `ath`).
    pub access_token: Option<&'a str>,
    /// Unix seconds.
    pub now: u64,
}

/// A proof that passed every check but the one-time `jti`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The RFC 7638 thumbprint of the proof's key: what tokens are bound to.
    pub jkt: String,
    pub jti: String,
    pub iat: u64,
}

impl Proof {
    /// The store key that makes the proof's `jti` one-time for its key.
    pub fn replay_key(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.jkt.as_bytes());
        h.update([0]);
        h.update(self.jti.as_bytes());
        format!("oidc:dpop:{}", URL_SAFE_NO_PAD.encode(h.finalize()))
    }
}

/// `cnf` of a bound token (RFC 9449 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: String,
    htm: String,
    htu: String,
    iat: u64,
    #[serde(default)]
    ath: Option<String>,
    #[serde(default)]
    nonce: Option<String>,
}

fn decode_json(segment: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

fn string_member<'a>(jwk: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    jwk.get(name).and_then(Value::as_str)
}

/// RFC 7638 §3.2: the SHA-256 of the required members, in lexicographic
/// order, without white space.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let members: &[&str] = match string_member(jwk, "kty")? {
        "EC" => &["crv", "kty", "x", "y"],
        "RSA" => &["e", "kty", "n"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut canonical = String::from("{");
    for (i, name) in members.iter().enumerate() {
        if i > 0 {
            canonical.push(',');
        }
        let value = string_member(jwk, name)?;
        canonical.push_str(&serde_json::to_string(name).ok()?);
        canonical.push(':');
        canonical.push_str(&serde_json::to_string(value).ok()?);
    }
    canonical.push('}');
    Some(URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes())))
}

/// `ath`: the base64url SHA-256 of the access token (§4.2).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// An URL without its query and fragment, normalized (§4.3 check 9).
fn target(url: &str) -> Option<url::Url> {
    let mut u = url::Url::parse(url).ok()?;
    u.set_query(None);
    u.set_fragment(None);
    Some(u)
}

/// The key type a proof's algorithm needs.
fn key_fits(alg: &str, jwk: &Map<String, Value>) -> bool {
    let kty = string_member(jwk, "kty");
    let crv = string_member(jwk, "crv");
    match alg {
        "ES256" => kty == Some("EC") && crv == Some("P-256"),
        "RS256" | "PS256" => kty == Some("RSA"),
        "EdDSA" => kty == Some("OKP") && crv == Some("Ed25519"),
        _ => false,
    }
}

/// Checks one DPoP proof (RFC 9449 §4.3) against the request it came with;
/// `nonces`, when the server wants them, checks its `nonce`. The `jti` is
/// the caller's to make one-time.
pub fn verify(
    proof: &str,
    context: &ProofContext<'_>,
    nonces: Option<&Nonces>,
) -> Result<Proof, DpopError> {
    use DpopError::Invalid;
    if proof.len() > MAX_PROOF_LEN {
        return Err(Invalid("too long"));
    }
    let mut parts = proof.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Invalid("not a compact JWS"));
    };
    let header = decode_json(header).ok_or(Invalid("unreadable header"))?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(Invalid("typ is not dpop+jwt"));
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .filter(|a| ALGORITHMS.contains(a))
        .ok_or(Invalid("unsupported alg"))?;
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(Invalid("no jwk header"));
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(Invalid("the jwk header holds a private key"));
    }
    if !key_fits(alg, jwk) {
        return Err(Invalid("the jwk does not fit the alg"));
    }
    let jkt = thumbprint(jwk).ok_or(Invalid("the jwk lacks a member"))?;
    let key: jsonwebtoken::jwk::Jwk = serde_json::from_value(Value::Object(jwk.clone()))
        .map_err(|_| Invalid("unreadable jwk"))?;
    let key = jsonwebtoken::DecodingKey::from_jwk(&key).map_err(|_| Invalid("unusable jwk"))?;
    let algorithm: jsonwebtoken::Algorithm = alg.parse().map_err(|_| Invalid("unsupported alg"))?;
    let mut validation = jsonwebtoken::Validation::new(algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<ProofClaims>(proof, &key, &validation)
        .map_err(|_| Invalid("bad signature or claims"))?
        .claims;
    if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
        return Err(Invalid("bad jti"));
    }
    if claims.htm != context.method {
        return Err(Invalid("htm does not match the request"));
    }
    match (target(&claims.htu), target(context.url)) {
        (Some(a), Some(b)) if a == b => {}
        _ => return Err(Invalid("htu does not match the request")),
    }
    if claims.iat.saturating_add(MAX_AGE_SECS) < context.now
        || claims.iat > context.now.saturating_add(MAX_AHEAD_SECS)
    {
        return Err(Invalid("iat is out of the accepted window"));
    }
    if let Some(token) = context.access_token {
        let expected = access_token_hash(token);
        let good = claims
            .ath
            .as_deref()
            .is_some_and(|ath| bool::from(ath.as_bytes().ct_eq(expected.as_bytes())));
        if !good {
            return Err(Invalid("ath does not match the access token"));
        }
    }
    if let Some(nonces) = nonces {
        let good = claims
            .nonce
            .as_deref()
            .is_some_and(|n| nonces.check(n, context.now));
        if !good {
            return Err(DpopError::UseNonce);
        }
    }
    Ok(Proof {
        jkt,
        jti: claims.jti,
        iat: claims.iat,
    })
}

/// Server nonces (§8): `base64url(HMAC-SHA256(secret, step))` for 60 s
/// steps; the next step's is handed out, two steps either side accepted.
#[derive(Clone)]
pub struct Nonces {
    secret: Vec<u8>,
}

const NONCE_STEP_SECS: u64 = 60;

impl Nonces {
    pub fn new(secret: &[u8]) -> Self {
        Self {
            secret: secret.to_vec(),
        }
    }

    fn at(&self, step: u64) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.secret) else {
            // HMAC takes keys of any length.
            return String::new();
        };
        mac.update(&step.to_be_bytes());
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    }

    /// The nonce to send in `DPoP-Nonce` now.
    pub fn current(&self, now: u64) -> String {
        self.at(now / NONCE_STEP_SECS + 1)
    }

    pub fn check(&self, nonce: &str, now: u64) -> bool {
        let step = now / NONCE_STEP_SECS;
        let mut good = subtle::Choice::from(0);
        for s in step.saturating_sub(2)..=step + 2 {
            good |= self.at(s).as_bytes().ct_eq(nonce.as_bytes());
        }
        good.into()
    }
}

impl std::fmt::Debug for Nonces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Nonces(..)")
    }
}

/// How a client presented an access token at a resource endpoint
/// (RFC 9449 §7.1).
#[derive(Debug, Clone, Copy)]
pub enum Presentation<'a> {
    /// `Authorization: Bearer` (or the form's `access_token`).
    Bearer,
    /// `Authorization: DPoP`, with the request's `DPoP` header.
    Dpop {
        proof: Option<&'a str>,
        method: &'a str,
    },
}

impl Provider {
    /// The nonce to send in `DPoP-Nonce`, when the server wants nonces.
    pub fn dpop_nonce(&self) -> Option<String> {
        self.dpop_nonces.as_ref().map(|n| n.current(self.now()))
    }

    /// Checks a proof sent to `endpoint` (under the issuer) and spends its
    /// `jti` for as long as its `iat` would be accepted.
    pub(crate) async fn dpop_proof(
        &self,
        engine: &Engine,
        proof: &str,
        method: &str,
        endpoint: &str,
        access_token: Option<&str>,
    ) -> Result<Proof, OAuthError> {
        let url = format!("{}{endpoint}", self.issuer);
        let context = ProofContext {
            method,
            url: &url,
            access_token,
            now: self.now(),
        };
        let proof = verify(proof, &context, self.dpop_nonces.as_ref()).map_err(|e| {
            tracing::warn!(error = %e, endpoint, "DPoP proof refused");
            OAuthError::from(e)
        })?;
        let window = Duration::from_secs(MAX_AGE_SECS + MAX_AHEAD_SECS);
        if !engine
            .store()
            .add_record(&proof.replay_key(), b"", window)
            .await?
        {
            tracing::warn!(endpoint, "DPoP proof replayed");
            return Err(DpopError::Replay.into());
        }
        Ok(proof)
    }

    /// At the token endpoint: the key thumbprint the issued tokens are
    /// bound to, if the request carries a proof.
    pub(crate) async fn token_binding(
        &self,
        engine: &Engine,
        client: &OidcClient,
        proof: Option<&str>,
    ) -> Result<Option<String>, OAuthError> {
        match proof {
            Some(p) => Ok(Some(
                self.dpop_proof(engine, p, "POST", "/token", None)
                    .await?
                    .jkt,
            )),
            None if client.dpop_bound_access_tokens => Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "the client must send a DPoP proof",
            )),
            None => Ok(None),
        }
    }

    /// A public client's refresh token is bound to a key: the request must
    /// prove it. A presenter without the key does not use the token up.
    pub(crate) async fn check_refresh_binding(
        &self,
        engine: &Engine,
        presented: &str,
        token: RefreshToken,
        bound_to: String,
        jkt: Option<&str>,
    ) -> Result<(), OAuthError> {
        if jkt.is_some_and(|k| bool::from(k.as_bytes().ct_eq(bound_to.as_bytes()))) {
            return Ok(());
        }
        let record = encode(&RefreshRecord::new(token, Some(bound_to)))?;
        engine
            .store()
            .swap_record(&refresh_key(presented), &record)
            .await?;
        Err(OAuthError::invalid_grant(
            "the refresh token is bound to another DPoP key",
        ))
    }

    /// At a resource endpoint: a token bound to a key needs a proof of that
    /// key (RFC 9449 §7.1); an unbound one is a bearer token.
    pub(crate) async fn check_presentation(
        &self,
        engine: &Engine,
        token: &str,
        cnf: Option<&Confirmation>,
        presentation: Presentation<'_>,
        endpoint: &str,
    ) -> Result<(), OAuthError> {
        match (cnf, presentation) {
            (None, Presentation::Bearer) => Ok(()),
            (Some(_), Presentation::Bearer) => Err(OAuthError::new(
                ErrorCode::InvalidToken,
                "the token is DPoP-bound: present it with a DPoP proof",
            )),
            (None, Presentation::Dpop { .. }) => Err(OAuthError::new(
                ErrorCode::InvalidToken,
                "the token is not DPoP-bound",
            )),
            (Some(_), Presentation::Dpop { proof: None, .. }) => Err(OAuthError::new(
                ErrorCode::InvalidDpopProof,
                "the DPoP header is missing",
            )),
            (
                Some(cnf),
                Presentation::Dpop {
                    proof: Some(proof),
                    method,
                },
            ) => {
                let proof = self
                    .dpop_proof(engine, proof, method, endpoint, Some(token))
                    .await?;
                if bool::from(proof.jkt.as_bytes().ct_eq(cnf.jkt.as_bytes())) {
                    Ok(())
                } else {
                    Err(OAuthError::new(
                        ErrorCode::InvalidDpopProof,
                        "the proof's key is not the token's",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::EncodePrivateKey;
    use serde_json::json;

    pub(crate) struct Holder {
        pub key: EncodingKey,
        pub jwk: Map<String, Value>,
    }

    impl Holder {
        pub(crate) fn new() -> Self {
            let secret = SigningKey::random(&mut rand_core::OsRng);
            let point = secret.verifying_key().to_encoded_point(false);
            let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
            let jwk = json!({
                "kty": "EC", "crv": "P-256",
                "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
            });
            let der = secret.to_pkcs8_der().unwrap();
            Self {
                key: EncodingKey::from_ec_der(der.as_bytes()),
                jwk: jwk.as_object().unwrap().clone(),
            }
        }

        pub(crate) fn jkt(&self) -> String {
            thumbprint(&self.jwk).unwrap()
        }

        pub(crate) fn proof_with(&self, header_jwk: Value, claims: Value) -> String {
            let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
            header.typ = Some("dpop+jwt".into());
            header.jwk = Some(serde_json::from_value(header_jwk).unwrap());
            jsonwebtoken::encode(&header, &claims, &self.key).unwrap()
        }

        pub(crate) fn proof(&self, htm: &str, htu: &str, iat: u64, extra: Value) -> String {
            let mut claims =
                json!({"jti": format!("j-{}", rand_jti()), "htm": htm, "htu": htu, "iat": iat});
            if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
                c.extend(e.clone());
            }
            self.proof_with(Value::Object(self.jwk.clone()), claims)
        }
    }

    fn rand_jti() -> u64 {
        use rand_core::RngCore;
        rand_core::OsRng.next_u64()
    }

    const URL: &str = "https://id.example/cas/oidc/token";
    const NOW: u64 = 1_700_000_000;

    fn context(access_token: Option<&str>) -> ProofContext<'_> {
        ProofContext {
            method: "POST",
            url: URL,
            access_token,
            now: NOW,
        }
    }

    #[test]
    fn a_good_proof_gives_its_key_thumbprint() {
        let h = Holder::new();
        let proof = h.proof(
            "POST",
            "https://ID.example:443/cas/oidc/token?x=1",
            NOW,
            json!({}),
        );
        let p = verify(&proof, &context(None), None).unwrap();
        assert_eq!(p.jkt, h.jkt());
        assert_eq!(p.iat, NOW);
    }

    #[test]
    fn the_rfc_7638_example_thumbprint() {
        let jwk = json!({"kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw","e":"AQAB","alg":"RS256","kid":"2011-04-29"});
        assert_eq!(
            thumbprint(jwk.as_object().unwrap()).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn the_request_must_match_htm_htu_and_iat() {
        let h = Holder::new();
        let wrong = |proof: String| verify(&proof, &context(None), None).unwrap_err();
        assert_eq!(
            wrong(h.proof("GET", URL, NOW, json!({}))),
            DpopError::Invalid("htm does not match the request")
        );
        assert_eq!(
            wrong(h.proof(
                "POST",
                "https://id.example/cas/oidc/userinfo",
                NOW,
                json!({})
            )),
            DpopError::Invalid("htu does not match the request")
        );
        assert_eq!(
            wrong(h.proof("POST", "not a url", NOW, json!({}))),
            DpopError::Invalid("htu does not match the request")
        );
        for iat in [NOW - MAX_AGE_SECS - 1, NOW + MAX_AHEAD_SECS + 1] {
            assert_eq!(
                wrong(h.proof("POST", URL, iat, json!({}))),
                DpopError::Invalid("iat is out of the accepted window")
            );
        }
    }

    #[test]
    fn the_header_must_hold_a_public_key_that_signed_the_proof() {
        let h = Holder::new();
        let claims = json!({"jti": "a", "htm": "POST", "htu": URL, "iat": NOW});
        // Another key in the header: the signature does not verify.
        let other = Holder::new();
        let proof = h.proof_with(Value::Object(other.jwk.clone()), claims.clone());
        assert_eq!(
            verify(&proof, &context(None), None).unwrap_err(),
            DpopError::Invalid("bad signature or claims")
        );
        // A private member in the header.
        let mut private = h.jwk.clone();
        private.insert("d".into(), json!("AAAA"));
        let good = h.proof_with(Value::Object(h.jwk.clone()), claims.clone());
        let (head, rest) = good.split_once('.').unwrap();
        let mut header = decode_json(head).unwrap();
        header.insert("jwk".into(), Value::Object(private));
        let forged = format!(
            "{}.{rest}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap())
        );
        assert_eq!(
            verify(&forged, &context(None), None).unwrap_err(),
            DpopError::Invalid("the jwk header holds a private key")
        );
        // typ, alg none, garbage.
        header.insert("jwk".into(), Value::Object(h.jwk.clone()));
        for (k, v) in [
            ("typ", json!("JWT")),
            ("alg", json!("none")),
            ("alg", json!("HS256")),
        ] {
            let mut bad = header.clone();
            bad.insert(k.into(), v);
            let forged = format!(
                "{}.{rest}",
                URL_SAFE_NO_PAD.encode(serde_json::to_vec(&bad).unwrap())
            );
            assert!(matches!(
                verify(&forged, &context(None), None),
                Err(DpopError::Invalid(_))
            ));
        }
        for junk in [
            "",
            "a.b",
            "a.b.c.d",
            "....",
            "e30.e30.e30",
            &"x".repeat(9000),
        ] {
            assert!(verify(junk, &context(None), None).is_err(), "{junk}");
        }
    }

    #[test]
    fn at_a_resource_the_proof_names_the_access_token() {
        let h = Holder::new();
        let ath = access_token_hash("AT");
        let proof = h.proof("POST", URL, NOW, json!({ "ath": ath }));
        assert!(verify(&proof, &context(Some("AT")), None).is_ok());
        assert_eq!(
            verify(&proof, &context(Some("other")), None).unwrap_err(),
            DpopError::Invalid("ath does not match the access token")
        );
        let proof = h.proof("POST", URL, NOW, json!({}));
        assert!(verify(&proof, &context(Some("AT")), None).is_err());
    }

    #[test]
    fn nonces_rotate_and_are_required_when_configured() {
        let nonces = Nonces::new(b"0123456789abcdef0123456789abcdef");
        let n = nonces.current(NOW);
        assert!(nonces.check(&n, NOW));
        assert!(nonces.check(&n, NOW + 60));
        assert!(!nonces.check(&n, NOW + 4 * 60));
        assert!(!Nonces::new(b"another secret").check(&n, NOW));
        let h = Holder::new();
        let without = h.proof("POST", URL, NOW, json!({}));
        assert_eq!(
            verify(&without, &context(None), Some(&nonces)).unwrap_err(),
            DpopError::UseNonce
        );
        let stale = h.proof("POST", URL, NOW, json!({"nonce": "old"}));
        assert_eq!(
            verify(&stale, &context(None), Some(&nonces)).unwrap_err(),
            DpopError::UseNonce
        );
        let with = h.proof("POST", URL, NOW, json!({ "nonce": n }));
        assert!(verify(&with, &context(None), Some(&nonces)).is_ok());
    }

    #[test]
    fn replay_keys_differ_per_key_and_jti() {
        let p = |jkt: &str, jti: &str| Proof {
            jkt: jkt.into(),
            jti: jti.into(),
            iat: 0,
        };
        assert_eq!(p("a", "b").replay_key(), p("a", "b").replay_key());
        assert_ne!(p("a", "b").replay_key(), p("a", "c").replay_key());
        assert_ne!(p("ab", "").replay_key(), p("a", "b").replay_key());
    }
}
