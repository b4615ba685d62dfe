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
fn user_key(scope: &str, username: &str) -> String {
    let folded: String = username
        .chars()
        .take(256)
        .flat_map(char::to_lowercase)
        .collect();
    format!("{scope}:{folded}")
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

    /// Reserves one attempt for `username` and for the client address
    /// before the password is verified, so that parallel attempts cannot all
    /// pass a check made before any of them is counted. A refusal reserves
    /// nothing.
    pub async fn reserve(
        &self,
        store: &dyn TicketStore,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<Reservation, EngineError> {
        self.reserve_in("user", store, username, ip).await
    }

    /// As [`Throttle::reserve`] for wrong second-factor codes: counted
    /// apart from passwords per user (a right password must not wipe them,
    /// nor they lock the password out), with the address's shared count.
    pub async fn reserve_second_factor(
        &self,
        store: &dyn TicketStore,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<Reservation, EngineError> {
        self.reserve_in("mfa", store, username, ip).await
    }

    async fn reserve_in(
        &self,
        scope: &str,
        store: &dyn TicketStore,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<Reservation, EngineError> {
        let user = user_key(scope, username);
        if !store
            .reserve_attempt(&user, self.policy.failures_per_user, self.policy.window)
            .await?
        {
            return Err(AuthnError::Throttled.into());
        }
        let ip = ip.map(ip_key);
        if let Some(ip) = &ip {
            let reserved = store
                .reserve_attempt(ip, self.policy.failures_per_ip, self.policy.window)
                .await;
            if !matches!(reserved, Ok(true)) {
                store.release_attempt(&user).await?;
                reserved?;
                return Err(AuthnError::Throttled.into());
            }
        }
        Ok(Reservation { user, ip })
    }

    /// The password was right: the user's failures are forgotten, and the
    /// attempt does not count against the address.
    pub async fn succeeded(
        &self,
        store: &dyn TicketStore,
        reservation: Reservation,
    ) -> Result<(), EngineError> {
        store.clear_failures(&reservation.user).await?;
        if let Some(ip) = &reservation.ip {
            store.release_attempt(ip).await?;
        }
        Ok(())
    }

    /// The password could not be checked (the directory is down): the
    /// attempt is given back, it proved nothing.
    pub async fn undecided(
        &self,
        store: &dyn TicketStore,
        reservation: Reservation,
    ) -> Result<(), EngineError> {
        store.release_attempt(&reservation.user).await?;
        if let Some(ip) = &reservation.ip {
            store.release_attempt(ip).await?;
        }
        Ok(())
    }
}

/// The counters one login attempt holds. A wrong password keeps them: the
/// reservation is the failure's count.
#[must_use]
pub struct Reservation {
    user: String,
    ip: Option<String>,
}
