use crate::status;
use castellan_core::{EngineError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SamlError {
    /// The request cannot be trusted enough to answer the SP: an error page.
    #[error("{0}")]
    Untrusted(String),
    /// Answered to the SP's ACS with this status.
    #[error("{message}")]
    Status {
        status: &'static str,
        message: String,
    },
    /// The pending sign-in this callback names expired or was used.
    #[error("the sign-in request expired or was already used")]
    Expired,
    #[error("IdP credentials: {0}")]
    Credentials(String),
    #[error("XML security: {0}")]
    Crypto(String),
    #[error("SP metadata: {0}")]
    Metadata(String),
    /// The engine or its ticket store failed (or is busy).
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl SamlError {
    pub fn requester(message: impl Into<String>) -> Self {
        SamlError::Status {
            status: status::REQUESTER,
            message: message.into(),
        }
    }

    pub fn untrusted(message: impl Into<String>) -> Self {
        SamlError::Untrusted(message.into())
    }
}

impl From<StoreError> for SamlError {
    fn from(e: StoreError) -> Self {
        SamlError::Engine(EngineError::Store(e))
    }
}

impl From<openssl::error::ErrorStack> for SamlError {
    fn from(e: openssl::error::ErrorStack) -> Self {
        SamlError::Crypto(e.to_string())
    }
}
