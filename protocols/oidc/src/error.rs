//! OAuth 2.0 and OpenID Connect errors (RFC 6749 §4.1.2.1, §5.2; OIDC Core
//! §3.1.2.6; RFC 6750 §3.1), in the form each endpoint sends them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    UnsupportedResponseType,
    UnsupportedTokenType,
    InvalidScope,
    AccessDenied,
    ServerError,
    TemporarilyUnavailable,
    LoginRequired,
    ConsentRequired,
    InteractionRequired,
    RequestNotSupported,
    RequestUriNotSupported,
    InvalidToken,
    InsufficientScope,
    /// RFC 9449 §12.2.
    InvalidDpopProof,
    UseDpopNonce,
    /// RFC 8628 §3.5.
    AuthorizationPending,
    SlowDown,
    ExpiredToken,
    /// RFC 8693 §2.2.2.
    InvalidTarget,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::UnsupportedResponseType => "unsupported_response_type",
            ErrorCode::UnsupportedTokenType => "unsupported_token_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
            ErrorCode::LoginRequired => "login_required",
            ErrorCode::ConsentRequired => "consent_required",
            ErrorCode::InteractionRequired => "interaction_required",
            ErrorCode::RequestNotSupported => "request_not_supported",
            ErrorCode::RequestUriNotSupported => "request_uri_not_supported",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::InsufficientScope => "insufficient_scope",
            ErrorCode::InvalidDpopProof => "invalid_dpop_proof",
            ErrorCode::UseDpopNonce => "use_dpop_nonce",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::InvalidTarget => "invalid_target",
        }
    }

    /// The HTTP status of this error at the token, introspection and
    /// revocation endpoints (RFC 6749 §5.2) and the userinfo endpoint.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient | ErrorCode::InvalidToken => 401,
            ErrorCode::InsufficientScope => 403,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{error:?}: {error_description}")]
pub struct OAuthError {
    pub error: ErrorCode,
    pub error_description: String,
}

impl OAuthError {
    pub fn new(error: ErrorCode, description: impl Into<String>) -> Self {
        Self {
            error,
            error_description: description.into(),
        }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    pub fn server_error() -> Self {
        Self::new(
            ErrorCode::ServerError,
            "the server could not complete the request; try again",
        )
    }

    pub fn unavailable() -> Self {
        Self::new(
            ErrorCode::TemporarilyUnavailable,
            "the ticket store is unavailable; try again",
        )
    }

    /// The JSON body of an error response.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "error": self.error.as_str(),
            "error_description": self.error_description,
        })
        .to_string()
    }
}

impl From<castellan_core::StoreError> for OAuthError {
    fn from(e: castellan_core::StoreError) -> Self {
        tracing::error!(error = %e, "ticket store failed during an OAuth request");
        OAuthError::unavailable()
    }
}

impl From<castellan_core::EngineError> for OAuthError {
    fn from(e: castellan_core::EngineError) -> Self {
        match e {
            castellan_core::EngineError::Store(e) => e.into(),
            castellan_core::EngineError::Busy => OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "too many sign-ins in progress; try again shortly",
            ),
            other => OAuthError::invalid_grant(other.to_string()),
        }
    }
}
