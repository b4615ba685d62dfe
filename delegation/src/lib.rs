//! Delegated authentication: connectors that hand a login off to an upstream
//! identity provider and map the identity that comes back into a CAS
//! principal. One trait, [`Connector`]; one file per upstream kind.
//!
//! The web layer owns the flow around a connector: it keeps the one-time
//! state in the shared ticket store, bound to the browser, and opens the SSO
//! session with the principal a connector returns.

pub mod cas;
pub mod mapping;
pub mod oauth2;
pub mod oidc;
pub mod saml;

use async_trait::async_trait;
use castellan_core::Principal;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum DelegationError {
    /// The upstream could not be reached or answered out of protocol.
    #[error("the identity provider could not be reached: {0}")]
    Unavailable(String),
    /// The upstream refused, or the user cancelled.
    #[error("the identity provider did not sign you in: {0}")]
    Refused(String),
    /// What came back does not verify.
    #[error("the identity provider's answer could not be verified: {0}")]
    Invalid(String),
}

/// What a connector is given to start a login.
pub struct Start<'a> {
    /// Where the upstream sends the browser back: `/delegated/NAME/callback`
    /// (a CAS connector adds the state to it; OAuth2 sends it as `state`).
    pub callback_url: &'a str,
    /// The one-time state.
    pub state: &'a str,
    /// Ask the upstream for a fresh login (CAS renew, OIDC prompt=login).
    pub renew: bool,
    /// Ask the upstream not to show anything (CAS gateway, OIDC
    /// prompt=none, SAML IsPassive); only when [`Connector::supports_passive`].
    pub passive: bool,
}

/// Where to send the browser, and what the connector needs back at the
/// callback (kept in the store with the state).
pub struct Started {
    pub redirect: String,
    pub saved: String,
}

/// A connector for one upstream identity provider.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    fn name(&self) -> &str;
    fn display_name(&self) -> &str;
    /// Whether the upstream can be asked for a login without any page
    /// (CAS gateway); when not, a gateway request never goes there.
    fn supports_passive(&self) -> bool {
        false
    }
    /// The SP metadata this connector publishes (SAML upstreams).
    fn metadata(&self) -> Option<String> {
        None
    }
    async fn start(&self, start: &Start<'_>) -> Result<Started, DelegationError>;
    /// Verifies the callback and returns the upstream's identity (before
    /// mapping). `callback_url` and `state` are the ones given to `start`.
    async fn finish(
        &self,
        params: &HashMap<String, String>,
        callback_url: &str,
        state: &str,
        saved: &str,
    ) -> Result<Principal, DelegationError>;
}

/// A failed code exchange: the provider unreachable or slow (transport) is
/// not the provider refusing the code.
pub(crate) fn exchange_error<RE, T>(e: &openidconnect::RequestTokenError<RE, T>) -> DelegationError
where
    RE: std::error::Error + 'static,
    T: openidconnect::ErrorResponse + 'static,
{
    match e {
        openidconnect::RequestTokenError::Request(inner) => {
            DelegationError::Unavailable(format!("code exchange: {inner}"))
        }
        other => DelegationError::Refused(format!("code exchange: {other}")),
    }
}

/// Outbound calls to upstreams: bounded in time, verified TLS.
pub fn http_client(timeout: std::time::Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .connect_timeout(timeout.min(std::time::Duration::from_secs(3)))
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Castellan/", env!("CARGO_PKG_VERSION")))
        .build()
}
