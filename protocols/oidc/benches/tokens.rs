//! Signing cost of the tokens the provider issues, beside the crypto
//! libraries' own speed for the same signature:
//! `cargo bench -p castellan-oidc --bench tokens`.

use castellan_oidc::keys::{Algorithm, Keyring, SigningKeys};
use castellan_oidc::tokens::{sign, verify_access_token, AccessTokenClaims, ACCESS_TOKEN_TYPE};
use criterion::{criterion_group, criterion_main, Criterion};

fn claims() -> AccessTokenClaims {
    AccessTokenClaims {
        iss: "https://idp.example.org/cas/oidc".into(),
        sub: "casuser".into(),
        aud: "wiki".into(),
        client_id: "wiki".into(),
        exp: 4_000_000_000,
        iat: 1_764_000_000,
        jti: "AT-1-0123456789abcdefghijklmnopqrstuv".into(),
        scope: "openid profile email".into(),
        auth_time: Some(1_764_000_000),
        grant: Some("G-1-0123456789abcdefghijklmnopqrstuv".into()),
        cnf: None,
        act: None,
    }
}

fn bench(c: &mut Criterion) {
    let keys = Keyring::new(SigningKeys::generate(1_764_000_000).unwrap()).unwrap();
    let claims = claims();
    for alg in [Algorithm::ES256, Algorithm::RS256] {
        c.bench_function(&format!("sign access token {}", alg.name()), |b| {
            b.iter(|| sign(&keys, alg, ACCESS_TOKEN_TYPE, &claims).unwrap())
        });
        // The library alone: one signature over a token-sized input with the
        // prepared key (what `openssl speed` and ring's own benches measure).
        let input = vec![b'a'; 420];
        c.bench_function(&format!("library signature {}", alg.name()), |b| {
            b.iter(|| keys.sign(alg, &input).unwrap())
        });
        let token = sign(&keys, alg, ACCESS_TOKEN_TYPE, &claims).unwrap();
        c.bench_function(&format!("verify access token {}", alg.name()), |b| {
            b.iter(|| {
                verify_access_token(&keys, "https://idp.example.org/cas/oidc", &token).unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
