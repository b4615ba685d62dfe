//! The tables, in SQLite or PostgreSQL: the same SQL for both (numbered
//! parameters `$n`, which SQLite reads as `?n`).

use crate::{MfaError, StoreLocation};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::Row;
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

/// Bumped when the tables change; a node refuses a store written by a
/// newer version rather than misread it.
pub(crate) const SCHEMA_VERSION: i64 = 1;

const SCHEMA: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS castellan_mfa_meta (
        name TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )",
    // kind 'totp': secret (sealed), last_step (the last accepted time step);
    // kind 'passkey': credential_id (base64url), credential (webauthn-rs JSON),
    // counter (the signature counter), hardware (1: a roaming authenticator).
    "CREATE TABLE IF NOT EXISTS castellan_mfa_factors (
        id TEXT PRIMARY KEY,
        username TEXT NOT NULL,
        kind TEXT NOT NULL,
        label TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT,
        secret TEXT,
        last_step BIGINT NOT NULL DEFAULT -1,
        credential_id TEXT UNIQUE,
        credential TEXT,
        counter BIGINT NOT NULL DEFAULT 0,
        hardware BIGINT NOT NULL DEFAULT 0
    )",
    "CREATE INDEX IF NOT EXISTS castellan_mfa_factors_username ON castellan_mfa_factors (username)",
    "CREATE TABLE IF NOT EXISTS castellan_mfa_recovery_codes (
        username TEXT NOT NULL,
        hash TEXT NOT NULL,
        PRIMARY KEY (username, hash)
    )",
    "INSERT INTO castellan_mfa_meta (name, value) VALUES ('schema_version', '1') ON CONFLICT (name) DO NOTHING",
    // Attribute release consent: one live decision per user and service,
    // for the attribute set `digest` (a new table: nodes of the release
    // before ignore it, so the schema version stays).
    "CREATE TABLE IF NOT EXISTS castellan_consents (
        username TEXT NOT NULL,
        service TEXT NOT NULL,
        digest TEXT NOT NULL,
        decided_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (username, service)
    )",
];

#[derive(Clone)]
pub(crate) enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A password in a URL is not for logs.
pub(crate) fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(unparsable URL)".into(),
    }
}

/// Runs `$body` with `$pool` bound to the concrete pool and `$sql` turning
/// a statement into that database's placeholder syntax.
macro_rules! with_pool {
    ($store:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match &$store.pool {
            Pool::Postgres($pool) => {
                let $sql = |s: &'static str| -> Cow<'static, str> { Cow::Borrowed(s) };
                $body
            }
            Pool::Sqlite($pool) => {
                let $sql = |s: &'static str| -> Cow<'static, str> { Cow::Owned(s.replace('$', "?")) };
                $body
            }
        }
    };
}

/// One row of `castellan_mfa_factors`, without secrets.
#[derive(Debug, Clone)]
pub(crate) struct FactorRow {
    pub id: String,
    pub kind: String,
    pub label: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub hardware: i64,
}

macro_rules! factor_row {
    ($row:expr) => {{
        let r = $row;
        FactorRow {
            id: r.try_get("id")?,
            kind: r.try_get("kind")?,
            label: r.try_get("label")?,
            created_at: r.try_get("created_at")?,
            last_used_at: r.try_get("last_used_at")?,
            hardware: r.try_get("hardware")?,
        }
    }};
}

pub(crate) struct TotpRow {
    pub id: String,
    pub sealed: String,
    pub last_step: i64,
}

pub(crate) struct PasskeyRow {
    pub id: String,
    pub credential: String,
    pub counter: i64,
    pub hardware: i64,
}

/// A new factor's row.
pub(crate) struct NewFactor<'a> {
    pub id: &'a str,
    pub user: &'a str,
    pub kind: &'a str,
    pub label: &'a str,
    pub created_at: i64,
    pub secret: Option<&'a str>,
    pub last_step: i64,
    pub credential_id: Option<&'a str>,
    pub credential: Option<&'a str>,
    pub counter: i64,
    pub hardware: i64,
}

const INSERT_FACTOR: &str = "INSERT INTO castellan_mfa_factors
    (id, username, kind, label, created_at, secret, last_step, credential_id, credential, counter, hardware)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

macro_rules! insert_factor {
    ($sql:expr, $f:expr, $exec:expr) => {
        sqlx::query(&$sql(INSERT_FACTOR))
            .bind($f.id)
            .bind($f.user)
            .bind($f.kind)
            .bind($f.label)
            .bind($f.created_at)
            .bind($f.secret)
            .bind($f.last_step)
            .bind($f.credential_id)
            .bind($f.credential)
            .bind($f.counter)
            .bind($f.hardware)
            .execute($exec)
            .await
            .map_err(duplicate_credential)?
    };
}

fn duplicate_credential(e: sqlx::Error) -> MfaError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            MfaError::InvalidInput("this authenticator is already registered".into())
        }
        _ => MfaError::from(e),
    }
}

pub(crate) struct Store {
    pool: Pool,
}

impl Store {
    pub async fn open(location: &StoreLocation) -> Result<Store, MfaError> {
        let pool = match location {
            StoreLocation::Sqlite { path } => {
                let o = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(4)
                        .acquire_timeout(Duration::from_secs(5))
                        .connect_with(o)
                        .await
                        .map_err(|e| MfaError::Store(format!("{}: {e}", path.display())))?,
                )
            }
            StoreLocation::Postgres { url } => {
                let o = PgConnectOptions::from_str(url)
                    .map_err(|e| MfaError::Store(format!("postgres_url: {e}")))?
                    .application_name("castellan-mfa");
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(10)
                        .acquire_timeout(Duration::from_secs(5))
                        .idle_timeout(Duration::from_secs(300))
                        .connect_with(o)
                        .await
                        .map_err(|e| MfaError::Store(format!("{}: {e}", redact_url(url))))?,
                )
            }
        };
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Idempotent; nodes starting together on PostgreSQL take turns (two
    /// concurrent CREATE TABLE IF NOT EXISTS can collide there).
    async fn migrate(&self) -> Result<(), MfaError> {
        with_pool!(self, |p, _sql| {
            let mut tx = p.begin().await?;
            if matches!(self.pool, Pool::Postgres(_)) {
                sqlx::query("SELECT pg_advisory_xact_lock(7347226139028217)")
                    .execute(&mut *tx)
                    .await?;
            }
            for statement in SCHEMA {
                sqlx::query(statement).execute(&mut *tx).await?;
            }
            let version: String = sqlx::query_scalar(
                "SELECT value FROM castellan_mfa_meta WHERE name = 'schema_version'",
            )
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            match version.parse::<i64>() {
                Ok(v) if v <= SCHEMA_VERSION => Ok(()),
                _ => Err(MfaError::Store(format!(
                    "the MFA tables are of schema version {version}, newer than this node's \
                     ({SCHEMA_VERSION}): upgrade this node"
                ))),
            }
        })
    }

    /// Records `check` when the store has none; returns the one it holds.
    pub async fn key_check(&self, check: &str) -> Result<String, MfaError> {
        with_pool!(self, |p, sql| {
            sqlx::query(&sql(
                "INSERT INTO castellan_mfa_meta (name, value) VALUES ('key_check', $1) ON CONFLICT (name) DO NOTHING",
            ))
            .bind(check)
            .execute(p)
            .await?;
            Ok(
                sqlx::query_scalar("SELECT value FROM castellan_mfa_meta WHERE name = 'key_check'")
                    .fetch_one(p)
                    .await?,
            )
        })
    }

    pub async fn factors(&self, user: &str) -> Result<Vec<FactorRow>, MfaError> {
        with_pool!(self, |p, sql| {
            let rows = sqlx::query(&sql(
                "SELECT id, kind, label, created_at, last_used_at, hardware FROM castellan_mfa_factors
                 WHERE username = $1 ORDER BY created_at, id",
            ))
            .bind(user)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(factor_row!(r));
            }
            Ok(out)
        })
    }

    pub async fn factor(&self, user: &str, id: &str) -> Result<Option<FactorRow>, MfaError> {
        with_pool!(self, |p, sql| {
            let row = sqlx::query(&sql(
                "SELECT id, kind, label, created_at, last_used_at, hardware FROM castellan_mfa_factors
                 WHERE username = $1 AND id = $2",
            ))
            .bind(user)
            .bind(id)
            .fetch_optional(p)
            .await?;
            Ok(match row {
                Some(r) => Some(factor_row!(&r)),
                None => None,
            })
        })
    }

    pub async fn has_factor(&self, user: &str) -> Result<bool, MfaError> {
        with_pool!(self, |p, sql| {
            Ok(sqlx::query(&sql(
                "SELECT 1 FROM castellan_mfa_factors WHERE username = $1 LIMIT 1",
            ))
            .bind(user)
            .fetch_optional(p)
            .await?
            .is_some())
        })
    }

    pub async fn recovery_hashes(&self, user: &str) -> Result<Vec<String>, MfaError> {
        with_pool!(self, |p, sql| {
            Ok(sqlx::query_scalar(&sql(
                "SELECT hash FROM castellan_mfa_recovery_codes WHERE username = $1",
            ))
            .bind(user)
            .fetch_all(p)
            .await?)
        })
    }

    /// Whether this call consumed the code (of two racing, one does).
    pub async fn consume_recovery(&self, user: &str, hash: &str) -> Result<bool, MfaError> {
        with_pool!(self, |p, sql| {
            Ok(sqlx::query(&sql(
                "DELETE FROM castellan_mfa_recovery_codes WHERE username = $1 AND hash = $2",
            ))
            .bind(user)
            .bind(hash)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    pub async fn replace_recovery(&self, user: &str, hashes: &[String]) -> Result<(), MfaError> {
        self.insert_with_recovery(None, user, hashes).await
    }

    /// A factor (if any) and the user's new recovery codes, in one transaction.
    pub async fn insert_with_recovery(
        &self,
        factor: Option<&NewFactor<'_>>,
        user: &str,
        hashes: &[String],
    ) -> Result<(), MfaError> {
        with_pool!(self, |p, sql| {
            let mut tx = p.begin().await?;
            if let Some(f) = factor {
                insert_factor!(sql, f, &mut *tx);
            }
            sqlx::query(&sql(
                "DELETE FROM castellan_mfa_recovery_codes WHERE username = $1",
            ))
            .bind(user)
            .execute(&mut *tx)
            .await?;
            for h in hashes {
                sqlx::query(&sql(
                    "INSERT INTO castellan_mfa_recovery_codes (username, hash) VALUES ($1, $2)
                     ON CONFLICT (username, hash) DO NOTHING",
                ))
                .bind(user)
                .bind(h)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    pub async fn insert_factor(&self, f: &NewFactor<'_>) -> Result<(), MfaError> {
        with_pool!(self, |p, sql| {
            insert_factor!(sql, f, p);
            Ok(())
        })
    }

    pub async fn totp_factors(&self, user: &str) -> Result<Vec<TotpRow>, MfaError> {
        with_pool!(self, |p, sql| {
            let rows = sqlx::query(&sql(
                "SELECT id, secret, last_step FROM castellan_mfa_factors
                 WHERE username = $1 AND kind = 'totp' ORDER BY created_at, id",
            ))
            .bind(user)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(TotpRow {
                    id: r.try_get("id")?,
                    sealed: r
                        .try_get::<Option<String>, _>("secret")?
                        .unwrap_or_default(),
                    last_step: r.try_get("last_step")?,
                });
            }
            Ok(out)
        })
    }

    /// Records `step` as accepted for the factor if it is later than the
    /// last one: false when it is not (a replay, or another node won).
    pub async fn accept_step(&self, id: &str, step: i64, now: i64) -> Result<bool, MfaError> {
        with_pool!(self, |p, sql| {
            Ok(sqlx::query(&sql(
                "UPDATE castellan_mfa_factors SET last_step = $2, last_used_at = $3
                 WHERE id = $1 AND last_step < $2",
            ))
            .bind(id)
            .bind(step)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    pub async fn passkeys(&self, user: &str) -> Result<Vec<PasskeyRow>, MfaError> {
        with_pool!(self, |p, sql| {
            let rows = sqlx::query(&sql(
                "SELECT id, credential, counter, hardware FROM castellan_mfa_factors
                 WHERE username = $1 AND kind = 'passkey' ORDER BY created_at, id",
            ))
            .bind(user)
            .fetch_all(p)
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in &rows {
                out.push(PasskeyRow {
                    id: r.try_get("id")?,
                    credential: r
                        .try_get::<Option<String>, _>("credential")?
                        .unwrap_or_default(),
                    counter: r.try_get("counter")?,
                    hardware: r.try_get("hardware")?,
                });
            }
            Ok(out)
        })
    }

    /// Stores the credential after an assertion whose signature counter is
    /// `counter`. WebAuthn §6.1.1: a counter that is not above the stored
    /// one (when either is non-zero) means a cloned authenticator; checked
    /// here in the UPDATE itself, so that two nodes racing with one
    /// assertion (or two clones) cannot both pass. False: refused.
    pub async fn record_assertion(
        &self,
        id: &str,
        counter: i64,
        credential: &str,
        now: i64,
    ) -> Result<bool, MfaError> {
        with_pool!(self, |p, sql| {
            Ok(sqlx::query(&sql(
                "UPDATE castellan_mfa_factors SET counter = $2, credential = $3, last_used_at = $4
                 WHERE id = $1 AND (counter < $2 OR (counter = 0 AND $2 = 0))",
            ))
            .bind(id)
            .bind(counter)
            .bind(credential)
            .bind(now)
            .execute(p)
            .await?
            .rows_affected()
                == 1)
        })
    }

    pub async fn remove(&self, user: &str, id: &str) -> Result<bool, MfaError> {
        with_pool!(self, |p, sql| {
            Ok(sqlx::query(&sql(
                "DELETE FROM castellan_mfa_factors WHERE username = $1 AND id = $2",
            ))
            .bind(user)
            .bind(id)
            .execute(p)
            .await?
            .rows_affected()
                > 0)
        })
    }

    /// Every factor and recovery code of the user; the number of factors.
    pub async fn reset(&self, user: &str) -> Result<usize, MfaError> {
        with_pool!(self, |p, sql| {
            let mut tx = p.begin().await?;
            let n = sqlx::query(&sql(
                "DELETE FROM castellan_mfa_factors WHERE username = $1",
            ))
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query(&sql(
                "DELETE FROM castellan_mfa_recovery_codes WHERE username = $1",
            ))
            .bind(user)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    /// Whether the user's decision for `service` is for `digest` and lives at `now`.
    pub async fn consent_given(
        &self,
        user: &str,
        service: &str,
        digest: &str,
        now: i64,
    ) -> Result<bool, MfaError> {
        with_pool!(self, |p, sql| {
            Ok(sqlx::query(&sql(
                "SELECT 1 FROM castellan_consents
                 WHERE username = $1 AND service = $2 AND digest = $3 AND expires_at > $4",
            ))
            .bind(user)
            .bind(service)
            .bind(digest)
            .bind(now)
            .fetch_optional(p)
            .await?
            .is_some())
        })
    }

    /// Replaces the user's decision for `service` (an upsert: of two nodes
    /// recording at once, the later wins, both being acceptances).
    pub async fn remember_consent(
        &self,
        user: &str,
        service: &str,
        digest: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), MfaError> {
        with_pool!(self, |p, sql| {
            sqlx::query(&sql(
                "INSERT INTO castellan_consents (username, service, digest, decided_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (username, service)
                 DO UPDATE SET digest = excluded.digest, decided_at = excluded.decided_at,
                               expires_at = excluded.expires_at",
            ))
            .bind(user)
            .bind(service)
            .bind(digest)
            .bind(now)
            .bind(expires_at)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// Drops the user's decision for `service`, and their expired ones.
    pub async fn forget_consent(
        &self,
        user: &str,
        service: &str,
        now: i64,
    ) -> Result<(), MfaError> {
        with_pool!(self, |p, sql| {
            sqlx::query(&sql("DELETE FROM castellan_consents
                 WHERE username = $1 AND (service = $2 OR expires_at <= $3)"))
            .bind(user)
            .bind(service)
            .bind(now)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    /// The stored secret text of a factor, for tests that check it is sealed.
    #[doc(hidden)]
    pub async fn raw_secret(&self, id: &str) -> Result<Option<String>, MfaError> {
        with_pool!(self, |p, sql| {
            Ok(sqlx::query_scalar(&sql(
                "SELECT secret FROM castellan_mfa_factors WHERE id = $1",
            ))
            .bind(id)
            .fetch_optional(p)
            .await?
            .flatten())
        })
    }

    /// Overwrites a factor's secret text: for tests of sealed rows moved between users.
    #[doc(hidden)]
    pub async fn set_raw_secret(&self, id: &str, secret: &str) -> Result<(), MfaError> {
        with_pool!(self, |p, sql| {
            sqlx::query(&sql(
                "UPDATE castellan_mfa_factors SET secret = $2 WHERE id = $1",
            ))
            .bind(id)
            .bind(secret)
            .execute(p)
            .await?;
            Ok(())
        })
    }

    pub async fn close(&self) {
        match &self.pool {
            Pool::Postgres(p) => p.close().await,
            Pool::Sqlite(p) => p.close().await,
        }
    }
}
