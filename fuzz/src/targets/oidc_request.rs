//! What an OAuth2 / OIDC client sends: authorization request parameters,
//! client credentials, tokens presented back, and stored records read back.

use castellan_oidc::authorize::{check, pkce_matches, Rejection};
use castellan_oidc::client::{ClientCredentials, ClientRegistry, GrantTypes, OidcClient, Subject};
use castellan_oidc::keys::{Algorithm, Keyring, SigningKeys};
use castellan_oidc::records::{decode, CodeRecord, PendingRequest, RefreshRecord};
use castellan_oidc::tokens::{verify_access_token, verify_id_token_hint};
use std::collections::HashMap;
use std::sync::OnceLock;

fn client(id: &str, secret: Option<&str>) -> OidcClient {
    OidcClient {
        name: id.into(),
        client_id: id.into(),
        resource_servers: vec![],
        secret: secret.map(Into::into),
        redirect_uris: vec![
            "https://rp.example/cb".into(),
            "https://rp.example/cb?x=1".into(),
        ],
        post_logout_redirect_uris: vec![],
        scopes: vec!["openid".into(), "profile".into(), "groups".into()],
        release: vec![],
        backchannel_logout_uri: None,
        grant_types: GrantTypes {
            authorization_code: true,
            refresh_token: true,
            client_credentials: secret.is_some(),
            device_code: false,
            token_exchange: false,
        },
        subject: Subject::Public,
        id_token_alg: Algorithm::RS256,
        access_token_alg: Algorithm::ES256,
        mfa: None,
        consent: None,
        dpop_bound_access_tokens: false,
        token_exchange_from: vec![],
        assertion_keys: None,
        require_par: false,
        allowed_origins: vec![],
        id_token_on_refresh: false,
    }
}

fn registry() -> &'static ClientRegistry {
    static R: OnceLock<ClientRegistry> = OnceLock::new();
    R.get_or_init(|| ClientRegistry::new(vec![client("conf", Some("s3cret")), client("pub", None)]))
}

fn keys() -> &'static Keyring {
    static K: OnceLock<Keyring> = OnceLock::new();
    K.get_or_init(|| Keyring::new(SigningKeys::generate(1_700_000_000).unwrap()).unwrap())
}

/// One fuzz input; panics when a check fails.
pub fn run(data: &[u8]) {
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(data) {
        params
            .entry(k.into_owned())
            .or_insert_with(|| v.into_owned());
    }
    match check(registry(), &params) {
        Ok(c) => {
            // Only a registered redirect_uri, only allowed scopes, PKCE for public clients.
            assert!(c.client.allows_redirect(&c.request.redirect_uri));
            assert!(!c.request.scopes.is_empty());
            assert!(c.request.scopes.iter().all(|s| c.client.allows_scope(s)));
            assert!(!c.client.is_public() || c.request.code_challenge.is_some());
            assert!(!(c.request.prompt_none && c.request.renew));
        }
        Err(Rejection::Redirect { redirect_uri, .. }) => {
            let id = params.get("client_id").expect("a redirect needs a client");
            let client = registry().get(id).expect("a redirect needs a known client");
            assert!(
                client.allows_redirect(&redirect_uri),
                "open redirect to {redirect_uri}"
            );
        }
        Err(Rejection::Page(_)) => {}
    }
    let text = String::from_utf8_lossy(data);
    let _ = registry().authenticate(&ClientCredentials {
        basic: Some(&text),
        form_client_id: params.get("client_id").map(String::as_str),
        form_client_secret: None,
    });
    assert!(verify_access_token(keys(), "https://idp/oidc", &text).is_err());
    assert!(verify_id_token_hint(keys(), "https://idp/oidc", &text).is_err());
    let _ = pkce_matches("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", &text);
    let _ = decode::<CodeRecord>(data);
    let _ = decode::<RefreshRecord>(data);
    let _ = decode::<PendingRequest>(data);
}
