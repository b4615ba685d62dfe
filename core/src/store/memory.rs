//! The embedded in-memory store: one process, nothing survives a restart.
//!
//! Entries live in many small shards, each behind its own lock, so that no
//! request waits for more than one shard. Expired entries are invisible at
//! once (checked on every read) and are dropped by a background sweeper that
//! visits one shard at a time: there is never a stop-the-world scan.

use crate::clock::{Clock, Millis, SystemClock};
use crate::error::StoreError;
use crate::methods::AuthnMethods;
use crate::principal::Principal;
use crate::store::{TicketStore, MAX_SERVICE_RECORDS};
use crate::ticket::{ServiceRecord, Ticket, TicketGrantingTicket};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Weak};
use std::time::Duration;

const SHARDS: usize = 64;

/// Boxed, so that a table slot stays small whatever the value: the tables
/// hold up to twice as many slots as entries.
enum Value {
    Session(Box<StoredSession>),
    /// One allocation per ticket (its postcard encoding) instead of five:
    /// tickets come and go by the thousand, and few, whole allocations
    /// leave the allocator less to fragment.
    Ticket(Box<[u8]>),
    Counter(u32),
    /// A protocol module's flow record.
    Record(Box<[u8]>),
}

/// A session as held here: its id is the map key, not stored a second time.
struct StoredSession {
    principal: Arc<Principal>,
    authenticated_at: Millis,
    expires_at: Millis,
    long_term: bool,
    methods: AuthnMethods,
    /// Single-logout records, encoded like tickets: one allocation each.
    services: Vec<Box<[u8]>>,
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Box<[u8]>, StoreError> {
    postcard::to_allocvec(value)
        .map(Vec::into_boxed_slice)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl StoredSession {
    fn new(s: &TicketGrantingTicket) -> Result<Self, StoreError> {
        Ok(Self {
            principal: s.principal.clone(),
            authenticated_at: s.authenticated_at,
            expires_at: s.expires_at,
            long_term: s.long_term,
            methods: s.methods,
            services: s.services[s.services.len().saturating_sub(MAX_SERVICE_RECORDS)..]
                .iter()
                .map(encode)
                .collect::<Result<_, _>>()?,
        })
    }

    fn to_session(
        &self,
        id: &str,
        with_services: bool,
    ) -> Result<TicketGrantingTicket, StoreError> {
        Ok(TicketGrantingTicket {
            id: id.to_owned(),
            principal: self.principal.clone(),
            authenticated_at: self.authenticated_at,
            expires_at: self.expires_at,
            long_term: self.long_term,
            methods: self.methods,
            services: if with_services {
                self.services
                    .iter()
                    .map(|r| decode(r))
                    .collect::<Result<_, _>>()?
            } else {
                Vec::new()
            },
        })
    }
}

struct Entry {
    value: Value,
    expires_at: Millis,
}

type Shard = Mutex<HashMap<Box<str>, Entry>>;

pub struct MemoryStore {
    shards: Box<[Shard]>,
    hasher: RandomState,
    clock: Arc<dyn Clock>,
    key_ids: Mutex<Vec<String>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryStore {
    /// A live session, without extending it; `with_services`: its
    /// single-logout list decoded too.
    fn live_session(
        &self,
        id: &str,
        with_services: bool,
    ) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let now = self.clock.now();
        let shard = self.shard(id).lock();
        Ok(match shard.get(id) {
            Some(Entry {
                value: Value::Session(s),
                expires_at,
            }) if *expires_at > now => Some(s.to_session(id, with_services)?),
            _ => None,
        })
    }

    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            clock,
            key_ids: Mutex::new(Vec::new()),
        }
    }

    /// Starts the background sweeper on the current tokio runtime; it stops
    /// when the store is dropped.
    pub fn spawn_sweeper(self: &Arc<Self>, period: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            let pause = period / SHARDS as u32;
            let mut next = 0usize;
            loop {
                tokio::time::sleep(pause).await;
                let Some(store) = weak.upgrade() else { break };
                store.sweep_shard(next);
                next = (next + 1) % SHARDS;
            }
        });
    }

    /// Drops the expired entries of one shard; returns how many.
    pub fn sweep_shard(&self, index: usize) -> usize {
        let now = self.clock.now();
        let mut shard = self.shards[index % SHARDS].lock();
        let before = shard.len();
        shard.retain(|_, e| e.expires_at > now);
        // A table never shrinks by itself: after a burst of tickets it would
        // keep room for all of them. A rehash of one shard costs tens of
        // microseconds, once per sweep at most.
        if shard.capacity() > 1024 && shard.len() * 2 <= shard.capacity() {
            shard.shrink_to_fit();
        }
        before - shard.len()
    }

    /// Entries held, expired or not (for metrics and tests).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn session_without_services(&self, id: &str) -> Option<TicketGrantingTicket> {
        let now = self.clock.now();
        let shard = self.shard(id).lock();
        match shard.get(id) {
            Some(Entry {
                value: Value::Session(s),
                expires_at,
            }) if *expires_at > now => s.to_session(id, false).ok(),
            _ => None,
        }
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    fn deadline(&self, ttl: Duration) -> Millis {
        self.clock.now().saturating_add(ttl.as_millis() as u64)
    }
}

/// Appends a single-logout record, dropping the oldest beyond the limit.
fn keep_recent(services: &mut Vec<Box<[u8]>>, record: Box<[u8]>) {
    if services.len() >= MAX_SERVICE_RECORDS {
        services.remove(0);
    }
    if services.capacity() == 0 {
        services.reserve_exact(1);
    }
    services.push(record);
}

/// A ticket as stored: without its id, which is its key.
fn decode_ticket(id: &str, bytes: &[u8]) -> Result<Ticket, StoreError> {
    let mut ticket: Ticket = decode(bytes)?;
    id.clone_into(ticket.id_mut());
    Ok(ticket)
}

/// Keeps session and ticket ids apart from counter keys (which are user data).
fn counter_key(key: &str) -> String {
    format!("\u{0}failures:{key}")
}

/// Keeps protocol records apart from tickets and counters.
fn record_key(key: &str) -> String {
    format!("\u{0}record:{key}")
}

#[async_trait]
impl TicketStore for MemoryStore {
    async fn create_session(
        &self,
        session: &TicketGrantingTicket,
        idle: Duration,
    ) -> Result<(), StoreError> {
        let expires_at = self.deadline(idle).min(session.expires_at);
        self.shard(&session.id).lock().insert(
            session.id.as_str().into(),
            Entry {
                value: Value::Session(Box::new(StoredSession::new(session)?)),
                expires_at,
            },
        );
        Ok(())
    }

    async fn touch_session(
        &self,
        id: &str,
        idle: Duration,
    ) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let now = self.clock.now();
        let mut shard = self.shard(id).lock();
        Ok(match shard.get_mut(id) {
            Some(Entry {
                value: Value::Session(s),
                expires_at,
            }) if *expires_at > now => {
                *expires_at = now
                    .saturating_add(idle.as_millis() as u64)
                    .min(s.expires_at);
                Some(s.to_session(id, true)?)
            }
            _ => None,
        })
    }

    async fn session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        self.live_session(id, true)
    }

    async fn update_session_methods(
        &self,
        session: &TicketGrantingTicket,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let mut shard = self.shard(&session.id).lock();
        Ok(match shard.get_mut(session.id.as_str()) {
            Some(Entry {
                value: Value::Session(s),
                expires_at,
            }) if *expires_at > now => {
                s.methods = session.methods;
                true
            }
            _ => false,
        })
    }

    async fn session_head(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        self.live_session(id, false)
    }

    async fn grant_ticket(
        &self,
        session_id: &str,
        idle: Duration,
        ticket: Ticket,
        ttl: Duration,
        record: Option<ServiceRecord>,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let record = record.as_ref().map(encode).transpose()?;
        {
            let mut shard = self.shard(session_id).lock();
            match shard.get_mut(session_id) {
                Some(Entry {
                    value: Value::Session(s),
                    expires_at,
                }) if *expires_at > now => {
                    *expires_at = now
                        .saturating_add(idle.as_millis() as u64)
                        .min(s.expires_at);
                    if let Some(record) = record {
                        keep_recent(&mut s.services, record);
                    }
                }
                _ => return Ok(false),
            }
        }
        // A removal between the two locks leaves a ticket whose session is
        // gone; redeem_ticket reports exactly that, so it never validates.
        self.add_ticket(ticket, ttl).await?;
        Ok(true)
    }

    async fn redeem_ticket(
        &self,
        id: &str,
    ) -> Result<Option<(Ticket, Option<TicketGrantingTicket>)>, StoreError> {
        let Some(ticket) = self.consume_ticket(id).await? else {
            return Ok(None);
        };
        let session = match ticket.session_id() {
            Some(session_id) => self.session_without_services(session_id),
            None => None,
        };
        Ok(Some((ticket, session)))
    }

    /// Every session is in memory: a scan finds them, no index to keep.
    async fn index_session(&self, _: &str, _: &str, _: Duration) -> Result<(), StoreError> {
        Ok(())
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<TicketGrantingTicket>, StoreError> {
        let now = self.clock.now();
        let mut found = Vec::new();
        for shard in self.shards.iter() {
            for (id, entry) in shard.lock().iter() {
                if let Value::Session(s) = &entry.value {
                    if entry.expires_at > now && s.principal.id == user {
                        found.push(s.to_session(id, false)?);
                    }
                }
            }
        }
        Ok(found)
    }

    async fn remove_session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let now = self.clock.now();
        let mut shard = self.shard(id).lock();
        if !matches!(
            shard.get(id),
            Some(Entry {
                value: Value::Session(_),
                ..
            })
        ) {
            return Ok(None);
        }
        Ok(match shard.remove(id) {
            Some(Entry {
                value: Value::Session(s),
                expires_at,
            }) if expires_at > now => Some(s.to_session(id, true)?),
            _ => None,
        })
    }

    async fn add_ticket(&self, mut ticket: Ticket, ttl: Duration) -> Result<(), StoreError> {
        let expires_at = self.deadline(ttl);
        // The id is the map key: the value does not hold it a second time.
        let key: Box<str> = std::mem::take(ticket.id_mut()).into_boxed_str();
        let bytes = encode(&ticket)?;
        self.shard(&key).lock().insert(
            key,
            Entry {
                value: Value::Ticket(bytes),
                expires_at,
            },
        );
        Ok(())
    }

    async fn consume_ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        let now = self.clock.now();
        let mut shard = self.shard(id).lock();
        if !matches!(
            shard.get(id),
            Some(Entry {
                value: Value::Ticket(_),
                ..
            })
        ) {
            return Ok(None);
        }
        let taken = shard.remove(id);
        drop(shard);
        match taken {
            Some(Entry {
                value: Value::Ticket(bytes),
                expires_at,
            }) if expires_at > now => decode_ticket(id, &bytes).map(Some),
            _ => Ok(None),
        }
    }

    async fn ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        let now = self.clock.now();
        let shard = self.shard(id).lock();
        match shard.get(id) {
            Some(Entry {
                value: Value::Ticket(bytes),
                expires_at,
            }) if *expires_at > now => decode_ticket(id, bytes).map(Some),
            _ => Ok(None),
        }
    }

    async fn reserve_attempt(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let key = counter_key(key);
        let now = self.clock.now();
        let mut shard = self.shard(&key).lock();
        let entry = shard.entry(key.into()).or_insert(Entry {
            value: Value::Counter(0),
            expires_at: 0,
        });
        if entry.expires_at <= now {
            *entry = Entry {
                value: Value::Counter(0),
                expires_at: now.saturating_add(window.as_millis() as u64),
            };
        }
        match &mut entry.value {
            Value::Counter(n) if *n < limit => {
                *n += 1;
                Ok(true)
            }
            Value::Counter(_) => Ok(false),
            _ => Err(StoreError::Corrupt(
                "counter key holds another value".into(),
            )),
        }
    }

    async fn release_attempt(&self, key: &str) -> Result<(), StoreError> {
        let key = counter_key(key);
        let now = self.clock.now();
        let mut shard = self.shard(&key).lock();
        if let Some(Entry {
            value: Value::Counter(n),
            expires_at,
        }) = shard.get_mut(key.as_str())
        {
            if *expires_at > now {
                *n = n.saturating_sub(1);
            }
        }
        Ok(())
    }

    async fn failures(&self, key: &str) -> Result<u32, StoreError> {
        let key = counter_key(key);
        let now = self.clock.now();
        let shard = self.shard(&key).lock();
        Ok(match shard.get(key.as_str()) {
            Some(Entry {
                value: Value::Counter(n),
                expires_at,
            }) if *expires_at > now => *n,
            _ => 0,
        })
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let key = counter_key(key);
        self.shard(&key).lock().remove(key.as_str());
        Ok(())
    }

    async fn publish_key_ids(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut known = self.key_ids.lock();
        for id in ids {
            if !known.contains(id) {
                known.push(id.clone());
            }
        }
        Ok(())
    }

    async fn published_key_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.key_ids.lock().clone())
    }

    async fn put_record(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let key = record_key(key);
        let expires_at = self.deadline(ttl);
        self.shard(&key).lock().insert(
            key.into(),
            Entry {
                value: Value::Record(value.into()),
                expires_at,
            },
        );
        Ok(())
    }

    async fn add_record(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let key = record_key(key);
        let now = self.clock.now();
        let expires_at = self.deadline(ttl);
        let mut shard = self.shard(&key).lock();
        if shard.get(key.as_str()).is_some_and(|e| e.expires_at > now) {
            return Ok(false);
        }
        shard.insert(
            key.into(),
            Entry {
                value: Value::Record(value.into()),
                expires_at,
            },
        );
        Ok(true)
    }

    async fn record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = record_key(key);
        let now = self.clock.now();
        let shard = self.shard(&key).lock();
        Ok(match shard.get(key.as_str()) {
            Some(Entry {
                value: Value::Record(bytes),
                expires_at,
            }) if *expires_at > now => Some(bytes.to_vec()),
            _ => None,
        })
    }

    async fn take_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = record_key(key);
        let now = self.clock.now();
        let taken = self.shard(&key).lock().remove(key.as_str());
        Ok(match taken {
            Some(Entry {
                value: Value::Record(bytes),
                expires_at,
            }) if expires_at > now => Some(bytes.into_vec()),
            _ => None,
        })
    }

    async fn swap_record(&self, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = record_key(key);
        let now = self.clock.now();
        let mut shard = self.shard(&key).lock();
        Ok(match shard.get_mut(key.as_str()) {
            Some(Entry {
                value: Value::Record(bytes),
                expires_at,
            }) if *expires_at > now => Some(std::mem::replace(bytes, value.into()).into_vec()),
            _ => None,
        })
    }

    async fn remove_record(&self, key: &str) -> Result<(), StoreError> {
        let key = record_key(key);
        self.shard(&key).lock().remove(key.as_str());
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn memory_store_passes_the_conformance_suite() {
        conformance::run_all(|| Arc::new(MemoryStore::default())).await;
    }

    #[tokio::test]
    async fn sweeper_drops_expired_entries_shard_by_shard() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = MemoryStore::new(clock.clone());
        for i in 0..1000 {
            store
                .add_ticket(
                    Ticket::LoginFlow(crate::ticket::LoginFlow {
                        id: format!("LF-{i}"),
                        service: None,
                    }),
                    Duration::from_secs(if i % 2 == 0 { 1 } else { 100 }),
                )
                .await
                .unwrap();
        }
        clock.advance(Duration::from_secs(2));
        let dropped: usize = (0..SHARDS).map(|i| store.sweep_shard(i)).sum();
        assert_eq!(dropped, 500);
        assert_eq!(store.len(), 500);
    }
}
