//! A `DPoP` header as a client sends it (RFC 9449 §4): the proof is checked
//! against a fixed request, with and without server nonces. No input may
//! panic; an accepted proof names a key by a SHA-256 thumbprint, and was
//! made for this request.

use castellan_oidc::dpop::{thumbprint, verify, Nonces, ProofContext, MAX_PROOF_LEN};

/// The request the committed seeds were made for.
pub const URL: &str = "https://idp.example/cas/oidc/token";
pub const NOW: u64 = 1_700_000_000;

/// One fuzz input; panics when a check fails.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for access_token in [None, Some("AT")] {
        let context = ProofContext {
            method: "POST",
            url: URL,
            access_token,
            now: NOW,
        };
        if let Ok(proof) = verify(text, &context, None) {
            assert!(text.len() <= MAX_PROOF_LEN, "an over-long proof was read");
            assert_eq!(proof.jkt.len(), 43, "a thumbprint is a base64url SHA-256");
            assert!(!proof.jti.is_empty(), "a proof without jti was accepted");
        }
        let nonces = Nonces::new(b"fuzz-nonce-secret-0123456789abcdef");
        // The seeds carry no nonce: with nonces on, none may pass unless
        // it carries the current one (which a fuzzer would have to forge).
        if let Ok(proof) = verify(text, &context, Some(&nonces)) {
            assert_eq!(proof.jkt.len(), 43);
        }
    }
    // The thumbprint of any JSON object: no panic.
    if let Ok(serde_json::Value::Object(jwk)) = serde_json::from_str(text) {
        if let Some(t) = thumbprint(&jwk) {
            assert_eq!(t.len(), 43);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seeds are good proofs of every algorithm (made with jose), so
    /// that the fuzzer starts from the accepting paths.
    #[test]
    fn the_seeds_are_accepted_proofs() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds/dpop_proof");
        for (name, access_token) in [
            ("es256", None),
            ("rs256", None),
            ("ps256", None),
            ("eddsa", None),
            ("es256-ath", Some("AT")),
        ] {
            let proof = std::fs::read_to_string(dir.join(name)).unwrap();
            let context = ProofContext {
                method: "POST",
                url: URL,
                access_token,
                now: NOW,
            };
            let p =
                verify(proof.trim(), &context, None).unwrap_or_else(|e| panic!("seed {name}: {e}"));
            assert_eq!(
                p.jti,
                format!(
                    "seed-{}",
                    name.split('-')
                        .next()
                        .unwrap()
                        .to_uppercase()
                        .replace("EDDSA", "EdDSA")
                )
            );
        }
    }
}
