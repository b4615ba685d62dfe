//! The provider's flows end to end on the memory store with a manual
//! clock: sign-in through the engine, the grant engine, token checks and
//! the logout participant.

use crate::client::tests::client;
use crate::keys::SigningKeys;
use crate::logout::OidcLogout;
use crate::provider::{OidcSettings, Provider};
use crate::signing_keys::KeyCell;
use crate::tokens::{at_hash, subject, LOGOUT_TOKEN_TYPE};
use crate::{ErrorCode, OAuthError, Subject};
use async_trait::async_trait;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use castellan_core::ids::session_tag;
use castellan_core::{
    Attempt, Clock, EndedSession, Engine, InProcessClient, LogoutMessage, LogoutMode,
    LogoutNotification, LogoutParticipant, ManualClock, MemoryStore, Principal, ProxyCallback,
    ServiceRegistry, StaticUserAuthenticator, SystemClock, TicketPolicy,
};
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

/// One key generation for all tests (RSA keys are slow to make).
fn signing_keys() -> SigningKeys {
    static KEYS: OnceLock<SigningKeys> = OnceLock::new();
    KEYS.get_or_init(|| SigningKeys::generate(SystemClock.now() / 1000).unwrap())
        .clone()
}

const SECRET: &str = "s3cret";
const REDIRECT: &str = "https://rp.example/cb";
const PUBLIC_URL: &str = "https://idp.example.org/cas";
const ISSUER: &str = "https://idp.example.org/cas/oidc";

struct Fixture {
    engine: Engine,
    provider: Arc<Provider>,
    clock: Arc<ManualClock>,
}

fn clients() -> Vec<crate::OidcClient> {
    let mut rp = client("rp", Some(SECRET));
    rp.scopes
        .extend(["email".into(), "offline_access".into(), "api".into()]);
    rp.release = vec!["mail".into()];
    rp.backchannel_logout_uri = Some("https://rp.example/bcl".into());
    let mut pairwise = client("pw", Some(SECRET));
    pairwise.subject = Subject::Pairwise {
        sector: "pw.example".into(),
    };
    pairwise.backchannel_logout_uri = Some("https://pw.example/bcl".into());
    // No back-channel logout endpoint: never told.
    let quiet = client("quiet", Some(SECRET));
    vec![rp, pairwise, quiet]
}

fn fixture() -> Fixture {
    // The tokens' expiry is checked against the system time.
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let keys = KeyCell::default();
    keys.set(signing_keys()).unwrap();
    let settings = OidcSettings {
        clients: clients(),
        code_ttl: Duration::from_secs(60),
        access_token_ttl: Duration::from_secs(300),
        id_token_ttl: Duration::from_secs(300),
        refresh_token_ttl: Duration::from_secs(3600),
        offline_token_ttl: Duration::from_secs(86400),
        pairwise_salt: "salt".into(),
        dpop_nonce_secret: None,
        device_code_ttl: Duration::from_secs(600),
    };
    let provider =
        Arc::new(Provider::new(settings, &format!("{PUBLIC_URL}/"), keys, clock.clone()).unwrap());
    let engine = Engine::new(
        store,
        Arc::new(ServiceRegistry::new(provider.callback_services().unwrap())),
        Arc::new(StaticUserAuthenticator::new(vec![]).unwrap()),
        Default::default(),
        TicketPolicy::default(),
        clock.clone(),
        Arc::new(NoProxy),
    )
    .with_clients(vec![provider.clone()]);
    Fixture {
        engine,
        provider,
        clock,
    }
}

fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).into(), (*v).into()))
        .collect()
}

/// The claims of a JWT, unverified (the provider verified or signed it).
fn payload(jwt: &str) -> Map<String, Value> {
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

fn header(jwt: &str) -> Map<String, Value> {
    let part = jwt.split('.').next().unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

impl Fixture {
    async fn session(&self) -> String {
        let alice = Principal::new("alice").with_attribute("mail", &["alice@example.org"]);
        self.engine
            .open_session(Arc::new(alice), false)
            .await
            .unwrap()
            .id
    }

    /// Authorization request, login, callback: the code for `client_id`.
    async fn code(&self, session: &str, client_id: &str, scope: &str) -> String {
        let login = self
            .provider
            .authorize(
                &self.engine,
                &params(&[
                    ("client_id", client_id),
                    ("redirect_uri", REDIRECT),
                    ("response_type", "code"),
                    ("scope", scope),
                    ("state", "S"),
                    ("nonce", "N-1"),
                ]),
                None,
                None,
            )
            .await
            .unwrap();
        assert!(!login.renew && !login.gateway);
        let ticket = self
            .engine
            .grant_service_ticket(session, &login.service, true)
            .await
            .unwrap();
        let (party, request) = self.provider.callbacks().parse(&login.service).unwrap();
        assert_eq!(party, client_id);
        let answer = self
            .provider
            .callback(&self.engine, client_id, request, Some(&ticket.id), None)
            .await
            .unwrap();
        assert_eq!(answer.redirect_uri, REDIRECT);
        let get = |k: &str| {
            answer
                .params
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(get("state").as_deref(), Some("S"));
        assert_eq!(get("iss").as_deref(), Some(ISSUER));
        get("code").unwrap()
    }

    async fn token(&self, client_id: &str, form: &[(&str, &str)]) -> Result<Value, OAuthError> {
        let mut form = params(form);
        form.insert("client_id".into(), client_id.into());
        form.insert("client_secret".into(), SECRET.into());
        self.provider.token(&self.engine, None, None, &form).await
    }

    async fn redeem(&self, client_id: &str, code: &str) -> Result<Value, OAuthError> {
        self.token(
            client_id,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await
    }

    async fn refresh(&self, refresh_token: &str) -> Result<Value, OAuthError> {
        self.token(
            "rp",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    async fn userinfo(&self, tokens: &Value) -> Result<Map<String, Value>, OAuthError> {
        let at = tokens["access_token"].as_str().unwrap();
        self.provider
            .userinfo(&self.engine, at, crate::dpop::Presentation::Bearer)
            .await
    }

    async fn introspect(&self, token: &str) -> Value {
        self.provider
            .introspect(
                &self.engine,
                None,
                &params(&[
                    ("client_id", "rp"),
                    ("client_secret", SECRET),
                    ("token", token),
                ]),
            )
            .await
            .unwrap()
    }
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap()
}

#[tokio::test]
async fn a_replayed_code_revokes_the_grant() {
    let fx = fixture();
    let session = fx.session().await;
    let code = fx.code(&session, "rp", "openid email").await;
    let tokens = fx.redeem("rp", &code).await.unwrap();
    assert_eq!(
        fx.userinfo(&tokens).await.unwrap()["email"],
        "alice@example.org"
    );

    let replay = fx.redeem("rp", &code).await.unwrap_err();
    assert_eq!(replay.error, ErrorCode::InvalidGrant);
    assert!(replay.error_description.contains("already used"));
    // What the first redemption issued stops working.
    let e = fx.userinfo(&tokens).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidToken);
    assert_eq!(e.error_description, "the grant was revoked");
    let e = fx
        .refresh(str_of(&tokens, "refresh_token"))
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
    assert_eq!(
        fx.introspect(str_of(&tokens, "access_token")).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn a_code_is_bound_to_its_client_and_redirect_uri() {
    let fx = fixture();
    let session = fx.session().await;
    let code = fx.code(&session, "rp", "openid").await;
    let e = fx.redeem("pw", &code).await.unwrap_err();
    assert_eq!(e.error_description, "the code was issued to another client");
    let code = fx.code(&session, "rp", "openid").await;
    let e = fx
        .token(
            "rp",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://rp.example/other"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_revokes_the_grant() {
    let fx = fixture();
    let session = fx.session().await;
    let code = fx.code(&session, "rp", "openid email").await;
    let first = fx.redeem("rp", &code).await.unwrap();
    let rt1 = str_of(&first, "refresh_token");

    let second = fx.refresh(rt1).await.unwrap();
    let rt2 = str_of(&second, "refresh_token");
    assert_ne!(rt1, rt2, "a new refresh token each time");
    assert_eq!(second["scope"], "openid email");
    assert!(second.get("id_token").is_none());
    assert_eq!(fx.introspect(rt2).await["active"], true);
    assert_eq!(fx.introspect(rt1).await, json!({"active": false}));

    // The rotated-out token again: refused, and the whole grant goes.
    let e = fx.refresh(rt1).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
    assert!(e.error_description.contains("already used"));
    assert_eq!(
        fx.refresh(rt2).await.unwrap_err().error_description,
        "the grant was revoked or expired"
    );
    assert_eq!(
        fx.userinfo(&second).await.unwrap_err().error,
        ErrorCode::InvalidToken
    );
}

#[tokio::test]
async fn a_refresh_may_narrow_the_scopes_but_keeps_the_grant() {
    let fx = fixture();
    let session = fx.session().await;
    let code = fx.code(&session, "rp", "openid email").await;
    let first = fx.redeem("rp", &code).await.unwrap();
    let rt = str_of(&first, "refresh_token");
    let narrowed = fx
        .token(
            "rp",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", rt),
                ("scope", "openid"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(narrowed["scope"], "openid");
    let widened = fx
        .refresh(str_of(&narrowed, "refresh_token"))
        .await
        .unwrap();
    assert_eq!(widened["scope"], "openid email");
    let e = fx
        .token(
            "rp",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", str_of(&widened, "refresh_token")),
                ("scope", "openid phone"),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidScope);
}

#[tokio::test]
async fn the_end_of_the_session_kills_its_refresh_tokens_but_not_offline_ones() {
    let fx = fixture();
    let session = fx.session().await;
    let online = fx
        .redeem("rp", &fx.code(&session, "rp", "openid").await)
        .await
        .unwrap();
    let offline = fx
        .redeem(
            "rp",
            &fx.code(&session, "rp", "openid offline_access").await,
        )
        .await
        .unwrap();
    fx.engine.logout(&session, None).await.unwrap();

    assert_eq!(
        fx.userinfo(&online).await.unwrap_err().error_description,
        "the SSO session has ended"
    );
    let e = fx
        .refresh(str_of(&online, "refresh_token"))
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidGrant);
    assert_eq!(e.error_description, "the SSO session has ended");
    // Refused once, the grant is gone for good.
    assert_eq!(
        fx.userinfo(&online).await.unwrap_err().error_description,
        "the grant was revoked"
    );
    // offline_access outlives the session (OIDC Core §11).
    let renewed = fx.refresh(str_of(&offline, "refresh_token")).await.unwrap();
    assert_eq!(fx.userinfo(&renewed).await.unwrap()["sub"], "alice");
}

#[tokio::test]
async fn a_code_of_an_ended_session_is_refused() {
    let fx = fixture();
    let session = fx.session().await;
    let code = fx.code(&session, "rp", "openid").await;
    fx.engine.logout(&session, None).await.unwrap();
    let e = fx.redeem("rp", &code).await.unwrap_err();
    assert_eq!(
        e.error_description,
        "the SSO session of this code has ended"
    );
}

#[tokio::test]
async fn the_id_token_says_who_for_whom_and_which_login() {
    let fx = fixture();
    let session = fx.session().await;
    let tokens = fx
        .redeem("rp", &fx.code(&session, "rp", "openid email").await)
        .await
        .unwrap();
    let id_token = str_of(&tokens, "id_token");
    let c = payload(id_token);
    let now = fx.clock.now() / 1000;
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], "rp");
    assert_eq!(c["azp"], "rp");
    assert_eq!(c["sub"], "alice", "a public subject is the user id");
    assert_eq!(c["nonce"], "N-1");
    assert_eq!(c["auth_time"], now);
    assert_eq!(c["iat"], now);
    assert_eq!(c["exp"], now + 300);
    assert_eq!(c["acr"], crate::acr::REFEDS_SFA, "one factor");
    assert_eq!(c["sid"], session_tag(&session).unwrap());
    assert_eq!(c["at_hash"], at_hash(str_of(&tokens, "access_token")));
    assert_eq!(c["email"], "alice@example.org");
    assert_eq!(c["email_verified"], true);
    assert_eq!(
        c["amr"],
        serde_json::json!(["pwd"]),
        "a password, nothing else"
    );
    assert_eq!(header(id_token)["alg"], "RS256");

    // A pairwise client sees another, stable subject.
    let tokens = fx
        .redeem("pw", &fx.code(&session, "pw", "openid").await)
        .await
        .unwrap();
    let c = payload(str_of(&tokens, "id_token"));
    let pw = fx.provider.clients().get("pw").unwrap();
    assert_eq!(c["sub"], subject(pw, "alice", "salt"));
    assert_ne!(c["sub"], "alice");
    assert!(c.get("email").is_none(), "not asked for");
}

#[tokio::test]
async fn a_late_login_for_max_age_goes_back_to_the_client_as_login_required() {
    let fx = fixture();
    let session = fx.session().await;
    fx.clock.advance(Duration::from_secs(120));
    let login = fx
        .provider
        .authorize(
            &fx.engine,
            &params(&[
                ("client_id", "rp"),
                ("response_type", "code"),
                ("scope", "openid"),
                ("max_age", "60"),
                ("prompt", "none"),
            ]),
            Some(&session),
            None,
        )
        .await;
    match login {
        Err(crate::SignInError::Client { answer, error }) => {
            assert_eq!(error.error, ErrorCode::LoginRequired);
            assert!(answer.params.contains(&("iss", ISSUER.to_owned())));
        }
        other => panic!("answered {other:?}"),
    }
}

#[tokio::test]
async fn client_credentials_get_no_user_scopes() {
    let fx = fixture();
    let t = fx
        .token("rp", &[("grant_type", "client_credentials")])
        .await
        .unwrap();
    assert_eq!(t["scope"], "api");
    assert!(t.get("refresh_token").is_none() && t.get("id_token").is_none());
    let e = fx
        .token(
            "rp",
            &[("grant_type", "client_credentials"), ("scope", "openid")],
        )
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidScope);
    // Not a user's token: no userinfo.
    assert_eq!(
        fx.userinfo(&t).await.unwrap_err().error,
        ErrorCode::InsufficientScope
    );
}

#[tokio::test]
async fn introspection_answers_only_for_the_owner_or_its_resource_servers() {
    let fx = fixture();
    let session = fx.session().await;
    let tokens = fx
        .redeem("pw", &fx.code(&session, "pw", "openid").await)
        .await
        .unwrap();
    // rp is not a resource server of pw.
    assert_eq!(
        fx.introspect(str_of(&tokens, "access_token")).await,
        json!({"active": false})
    );
    assert!(fx.provider.may_introspect("pw", "pw"));
    assert!(!fx.provider.may_introspect("pw", "rp"));
}

#[tokio::test]
async fn revocation_of_an_access_token_or_a_refresh_token() {
    let fx = fixture();
    let session = fx.session().await;
    let tokens = fx
        .redeem("rp", &fx.code(&session, "rp", "openid").await)
        .await
        .unwrap();
    let revoke = |token: String| {
        let provider = fx.provider.clone();
        let engine = &fx.engine;
        async move {
            provider
                .revoke(
                    engine,
                    None,
                    &params(&[
                        ("client_id", "rp"),
                        ("client_secret", SECRET),
                        ("token", &token),
                    ]),
                )
                .await
        }
    };
    revoke(str_of(&tokens, "access_token").to_owned())
        .await
        .unwrap();
    assert_eq!(
        fx.userinfo(&tokens).await.unwrap_err().error_description,
        "the token was revoked"
    );
    revoke(str_of(&tokens, "refresh_token").to_owned())
        .await
        .unwrap();
    assert_eq!(
        fx.refresh(str_of(&tokens, "refresh_token"))
            .await
            .unwrap_err()
            .error,
        ErrorCode::InvalidGrant
    );
    // RFC 7009 §2.2: an unknown token is not an error.
    revoke("RT-1-unknown".into()).await.unwrap();
    revoke("junk".into()).await.unwrap();
}

// ------------------------------------------------------------ logout

#[tokio::test]
async fn rp_initiated_logout_checks_where_it_returns() {
    let mut clients = clients();
    clients[0].post_logout_redirect_uris = vec!["https://rp.example/bye?x=1".into()];
    let fx = fixture();
    let provider = Provider::new(
        OidcSettings {
            clients,
            ..fx.provider.settings().clone()
        },
        PUBLIC_URL,
        fx.provider.signing_keys().clone(),
        fx.clock.clone(),
    )
    .unwrap();
    let session = fx.session().await;
    let tokens = fx
        .redeem("rp", &fx.code(&session, "rp", "openid").await)
        .await
        .unwrap();
    let hint = str_of(&tokens, "id_token");
    let end = |pairs: &[(&str, &str)]| provider.end_session(&params(pairs));
    use crate::EndSessionError::*;
    assert_eq!(end(&[]), Ok(None));
    assert_eq!(
        end(&[
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", "https://rp.example/bye?x=1"),
            ("state", "a b")
        ]),
        Ok(Some("https://rp.example/bye?x=1&state=a+b".into()))
    );
    assert_eq!(
        end(&[
            ("client_id", "rp"),
            ("post_logout_redirect_uri", "https://rp.example/bye?x=1")
        ]),
        Ok(Some("https://rp.example/bye?x=1".into()))
    );
    assert_eq!(
        end(&[("id_token_hint", hint), ("client_id", "pw")]),
        Err(ClientMismatch)
    );
    assert_eq!(
        end(&[("post_logout_redirect_uri", "https://rp.example/bye?x=1")]),
        Err(UnregisteredRedirect),
        "no client named"
    );
    assert_eq!(
        end(&[
            ("client_id", "rp"),
            ("post_logout_redirect_uri", "https://evil.example/")
        ]),
        Err(UnregisteredRedirect)
    );
    // A hint that does not verify names no client; the logout still happens.
    assert_eq!(end(&[("id_token_hint", "not.a.jwt")]), Ok(None));
    let long = "x".repeat(crate::MAX_TOKEN_LEN + 1);
    assert_eq!(end(&[("state", &long)]), Err(TooLong));
}

fn note(service: &str, ticket_id: &str, mode: LogoutMode) -> LogoutNotification {
    LogoutNotification {
        service: service.into(),
        ticket_id: ticket_id.into(),
        principal_id: "alice".into(),
        mode,
    }
}

#[tokio::test]
async fn the_participant_sends_one_logout_token_per_client_and_session() {
    let fx = fixture();
    let oidc = OidcLogout::new(fx.provider.clone(), test_client(Duration::from_secs(1)));
    let callback = |client: &str| fx.provider.callbacks().build(client, "OR-1-abc");
    assert_eq!(oidc.name(), "oidc");
    assert_eq!(oidc.party(&callback("rp")).as_deref(), Some("rp"));
    assert_eq!(oidc.party("https://app.example.org/"), None);
    assert_eq!(
        oidc.party("https://idp.example.org/cas/idp/callback?sp=rp&req=R-1"),
        None
    );

    let s1 = fx.session().await;
    let s2 = fx.session().await;
    let ticket = |session: &str| castellan_core::ids::new_session_ticket_id("ST", session).unwrap();
    let notes = vec![
        note(&callback("rp"), &ticket(&s1), LogoutMode::BackChannel),
        // The same client and session again (two logins in one session).
        note(&callback("rp"), &ticket(&s1), LogoutMode::BackChannel),
        // The same client in a replaced session: its own sid.
        note(&callback("rp"), &ticket(&s2), LogoutMode::BackChannel),
        note(&callback("pw"), &ticket(&s1), LogoutMode::BackChannel),
        note(&callback("quiet"), &ticket(&s1), LogoutMode::None),
    ];
    let ended = EndedSession {
        session_id: s1.clone(),
        principal: Arc::new(Principal::new("alice")),
    };
    let messages = oidc.messages(&ended, &notes).await;
    let told: Vec<(String, String, Value)> = messages
        .iter()
        .map(|m| {
            let c = payload(&m.payload);
            (m.party.clone(), m.endpoint.clone(), c["sid"].clone())
        })
        .collect();
    assert_eq!(
        told,
        vec![
            (
                "rp".into(),
                "https://rp.example/bcl".into(),
                json!(session_tag(&s1).unwrap())
            ),
            (
                "rp".into(),
                "https://rp.example/bcl".into(),
                json!(session_tag(&s2).unwrap())
            ),
            (
                "pw".into(),
                "https://pw.example/bcl".into(),
                json!(session_tag(&s1).unwrap())
            ),
        ]
    );
    let now = fx.clock.now() / 1000;
    let pw = payload(&messages[2].payload);
    assert_eq!(pw["iss"], ISSUER);
    assert_eq!(pw["aud"], "pw");
    assert_eq!(
        pw["sub"],
        subject(fx.provider.clients().get("pw").unwrap(), "alice", "salt")
    );
    assert_eq!(pw["iat"], now);
    assert_eq!(pw["exp"], now + 120);
    assert_eq!(
        pw["events"],
        json!({"http://schemas.openid.net/event/backchannel-logout": {}})
    );
    assert!(pw["jti"].as_str().unwrap().starts_with("LT-"));
    assert!(
        pw.get("nonce").is_none(),
        "Back-Channel Logout §2.4: no nonce"
    );
    assert_eq!(header(&messages[2].payload)["typ"], LOGOUT_TOKEN_TYPE);
}

#[test]
fn logout_token_claims_without_a_session_have_no_sid() {
    let c = crate::tokens::logout_token_claims(ISSUER, "rp", "alice", None, "LT-1", 1000);
    assert_eq!(
        c,
        json!({
            "iss": ISSUER, "aud": "rp", "iat": 1000, "exp": 1120, "jti": "LT-1", "sub": "alice",
            "events": {"http://schemas.openid.net/event/backchannel-logout": {}},
        })
    );
}

/// Answers every request with `status`; counts what it received.
async fn answering(status: u16) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/bcl", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            // Until the form has come (headers and body may come apart).
            let mut received = Vec::new();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = conn.read(&mut buf).await.unwrap_or(0);
                received.extend_from_slice(&buf[..n]);
                if n == 0 || String::from_utf8_lossy(&received).contains("logout_token=a.b.c") {
                    break;
                }
            }
            if String::from_utf8_lossy(&received).contains("logout_token=a.b.c") {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            let reply =
                format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = conn.write_all(reply.as_bytes()).await;
        }
    });
    (url, seen)
}

#[tokio::test]
async fn send_maps_the_answer_to_an_attempt() {
    let fx = fixture();
    let oidc = OidcLogout::new(fx.provider.clone(), test_client(Duration::from_secs(2)));
    for (status, expected) in [
        (200, Attempt::Delivered),
        (204, Attempt::Delivered),
        (400, Attempt::Refused),
        (500, Attempt::Failed),
        (302, Attempt::Failed),
    ] {
        let (url, seen) = answering(status).await;
        let message = LogoutMessage {
            party: "rp".into(),
            endpoint: url,
            payload: "a.b.c".into(),
        };
        assert_eq!(oidc.send(&message).await, expected, "status {status}");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
    let nowhere = LogoutMessage {
        party: "rp".into(),
        endpoint: "http://127.0.0.1:9/bcl".into(),
        payload: "a.b.c".into(),
    };
    assert_eq!(oidc.send(&nowhere).await, Attempt::Failed);
}

#[test]
fn the_login_page_names_a_client_by_its_name_and_host() {
    let fx = fixture();
    let service = fx.provider.callbacks().build("rp", "OR-1-abc");
    assert_eq!(
        fx.engine.display_name(&service).as_deref(),
        Some("rp (rp.example)")
    );
    assert!(fx.provider.is_callback(&service));
    assert!(!fx.provider.is_callback("https://app.example.org/"));
}

#[test]
fn the_discovery_document_names_the_endpoints() {
    let fx = fixture();
    let d: Value = serde_json::from_str(fx.provider.discovery()).unwrap();
    assert_eq!(d["issuer"], ISSUER);
    assert_eq!(d["token_endpoint"], format!("{ISSUER}/token"));
    assert_eq!(d["end_session_endpoint"], format!("{ISSUER}/logout"));
    assert_eq!(d["backchannel_logout_session_supported"], true);
    assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
}

/// A bounded client that follows no redirect, as the web crate's.
fn test_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .build()
        .unwrap()
}

/// RFC 9449: a proof at the token endpoint binds the access token
/// (`token_type` DPoP, `cnf.jkt`); userinfo then wants a proof of that key
/// and refuses the token as a bearer token; a proof is good once.
#[tokio::test]
async fn dpop_proofs_bind_access_tokens() {
    use crate::dpop::tests::Holder;
    use crate::dpop::{access_token_hash, Presentation};
    let fx = fixture();
    let session = fx.session().await;
    let code = fx.code(&session, "rp", "openid email").await;
    let holder = Holder::new();
    let now = SystemClock.now() / 1000;
    let token_url = format!("{ISSUER}/token");
    let proof = holder.proof("POST", &token_url, now, json!({}));
    let mut form = params(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", REDIRECT),
        ("client_id", "rp"),
        ("client_secret", SECRET),
    ]);
    let tokens = fx
        .provider
        .token(&fx.engine, None, Some(&proof), &form)
        .await
        .unwrap();
    assert_eq!(tokens["token_type"], "DPoP");
    let at = str_of(&tokens, "access_token");
    assert_eq!(payload(at)["cnf"], json!({ "jkt": holder.jkt() }));
    let introspected = fx.introspect(at).await;
    assert_eq!(introspected["token_type"], "DPoP");
    assert_eq!(introspected["cnf"]["jkt"], holder.jkt());

    // The same proof again, for a refresh: refused as a replay.
    form = params(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", str_of(&tokens, "refresh_token")),
        ("client_id", "rp"),
        ("client_secret", SECRET),
    ]);
    let e = fx
        .provider
        .token(&fx.engine, None, Some(&proof), &form)
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidDpopProof);
    assert!(e.error_description.contains("used before"));

    // userinfo: a bearer presentation is refused; a proof of the key with
    // `ath` is accepted; a proof of another key is not.
    let e = fx.userinfo(&tokens).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidToken);
    let userinfo_url = format!("{ISSUER}/userinfo");
    let ath = json!({ "ath": access_token_hash(at) });
    let other = Holder::new().proof("GET", &userinfo_url, now, ath.clone());
    let e = fx
        .provider
        .userinfo(
            &fx.engine,
            at,
            Presentation::Dpop {
                proof: Some(&other),
                method: "GET",
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.error, ErrorCode::InvalidDpopProof);
    let good = holder.proof("GET", &userinfo_url, now, ath);
    let claims = fx
        .provider
        .userinfo(
            &fx.engine,
            at,
            Presentation::Dpop {
                proof: Some(&good),
                method: "GET",
            },
        )
        .await
        .unwrap();
    assert_eq!(claims["email"], "alice@example.org");
}

/// RFC 8628: a device polls (pending, slow_down when too early), the user
/// signs in and confirms, the device gets its tokens once; an unanswered
/// code expires.
#[tokio::test]
async fn the_device_grant_polls_until_the_user_confirms() {
    let mut clients = clients();
    clients[0].grant_types.device_code = true;
    let fx = fixture();
    let provider = Provider::new(
        OidcSettings {
            clients,
            ..fx.provider.settings().clone()
        },
        PUBLIC_URL,
        fx.provider.signing_keys().clone(),
        fx.clock.clone(),
    )
    .unwrap();
    let auth = [("client_id", "rp"), ("client_secret", SECRET)];
    let start = || async {
        let mut form = params(&auth);
        form.insert("scope".into(), "openid email".into());
        provider
            .device_authorization(&fx.engine, None, &form, None)
            .await
            .unwrap()
    };
    let poll = |device_code: String| {
        let provider = &provider;
        let engine = &fx.engine;
        async move {
            let mut form = params(&auth);
            form.insert("grant_type".into(), crate::device::GRANT_TYPE.into());
            form.insert("device_code".into(), device_code);
            provider.token(engine, None, None, &form).await
        }
    };
    let da = start().await;
    let device_code = str_of(&da, "device_code").to_owned();
    let user_code = str_of(&da, "user_code").to_owned();
    assert_eq!(
        poll(device_code.clone()).await.unwrap_err().error,
        ErrorCode::AuthorizationPending
    );
    let e = poll(device_code.clone()).await.unwrap_err();
    assert_eq!(e.error, ErrorCode::SlowDown);
    assert!(e.error_description.contains("10 seconds"), "{e:?}");
    fx.clock.advance(Duration::from_secs(11));
    assert_eq!(
        poll(device_code.clone()).await.unwrap_err().error,
        ErrorCode::AuthorizationPending
    );

    // The user: the code (as typed), the login, the confirmation.
    let typed = user_code.replace('-', " ").to_lowercase();
    let login = provider
        .device_user_code(&fx.engine, &typed, None)
        .await
        .unwrap();
    let session = fx.session().await;
    let ticket = fx
        .engine
        .grant_service_ticket(&session, &login.service, true)
        .await
        .unwrap();
    let (_, request) = provider.callbacks().parse(&login.service).unwrap();
    assert!(crate::device::is_device_request(request));
    let page = provider
        .device_callback(&fx.engine, "rp", request, Some(&ticket.id), None)
        .await
        .unwrap();
    assert_eq!(page.client_name, "rp");
    assert_eq!(page.user, "alice");
    // The user code is used up.
    assert!(provider
        .device_user_code(&fx.engine, &user_code, None)
        .await
        .is_err());
    assert!(provider
        .device_confirm(&fx.engine, &page.id, true)
        .await
        .unwrap());
    // One-time confirmation.
    assert!(provider
        .device_confirm(&fx.engine, &page.id, false)
        .await
        .is_err());
    fx.clock.advance(Duration::from_secs(11));
    let tokens = poll(device_code.clone()).await.unwrap();
    assert_eq!(payload(str_of(&tokens, "id_token"))["sub"], "alice");
    assert_eq!(
        poll(device_code).await.unwrap_err().error,
        ErrorCode::InvalidGrant
    );

    // Unanswered: expired.
    let da = start().await;
    fx.clock.advance(Duration::from_secs(601));
    assert_eq!(
        poll(str_of(&da, "device_code").to_owned())
            .await
            .unwrap_err()
            .error,
        ErrorCode::ExpiredToken
    );
}
