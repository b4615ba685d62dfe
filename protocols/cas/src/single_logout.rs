//! Back-channel single logout: a SAML 2.0 `LogoutRequest` POSTed to each
//! service as the form parameter `logoutRequest`, as Apereo CAS sends it.
//! The engine sends it in the background, with its one delivery policy;
//! the user never waits for it.

use crate::proxy_callback::http_client;
use crate::time_format::iso8601_millis;
use crate::xml::escape;
use async_trait::async_trait;
use castellan_core::ids::new_ticket_id;
use castellan_core::{
    Attempt, Clock, EndedSession, LogoutMessage, LogoutMode, LogoutNotification, LogoutParticipant,
};
use std::sync::Arc;
use std::time::Duration;

pub fn logout_request(principal_id: &str, ticket_id: &str, now_millis: u64) -> String {
    format!(
        "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\"><saml:NameID>{}</saml:NameID><samlp:SessionIndex>{}</samlp:SessionIndex></samlp:LogoutRequest>",
        new_ticket_id("LR"),
        iso8601_millis(now_millis),
        escape(principal_id),
        escape(ticket_id)
    )
}

/// The CAS services' part of single logout. It owns every service URL no
/// other protocol claims, so it is registered last. The engine's
/// [`castellan_core::DeliveryPolicy`] decides when to send again.
pub struct CasLogout {
    client: reqwest::Client,
    clock: Arc<dyn Clock>,
}

impl CasLogout {
    pub fn new(timeout: Duration, clock: Arc<dyn Clock>) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: http_client(false, timeout)?,
            clock,
        })
    }
}

#[async_trait]
impl LogoutParticipant for CasLogout {
    fn name(&self) -> &'static str {
        "cas"
    }

    fn party(&self, service: &str) -> Option<String> {
        Some(service.to_owned())
    }

    async fn messages(
        &self,
        _ended: &EndedSession,
        notifications: &[LogoutNotification],
    ) -> Vec<LogoutMessage> {
        let now = self.clock.now();
        notifications
            .iter()
            .filter(|n| n.mode == LogoutMode::BackChannel)
            .map(|n| LogoutMessage {
                party: n.service.clone(),
                endpoint: n.service.clone(),
                payload: logout_request(&n.principal_id, &n.ticket_id, now),
            })
            .collect()
    }

    async fn send(&self, message: &LogoutMessage) -> Attempt {
        let sent = self
            .client
            .post(&message.endpoint)
            .form(&[("logoutRequest", message.payload.as_str())])
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() || r.status().is_redirection() => Attempt::Delivered,
            // A 4xx will not get better by asking again.
            Ok(r) if r.status().is_client_error() => Attempt::Refused,
            Ok(r) => {
                tracing::debug!(status = %r.status(), "CAS single logout not accepted");
                Attempt::Failed
            }
            Err(e) => {
                tracing::debug!(error = %e, "CAS single logout not delivered");
                Attempt::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn logout_request_carries_the_ticket_as_session_index() {
        let x = super::logout_request("a<b", "ST-1-abc", 0);
        assert!(x.contains("<samlp:SessionIndex>ST-1-abc</samlp:SessionIndex>"));
        assert!(x.contains("<saml:NameID>a&lt;b</saml:NameID>"));
        assert!(x.contains("IssueInstant=\"1970-01-01T00:00:00.000Z\""));
    }
}
