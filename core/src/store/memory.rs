//! The embedded in-memory store: one process, nothing survives a restart.
//!
//! Entries live in many small shards, each behind its own lock, so that no
//! request waits for more than one shard. Expired entries are invisible at
//! once (checked on every read) and are dropped by a background sweeper that
//! visits one shard at a time: there is never a stop-the-world scan.
//!
//! # What an entry costs
//! A hundred thousand sessions must fit in a few tens of megabytes, so:
//! - Keys are not stored: an entry is found by a 128-bit keyed hash of its
//!   namespace and id (two SipHash-2-4 with independent random keys drawn
//!   per process). Ids are secrets that clients present; without the keys
//!   nobody can make two ids meet, and the odds of a chance meeting are
//!   2^-128. A table slot is then 16 bytes of key and one small value.
//! - Sessions, tickets, records and counters have a table each in every
//!   shard, without a tag per entry: the ten-second tickets' table shrinks
//!   after a burst without rehashing the sessions.
//! - A session keeps its own id (packed, see [`compact`]) for
//!   [`TicketStore::sessions_of`], and its single-logout records in one
//!   allocation of 48 bytes each, their tickets' ids packed without the
//!   session's tag.
//! - A shard holds each service URL once, however many tickets and records
//!   name it (a pointer each); the sweeper lets it go once none does.
//! - A session is keyed by its routing tag, which its tickets' ids end
//!   with, and checks its whole id itself (in constant time).
//! - A service ticket granted with its logout record is held in that record
//!   (a deadline and a flag in its spare bytes): no entry of its own, and
//!   the ticket, found through the session, is redeemed under the session's
//!   lock. It moves to the tickets' table if it outlives its session or its
//!   record.
//! - In the tickets' table, a service ticket is 48 bytes in its slot: its
//!   deadline, its session id packed without the tag its own id carries
//!   (the caller presents that id), its URL. Other tickets keep their
//!   encoding (without their id) in one allocation.
//! - An empty record (a one-time marker) allocates nothing, and lives in a
//!   table of deadlines alone.

mod compact;

use crate::clock::{Clock, Millis, SystemClock};
use crate::error::StoreError;
use crate::methods::AuthnMethods;
use crate::principal::Principal;
use crate::service::LogoutMode;
use crate::store::{TicketStore, MAX_SERVICE_RECORDS};
use crate::ticket::{ServiceRecord, ServiceTicket, Ticket, TicketGrantingTicket};
use async_trait::async_trait;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Weak};
use std::time::Duration;
use subtle::ConstantTimeEq;

const SHARDS: usize = 64;

/// What an id names: counters and records are keyed by user data, and must
/// never meet a session or ticket id (nor each other) with the same text.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Space {
    Id = 0,
    Counter = 1,
    Record = 2,
    /// A session, by its routing tag (see [`MemoryStore::session_key`]).
    Session = 3,
}

/// An entry's key: a keyed hash of its namespace and id.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key {
    /// The tables' hash.
    lo: u64,
    /// Picks the shard (other bits than the tables use) and halves the odds
    /// of two ids meeting.
    hi: u64,
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo);
    }
}

/// Hands the key's first half to the table: it is already a keyed hash.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not called ([`Key`] writes one u64); mixes anyway, to stay a hash.
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Table<V> = HashMap<Key, V, BuildHasherDefault<PassThrough>>;

/// Two independently keyed SipHash-2-4: a 128-bit PRF of an id.
struct KeyHasher {
    lo: (u64, u64),
    hi: (u64, u64),
}

impl KeyHasher {
    fn new() -> Self {
        // ThreadRng: a CSPRNG seeded from the OS. Four independent words,
        // not std's RandomState, whose successive keys differ by one.
        Self {
            lo: (rand::random(), rand::random()),
            hi: (rand::random(), rand::random()),
        }
    }

    fn key(&self, space: Space, id: &[u8]) -> Key {
        let half = |(k0, k1): (u64, u64)| {
            // The deprecation points at crates for HashDoS-resistant maps;
            // what is wanted here is SipHash itself, a PRF under a secret
            // key, and std's is the audited one at hand.
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            // Namespace, then the id: the input is one field after a fixed
            // byte, so no length is needed to keep inputs apart.
            h.write_u8(space as u8);
            h.write(id);
            h.finish()
        };
        Key {
            lo: half(self.lo),
            hi: half(self.hi),
        }
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("memory store: unreadable {what}"))
}

/// A session's id as it keeps it: packed when it has this server's shape.
enum StoredId {
    Packed([u8; compact::MAX_PACKED]),
    Other(Box<str>),
}

impl StoredId {
    fn new(id: &str) -> Self {
        compact::packed(id).map_or_else(|| Self::Other(id.into()), Self::Packed)
    }

    /// Whether this is `id`, in constant time: a session is found by its
    /// tag, which its tickets show to applications, so the secret part is
    /// checked here.
    fn is(&self, id: &str) -> bool {
        match self {
            Self::Packed(bytes) => {
                compact::packed(id).is_some_and(|given| bool::from(given.ct_eq(bytes)))
            }
            Self::Other(own) => bool::from(own.as_bytes().ct_eq(id.as_bytes())),
        }
    }

    fn to_string(&self) -> Result<String, StoreError> {
        match self {
            Self::Packed(bytes) => compact::read(bytes)
                .map(|(id, _)| id)
                .ok_or_else(|| corrupt("session id")),
            Self::Other(id) => Ok(id.to_string()),
        }
    }
}

/// A session as held here. 96 bytes: one allocator size class.
struct StoredSession {
    principal: Arc<Principal>,
    authenticated_at: Millis,
    /// The hard limit.
    expires_at: Millis,
    /// When the entry expires: its idle deadline, never past `expires_at`.
    live_until: Millis,
    /// The single-logout records, oldest first.
    services: Box<[StoredRecord]>,
    id: StoredId,
    long_term: bool,
    methods: AuthnMethods,
}

/// A single-logout record: 48 bytes, its URL shared (see [`Urls`]).
struct StoredRecord {
    ticket: RecordTicket,
    service: Url,
    logout: LogoutMode,
    /// The service ticket itself while the session holds it, unused: its
    /// deadline in milliseconds after the session's `authenticated_at`;
    /// 0 when it is not held here (used, or kept in the tickets' table).
    held_until: u32,
    from_new_login: bool,
}

/// A record's ticket id: packed without the session's tag when it is one of
/// the session's own tickets (all but those carried over from another
/// session), else kept as it is.
enum RecordTicket {
    Own([u8; compact::ELIDED_LEN]),
    Other(Box<str>),
}

impl StoredRecord {
    /// `tag`: the session's, which its own tickets' ids end with.
    fn new(r: &ServiceRecord, tag: Option<&[u8]>, urls: &mut Urls) -> Self {
        let ticket = match compact::elided(&r.ticket_id, tag) {
            Some(own) => RecordTicket::Own(own),
            None => RecordTicket::Other(r.ticket_id.as_str().into()),
        };
        Self {
            ticket,
            service: urls.get(&r.service),
            logout: r.logout,
            held_until: 0,
            from_new_login: false,
        }
    }

    fn to_record(&self, tag: Option<&[u8]>) -> Result<ServiceRecord, StoreError> {
        let ticket_id = match &self.ticket {
            RecordTicket::Own(packed) => match compact::read_in(packed, tag) {
                Some((id, [])) => id,
                _ => return Err(corrupt("logout record")),
            },
            RecordTicket::Other(id) => id.to_string(),
        };
        Ok(ServiceRecord {
            ticket_id,
            service: self.service.as_str().to_owned(),
            logout: self.logout,
        })
    }
}

impl StoredSession {
    fn new(s: &TicketGrantingTicket, live_until: Millis, urls: &mut Urls) -> Self {
        let kept = &s.services[s.services.len().saturating_sub(MAX_SERVICE_RECORDS)..];
        let tag = compact::tag_of(&s.id);
        Self {
            principal: s.principal.clone(),
            authenticated_at: s.authenticated_at,
            expires_at: s.expires_at,
            live_until,
            services: kept
                .iter()
                .map(|r| StoredRecord::new(r, tag, urls))
                .collect(),
            id: StoredId::new(&s.id),
            long_term: s.long_term,
            methods: s.methods,
        }
    }

    fn is_live(&self, now: Millis) -> bool {
        self.live_until > now
    }

    /// Pushes the idle deadline to `now + idle`, never past the hard limit.
    fn touch(&mut self, now: Millis, idle: Duration) {
        self.live_until = now
            .saturating_add(idle.as_millis() as u64)
            .min(self.expires_at);
    }

    /// Appends a single-logout record, dropping the oldest beyond the
    /// limit (one reallocation, to the exact size). `ticket`: the record's
    /// service ticket, its deadline and whether it came from a new login,
    /// to hold in the record when it can. Says whether it does, and gives
    /// back the live ticket the dropped record held, if any, for the
    /// tickets' table.
    fn push_service(
        &mut self,
        record: &ServiceRecord,
        tag: Option<&[u8]>,
        urls: &mut Urls,
        ticket: Option<(Millis, bool)>,
        now: Millis,
    ) -> (bool, Option<(String, Ticket, Millis)>) {
        let mut list = std::mem::take(&mut self.services).into_vec();
        let mut evicted = None;
        if list.len() >= MAX_SERVICE_RECORDS {
            let oldest = list.remove(0);
            if self.held_deadline(&oldest, now).is_some() {
                if let Ok(session_id) = self.id.to_string() {
                    evicted = self.held_ticket(&oldest, &session_id, now);
                }
            }
        }
        let mut stored = StoredRecord::new(record, tag, urls);
        let offset = ticket.and_then(|(deadline, _)| {
            let offset = deadline.checked_sub(self.authenticated_at)?;
            u32::try_from(offset).ok().filter(|&o| o > 0)
        });
        let held = match (offset, ticket, &stored.ticket) {
            (Some(offset), Some((_, from_new_login)), RecordTicket::Own(_)) => {
                stored.held_until = offset;
                stored.from_new_login = from_new_login;
                true
            }
            _ => false,
        };
        list.reserve_exact(1);
        list.push(stored);
        self.services = list.into_boxed_slice();
        (held, evicted)
    }

    /// The record holding the live, unused service ticket `packed` (its id
    /// packed without the session's tag).
    fn held(&self, packed: &[u8; compact::ELIDED_LEN], now: Millis) -> Option<usize> {
        // Newest first: a ticket is mostly redeemed right after its grant.
        self.services.iter().rposition(|r| {
            self.held_deadline(r, now).is_some()
                && matches!(&r.ticket, RecordTicket::Own(own) if bool::from(own.ct_eq(packed)))
        })
    }

    /// The deadline of the ticket `r` holds, when it holds a live one.
    fn held_deadline(&self, r: &StoredRecord, now: Millis) -> Option<Millis> {
        let at = self
            .authenticated_at
            .saturating_add(u64::from(r.held_until));
        (r.held_until != 0 && at > now).then_some(at)
    }

    /// The live ticket `r` holds, with its id and deadline; `session_id`:
    /// this session's.
    fn held_ticket(
        &self,
        r: &StoredRecord,
        session_id: &str,
        now: Millis,
    ) -> Option<(String, Ticket, Millis)> {
        let at = self.held_deadline(r, now)?;
        let RecordTicket::Own(packed) = &r.ticket else {
            return None;
        };
        let Some((id, [])) = compact::read_in(packed, compact::tag_of(session_id)) else {
            return None;
        };
        let ticket = Ticket::Service(ServiceTicket {
            id: id.clone(),
            session_id: session_id.to_owned(),
            service: r.service.as_str().to_owned(),
            from_new_login: r.from_new_login,
        });
        Some((id, ticket, at))
    }

    /// The live service tickets this session holds, to be kept in the
    /// tickets' table once the session is gone: a ticket outlives its
    /// session, as in every store (redeemed, it finds no session).
    fn orphans(&self, now: Millis, out: &mut Vec<(String, Ticket, Millis)>) {
        if self.services.iter().all(|r| r.held_until == 0) {
            return;
        }
        let Ok(session_id) = self.id.to_string() else {
            return;
        };
        out.extend(
            self.services
                .iter()
                .filter_map(|r| self.held_ticket(r, &session_id, now)),
        );
    }

    fn services(&self, tag: Option<&[u8]>) -> Result<Vec<ServiceRecord>, StoreError> {
        self.services.iter().map(|r| r.to_record(tag)).collect()
    }

    /// The session; `id`: the one it was found by (else its own, decoded).
    fn to_session(
        &self,
        id: Option<&str>,
        with_services: bool,
    ) -> Result<TicketGrantingTicket, StoreError> {
        let id = match id {
            Some(id) => id.to_owned(),
            None => self.id.to_string()?,
        };
        let services = if with_services {
            self.services(compact::tag_of(&id))?
        } else {
            Vec::new()
        };
        Ok(TicketGrantingTicket {
            id,
            principal: self.principal.clone(),
            authenticated_at: self.authenticated_at,
            expires_at: self.expires_at,
            long_term: self.long_term,
            methods: self.methods,
            services,
        })
    }
}

/// A ticket as held here. A service ticket, the hot one, has a fixed size
/// (48 bytes, in its table's slot): its session id packed without the
/// tag the ticket's own id carries, and its service URL shared with the
/// shard's other tickets for that URL (see [`Urls`]).
enum StoredTicket {
    Service {
        expires_at: Millis,
        service: Url,
        session: [u8; compact::ELIDED_LEN],
        from_new_login: bool,
    },
    /// Any other ticket, or a service ticket of another shape: see
    /// [`encode_ticket`].
    Encoded(Box<[u8]>),
}

impl StoredTicket {
    fn new(
        id: &str,
        ticket: &Ticket,
        expires_at: Millis,
        urls: &mut Urls,
    ) -> Result<Self, StoreError> {
        if let Ticket::Service(t) = ticket {
            if let Some(session) = compact::elided(&t.session_id, compact::tag_of(id)) {
                return Ok(Self::Service {
                    expires_at,
                    service: urls.get(&t.service),
                    session,
                    from_new_login: t.from_new_login,
                });
            }
        }
        encode_ticket(ticket, expires_at).map(Self::Encoded)
    }

    fn expires_at(&self) -> Millis {
        match self {
            Self::Service { expires_at, .. } => *expires_at,
            Self::Encoded(bytes) => ticket_deadline(bytes),
        }
    }

    /// The ticket, given the id it was found by.
    fn to_ticket(&self, id: &str) -> Result<Ticket, StoreError> {
        match self {
            Self::Service {
                service,
                session,
                from_new_login,
                ..
            } => match compact::read_in(session, compact::tag_of(id)) {
                Some((session_id, [])) => Ok(Ticket::Service(ServiceTicket {
                    id: id.to_owned(),
                    session_id,
                    service: service.as_str().to_owned(),
                    from_new_login: *from_new_login,
                })),
                _ => Err(corrupt("ticket")),
            },
            Self::Encoded(bytes) => decode_ticket(id, bytes),
        }
    }
}

/// A service URL, held once per shard: a hundred thousand tickets for one
/// application hold a pointer each, not a hundred thousand copies.
#[derive(Clone)]
struct Url(Arc<Box<str>>);

impl Url {
    fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Url {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Url {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Url {}

impl Hash for Url {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, so that a lookup by `&str` finds it.
        self.as_str().hash(state);
    }
}

/// A shard's service URLs. The sweeper drops those no ticket holds any more.
#[derive(Default)]
struct Urls(HashSet<Url>);

impl Urls {
    fn get(&mut self, url: &str) -> Url {
        if let Some(held) = self.0.get(url) {
            return held.clone();
        }
        let held = Url(Arc::new(url.into()));
        self.0.insert(held.clone());
        held
    }

    fn sweep(&mut self) {
        self.0.retain(|u| Arc::strong_count(&u.0) > 1);
        if self.0.capacity() >= 128 && self.0.len() * 2 <= self.0.capacity() {
            self.0.shrink_to_fit();
        }
    }
}

/// An encoded ticket: its deadline (8 bytes, little-endian), a form byte
/// and the rest: for a service ticket, its session id (compact), whether it
/// came from a new login, and its service URL to the end; for the others,
/// their postcard encoding without their id.
const SERVICE_TICKET: u8 = 0;
const OTHER_TICKET: u8 = 1;

fn encode_ticket(ticket: &Ticket, expires_at: Millis) -> Result<Box<[u8]>, StoreError> {
    let mut out;
    match ticket {
        Ticket::Service(t) => {
            out = Vec::with_capacity(8 + 1 + compact::len(&t.session_id) + 1 + t.service.len());
            out.extend_from_slice(&expires_at.to_le_bytes());
            out.push(SERVICE_TICKET);
            compact::write(&t.session_id, &mut out);
            out.push(u8::from(t.from_new_login));
            out.extend_from_slice(t.service.as_bytes());
        }
        other => {
            // A login form token holds a URL at most; a proxy ticket, a few.
            out = Vec::with_capacity(128);
            out.extend_from_slice(&expires_at.to_le_bytes());
            out.push(OTHER_TICKET);
            out =
                postcard::to_extend(other, out).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        }
    }
    Ok(out.into_boxed_slice())
}

fn ticket_deadline(bytes: &[u8]) -> Millis {
    bytes
        .first_chunk::<8>()
        .map_or(0, |b| Millis::from_le_bytes(*b))
}

fn decode_ticket(id: &str, bytes: &[u8]) -> Result<Ticket, StoreError> {
    let unreadable = || corrupt("ticket");
    match bytes.get(8..).and_then(<[u8]>::split_first) {
        Some((&SERVICE_TICKET, rest)) => {
            let (session_id, rest) = compact::read(rest).ok_or_else(unreadable)?;
            let (&from_new_login, service) = rest.split_first().ok_or_else(unreadable)?;
            let service = std::str::from_utf8(service).map_err(|_| unreadable())?;
            Ok(Ticket::Service(ServiceTicket {
                id: id.to_owned(),
                session_id,
                service: service.to_owned(),
                from_new_login: from_new_login != 0,
            }))
        }
        Some((&OTHER_TICKET, rest)) => {
            let mut ticket: Ticket =
                postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            id.clone_into(ticket.id_mut());
            Ok(ticket)
        }
        _ => Err(unreadable()),
    }
}

/// A counter or a record, with its deadline beside it (an empty record then
/// allocates nothing).
struct Timed<T> {
    expires_at: Millis,
    value: T,
}

#[derive(Default)]
struct Tables {
    sessions: Table<Box<StoredSession>>,
    /// Held in the table itself: boxed, a ticket would share a size class
    /// with the records, and once the ten-second tickets were gone their
    /// holes would pin the records' pages.
    tickets: Table<StoredTicket>,
    /// The URLs service tickets and single-logout records name.
    urls: Urls,
    records: Table<Timed<Box<[u8]>>>,
    /// Records with an empty value (one-time markers, such as a used login
    /// form's): their deadline alone, a 24-byte slot instead of 40.
    markers: Table<Millis>,
    counters: Table<Timed<u32>>,
}

impl Tables {
    fn len(&self) -> usize {
        self.sessions.len()
            + self.tickets.len()
            + self.records.len()
            + self.markers.len()
            + self.counters.len()
    }

    /// A record's deadline and value, live or not.
    fn record(&self, key: &Key) -> Option<(Millis, &[u8])> {
        match self.records.get(key) {
            Some(r) => Some((r.expires_at, &r.value)),
            None => self.markers.get(key).map(|m| (*m, &[][..])),
        }
    }

    fn put_record(&mut self, key: Key, value: &[u8], expires_at: Millis) {
        if value.is_empty() {
            self.records.remove(&key);
            self.markers.insert(key, expires_at);
        } else {
            self.markers.remove(&key);
            self.records.insert(
                key,
                Timed {
                    expires_at,
                    value: value.into(),
                },
            );
        }
    }

    fn take_record(&mut self, key: &Key) -> Option<(Millis, Box<[u8]>)> {
        match self.records.remove(key) {
            Some(r) => Some((r.expires_at, r.value)),
            None => self.markers.remove(key).map(|m| (m, Box::default())),
        }
    }
}

/// A table never shrinks by itself: after a burst of tickets it would keep
/// room for all of them. A rehash of one shard's table costs tens of
/// microseconds at most, once per sweep.
fn shrink<V>(table: &mut Table<V>) {
    if table.capacity() >= 128 && table.len() * 2 <= table.capacity() {
        table.shrink_to_fit();
    }
}

type Shard = Mutex<Tables>;

pub struct MemoryStore {
    shards: Box<[Shard]>,
    keys: KeyHasher,
    clock: Arc<dyn Clock>,
    key_ids: Mutex<Vec<String>>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Arc::new(SystemClock))
    }
}

impl MemoryStore {
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Tables::default())).collect(),
            keys: KeyHasher::new(),
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
        let t = &mut *shard;
        let mut orphans = Vec::new();
        t.sessions.retain(|_, s| {
            let live = s.is_live(now);
            if !live {
                s.orphans(now, &mut orphans);
            }
            live
        });
        t.tickets.retain(|_, b| b.expires_at() > now);
        t.records.retain(|_, r| r.expires_at > now);
        t.markers.retain(|_, m| *m > now);
        t.counters.retain(|_, c| c.expires_at > now);
        shrink(&mut t.sessions);
        shrink(&mut t.tickets);
        shrink(&mut t.records);
        shrink(&mut t.markers);
        shrink(&mut t.counters);
        t.urls.sweep();
        let dropped = before - t.len();
        // Outside the lock: an orphan may belong in this very shard.
        drop(shard);
        for (id, ticket, expires_at) in &orphans {
            // A ticket the tickets' table cannot hold is lost with its session.
            let _ = self.put_ticket(id, ticket, expires_at.to_owned());
        }
        dropped
    }

    /// Entries held, expired or not (for metrics and tests).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn key(&self, space: Space, id: &str) -> (Key, &Shard) {
        self.key_of(space, id.as_bytes())
    }

    fn key_of(&self, space: Space, bytes: &[u8]) -> (Key, &Shard) {
        let key = self.keys.key(space, bytes);
        (key, &self.shards[(key.hi % SHARDS as u64) as usize])
    }

    /// A session is keyed by its routing tag when it has one, so that a
    /// ticket (which ends with the tag) finds it; [`StoredId::is`] then
    /// checks the whole id.
    fn session_key(&self, id: &str) -> (Key, &Shard) {
        match compact::tag_of(id) {
            Some(tag) => self.key_of(Space::Session, tag),
            None => self.key(Space::Id, id),
        }
    }

    /// Takes (`take`) or reads a service ticket its session holds: `None`
    /// when it is not held by one (it may be in the tickets' table). The
    /// session is read too, `None` when it has expired.
    fn held_ticket(
        &self,
        id: &str,
        take: bool,
    ) -> Result<Option<(Ticket, Option<TicketGrantingTicket>)>, StoreError> {
        let Some(tag) = compact::tag_of(id).filter(|_| id.starts_with("ST-")) else {
            return Ok(None);
        };
        let Some(packed) = compact::elided(id, Some(tag)) else {
            return Ok(None);
        };
        let now = self.clock.now();
        let (key, shard) = self.key_of(Space::Session, tag);
        let mut shard = shard.lock();
        let Some(s) = shard.sessions.get_mut(&key) else {
            return Ok(None);
        };
        let Some(i) = s.held(&packed, now) else {
            return Ok(None);
        };
        let session_id = s.id.to_string()?;
        // The id asked for is the one held (its packed form matched): no
        // need to unpack it again.
        let r = &s.services[i];
        let ticket = Ticket::Service(ServiceTicket {
            id: id.to_owned(),
            session_id: session_id.clone(),
            service: r.service.as_str().to_owned(),
            from_new_login: r.from_new_login,
        });
        if take {
            s.services[i].held_until = 0;
        }
        let session = if s.is_live(now) {
            Some(s.to_session(Some(&session_id), false)?)
        } else {
            None
        };
        Ok(Some((ticket, session)))
    }

    /// Stores a ticket in the tickets' table until `expires_at`.
    fn put_ticket(&self, id: &str, ticket: &Ticket, expires_at: Millis) -> Result<(), StoreError> {
        let (key, shard) = self.key(Space::Id, id);
        let mut shard = shard.lock();
        let stored = StoredTicket::new(id, ticket, expires_at, &mut shard.urls)?;
        shard.tickets.insert(key, stored);
        Ok(())
    }

    fn deadline(&self, ttl: Duration) -> Millis {
        self.clock.now().saturating_add(ttl.as_millis() as u64)
    }

    /// A live session, without extending it; `with_services`: its
    /// single-logout list decoded too.
    fn live_session(
        &self,
        id: &str,
        with_services: bool,
    ) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.session_key(id);
        let shard = shard.lock();
        match shard.sessions.get(&key) {
            Some(s) if s.is_live(now) && s.id.is(id) => {
                s.to_session(Some(id), with_services).map(Some)
            }
            _ => Ok(None),
        }
    }

    /// Adds or replaces a record.
    fn insert_record(&self, key: &str, value: &[u8], ttl: Duration) {
        let expires_at = self.deadline(ttl);
        let (key, shard) = self.key(Space::Record, key);
        shard.lock().put_record(key, value, expires_at);
    }
}

#[async_trait]
impl TicketStore for MemoryStore {
    async fn create_session(
        &self,
        session: &TicketGrantingTicket,
        idle: Duration,
    ) -> Result<(), StoreError> {
        let live_until = self.deadline(idle).min(session.expires_at);
        let (key, shard) = self.session_key(&session.id);
        let mut shard = shard.lock();
        let stored = Box::new(StoredSession::new(session, live_until, &mut shard.urls));
        shard.sessions.insert(key, stored);
        Ok(())
    }

    async fn touch_session(
        &self,
        id: &str,
        idle: Duration,
    ) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.session_key(id);
        let mut shard = shard.lock();
        match shard.sessions.get_mut(&key) {
            Some(s) if s.is_live(now) && s.id.is(id) => {
                s.touch(now, idle);
                s.to_session(Some(id), true).map(Some)
            }
            _ => Ok(None),
        }
    }

    async fn session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        self.live_session(id, true)
    }

    async fn update_session_methods(
        &self,
        session: &TicketGrantingTicket,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.session_key(&session.id);
        let mut shard = shard.lock();
        Ok(match shard.sessions.get_mut(&key) {
            Some(s) if s.is_live(now) && s.id.is(&session.id) => {
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
        let expires_at = self.deadline(ttl);
        // A service ticket is held in its own logout record when it can be:
        // no entry of its own, and redeemed under the session's lock.
        let holdable = match (&ticket, &record) {
            (Ticket::Service(t), Some(r))
                if r.ticket_id == t.id && r.service == t.service && t.session_id == session_id =>
            {
                Some((expires_at, t.from_new_login))
            }
            _ => None,
        };
        {
            let (key, shard) = self.session_key(session_id);
            let mut shard = shard.lock();
            let Tables { sessions, urls, .. } = &mut *shard;
            match sessions.get_mut(&key) {
                Some(s) if s.is_live(now) && s.id.is(session_id) => {
                    s.touch(now, idle);
                    if let Some(record) = &record {
                        let tag = compact::tag_of(session_id);
                        let (held, evicted) = s.push_service(record, tag, urls, holdable, now);
                        // Outside the lock: the tickets' table keeps a ticket
                        // whose record made room for a newer one.
                        drop(shard);
                        if let Some((id, evicted, at)) = evicted {
                            self.put_ticket(&id, &evicted, at)?;
                        }
                        if held {
                            return Ok(true);
                        }
                    }
                }
                _ => return Ok(false),
            }
        }
        // A removal between the two locks leaves a ticket whose session is
        // gone; redeem_ticket reports exactly that, so it never validates.
        self.put_ticket(ticket.id(), &ticket, expires_at)?;
        Ok(true)
    }

    async fn redeem_ticket(
        &self,
        id: &str,
    ) -> Result<Option<(Ticket, Option<TicketGrantingTicket>)>, StoreError> {
        if let Some(found) = self.held_ticket(id, true)? {
            return Ok(Some(found));
        }
        let Some(ticket) = self.consume_ticket(id).await? else {
            return Ok(None);
        };
        let session = match ticket.session_id() {
            // An unreadable session reads as none, as a missing one.
            Some(session_id) => self.live_session(session_id, false).ok().flatten(),
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
            for s in shard.lock().sessions.values() {
                if s.is_live(now) && s.principal.id == user {
                    found.push(s.to_session(None, false)?);
                }
            }
        }
        Ok(found)
    }

    async fn remove_session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.session_key(id);
        let taken = {
            let mut shard = shard.lock();
            match shard.sessions.get(&key) {
                Some(s) if s.id.is(id) => shard.sessions.remove(&key),
                _ => None,
            }
        };
        let Some(s) = taken else {
            return Ok(None);
        };
        let mut orphans = Vec::new();
        s.orphans(now, &mut orphans);
        for (ticket_id, ticket, expires_at) in &orphans {
            self.put_ticket(ticket_id, ticket, *expires_at)?;
        }
        if s.is_live(now) {
            s.to_session(Some(id), true).map(Some)
        } else {
            Ok(None)
        }
    }

    async fn add_ticket(&self, mut ticket: Ticket, ttl: Duration) -> Result<(), StoreError> {
        // The id is the key: the value does not hold it a second time.
        let id = std::mem::take(ticket.id_mut());
        self.put_ticket(&id, &ticket, self.deadline(ttl))
    }

    async fn consume_ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        if let Some((ticket, _)) = self.held_ticket(id, true)? {
            return Ok(Some(ticket));
        }
        let now = self.clock.now();
        let (key, shard) = self.key(Space::Id, id);
        let taken = shard.lock().tickets.remove(&key);
        match taken {
            Some(stored) if stored.expires_at() > now => stored.to_ticket(id).map(Some),
            _ => Ok(None),
        }
    }

    async fn ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        if let Some((ticket, _)) = self.held_ticket(id, false)? {
            return Ok(Some(ticket));
        }
        let now = self.clock.now();
        let (key, shard) = self.key(Space::Id, id);
        let shard = shard.lock();
        match shard.tickets.get(&key) {
            Some(stored) if stored.expires_at() > now => stored.to_ticket(id).map(Some),
            _ => Ok(None),
        }
    }

    async fn reserve_attempt(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.key(Space::Counter, key);
        let mut shard = shard.lock();
        let counter = shard.counters.entry(key).or_insert(Timed {
            expires_at: 0,
            value: 0,
        });
        if counter.expires_at <= now {
            *counter = Timed {
                expires_at: now.saturating_add(window.as_millis() as u64),
                value: 0,
            };
        }
        if counter.value < limit {
            counter.value += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    async fn release_attempt(&self, key: &str) -> Result<(), StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.key(Space::Counter, key);
        if let Some(c) = shard.lock().counters.get_mut(&key) {
            if c.expires_at > now {
                c.value = c.value.saturating_sub(1);
            }
        }
        Ok(())
    }

    async fn failures(&self, key: &str) -> Result<u32, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.key(Space::Counter, key);
        Ok(match shard.lock().counters.get(&key) {
            Some(c) if c.expires_at > now => c.value,
            _ => 0,
        })
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let (key, shard) = self.key(Space::Counter, key);
        shard.lock().counters.remove(&key);
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
        self.insert_record(key, value, ttl);
        Ok(())
    }

    async fn add_record(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let now = self.clock.now();
        let expires_at = self.deadline(ttl);
        let (key, shard) = self.key(Space::Record, key);
        let mut shard = shard.lock();
        if shard.record(&key).is_some_and(|(at, _)| at > now) {
            return Ok(false);
        }
        shard.put_record(key, value, expires_at);
        Ok(true)
    }

    async fn record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.key(Space::Record, key);
        Ok(match shard.lock().record(&key) {
            Some((at, value)) if at > now => Some(value.to_vec()),
            _ => None,
        })
    }

    async fn take_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.key(Space::Record, key);
        let taken = shard.lock().take_record(&key);
        Ok(match taken {
            Some((at, value)) if at > now => Some(value.into_vec()),
            _ => None,
        })
    }

    async fn swap_record(&self, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let now = self.clock.now();
        let (key, shard) = self.key(Space::Record, key);
        let mut shard = shard.lock();
        Ok(match shard.take_record(&key) {
            Some((at, old)) if at > now => {
                shard.put_record(key, value, at);
                Some(old.into_vec())
            }
            _ => None,
        })
    }

    async fn remove_record(&self, key: &str) -> Result<(), StoreError> {
        let (key, shard) = self.key(Space::Record, key);
        shard.lock().take_record(&key);
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

    fn session(id: &str, user: &str) -> TicketGrantingTicket {
        TicketGrantingTicket {
            id: id.into(),
            principal: Arc::new(Principal::new(user)),
            authenticated_at: 1_000,
            expires_at: Millis::MAX,
            long_term: false,
            services: Vec::new(),
            methods: AuthnMethods::default(),
        }
    }

    /// Ticket ids of every shape: the session's own (whose tag is left
    /// out), another's, untagged, foreign.
    fn record(i: usize, session_id: &str) -> ServiceRecord {
        ServiceRecord {
            ticket_id: match i % 4 {
                0 => format!("ST-1-{i}"),
                1 => crate::ids::new_ticket_id("ST"),
                2 => crate::ids::new_session_ticket_id("ST", &crate::ids::new_session_id("TGT"))
                    .unwrap(),
                _ => crate::ids::new_session_ticket_id("ST", session_id).unwrap(),
            },
            service: format!("https://app{i}.example.org/"),
            logout: if i.is_multiple_of(3) {
                LogoutMode::None
            } else {
                LogoutMode::BackChannel
            },
        }
    }

    #[test]
    fn a_stored_session_fits_one_size_class() {
        assert!(std::mem::size_of::<StoredSession>() <= 96);
        assert_eq!(std::mem::size_of::<(Key, Box<StoredSession>)>(), 24);
        assert!(std::mem::size_of::<StoredTicket>() <= 48);
        assert!(std::mem::size_of::<StoredRecord>() <= 48);
        assert_eq!(std::mem::size_of::<(Key, StoredTicket)>(), 64);
    }

    #[tokio::test]
    async fn counters_records_and_ids_with_the_same_text_stay_apart() {
        let store = MemoryStore::default();
        let text = "TGT-1-same";
        store
            .create_session(&session(text, "u"), Duration::from_secs(60))
            .await
            .unwrap();
        assert!(store
            .reserve_attempt(text, 5, Duration::from_secs(60))
            .await
            .unwrap());
        store
            .put_record(text, b"flow", Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(store.failures(text).await.unwrap(), 1);
        assert_eq!(store.record(text).await.unwrap().unwrap(), b"flow");
        assert_eq!(store.session(text).await.unwrap().unwrap().id, text);
        assert!(store.consume_ticket(text).await.unwrap().is_none());
        store.clear_failures(text).await.unwrap();
        store.remove_record(text).await.unwrap();
        assert!(store.session(text).await.unwrap().is_some());
        assert_eq!(store.len(), 1);
    }

    #[tokio::test]
    async fn empty_records_are_markers_and_change_kind_when_swapped() {
        let store = MemoryStore::default();
        let ttl = Duration::from_secs(60);
        assert!(store.add_record("m", b"", ttl).await.unwrap());
        assert!(!store.add_record("m", b"x", ttl).await.unwrap());
        assert_eq!(store.record("m").await.unwrap().unwrap(), b"");
        assert_eq!(store.swap_record("m", b"full").await.unwrap().unwrap(), b"");
        assert_eq!(store.swap_record("m", b"").await.unwrap().unwrap(), b"full");
        assert_eq!(store.len(), 1);
        store.put_record("m", b"again", ttl).await.unwrap();
        assert_eq!(store.len(), 1);
        assert_eq!(store.take_record("m").await.unwrap().unwrap(), b"again");
        assert!(store.take_record("m").await.unwrap().is_none());
        store.put_record("m", b"", ttl).await.unwrap();
        store.remove_record("m").await.unwrap();
        assert!(store.is_empty());
    }

    #[tokio::test]
    async fn a_session_keeps_its_most_recent_logout_records() {
        let store = MemoryStore::default();
        let id = crate::ids::new_session_id("TGT");
        store
            .create_session(&session(&id, "u"), Duration::from_secs(60))
            .await
            .unwrap();
        let total = MAX_SERVICE_RECORDS + 5;
        let records: Vec<_> = (0..total).map(|i| record(i, &id)).collect();
        for (i, record) in records.iter().enumerate() {
            let ticket = Ticket::Service(ServiceTicket {
                id: crate::ids::new_session_ticket_id("ST", &id).unwrap(),
                session_id: id.clone(),
                service: format!("https://app{i}.example.org/"),
                from_new_login: i == 0,
            });
            let granted = store
                .grant_ticket(
                    &id,
                    Duration::from_secs(60),
                    ticket,
                    Duration::from_secs(10),
                    Some(record.clone()),
                )
                .await
                .unwrap();
            assert!(granted);
        }
        let kept = store.session(&id).await.unwrap().unwrap().services;
        assert_eq!(kept, records[total - MAX_SERVICE_RECORDS..]);
        // Carried into a new session (tag of another session: kept whole).
        let mut carried = session(&crate::ids::new_session_id("TGT"), "v");
        carried.services = kept.clone();
        store
            .create_session(&carried, Duration::from_secs(60))
            .await
            .unwrap();
        let removed = store.remove_session(&carried.id).await.unwrap().unwrap();
        assert_eq!(removed.services, kept);
        let listed = store.sessions_of("u").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, id, "the packed id reads back");
        assert!(listed[0].services.is_empty());
    }

    #[tokio::test]
    async fn service_tickets_round_trip_with_their_session() {
        let store = MemoryStore::default();
        for session_id in [crate::ids::new_session_id("TGT"), "TGT-odd".to_owned()] {
            store
                .create_session(&session(&session_id, "u"), Duration::from_secs(60))
                .await
                .unwrap();
            let st = ServiceTicket {
                id: crate::ids::new_session_ticket_id("ST", &session_id)
                    .unwrap_or_else(|| "ST-odd".into()),
                session_id: session_id.clone(),
                service: "https://app.example.org/home?q=ü".into(),
                from_new_login: true,
            };
            store
                .add_ticket(Ticket::Service(st.clone()), Duration::from_secs(10))
                .await
                .unwrap();
            let (ticket, found) = store.redeem_ticket(&st.id).await.unwrap().unwrap();
            assert_eq!(ticket, Ticket::Service(st.clone()));
            assert_eq!(found.unwrap().id, session_id);
            assert!(store.redeem_ticket(&st.id).await.unwrap().is_none());
        }
    }

    /// Tickets and single-logout records for one URL share one copy of it
    /// per shard, which goes once nothing names it.
    #[tokio::test]
    async fn service_urls_are_held_once_per_shard_and_let_go() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = MemoryStore::new(clock.clone());
        let held =
            |s: &MemoryStore| -> usize { s.shards.iter().map(|t| t.lock().urls.0.len()).sum() };
        let url = "https://app.example.org/home";
        let mut sessions = Vec::new();
        for _ in 0..500 {
            let id = crate::ids::new_session_id("TGT");
            store
                .create_session(&session(&id, "u"), Duration::from_secs(60))
                .await
                .unwrap();
            let ticket = ServiceTicket {
                id: crate::ids::new_session_ticket_id("ST", &id).unwrap(),
                session_id: id.clone(),
                service: url.into(),
                from_new_login: true,
            };
            let record = ServiceRecord {
                ticket_id: ticket.id.clone(),
                service: url.into(),
                logout: LogoutMode::BackChannel,
            };
            let granted = store
                .grant_ticket(
                    &id,
                    Duration::from_secs(60),
                    Ticket::Service(ticket.clone()),
                    Duration::from_secs(10),
                    Some(record.clone()),
                )
                .await
                .unwrap();
            assert!(granted);
            sessions.push((id, ticket, record));
        }
        // 1,000 holders, at most one copy in each shard.
        assert!(held(&store) <= SHARDS, "{} copies", held(&store));
        for (id, ticket, record) in &sessions[..10] {
            let (found, _) = store.redeem_ticket(&ticket.id).await.unwrap().unwrap();
            assert_eq!(found, Ticket::Service(ticket.clone()));
            let removed = store.remove_session(id).await.unwrap().unwrap();
            assert_eq!(&removed.services, std::slice::from_ref(record));
        }
        // The tickets expire, the sessions stay: their records keep the URL.
        clock.advance(Duration::from_secs(11));
        (0..SHARDS).for_each(|i| {
            store.sweep_shard(i);
        });
        assert!(held(&store) > 0);
        let (id, _, record) = &sessions[10];
        assert_eq!(
            &store.session(id).await.unwrap().unwrap().services,
            std::slice::from_ref(record)
        );
        // The sessions expire too: nothing names the URL any more.
        clock.advance(Duration::from_secs(60));
        (0..SHARDS).for_each(|i| {
            store.sweep_shard(i);
        });
        assert!(store.is_empty());
        assert_eq!(held(&store), 0);
    }

    fn tickets_in_table(store: &MemoryStore) -> usize {
        store.shards.iter().map(|t| t.lock().tickets.len()).sum()
    }

    /// A store on a manual clock with one session, idle for `idle`.
    async fn with_session(idle: Duration) -> (Arc<ManualClock>, MemoryStore, String) {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = MemoryStore::new(clock.clone());
        let id = crate::ids::new_session_id("TGT");
        store
            .create_session(&session(&id, "u"), idle)
            .await
            .unwrap();
        (clock, store, id)
    }

    /// Grants a service ticket with its logout record, as the engine does.
    async fn grant_with_record(store: &MemoryStore, session_id: &str, ttl_s: u64) -> ServiceTicket {
        let ticket = ServiceTicket {
            id: crate::ids::new_session_ticket_id("ST", session_id).unwrap(),
            session_id: session_id.to_owned(),
            service: "https://app.example.org/home".into(),
            from_new_login: true,
        };
        let record = ServiceRecord {
            ticket_id: ticket.id.clone(),
            service: ticket.service.clone(),
            logout: LogoutMode::BackChannel,
        };
        let granted = store
            .grant_ticket(
                session_id,
                Duration::from_secs(60),
                Ticket::Service(ticket.clone()),
                Duration::from_secs(ttl_s),
                Some(record),
            )
            .await
            .unwrap();
        assert!(granted);
        ticket
    }

    /// A service ticket granted with its logout record lives in the record:
    /// no entry of its own, redeemed once, with its session.
    #[tokio::test]
    async fn a_session_holds_its_service_tickets() {
        let (clock, store, id) = with_session(Duration::from_secs(60)).await;
        let st = grant_with_record(&store, &id, 10).await;
        assert_eq!(tickets_in_table(&store), 0, "held by the session");
        assert_eq!(store.len(), 1);
        let expected = Ticket::Service(st.clone());
        assert_eq!(store.ticket(&st.id).await.unwrap(), Some(expected.clone()));
        let (ticket, owner) = store.redeem_ticket(&st.id).await.unwrap().unwrap();
        assert_eq!(ticket, expected);
        assert_eq!(owner.unwrap().id, id);
        assert!(store.redeem_ticket(&st.id).await.unwrap().is_none(), "once");
        assert!(store.ticket(&st.id).await.unwrap().is_none());
        // The record stays for single logout.
        let services = store.session(&id).await.unwrap().unwrap().services;
        assert_eq!(services.len(), 1);
        assert_eq!(services[0].ticket_id, st.id);

        // consume_ticket takes it too; an expired one is gone.
        let st = grant_with_record(&store, &id, 10).await;
        assert_eq!(
            store.consume_ticket(&st.id).await.unwrap(),
            Some(Ticket::Service(st.clone()))
        );
        assert!(store.consume_ticket(&st.id).await.unwrap().is_none());
        let st = grant_with_record(&store, &id, 10).await;
        clock.advance(Duration::from_secs(11));
        assert!(
            store.redeem_ticket(&st.id).await.unwrap().is_none(),
            "expired"
        );

        // Another id with the session's tag is not the session, nor are
        // tickets made up with that tag.
        let tag = crate::ids::session_tag(&id).unwrap();
        let forged = format!("{}-{tag}", crate::ids::new_ticket_id("TGT"));
        assert!(store.session(&forged).await.unwrap().is_none());
        assert!(store
            .touch_session(&forged, Duration::from_secs(60))
            .await
            .unwrap()
            .is_none());
        assert!(store.remove_session(&forged).await.unwrap().is_none());
        let st = grant_with_record(&store, &id, 10).await;
        let made_up = crate::ids::new_session_ticket_id("ST", &id).unwrap();
        assert!(store.redeem_ticket(&made_up).await.unwrap().is_none());
        assert!(!store
            .grant_ticket(
                &forged,
                Duration::from_secs(60),
                Ticket::Service(ServiceTicket {
                    session_id: forged.clone(),
                    ..st.clone()
                }),
                Duration::from_secs(10),
                None,
            )
            .await
            .unwrap());
        assert!(store.session(&id).await.unwrap().is_some());
        assert!(store.redeem_ticket(&st.id).await.unwrap().is_some());
    }

    /// A held ticket outlives its session (removed, or expired and swept)
    /// and its record (pushed out by newer ones), as a ticket in the
    /// tickets' table does.
    #[tokio::test]
    async fn a_held_ticket_outlives_its_session_and_its_record() {
        let (_, store, id) = with_session(Duration::from_secs(60)).await;
        let first = grant_with_record(&store, &id, 10).await;
        for _ in 0..MAX_SERVICE_RECORDS {
            grant_with_record(&store, &id, 10).await;
        }
        assert_eq!(tickets_in_table(&store), 1, "the first one moved out");
        let (_, owner) = store.redeem_ticket(&first.id).await.unwrap().unwrap();
        assert_eq!(owner.unwrap().id, id);

        let orphan = grant_with_record(&store, &id, 10).await;
        store.remove_session(&id).await.unwrap().unwrap();
        let (ticket, owner) = store.redeem_ticket(&orphan.id).await.unwrap().unwrap();
        assert_eq!(ticket, Ticket::Service(orphan));
        assert_eq!(owner, None);

        // Idle for 60 s after the grant, its ticket for 120: the sweeper
        // drops the session and keeps the ticket.
        let (clock, store, id) = with_session(Duration::from_secs(60)).await;
        let ticket = grant_with_record(&store, &id, 120).await;
        clock.advance(Duration::from_secs(61));
        (0..SHARDS).for_each(|i| {
            store.sweep_shard(i);
        });
        assert!(store.session(&id).await.unwrap().is_none());
        let (found, owner) = store.redeem_ticket(&ticket.id).await.unwrap().unwrap();
        assert_eq!(found, Ticket::Service(ticket));
        assert_eq!(owner, None);
    }

    #[tokio::test]
    async fn sweeping_shrinks_the_tables() {
        let clock = Arc::new(ManualClock::new(1_000));
        let store = MemoryStore::new(clock.clone());
        for i in 0..20_000 {
            store
                .add_ticket(
                    Ticket::LoginFlow(crate::ticket::LoginFlow {
                        id: format!("LF-{i}"),
                        service: None,
                    }),
                    Duration::from_secs(1),
                )
                .await
                .unwrap();
        }
        let capacity = |s: &MemoryStore| -> usize {
            s.shards.iter().map(|t| t.lock().tickets.capacity()).sum()
        };
        assert!(capacity(&store) >= 20_000);
        clock.advance(Duration::from_secs(2));
        let dropped: usize = (0..SHARDS).map(|i| store.sweep_shard(i)).sum();
        assert_eq!(dropped, 20_000);
        assert!(store.is_empty());
        assert_eq!(capacity(&store), 0);
    }
}
