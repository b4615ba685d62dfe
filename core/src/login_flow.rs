//! Login form tokens (`execution`) kept by the browser, not the server.
//!
//! Rendering a login form stores nothing: the token is the issue time, a
//! random nonce and an HMAC over both, the form's service and the browser's
//! pre-session id. Only a submitted token is remembered, for its remaining
//! lifetime, so that it works once. An anonymous `GET /login` therefore costs
//! no memory (Apereo CAS likewise keeps its webflow state client-side).
//! The MAC key lives in the ticket store, so every node sharing it accepts a
//! form rendered by another.

use crate::clock::Clock;
use crate::error::StoreError;
use crate::store::TicketStore;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
use std::time::Duration;

const PREFIX: &str = "LF-";
const KEY_RECORD: &str = "engine:login-flow-key";
const KEY_RECORD_TTL: Duration = Duration::from_secs(400 * 24 * 3600);
/// How long a node trusts its copy of the key before reading it again.
const KEY_REFRESH_MS: u64 = 5 * 60 * 1000;
const NONCE_BYTES: usize = 16;
const TAG_BYTES: usize = 32;
const TOKEN_BYTES: usize = 8 + NONCE_BYTES + TAG_BYTES;
/// Tolerated clock difference between the node that rendered and the one
/// that checks.
const SKEW_MS: u64 = 60_000;

type HmacSha256 = Hmac<Sha256>;

pub struct LoginFlows {
    store: Arc<dyn TicketStore>,
    clock: Arc<dyn Clock>,
    ttl: Duration,
    key: parking_lot::Mutex<Option<([u8; 32], u64)>>,
}

impl LoginFlows {
    pub fn new(store: Arc<dyn TicketStore>, clock: Arc<dyn Clock>, ttl: Duration) -> Self {
        Self {
            store,
            clock,
            ttl,
            key: parking_lot::Mutex::new(None),
        }
    }

    async fn key(&self) -> Result<[u8; 32], StoreError> {
        let now = self.clock.now();
        if let Some((key, read_at)) = *self.key.lock() {
            if now.saturating_sub(read_at) < KEY_REFRESH_MS {
                return Ok(key);
            }
        }
        let key = match self.stored_key().await? {
            Some(key) => key,
            None => {
                let fresh: [u8; 32] = rand::random();
                // Of nodes starting together one key wins; the others read it.
                if self
                    .store
                    .add_record(KEY_RECORD, &fresh, KEY_RECORD_TTL)
                    .await?
                {
                    fresh
                } else {
                    self.stored_key()
                        .await?
                        .ok_or_else(|| StoreError::Corrupt("login form key vanished".into()))?
                }
            }
        };
        *self.key.lock() = Some((key, now));
        Ok(key)
    }

    async fn stored_key(&self) -> Result<Option<[u8; 32]>, StoreError> {
        match self.store.record(KEY_RECORD).await? {
            None => Ok(None),
            Some(bytes) => <[u8; 32]>::try_from(bytes.as_slice())
                .map(Some)
                .map_err(|_| StoreError::Corrupt("login form key has the wrong size".into())),
        }
    }

    fn tag(key: &[u8; 32], head: &[u8], service: Option<&str>, browser: &str) -> [u8; TAG_BYTES] {
        // Length-prefixed fields: no two (service, browser) pairs share an input.
        let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key size");
        mac.update(b"castellan login flow v1\0");
        mac.update(head);
        mac.update(&(browser.len() as u64).to_be_bytes());
        mac.update(browser.as_bytes());
        match service {
            Some(s) => {
                mac.update(&[1]);
                mac.update(&(s.len() as u64).to_be_bytes());
                mac.update(s.as_bytes());
            }
            None => mac.update(&[0]),
        }
        mac.finalize().into_bytes().into()
    }

    /// A token for a form rendered for `service` in the browser `browser`.
    pub async fn issue(&self, service: Option<&str>, browser: &str) -> Result<String, StoreError> {
        let key = self.key().await?;
        let mut token = Vec::with_capacity(TOKEN_BYTES);
        token.extend_from_slice(&self.clock.now().to_be_bytes());
        token.extend_from_slice(&rand::random::<[u8; NONCE_BYTES]>());
        let tag = Self::tag(&key, &token, service, browser);
        token.extend_from_slice(&tag);
        Ok(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(token)))
    }

    /// Whether `token` was issued by a node of this store for this service
    /// and browser, is not expired, and is used now for the first time.
    pub async fn redeem(
        &self,
        token: &str,
        service: Option<&str>,
        browser: &str,
    ) -> Result<bool, StoreError> {
        let Some(bytes) = token
            .strip_prefix(PREFIX)
            .filter(|t| t.len() <= 2 * TOKEN_BYTES)
            .and_then(|t| URL_SAFE_NO_PAD.decode(t).ok())
            .filter(|b| b.len() == TOKEN_BYTES)
        else {
            return Ok(false);
        };
        let (head, tag) = bytes.split_at(8 + NONCE_BYTES);
        let key = self.key().await?;
        let expected = Self::tag(&key, head, service, browser);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Ok(false);
        }
        let mut issued = [0u8; 8];
        issued.copy_from_slice(&head[..8]);
        let issued = u64::from_be_bytes(issued);
        let now = self.clock.now();
        let expires = issued.saturating_add(self.ttl.as_millis() as u64);
        if issued > now.saturating_add(SKEW_MS) || expires <= now {
            return Ok(false);
        }
        // Remembered only until it would have expired anyway.
        let used = format!(
            "engine:login-flow-used:{}",
            URL_SAFE_NO_PAD.encode(&head[8..])
        );
        let remaining = Duration::from_millis(expires - now + SKEW_MS);
        self.store.add_record(&used, b"", remaining).await
    }
}
