//! The Redis (or Valkey) ticket store: several Castellan nodes share one
//! Redis, any node serves any step of any flow, and a restart of every node
//! loses no SSO session.
//!
//! # Keys
//! All of a session's keys carry its routing tag in braces, so that they sit
//! in one Redis Cluster slot and one Lua script can touch them atomically:
//!
//! | key | type | holds | TTL |
//! |---|---|---|---|
//! | `castellan:{TAG}:s` | hash | `i` session id, `v` session, `h` hard deadline (ms) | idle limit, capped by the hard one |
//! | `castellan:{TAG}:l` | list | the session's single-logout records | as the session |
//! | `castellan:{TAG}:t:ID` | string | a ticket of the session (ST, PT, PGT) | the ticket's |
//! | `castellan:t:ID` | string | a ticket of no session (login form token) | the ticket's |
//! | `castellan:f:KEY` | string | a failed-login counter | the throttling window |
//!
//! A single-node round trip (grant a service ticket from the SSO session,
//! validate it) is two commands: one script each.
//!
//! # Values
//! Every value is one format-version byte followed by the postcard encoding
//! of the Rust value. A new version adds a new byte and keeps reading the old
//! ones, so nodes of two versions can share a Redis during a rolling upgrade.

use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::ids::session_tag;
use crate::store::{TicketStore, MAX_SERVICE_RECORDS};
use crate::ticket::{ServiceRecord, Ticket, TicketGrantingTicket};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{Script, ScriptInvocation};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

const FORMAT_V1: u8 = 1;

/// Bound on every Redis call, so that a dead Redis never hangs a request.
#[derive(Debug, Clone)]
pub struct RedisTimeouts {
    pub connect: Duration,
    pub response: Duration,
}

impl Default for RedisTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(1),
        }
    }
}

/// The set of signing key ids the nodes publish; refreshed at every start,
/// forgotten after 90 days without one.
const KEY_IDS: &str = "castellan:keys";
const KEY_IDS_TTL_MILLIS: u64 = 90 * 24 * 3600 * 1000;

struct Scripts {
    publish_keys: Script,
    create: Script,
    touch: Script,
    read: Script,
    grant: Script,
    redeem: Script,
    remove: Script,
    reserve_attempt: Script,
    release_attempt: Script,
    update: Script,
}

// Session scripts take KEYS = [session hash, logout list] and check that the
// hash belongs to the id asked for (ARGV[1]): the tag is not secret, the id is.
const SESSION_CHECK: &str = r"
local v = redis.call('HGET', KEYS[1], 'v')
if not v or redis.call('HGET', KEYS[1], 'i') ~= ARGV[1] then return false end
";

// ARGV: id, now (ms), idle (ms). Pushes the idle deadline, never past the hard one.
const EXTEND: &str = r"
local ttl = math.min(tonumber(ARGV[3]), tonumber(redis.call('HGET', KEYS[1], 'h')) - tonumber(ARGV[2]))
if ttl <= 0 then redis.call('DEL', KEYS[1], KEYS[2]) return false end
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
";

const WITH_SERVICES: &str = r"
local out = redis.call('LRANGE', KEYS[2], 0, -1)
table.insert(out, 1, v)
return out
";

impl Scripts {
    fn new() -> Self {
        Self {
            // KEYS = [key id set]; ARGV = [ttl, id...]
            publish_keys: Script::new(
                r"
for i = 2, #ARGV do redis.call('SADD', KEYS[1], ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1",
            ),
            // KEYS = [session hash, logout list]; ARGV = [id, value, hard
            // deadline, ttl, record...] (records carried over from a
            // session this one replaces)
            create: Script::new(
                r"
redis.call('HSET', KEYS[1], 'i', ARGV[1], 'v', ARGV[2], 'h', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('DEL', KEYS[2])
if #ARGV > 4 then
  for i = 5, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1",
            ),
            touch: Script::new(&format!("{SESSION_CHECK}{EXTEND}{WITH_SERVICES}")),
            // KEYS = [session hash]; ARGV = [id, value]: the value replaced,
            // the expiry and the logout list kept.
            update: Script::new(
                r"
if redis.call('HGET', KEYS[1], 'i') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'v', ARGV[2])
return 1",
            ),
            read: Script::new(&format!("{SESSION_CHECK}{WITH_SERVICES}")),
            // KEYS += ticket key; ARGV += ticket value, ticket ttl (ms), record ('' for none)
            grant: Script::new(&format!(
                "{SESSION_CHECK}{EXTEND}
if ARGV[6] ~= '' then
  redis.call('RPUSH', KEYS[2], ARGV[6])
  redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1)
  redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ARGV[5])
return 1"
            )),
            // KEYS = [ticket, session hash]. The session id is inside the
            // encoded ticket, so the caller checks that the session matches.
            redeem: Script::new(
                r"
local t = redis.call('GETDEL', KEYS[1])
if not t then return false end
local v = redis.call('HGET', KEYS[2], 'v')
if not v then return {t} end
return {t, v}",
            ),
            remove: Script::new(&format!(
                "{SESSION_CHECK}
local out = redis.call('LRANGE', KEYS[2], 0, -1)
redis.call('DEL', KEYS[1], KEYS[2])
table.insert(out, 1, v)
return out"
            )),
            // KEYS = [counter]; ARGV = [window ms]
            // ARGV: window (ms), limit. Counts only below the limit, so
            // concurrent attempts on any node never get past it.
            reserve_attempt: Script::new(
                r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n >= tonumber(ARGV[2]) then return 0 end
n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1",
            ),
            // DECR keeps the window's expiry; a counter already gone stays gone.
            release_attempt: Script::new(
                r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return 0",
            ),
        }
    }
}

/// Where the store connects, from the scheme of `redis_url`.
enum Target {
    /// `redis://` or `rediss://`: one server (or a proxy that follows a primary).
    Single(redis::Client),
    /// `redis+sentinel://[:password@]s1:26379,s2:26379/SERVICE[/DB]`: the
    /// current primary of SERVICE, asked of the Sentinels again after a failover.
    Sentinel {
        client: tokio::sync::Mutex<SentinelClient>,
        redis_info: redis::RedisConnectionInfo,
    },
    /// `redis+cluster://[:password@]n1:6379,n2:6379`: a Redis Cluster.
    Cluster(redis::cluster::ClusterClient),
}

#[derive(Clone)]
enum Connection {
    Single(ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

pub struct RedisStore {
    target: Target,
    config: ConnectionManagerConfig,
    timeouts: RedisTimeouts,
    /// Made on first use and then kept: it reconnects by itself, so a Redis
    /// that comes back is used again without a restart of Castellan. Dropped
    /// after a connection failure behind Sentinel, so that the next call asks
    /// the Sentinels for the new primary.
    connection: parking_lot::Mutex<Option<Connection>>,
    connecting: tokio::sync::Mutex<()>,
    scripts: Scripts,
    clock: Arc<dyn Clock>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    let mut out = vec![FORMAT_V1];
    out.extend(postcard::to_allocvec(value).map_err(|e| StoreError::Corrupt(e.to_string()))?);
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    match bytes.split_first() {
        Some((&FORMAT_V1, rest)) => {
            postcard::from_bytes(rest).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
        Some((v, _)) => Err(StoreError::Corrupt(format!("unknown value format {v}"))),
        None => Err(StoreError::Corrupt("empty value".into())),
    }
}

/// A session as the release before wrote it: without `methods`.
#[derive(serde::Deserialize)]
struct SessionBeforeMethods {
    id: String,
    principal: Arc<crate::Principal>,
    authenticated_at: u64,
    expires_at: u64,
    long_term: bool,
    services: Vec<ServiceRecord>,
}

/// Postcard has no optional fields: a session written by the release
/// before ends where `methods` would start. It had no second factor.
fn decode_session(bytes: &[u8]) -> Result<TicketGrantingTicket, StoreError> {
    decode::<TicketGrantingTicket>(bytes).or_else(|e| {
        let old: SessionBeforeMethods = decode(bytes).map_err(|_| e)?;
        Ok(TicketGrantingTicket {
            id: old.id,
            principal: old.principal,
            authenticated_at: old.authenticated_at,
            expires_at: old.expires_at,
            long_term: old.long_term,
            services: old.services,
            methods: crate::AuthnMethods::NONE,
        })
    })
}

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

/// Keys of a session, by the tag in its id. An id without a tag cannot be a
/// session: it gets keys that never exist.
fn session_keys(id: &str) -> (String, String) {
    match session_tag(id) {
        Some(tag) => (
            format!("castellan:{{{tag}}}:s"),
            format!("castellan:{{{tag}}}:l"),
        ),
        None => ("castellan:{none}:s".into(), "castellan:{none}:l".into()),
    }
}

fn ticket_key(id: &str) -> String {
    match session_tag(id) {
        Some(tag) => format!("castellan:{{{tag}}}:t:{id}"),
        None => format!("castellan:t:{id}"),
    }
}

fn counter_key(key: &str) -> String {
    format!("castellan:f:{key}")
}

fn record_key(key: &str) -> String {
    format!("castellan:r:{key}")
}

/// Splits `scheme://[user:password@]h1:p1,h2:p2/path` into its credentials,
/// hosts and path (the `url` crate takes one host only).
fn split_multi_host(rest: &str) -> (Option<&str>, Vec<&str>, &str) {
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (credentials, hosts) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    (
        credentials,
        hosts.split(',').filter(|h| !h.is_empty()).collect(),
        path,
    )
}

fn node_url(credentials: Option<&str>, host: &str, db: &str) -> String {
    match credentials {
        Some(c) => format!("redis://{c}@{host}/{db}"),
        None => format!("redis://{host}/{db}"),
    }
}

impl RedisStore {
    /// `url` as `redis://[:password@]host:port/db`, `rediss://…` (TLS),
    /// `redis+sentinel://[:password@]s1:26379,s2:26379/SERVICE[/DB]` or
    /// `redis+cluster://[:password@]n1:6379,n2:6379`. Does not connect: the
    /// first call does, so Castellan starts (and reports 503 on `/health`)
    /// while Redis is down.
    pub fn new(url: &str, timeouts: RedisTimeouts) -> Result<Self, StoreError> {
        let target = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            let (credentials, hosts, path) = split_multi_host(rest);
            let (service, db) = path.split_once('/').unwrap_or((path, "0"));
            if hosts.is_empty() || service.is_empty() {
                return Err(unavailable(
                    "redis+sentinel:// needs sentinel hosts and /SERVICE",
                ));
            }
            let data_node = redis::IntoConnectionInfo::into_connection_info(node_url(
                credentials,
                "localhost:6379",
                db,
            ))
            .map_err(unavailable)?;
            let redis_info = data_node.redis_settings().clone();
            let sentinels: Vec<String> = hosts.iter().map(|h| format!("redis://{h}")).collect();
            let client = SentinelClient::build(
                sentinels,
                service,
                Some(
                    SentinelNodeConnectionInfo::default()
                        .set_redis_connection_info(redis_info.clone()),
                ),
                SentinelServerType::Master,
            )
            .map_err(unavailable)?;
            Target::Sentinel {
                client: tokio::sync::Mutex::new(client),
                redis_info,
            }
        } else if let Some(rest) = url.strip_prefix("redis+cluster://") {
            let (credentials, hosts, _) = split_multi_host(rest);
            if hosts.is_empty() {
                return Err(unavailable("redis+cluster:// needs at least one node"));
            }
            let nodes: Vec<String> = hosts.iter().map(|h| node_url(credentials, h, "")).collect();
            let client = redis::cluster::ClusterClient::builder(nodes)
                .connection_timeout(timeouts.connect)
                .response_timeout(timeouts.response)
                .retries(1)
                .build()
                .map_err(unavailable)?;
            Target::Cluster(client)
        } else {
            Target::Single(redis::Client::open(url).map_err(unavailable)?)
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            target,
            config,
            timeouts,
            connection: parking_lot::Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            scripts: Scripts::new(),
            clock: Arc::new(SystemClock),
        })
    }

    async fn connect(&self) -> Result<Connection, StoreError> {
        match &self.target {
            Target::Single(client) => {
                ConnectionManager::new_with_config(client.clone(), self.config.clone())
                    .await
                    .map(Connection::Single)
                    .map_err(unavailable)
            }
            Target::Sentinel { client, redis_info } => {
                let primary = client
                    .lock()
                    .await
                    .async_get_client()
                    .await
                    .map_err(unavailable)?;
                // The Sentinel answers with the primary's address; the
                // credentials and database are ours.
                let mut info = primary.get_connection_info().clone();
                info = info.set_redis_settings(redis_info.clone());
                let primary = redis::Client::open(info).map_err(unavailable)?;
                ConnectionManager::new_with_config(primary, self.config.clone())
                    .await
                    .map(Connection::Single)
                    .map_err(unavailable)
            }
            Target::Cluster(client) => client
                .get_async_connection()
                .await
                .map(Connection::Cluster)
                .map_err(unavailable),
        }
    }

    async fn connection(&self) -> Result<Connection, StoreError> {
        if let Some(c) = self.connection.lock().clone() {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.connection.lock().clone() {
            return Ok(c);
        }
        let c = tokio::time::timeout(self.timeouts.connect * 2, self.connect())
            .await
            .map_err(|_| unavailable("timed out connecting to Redis"))??;
        *self.connection.lock() = Some(c.clone());
        Ok(c)
    }

    /// Runs one call with the overall time bound; behind Sentinel, a failure
    /// that may mean a failover makes the next call look for the new primary.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        let outcome = tokio::time::timeout(self.timeouts.response * 2, call).await;
        let failover_suspected = match &outcome {
            Err(_) => true,
            Ok(Err(e)) => {
                e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                    || e.to_string().contains("READONLY")
            }
            Ok(Ok(_)) => false,
        };
        if failover_suspected && matches!(self.target, Target::Sentinel { .. }) {
            *self.connection.lock() = None;
        }
        outcome
            .map_err(|_| unavailable("Redis did not answer in time"))?
            .map_err(unavailable)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        match self.connection().await? {
            Connection::Single(mut c) => self.bounded(invocation.invoke_async(&mut c)).await,
            Connection::Cluster(mut c) => self.bounded(invocation.invoke_async(&mut c)).await,
        }
    }

    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        match self.connection().await? {
            Connection::Single(mut c) => self.bounded(cmd.query_async(&mut c)).await,
            Connection::Cluster(mut c) => self.bounded(cmd.query_async(&mut c)).await,
        }
    }

    /// A session from a script's reply: the value, then its logout records.
    fn session_from(
        reply: Option<Vec<Vec<u8>>>,
    ) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let Some(parts) = reply else { return Ok(None) };
        let Some((first, records)) = parts.split_first() else {
            return Ok(None);
        };
        let mut session = decode_session(first)?;
        session.services = records
            .iter()
            .map(|r| decode::<ServiceRecord>(r))
            .collect::<Result<_, _>>()?;
        Ok(Some(session))
    }

    fn session_script<'a>(&self, script: &'a Script, id: &str) -> ScriptInvocation<'a> {
        let (hash, list) = session_keys(id);
        let mut inv = script.prepare_invoke();
        inv.key(hash).key(list).arg(id);
        inv
    }
}

#[async_trait]
impl TicketStore for RedisStore {
    async fn create_session(
        &self,
        session: &TicketGrantingTicket,
        idle: Duration,
    ) -> Result<(), StoreError> {
        let (hash, list) = session_keys(&session.id);
        let ttl = millis(idle).min(session.expires_at.saturating_sub(self.clock.now()).max(1));
        let value = encode(&TicketGrantingTicket {
            services: Vec::new(),
            ..session.clone()
        })?;
        let mut inv = self.scripts.create.prepare_invoke();
        inv.key(hash)
            .key(list)
            .arg(&session.id)
            .arg(value)
            .arg(session.expires_at)
            .arg(ttl);
        let keep = session.services.len().saturating_sub(MAX_SERVICE_RECORDS);
        for record in &session.services[keep..] {
            inv.arg(encode(record)?);
        }
        self.invoke::<i64>(inv).await.map(|_| ())
    }

    async fn touch_session(
        &self,
        id: &str,
        idle: Duration,
    ) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let mut inv = self.session_script(&self.scripts.touch, id);
        inv.arg(self.clock.now()).arg(millis(idle));
        Self::session_from(self.invoke(inv).await?)
    }

    async fn session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let inv = self.session_script(&self.scripts.read, id);
        Self::session_from(self.invoke(inv).await?)
    }

    async fn update_session_methods(
        &self,
        session: &TicketGrantingTicket,
    ) -> Result<bool, StoreError> {
        let (hash, _) = session_keys(&session.id);
        let value = encode(&TicketGrantingTicket {
            services: Vec::new(),
            ..session.clone()
        })?;
        let mut inv = self.scripts.update.prepare_invoke();
        inv.key(hash).arg(&session.id).arg(value);
        let updated: i64 = self.invoke(inv).await?;
        Ok(updated == 1)
    }

    /// One HMGET: the key's TTL is the session's expiry, and `i` tells a
    /// session from another one that shares its tag.
    async fn session_head(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let (hash, _) = session_keys(id);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(hash).arg("i").arg("v");
        let (stored_id, value): (Option<String>, Option<Vec<u8>>) = self.command(cmd).await?;
        match (stored_id, value) {
            (Some(stored), Some(value)) if stored == id => Ok(Some(decode_session(&value)?)),
            _ => Ok(None),
        }
    }

    async fn grant_ticket(
        &self,
        session_id: &str,
        idle: Duration,
        ticket: Ticket,
        ttl: Duration,
        record: Option<ServiceRecord>,
    ) -> Result<bool, StoreError> {
        if session_tag(ticket.id()) != session_tag(session_id) || session_tag(session_id).is_none()
        {
            return Ok(false);
        }
        let record = match &record {
            Some(r) => encode(r)?,
            None => Vec::new(),
        };
        let mut inv = self.session_script(&self.scripts.grant, session_id);
        inv.key(ticket_key(ticket.id()))
            .arg(self.clock.now())
            .arg(millis(idle))
            .arg(encode(&ticket)?)
            .arg(millis(ttl))
            .arg(record)
            .arg(MAX_SERVICE_RECORDS);
        let reply: Option<i64> = self.invoke(inv).await?;
        Ok(reply == Some(1))
    }

    async fn redeem_ticket(
        &self,
        id: &str,
    ) -> Result<Option<(Ticket, Option<TicketGrantingTicket>)>, StoreError> {
        let Some(_) = session_tag(id) else {
            // A ticket of no session: consumed like any one-time value.
            return Ok(self.consume_ticket(id).await?.map(|t| (t, None)));
        };
        let (hash, _) = session_keys(id);
        let mut inv = self.scripts.redeem.prepare_invoke();
        inv.key(ticket_key(id)).key(hash);
        let reply: Option<Vec<Vec<u8>>> = self.invoke(inv).await?;
        let Some(parts) = reply else { return Ok(None) };
        let Some(ticket_bytes) = parts.first() else {
            return Ok(None);
        };
        let ticket: Ticket = decode(ticket_bytes)?;
        let session = match parts.get(1) {
            Some(bytes) => {
                let s = decode_session(bytes)?;
                (Some(s.id.as_str()) == ticket.session_id()).then_some(s)
            }
            None => None,
        };
        Ok(Some((ticket, session)))
    }

    async fn remove_session(&self, id: &str) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let inv = self.session_script(&self.scripts.remove, id);
        Self::session_from(self.invoke(inv).await?)
    }

    async fn add_ticket(&self, ticket: Ticket, ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(ticket_key(ticket.id()))
            .arg(encode(&ticket)?)
            .arg("PX")
            .arg(millis(ttl));
        self.command(cmd).await
    }

    async fn consume_ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(ticket_key(id));
        let bytes: Option<Vec<u8>> = self.command(cmd).await?;
        bytes.map(|b| decode(&b)).transpose()
    }

    async fn ticket(&self, id: &str) -> Result<Option<Ticket>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(ticket_key(id));
        let bytes: Option<Vec<u8>> = self.command(cmd).await?;
        bytes.map(|b| decode(&b)).transpose()
    }

    async fn reserve_attempt(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<bool, StoreError> {
        let mut inv = self.scripts.reserve_attempt.prepare_invoke();
        inv.key(counter_key(key)).arg(millis(window)).arg(limit);
        let reserved: i64 = self.invoke(inv).await?;
        Ok(reserved == 1)
    }

    async fn release_attempt(&self, key: &str) -> Result<(), StoreError> {
        let mut inv = self.scripts.release_attempt.prepare_invoke();
        inv.key(counter_key(key));
        self.invoke::<i64>(inv).await.map(|_| ())
    }

    async fn failures(&self, key: &str) -> Result<u32, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(counter_key(key));
        let n: Option<i64> = self.command(cmd).await?;
        Ok(n.map(|n| u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(0))
    }

    async fn clear_failures(&self, key: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(counter_key(key));
        self.command::<i64>(cmd).await.map(|_| ())
    }

    async fn publish_key_ids(&self, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut inv = self.scripts.publish_keys.prepare_invoke();
        inv.key(KEY_IDS).arg(KEY_IDS_TTL_MILLIS);
        for id in ids {
            inv.arg(id);
        }
        self.invoke::<i64>(inv).await.map(|_| ())
    }

    async fn published_key_ids(&self) -> Result<Vec<String>, StoreError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(KEY_IDS);
        let mut ids: Vec<String> = self.command(cmd).await?;
        ids.sort();
        Ok(ids)
    }

    async fn put_record(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(record_key(key))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl));
        self.command(cmd).await
    }

    async fn add_record(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, StoreError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(record_key(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl));
        let reply: Option<String> = self.command(cmd).await?;
        Ok(reply.is_some())
    }

    async fn record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(record_key(key));
        self.command(cmd).await
    }

    async fn take_record(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut cmd = redis::cmd("GETDEL");
        cmd.arg(record_key(key));
        self.command(cmd).await
    }

    async fn swap_record(&self, key: &str, value: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        // SET XX KEEPTTL GET: replaces only an existing key, keeps its expiry
        // and returns the old value, in one command (Redis 7).
        let mut cmd = redis::cmd("SET");
        cmd.arg(record_key(key))
            .arg(value)
            .arg("XX")
            .arg("KEEPTTL")
            .arg("GET");
        self.command(cmd).await
    }

    async fn remove_record(&self, key: &str) -> Result<(), StoreError> {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(record_key(key));
        self.command::<i64>(cmd).await.map(|_| ())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.command::<String>(redis::cmd("PING")).await.map(|_| ())
    }

    /// A set per user, living as long as its newest session can: a login
    /// adds one id and pushes the set's expiry; ended sessions are pruned
    /// when the set is read.
    async fn index_session(&self, user: &str, id: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut inv = self.scripts.publish_keys.prepare_invoke();
        inv.key(user_sessions_key(user)).arg(millis(ttl)).arg(id);
        self.invoke::<i64>(inv).await.map(|_| ())
    }

    async fn sessions_of(&self, user: &str) -> Result<Vec<TicketGrantingTicket>, StoreError> {
        let key = user_sessions_key(user);
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(&key);
        let ids: Vec<String> = self.command(cmd).await?;
        let mut live = Vec::with_capacity(ids.len());
        for id in ids {
            match self.session_head(&id).await? {
                Some(s) if s.principal.id == user => live.push(s),
                _ => {
                    let mut cmd = redis::cmd("SREM");
                    cmd.arg(&key).arg(&id);
                    self.command::<i64>(cmd).await?;
                }
            }
        }
        Ok(live)
    }
}

/// The index of a user's sessions (support desk: list and end them).
fn user_sessions_key(user: &str) -> String {
    format!("castellan:u:{user}")
}

#[cfg(test)]
mod pinned {
    //! Key names and value encodings are what nodes of different versions
    //! share on one Redis: a change here breaks a rolling upgrade, so it
    //! must be deliberate (and bump `FORMAT_V1`).
    use super::*;
    use crate::service::LogoutMode;
    use crate::ticket::{ServiceRecord, ServiceTicket, Ticket, TicketGrantingTicket};
    use crate::Principal;

    const SESSION: &str = "TGT-1-abcdefghijklmnopqrstuvwxyz012345-TAGTAGTAGTAGTAG0";

    #[test]
    fn key_names_are_fixed() {
        assert_eq!(session_tag(SESSION), Some("TAGTAGTAGTAGTAG0"));
        assert_eq!(
            session_keys(SESSION),
            (
                "castellan:{TAGTAGTAGTAGTAG0}:s".to_owned(),
                "castellan:{TAGTAGTAGTAGTAG0}:l".to_owned()
            )
        );
        let st = SESSION.replacen("TGT", "ST", 1);
        assert_eq!(
            ticket_key(&st),
            format!("castellan:{{TAGTAGTAGTAGTAG0}}:t:{st}")
        );
        assert_eq!(ticket_key("ST-1-x"), "castellan:t:ST-1-x");
        assert_eq!(counter_key("u:alice"), "castellan:f:u:alice");
        assert_eq!(record_key("oidc:code:c"), "castellan:r:oidc:code:c");
        assert_eq!(user_sessions_key("alice"), "castellan:u:alice");
    }

    #[test]
    fn value_encodings_are_fixed() {
        let session = TicketGrantingTicket {
            id: "TGT-1-s".into(),
            principal: Arc::new(Principal::new("al")),
            authenticated_at: 1,
            expires_at: 2,
            long_term: false,
            services: vec![ServiceRecord {
                ticket_id: "ST-1".into(),
                service: "s".into(),
                logout: LogoutMode::BackChannel,
            }],
            methods: crate::AuthnMethods::of(crate::AuthnMethod::Password)
                .with(crate::AuthnMethod::Totp),
        };
        let before_methods = [
            FORMAT_V1, 7, b'T', b'G', b'T', b'-', b'1', b'-', b's', 2, b'a', b'l', 0, 1, 2, 0, 1,
            4, b'S', b'T', b'-', b'1', 1, b's', 1,
        ];
        let bytes = encode(&session).unwrap_or_default();
        // The methods are one byte appended to what the release before wrote.
        assert_eq!(bytes[..bytes.len() - 1], before_methods);
        assert_eq!(bytes.last(), Some(&3));
        assert_eq!(decode_session(&bytes).ok(), Some(session.clone()));
        // That release reads it (postcard ignores what follows its fields)...
        let read_by_old: SessionBeforeMethods = decode(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read_by_old.services, session.services);
        // ...and this one reads that release's sessions, without methods.
        let old = decode_session(&before_methods).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(old.methods, crate::AuthnMethods::NONE);
        assert_eq!(old.services, session.services);
        let ticket = Ticket::Service(ServiceTicket {
            id: "ST-1".into(),
            session_id: "TGT-1-s".into(),
            service: "s".into(),
            from_new_login: true,
        });
        let bytes = encode(&ticket).unwrap_or_default();
        assert_eq!(
            bytes,
            [
                FORMAT_V1, 0, 4, b'S', b'T', b'-', b'1', 7, b'T', b'G', b'T', b'-', b'1', b'-',
                b's', 1, b's', 1
            ]
        );
        assert_eq!(decode::<Ticket>(&bytes).ok(), Some(ticket));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;
    use std::process::{Child, Command, Stdio};

    /// A private redis-server on a free loopback port, stopped on drop.
    struct RedisServer {
        child: Child,
        port: u16,
    }

    impl RedisServer {
        fn start() -> Self {
            Self::start_on(free_port())
        }

        fn start_on(port: u16) -> Self {
            spawn(
                &[
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                &std::env::temp_dir(),
                port,
            )
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
    }

    /// A scratch directory for servers that write files (cluster, sentinel).
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "castellan-{name}-{}-{}",
            std::process::id(),
            crate::ids::new_ticket_id("D")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap()
    }

    fn spawn(args: &[&str], dir: &std::path::Path, port: u16) -> RedisServer {
        // Owned by the guard at once: a panic below still stops the process.
        let server = RedisServer {
            child: Command::new("redis-server")
                .args(args)
                .current_dir(dir)
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (tests/run.sh installs it)"),
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on {port} did not start");
    }

    async fn answers_within_5s(store: &RedisStore) -> bool {
        for _ in 0..50 {
            if store.ping().await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    fn redis_cli(port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(port.to_string())
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    impl Drop for RedisServer {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_store_passes_the_conformance_suite() {
        let server = RedisServer::start();
        let url = server.url();
        conformance::run_all(|| Arc::new(RedisStore::new(&url, RedisTimeouts::default()).unwrap()))
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_down_is_a_bounded_error_and_recovery_is_automatic() {
        let server = RedisServer::start();
        let port = server.port;
        let store = RedisStore::new(&server.url(), RedisTimeouts::default()).unwrap();
        store.ping().await.unwrap();
        drop(server);
        let started = std::time::Instant::now();
        assert!(matches!(
            store.ping().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(store.consume_ticket("ST-1-x").await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "bounded: {:?}",
            started.elapsed()
        );
        // Back on the same port: the same store object serves again.
        let _server = RedisServer::start_on(port);
        assert!(answers_within_5s(&store).await, "service resumes by itself");
    }

    #[tokio::test]
    async fn a_store_made_while_redis_is_down_connects_later() {
        let port = free_port();
        let store = RedisStore::new(
            &format!("redis://127.0.0.1:{port}/0"),
            RedisTimeouts::default(),
        )
        .unwrap();
        assert!(store.ping().await.is_err());
        let _server = RedisServer::start_on(port);
        assert!(
            answers_within_5s(&store).await,
            "connects once Redis is there"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_cluster_store_passes_the_conformance_suite() {
        let dir = scratch("cluster");
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let _nodes: Vec<RedisServer> = ports
            .iter()
            .map(|p| {
                let port = p.to_string();
                let conf = format!("nodes-{p}.conf");
                spawn(
                    &[
                        "--port",
                        &port,
                        "--bind",
                        "127.0.0.1",
                        "--save",
                        "",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        &conf,
                    ],
                    &dir,
                    *p,
                )
            })
            .collect();
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.push("--cluster-yes");
        let created = Command::new("redis-cli").args(&args).output().unwrap();
        assert!(
            created.status.success(),
            "{}",
            String::from_utf8_lossy(&created.stdout)
        );
        // Every node must know the whole slot map before the suite starts.
        for _ in 0..200 {
            if ports
                .iter()
                .all(|p| redis_cli(*p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let url = format!("redis+cluster://{}", addrs.join(","));
        conformance::run_all(|| Arc::new(RedisStore::new(&url, RedisTimeouts::default()).unwrap()))
            .await;
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn redis_sentinel_store_follows_a_failover() {
        let dir = scratch("sentinel");
        let (p1, p2, ps) = (free_port(), free_port(), free_port());
        let _primary = spawn(
            &[
                "--port",
                &p1.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ],
            &dir,
            p1,
        );
        let _replica = spawn(
            &[
                "--port",
                &p2.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--replicaof",
                "127.0.0.1",
                &p1.to_string(),
            ],
            &dir,
            p2,
        );
        let conf = dir.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {ps}\nbind 127.0.0.1\nsentinel monitor castellan 127.0.0.1 {p1} 1\n\
                 sentinel down-after-milliseconds castellan 1000\nsentinel failover-timeout castellan 5000\n"
            ),
        )
        .unwrap();
        let _sentinel = spawn(&[conf.to_str().unwrap(), "--sentinel"], &dir, ps);
        // The replica must be in sync before a failover can promote it.
        for _ in 0..100 {
            if redis_cli(p2, &["INFO", "replication"]).contains("master_link_status:up") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }

        let url = format!("redis+sentinel://127.0.0.1:{ps}/castellan/0");
        let store = RedisStore::new(&url, RedisTimeouts::default()).unwrap();
        let lf = |id: &str| {
            Ticket::LoginFlow(crate::ticket::LoginFlow {
                id: id.into(),
                service: None,
            })
        };
        store
            .add_ticket(lf("LF-before"), Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(
            store.ticket("LF-before").await.unwrap(),
            Some(lf("LF-before"))
        );

        let answer = redis_cli(ps, &["SENTINEL", "FAILOVER", "castellan"]);
        assert!(answer.contains("OK"), "{answer}");
        for _ in 0..100 {
            if redis_cli(ps, &["SENTINEL", "get-master-addr-by-name", "castellan"])
                .contains(&p2.to_string())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            redis_cli(p2, &["ROLE"]).starts_with("master"),
            "the replica was promoted"
        );
        // Until the old primary is demoted, a write may still land there and be
        // lost in its resync (Sentinel replication is asynchronous): wait.
        for _ in 0..100 {
            if redis_cli(p1, &["ROLE"]).starts_with("slave") {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Writes go to the new primary within a few attempts.
        let mut written = false;
        for _ in 0..50 {
            if store
                .add_ticket(lf("LF-after"), Duration::from_secs(60))
                .await
                .is_ok()
            {
                written = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(written, "the store follows the failover");
        assert_eq!(
            store.ticket("LF-after").await.unwrap(),
            Some(lf("LF-after"))
        );
        assert!(
            redis_cli(p2, &["EXISTS", "castellan:t:LF-after"]).trim() == "1",
            "written to the new primary"
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_password_in_the_url_authenticates() {
        let port = free_port();
        let _server = spawn(
            &[
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--requirepass",
                "s3cret",
            ],
            &std::env::temp_dir(),
            port,
        );
        let good = RedisStore::new(
            &format!("redis://:s3cret@127.0.0.1:{port}/0"),
            RedisTimeouts::default(),
        )
        .unwrap();
        good.ping().await.unwrap();
        let bad = RedisStore::new(
            &format!("redis://:wrong@127.0.0.1:{port}/0"),
            RedisTimeouts::default(),
        )
        .unwrap();
        assert!(bad.ping().await.is_err());
        let none = RedisStore::new(
            &format!("redis://127.0.0.1:{port}/0"),
            RedisTimeouts::default(),
        )
        .unwrap();
        assert!(none
            .add_ticket(
                Ticket::LoginFlow(crate::ticket::LoginFlow {
                    id: "LF-x".into(),
                    service: None
                }),
                Duration::from_secs(1)
            )
            .await
            .is_err());
    }

    /// `rediss://`: TLS to Redis, the server's certificate checked against
    /// the trusted roots (here the test's own CA, named by SSL_CERT_FILE).
    #[tokio::test]
    async fn rediss_speaks_verified_tls() {
        let dir = scratch("tls");
        let sh = |cmd: &str| {
            let ok = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                ok.status.success(),
                "{cmd}: {}",
                String::from_utf8_lossy(&ok.stderr)
            );
        };
        sh("openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 1 -subj /CN=castellan-test-ca 2>/dev/null");
        sh("openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null");
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .unwrap();
        sh("openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 1 -extfile ext.cnf 2>/dev/null");
        let port = free_port();
        let _server = spawn(
            &[
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
                "--tls-ca-cert-file",
                "ca.pem",
                "--tls-auth-clients",
                "no",
            ],
            &dir,
            port,
        );
        // Only this test in this binary reads SSL_CERT_FILE.
        std::env::set_var("SSL_CERT_FILE", dir.join("ca.pem"));
        let store = RedisStore::new(
            &format!("rediss://localhost:{port}/0"),
            RedisTimeouts::default(),
        )
        .unwrap();
        let outcome = store.ping().await;
        std::env::remove_var("SSL_CERT_FILE");
        outcome.unwrap();
        // Without the CA the server is not trusted.
        let untrusted = RedisStore::new(
            &format!("rediss://localhost:{port}/0"),
            RedisTimeouts::default(),
        )
        .unwrap();
        assert!(untrusted.ping().await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn multi_host_urls_are_split() {
        assert_eq!(
            split_multi_host(":pw@a:1,b:2/svc/3"),
            (Some(":pw"), vec!["a:1", "b:2"], "svc/3")
        );
        assert_eq!(split_multi_host("a:1"), (None, vec!["a:1"], ""));
        assert!(RedisStore::new("redis+sentinel://a:1", RedisTimeouts::default()).is_err());
        assert!(RedisStore::new("redis+cluster://", RedisTimeouts::default()).is_err());
        assert!(RedisStore::new(
            "redis+cluster://127.0.0.1:7000,127.0.0.1:7001",
            RedisTimeouts::default()
        )
        .is_ok());
    }

    #[test]
    fn values_carry_a_format_version() {
        let t = Ticket::LoginFlow(crate::ticket::LoginFlow {
            id: "LF-1-x".into(),
            service: None,
        });
        let bytes = encode(&t).unwrap();
        assert_eq!(bytes[0], FORMAT_V1);
        assert_eq!(decode::<Ticket>(&bytes).unwrap(), t);
        let mut future = bytes.clone();
        future[0] = 9;
        assert!(matches!(
            decode::<Ticket>(&future),
            Err(StoreError::Corrupt(_))
        ));
        assert!(decode::<Ticket>(&[]).is_err());
    }
}
