//! Logout: the parameters of RP-Initiated Logout 1.0, and the provider's
//! part of single logout, a signed logout token POSTed to each client's
//! `backchannel_logout_uri` (OIDC Back-Channel Logout 1.0).

use crate::parameters::MAX_TOKEN_LEN;
use crate::provider::Provider;
use crate::tokens::{self, logout_token_claims, sign, subject, LOGOUT_TOKEN_TYPE};
use async_trait::async_trait;
use castellan_core::ids::{new_ticket_id, session_tag};
use castellan_core::{
    Attempt, EndedSession, InProcessClient, LogoutMessage, LogoutMode, LogoutNotification,
    LogoutParticipant,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// A logout request the provider refuses: shown to the user, since the
/// place to send them back to is not known to be the client's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndSessionError {
    #[error("A parameter is too long.")]
    TooLong,
    #[error("client_id does not match the id_token_hint.")]
    ClientMismatch,
    #[error("The post_logout_redirect_uri is not registered for this application.")]
    UnregisteredRedirect,
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Provider {
    /// The client an `id_token_hint` was issued to, when it is one of ours.
    /// A hint that does not verify (a key rotated out long ago, a token of
    /// another server) names no client; the logout itself still happens,
    /// it is what the user asked for.
    fn client_of_hint(&self, hint: &str) -> Option<String> {
        let keys = self.signing_keys().get()?;
        match tokens::verify_id_token_hint(&keys, &self.issuer, hint) {
            Ok(claims) => match claims.get("aud") {
                Some(Value::String(a)) => Some(a.clone()),
                Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_owned),
                _ => None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "logout with an id_token_hint that does not verify; ignored");
                None
            }
        }
    }

    /// `/oidc/logout` (RP-Initiated Logout 1.0 §2-3): checks the request
    /// before the session ends, and gives where to send the browser after
    /// it, a registered `post_logout_redirect_uri` with the client's
    /// `state`, if the request named one.
    pub fn end_session(
        &self,
        params: &HashMap<String, String>,
    ) -> Result<Option<String>, EndSessionError> {
        if params.values().any(|v| v.len() > MAX_TOKEN_LEN) {
            return Err(EndSessionError::TooLong);
        }
        let hint_client = params
            .get("id_token_hint")
            .and_then(|h| self.client_of_hint(h));
        let client_id = match (hint_client, params.get("client_id")) {
            (Some(h), Some(c)) if &h != c => return Err(EndSessionError::ClientMismatch),
            (Some(h), _) => Some(h),
            (None, c) => c.cloned(),
        };
        let Some(uri) = params.get("post_logout_redirect_uri") else {
            return Ok(None);
        };
        let client = client_id.as_deref().and_then(|c| self.clients.get(c));
        if !client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == uri)) {
            return Err(EndSessionError::UnregisteredRedirect);
        }
        let mut location = uri.clone();
        if let Some(s) = params.get("state") {
            location.push(if location.contains('?') { '&' } else { '?' });
            location.push_str("state=");
            location.push_str(&form_encode(s));
        }
        Ok(Some(location))
    }

    /// One logout token per client and session id for the notifications of
    /// an ended session: a renewed session carries records of the session
    /// it replaced, known to the client by its own sid.
    fn logout_messages(&self, notifications: &[LogoutNotification]) -> Vec<LogoutMessage> {
        let mut told = HashSet::new();
        let mut messages = Vec::new();
        for n in notifications {
            if n.mode != LogoutMode::BackChannel {
                continue;
            }
            let Some(client) = self.client_of_callback(&n.service) else {
                continue;
            };
            let Some(uri) = &client.backchannel_logout_uri else {
                continue;
            };
            let sid = session_tag(&n.ticket_id);
            if !told.insert((client.client_id.clone(), sid.map(str::to_owned))) {
                continue;
            }
            let Some(keys) = self.signing_keys().get() else {
                tracing::warn!(client = %client.name, "no signing keys: back-channel logout not sent");
                continue;
            };
            let claims = logout_token_claims(
                &self.issuer,
                &client.client_id,
                &subject(client, &n.principal_id, &self.settings.pairwise_salt),
                sid,
                &new_ticket_id("LT"),
                self.now(),
            );
            match sign(&keys, client.id_token_alg, LOGOUT_TOKEN_TYPE, &claims) {
                Ok(token) => messages.push(LogoutMessage {
                    party: client.name.clone(),
                    endpoint: uri.clone(),
                    payload: token,
                }),
                Err(e) => tracing::error!(error = %e, "logout token signing failed"),
            }
        }
        messages
    }
}

/// The provider's part of single logout: it owns its callback service
/// URLs, whose party is the client id.
pub struct OidcLogout {
    provider: Arc<Provider>,
    http: reqwest::Client,
}

impl OidcLogout {
    /// `http`: the client logout tokens are posted with (verified TLS,
    /// bounded, redirects not followed: the web crate builds Castellan's one).
    pub fn new(provider: Arc<Provider>, http: reqwest::Client) -> Self {
        Self { provider, http }
    }
}

#[async_trait]
impl LogoutParticipant for OidcLogout {
    fn name(&self) -> &'static str {
        "oidc"
    }

    fn party(&self, service: &str) -> Option<String> {
        self.provider
            .callbacks()
            .parse(service)
            .map(|(client_id, _)| client_id)
    }

    async fn messages(
        &self,
        _ended: &EndedSession,
        notifications: &[LogoutNotification],
    ) -> Vec<LogoutMessage> {
        self.provider.logout_messages(notifications)
    }

    async fn send(&self, message: &LogoutMessage) -> Attempt {
        let sent = self
            .http
            .post(&message.endpoint)
            .form(&[("logout_token", message.payload.as_str())])
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            // Back-Channel Logout §2.8: a 400 means the client refused it.
            Ok(r) if r.status().is_client_error() => Attempt::Refused,
            Ok(r) => {
                tracing::debug!(status = %r.status(), "back-channel logout not accepted");
                Attempt::Failed
            }
            Err(e) => {
                tracing::debug!(error = %e, "back-channel logout not delivered");
                Attempt::Failed
            }
        }
    }
}
