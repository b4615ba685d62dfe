//! The audit seam: what happened to whom, as the engine decides it.
//!
//! The engine tells an [`AuditSink`] at the points where it decides (a
//! password checked, a second factor asked or checked, a ticket granted or
//! validated, a session ended, a single-logout message delivered). It does
//! no I/O here: the sink stamps, formats and writes, off the request path.
//!
//! An event never holds a secret: no password, one-time or recovery code,
//! ticket id, token or protocol message, and no attribute value.

use crate::error::{EngineError, StoreError};
use std::future::Future;
use std::pin::Pin;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditKind {
    /// A password login, decided by a source (`[[users]]`, an authenticator).
    Login,
    /// A step of the second factor: asked, passed, refused.
    SecondFactor,
    /// A service or proxy ticket granted.
    TicketGranted,
    /// A service or proxy ticket presented for validation.
    TicketValidated,
    /// An SSO session ended.
    Logout,
    /// A single-logout message to one party, after its last attempt.
    SingleLogout,
    /// A login at an upstream identity provider (delegation).
    UpstreamLogin,
    /// The configuration was reloaded.
    Reload,
    /// A user accepted (`ok`) or declined (`refused`) the release of
    /// attributes to a service; `detail` names them (never their values).
    Consent,
}

impl AuditKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::SecondFactor => "mfa",
            Self::TicketGranted => "ticket_granted",
            Self::TicketValidated => "ticket_validated",
            Self::Logout => "logout",
            Self::SingleLogout => "single_logout",
            Self::UpstreamLogin => "upstream_login",
            Self::Reload => "reload",
            Self::Consent => "consent",
        }
    }
}

/// How it ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Wrong credentials, a ticket that does not validate, a failed
    /// delivery given up.
    Failed,
    /// Known account not let in; a party that refused a logout message.
    Refused,
    Throttled,
    /// Not decided: a source or store could not answer.
    Unavailable,
    /// A second factor was asked for.
    Asked,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Refused => "refused",
            Self::Throttled => "throttled",
            Self::Unavailable => "unavailable",
            Self::Asked => "asked",
        }
    }
}

/// One event. Every field is plain and safe to write down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub kind: AuditKind,
    pub outcome: Outcome,
    pub user: Option<String>,
    /// The registered service's name (not its URL, which may carry state).
    pub service: Option<String>,
    /// `cas`, `oidc`, `saml` (the protocol the service speaks).
    pub protocol: Option<&'static str>,
    /// Who decided: an authentication source's name, an upstream's name.
    pub source: Option<String>,
    /// How: a second factor's method (`totp`, `recovery_code`, …).
    pub method: Option<&'static str>,
    /// The party a single-logout message went to (a client or SP name, a
    /// CAS service URL).
    pub party: Option<String>,
    /// A short reason in a fixed vocabulary (a CAS error code, an account
    /// problem), never free text from a request.
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(kind: AuditKind, outcome: Outcome) -> Self {
        Self {
            kind,
            outcome,
            user: None,
            service: None,
            protocol: None,
            source: None,
            method: None,
            party: None,
            detail: None,
        }
    }

    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    pub fn protocol(mut self, protocol: &'static str) -> Self {
        self.protocol = Some(protocol);
        self
    }

    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn method(mut self, method: &'static str) -> Self {
        self.method = Some(method);
        self
    }

    pub fn party(mut self, party: impl Into<String>) -> Self {
        self.party = Some(party.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// A boxed background task, as [`AuditSink::bind`] takes and returns it.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Where events go. `record` is called on the request path: it must never
/// block (queue and return; drop when full).
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, event: AuditEvent);

    /// Wraps a task spawned on behalf of the current request (single-logout
    /// deliveries) so that its events keep the request's context.
    fn bind(&self, task: Task) -> Task {
        task
    }
}

/// The CAS 3.0 §2.5.3 code a failed validation answers with, for the
/// audit line (the CAS module maps the same errors to its responses).
pub fn validation_code(error: &EngineError) -> &'static str {
    match error {
        EngineError::MalformedTicket | EngineError::ProxyTicketNotAccepted => "INVALID_TICKET_SPEC",
        EngineError::TicketNotFound
        | EngineError::SessionNotFound
        | EngineError::RenewRequired
        | EngineError::SecondFactorRequired => "INVALID_TICKET",
        EngineError::ServiceMismatch | EngineError::UnauthorizedService => "INVALID_SERVICE",
        EngineError::UnauthorizedProxy | EngineError::ConsentRequired => {
            "UNAUTHORIZED_SERVICE_PROXY"
        }
        EngineError::InvalidProxyCallback(_) => "INVALID_PROXY_CALLBACK",
        EngineError::Store(StoreError::Unavailable(_) | StoreError::Corrupt(_))
        | EngineError::Busy
        | EngineError::Consents(_)
        | EngineError::Authentication(_) => "INTERNAL_ERROR",
    }
}

#[cfg(test)]
pub(crate) mod recording {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    /// Keeps every event, for the engine's tests.
    #[derive(Default)]
    pub struct Recorder(pub Mutex<Vec<AuditEvent>>);

    impl Recorder {
        pub fn new() -> Arc<Self> {
            Arc::new(Self::default())
        }

        pub fn taken(&self) -> Vec<AuditEvent> {
            std::mem::take(&mut *self.0.lock())
        }
    }

    impl AuditSink for Recorder {
        fn record(&self, event: AuditEvent) {
            self.0.lock().push(event);
        }
    }
}
