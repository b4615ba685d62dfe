//! Attribute release consent decisions, in the factors' SQL store (the
//! core's `Consents` seam is implemented on top of these by the web crate).
//! A decision is per user and service, for one attribute set (its digest),
//! until it expires.

use crate::factors::Factors;
use crate::MfaError;
use std::time::Duration;

fn sql_time(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// Service keys are registry names, user names the store's keys: bounded,
/// without NUL (PostgreSQL text cannot hold one).
fn check(user: &str, service: &str, digest: &str) -> Result<(), MfaError> {
    let ok = |s: &str, max: usize| !s.is_empty() && s.len() <= max && !s.contains('\0');
    if ok(user, 1024) && ok(service, 1024) && ok(digest, 128) {
        Ok(())
    } else {
        Err(MfaError::InvalidInput("not a consent key".into()))
    }
}

impl Factors {
    /// Whether `user` accepted releasing the set `digest` to `service`,
    /// and the decision lives at `now` (unix seconds).
    pub async fn consent_given(
        &self,
        user: &str,
        service: &str,
        digest: &str,
        now: u64,
    ) -> Result<bool, MfaError> {
        if check(user, service, digest).is_err() {
            return Ok(false);
        }
        self.store()
            .consent_given(user, service, digest, sql_time(now))
            .await
    }

    /// Records an acceptance made at `now`, living `ttl`; it replaces the
    /// user's earlier decision for the service.
    pub async fn remember_consent(
        &self,
        user: &str,
        service: &str,
        digest: &str,
        ttl: Duration,
        now: u64,
    ) -> Result<(), MfaError> {
        check(user, service, digest)?;
        self.store()
            .remember_consent(
                user,
                service,
                digest,
                sql_time(now),
                sql_time(now.saturating_add(ttl.as_secs())),
            )
            .await
    }

    /// Drops the user's decision for `service` (and their expired ones).
    pub async fn forget_consent(
        &self,
        user: &str,
        service: &str,
        now: u64,
    ) -> Result<(), MfaError> {
        if check(user, service, "-").is_err() {
            return Ok(());
        }
        self.store()
            .forget_consent(user, service, sql_time(now))
            .await
    }
}
