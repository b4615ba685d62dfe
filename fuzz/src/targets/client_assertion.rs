//! Client assertions (RFC 7523 private_key_jwt) and the other parsers of
//! what an advanced OIDC client sends: the raw text as a client assertion
//! (`claimed_client`, then `verify` against a fixed key set at a fixed
//! time), as a JWK Set (`parse_jwks`), as a `claims` request parameter and
//! as an `allowed_origins` entry.

use castellan_oidc::claims::ClaimsRequest;
use castellan_oidc::client_assertion::{claimed_client, parse_jwks, verify, MAX_LIFETIME};
use castellan_oidc::cors::{origin_of, parse_origin};
use std::sync::OnceLock;

/// The public halves of the keys the seeds are signed with (ES256 `ec1`,
/// RS256 and PS256 `rs1`).
const JWKS: &str = r#"{"keys": [{"kty": "EC", "x": "5McLdJ6mw8DHOyANt5s9CIn7-G2NLYqtgRUDNwXEP9s", "y": "wB6vZDSptXvfFqevD6Oa0_XPpEJG8VquLd7RnFc_RrE", "crv": "P-256", "kid": "ec1", "use": "sig"}, {"kty": "RSA", "n": "psCx5ns29ZLC0aFxYM3BVe_INb1VTyCOSiypdEgPDfdCXOlQaAgs2RSAk0TvLw6ySoZOu-knzOvTGG97cxaflZLWF1cZkrFLFjyZLPJri7KXdHSKwH94S_za2B4uPPm45r9Gh6wztYCHr7vj22Y-7KYWnoTbfVWzL6XDxpzxAlNhsMD2kXg8SJsJi7oVSc668qhCW8lvFHac4jNkyeKpC8LJCGQN715ZF0qQLD0-muJGqeTo_O5sF6VkrJqBH7m5gkS1GN2wEOHHRzRoDXNq6ze-qmCNePkQboJNTsntzkOFodSkhTyo_bdX1BeCXiOMepYrAJLUDXtHnJBCX9anYQ", "e": "AQAB", "kid": "rs1"}]}"#;
/// The time the seeds were made for (their `exp` is 60 s later).
const NOW: u64 = 1_800_000_000;
const AUDIENCE: &str = "https://idp.example/oidc/token";

fn keys() -> &'static castellan_oidc::client_assertion::JwkSet {
    static K: OnceLock<castellan_oidc::client_assertion::JwkSet> = OnceLock::new();
    K.get_or_init(|| parse_jwks(JWKS.as_bytes()).expect("the fixed key set parses"))
}

/// One fuzz input; panics when a check fails.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(client) = claimed_client(&text) {
        let audiences = [AUDIENCE.to_owned(), "https://idp.example/oidc".to_owned()];
        if let Ok((jti, exp)) = verify(&text, &client, keys(), &audiences, NOW) {
            // Only a signed, unexpired, short-lived assertion with a jti
            // verifies; none for another client.
            assert!(!jti.is_empty() && jti.len() <= 256, "jti {jti:?}");
            assert!(exp + 30 > NOW && exp <= NOW + MAX_LIFETIME, "exp {exp}");
            assert!(verify(&text, "someone-else", keys(), &audiences, NOW).is_err());
            assert!(verify(&text, &client, keys(), &["https://other/".into()], NOW).is_err());
        }
    }
    if let Some(set) = parse_jwks(data) {
        assert!(!set.keys.is_empty() && set.keys.len() <= 32);
    }
    if let Ok(claims) = ClaimsRequest::parse(&text) {
        assert!(claims.userinfo.len() <= 64 && claims.id_token.len() <= 64);
        assert!(claims.names().all(|n| !n.is_empty() && n.len() <= 128));
    }
    if let Some(origin) = parse_origin(&text) {
        // An origin is exactly what a browser sends, and nothing more.
        assert_eq!(origin, text);
        assert_eq!(origin_of(&origin).as_deref(), Some(origin.as_str()));
        assert!(!origin.contains('*') && !origin.ends_with('/'));
        assert!(origin.starts_with("http://") || origin.starts_with("https://"));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_valid_seeds_verify() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/client_assertion");
        for name in ["valid-es256", "valid-rs256", "valid-ps256", "aud-array"] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let audiences = [super::AUDIENCE.to_owned()];
            assert!(
                castellan_oidc::client_assertion::verify(
                    &text,
                    "c1",
                    super::keys(),
                    &audiences,
                    super::NOW
                )
                .is_ok(),
                "{name}"
            );
        }
        for name in [
            "expired",
            "too-long-lived",
            "wrong-aud",
            "unknown-kid",
            "alg-none",
        ] {
            let text = std::fs::read_to_string(dir.join(name)).unwrap();
            let audiences = [super::AUDIENCE.to_owned()];
            assert!(
                castellan_oidc::client_assertion::verify(
                    &text,
                    "c1",
                    super::keys(),
                    &audiences,
                    super::NOW
                )
                .is_err(),
                "{name}"
            );
        }
    }
}
