//! DPoP proofs (RFC 9449) for `oidc --dpop`: one ES256 key per connection,
//! a fresh proof (new jti, current iat) for every token request. Signed
//! with ring (tens of microseconds), so that the client's signing does not
//! bound the rate measured.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};

pub struct Prover {
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The encoded protected header (it carries the public key).
    header: String,
    htu: String,
    /// With the key's x, a unique jti.
    counter: u64,
    tag: String,
}

impl Prover {
    pub fn new(htu: &str) -> Self {
        let rng = SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("the key just made");
        // Uncompressed point: 0x04 || x || y.
        let point = key.public_key().as_ref();
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#
        );
        Self {
            key,
            rng,
            header: b64(header.as_bytes()),
            htu: htu.to_owned(),
            counter: 0,
            tag: x[..12].to_owned(),
        }
    }

    pub fn proof(&mut self) -> String {
        self.counter += 1;
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let claims = format!(
            r#"{{"jti":"{}-{}","htm":"POST","htu":"{}","iat":{iat}}}"#,
            self.tag, self.counter, self.htu
        );
        let input = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.as_bytes())
        );
        let signature = self
            .key
            .sign(&self.rng, input.as_bytes())
            .expect("ECDSA signing");
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}
