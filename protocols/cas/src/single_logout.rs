//! Back-channel single logout: a SAML 2.0 `LogoutRequest` POSTed to each
//! service as the form parameter `logoutRequest`, as Apereo CAS sends it.
//! Sent in the background with timeouts and a bounded retry; the user never
//! waits for it.

use crate::proxy_callback::http_client;
use crate::time_format::iso8601_millis;
use crate::xml::escape;
use castellan_core::{ids::new_ticket_id, LogoutMode, LogoutNotification};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;

const ATTEMPTS: u32 = 3;
/// Logout requests in flight at once, across all sessions.
const CONCURRENCY: usize = 64;

pub fn logout_request(principal_id: &str, ticket_id: &str, now_millis: u64) -> String {
    format!(
        "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{}\" Version=\"2.0\" IssueInstant=\"{}\"><saml:NameID>{}</saml:NameID><samlp:SessionIndex>{}</samlp:SessionIndex></samlp:LogoutRequest>",
        new_ticket_id("LR"),
        iso8601_millis(now_millis),
        escape(principal_id),
        escape(ticket_id)
    )
}

#[derive(Clone)]
pub struct BackChannelLogout {
    client: reqwest::Client,
    permits: Arc<Semaphore>,
    retry_pause: Duration,
}

impl BackChannelLogout {
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: http_client(false, timeout)?,
            permits: Arc::new(Semaphore::new(CONCURRENCY)),
            retry_pause: Duration::from_secs(1),
        })
    }

    /// Starts delivery to every back-channel service and returns at once.
    pub fn notify(&self, notifications: Vec<LogoutNotification>, now_millis: u64) {
        for n in notifications
            .into_iter()
            .filter(|n| n.mode == LogoutMode::BackChannel)
        {
            let this = self.clone();
            let body = logout_request(&n.principal_id, &n.ticket_id, now_millis);
            tokio::spawn(async move {
                let Ok(_permit) = this.permits.acquire().await else {
                    return;
                };
                this.deliver(&n.service, &body).await;
            });
        }
    }

    async fn deliver(&self, service: &str, body: &str) -> bool {
        for attempt in 1..=ATTEMPTS {
            let sent = self
                .client
                .post(service)
                .form(&[("logoutRequest", body)])
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() || r.status().is_redirection() => return true,
                // A 4xx will not get better by asking again.
                Ok(r) if r.status().is_client_error() => {
                    tracing::warn!(status = %r.status(), "single logout refused by service");
                    return false;
                }
                Ok(r) => tracing::warn!(status = %r.status(), attempt, "single logout failed"),
                Err(e) => tracing::warn!(error = %e, attempt, "single logout failed"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(self.retry_pause * attempt).await;
            }
        }
        false
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
