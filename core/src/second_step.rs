//! A sign-in half done: the first factor passed, the second is awaited.
//!
//! Nothing of the session exists yet (no `CASTGC`, no ticket): the user,
//! the service and what was proven so far wait in the ticket store under a
//! random id, bound to the browser that started, until a second factor
//! finishes the sign-in through [`Engine::sign_in`](crate::Engine::sign_in)
//! or the record expires. Any node sharing the store can finish it.

use crate::error::{EngineError, StoreError};
use crate::ids::new_ticket_id;
use crate::methods::AuthnMethods;
use crate::principal::Principal;
use crate::record;
use crate::store::TicketStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "MFA";
const KEY: &str = "engine:second-step:";
/// Long enough to find a phone or enrol one; short enough to be useless
/// to someone who finds the browser later.
pub const SECOND_STEP_TTL: Duration = Duration::from_secs(10 * 60);

/// What a sign-in waiting for its second factor keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingSignIn {
    pub principal: Arc<Principal>,
    /// What the user proved already (the password, an upstream).
    pub methods: AuthnMethods,
    /// The service to grant a ticket for once done.
    pub service: Option<String>,
    pub long_term: bool,
    /// The first factor was presented for this very login (not SSO).
    pub from_new_login: bool,
    /// The SSO session whose first factor this is (a step-up), if any.
    pub step_up: Option<String>,
    /// The browser's pre-session id: only that browser may finish.
    pub browser: String,
    /// How the protocol wants the ticket sent back (CAS `method`).
    pub response_method: Option<String>,
    /// The second factor's own state (an enrolment's secret, a WebAuthn
    /// challenge): opaque here.
    pub challenge: Vec<u8>,
}

pub(crate) struct SecondSteps {
    store: Arc<dyn TicketStore>,
}

fn key(id: &str) -> Option<String> {
    crate::ids::step_key(id, PREFIX, KEY)
}

impl SecondSteps {
    pub(crate) fn new(store: Arc<dyn TicketStore>) -> Self {
        Self { store }
    }

    pub(crate) async fn defer(&self, pending: &PendingSignIn) -> Result<String, EngineError> {
        let id = new_ticket_id(PREFIX);
        let key = key(&id).ok_or_else(|| StoreError::Corrupt("second step id".into()))?;
        self.store
            .put_record(&key, &record::encode(pending)?, SECOND_STEP_TTL)
            .await?;
        Ok(id)
    }

    /// The pending sign-in, when it lives and belongs to `browser`.
    pub(crate) async fn get(
        &self,
        id: &str,
        browser: &str,
    ) -> Result<Option<PendingSignIn>, EngineError> {
        let Some(key) = key(id) else { return Ok(None) };
        let Some(bytes) = self.store.record(&key).await? else {
            return Ok(None);
        };
        let pending: PendingSignIn = record::decode(&bytes)?;
        Ok(same_browser(&pending, browser).then_some(pending))
    }

    /// Replaces the second factor's state, keeping the expiry.
    pub(crate) async fn update(
        &self,
        id: &str,
        pending: &PendingSignIn,
    ) -> Result<bool, EngineError> {
        let Some(key) = key(id) else { return Ok(false) };
        Ok(self
            .store
            .swap_record(&key, &record::encode(pending)?)
            .await?
            .is_some())
    }

    /// Takes the pending sign-in out, once: of two concurrent finishes
    /// only one gets it.
    pub(crate) async fn take(
        &self,
        id: &str,
        browser: &str,
    ) -> Result<Option<PendingSignIn>, EngineError> {
        // Another browser holding the id must not even spend it.
        if self.get(id, browser).await?.is_none() {
            return Ok(None);
        }
        let Some(key) = key(id) else { return Ok(None) };
        let Some(bytes) = self.store.take_record(&key).await? else {
            return Ok(None);
        };
        let pending: PendingSignIn = record::decode(&bytes)?;
        Ok(same_browser(&pending, browser).then_some(pending))
    }
}

fn same_browser(pending: &PendingSignIn, browser: &str) -> bool {
    crate::ids::same_browser(&pending.browser, browser)
}
