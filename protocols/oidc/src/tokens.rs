//! JWTs the provider issues and reads back: ID tokens (OIDC Core §2),
//! access tokens (RFC 9068), logout tokens (OIDC Back-Channel Logout §2.4).
//! Signing is the keyring's (keys parsed once); verifying is jsonwebtoken's;
//! this module decides the claims.

use crate::client::{OidcClient, Subject};
use crate::keys::{Algorithm, Keyring};
use crate::records::{AuthnContext, Grant};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use castellan_core::ids::session_tag;
use castellan_core::Attributes;
use jsonwebtoken::Validation;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

pub const ACCESS_TOKEN_TYPE: &str = "at+jwt";
pub const LOGOUT_TOKEN_TYPE: &str = "logout+jwt";
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("no active {0} signing key")]
    NoKey(&'static str),
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("token rejected: {0}")]
    Invalid(String),
}

/// RFC 9068 claims, plus the grant the token came from (absent for
/// client_credentials): revoking the grant makes the token inactive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub exp: u64,
    pub iat: u64,
    pub jti: String,
    pub scope: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// The DPoP key the token is bound to (RFC 9449 §6.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<crate::dpop::Confirmation>,
    /// Who acts for the subject, after a token exchange (RFC 8693 §4.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Value>,
}

impl AccessTokenClaims {
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scope.split(' ').filter(|s| !s.is_empty())
    }
}

pub fn sign<T: Serialize>(
    keys: &Keyring,
    alg: Algorithm,
    typ: &str,
    claims: &T,
) -> Result<String, TokenError> {
    let kid = keys.signing_kid(alg).ok_or(TokenError::NoKey(alg.name()))?;
    let header = serde_json::to_vec(&json!({ "alg": alg.name(), "kid": kid, "typ": typ }))
        .map_err(|e| TokenError::Signing(e.to_string()))?;
    let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Signing(e.to_string()))?;
    let mut jws = String::with_capacity((header.len() + payload.len()) * 4 / 3 + 360);
    URL_SAFE_NO_PAD.encode_string(&header, &mut jws);
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(&payload, &mut jws);
    let signature = keys.sign(alg, jws.as_bytes()).map_err(|e| match e {
        crate::keys::SignError::NoKey(alg) => TokenError::NoKey(alg),
        crate::keys::SignError::Failed(reason) => TokenError::Signing(reason),
    })?;
    jws.push('.');
    URL_SAFE_NO_PAD.encode_string(&signature, &mut jws);
    Ok(jws)
}

/// Checks a JWT's signature against our keys (the `kid` picks the key, the
/// key fixes the algorithm: a token cannot choose a weaker one), its issuer
/// and, when `check_expiry`, its expiry.
fn verify<T: serde::de::DeserializeOwned>(
    keys: &Keyring,
    issuer: &str,
    token: &str,
    typ: Option<&str>,
    check_expiry: bool,
) -> Result<T, TokenError> {
    let invalid = |e: &dyn std::fmt::Display| TokenError::Invalid(e.to_string());
    let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(&e))?;
    if let Some(typ) = typ {
        if !header.typ.as_deref().is_some_and(|t| {
            t.eq_ignore_ascii_case(typ) || t.eq_ignore_ascii_case(&format!("application/{typ}"))
        }) {
            return Err(TokenError::Invalid(format!("not a {typ} token")));
        }
    }
    let kid = header.kid.ok_or_else(|| invalid(&"no kid"))?;
    let (alg, key) = keys
        .verifying_key(&kid)
        .ok_or_else(|| invalid(&"unknown signing key"))?;
    if header.alg != alg.jose() {
        return Err(invalid(&"algorithm does not match the key"));
    }
    let mut validation = Validation::new(alg.jose());
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.validate_exp = check_expiry;
    validation.leeway = 0;
    validation.required_spec_claims.clear();
    validation.required_spec_claims.insert("iss".into());
    if check_expiry {
        validation.required_spec_claims.insert("exp".into());
    }
    jsonwebtoken::decode::<T>(token, key, &validation)
        .map(|d| d.claims)
        .map_err(|e| invalid(&e))
}

pub fn verify_access_token(
    keys: &Keyring,
    issuer: &str,
    token: &str,
) -> Result<AccessTokenClaims, TokenError> {
    verify(keys, issuer, token, Some(ACCESS_TOKEN_TYPE), true)
}

/// An `id_token_hint` (RP-initiated logout): ours, but it may have expired.
pub fn verify_id_token_hint(
    keys: &Keyring,
    issuer: &str,
    token: &str,
) -> Result<Map<String, Value>, TokenError> {
    verify(keys, issuer, token, None, false)
}

/// `at_hash` (OIDC Core §3.1.3.6): the left half of the SHA-256 of the
/// access token, for both RS256 and ES256.
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// The `sub` a client sees for a principal.
pub fn subject(client: &OidcClient, principal_id: &str, pairwise_salt: &str) -> String {
    match &client.subject {
        Subject::Public => principal_id.to_owned(),
        Subject::Pairwise { sector } => {
            let mut h = Sha256::new();
            for part in [sector.as_str(), principal_id, pairwise_salt] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part.as_bytes());
            }
            URL_SAFE_NO_PAD.encode(h.finalize())
        }
    }
}

/// The claims of an ID token (OIDC Core §2, §3.1.3.6) for a grant: the
/// user claims its scopes release, then who issued it to whom, when, for
/// which login and session, and the hash of the access token beside it.
#[allow(clippy::too_many_arguments)]
pub fn id_token_claims(
    issuer: &str,
    client: &OidcClient,
    sub: &str,
    grant: &Grant,
    nonce: Option<&str>,
    access_token: &str,
    now: u64,
    lifetime: u64,
    authn: Option<&AuthnContext>,
) -> Map<String, Value> {
    let mut claims = scope_claims(
        grant.scopes.iter().map(String::as_str),
        &grant.principal_id,
        &grant.attributes,
    );
    claims.insert("iss".into(), json!(issuer));
    claims.insert("sub".into(), json!(sub));
    claims.insert("aud".into(), json!(client.client_id));
    claims.insert("azp".into(), json!(client.client_id));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + lifetime));
    claims.insert("auth_time".into(), json!(grant.auth_time));
    match authn {
        Some(authn) => {
            claims.insert("acr".into(), json!(authn.acr));
            if !authn.amr.is_empty() {
                claims.insert("amr".into(), json!(authn.amr));
            }
        }
        // A grant of the release before: "1" the user presented
        // credentials for this login, "0" SSO.
        None => {
            claims.insert(
                "acr".into(),
                json!(if grant.fresh_login { "1" } else { "0" }),
            );
        }
    }
    if let Some(nonce) = nonce {
        claims.insert("nonce".into(), json!(nonce));
    }
    if let Some(sid) = session_tag(&grant.session_id) {
        claims.insert("sid".into(), json!(sid));
    }
    claims.insert("at_hash".into(), json!(at_hash(access_token)));
    claims
}

/// How long a logout token is valid (seconds).
pub const LOGOUT_TOKEN_LIFETIME: u64 = 120;

/// The claims of a logout token (OIDC Back-Channel Logout 1.0 §2.4): no
/// nonce, the logout event, and `sid` when the session has one.
pub fn logout_token_claims(
    issuer: &str,
    client_id: &str,
    sub: &str,
    sid: Option<&str>,
    jti: &str,
    now: u64,
) -> Value {
    let mut claims = json!({
        "iss": issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_LIFETIME,
        "jti": jti,
        "sub": sub,
        "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
    });
    if let Some(sid) = sid {
        claims["sid"] = json!(sid);
    }
    claims
}

/// The first value of the first of `names` present.
fn first<'a>(attributes: &'a Attributes, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| attributes.get(*n).and_then(|v| v.first()))
        .map(String::as_str)
}

const STANDARD_SCOPES: &[&str] = &["openid", "profile", "email", "phone", "offline_access"];

/// The user claims released by `scopes` (OIDC Core §5.4) from the
/// attributes the client may see. A custom scope `X` releases attribute `X`
/// as claim `X`: one value as a string, several as an array.
pub fn scope_claims<'a>(
    scopes: impl IntoIterator<Item = &'a str>,
    principal_id: &str,
    attributes: &Attributes,
) -> Map<String, Value> {
    let mut claims = Map::new();
    let put = |claims: &mut Map<String, Value>, name: &str, value: Option<&str>| {
        if let Some(v) = value {
            claims.insert(name.to_owned(), Value::String(v.to_owned()));
        }
    };
    for scope in scopes {
        match scope {
            "profile" => {
                put(
                    &mut claims,
                    "name",
                    first(attributes, &["name", "displayName", "cn"]),
                );
                put(
                    &mut claims,
                    "given_name",
                    first(attributes, &["given_name", "givenName"]),
                );
                put(
                    &mut claims,
                    "family_name",
                    first(attributes, &["family_name", "sn", "surname"]),
                );
                put(
                    &mut claims,
                    "preferred_username",
                    first(attributes, &["preferred_username", "uid"]).or(Some(principal_id)),
                );
                put(&mut claims, "locale", first(attributes, &["locale"]));
            }
            "email" => {
                if let Some(mail) = first(attributes, &["email", "mail"]) {
                    put(&mut claims, "email", Some(mail));
                    // The user store is the administrator's directory:
                    // its addresses are as verified as anything it holds.
                    claims.insert("email_verified".into(), Value::Bool(true));
                }
            }
            "phone" => put(
                &mut claims,
                "phone_number",
                first(attributes, &["phone_number", "telephoneNumber"]),
            ),
            custom if !STANDARD_SCOPES.contains(&custom) => {
                if let Some(values) = attributes.get(custom) {
                    let value = match values.as_slice() {
                        [one] => Value::String(one.clone()),
                        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
                    };
                    claims.insert(custom.to_owned(), value);
                }
            }
            _ => {}
        }
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::SigningKeys;

    fn keyring() -> Keyring {
        Keyring::new(SigningKeys::generate(1_700_000_000).unwrap()).unwrap()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(exp: u64) -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://idp/oidc".into(),
            sub: "u".into(),
            aud: "c".into(),
            client_id: "c".into(),
            exp,
            iat: now(),
            jti: "J".into(),
            scope: "openid profile".into(),
            auth_time: None,
            grant: Some("G".into()),
            cnf: None,
            act: None,
        }
    }

    #[test]
    fn access_tokens_verify_with_both_algorithms() {
        let keys = keyring();
        for alg in [Algorithm::RS256, Algorithm::ES256] {
            let t = sign(&keys, alg, ACCESS_TOKEN_TYPE, &claims(now() + 60)).unwrap();
            let back = verify_access_token(&keys, "https://idp/oidc", &t).unwrap();
            assert_eq!(back, claims(back.exp));
        }
    }

    #[test]
    fn tampered_expired_foreign_and_mistyped_tokens_are_refused() {
        let keys = keyring();
        let t = sign(
            &keys,
            Algorithm::ES256,
            ACCESS_TOKEN_TYPE,
            &claims(now() + 60),
        )
        .unwrap();
        // Another payload under the same signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(
            serde_json::to_vec(&AccessTokenClaims {
                sub: "admin".into(),
                ..claims(now() + 60)
            })
            .unwrap(),
        );
        parts[1] = &forged;
        assert!(verify_access_token(&keys, "https://idp/oidc", &parts.join(".")).is_err());
        let expired = sign(
            &keys,
            Algorithm::ES256,
            ACCESS_TOKEN_TYPE,
            &claims(now() - 1),
        )
        .unwrap();
        assert!(verify_access_token(&keys, "https://idp/oidc", &expired).is_err());
        assert!(verify_access_token(&keys, "https://other/oidc", &t).is_err());
        let other_keys = keyring();
        assert!(verify_access_token(&other_keys, "https://idp/oidc", &t).is_err());
        // An ID token is not an access token.
        let id = sign(&keys, Algorithm::RS256, "JWT", &claims(now() + 60)).unwrap();
        assert!(verify_access_token(&keys, "https://idp/oidc", &id).is_err());
        // alg "none" is never accepted.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"at+jwt"}"#),
            parts[1]
        );
        assert!(verify_access_token(&keys, "https://idp/oidc", &none).is_err());
    }

    #[test]
    fn at_hash_matches_the_oidc_example() {
        // OIDC Core, Appendix A.3.
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn claims_follow_scopes_and_release() {
        let mut a = Attributes::new();
        a.insert("cn".into(), vec!["CAS User".into()]);
        a.insert("mail".into(), vec!["u@example.org".into()]);
        a.insert("memberOf".into(), vec!["staff".into(), "faculty".into()]);
        let c = scope_claims(["openid", "profile"], "casuser", &a);
        assert_eq!(c["name"], "CAS User");
        assert_eq!(c["preferred_username"], "casuser");
        assert!(c.get("email").is_none());
        let c = scope_claims(["email", "memberOf"], "casuser", &a);
        assert_eq!(c["email"], "u@example.org");
        assert_eq!(c["email_verified"], true);
        assert_eq!(c["memberOf"], serde_json::json!(["staff", "faculty"]));
    }

    #[test]
    fn pairwise_subjects_differ_per_sector_and_stay_stable() {
        let mut a = crate::client::tests::client("a", Some("s"));
        a.subject = Subject::Pairwise {
            sector: "a.example".into(),
        };
        let mut b = a.clone();
        b.subject = Subject::Pairwise {
            sector: "b.example".into(),
        };
        assert_eq!(subject(&a, "u", "salt"), subject(&a, "u", "salt"));
        assert_ne!(subject(&a, "u", "salt"), subject(&b, "u", "salt"));
        assert_ne!(subject(&a, "u", "salt"), "u");
    }
}
