//! The ticket store: where everything a flow keeps between two HTTP requests lives.
//!
//! # The rule for every module
//! Anything a second node would need to continue a flow — SSO sessions,
//! service and proxy tickets, login `execution` tokens, throttling counters,
//! OIDC requests, codes, grants and refresh tokens, SAML request contexts,
//! delegation states — goes through this trait, never into one process's memory. Every
//! entry has a time to live; one-time things are taken with
//! [`TicketStore::consume_ticket`], which an implementation must make atomic
//! (two concurrent consumers: at most one gets the value).

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;

use crate::error::StoreError;
use crate::ticket::{ServiceRecord, Ticket, TicketGrantingTicket};
use async_trait::async_trait;
use std::time::Duration;

/// Single-logout records kept per SSO session: the most recent ones win.
/// Each visit to an application adds one; a session that visits more than
/// this many keeps notifying the latest.
pub const MAX_SERVICE_RECORDS: usize = 64;

#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Stores a new SSO session, alive for `idle` (capped by its `expires_at`),
    /// with its `services` (the most recent [`MAX_SERVICE_RECORDS`]): a
    /// session that replaces another carries its single-logout records.
    async fn create_session(
        &self,
        session: &TicketGrantingTicket,
        idle: Duration,
    ) -> Result<(), StoreError>;

    /// A live session, with its idle deadline pushed to now + `idle` (never
    /// past its hard limit); `None` when absent or expired.
    async fn touch_session(
        &self,
        id: &str,
        idle: Duration,
    ) -> Result<Option<TicketGrantingTicket>, StoreError>;

    /// A live session without extending it.
    async fn session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError>;

    /// A live session without extending it and without its single-logout
    /// list (`services` is empty): who, since when, how. What a check on
    /// the SSO path reads (the list holds up to [`MAX_SERVICE_RECORDS`]).
    async fn session_head(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        Ok(self.session(id).await?.map(|mut s| {
            s.services.clear();
            s
        }))
    }

    /// Replaces a live session's methods with `session.methods` (a step-up
    /// added a second factor), keeping its id, expiry and single-logout
    /// list: the protocols' tokens bound to it stay valid. `false` when
    /// the session is gone.
    async fn update_session_methods(
        &self,
        session: &TicketGrantingTicket,
    ) -> Result<bool, StoreError>;

    /// Adds a ticket of a live session, atomically with the session's
    /// upkeep: pushes its idle deadline (as [`TicketStore::touch_session`]),
    /// appends `record` to its single-logout list, and stores `ticket` for
    /// `ttl` (keeping at most [`MAX_SERVICE_RECORDS`] records, the most
    /// recent). Returns `false` (and stores nothing) when the session is gone.
    /// Concurrent grants and a removal never lose a record: each one lands
    /// before the removal (which returns it) or finds the session gone.
    async fn grant_ticket(
        &self,
        session_id: &str,
        idle: Duration,
        ticket: Ticket,
        ttl: Duration,
        record: Option<ServiceRecord>,
    ) -> Result<bool, StoreError>;

    /// Takes a session's ticket out atomically (of concurrent callers at most
    /// one gets it) and reads the session it belongs to in the same step,
    /// without its single-logout list (`services` is empty). `Some((ticket,
    /// None))` when the ticket existed but its session is gone.
    async fn redeem_ticket(
        &self,
        id: &str,
    ) -> Result<Option<(Ticket, Option<TicketGrantingTicket>)>, StoreError>;

    /// Ends a session and returns it with every recorded service, once: of two
    /// concurrent removals only one gets the session.
    async fn remove_session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError>;

    /// Stores a ticket that belongs to no session (a login form token) for `ttl`.
    async fn add_ticket(&self, ticket: Ticket, ttl: Duration) -> Result<(), StoreError>;

    /// Takes a ticket out atomically: of concurrent callers at most one gets it.
    async fn consume_ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError>;

    /// Reads a reusable ticket (a PGT) without taking it.
    async fn ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError>;

    /// Reserves one login attempt under `key` before its password is
    /// verified: counts it and returns `true` while fewer than `limit` are
    /// counted in the window (which starts with the first attempt and lasts
    /// `window`); at the limit counts nothing and returns `false`. Atomic: of
    /// concurrent callers at most `limit` get `true`, on every node sharing
    /// the store.
    async fn reserve_attempt(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<bool, StoreError>;

    /// Gives back one reserved attempt (a login that succeeded or could not be
    /// checked), keeping the window; never below zero.
    async fn release_attempt(&self, key: &str) -> Result<(), StoreError>;

    /// Failures counted under `key` in its current window.
    async fn failures(&self, key: &str) -> Result<u32, StoreError>;

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError>;

    /// Records the ids of the token signing keys this node holds, so that a
    /// node sharing the store and holding none can tell that it must not
    /// generate different ones.
    async fn publish_key_ids(&self, ids: &[String]) -> Result<(), StoreError>;

    /// Every signing key id any node sharing the store has published.
    async fn published_key_ids(&self) -> Result<Vec<String>, StoreError>;

    /// Stores a protocol module's flow record (an OIDC code, grant or
    /// refresh token, a SAML request context, a delegation state): opaque
    /// bytes under a key the module namespaces (`oidc:code:…`), for `ttl`.
    /// Replaces any record under that key.
    async fn put_record(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError>;

    /// Stores a record only when none lives under `key`; `false` when one
    /// does. Atomic: of concurrent callers exactly one stores. Remembers
    /// one-time identifiers (a SAML request ID) to refuse their replay.
    async fn add_record(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError>;

    /// A live record, without taking it.
    async fn record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Takes a record out atomically: of concurrent callers at most one gets it.
    async fn take_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// Replaces a live record's value, keeping its expiry, and returns the
    /// value it held, atomically: of concurrent callers each sees the value
    /// the one before it left, so exactly one sees the original. A missing
    /// record stays missing (`None`). One-time tokens that must remember
    /// their use (to detect a replay) are swapped for a marker.
    async fn swap_record(&self, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    async fn remove_record(&self, key: &str) -> Result<(), StoreError>;

    /// Whether the store answers; `/health` reports it.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Notes that `user` holds session `id`, which lives at most `ttl`, so
    /// that [`TicketStore::sessions_of`] finds it. A store that can list
    /// its sessions without an index need not keep one.
    async fn index_session(&self, user: &str, id: &str, ttl: Duration) -> Result<(), StoreError>;

    /// The live sessions of `user`, without their single-logout lists: what
    /// a support desk looks at before ending them. Not on any request path.
    async fn sessions_of(&self, user: &str) -> Result<Vec<TicketGrantingTicket>, StoreError>;
}
