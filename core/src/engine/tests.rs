use super::*;
use crate::authn::{StaticUser, StaticUserAuthenticator, UserSecret};
use crate::clock::ManualClock;
use crate::methods::AuthnMethod;
use crate::store::memory::MemoryStore;
use parking_lot::Mutex;

/// Records deliveries; answers as told.
#[derive(Default)]
struct RecordingCallback {
    accept: bool,
    delivered: Mutex<Vec<(String, String, String)>>,
}

#[async_trait]
impl ProxyCallback for RecordingCallback {
    async fn deliver(&self, pgt_url: &str, pgt_iou: &str, pgt_id: &str) -> bool {
        self.delivered
            .lock()
            .push((pgt_url.into(), pgt_iou.into(), pgt_id.into()));
        self.accept
    }
}

/// Owns every service; records the notifications it was handed.
#[derive(Default)]
struct Told {
    notes: Mutex<Vec<LogoutNotification>>,
}

#[async_trait]
impl crate::logout::LogoutParticipant for Told {
    fn name(&self) -> &'static str {
        "all"
    }
    fn party(&self, service: &str) -> Option<String> {
        Some(service.to_owned())
    }
    async fn messages(
        &self,
        _: &crate::logout::EndedSession,
        notes: &[LogoutNotification],
    ) -> Vec<crate::logout::LogoutMessage> {
        self.notes.lock().extend_from_slice(notes);
        Vec::new()
    }
    async fn send(&self, _: &crate::logout::LogoutMessage) -> crate::logout::Attempt {
        crate::logout::Attempt::Delivered
    }
}

impl Told {
    /// What the engine handed over since the last call.
    async fn take(
        &self,
        deliveries: Option<tokio::task::JoinHandle<()>>,
    ) -> Vec<LogoutNotification> {
        if let Some(d) = deliveries {
            d.await.unwrap();
        }
        std::mem::take(&mut *self.notes.lock())
    }
}

/// Who has a second factor enrolled.
struct Enrolled(Vec<String>);

#[async_trait]
impl SecondFactors for Enrolled {
    async fn enrolled(&self, user: &str) -> Result<bool, AuthnError> {
        Ok(self.0.iter().any(|u| u == user))
    }
}

struct Fixture {
    engine: Engine,
    clock: Arc<ManualClock>,
    callback: Arc<RecordingCallback>,
    told: Arc<Told>,
}

const APP: &str = "https://app.example.org/";
const PROXY: &str = "https://proxy.example.org/";
const BACKEND: &str = "https://backend.example.org/api";
const PGT_URL: &str = "https://proxy.example.org/pgt";

fn fixture(accept_callbacks: bool) -> Fixture {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let registry = ServiceRegistry::new(vec![
        RegisteredService::new(
            "app",
            r"https://app\.example\.org/.*",
            vec!["mail".into()],
            None,
            LogoutMode::BackChannel,
        )
        .unwrap(),
        RegisteredService::new(
            "proxy",
            r"https://proxy\.example\.org/.*",
            vec![],
            Some(r"https://proxy\.example\.org/pgt"),
            LogoutMode::None,
        )
        .unwrap(),
        RegisteredService::new(
            "backend",
            r"https://backend\.example\.org/.*",
            vec!["cn".into()],
            Some(r"https://backend\.example\.org/pgt"),
            LogoutMode::BackChannel,
        )
        .unwrap(),
        RegisteredService::new(
            "oidc-callback",
            r"https://idp\.example\.org/oidc/callback\?.*",
            vec!["mail".into()],
            None,
            LogoutMode::None,
        )
        .unwrap()
        .internal(),
        RegisteredService::new(
            "secure",
            r"https://secure\.example\.org/.*",
            vec![],
            None,
            LogoutMode::None,
        )
        .unwrap()
        .with_mfa(Some(MfaPolicy::Required)),
        RegisteredService::new(
            "opt",
            r"https://opt\.example\.org/.*",
            vec![],
            None,
            LogoutMode::None,
        )
        .unwrap()
        .with_mfa(Some(MfaPolicy::Optional)),
    ]);
    let users = StaticUserAuthenticator::new(vec![StaticUser {
        username: "alice".into(),
        secret: UserSecret::Plain("wonderland".into()),
        attributes: [
            ("mail".to_owned(), vec!["alice@example.org".to_owned()]),
            ("cn".to_owned(), vec!["Alice".to_owned()]),
        ]
        .into_iter()
        .collect(),
    }])
    .unwrap();
    let callback = Arc::new(RecordingCallback {
        accept: accept_callbacks,
        ..Default::default()
    });
    let engine = Engine::new(
        store,
        Arc::new(registry),
        Arc::new(users),
        ThrottlePolicy::default(),
        TicketPolicy::default(),
        clock.clone(),
        callback.clone(),
    );
    let told = Arc::new(Told::default());
    let engine = engine
        .with_single_logout(crate::logout::SingleLogout::new(
            vec![told.clone()],
            crate::logout::DeliveryPolicy::default(),
        ))
        .with_second_factors(Arc::new(Enrolled(vec!["carol".into()])));
    Fixture {
        engine,
        clock,
        callback,
        told,
    }
}

fn validation<'a>(ticket: &'a str, service: &'a str) -> ValidationRequest<'a> {
    ValidationRequest {
        ticket,
        service,
        renew: false,
        pgt_url: None,
        allow_proxy_tickets: false,
        in_process: false,
    }
}

async fn login(f: &Fixture) -> TicketGrantingTicket {
    let principal = f
        .engine
        .authenticate(
            &Credentials {
                username: "alice".into(),
                password: "wonderland".into(),
            },
            None,
        )
        .await
        .unwrap();
    f.engine.open_session(principal, false).await.unwrap()
}

#[tokio::test]
async fn a_service_ticket_validates_once_for_its_service() {
    let f = fixture(true);
    let tgt = login(&f).await;
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, APP, true)
        .await
        .unwrap();
    let a = f.engine.validate(validation(&st.id, APP)).await.unwrap();
    assert_eq!(a.principal.id, "alice");
    assert_eq!(
        a.attributes.keys().collect::<Vec<_>>(),
        vec!["mail"],
        "only released ones"
    );
    assert!(a.from_new_login);
    assert!(a.proxies.is_empty());
    assert!(matches!(
        f.engine.validate(validation(&st.id, APP)).await,
        Err(EngineError::TicketNotFound)
    ));
}

#[tokio::test]
async fn wrong_service_fails_and_burns_the_ticket() {
    let f = fixture(true);
    let tgt = login(&f).await;
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, APP, true)
        .await
        .unwrap();
    assert!(matches!(
        f.engine
            .validate(validation(&st.id, "https://app.example.org/other"))
            .await,
        Err(EngineError::ServiceMismatch)
    ));
    assert!(matches!(
        f.engine.validate(validation(&st.id, APP)).await,
        Err(EngineError::TicketNotFound)
    ));
}

#[tokio::test]
async fn tickets_expire_after_their_ttl() {
    let f = fixture(true);
    let tgt = login(&f).await;
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, APP, true)
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(11));
    assert!(matches!(
        f.engine.validate(validation(&st.id, APP)).await,
        Err(EngineError::TicketNotFound)
    ));
}

#[tokio::test]
async fn renew_requires_a_ticket_from_a_new_login() {
    let f = fixture(true);
    let tgt = login(&f).await;
    let sso = f
        .engine
        .grant_service_ticket(&tgt.id, APP, false)
        .await
        .unwrap();
    let mut req = validation(&sso.id, APP);
    req.renew = true;
    assert!(matches!(
        f.engine.validate(req).await,
        Err(EngineError::RenewRequired)
    ));
    let fresh = f
        .engine
        .grant_service_ticket(&tgt.id, APP, true)
        .await
        .unwrap();
    let mut req = validation(&fresh.id, APP);
    req.renew = true;
    assert!(f.engine.validate(req).await.is_ok());
}

#[tokio::test]
async fn malformed_and_unknown_tickets_are_told_apart() {
    let f = fixture(true);
    for bad in [
        "",
        "garbage",
        "TGT-1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "st-1-x",
    ] {
        assert!(matches!(
            f.engine.validate(validation(bad, APP)).await,
            Err(EngineError::MalformedTicket)
        ));
    }
    for unknown in ["ST-", "ST-doesnotexist", "ST-1-<>", "PT-1-x"] {
        assert!(matches!(
            f.engine.validate(validation(unknown, APP)).await,
            Err(EngineError::TicketNotFound)
        ));
    }
    let unknown = new_ticket_id("ST");
    assert!(matches!(
        f.engine.validate(validation(&unknown, APP)).await,
        Err(EngineError::TicketNotFound)
    ));
}

#[tokio::test]
async fn unregistered_services_get_no_ticket() {
    let f = fixture(true);
    let tgt = login(&f).await;
    assert!(matches!(
        f.engine
            .grant_service_ticket(&tgt.id, "https://evil.example/", false)
            .await,
        Err(EngineError::UnauthorizedService)
    ));
}

#[tokio::test]
async fn a_ticket_dies_with_its_session() {
    let f = fixture(true);
    let tgt = login(&f).await;
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, APP, true)
        .await
        .unwrap();
    f.engine.logout(&tgt.id, None).await.unwrap();
    assert!(f.engine.validate(validation(&st.id, APP)).await.is_err());
    assert!(matches!(
        f.engine.grant_service_ticket(&tgt.id, APP, false).await,
        Err(EngineError::SessionNotFound)
    ));
}

#[tokio::test]
async fn sessions_end_at_their_idle_and_hard_limits() {
    let f = fixture(true);
    let tgt = login(&f).await;
    f.clock.advance(Duration::from_secs(3600));
    assert!(
        f.engine.session(&tgt.id).await.unwrap().is_some(),
        "used within idle limit"
    );
    f.clock.advance(Duration::from_secs(2 * 3600 + 1));
    assert!(
        f.engine.session(&tgt.id).await.unwrap().is_none(),
        "idle too long"
    );

    let tgt = login(&f).await;
    for _ in 0..9 {
        f.clock.advance(Duration::from_secs(3600));
        let _ = f.engine.session(&tgt.id).await.unwrap();
    }
    assert!(
        f.engine.session(&tgt.id).await.unwrap().is_none(),
        "hard limit of 8h"
    );
}

#[tokio::test]
async fn proxy_chain_is_listed_most_recent_first() {
    let f = fixture(true);
    let tgt = login(&f).await;
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, PROXY, true)
        .await
        .unwrap();
    let mut req = validation(&st.id, PROXY);
    req.pgt_url = Some(PGT_URL);
    let a = f.engine.validate(req).await.unwrap();
    let iou = a.pgt_iou.expect("a PGTIOU");
    let (url, delivered_iou, pgt) = f.callback.delivered.lock()[0].clone();
    assert_eq!(
        (url.as_str(), delivered_iou.as_str()),
        (PGT_URL, iou.as_str())
    );

    let pt = f.engine.grant_proxy_ticket(&pgt, BACKEND).await.unwrap();
    assert!(matches!(
        f.engine.validate(validation(&pt.id, BACKEND)).await,
        Err(EngineError::ProxyTicketNotAccepted)
    ));
    let pt = f.engine.grant_proxy_ticket(&pgt, BACKEND).await.unwrap();
    let mut req = validation(&pt.id, BACKEND);
    req.allow_proxy_tickets = true;
    req.pgt_url = Some("https://backend.example.org/pgt");
    let a = f.engine.validate(req).await.unwrap();
    assert_eq!(a.proxies, vec![PGT_URL.to_owned()]);
    assert_eq!(a.attributes.keys().collect::<Vec<_>>(), vec!["cn"]);
    let (_, _, pgt2) = f.callback.delivered.lock()[1].clone();

    let pt2 = f.engine.grant_proxy_ticket(&pgt2, APP).await.unwrap();
    let mut req = validation(&pt2.id, APP);
    req.allow_proxy_tickets = true;
    let a = f.engine.validate(req).await.unwrap();
    assert_eq!(
        a.proxies,
        vec![
            "https://backend.example.org/pgt".to_owned(),
            PGT_URL.to_owned()
        ]
    );
}

#[tokio::test]
async fn proxy_callbacks_must_be_https_allowed_and_answer() {
    let f = fixture(true);
    let tgt = login(&f).await;
    for bad in [
        "http://proxy.example.org/pgt",
        "https://elsewhere.example/pgt",
    ] {
        let st = f
            .engine
            .grant_service_ticket(&tgt.id, PROXY, true)
            .await
            .unwrap();
        let mut req = validation(&st.id, PROXY);
        req.pgt_url = Some(bad);
        assert!(matches!(
            f.engine.validate(req).await,
            Err(EngineError::InvalidProxyCallback(_))
        ));
    }
    assert!(f.callback.delivered.lock().is_empty(), "never called back");

    let f = fixture(false);
    let tgt = login(&f).await;
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, PROXY, true)
        .await
        .unwrap();
    let mut req = validation(&st.id, PROXY);
    req.pgt_url = Some(PGT_URL);
    let outcome = f.engine.validate(req).await;
    assert!(
        matches!(outcome, Err(EngineError::InvalidProxyCallback(_))),
        "no PGT, and the validation fails, when the callback fails: {outcome:?}"
    );
    let (_, _, pgt) = f.callback.delivered.lock()[0].clone();
    assert!(matches!(
        f.engine.grant_proxy_ticket(&pgt, BACKEND).await,
        Err(EngineError::TicketNotFound)
    ));
}

#[tokio::test]
async fn logout_returns_every_service_once() {
    let f = fixture(true);
    let tgt = login(&f).await;
    let a = f
        .engine
        .grant_service_ticket(&tgt.id, APP, true)
        .await
        .unwrap();
    let b = f
        .engine
        .grant_service_ticket(&tgt.id, PROXY, false)
        .await
        .unwrap();
    let out = f.engine.logout(&tgt.id, None).await.unwrap();
    assert_eq!(out.user.as_deref(), Some("alice"));
    let notes = f.told.take(out.deliveries).await;
    assert_eq!(notes.len(), 2);
    assert_eq!(notes[0].ticket_id, a.id);
    assert_eq!(notes[0].mode, LogoutMode::BackChannel);
    assert_eq!(notes[1].ticket_id, b.id);
    assert_eq!(notes[1].mode, LogoutMode::None);
    let again = f.engine.logout(&tgt.id, None).await.unwrap();
    assert!(again.user.is_none());
    assert!(f.told.take(again.deliveries).await.is_empty());
}

#[tokio::test]
async fn repeated_failures_are_throttled_even_with_the_right_password() {
    let f = fixture(true);
    let creds = |p: &str| Credentials {
        username: "alice".into(),
        password: p.into(),
    };
    let ip: IpAddr = "192.0.2.7".parse().unwrap();
    for _ in 0..5 {
        assert!(matches!(
            f.engine.authenticate(&creds("nope"), Some(ip)).await,
            Err(EngineError::Authentication(AuthnError::InvalidCredentials))
        ));
    }
    assert!(matches!(
        f.engine.authenticate(&creds("wonderland"), Some(ip)).await,
        Err(EngineError::Authentication(AuthnError::Throttled))
    ));
    f.clock.advance(Duration::from_secs(301));
    assert!(f
        .engine
        .authenticate(&creds("wonderland"), Some(ip))
        .await
        .is_ok());
}

/// Counts verifications; slow enough that parallel attempts overlap.
#[derive(Default)]
struct CountingAuthenticator {
    verified: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Authenticator for CountingAuthenticator {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Arc<Principal>, AuthnError> {
        self.verified
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if credentials.password == "right" {
            Ok(Arc::new(Principal {
                id: credentials.username.clone(),
                attributes: Default::default(),
            }))
        } else {
            Err(AuthnError::InvalidCredentials)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_attempts_never_verify_more_than_the_limit() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let counting = Arc::new(CountingAuthenticator::default());
    let engine = Arc::new(Engine::new(
        Arc::new(MemoryStore::new(clock.clone())),
        Arc::new(ServiceRegistry::new(vec![])),
        counting.clone(),
        ThrottlePolicy::default(),
        TicketPolicy::default(),
        clock,
        Arc::new(RecordingCallback::default()),
    ));
    let ip: IpAddr = "192.0.2.9".parse().unwrap();
    let attempts: Vec<_> = (0..60)
        .map(|_| {
            let engine = engine.clone();
            tokio::spawn(async move {
                let creds = Credentials {
                    username: "bob".into(),
                    password: "wrong".into(),
                };
                engine.authenticate(&creds, Some(ip)).await
            })
        })
        .collect();
    let mut throttled = 0;
    for a in attempts {
        if matches!(
            a.await.unwrap(),
            Err(EngineError::Authentication(AuthnError::Throttled))
        ) {
            throttled += 1;
        }
    }
    let verified = counting.verified.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(verified, 5, "only the per-user limit is verified");
    assert_eq!(throttled, 55);
    let right = Credentials {
        username: "bob".into(),
        password: "right".into(),
    };
    assert!(matches!(
        engine.authenticate(&right, Some(ip)).await,
        Err(EngineError::Authentication(AuthnError::Throttled))
    ));
    // Other users from the same address: the address budget (20) is what is left.
    let mut wrong_from_address = 0;
    for n in 0..40 {
        let creds = Credentials {
            username: format!("user{n}"),
            password: "wrong".into(),
        };
        if matches!(
            engine.authenticate(&creds, Some(ip)).await,
            Err(EngineError::Authentication(AuthnError::InvalidCredentials))
        ) {
            wrong_from_address += 1;
        }
    }
    assert_eq!(wrong_from_address, 15);
}

#[tokio::test]
async fn login_flow_tokens_are_one_time_and_bound() {
    let f = fixture(true);
    let flow = f
        .engine
        .start_login_flow(Some(APP), "browser-1")
        .await
        .unwrap();
    assert_eq!(flow.service.as_deref(), Some(APP));
    let take = |id: String, service: Option<&'static str>, browser: &'static str| {
        let engine = &f.engine;
        async move { engine.take_login_flow(&id, service, browser).await.unwrap() }
    };
    assert!(
        !take(flow.id.clone(), Some(APP), "browser-2").await,
        "another browser"
    );
    assert!(
        !take(flow.id.clone(), Some(PROXY), "browser-1").await,
        "another service"
    );
    assert!(
        !take(flow.id.clone(), None, "browser-1").await,
        "no service"
    );
    assert!(take(flow.id.clone(), Some(APP), "browser-1").await);
    assert!(!take(flow.id.clone(), Some(APP), "browser-1").await, "once");

    let mut forged = flow.id.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let fresh = f.engine.start_login_flow(None, "b").await.unwrap();
    assert!(!take(forged, Some(APP), "browser-1").await, "tampered");
    assert!(!take("LF-short".into(), None, "b").await);
    assert!(!take("ST-1-abc".into(), None, "b").await);

    f.clock.advance(Duration::from_secs(31 * 60));
    assert!(!take(fresh.id, None, "b").await, "expired");
}

const INTERNAL: &str = "https://idp.example.org/oidc/callback?req=1";

#[tokio::test]
async fn internal_services_validate_only_in_process() {
    let f = fixture(true);
    let tgt = login(&f).await;
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, INTERNAL, true)
        .await
        .unwrap();
    assert!(matches!(
        f.engine.validate(validation(&st.id, INTERNAL)).await,
        Err(EngineError::UnauthorizedService)
    ));
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, INTERNAL, true)
        .await
        .unwrap();
    let a = f
        .engine
        .validate(ValidationRequest {
            in_process: true,
            ..validation(&st.id, INTERNAL)
        })
        .await
        .unwrap();
    assert_eq!(a.session_id, tgt.id);
    assert_eq!(a.attributes["mail"], vec!["alice@example.org".to_owned()]);
}

#[tokio::test]
async fn the_same_user_logging_in_again_keeps_the_session_s_applications() {
    let f = fixture(true);
    let first = login(&f).await;
    f.engine
        .grant_service_ticket(&first.id, APP, true)
        .await
        .unwrap();
    let alice = first.principal.clone();
    let (second, ended) = f
        .engine
        .replace_session(Some(&first.id), alice, false, AuthnMethods::NONE)
        .await
        .unwrap();
    assert!(
        f.told.take(ended.deliveries).await.is_empty(),
        "nobody is logged out on a renewed login"
    );
    assert!(f.engine.session(&first.id).await.unwrap().is_none());
    // Logging out of the new session still reaches the application.
    let out = f.engine.logout(&second.id, None).await.unwrap();
    let told = f.told.take(out.deliveries).await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].service, APP);

    // Another user's login ends the previous session and names its services.
    let third = login(&f).await;
    f.engine
        .grant_service_ticket(&third.id, APP, true)
        .await
        .unwrap();
    let bob = Arc::new(crate::Principal::new("bob"));
    let (_, ended) = f
        .engine
        .replace_session(Some(&third.id), bob, false, AuthnMethods::NONE)
        .await
        .unwrap();
    let ended = f.told.take(ended.deliveries).await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0].principal_id, "alice");
}

#[tokio::test]
async fn sign_in_opens_a_session_and_grants_the_service_s_ticket() {
    let f = fixture(true);
    let alice = Arc::new(crate::Principal::new("alice"));
    let signed = f
        .engine
        .sign_in(SignIn {
            previous: None,
            principal: alice.clone(),
            long_term: false,
            service: Some(APP),
            from_new_login: false,
            methods: AuthnMethods::of(AuthnMethod::Password),
            step_up: false,
            consented: None,
        })
        .await
        .unwrap();
    let st = signed.ticket.expect("a ticket for the service");
    let a = f.engine.validate(validation(&st.id, APP)).await.unwrap();
    assert_eq!(a.principal.id, "alice");
    assert!(!a.from_new_login, "as the sign-in said");
    assert_eq!(a.session_id, signed.session.id);

    // Another user's sign-in in that browser ends alice's session and
    // tells her application.
    let bob = Arc::new(crate::Principal::new("bob"));
    let signed_bob = f
        .engine
        .sign_in(SignIn {
            previous: Some(&signed.session.id),
            principal: bob,
            long_term: false,
            service: None,
            from_new_login: true,
            methods: AuthnMethods::of(AuthnMethod::Password),
            step_up: false,
            consented: None,
        })
        .await
        .unwrap();
    assert!(signed_bob.ticket.is_none());
    assert!(f
        .engine
        .session(&signed.session.id)
        .await
        .unwrap()
        .is_none());
    // The deliveries run in the background: wait for them.
    for _ in 0..100 {
        if !f.told.notes.lock().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    let told = f.told.take(None).await;
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].principal_id, "alice");

    // An unregistered service gets nothing, and no session is opened.
    assert!(matches!(
        f.engine
            .sign_in(SignIn {
                previous: None,
                principal: alice,
                long_term: false,
                service: Some("https://evil.example.com/"),
                from_new_login: true,
                methods: AuthnMethods::of(AuthnMethod::Password),
                step_up: false,
                consented: None,
            })
            .await,
        Err(EngineError::UnauthorizedService)
    ));
}

/// A directory's answers, by password: "right", "locked" (a right
/// password on a locked account), "down", anything else wrong.
struct DirectoryLike;

#[async_trait]
impl Authenticator for DirectoryLike {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Arc<Principal>, AuthnError> {
        match credentials.password.as_str() {
            "right" => Ok(Arc::new(Principal::new(credentials.username.clone()))),
            "locked" => Err(AuthnError::Refused(crate::AccountRefusal {
                problem: crate::AccountProblem::Locked,
                password_change_url: None,
            })),
            "down" => Err(AuthnError::Backend("directory down".into())),
            "unknown" => Err(AuthnError::UnknownUser),
            _ => Err(AuthnError::InvalidCredentials),
        }
    }
}

#[tokio::test]
async fn refused_accounts_count_as_failures_and_an_unavailable_source_does_not() {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let engine = Engine::new(
        Arc::new(MemoryStore::new(clock.clone())),
        Arc::new(ServiceRegistry::new(vec![])),
        Arc::new(DirectoryLike),
        ThrottlePolicy::default(),
        TicketPolicy::default(),
        clock,
        Arc::new(RecordingCallback::default()),
    );
    let ip: IpAddr = "192.0.2.10".parse().unwrap();
    let creds = |p: &str| Credentials {
        username: "carol".into(),
        password: p.into(),
    };
    // A directory that is down proves nothing: never counted.
    for _ in 0..10 {
        assert!(matches!(
            engine.authenticate(&creds("down"), Some(ip)).await,
            Err(EngineError::Authentication(AuthnError::Backend(_)))
        ));
    }
    // An unknown user is a wrong password to the outside, and counted.
    assert!(matches!(
        engine.authenticate(&creds("unknown"), Some(ip)).await,
        Err(EngineError::Authentication(AuthnError::InvalidCredentials))
    ));
    assert!(matches!(
        engine.authenticate(&creds("wrong"), Some(ip)).await,
        Err(EngineError::Authentication(AuthnError::InvalidCredentials))
    ));
    // A locked account, even with the right password: counted, and the
    // earlier failures are not forgotten.
    for _ in 0..3 {
        assert!(matches!(
            engine.authenticate(&creds("locked"), Some(ip)).await,
            Err(EngineError::Authentication(AuthnError::Refused(_)))
        ));
    }
    assert!(matches!(
        engine.authenticate(&creds("right"), Some(ip)).await,
        Err(EngineError::Authentication(AuthnError::Throttled))
    ));
}

const SECURE: &str = "https://secure.example.org/";
const OPT: &str = "https://opt.example.org/";

/// A sign-in request, not long-term.
fn sign_in<'a>(
    previous: Option<&'a str>,
    principal: Arc<crate::Principal>,
    service: Option<&'a str>,
    from_new_login: bool,
    methods: AuthnMethods,
    step_up: bool,
) -> SignIn<'a> {
    SignIn {
        previous,
        principal,
        long_term: false,
        service,
        from_new_login,
        methods,
        step_up,
        consented: None,
    }
}

fn password() -> AuthnMethods {
    AuthnMethods::of(AuthnMethod::Password)
}

fn pending(principal: &str, step_up: Option<String>) -> PendingSignIn {
    PendingSignIn {
        principal: Arc::new(crate::Principal::new(principal)),
        methods: password(),
        service: Some(SECURE.into()),
        long_term: false,
        from_new_login: true,
        step_up,
        browser: "browser-1".into(),
        response_method: None,
        challenge: vec![1, 2, 3],
    }
}

#[tokio::test]
async fn a_password_alone_gets_no_ticket_for_a_service_that_requires_a_second_factor() {
    let f = fixture(true);
    let tgt = login(&f).await;
    assert!(matches!(
        f.engine.grant_service_ticket(&tgt.id, SECURE, false).await,
        Err(EngineError::SecondFactorRequired)
    ));
    // The same session serves plain services.
    assert!(f
        .engine
        .grant_service_ticket(&tgt.id, APP, false)
        .await
        .is_ok());
    // Nor does a sign-in with the password alone, and it leaves the
    // browser's session alone.
    let refused = f
        .engine
        .sign_in(sign_in(
            Some(&tgt.id),
            tgt.principal.clone(),
            Some(SECURE),
            true,
            password(),
            false,
        ))
        .await;
    assert!(matches!(refused, Err(EngineError::SecondFactorRequired)));
    assert!(f.engine.session(&tgt.id).await.unwrap().is_some());
}

#[tokio::test]
async fn a_step_up_adds_the_second_factor_and_keeps_the_first() {
    let f = fixture(true);
    let tgt = login(&f).await;
    f.engine
        .grant_service_ticket(&tgt.id, APP, false)
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(60));
    let signed = f
        .engine
        .sign_in(sign_in(
            Some(&tgt.id),
            tgt.principal.clone(),
            Some(SECURE),
            false,
            AuthnMethods::of(AuthnMethod::Totp),
            true,
        ))
        .await
        .unwrap();
    assert_eq!(
        signed.session.id, tgt.id,
        "the same session: tokens bound to it (OIDC sid, SAML SessionIndex) stay valid"
    );
    let live = f.engine.session(&tgt.id).await.unwrap().unwrap();
    assert_eq!(live.authenticated_at, tgt.authenticated_at);
    assert_eq!(live.expires_at, tgt.expires_at);
    assert_eq!(
        live.services.len(),
        2,
        "its applications are kept (and the new one)"
    );
    assert!(live.methods.contains(AuthnMethod::Totp));
    let st = signed.ticket.unwrap();
    let a = f.engine.validate(validation(&st.id, SECURE)).await.unwrap();
    assert!(a.methods.contains(AuthnMethod::Password));
    assert!(a.methods.contains(AuthnMethod::Totp));
    assert!(!a.from_new_login, "the password was not asked again");
    // Later MFA services are served silently.
    assert!(f
        .engine
        .grant_service_ticket(&signed.session.id, SECURE, false)
        .await
        .is_ok());
}

#[tokio::test]
async fn a_step_up_of_a_session_that_ended_fails() {
    let f = fixture(true);
    let tgt = login(&f).await;
    f.engine.logout(&tgt.id, None).await.unwrap();
    let r = f
        .engine
        .sign_in(sign_in(
            Some(&tgt.id),
            tgt.principal.clone(),
            Some(SECURE),
            false,
            AuthnMethods::of(AuthnMethod::Totp),
            true,
        ))
        .await;
    assert!(matches!(r, Err(EngineError::SessionNotFound)));
}

#[tokio::test]
async fn optional_asks_only_the_enrolled() {
    let f = fixture(true);
    let tgt = login(&f).await;
    assert!(f
        .engine
        .grant_service_ticket(&tgt.id, OPT, false)
        .await
        .is_ok());
    let carol = f
        .engine
        .sign_in(sign_in(
            None,
            Arc::new(crate::Principal::new("carol")),
            None,
            true,
            password(),
            false,
        ))
        .await
        .unwrap();
    assert!(matches!(
        f.engine
            .grant_service_ticket(&carol.session.id, OPT, false)
            .await,
        Err(EngineError::SecondFactorRequired)
    ));
    let registered = f.engine.service(APP).unwrap();
    assert!(
        f.engine
            .needs_second_factor(registered, "alice", password(), true)
            .await
            .unwrap(),
        "a protocol that asks gets it anywhere"
    );
}

#[tokio::test]
async fn a_deferred_sign_in_is_finished_once_by_its_own_browser() {
    let f = fixture(true);
    let id = f
        .engine
        .defer_sign_in(&pending("alice", None))
        .await
        .unwrap();
    assert!(f
        .engine
        .deferred_sign_in(&id, "browser-2")
        .await
        .unwrap()
        .is_none());
    assert!(f
        .engine
        .take_deferred_sign_in(&id, "browser-2")
        .await
        .unwrap()
        .is_none());
    let mut p = f
        .engine
        .deferred_sign_in(&id, "browser-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.challenge, [1, 2, 3]);
    p.challenge = vec![9];
    assert!(f.engine.update_deferred_sign_in(&id, &p).await.unwrap());
    let taken = f
        .engine
        .take_deferred_sign_in(&id, "browser-1")
        .await
        .unwrap();
    assert_eq!(taken.map(|p| p.challenge), Some(vec![9]));
    assert!(f
        .engine
        .take_deferred_sign_in(&id, "browser-1")
        .await
        .unwrap()
        .is_none());
    // Garbage ids are nobody's.
    for bad in ["", "MFA", "ST-1-x", &"MFA-".repeat(100), "MFA-a b"] {
        assert!(f
            .engine
            .deferred_sign_in(bad, "browser-1")
            .await
            .unwrap()
            .is_none());
    }
    // It expires.
    let id = f
        .engine
        .defer_sign_in(&pending("alice", None))
        .await
        .unwrap();
    f.clock
        .advance(crate::SECOND_STEP_TTL + Duration::from_secs(1));
    assert!(f
        .engine
        .deferred_sign_in(&id, "browser-1")
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn wrong_second_factors_are_throttled_apart_from_passwords() {
    let f = fixture(true);
    for _ in 0..5 {
        let ok = f
            .engine
            .check_second_factor("alice", None, async { Ok(None) })
            .await
            .unwrap();
        assert!(ok.is_none());
    }
    assert!(matches!(
        f.engine
            .check_second_factor("alice", None, async { Ok(Some(AuthnMethod::Totp)) })
            .await,
        Err(EngineError::Authentication(AuthnError::Throttled))
    ));
    // The password still works: the counts are apart.
    login(&f).await;
    assert!(f
        .engine
        .check_second_factor("bob", None, async { Ok(Some(AuthnMethod::Totp)) })
        .await
        .unwrap()
        .is_some());
}

fn audited(f: Fixture) -> (Fixture, Arc<crate::audit::recording::Recorder>) {
    let recorder = crate::audit::recording::Recorder::new();
    let Fixture {
        engine,
        clock,
        callback,
        told,
    } = f;
    let engine = engine.with_audit(recorder.clone());
    (
        Fixture {
            engine,
            clock,
            callback,
            told,
        },
        recorder,
    )
}

#[tokio::test]
async fn the_audit_sink_hears_what_the_engine_decides_and_no_secret() {
    use crate::audit::{AuditKind, Outcome};
    let (f, audit) = audited(fixture(true));
    let wrong = Credentials {
        username: "alice".into(),
        password: "not-it".into(),
    };
    assert!(f.engine.authenticate(&wrong, None).await.is_err());
    let tgt = login(&f).await;
    let st = f
        .engine
        .grant_service_ticket(&tgt.id, APP, true)
        .await
        .unwrap();
    f.engine.validate(validation(&st.id, APP)).await.unwrap();
    let replayed = f.engine.validate(validation(&st.id, APP)).await;
    assert!(replayed.is_err());
    let out = f.engine.logout(&tgt.id, None).await.unwrap();
    f.told.take(out.deliveries).await;
    let events = audit.taken();
    let seen: Vec<_> = events.iter().map(|e| (e.kind, e.outcome)).collect();
    assert_eq!(
        seen,
        [
            (AuditKind::Login, Outcome::Failed),
            (AuditKind::Login, Outcome::Ok),
            (AuditKind::TicketGranted, Outcome::Ok),
            (AuditKind::TicketValidated, Outcome::Ok),
            (AuditKind::TicketValidated, Outcome::Failed),
            (AuditKind::Logout, Outcome::Ok),
        ]
    );
    assert!(events.iter().all(|e| e.user.as_deref() != Some("")));
    assert_eq!(
        events[2].user.as_deref(),
        Some("alice"),
        "read from the session"
    );
    assert_eq!(events[2].service.as_deref(), Some("app"));
    assert_eq!(events[2].protocol, Some("cas"));
    assert_eq!(events[3].user.as_deref(), Some("alice"));
    assert_eq!(events[4].detail.as_deref(), Some("INVALID_TICKET"));
    assert_eq!(events[4].user, None);
    let text = format!("{events:?}");
    for secret in ["not-it", "wonderland", st.id.as_str(), tgt.id.as_str()] {
        assert!(!text.contains(secret), "{secret} in an audit event");
    }
}

#[tokio::test]
async fn the_audit_sink_hears_the_second_factor_steps() {
    use crate::audit::{AuditKind, Outcome};
    let (f, audit) = audited(fixture(true));
    f.engine
        .defer_sign_in(&pending("alice", None))
        .await
        .unwrap();
    f.engine
        .check_second_factor("alice", None, async { Ok(None) })
        .await
        .unwrap();
    f.engine
        .check_second_factor("alice", None, async { Ok(Some(AuthnMethod::RecoveryCode)) })
        .await
        .unwrap();
    let events = audit.taken();
    assert!(events.iter().all(|e| e.kind == AuditKind::SecondFactor));
    let steps: Vec<_> = events.iter().map(|e| (e.outcome, e.method)).collect();
    assert_eq!(
        steps,
        [
            (Outcome::Asked, None),
            (Outcome::Refused, None),
            (Outcome::Ok, Some("recovery_code")),
        ]
    );
    assert_eq!(events[0].service.as_deref(), Some("secure"));
}

/// Decisions in memory, with the clock of the test.
struct Decisions {
    clock: Arc<ManualClock>,
    kept: Mutex<Vec<(String, String, String, u64)>>,
}

#[async_trait]
impl Consents for Decisions {
    async fn given(
        &self,
        user: &str,
        service: &str,
        digest: &str,
    ) -> Result<bool, crate::ConsentStoreError> {
        let now = self.clock.now();
        Ok(self
            .kept
            .lock()
            .iter()
            .any(|(u, s, d, until)| u == user && s == service && d == digest && *until > now))
    }

    async fn remember(
        &self,
        user: &str,
        service: &str,
        digest: &str,
        ttl: Duration,
    ) -> Result<(), crate::ConsentStoreError> {
        let until = self.clock.now() + ttl.as_millis() as u64;
        let mut kept = self.kept.lock();
        kept.retain(|(u, s, _, _)| !(u == user && s == service));
        kept.push((user.into(), service.into(), digest.into(), until));
        Ok(())
    }

    async fn forget(&self, user: &str, service: &str) -> Result<(), crate::ConsentStoreError> {
        self.kept
            .lock()
            .retain(|(u, s, _, _)| !(u == user && s == service));
        Ok(())
    }
}

const ASKING: &str = "https://asking.example.org/";

fn consent_engine(release: &[&str]) -> (Engine, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let registry = ServiceRegistry::new(vec![RegisteredService::new(
        "asking",
        r"https://asking\.example\.org/.*",
        release.iter().map(|s| (*s).to_owned()).collect(),
        None,
        LogoutMode::None,
    )
    .unwrap()
    .with_consent(Some(Duration::from_secs(60)))]);
    let engine = Engine::new(
        store,
        Arc::new(registry),
        Arc::new(StaticUserAuthenticator::new(vec![]).unwrap()),
        ThrottlePolicy::default(),
        TicketPolicy::default(),
        clock.clone(),
        Arc::new(RecordingCallback::default()),
    )
    .with_consents(Arc::new(Decisions {
        clock: clock.clone(),
        kept: Mutex::new(Vec::new()),
    }));
    (engine, clock)
}

fn carol() -> Arc<crate::Principal> {
    Arc::new(
        crate::Principal::new("carol")
            .with_attribute("mail", &["carol@example.org"])
            .with_attribute("cn", &["Carol"])
            .with_attribute("secret", &["x"]),
    )
}

#[tokio::test]
async fn a_consent_service_gets_no_ticket_before_the_user_accepted() {
    let (engine, clock) = consent_engine(&["mail", "cn"]);
    let ask = engine
        .consent_needed(ASKING, &carol())
        .await
        .unwrap()
        .expect("asked");
    // What is shown is what the registration releases, values included.
    assert_eq!(ask.attributes.keys().collect::<Vec<_>>(), ["cn", "mail"]);
    assert_eq!(ask.attributes["mail"], ["carol@example.org"]);
    assert_eq!(ask.service_key, "asking");

    let refused = engine
        .sign_in(sign_in(
            None,
            carol(),
            Some(ASKING),
            true,
            password(),
            false,
        ))
        .await;
    assert!(matches!(refused, Err(EngineError::ConsentRequired)));

    // Accepted on the page: the ticket for exactly that release.
    let mut accepted = sign_in(None, carol(), Some(ASKING), true, password(), false);
    accepted.consented = Some("another digest");
    assert!(matches!(
        engine.sign_in(accepted).await,
        Err(EngineError::ConsentRequired)
    ));
    engine.remember_consent(&ask).await.unwrap();
    let mut accepted = sign_in(None, carol(), Some(ASKING), true, password(), false);
    accepted.consented = Some(&ask.digest);
    let signed = engine.sign_in(accepted).await.unwrap();
    assert!(signed.ticket.is_some());

    // Remembered: SSO grants without asking, until the decision expires.
    engine
        .grant_service_ticket(&signed.session.id, ASKING, false)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(61));
    assert!(matches!(
        engine
            .grant_service_ticket(&signed.session.id, ASKING, false)
            .await,
        Err(EngineError::ConsentRequired)
    ));

    // Declined: forgotten.
    engine.remember_consent(&ask).await.unwrap();
    assert!(engine
        .consent_needed(ASKING, &carol())
        .await
        .unwrap()
        .is_none());
    engine.forget_consent(&ask).await.unwrap();
    assert!(engine
        .consent_needed(ASKING, &carol())
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_change_of_the_released_names_asks_again_a_change_of_values_does_not() {
    let (engine, _) = consent_engine(&["mail"]);
    let ask = engine
        .consent_needed(ASKING, &carol())
        .await
        .unwrap()
        .unwrap();
    engine.remember_consent(&ask).await.unwrap();
    let moved =
        Arc::new(crate::Principal::new("carol").with_attribute("mail", &["new@example.org"]));
    assert!(
        engine
            .consent_needed(ASKING, &moved)
            .await
            .unwrap()
            .is_none(),
        "a new value of a released attribute does not ask again"
    );
    let more = Arc::new(
        crate::Principal::new("carol")
            .with_attribute("mail", &["carol@example.org"])
            .with_attribute("cn", &["Carol"]),
    );
    let (wider, _) = consent_engine(&["mail", "cn"]);
    // The same decisions seen by a registration that releases more.
    let digest = crate::consent::digest(&more.released(&["mail".into(), "cn".into()]));
    assert_ne!(digest, ask.digest);
    assert!(wider.consent_needed(ASKING, &more).await.unwrap().is_some());
}
