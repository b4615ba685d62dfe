//! The CAS engine of Castellan.
//!
//! It authenticates a user once (an SSO session, the ticket-granting ticket),
//! grants one-time service tickets for registered services, validates them,
//! runs the proxy chain and single logout. It knows nothing of HTTP, SAML or
//! OIDC: protocol modules call [`Engine`] in-process, exactly like an outside
//! CAS client calls the CAS endpoints.

pub mod audit;
pub mod authn;
pub mod client;
pub mod clock;
pub mod consent;
pub mod engine;
pub mod error;
pub mod ids;
pub mod login_flow;
pub mod logout;
pub mod methods;
pub mod pending;
pub mod principal;
pub mod record;
pub mod second_step;
pub mod service;
pub mod store;
pub mod throttle;
pub mod ticket;

pub use audit::{AuditEvent, AuditKind, AuditSink, Outcome};
pub use authn::{
    Authenticator, AuthenticatorChain, Credentials, Decision, PasswordNotice, PasswordNoticeKind,
    StaticUser, StaticUserAuthenticator, UserSecret,
};
pub use client::{CallbackUrls, ConsentRefusal, InProcessClient, Release};
pub use clock::{Clock, ManualClock, SystemClock};
pub use consent::{AfterConsent, ConsentAsk, ConsentStoreError, Consents, PendingConsent};
pub use engine::{
    Assertion, Engine, LoggedOut, LogoutNotification, ProxyCallback, SecondFactors, SignIn,
    SignedIn, TicketPolicy, ValidationRequest,
};
pub use error::{AccountProblem, AccountRefusal, AuthnError, EngineError, StoreError};
pub use logout::{
    Attempt, DeliveryPolicy, EndedSession, FrontChannelVisit, Initiator, LogoutMessage,
    LogoutParticipant, SingleLogout,
};
pub use methods::{AuthnMethod, AuthnMethods, MfaPolicy};
pub use principal::{Attributes, Principal};
pub use second_step::{PendingSignIn, SECOND_STEP_TTL};
pub use service::{LogoutMode, RegisteredService, ServiceDisplay, ServiceRegistry};
pub use store::{memory::MemoryStore, TicketStore};
pub use throttle::{Throttle, ThrottlePolicy};
pub use ticket::{
    LoginFlow, ProxyGrantingTicket, ProxyTicket, ServiceRecord, ServiceTicket, Ticket,
    TicketGrantingTicket, TicketKind,
};
