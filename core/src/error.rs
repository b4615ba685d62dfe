//! Errors of the engine, named after what went wrong in the domain.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("ticket store unavailable: {0}")]
    Unavailable(String),
    #[error("ticket store value unreadable: {0}")]
    Corrupt(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthnError {
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many failed attempts")]
    Throttled,
    #[error("authentication backend failed: {0}")]
    Backend(String),
}

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("malformed ticket")]
    MalformedTicket,
    #[error("a proxy ticket cannot be validated here")]
    ProxyTicketNotAccepted,
    #[error("ticket not recognized")]
    TicketNotFound,
    #[error("ticket not from a new login while renew was requested")]
    RenewRequired,
    #[error("ticket was issued for another service")]
    ServiceMismatch,
    #[error("service is not registered")]
    UnauthorizedService,
    #[error("service may not proxy")]
    UnauthorizedProxy,
    #[error("proxy callback rejected: {0}")]
    InvalidProxyCallback(&'static str),
    #[error("SSO session not found or expired")]
    SessionNotFound,
    #[error("too many sign-ins in progress; try again shortly")]
    Busy,
    #[error(transparent)]
    Authentication(#[from] AuthnError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
