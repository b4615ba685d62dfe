//! Errors of the engine, named after what went wrong in the domain.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("ticket store unavailable: {0}")]
    Unavailable(String),
    #[error("ticket store value unreadable: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum AuthnError {
    #[error("invalid credentials")]
    InvalidCredentials,
    /// This source does not know the username: the next one is asked. The
    /// chain of sources turns it into `InvalidCredentials` at its end, so
    /// that nobody outside tells an unknown user from a wrong password.
    #[error("unknown user")]
    UnknownUser,
    #[error("too many failed attempts")]
    Throttled,
    /// The source knows the account but will not let it in now.
    #[error("account refused: {0}")]
    Refused(AccountRefusal),
    #[error("authentication backend failed: {0}")]
    Backend(String),
}

/// Why a source that knows the account refused the login, with what the
/// login page needs to say so.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{problem}")]
pub struct AccountRefusal {
    pub problem: AccountProblem,
    /// Where the user can change the password (the source's
    /// `password_change_url`), shown with the message.
    pub password_change_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AccountProblem {
    #[error("the password has expired")]
    PasswordExpired,
    #[error("the password must be changed")]
    MustChangePassword,
    #[error("the account is locked")]
    Locked,
    #[error("the account is disabled")]
    Disabled,
    #[error("the account has expired")]
    AccountExpired,
    #[error("the account may not sign in at this time")]
    NotAllowedNow,
    #[error("the account may not sign in from this workstation")]
    NotAllowedFromHere,
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
    #[error("the service asks for a second factor this session has not used")]
    SecondFactorRequired,
    /// The service releases attributes only with the user's consent, and
    /// the user has no live decision for what it would receive.
    #[error("the service asks for the user's consent to the release of attributes")]
    ConsentRequired,
    #[error(transparent)]
    Consents(#[from] crate::consent::ConsentStoreError),
    #[error("too many sign-ins in progress; try again shortly")]
    Busy,
    #[error(transparent)]
    Authentication(#[from] AuthnError),
    #[error(transparent)]
    Store(#[from] StoreError),
}
