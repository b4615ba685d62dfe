//! The IdP's rules on the memory store with a manual clock: NameIDs, what
//! a sign-in keeps for single logout, matching an SP's LogoutRequest, the
//! front-channel chain and the participant.

use crate::binding::{decode_redirect, QuerySignature};
use crate::records::{self, Issued, Pending};
use crate::request::Binding;
use crate::sp::tests::registration;
use crate::{
    nameid, IdentityProvider, IdpCredentials, LogoutStep, SamlLogout, SamlMessage, SamlSettings,
    ServiceProvider, BINDING_POST, BINDING_REDIRECT, BINDING_SOAP,
};
use async_trait::async_trait;
use castellan_core::ids::{new_ticket_id, session_tag};
use castellan_core::{
    DeliveryPolicy, EndedSession, Engine, LogoutNotification, LogoutParticipant, ManualClock,
    MemoryStore, Principal, ProxyCallback, ServiceRegistry, SignIn, SingleLogout,
    StaticUserAuthenticator, ThrottlePolicy, TicketPolicy, TicketStore,
};
use std::sync::Arc;
use std::time::Duration;

const IDP: &str = "https://idp.example/cas/idp";
const NOW: u64 = 1_764_084_646_000;

fn sp_metadata(name: &str, slo: &[(&str, &str)]) -> String {
    let slo: String = slo
        .iter()
        .map(|(binding, location)| {
            format!(r#"<md:SingleLogoutService Binding="{binding}" Location="{location}"/>"#)
        })
        .collect();
    format!(
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://{name}.example/sp">
  <md:SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">{slo}
    <md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://{name}.example/acs" index="0"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>"#
    )
}

fn sp(name: &str, format: &str, slo: &[(&str, &str)]) -> ServiceProvider {
    let mut r = registration();
    r.name = name.into();
    r.name_id_format = Some(format.into());
    ServiceProvider::from_metadata(&sp_metadata(name, slo), r).unwrap()
}

fn credentials(tag: &str) -> IdpCredentials {
    let dir = std::env::temp_dir().join(format!("castellan-saml-idp-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    IdpCredentials::load_or_generate(&dir, None, "idp").unwrap()
}

/// `req`: persistent, Redirect SLO (it asks for transient NameIDs);
/// `front`: emailAddress, Redirect SLO; `post`: transient, POST SLO;
/// `soap`: persistent, SOAP SLO.
fn identity_provider(tag: &str) -> IdentityProvider {
    let settings = SamlSettings {
        sps: vec![
            sp(
                "req",
                nameid::PERSISTENT,
                &[(BINDING_REDIRECT, "https://req.example/slo")],
            ),
            sp(
                "front",
                nameid::EMAIL,
                &[(BINDING_REDIRECT, "https://front.example/slo")],
            ),
            sp(
                "post",
                nameid::TRANSIENT,
                &[(BINDING_POST, "https://post.example/slo")],
            ),
            sp(
                "soap",
                nameid::PERSISTENT,
                &[(BINDING_SOAP, "http://127.0.0.1:9/soap")],
            ),
        ],
        entity_id: IDP.into(),
        signing_key: None,
        sign_metadata: false,
        clock_skew: Duration::from_secs(60),
        request_max_age: Duration::from_secs(300),
        assertion_ttl: Duration::from_secs(300),
        persistent_id_secret: Some("secret".into()),
    };
    IdentityProvider::with_credentials(
        settings,
        "https://idp.example/cas",
        credentials(tag),
        b"secret".to_vec(),
    )
    .unwrap()
}

struct NoProxy;

#[async_trait]
impl ProxyCallback for NoProxy {
    async fn deliver(&self, _: &str, _: &str, _: &str) -> bool {
        false
    }
}

struct Fixture {
    idp: Arc<IdentityProvider>,
    engine: Engine,
    store: Arc<MemoryStore>,
    participant: Arc<SamlLogout>,
}

fn alice() -> Principal {
    Principal::new("alice").with_attribute("mail", &["alice@example.org"])
}

fn fixture(tag: &str) -> Fixture {
    let clock = Arc::new(ManualClock::new(NOW));
    let store = Arc::new(MemoryStore::new(clock.clone()));
    let idp = Arc::new(identity_provider(tag));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let participant = Arc::new(SamlLogout::new(
        idp.clone(),
        store.clone(),
        clock.clone(),
        http,
    ));
    let engine = Engine::new(
        store.clone(),
        Arc::new(ServiceRegistry::new(idp.callback_services().unwrap())),
        Arc::new(StaticUserAuthenticator::new(vec![]).unwrap()),
        ThrottlePolicy::default(),
        TicketPolicy::default(),
        clock,
        Arc::new(NoProxy),
    )
    .with_single_logout(SingleLogout::new(
        vec![participant.clone()],
        DeliveryPolicy {
            concurrency: 1,
            retry_pauses: vec![],
        },
    ));
    Fixture {
        idp,
        engine,
        store,
        participant,
    }
}

/// The NameID element's text in a SAML message.
fn name_id_of(xml: &str) -> String {
    let start = xml.find("<saml:NameID").unwrap();
    let open_end = start + xml[start..].find('>').unwrap() + 1;
    let close = open_end + xml[open_end..].find("</saml:NameID>").unwrap();
    xml[open_end..close].to_owned()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

impl Fixture {
    /// Signs alice in to `sp` (a new session when `session` is None),
    /// asking for `format`; returns the session id and the NameID sent.
    async fn sign_in(
        &self,
        session: Option<&str>,
        sp: &str,
        format: Option<&str>,
    ) -> (String, String) {
        let request = new_ticket_id("SR");
        let pending = Pending {
            sp: sp.into(),
            request_id: Some(format!("_{sp}")),
            acs_url: format!("https://{sp}.example/acs"),
            relay_state: None,
            force_authn: false,
            is_passive: false,
            name_id_format: format.map(str::to_owned),
        };
        self.store
            .put_record(
                &records::pending_key(&request),
                &records::encode(&pending).unwrap(),
                Duration::from_secs(60),
            )
            .await
            .unwrap();
        let service = self.idp.callback_url(sp, &request);
        let (session_id, ticket) = match session {
            None => {
                let signed = self
                    .engine
                    .sign_in(SignIn {
                        previous: None,
                        principal: Arc::new(alice()),
                        long_term: false,
                        service: Some(&service),
                        from_new_login: true,
                        methods: castellan_core::AuthnMethods::of(
                            castellan_core::AuthnMethod::Password,
                        ),
                        step_up: false,
                        consented: None,
                    })
                    .await
                    .unwrap();
                (signed.session.id, signed.ticket.unwrap().id)
            }
            Some(s) => {
                let st = self
                    .engine
                    .grant_service_ticket(s, &service, false)
                    .await
                    .unwrap();
                (s.to_owned(), st.id)
            }
        };
        let answer = self
            .idp
            .callback(&self.engine, sp, &request, Some(&ticket), None)
            .await
            .unwrap();
        assert!(answer.success);
        let b64 = &answer.form.fields[0].1;
        let xml = String::from_utf8(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64).unwrap(),
        )
        .unwrap();
        (session_id, name_id_of(&xml))
    }

    fn logout_request(&self, sp: &str, name_id: &str, format: &str, index: &str) -> SamlMessage {
        let instant = crate::xml::instant(NOW);
        SamlMessage {
            xml: format!(
                r#"<samlp:LogoutRequest xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol" xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion" ID="_lr1" Version="2.0" IssueInstant="{instant}" Destination="https://idp.example/cas/idp/profile/SAML2/Redirect/SLO"><saml:Issuer>https://{sp}.example/sp</saml:Issuer><saml:NameID Format="{format}">{name_id}</saml:NameID><samlp:SessionIndex>{index}</samlp:SessionIndex></samlp:LogoutRequest>"#
            ),
            // The query signature is the binding's business, checked before.
            binding: Binding::Redirect(QuerySignature::Valid),
            relay_state: Some("rs".into()),
        }
    }

    async fn chain_response(&self, relay_state: &str) -> LogoutStep {
        self.idp
            .chain_response(self.store.as_ref(), NOW, Some(relay_state))
            .await
            .unwrap()
    }
}

/// The SAML message a Redirect step carries, and its RelayState.
fn redirected(step: &LogoutStep, to: &str, message: &str) -> (String, Option<String>) {
    let LogoutStep::Redirect(url) = step else {
        panic!("expected a redirect to {to}, got {step:?}");
    };
    assert!(url.starts_with(&format!("{to}?")), "{url}");
    let xml = decode_redirect(&query_param(url, message).unwrap()).unwrap();
    (xml, query_param(url, "RelayState"))
}

#[test]
fn name_ids_per_format() {
    let idp = identity_provider("formats");
    let (req, front) = (
        idp.sp_by_name("req").unwrap(),
        idp.sp_by_name("front").unwrap(),
    );
    let a = alice();
    let p1 = idp.issue_name_id(req, nameid::PERSISTENT, &a).unwrap();
    assert_eq!(
        p1,
        idp.issue_name_id(req, nameid::PERSISTENT, &a).unwrap(),
        "stable"
    );
    assert_ne!(
        p1.value,
        idp.issue_name_id(front, nameid::PERSISTENT, &a)
            .unwrap()
            .value,
        "unlinkable across SPs"
    );
    assert_ne!(p1.value, "alice");
    assert_eq!(p1.name_qualifier.as_deref(), Some(IDP));
    assert_eq!(
        p1.sp_name_qualifier.as_deref(),
        Some("https://req.example/sp")
    );
    let e = idp.issue_name_id(req, nameid::EMAIL, &a).unwrap();
    assert_eq!(
        (e.value.as_str(), e.name_qualifier),
        ("alice@example.org", None)
    );
    assert!(idp
        .issue_name_id(req, nameid::EMAIL, &Principal::new("bob"))
        .is_none());
    let t1 = idp.issue_name_id(req, nameid::TRANSIENT, &a).unwrap();
    let t2 = idp.issue_name_id(req, nameid::TRANSIENT, &a).unwrap();
    assert_ne!(t1.value, t2.value, "a transient NameID is new each time");
    assert_eq!(t1.format, nameid::TRANSIENT);
    assert!(t1.sp_name_qualifier.is_some());
    let u = idp.issue_name_id(req, nameid::UNSPECIFIED, &a).unwrap();
    assert_eq!((u.value.as_str(), u.sp_name_qualifier), ("alice", None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_keeps_what_the_sp_was_issued() {
    let f = fixture("issued");
    let (session, sent) = f.sign_in(None, "req", Some(nameid::TRANSIENT)).await;
    let live = f.engine.session(&session).await.unwrap().unwrap();
    let ticket = &live.services[0].ticket_id;
    let bytes = f
        .store
        .record(&records::issued_key(ticket))
        .await
        .unwrap()
        .unwrap();
    let issued: Issued = records::decode(&bytes).unwrap();
    assert_eq!(issued.sp, "req");
    assert_eq!(issued.name_id.value, sent);
    assert_eq!(
        issued.name_id.format,
        nameid::TRANSIENT,
        "the format asked for"
    );
    assert_eq!(issued.session_index, session_tag(&session).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sp_logs_out_by_the_name_id_it_was_issued_and_the_chain_visits_the_others() {
    let f = fixture("chain");
    // `req` is configured persistent and asks for transient NameIDs.
    let (session, req_id) = f.sign_in(None, "req", Some(nameid::TRANSIENT)).await;
    let (_, email) = f.sign_in(Some(&session), "front", None).await;
    let (_, transient) = f.sign_in(Some(&session), "post", None).await;
    assert_eq!(email, "alice@example.org");
    let index = session_tag(&session).unwrap().to_owned();
    let message = f.logout_request("req", &req_id, nameid::TRANSIENT, &index);
    let answer = f
        .idp
        .logout_request(&f.engine, Some(&session), message)
        .await
        .unwrap();
    assert!(answer.ended);
    assert!(
        f.engine.session(&session).await.unwrap().is_none(),
        "the session ended"
    );
    // First the SP with a Redirect endpoint, told the NameID it holds...
    let (xml, relay) = redirected(&answer.next, "https://front.example/slo", "SAMLRequest");
    assert_eq!(name_id_of(&xml), "alice@example.org");
    assert!(xml.contains(nameid::EMAIL) && xml.contains(&format!(">{index}<")));
    let chain = relay.unwrap();
    assert!(chain.starts_with("SL-"));
    // ...then the POST one, with its own transient NameID...
    let LogoutStep::Post(form) = f.chain_response(&chain).await else {
        panic!("expected a form to the POST SP");
    };
    assert_eq!(form.action, "https://post.example/slo");
    assert_eq!(form.fields[1], ("RelayState".to_owned(), chain.clone()));
    let xml = String::from_utf8(
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &form.fields[0].1,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(name_id_of(&xml), transient);
    assert!(xml.contains("SPNameQualifier=\"https://post.example/sp\""));
    // ...and the requester, never visited, gets its LogoutResponse last.
    let (xml, relay) = redirected(
        &f.chain_response(&chain).await,
        "https://req.example/slo",
        "SAMLResponse",
    );
    assert!(xml.contains("InResponseTo=\"_lr1\""));
    assert!(xml.contains(crate::status::SUCCESS));
    assert_eq!(relay.as_deref(), Some("rs"));
    // The chain is used up.
    assert_eq!(
        f.chain_response(&chain).await,
        LogoutStep::Done { destination: None }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_request_naming_another_subject_ends_nothing() {
    let f = fixture("refused");
    let (session, issued) = f.sign_in(None, "req", Some(nameid::TRANSIENT)).await;
    let index = session_tag(&session).unwrap().to_owned();
    for (name_id, idx) in [
        ("someone-else", index.as_str()),
        (issued.as_str(), "another"),
    ] {
        let message = f.logout_request("req", name_id, nameid::TRANSIENT, idx);
        let answer = f
            .idp
            .logout_request(&f.engine, Some(&session), message)
            .await
            .unwrap();
        assert!(!answer.ended);
        let (xml, _) = redirected(&answer.next, "https://req.example/slo", "SAMLResponse");
        assert!(xml.contains(crate::status::REQUESTER), "{xml}");
        assert!(f.engine.session(&session).await.unwrap().is_some());
    }
    // The persistent value it is configured for is not what it holds.
    let persistent = f
        .idp
        .issue_name_id(
            f.idp.sp_by_name("req").unwrap(),
            nameid::PERSISTENT,
            &alice(),
        )
        .unwrap();
    let message = f.logout_request("req", &persistent.value, nameid::PERSISTENT, &index);
    let answer = f
        .idp
        .logout_request(&f.engine, Some(&session), message)
        .await
        .unwrap();
    assert!(!answer.ended);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_started_elsewhere_visits_the_sps_then_goes_to_its_destination() {
    let f = fixture("elsewhere");
    let (session, req_id) = f.sign_in(None, "req", Some(nameid::TRANSIENT)).await;
    let out = f.engine.logout(&session, None).await.unwrap();
    assert_eq!(out.visits.len(), 1);
    let step = f
        .idp
        .front_channel_logout(
            f.store.as_ref(),
            NOW,
            &out.visits,
            Some("https://app/".into()),
        )
        .await
        .unwrap();
    let (xml, relay) = redirected(&step, "https://req.example/slo", "SAMLRequest");
    assert_eq!(name_id_of(&xml), req_id, "the transient NameID it holds");
    assert_eq!(
        f.chain_response(&relay.unwrap()).await,
        LogoutStep::Done {
            destination: Some("https://app/".into())
        }
    );
    // No SAML SP to visit: straight to the destination.
    assert_eq!(
        f.idp
            .front_channel_logout(f.store.as_ref(), NOW, &[], None)
            .await
            .unwrap(),
        LogoutStep::Done { destination: None }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_participant_owns_its_callbacks_and_tells_soap_sps_by_message_the_others_by_visit() {
    let f = fixture("participant");
    let p = &f.participant;
    assert_eq!(p.name(), "saml");
    let callback = f.idp.callback_url("soap", "SR-1");
    assert_eq!(p.party(&callback).as_deref(), Some("soap"));
    assert_eq!(p.party(&f.idp.callback_url("nobody", "SR-1")), None);
    assert_eq!(p.party("https://app.example/"), None);
    assert_eq!(
        p.party("https://idp.example/cas/oidc/callback?client_id=soap&req=R"),
        None
    );

    let (session, _) = f.sign_in(None, "soap", None).await;
    f.sign_in(Some(&session), "front", None).await;
    let live = f.engine.session(&session).await.unwrap().unwrap();
    let notes: Vec<LogoutNotification> = live
        .services
        .iter()
        .map(|r| LogoutNotification {
            service: r.service.clone(),
            ticket_id: r.ticket_id.clone(),
            principal_id: "alice".into(),
            mode: r.logout,
        })
        .collect();
    let ended = EndedSession {
        session_id: session.clone(),
        principal: Arc::new(alice()),
    };
    let messages = p.messages(&ended, &notes).await;
    assert_eq!(messages.len(), 1, "only the SOAP SP gets a message");
    assert_eq!(messages[0].party, "soap");
    assert_eq!(messages[0].endpoint, "http://127.0.0.1:9/soap");
    assert!(messages[0].payload.starts_with("<soap11:Envelope"));
    assert!(messages[0].payload.contains("<ds:Signature"));
    let visits = p.visits(&ended, &notes).await;
    assert_eq!(visits.len(), 1, "only the front-channel SP is visited");
    assert_eq!(
        (visits[0].participant.as_str(), visits[0].party.as_str()),
        ("saml", "front")
    );
    let steps = crate::slo::chain_steps(&visits);
    assert_eq!(
        steps[0].name_id.as_ref().unwrap().value,
        "alice@example.org"
    );
    // Nobody listens on port 9: worth another attempt.
    assert_eq!(p.send(&messages[0]).await, castellan_core::Attempt::Failed);
}
