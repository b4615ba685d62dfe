//! Throttling of failed logins per username and per client address.

use crate::error::{AuthnError, EngineError};
use crate::store::TicketStore;
use std::net::IpAddr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ThrottlePolicy {
    pub failures_per_user: u32,
    pub failures_per_ip: u32,
    /// Failures are counted in a window that starts with the first one; once
    /// a limit is reached, attempts are refused until the window ends.
    pub window: Duration,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            failures_per_user: 5,
            failures_per_ip: 20,
            window: Duration::from_secs(300),
        }
    }
}

pub struct Throttle {
    policy: ThrottlePolicy,
}

/// Counter keys: usernames folded to lower case (so case variants share a
/// budget) and cut to a bounded length.
fn user_key(username: &str) -> String {
    let folded: String = username
        .chars()
        .take(256)
        .flat_map(char::to_lowercase)
        .collect();
    format!("user:{folded}")
}

fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

impl Throttle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self { policy }
    }

    pub fn policy(&self) -> &ThrottlePolicy {
        &self.policy
    }

    pub async fn check(
        &self,
        store: &dyn TicketStore,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), EngineError> {
        if store.failures(&user_key(username)).await? >= self.policy.failures_per_user {
            return Err(AuthnError::Throttled.into());
        }
        if let Some(ip) = ip {
            if store.failures(&ip_key(ip)).await? >= self.policy.failures_per_ip {
                return Err(AuthnError::Throttled.into());
            }
        }
        Ok(())
    }

    pub async fn record_failure(
        &self,
        store: &dyn TicketStore,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<(), EngineError> {
        store
            .count_failure(&user_key(username), self.policy.window)
            .await?;
        if let Some(ip) = ip {
            store.count_failure(&ip_key(ip), self.policy.window).await?;
        }
        Ok(())
    }

    pub async fn record_success(
        &self,
        store: &dyn TicketStore,
        username: &str,
    ) -> Result<(), EngineError> {
        store.clear_failures(&user_key(username)).await?;
        Ok(())
    }
}
