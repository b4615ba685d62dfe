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
use crate::store::TicketStore;
use crate::ticket::{ServiceRecord, Ticket, TicketGrantingTicket};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
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

struct Scripts {
    touch: Script,
    read: Script,
    grant: Script,
    redeem: Script,
    remove: Script,
    count_failure: Script,
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
            touch: Script::new(&format!("{SESSION_CHECK}{EXTEND}{WITH_SERVICES}")),
            read: Script::new(&format!("{SESSION_CHECK}{WITH_SERVICES}")),
            // KEYS += ticket key; ARGV += ticket value, ticket ttl (ms), record ('' for none)
            grant: Script::new(&format!(
                "{SESSION_CHECK}{EXTEND}
if ARGV[6] ~= '' then redis.call('RPUSH', KEYS[2], ARGV[6]) redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1])) end
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
            count_failure: Script::new(
                r"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n",
            ),
        }
    }
}

pub struct RedisStore {
    client: redis::Client,
    config: ConnectionManagerConfig,
    timeouts: RedisTimeouts,
    /// Created on first use and then kept: it reconnects by itself, so a
    /// Redis that comes back is used again without a restart of Castellan.
    manager: tokio::sync::OnceCell<ConnectionManager>,
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
        None => ("castellan:none:s".into(), "castellan:none:l".into()),
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

impl RedisStore {
    /// `url` as `redis://[:password@]host:port/db` or `rediss://…` (TLS).
    /// Does not connect: the first call does, so Castellan starts (and
    /// reports 503 on `/health`) while Redis is down.
    pub fn new(url: &str, timeouts: RedisTimeouts) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(Some(timeouts.response))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            client,
            config,
            timeouts,
            manager: tokio::sync::OnceCell::new(),
            scripts: Scripts::new(),
            clock: Arc::new(SystemClock),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, StoreError> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                tokio::time::timeout(
                    self.timeouts.connect * 2,
                    ConnectionManager::new_with_config(self.client.clone(), self.config.clone()),
                )
                .await
                .map_err(|_| unavailable("timed out connecting to Redis"))?
                .map_err(unavailable)
            })
            .await?;
        Ok(manager.clone())
    }

    /// Runs one call with the overall time bound.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        tokio::time::timeout(self.timeouts.response * 2, call)
            .await
            .map_err(|_| unavailable("Redis did not answer in time"))?
            .map_err(unavailable)
    }

    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        let mut con = self.connection().await?;
        self.bounded(invocation.invoke_async(&mut con)).await
    }

    async fn command<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, StoreError> {
        let mut con = self.connection().await?;
        self.bounded(cmd.query_async(&mut con)).await
    }

    /// A session from a script's reply: the value, then its logout records.
    fn session_from(
        reply: Option<Vec<Vec<u8>>>,
    ) -> Result<Option<TicketGrantingTicket>, StoreError> {
        let Some(parts) = reply else { return Ok(None) };
        let Some((first, records)) = parts.split_first() else {
            return Ok(None);
        };
        let mut session: TicketGrantingTicket = decode(first)?;
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
        let (hash, _) = session_keys(&session.id);
        let ttl = millis(idle).min(session.expires_at.saturating_sub(self.clock.now()).max(1));
        let value = encode(&TicketGrantingTicket {
            services: Vec::new(),
            ..session.clone()
        })?;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&hash)
            .arg("i")
            .arg(&session.id)
            .arg("v")
            .arg(value)
            .arg("h")
            .arg(session.expires_at)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&hash)
            .arg(ttl)
            .ignore();
        let mut con = self.connection().await?;
        self.bounded(pipe.query_async::<()>(&mut con)).await
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
            .arg(record);
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
                let s: TicketGrantingTicket = decode(bytes)?;
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

    async fn count_failure(&self, key: &str, window: Duration) -> Result<u32, StoreError> {
        let mut inv = self.scripts.count_failure.prepare_invoke();
        inv.key(counter_key(key)).arg(millis(window));
        let n: i64 = self.invoke(inv).await?;
        Ok(u32::try_from(n).unwrap_or(u32::MAX))
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

    async fn ping(&self) -> Result<(), StoreError> {
        self.command::<String>(redis::cmd("PING")).await.map(|_| ())
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
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("a free port");
            let child = Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .stdout(Stdio::null())
                .spawn()
                .expect("redis-server must be installed (tests/run.sh installs it)");
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Self { child, port };
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            panic!("redis-server did not start");
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }
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
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let _server = RedisServer { child, port };
        let mut recovered = false;
        for _ in 0..50 {
            if store.ping().await.is_ok() {
                recovered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(recovered, "service resumes by itself");
    }

    #[tokio::test]
    async fn a_store_made_while_redis_is_down_connects_later() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let store = RedisStore::new(
            &format!("redis://127.0.0.1:{port}/0"),
            RedisTimeouts::default(),
        )
        .unwrap();
        assert!(store.ping().await.is_err());
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let _server = RedisServer { child, port };
        let mut ok = false;
        for _ in 0..50 {
            if store.ping().await.is_ok() {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(ok);
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
