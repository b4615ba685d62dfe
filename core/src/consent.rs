//! Attribute release consent: a service registered with `consent` gets no
//! ticket until its user accepted what it will receive.
//!
//! A decision is kept per user, service and *set of attribute names*
//! ([`digest`]): names, not values, so that a changed value (a new group, a
//! new address) does not ask again, while a service that starts receiving
//! another attribute does. The page shows the values all the same.
//!
//! While the user decides, the sign-in waits in the ticket store under a
//! random id, bound to the browser (like the second step), and is taken
//! out once: a decision cannot be replayed.

use crate::error::{EngineError, StoreError};
use crate::ids::new_ticket_id;
use crate::principal::{Attributes, Principal};
use crate::record;
use crate::second_step::PendingSignIn;
use crate::store::TicketStore;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// The decisions users made, kept outside the ticket store (they outlive
/// sessions): the MFA store's SQL database in Castellan.
#[async_trait]
pub trait Consents: Send + Sync + 'static {
    /// Whether `user` accepted, and not longer ago than its lifetime, the
    /// release of the attribute set `digest` to `service`.
    async fn given(
        &self,
        user: &str,
        service: &str,
        digest: &str,
    ) -> Result<bool, ConsentStoreError>;
    /// Records an acceptance, replacing the user's earlier one for the
    /// service; it lives `ttl`.
    async fn remember(
        &self,
        user: &str,
        service: &str,
        digest: &str,
        ttl: Duration,
    ) -> Result<(), ConsentStoreError>;
    /// Drops the user's decision for the service (a decline).
    async fn forget(&self, user: &str, service: &str) -> Result<(), ConsentStoreError>;
}

#[derive(Debug, thiserror::Error)]
#[error("consent store unavailable: {0}")]
pub struct ConsentStoreError(pub String);

/// The digest a decision is remembered by: SHA-256 over the sorted
/// attribute names, hex. Values are left out on purpose (see the module).
pub fn digest(attributes: &Attributes) -> String {
    let mut hash = Sha256::new();
    // A BTreeMap iterates sorted; each name is length-prefixed so that no
    // two sets share an encoding.
    for name in attributes.keys() {
        hash.update((name.len() as u64).to_be_bytes());
        hash.update(name.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// What the user is asked to accept for a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentAsk {
    /// Whose decision it is.
    pub user: String,
    /// The service's name in the registry: decisions are kept under it.
    pub service_key: String,
    /// What will be released, names and values.
    pub attributes: Attributes,
    /// [`digest`] of `attributes`.
    pub digest: String,
    /// How long an acceptance lives.
    pub ttl: Duration,
}

/// How a sign-in waiting for consent goes on once accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AfterConsent {
    /// The browser's live SSO session grants the ticket.
    Session(String),
    /// A login whose factors passed opens the session (and its ticket).
    SignIn(PendingSignIn),
}

/// A sign-in waiting for the user's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingConsent {
    pub principal: Arc<Principal>,
    /// The service URL the ticket is for.
    pub service: String,
    pub ask: ConsentAsk,
    /// The browser's pre-session id: only that browser may decide.
    pub browser: String,
    /// How the protocol wants the ticket sent back (CAS `method`).
    pub response_method: Option<String>,
    pub then: AfterConsent,
}

const PREFIX: &str = "CNS";
const KEY: &str = "engine:consent:";
/// Time enough to read a page of attributes.
pub const CONSENT_STEP_TTL: Duration = Duration::from_secs(10 * 60);

fn key(id: &str) -> Option<String> {
    crate::ids::step_key(id, PREFIX, KEY)
}

fn same_browser(pending: &PendingConsent, browser: &str) -> bool {
    crate::ids::same_browser(&pending.browser, browser)
}

/// Keeps a sign-in until its user decides; the id to decide with.
pub(crate) async fn defer(
    store: &dyn TicketStore,
    pending: &PendingConsent,
) -> Result<String, EngineError> {
    let id = new_ticket_id(PREFIX);
    let key = key(&id).ok_or_else(|| StoreError::Corrupt("consent id".into()))?;
    store
        .put_record(&key, &record::encode(pending)?, CONSENT_STEP_TTL)
        .await?;
    Ok(id)
}

/// Takes a waiting sign-in out once, when it lives and belongs to
/// `browser` (another browser holding the id does not even spend it).
pub(crate) async fn take(
    store: &dyn TicketStore,
    id: &str,
    browser: &str,
) -> Result<Option<PendingConsent>, EngineError> {
    let Some(key) = key(id) else { return Ok(None) };
    let Some(bytes) = store.record(&key).await? else {
        return Ok(None);
    };
    let pending: PendingConsent = record::decode(&bytes)?;
    if !same_browser(&pending, browser) {
        return Ok(None);
    }
    let Some(bytes) = store.take_record(&key).await? else {
        return Ok(None);
    };
    let pending: PendingConsent = record::decode(&bytes)?;
    Ok(same_browser(&pending, browser).then_some(pending))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Attributes {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
            .collect()
    }

    #[test]
    fn the_digest_follows_names_not_values() {
        let a = digest(&attrs(&[("mail", "a@x"), ("cn", "A")]));
        assert_eq!(a, digest(&attrs(&[("cn", "B"), ("mail", "b@y")])));
        assert_ne!(a, digest(&attrs(&[("mail", "a@x")])));
        assert_ne!(
            a,
            digest(&attrs(&[("mail", "a@x"), ("cn", "A"), ("sn", "S")]))
        );
        // Length prefixes: {"ab"} and {"a","b"} differ.
        assert_ne!(
            digest(&attrs(&[("ab", "")])),
            digest(&attrs(&[("a", ""), ("b", "")]))
        );
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn ids_are_checked_before_any_store_key_is_built() {
        assert!(key("CNS-abc_9").is_some());
        assert!(key("MFA-abc").is_none());
        assert!(key("CNS-a:b").is_none());
        assert!(key(&format!("CNS{}", "a".repeat(80))).is_none());
    }
}
