//! The advanced client features end to end on the memory store: pushed
//! authorization requests, private_key_jwt, the claims parameter and ID
//! tokens on refresh.

use crate::client::tests::client;
use crate::client_assertion::{parse_jwks, ClientKeys, JWT_BEARER};
use crate::keys::SigningKeys;
use crate::provider::{OidcSettings, Provider};
use crate::sign_in::SignInError;
use crate::signing_keys::KeyCell;
use crate::{ErrorCode, OAuthError};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use castellan_core::{
    Clock, Engine, InProcessClient as _, ManualClock, MemoryStore, Principal, ProxyCallback,
    ServiceRegistry, StaticUserAuthenticator, SystemClock, TicketPolicy,
};
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

struct NoProxy;

#[async_trait]
impl ProxyCallback for NoProxy {
    async fn deliver(&self, _: &str, _: &str, _: &str) -> bool {
        false
    }
}

fn signing_keys() -> SigningKeys {
    static KEYS: OnceLock<SigningKeys> = OnceLock::new();
    KEYS.get_or_init(|| SigningKeys::generate(SystemClock.now() / 1000).unwrap())
        .clone()
}

const SECRET: &str = "s3cret";
const REDIRECT: &str = "https://rp.example/cb";
const ISSUER: &str = "https://idp.example.org/cas/oidc";

/// The ES256 key of the `jwt` client: its signing key.
fn client_key() -> &'static (EncodingKey, Value) {
    static KEY: OnceLock<(EncodingKey, Value)> = OnceLock::new();
    KEY.get_or_init(|| {
        use p256::pkcs8::EncodePrivateKey;
        let sk = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let point = sk.verifying_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        });
        let der = sk.to_pkcs8_der().unwrap();
        (EncodingKey::from_ec_der(der.as_bytes()), jwk)
    })
}

fn assertion(jti: &str, aud: &str) -> String {
    let now = SystemClock.now() / 1000;
    let mut header = Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("k1".into());
    let claims = json!({"iss": "jwt", "sub": "jwt", "aud": aud, "exp": now + 60, "jti": jti});
    jsonwebtoken::encode(&header, &claims, &client_key().0).unwrap()
}

struct Fixture {
    engine: Engine,
    provider: Arc<Provider>,
}

fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let keys = KeyCell::default();
    keys.set(signing_keys()).unwrap();
    let mut rp = client("rp", Some(SECRET));
    rp.scopes.extend(["email".into()]);
    rp.release = vec!["mail".into(), "cn".into()];
    rp.require_par = true;
    rp.id_token_on_refresh = true;
    let mut jwt = client("jwt", None);
    let set = parse_jwks(json!({ "keys": [client_key().1] }).to_string().as_bytes()).unwrap();
    jwt.assertion_keys = Some(ClientKeys::Inline(Arc::new(set)));
    jwt.grant_types.client_credentials = true;
    jwt.scopes.push("api".into());
    let settings = OidcSettings {
        clients: vec![rp, jwt],
        code_ttl: Duration::from_secs(60),
        access_token_ttl: Duration::from_secs(300),
        id_token_ttl: Duration::from_secs(300),
        refresh_token_ttl: Duration::from_secs(3600),
        offline_token_ttl: Duration::from_secs(86400),
        pairwise_salt: "salt".into(),
        dpop_nonce_secret: None,
        device_code_ttl: Duration::from_secs(600),
    };
    let provider = Arc::new(
        Provider::new(settings, "https://idp.example.org/cas", keys, clock.clone()).unwrap(),
    );
    let engine = Engine::new(
        store,
        Arc::new(ServiceRegistry::new(provider.callback_services().unwrap())),
        Arc::new(StaticUserAuthenticator::new(vec![]).unwrap()),
        Default::default(),
        TicketPolicy::default(),
        clock,
        Arc::new(NoProxy),
    )
    .with_clients(vec![provider.clone()]);
    Fixture { engine, provider }
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

fn payload(jwt: &str) -> Map<String, Value> {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

impl Fixture {
    async fn push(&self, extra: &[(&str, &str)]) -> Result<Value, OAuthError> {
        let mut form = params(&[
            ("client_id", "rp"),
            ("client_secret", SECRET),
            ("redirect_uri", REDIRECT),
            ("response_type", "code"),
            ("scope", "openid"),
            ("state", "S"),
        ]);
        form.extend(params(extra));
        self.provider
            .push_authorization_request(&self.engine, None, &form, None)
            .await
    }

    /// The pushed request's login, callback and code; then the tokens.
    async fn tokens(&self, request_uri: &str) -> Value {
        let login = self
            .provider
            .authorize(
                &self.engine,
                &params(&[("client_id", "rp"), ("request_uri", request_uri)]),
                None,
                None,
            )
            .await
            .unwrap();
        let alice = Principal::new("alice")
            .with_attribute("mail", &["alice@example.org"])
            .with_attribute("cn", &["Alice"]);
        let session = self
            .engine
            .open_session(Arc::new(alice), false)
            .await
            .unwrap()
            .id;
        let ticket = self
            .engine
            .grant_service_ticket(&session, &login.service, true)
            .await
            .unwrap();
        let (_, request) = self
            .provider
            .callbacks()
            .parse(&login.service)
            .map(|(c, r)| (c.to_owned(), r.to_owned()))
            .unwrap();
        let answer = self
            .provider
            .callback(&self.engine, "rp", &request, Some(&ticket.id), None)
            .await
            .unwrap();
        let code = answer
            .params
            .iter()
            .find(|(k, _)| *k == "code")
            .map(|(_, v)| v.clone())
            .unwrap();
        self.provider
            .token(
                &self.engine,
                None,
                None,
                &params(&[
                    ("client_id", "rp"),
                    ("client_secret", SECRET),
                    ("grant_type", "authorization_code"),
                    ("code", &code),
                    ("redirect_uri", REDIRECT),
                ]),
            )
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn a_pushed_request_is_used_once_and_a_plain_one_refused() {
    let fx = fixture();
    let pushed = fx.push(&[]).await.unwrap();
    assert_eq!(pushed["expires_in"], 60);
    let uri = pushed["request_uri"].as_str().unwrap().to_owned();
    assert!(uri.starts_with(crate::par::REQUEST_URI_PREFIX));
    let at = |client_id: &'static str, uri: String| {
        let fx = &fx;
        async move {
            fx.provider
                .authorize(
                    &fx.engine,
                    &params(&[("client_id", client_id), ("request_uri", &uri)]),
                    None,
                    None,
                )
                .await
        }
    };
    // Another client_id beside it: refused, and the request is spent.
    assert!(matches!(
        at("jwt", uri.clone()).await,
        Err(SignInError::Invalid(_))
    ));
    assert!(matches!(
        at("rp", uri.clone()).await,
        Err(SignInError::Invalid(_))
    ));
    let uri = fx.push(&[]).await.unwrap()["request_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(at("rp", uri.clone()).await.is_ok());
    assert!(matches!(at("rp", uri).await, Err(SignInError::Invalid(_))));
    // rp must push.
    let plain = fx
        .provider
        .authorize(
            &fx.engine,
            &params(&[
                ("client_id", "rp"),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("scope", "openid"),
            ]),
            None,
            None,
        )
        .await;
    match plain {
        Err(SignInError::Client { error, .. }) => {
            assert_eq!(error.error, ErrorCode::InvalidRequest)
        }
        other => panic!("a plain request: {other:?}"),
    }
    // Pushed requests are checked as /authorize checks them.
    let e = fx.push(&[("scope", "openid admin")]).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidScope);
    let e = fx.push(&[("claims", "[]")]).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidRequest);
}

#[tokio::test]
async fn an_assertion_authenticates_once() {
    let fx = fixture();
    let token = |a: String| {
        let fx = &fx;
        async move {
            fx.provider
                .token(
                    &fx.engine,
                    None,
                    None,
                    &params(&[
                        ("grant_type", "client_credentials"),
                        ("client_assertion_type", JWT_BEARER),
                        ("client_assertion", &a),
                    ]),
                )
                .await
        }
    };
    let a = assertion("j1", &format!("{ISSUER}/token"));
    let t = token(a.clone()).await.unwrap();
    assert_eq!(
        payload(t["access_token"].as_str().unwrap())["client_id"],
        "jwt"
    );
    assert_eq!(token(a).await.unwrap_err().error, ErrorCode::InvalidClient);
    // The issuer is a good audience too; another server is not.
    assert!(token(assertion("j2", ISSUER)).await.is_ok());
    let e = token(assertion("j3", "https://elsewhere/token"))
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidClient);
    // The jwt client has no secret: naming itself is not enough.
    let e = fx
        .provider
        .token(
            &fx.engine,
            None,
            None,
            &params(&[("grant_type", "client_credentials"), ("client_id", "jwt")]),
        )
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidClient);
}

#[tokio::test]
async fn claims_requests_and_id_tokens_on_refresh() {
    let fx = fixture();
    let claims =
        r#"{"userinfo":{"email":null,"name":null},"id_token":{"email":{"essential":true}}}"#;
    let uri = fx.push(&[("claims", claims)]).await.unwrap()["request_uri"]
        .as_str()
        .unwrap()
        .to_owned();
    let tokens = fx.tokens(&uri).await;
    let id = payload(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["email"], "alice@example.org");
    assert!(id.get("name").is_none(), "asked at userinfo only");
    let info = fx
        .provider
        .userinfo(
            &fx.engine,
            tokens["access_token"].as_str().unwrap(),
            crate::dpop::Presentation::Bearer,
        )
        .await
        .unwrap();
    assert_eq!(info["email"], "alice@example.org");
    // profile is a scope of rp (the test client has it): name from cn.
    assert_eq!(info["name"], "Alice");
    let refreshed = fx
        .provider
        .token(
            &fx.engine,
            None,
            None,
            &params(&[
                ("client_id", "rp"),
                ("client_secret", SECRET),
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ]),
        )
        .await
        .unwrap();
    let again = payload(refreshed["id_token"].as_str().unwrap());
    for c in ["iss", "sub", "aud", "auth_time", "email"] {
        assert_eq!(again[c], id[c], "{c}");
    }
    assert!(again.get("nonce").is_none());
}
