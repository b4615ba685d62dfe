//! CAS 3.0 §2.5.3 error codes, mapped once from the engine's errors.

use castellan_core::{EngineError, StoreError};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasErrorCode {
    InvalidRequest,
    InvalidTicketSpec,
    UnauthorizedServiceProxy,
    InvalidProxyCallback,
    InvalidTicket,
    InvalidService,
    InternalError,
}

impl CasErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::InvalidTicketSpec => "INVALID_TICKET_SPEC",
            Self::UnauthorizedServiceProxy => "UNAUTHORIZED_SERVICE_PROXY",
            Self::InvalidProxyCallback => "INVALID_PROXY_CALLBACK",
            Self::InvalidTicket => "INVALID_TICKET",
            Self::InvalidService => "INVALID_SERVICE",
            Self::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// A protocol failure: a code and a description safe to show the client.
#[derive(Debug, Clone, Error)]
#[error("{}: {description}", code.as_str())]
pub struct CasError {
    pub code: CasErrorCode,
    pub description: String,
}

impl CasError {
    pub fn new(code: CasErrorCode, description: impl Into<String>) -> Self {
        Self {
            code,
            description: description.into(),
        }
    }

    /// Maps an engine error for the ticket `ticket`; internal detail goes to
    /// the log, not to the client.
    pub fn from_engine(error: EngineError, ticket: &str) -> Self {
        use CasErrorCode::*;
        match error {
            EngineError::MalformedTicket => Self::new(
                InvalidTicketSpec,
                format!("Ticket '{ticket}' is not a service or proxy ticket"),
            ),
            EngineError::ProxyTicketNotAccepted => Self::new(
                InvalidTicketSpec,
                "A proxy ticket was presented to /serviceValidate: use /proxyValidate",
            ),
            EngineError::TicketNotFound | EngineError::SessionNotFound => {
                Self::new(InvalidTicket, format!("Ticket '{ticket}' not recognized"))
            }
            EngineError::RenewRequired => Self::new(
                InvalidTicket,
                format!(
                    "Ticket '{ticket}' did not come from an initial login and renew was requested"
                ),
            ),
            EngineError::ServiceMismatch => Self::new(
                InvalidService,
                format!("Ticket '{ticket}' was not issued for this service"),
            ),
            EngineError::UnauthorizedService => {
                Self::new(InvalidService, "The service is not registered")
            }
            EngineError::UnauthorizedProxy => Self::new(
                UnauthorizedServiceProxy,
                "The target service is not authorized to use CAS proxy authentication",
            ),
            EngineError::InvalidProxyCallback(why) => Self::new(InvalidProxyCallback, why),
            EngineError::Store(StoreError::Unavailable(e) | StoreError::Corrupt(e)) => {
                tracing::error!(error = %e, "ticket store failed during validation");
                Self::new(InternalError, "The ticket store is unavailable")
            }
            EngineError::Busy => Self::new(InternalError, "The server is busy; try again"),
            // Not raised by validation; should it be, the ticket is no good.
            EngineError::SecondFactorRequired => {
                Self::new(InvalidTicket, format!("Ticket '{ticket}' not recognized"))
            }
            // Raised only by /proxy: nobody is there to ask the user.
            EngineError::ConsentRequired => Self::new(
                UnauthorizedServiceProxy,
                "The user has not consented to the release of attributes to the target service",
            ),
            EngineError::Consents(e) => {
                tracing::error!(error = %e, "consent store failed");
                Self::new(InternalError, "The consent store is unavailable")
            }
            EngineError::Authentication(e) => {
                tracing::error!(error = %e, "unexpected authentication error during validation");
                Self::new(InternalError, "Internal error")
            }
        }
    }
}
