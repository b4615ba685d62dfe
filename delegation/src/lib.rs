//! Delegated authentication: connectors that hand a login off to an upstream
//! identity provider and map the identity that comes back into a CAS
//! principal. One trait, [`Connector`]; one file per upstream kind.
//!
//! The configuration of upstreams is checked here ([`config`]), and their
//! connectors built from it ([`upstreams`]). The web layer owns the flow
//! around a connector: it keeps the one-time state ([`pending`]) in the
//! shared ticket store, bound to the browser, and opens the SSO session with
//! the principal a connector returns.

pub mod cas;
pub mod config;
pub mod mapping;
pub mod oauth2;
pub mod oidc;
pub mod pending;
pub mod saml;
pub mod upstreams;

pub use config::{UpstreamKind, UpstreamSettings};
pub use pending::PendingLogin;
pub use upstreams::{Upstream, UpstreamRegistry};

use async_trait::async_trait;
use castellan_core::Principal;
use std::collections::HashMap;

#[cfg(test)]
mod tests {
    #[test]
    fn freshness_allows_the_clock_skew_only() {
        assert!(super::authenticated_since(Some(1000), 1000));
        assert!(super::authenticated_since(Some(1200), 1000));
        assert!(super::authenticated_since(Some(950), 1000));
        assert!(!super::authenticated_since(Some(900), 1000));
        assert!(!super::authenticated_since(None, 1000));
    }
}

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
    /// Ask the upstream for a fresh login (CAS renew, OIDC prompt=login
    /// and max_age=0, SAML ForceAuthn).
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

/// What a connector is given back at the callback.
pub struct Finish<'a> {
    /// The callback's parameters (query, or the ACS form), each given once.
    pub params: &'a HashMap<String, String>,
    /// As given to [`Connector::start`].
    pub callback_url: &'a str,
    pub state: &'a str,
    /// What [`Started::saved`] held.
    pub saved: &'a str,
    /// The login was started with [`Start::renew`].
    pub renew: bool,
    /// When the login was started, in seconds since the epoch: an
    /// authentication at the upstream before it is not a fresh one.
    pub started_at: u64,
}

/// The identity an upstream vouched for, and whether it proved that the user
/// presented credentials for this very login.
#[derive(Debug)]
pub struct Authenticated {
    pub principal: Principal,
    /// CAS: validated with `renew=true`, or `isFromNewLogin` true; OIDC:
    /// `auth_time` since the start; SAML: `AuthnInstant` since the start.
    /// Never true for an upstream that cannot tell (plain OAuth2).
    pub fresh: bool,
    /// The upstream said it used more than one factor (OIDC `amr`/`acr`,
    /// a SAML AuthnContextClassRef, CAS `authnContextClass`); counted only
    /// for an upstream configured with `trust_mfa`.
    pub mfa: bool,
}

/// Tolerated clock difference with an upstream when comparing its
/// authentication instant with the start of the login.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Whether an authentication at `instant` (seconds since the epoch) happened
/// during a login started at `started_at`.
pub fn authenticated_since(instant: Option<u64>, started_at: u64) -> bool {
    instant.is_some_and(|t| t.saturating_add(CLOCK_SKEW_SECS) >= started_at)
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
    /// Whether the upstream can prove a fresh authentication (see
    /// [`Authenticated::fresh`]); a renew request never goes to one that
    /// cannot.
    fn proves_fresh_login(&self) -> bool {
        false
    }
    /// The SP metadata this connector publishes (SAML upstreams).
    fn metadata(&self) -> Option<String> {
        None
    }
    async fn start(&self, start: &Start<'_>) -> Result<Started, DelegationError>;
    /// Verifies the callback and returns the upstream's identity (before
    /// mapping).
    async fn finish(&self, finish: &Finish<'_>) -> Result<Authenticated, DelegationError>;
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

/// Reads a response body of at most `limit` bytes.
pub(crate) async fn body_limited(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, DelegationError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| DelegationError::Unavailable(e.to_string()))?
    {
        if body.len() + chunk.len() > limit {
            return Err(DelegationError::Invalid("the answer is too large".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
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
