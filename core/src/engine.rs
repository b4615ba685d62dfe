//! The engine API that every protocol module calls in-process.
//!
//! The CAS endpoints, the OIDC provider, the SAML IdP and delegation all go
//! through these few calls: open a session, grant a service ticket, validate
//! it into an [`Assertion`], grant a proxy ticket, log a session out.

use crate::audit::{validation_code, AuditEvent, AuditKind, AuditSink, Outcome};
use crate::authn::{Authenticator, Credentials, PasswordNotice};
use crate::client::InProcessClient;
use crate::clock::{Clock, Millis};
use crate::consent::{self, ConsentAsk, Consents, PendingConsent};
use crate::error::{AuthnError, EngineError};
use crate::ids::{is_well_formed, new_session_id, new_session_ticket_id, new_ticket_id, redact};
use crate::login_flow::LoginFlows;
use crate::logout::{Dispatched, EndedSession, FrontChannelVisit, Initiator, SingleLogout};
use crate::methods::{AuthnMethod, AuthnMethods, MfaPolicy};
use crate::pending::PendingFlowBudget;
use crate::principal::{Attributes, Principal};
use crate::second_step::{PendingSignIn, SecondSteps};
use crate::service::{LogoutMode, RegisteredService, ServiceRegistry};
use crate::store::TicketStore;
use crate::throttle::{Throttle, ThrottlePolicy};
use crate::ticket::{
    LoginFlow, ProxyGrantingTicket, ProxyTicket, ServiceRecord, ServiceTicket, Ticket,
    TicketGrantingTicket, TicketKind,
};
use async_trait::async_trait;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct TicketPolicy {
    pub service_ticket_ttl: Duration,
    pub proxy_ticket_ttl: Duration,
    /// Hard limit of an SSO session.
    pub session_ttl: Duration,
    /// Idle limit of an SSO session.
    pub session_idle_ttl: Duration,
    /// How long a rendered login form stays usable, and a protocol's
    /// pending request (OIDC, SAML, delegation) is kept.
    pub login_flow_ttl: Duration,
    /// Pending requests of anonymous clients one node keeps at most.
    pub max_pending_flows: u64,
}

impl Default for TicketPolicy {
    fn default() -> Self {
        Self {
            service_ticket_ttl: Duration::from_secs(10),
            proxy_ticket_ttl: Duration::from_secs(10),
            session_ttl: Duration::from_secs(8 * 3600),
            session_idle_ttl: Duration::from_secs(2 * 3600),
            login_flow_ttl: Duration::from_secs(30 * 60),
            max_pending_flows: 100_000,
        }
    }
}

/// Delivers a PGT to a proxy callback URL (CAS 3.0 §2.5.4). The engine knows
/// no HTTP: the CAS protocol module provides the real implementation.
#[async_trait]
pub trait ProxyCallback: Send + Sync + 'static {
    /// True only when the callback answered 200 to
    /// `GET pgt_url?pgtIou=…&pgtId=…` over verified TLS.
    async fn deliver(&self, pgt_url: &str, pgt_iou: &str, pgt_id: &str) -> bool;
}

/// What a validation request asks (the parameters of `/p3/serviceValidate`).
#[derive(Debug, Clone, Copy)]
pub struct ValidationRequest<'a> {
    pub ticket: &'a str,
    pub service: &'a str,
    pub renew: bool,
    pub pgt_url: Option<&'a str>,
    /// `/proxyValidate` accepts proxy tickets, `/serviceValidate` does not.
    pub allow_proxy_tickets: bool,
    /// Asked by an in-process module, not over the CAS endpoints: only
    /// then are tickets of internal services valid.
    pub in_process: bool,
}

/// A successful validation: who, for which service, and how they logged in.
#[derive(Debug, Clone)]
pub struct Assertion {
    pub principal: Arc<Principal>,
    /// Only the attributes the service's registration releases.
    pub attributes: Attributes,
    pub service: String,
    pub service_name: String,
    pub authenticated_at: Millis,
    pub from_new_login: bool,
    pub long_term: bool,
    /// Proxies traversed, most recent first; empty for a service ticket.
    pub proxies: Vec<String>,
    /// The PGTIOU when a PGT was delivered to the pgtUrl.
    pub pgt_iou: Option<String>,
    /// How the user proved who they are in the session (both factors).
    pub methods: AuthnMethods,
    /// The SSO session that granted the ticket: in-process modules bind
    /// what they issue to it (a CAS response never shows it).
    pub session_id: String,
}

/// A service to tell that a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutNotification {
    pub service: String,
    pub ticket_id: String,
    pub principal_id: String,
    pub mode: LogoutMode,
}

/// The users' second factors, as far as the engine needs to know them:
/// whether one is enrolled (`mfa = "optional"` asks only then).
#[async_trait]
pub trait SecondFactors: Send + Sync + 'static {
    async fn enrolled(&self, user: &str) -> Result<bool, AuthnError>;
}

pub struct Engine {
    store: Arc<dyn TicketStore>,
    registry: Arc<ServiceRegistry>,
    authenticator: Arc<dyn Authenticator>,
    throttle: Throttle,
    policy: TicketPolicy,
    clock: Arc<dyn Clock>,
    proxy_callback: Arc<dyn ProxyCallback>,
    login_flows: LoginFlows,
    pending: Arc<PendingFlowBudget>,
    single_logout: SingleLogout,
    clients: Vec<Arc<dyn InProcessClient>>,
    second_factors: Option<Arc<dyn SecondFactors>>,
    second_steps: SecondSteps,
    audit: Option<Arc<dyn AuditSink>>,
    consents: Option<Arc<dyn Consents>>,
}

/// A login to turn into a session (and a ticket), the same way whatever
/// proved who the user is: the password form, an upstream, (next) MFA.
#[derive(Debug, Clone)]
pub struct SignIn<'a> {
    /// The session the browser holds already (its `CASTGC`), if any.
    pub previous: Option<&'a str>,
    pub principal: Arc<Principal>,
    pub long_term: bool,
    /// The service to grant a ticket for, if the login was for one.
    pub service: Option<&'a str>,
    /// Whether the user presented credentials for this very login.
    pub from_new_login: bool,
    /// How the user proved who they are in this login.
    pub methods: AuthnMethods,
    /// A second factor added to the `previous` session, whose first factor
    /// (and authentication time, and hard limit) the new session keeps.
    pub step_up: bool,
    /// The digest of the release the user just accepted on the consent
    /// page (see [`crate::consent`]), if any.
    pub consented: Option<&'a str>,
}

/// A new session and, when asked for a service, its ticket.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session: TicketGrantingTicket,
    pub ticket: Option<ServiceTicket>,
    /// Parties of a session the login ended (another user's) to visit in
    /// the browser; usually none.
    pub visits: Vec<FrontChannelVisit>,
}

/// What a logout did.
#[derive(Debug, Default)]
pub struct LoggedOut {
    /// The user whose session ended, when one did.
    pub user: Option<String>,
    /// Parties to tell through the browser (front-channel logout).
    pub visits: Vec<FrontChannelVisit>,
    /// The background deliveries (tests wait for them).
    pub deliveries: Option<tokio::task::JoinHandle<()>>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn TicketStore>,
        registry: Arc<ServiceRegistry>,
        authenticator: Arc<dyn Authenticator>,
        throttle: ThrottlePolicy,
        policy: TicketPolicy,
        clock: Arc<dyn Clock>,
        proxy_callback: Arc<dyn ProxyCallback>,
    ) -> Self {
        let store_for_steps = store.clone();
        Self {
            login_flows: LoginFlows::new(store.clone(), clock.clone(), policy.login_flow_ttl),
            pending: Arc::new(PendingFlowBudget::new(
                policy.max_pending_flows,
                policy.login_flow_ttl,
                clock.clone(),
            )),
            store,
            registry,
            authenticator,
            throttle: Throttle::new(throttle),
            policy,
            clock,
            proxy_callback,
            single_logout: SingleLogout::default(),
            clients: Vec::new(),
            second_factors: None,
            second_steps: SecondSteps::new(store_for_steps),
            audit: None,
            consents: None,
        }
    }

    /// Where the engine tells what it decided (nowhere by default).
    pub fn with_audit(mut self, sink: Arc<dyn AuditSink>) -> Self {
        self.single_logout = self.single_logout.with_audit(Some(sink.clone()));
        self.audit = Some(sink);
        self
    }

    /// Tells the audit sink, when there is one. Never blocks.
    pub fn record(&self, event: AuditEvent) {
        if let Some(sink) = &self.audit {
            sink.record(event);
        }
    }

    /// The protocol a service URL's tickets serve: an in-process client's
    /// (`oidc`, `saml`) for its callbacks, else `cas`.
    pub fn protocol_of(&self, service: &str) -> &'static str {
        self.clients
            .iter()
            .find(|c| c.callbacks().owns(service))
            .map_or("cas", |c| c.protocol())
    }

    /// The user of a live session, for an audit line (read only when
    /// someone listens).
    async fn user_of(&self, session_id: &str) -> Option<String> {
        self.audit.as_ref()?;
        match self.store.session_head(session_id).await {
            Ok(Some(s)) => Some(s.principal.id.clone()),
            _ => None,
        }
    }

    /// Where the engine learns whether a user has a second factor.
    pub fn with_second_factors(mut self, factors: Arc<dyn SecondFactors>) -> Self {
        self.second_factors = Some(factors);
        self
    }

    /// An engine built from a reloaded configuration keeps counting the
    /// pending flows its predecessor admitted, when their limits are the
    /// same: a reload must not reopen the ceiling.
    pub fn carrying_over(mut self, previous: &Engine) -> Self {
        if self.policy.max_pending_flows == previous.policy.max_pending_flows
            && self.policy.login_flow_ttl == previous.policy.login_flow_ttl
        {
            self.pending = previous.pending.clone();
        }
        self
    }

    /// Where users' consent decisions are kept. Without it, a service
    /// with `consent` asks at every login.
    pub fn with_consents(mut self, consents: Arc<dyn Consents>) -> Self {
        self.consents = Some(consents);
        self
    }

    /// Who is told when a session ends (no one by default).
    pub fn with_single_logout(mut self, single_logout: SingleLogout) -> Self {
        self.single_logout = single_logout.with_audit(self.audit.clone());
        self
    }

    /// The protocol modules that sign users in through the core.
    pub fn with_clients(mut self, clients: Vec<Arc<dyn InProcessClient>>) -> Self {
        self.clients = clients;
        self
    }

    /// How the login page names a service: the display name it was
    /// registered with, else the party of an in-process client's callback
    /// URL (an OIDC client, a SAML SP); `None` for other services.
    pub fn display_name(&self, service: &str) -> Option<String> {
        if let Some(name) = self
            .registry
            .find(service)
            .and_then(|s| s.display.name.clone())
        {
            return Some(name);
        }
        self.clients.iter().find_map(|c| {
            let (party, _) = c.callbacks().parse(service)?;
            c.display_name(&party)
        })
    }

    /// Validates, at an in-process client's callback, the ticket that the
    /// login sent there (`renew` when the client forced a fresh login).
    pub async fn validate_callback(
        &self,
        ticket: &str,
        service: &str,
        renew: bool,
    ) -> Result<Assertion, EngineError> {
        self.validate(ValidationRequest {
            ticket,
            service,
            renew,
            pgt_url: None,
            allow_proxy_tickets: false,
            in_process: true,
        })
        .await
    }

    pub fn store(&self) -> &Arc<dyn TicketStore> {
        &self.store
    }

    pub fn registry(&self) -> &ServiceRegistry {
        &self.registry
    }

    pub fn policy(&self) -> &TicketPolicy {
        &self.policy
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// The registration of a service URL, if any.
    pub fn service(&self, service_url: &str) -> Option<&RegisteredService> {
        self.registry.find(service_url)
    }

    /// Checks credentials, with throttling per username and client address.
    pub async fn authenticate(
        &self,
        credentials: &Credentials,
        client_ip: Option<IpAddr>,
    ) -> Result<Arc<Principal>, EngineError> {
        Ok(self.authenticate_noting(credentials, client_ip).await?.0)
    }

    /// As [`Engine::authenticate`], with the source's warning about the
    /// password, for the user to hear.
    pub async fn authenticate_noting(
        &self,
        credentials: &Credentials,
        client_ip: Option<IpAddr>,
    ) -> Result<(Arc<Principal>, Option<PasswordNotice>), EngineError> {
        let store = self.store.as_ref();
        let login =
            |outcome| AuditEvent::new(AuditKind::Login, outcome).user(&credentials.username);
        let reservation = match self
            .throttle
            .reserve(store, &credentials.username, client_ip)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, EngineError::Authentication(AuthnError::Throttled)) {
                    self.record(login(Outcome::Throttled));
                }
                return Err(e);
            }
        };
        let decision = self.authenticator.authenticate_deciding(credentials).await;
        let login = |outcome| match &decision.source {
            Some(source) => login(outcome).source(source.as_ref()),
            None => login(outcome),
        };
        match decision.result {
            Ok(accepted) => {
                self.throttle.succeeded(store, reservation).await?;
                self.record(login(Outcome::Ok));
                Ok(accepted)
            }
            // The reservation stays counted: it is the failure. An unknown
            // user is a wrong password to the outside.
            Err(AuthnError::InvalidCredentials) => {
                self.record(login(Outcome::Failed));
                Err(AuthnError::InvalidCredentials.into())
            }
            Err(AuthnError::UnknownUser) => {
                // Nobody knew the username: for the auditor, not the user.
                self.record(login(Outcome::Failed).detail("unknown_user"));
                Err(AuthnError::InvalidCredentials.into())
            }
            // A locked, expired or disabled account counts as a failure too,
            // even with the right password: it did not sign in, and a right
            // password must not wipe the count of the wrong ones before it.
            Err(AuthnError::Refused(refusal)) => {
                self.record(login(Outcome::Refused).detail(refusal.problem.to_string()));
                Err(AuthnError::Refused(refusal).into())
            }
            Err(e) => {
                self.record(login(Outcome::Unavailable));
                self.throttle.undecided(store, reservation).await?;
                Err(e.into())
            }
        }
    }

    /// Opens an SSO session for an authenticated principal.
    pub async fn open_session(
        &self,
        principal: Arc<Principal>,
        long_term: bool,
    ) -> Result<TicketGrantingTicket, EngineError> {
        let now = self.clock.now();
        let session = TicketGrantingTicket {
            id: new_session_id(TicketKind::TicketGranting.prefix()),
            principal,
            authenticated_at: now,
            expires_at: now.saturating_add(self.policy.session_ttl.as_millis() as u64),
            long_term,
            services: Vec::new(),
            methods: AuthnMethods::of(crate::AuthnMethod::Password),
        };
        self.store_session(&session).await?;
        Ok(session)
    }

    /// Stores a new session and notes it among its user's.
    async fn store_session(&self, session: &TicketGrantingTicket) -> Result<(), EngineError> {
        self.store
            .create_session(session, self.policy.session_idle_ttl)
            .await?;
        let user = &session.principal.id;
        // The index serves the support desk only: a login does not fail
        // for it.
        if let Err(e) = self
            .store
            .index_session(user, &session.id, self.policy.session_ttl)
            .await
        {
            tracing::warn!(user = %user, error = %e, "the session could not be indexed under its user");
        }
        tracing::info!(user = %user, session = %redact(&session.id), "SSO session opened");
        Ok(())
    }

    /// Opens a session for a new login in a browser that may hold one
    /// already (`previous`, from its cookie). The previous session ends.
    /// When the same user logged in again (renew, `prompt=login`,
    /// `max_age`), the new session takes over the previous one's
    /// single-logout records and nobody is logged out; when another user
    /// logs in, the previous session's services are told.
    async fn replace_session(
        &self,
        previous: Option<&str>,
        principal: Arc<Principal>,
        long_term: bool,
        methods: AuthnMethods,
    ) -> Result<(TicketGrantingTicket, Dispatched), EngineError> {
        let old = match previous {
            Some(id) if is_well_formed(id, TicketKind::TicketGranting.prefix()) => {
                self.store.remove_session(id).await?
            }
            _ => None,
        };
        let now = self.clock.now();
        let authenticated_at = now;
        let expires_at = now.saturating_add(self.policy.session_ttl.as_millis() as u64);
        let (carried, ended) = match old {
            Some(old) if old.principal.id == principal.id => (old.services, None),
            Some(old) => (Vec::new(), Some(old)),
            None => (Vec::new(), None),
        };
        let session = TicketGrantingTicket {
            id: new_session_id(TicketKind::TicketGranting.prefix()),
            principal,
            authenticated_at,
            expires_at,
            long_term,
            services: carried,
            methods,
        };
        self.store_session(&session).await?;
        let dispatched = match ended {
            Some(old) => {
                tracing::info!(user = %old.principal.id, session = %redact(&old.id), "SSO session ended by another user's login");
                self.record(
                    AuditEvent::new(AuditKind::Logout, Outcome::Ok)
                        .user(&old.principal.id)
                        .detail("another_user_signed_in"),
                );
                self.tell_ended(old, None).await
            }
            None => Dispatched::default(),
        };
        Ok((session, dispatched))
    }

    /// The sign-in sequence: the browser's previous session is replaced
    /// (see [`Engine::replace_session`]) and, when the login was for a
    /// service, a ticket is granted for it.
    pub async fn sign_in(&self, request: SignIn<'_>) -> Result<SignedIn, EngineError> {
        if let Some(service) = request.service {
            let registered = self
                .registry
                .find(service)
                .ok_or(EngineError::UnauthorizedService)?;
            // Checked before the session changes: a login that cannot get
            // its ticket leaves the browser's session as it was. (A step-up
            // adds the second factor itself.)
            if !request.step_up
                && self
                    .needs_second_factor(registered, &request.principal.id, request.methods, false)
                    .await?
            {
                return Err(EngineError::SecondFactorRequired);
            }
            self.check_consent(service, &request.principal, request.consented)
                .await?;
        }
        let (session, dispatched) = if request.step_up {
            (
                self.step_up(request.previous, &request.principal, request.methods)
                    .await?,
                Dispatched::default(),
            )
        } else {
            self.replace_session(
                request.previous,
                request.principal,
                request.long_term,
                request.methods,
            )
            .await?
        };
        let ticket = match request.service {
            Some(service) => Some(
                self.grant_service_ticket_to(
                    &session.id,
                    Some(&session.principal.id),
                    service,
                    request.from_new_login,
                    request.consented,
                )
                .await?,
            ),
            None => None,
        };
        Ok(SignedIn {
            session,
            ticket,
            visits: dispatched.visits,
        })
    }

    /// Adds a second factor to the user's live session, in place: its id,
    /// first factor, authentication time, limits and single-logout list
    /// stay, so the protocols' tokens bound to it (an OIDC `sid`, a SAML
    /// `SessionIndex`) stay valid. A session that ended meanwhile, or is
    /// another user's, is not stepped up.
    async fn step_up(
        &self,
        session_id: Option<&str>,
        principal: &Principal,
        methods: AuthnMethods,
    ) -> Result<TicketGrantingTicket, EngineError> {
        let session_id = session_id
            .filter(|id| is_well_formed(id, TicketKind::TicketGranting.prefix()))
            .ok_or(EngineError::SessionNotFound)?;
        let mut session = self
            .store
            .session_head(session_id)
            .await?
            .filter(|s| s.principal.id == principal.id)
            .ok_or(EngineError::SessionNotFound)?;
        session.methods = session.methods.union(methods);
        if !self.store.update_session_methods(&session).await? {
            return Err(EngineError::SessionNotFound);
        }
        tracing::info!(user = %session.principal.id, session = %redact(&session.id), "SSO session stepped up");
        Ok(session)
    }

    /// Hands an ended session's services to their single-logout owners.
    async fn tell_ended(
        &self,
        session: TicketGrantingTicket,
        initiator: Option<&Initiator>,
    ) -> Dispatched {
        let notifications = session
            .services
            .into_iter()
            .map(|r| LogoutNotification {
                service: r.service,
                ticket_id: r.ticket_id,
                principal_id: session.principal.id.clone(),
                mode: r.logout,
            })
            .collect();
        let ended = EndedSession {
            session_id: session.id,
            principal: session.principal,
        };
        self.single_logout
            .dispatch(ended, notifications, initiator)
            .await
    }

    /// A live session by the id in the `CASTGC` cookie; using it keeps it alive.
    pub async fn session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, EngineError> {
        if !is_well_formed(id, TicketKind::TicketGranting.prefix()) {
            return Ok(None);
        }
        Ok(self
            .store
            .touch_session(id, self.policy.session_idle_ttl)
            .await?)
    }

    /// Whether a session is still live, without extending it (an OIDC
    /// refresh must not keep an idle browser session alive).
    pub async fn session_is_live(&self, id: &str) -> Result<bool, EngineError> {
        if !is_well_formed(id, TicketKind::TicketGranting.prefix()) {
            return Ok(false);
        }
        Ok(self.store.session_head(id).await?.is_some())
    }

    /// Grants a one-time ticket for `service` from a session; using the
    /// session keeps it alive.
    pub async fn grant_service_ticket(
        &self,
        session_id: &str,
        service: &str,
        from_new_login: bool,
    ) -> Result<ServiceTicket, EngineError> {
        self.grant_service_ticket_to(session_id, None, service, from_new_login, None)
            .await
    }

    /// As [`Engine::grant_service_ticket`], right after the user accepted
    /// the release whose digest is `consented` on the consent page.
    pub async fn grant_service_ticket_consented(
        &self,
        session_id: &str,
        service: &str,
        from_new_login: bool,
        consented: Option<&str>,
    ) -> Result<ServiceTicket, EngineError> {
        self.grant_service_ticket_to(session_id, None, service, from_new_login, consented)
            .await
    }

    /// The grant, for a session whose user the caller may know (the audit
    /// line names them without a store read).
    async fn grant_service_ticket_to(
        &self,
        session_id: &str,
        user: Option<&str>,
        service: &str,
        from_new_login: bool,
        consented: Option<&str>,
    ) -> Result<ServiceTicket, EngineError> {
        let registered = self
            .registry
            .find(service)
            .ok_or(EngineError::UnauthorizedService)?;
        self.check_second_factor_of(registered, session_id, EngineError::SessionNotFound)
            .await?;
        if registered.consent.is_some() {
            let Some(session) = self.store.session_head(session_id).await? else {
                return Err(EngineError::SessionNotFound);
            };
            self.check_consent(service, &session.principal, consented)
                .await?;
        }
        let id = new_session_ticket_id(TicketKind::Service.prefix(), session_id)
            .ok_or(EngineError::SessionNotFound)?;
        let ticket = ServiceTicket {
            id,
            session_id: session_id.to_owned(),
            service: service.to_owned(),
            from_new_login,
        };
        let record = ServiceRecord {
            ticket_id: ticket.id.clone(),
            service: service.to_owned(),
            logout: registered.logout,
        };
        let granted = self
            .store
            .grant_ticket(
                session_id,
                self.policy.session_idle_ttl,
                Ticket::Service(ticket.clone()),
                self.policy.service_ticket_ttl,
                Some(record),
            )
            .await?;
        if !granted {
            return Err(EngineError::SessionNotFound);
        }
        if self.audit.is_some() {
            let user = match user {
                Some(u) => Some(u.to_owned()),
                None => self.user_of(session_id).await,
            };
            let mut event = AuditEvent::new(AuditKind::TicketGranted, Outcome::Ok)
                .service(&registered.name)
                .protocol(self.protocol_of(service))
                .detail("service_ticket");
            event.user = user;
            self.record(event);
        }
        Ok(ticket)
    }

    /// Validates a service or proxy ticket (CAS 3.0 §2.5, §2.6). The ticket
    /// is consumed by the attempt whatever its outcome (§2.5.4: one try).
    pub async fn validate(&self, request: ValidationRequest<'_>) -> Result<Assertion, EngineError> {
        let outcome = self.validate_once(request).await;
        if self.audit.is_some() {
            let event = match &outcome {
                Ok(a) => AuditEvent::new(AuditKind::TicketValidated, Outcome::Ok)
                    .user(&a.principal.id)
                    .service(&a.service_name),
                Err(e) => {
                    let event = AuditEvent::new(AuditKind::TicketValidated, Outcome::Failed)
                        .detail(validation_code(e));
                    match self.registry.find(request.service) {
                        Some(r) => event.service(&r.name),
                        None => event,
                    }
                }
            };
            let kind = if request.ticket.starts_with("PT-") {
                "proxy_ticket"
            } else {
                "service_ticket"
            };
            let mut event = event.protocol(self.protocol_of(request.service));
            if outcome.is_ok() {
                event = event.detail(kind);
            }
            self.record(event);
        }
        outcome
    }

    async fn validate_once(
        &self,
        request: ValidationRequest<'_>,
    ) -> Result<Assertion, EngineError> {
        // Not a service or proxy ticket at all: the request breaks the
        // specification. Shaped like one but not one of ours: not recognized.
        if !request.ticket.starts_with("ST-") && !request.ticket.starts_with("PT-") {
            return Err(EngineError::MalformedTicket);
        }
        if !is_well_formed(request.ticket, TicketKind::Service.prefix())
            && !is_well_formed(request.ticket, TicketKind::Proxy.prefix())
        {
            return Err(EngineError::TicketNotFound);
        }
        let Some((ticket, session)) = self.store.redeem_ticket(request.ticket).await? else {
            return Err(EngineError::TicketNotFound);
        };
        let (service, from_new_login, proxies) = match ticket {
            Ticket::Service(st) => (st.service, st.from_new_login, vec![]),
            Ticket::Proxy(pt) => {
                if !request.allow_proxy_tickets {
                    return Err(EngineError::ProxyTicketNotAccepted);
                }
                (pt.service, false, pt.proxies)
            }
            _ => return Err(EngineError::TicketNotFound),
        };
        if service != request.service {
            return Err(EngineError::ServiceMismatch);
        }
        if request.renew && !from_new_login {
            return Err(EngineError::RenewRequired);
        }
        // A ticket is only as good as the session that granted it.
        let session = session.ok_or(EngineError::TicketNotFound)?;
        let registered = self
            .registry
            .find(&service)
            .filter(|r| !r.internal || request.in_process)
            .ok_or(EngineError::UnauthorizedService)?;

        // Defence in depth: a ticket of a service that requires a second
        // factor never vouches for a session without one.
        if registered.mfa == Some(MfaPolicy::Required) && !session.methods.has_second_factor() {
            tracing::warn!(service = %registered.name, "ticket of a session without a second factor refused");
            return Err(EngineError::TicketNotFound);
        }

        let pgt_iou = match request.pgt_url {
            Some(pgt_url) => {
                self.grant_proxy_granting_ticket(registered, &session, pgt_url, &proxies)
                    .await?
            }
            None => None,
        };

        Ok(Assertion {
            attributes: session.principal.released(&registered.release),
            principal: session.principal,
            service,
            service_name: registered.name.clone(),
            authenticated_at: session.authenticated_at,
            from_new_login,
            long_term: session.long_term,
            proxies,
            pgt_iou,
            methods: session.methods,
            session_id: session.id,
        })
    }

    /// CAS 3.0 §2.5.4: the callback must be https, allowed for the service,
    /// trusted and answer 200; otherwise no PGT is issued and "service ticket
    /// validation will fail" with INVALID_PROXY_CALLBACK (as Apereo CAS does).
    async fn grant_proxy_granting_ticket(
        &self,
        registered: &RegisteredService,
        session: &TicketGrantingTicket,
        pgt_url: &str,
        earlier_proxies: &[String],
    ) -> Result<Option<String>, EngineError> {
        if !pgt_url.starts_with("https://") {
            return Err(EngineError::InvalidProxyCallback("pgtUrl is not https"));
        }
        if !registered.allows_proxy_callback(pgt_url) {
            return Err(EngineError::InvalidProxyCallback(
                "pgtUrl is not an allowed proxy callback of the service",
            ));
        }
        let pgt_id = new_session_ticket_id(TicketKind::ProxyGranting.prefix(), &session.id)
            .ok_or(EngineError::SessionNotFound)?;
        let pgt_iou = new_ticket_id(TicketKind::ProxyGrantingIou.prefix());
        if !self
            .proxy_callback
            .deliver(pgt_url, &pgt_iou, &pgt_id)
            .await
        {
            tracing::warn!(service = %registered.name, "proxy callback failed: no PGT granted");
            return Err(EngineError::InvalidProxyCallback(
                "the proxy callback could not be authenticated or did not answer 200",
            ));
        }
        let mut proxies = Vec::with_capacity(earlier_proxies.len() + 1);
        proxies.push(pgt_url.to_owned());
        proxies.extend_from_slice(earlier_proxies);
        // A PGT lives as long as its session can.
        let remaining = session.expires_at.saturating_sub(self.clock.now());
        let granted = self
            .store
            .grant_ticket(
                &session.id,
                self.policy.session_idle_ttl,
                Ticket::ProxyGranting(ProxyGrantingTicket {
                    id: pgt_id,
                    session_id: session.id.clone(),
                    proxies,
                }),
                Duration::from_millis(remaining),
                None,
            )
            .await?;
        Ok(granted.then_some(pgt_iou))
    }

    /// Grants a proxy ticket for `target_service` from a PGT (CAS 3.0 §2.7).
    pub async fn grant_proxy_ticket(
        &self,
        pgt_id: &str,
        target_service: &str,
    ) -> Result<ProxyTicket, EngineError> {
        if !is_well_formed(pgt_id, TicketKind::ProxyGranting.prefix()) {
            return Err(EngineError::TicketNotFound);
        }
        let Some(Ticket::ProxyGranting(pgt)) = self.store.ticket(pgt_id).await? else {
            return Err(EngineError::TicketNotFound);
        };
        let registered = self
            .registry
            .find(target_service)
            .filter(|r| !r.internal)
            .ok_or(EngineError::UnauthorizedProxy)?;
        self.check_second_factor_of(registered, &pgt.session_id, EngineError::TicketNotFound)
            .await?;
        if registered.consent.is_some() {
            // A proxy cannot show the user the consent page: only a live
            // decision lets it through.
            let Some(session) = self.store.session_head(&pgt.session_id).await? else {
                return Err(EngineError::TicketNotFound);
            };
            self.check_consent(target_service, &session.principal, None)
                .await?;
        }
        let id = new_session_ticket_id(TicketKind::Proxy.prefix(), &pgt.session_id)
            .ok_or(EngineError::TicketNotFound)?;
        let ticket = ProxyTicket {
            id,
            session_id: pgt.session_id.clone(),
            service: target_service.to_owned(),
            proxies: pgt.proxies,
        };
        let record = ServiceRecord {
            ticket_id: ticket.id.clone(),
            service: target_service.to_owned(),
            logout: registered.logout,
        };
        let granted = self
            .store
            .grant_ticket(
                &pgt.session_id,
                self.policy.session_idle_ttl,
                Ticket::Proxy(ticket.clone()),
                self.policy.proxy_ticket_ttl,
                Some(record),
            )
            .await?;
        if !granted {
            return Err(EngineError::TicketNotFound);
        }
        if self.audit.is_some() {
            let mut event = AuditEvent::new(AuditKind::TicketGranted, Outcome::Ok)
                .service(&registered.name)
                .protocol("cas")
                .detail("proxy_ticket");
            event.user = self.user_of(&pgt.session_id).await;
            self.record(event);
        }
        Ok(ticket)
    }

    /// A pending request was completed (its record taken): its place in the
    /// ceiling is free again.
    pub fn release_pending_flow(&self) {
        self.pending.release();
    }

    /// Admits one pending request of a not yet signed-in client (kept for
    /// at most `login_flow_ttl`); [`EngineError::Busy`] past the ceiling or
    /// past the client address's share of it.
    pub fn admit_pending_flow(&self, client: Option<IpAddr>) -> Result<(), EngineError> {
        if self.pending.admit(client) {
            Ok(())
        } else {
            tracing::warn!(
                ceiling = self.policy.max_pending_flows,
                client = ?client,
                "pending sign-in requests at their ceiling: refused"
            );
            Err(EngineError::Busy)
        }
    }

    /// Starts a login form: its one-time `execution` token, bound to
    /// `service` and to the browser's pre-session id `browser`. Stores
    /// nothing (see [`LoginFlows`]).
    pub async fn start_login_flow(
        &self,
        service: Option<&str>,
        browser: &str,
    ) -> Result<LoginFlow, EngineError> {
        Ok(LoginFlow {
            id: self.login_flows.issue(service, browser).await?,
            service: service.map(str::to_owned),
        })
    }

    /// Takes a login form's token back, once: `false` when it was not
    /// rendered for this service in this browser, expired or already used.
    pub async fn take_login_flow(
        &self,
        id: &str,
        service: Option<&str>,
        browser: &str,
    ) -> Result<bool, EngineError> {
        Ok(self.login_flows.redeem(id, service, browser).await?)
    }

    /// Before a grant for a service with an `mfa` policy: the session must
    /// have what it asks (`gone` when the session is). A session's methods
    /// never change under its id (a step-up makes a new one): what is read
    /// here holds at the grant.
    async fn check_second_factor_of(
        &self,
        registered: &RegisteredService,
        session_id: &str,
        gone: EngineError,
    ) -> Result<(), EngineError> {
        if registered.mfa.is_none() {
            return Ok(());
        }
        let Some(session) = self.store.session_head(session_id).await? else {
            return Err(gone);
        };
        if self
            .needs_second_factor(registered, &session.principal.id, session.methods, false)
            .await?
        {
            return Err(EngineError::SecondFactorRequired);
        }
        Ok(())
    }

    /// Whether a login for `registered` by `user`, who proved `methods`,
    /// must still give a second factor: always for `mfa = "required"` or
    /// when the requesting protocol `asked` for one, for `"optional"` when
    /// the user has one enrolled.
    pub async fn needs_second_factor(
        &self,
        registered: &RegisteredService,
        user: &str,
        methods: AuthnMethods,
        asked: bool,
    ) -> Result<bool, EngineError> {
        if methods.has_second_factor() {
            return Ok(false);
        }
        match (registered.mfa, asked) {
            (Some(MfaPolicy::Required), _) | (_, true) => Ok(true),
            (Some(MfaPolicy::Optional), false) => self.is_enrolled(user).await,
            (None, false) => Ok(false),
        }
    }

    /// What a ticket for `service` would release to it for `principal`,
    /// and whether its request asks consent again: the registration's
    /// release, narrowed by the in-process client that owns the URL.
    async fn release_to(
        &self,
        registered: &RegisteredService,
        service: &str,
        principal: &Principal,
    ) -> Result<crate::client::Release, EngineError> {
        let allowed = principal.released(&registered.release);
        for client in &self.clients {
            if let Some((party, request)) = client.callbacks().parse(service) {
                return Ok(client
                    .release(self.store.as_ref(), &party, request, &principal.id, allowed)
                    .await?);
            }
        }
        Ok(crate::client::Release {
            attributes: allowed,
            ask_again: false,
        })
    }

    /// What the user must accept before a ticket for `service`, or `None`
    /// when the service asks no consent or the user's decision for what it
    /// would receive lives.
    pub async fn consent_needed(
        &self,
        service: &str,
        principal: &Principal,
    ) -> Result<Option<ConsentAsk>, EngineError> {
        let Some(registered) = self.registry.find(service) else {
            return Err(EngineError::UnauthorizedService);
        };
        let Some(ttl) = registered.consent else {
            return Ok(None);
        };
        let release = self.release_to(registered, service, principal).await?;
        let digest = consent::digest(&release.attributes);
        let given = match (&self.consents, release.ask_again) {
            (Some(consents), false) => {
                consents
                    .given(&principal.id, &registered.name, &digest)
                    .await?
            }
            _ => false,
        };
        Ok((!given).then(|| ConsentAsk {
            user: principal.id.clone(),
            service_key: registered.name.clone(),
            attributes: release.attributes,
            digest,
            ttl,
        }))
    }

    /// Before a grant for `service`: its consent, when it asks one, must be
    /// live, or have just been given for this very release (`consented`).
    async fn check_consent(
        &self,
        service: &str,
        principal: &Principal,
        consented: Option<&str>,
    ) -> Result<(), EngineError> {
        match self.consent_needed(service, principal).await? {
            None => Ok(()),
            Some(ask) if consented == Some(ask.digest.as_str()) => Ok(()),
            Some(_) => Err(EngineError::ConsentRequired),
        }
    }

    /// Records the user's acceptance of `ask`.
    pub async fn remember_consent(&self, ask: &ConsentAsk) -> Result<(), EngineError> {
        if let Some(consents) = &self.consents {
            consents
                .remember(&ask.user, &ask.service_key, &ask.digest, ask.ttl)
                .await?;
        }
        self.record_consent(ask, Outcome::Ok);
        Ok(())
    }

    fn record_consent(&self, ask: &ConsentAsk, outcome: Outcome) {
        if self.audit.is_some() {
            let names: Vec<&str> = ask.attributes.keys().map(String::as_str).collect();
            self.record(
                AuditEvent::new(AuditKind::Consent, outcome)
                    .user(&ask.user)
                    .service(&ask.service_key)
                    .detail(names.join(" ")),
            );
        }
    }

    /// Drops the user's decision for the service of `ask` (a decline).
    pub async fn forget_consent(&self, ask: &ConsentAsk) -> Result<(), EngineError> {
        if let Some(consents) = &self.consents {
            consents.forget(&ask.user, &ask.service_key).await?;
        }
        self.record_consent(ask, Outcome::Refused);
        Ok(())
    }

    /// Keeps a sign-in until its user decides on the consent page; the id
    /// to decide with.
    pub async fn defer_consent(&self, pending: &PendingConsent) -> Result<String, EngineError> {
        consent::defer(self.store.as_ref(), pending).await
    }

    /// Takes a sign-in waiting for consent out, once, for `browser` only.
    pub async fn take_consent(
        &self,
        id: &str,
        browser: &str,
    ) -> Result<Option<PendingConsent>, EngineError> {
        consent::take(self.store.as_ref(), id, browser).await
    }

    /// Whether a service URL is an in-process client's callback (an OIDC
    /// client's, a SAML SP's), answered by that module, not a CAS client.
    pub fn is_callback(&self, service: &str) -> bool {
        self.clients.iter().any(|c| c.callbacks().owns(service))
    }

    /// Whether the user has a second factor enrolled.
    pub async fn is_enrolled(&self, user: &str) -> Result<bool, EngineError> {
        match &self.second_factors {
            Some(factors) => Ok(factors.enrolled(user).await?),
            None => Ok(false),
        }
    }

    /// Keeps a sign-in whose first factor passed until its second does;
    /// the id to finish it with.
    pub async fn defer_sign_in(&self, pending: &PendingSignIn) -> Result<String, EngineError> {
        let id = self.second_steps.defer(pending).await?;
        if self.audit.is_some() {
            let mut event = AuditEvent::new(AuditKind::SecondFactor, Outcome::Asked)
                .user(&pending.principal.id);
            if let Some(service) = pending.service.as_deref() {
                if let Some(r) = self.registry.find(service) {
                    event = event.service(&r.name).protocol(self.protocol_of(service));
                }
            }
            if pending.step_up.is_some() {
                event = event.detail("step_up");
            }
            self.record(event);
        }
        Ok(id)
    }

    /// A deferred sign-in, when it lives and was started by `browser`.
    pub async fn deferred_sign_in(
        &self,
        id: &str,
        browser: &str,
    ) -> Result<Option<PendingSignIn>, EngineError> {
        self.second_steps.get(id, browser).await
    }

    /// Keeps new second-factor state (a challenge) in a deferred sign-in.
    pub async fn update_deferred_sign_in(
        &self,
        id: &str,
        pending: &PendingSignIn,
    ) -> Result<bool, EngineError> {
        self.second_steps.update(id, pending).await
    }

    /// Takes a deferred sign-in out once its second factor passed: of two
    /// concurrent finishes only one gets it.
    pub async fn take_deferred_sign_in(
        &self,
        id: &str,
        browser: &str,
    ) -> Result<Option<PendingSignIn>, EngineError> {
        self.second_steps.take(id, browser).await
    }

    /// Checks a second factor with the throttling of passwords (counted
    /// apart from them): the method `check` proved, or `Ok(None)` for a
    /// wrong factor, counted.
    pub async fn check_second_factor<F>(
        &self,
        user: &str,
        client_ip: Option<IpAddr>,
        check: F,
    ) -> Result<Option<AuthnMethod>, EngineError>
    where
        F: std::future::Future<Output = Result<Option<AuthnMethod>, AuthnError>>,
    {
        let step = |outcome| AuditEvent::new(AuditKind::SecondFactor, outcome).user(user);
        let store = self.store.as_ref();
        let reservation = match self
            .throttle
            .reserve_second_factor(store, user, client_ip)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, EngineError::Authentication(AuthnError::Throttled)) {
                    self.record(step(Outcome::Throttled));
                }
                return Err(e);
            }
        };
        match check.await {
            Ok(Some(method)) => {
                self.throttle.succeeded(store, reservation).await?;
                self.record(step(Outcome::Ok).method(method.audit_name()));
                Ok(Some(method))
            }
            Ok(None) => {
                self.record(step(Outcome::Refused));
                Ok(None)
            }
            Err(e) => {
                self.record(step(Outcome::Unavailable));
                self.throttle.undecided(store, reservation).await?;
                Err(e.into())
            }
        }
    }

    /// Ends a session and tells every service it issued tickets for,
    /// once, but the `initiator` (which learns it from its own answer).
    pub async fn logout(
        &self,
        session_id: &str,
        initiator: Option<&Initiator>,
    ) -> Result<LoggedOut, EngineError> {
        if !is_well_formed(session_id, TicketKind::TicketGranting.prefix()) {
            return Ok(LoggedOut::default());
        }
        let Some(session) = self.store.remove_session(session_id).await? else {
            return Ok(LoggedOut::default());
        };
        tracing::info!(user = %session.principal.id, session = %redact(&session.id), "SSO session ended");
        let user = session.principal.id.clone();
        let mut event = AuditEvent::new(AuditKind::Logout, Outcome::Ok).user(&user);
        if let Some(initiator) = initiator {
            event = event.protocol(initiator.participant);
        }
        self.record(event);
        let dispatched = self.tell_ended(session, initiator).await;
        Ok(LoggedOut {
            user: Some(user),
            visits: dispatched.visits,
            deliveries: dispatched.deliveries,
        })
    }

    /// The live sessions of `user` (support desk), oldest first.
    pub async fn sessions_of(&self, user: &str) -> Result<Vec<TicketGrantingTicket>, EngineError> {
        let mut sessions = self.store.sessions_of(user).await?;
        sessions.sort_by_key(|s| s.authenticated_at);
        Ok(sessions)
    }

    /// Ends every session of `user`, each with its single logout (an
    /// incident, a stolen laptop). Returns how many ended; waits for the
    /// back-channel deliveries so the caller can say they were sent.
    pub async fn end_sessions_of(&self, user: &str) -> Result<usize, EngineError> {
        let mut ended = 0;
        for session in self.store.sessions_of(user).await? {
            let out = self.logout(&session.id, None).await?;
            if out.user.is_some() {
                ended += 1;
            }
            if let Some(deliveries) = out.deliveries {
                let _ = deliveries.await;
            }
        }
        Ok(ended)
    }
}

#[cfg(test)]
mod tests;
