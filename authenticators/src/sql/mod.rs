//! An application's SQL table (PostgreSQL or SQLite) as a source of
//! accounts: one parameterised query per login, whose first column is the
//! stored hash and whose other columns become attributes.

pub mod config;
pub mod hash;

pub use config::{Backend, SqlEntry, SqlSettings};

use async_trait::async_trait;
use castellan_core::{Attributes, Authenticator, AuthnError, Credentials, Principal};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Column, Executor, Row, Statement, TypeInfo};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A database as a source of accounts.
pub struct SqlAuthenticator {
    inner: Arc<Inner>,
}

enum Connect {
    Postgres(PgConnectOptions),
    Sqlite(SqliteConnectOptions),
}

#[derive(Clone)]
enum Pool {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

struct Inner {
    settings: SqlSettings,
    connect: Connect,
    /// Made on first use, inside the runtime (the pool's upkeep is a task).
    pool: OnceLock<Pool>,
    /// A hash like the first one read from the table, verified when the
    /// user is unknown or the stored hash cannot be verified.
    decoy: OnceLock<String>,
    /// Until a hash has been read: bcrypt at cost 10.
    default_decoy: OnceLock<String>,
    /// Verifications at once (each takes a core for tens of milliseconds):
    /// a burst of attempts queues here.
    verifications: tokio::sync::Semaphore,
}

/// What the query returned for one username.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    NoRow,
    One {
        /// NULL: the account has no password.
        hash: Option<String>,
        attributes: Attributes,
    },
    /// More than one row: the query does not identify one account.
    Several,
}

/// The full answer, for `castellan authenticators test`.
#[derive(Debug)]
pub struct Answer {
    pub result: Result<Arc<Principal>, AuthnError>,
    /// The stored hash's format (never the hash), when a row was found.
    pub hash_format: Option<String>,
}

fn backend(name: &str, what: &str, e: impl std::fmt::Display) -> AuthnError {
    tracing::warn!(authenticator = %name, error = %e, "database {what} failed");
    AuthnError::Backend(format!("database {name}: {what}: {e}"))
}

/// A cell as text: NULL is `None`; text, integers, booleans and floats
/// are written out; other types are an error naming the column's type.
macro_rules! cell {
    ($row:expr, $i:expr, $($t:ty),+) => {{
        let row = $row;
        let i: usize = $i;
        let mut out: Option<Option<String>> = None;
        $(
            if out.is_none() {
                if let Ok(v) = row.try_get::<Option<$t>, usize>(i) {
                    out = Some(v.map(|v| v.to_string()));
                }
            }
        )+
        out.ok_or_else(|| {
            let column = &row.columns()[i];
            format!(
                "column {} is of type {}: cast it to text in the query",
                column.name(),
                column.type_info().name()
            )
        })
    }};
}

/// The first column (the hash) and the others as attributes named after
/// their column; NULLs are left out, a name used twice gathers its values.
fn record(cells: Vec<(String, Option<String>)>) -> Result<Lookup, String> {
    let mut cells = cells.into_iter();
    let (_, hash) = cells
        .next()
        .ok_or("the query returns no column: the first must be the stored hash")?;
    let mut attributes = Attributes::new();
    for (name, value) in cells {
        if let Some(v) = value {
            attributes.entry(name).or_default().push(v);
        }
    }
    Ok(Lookup::One { hash, attributes })
}

fn pg_cells(row: &sqlx::postgres::PgRow) -> Result<Vec<(String, Option<String>)>, String> {
    (0..row.columns().len())
        .map(|i| {
            cell!(row, i, String, i64, i32, i16, bool, f64, f32)
                .map(|v| (row.columns()[i].name().to_owned(), v))
        })
        .collect()
}

fn sqlite_cells(row: &sqlx::sqlite::SqliteRow) -> Result<Vec<(String, Option<String>)>, String> {
    (0..row.columns().len())
        .map(|i| {
            cell!(row, i, String, i64, f64, bool).map(|v| (row.columns()[i].name().to_owned(), v))
        })
        .collect()
}

impl SqlAuthenticator {
    pub fn new(settings: SqlSettings) -> Result<Self, String> {
        let connect = match settings.backend {
            Backend::Postgres => {
                let mut o = PgConnectOptions::from_str(&settings.url)
                    .map_err(|e| format!("url: {e}"))?
                    .application_name("castellan");
                if let Some(pw) = &settings.password {
                    o = o.password(pw);
                }
                Connect::Postgres(o)
            }
            Backend::Sqlite => Connect::Sqlite(
                SqliteConnectOptions::from_str(&settings.url)
                    .map_err(|e| format!("url: {e}"))?
                    .busy_timeout(settings.statement_timeout),
            ),
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            inner: Arc::new(Inner {
                settings,
                connect,
                pool: OnceLock::new(),
                decoy: OnceLock::new(),
                default_decoy: OnceLock::new(),
                verifications: tokio::sync::Semaphore::new(cores),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.settings.name
    }

    /// Runs `SELECT 1`, then prepares the query (without running it) to
    /// tell its columns: for `check-config --probe`.
    pub async fn probe(&self) -> Result<String, String> {
        let inner = self.inner.clone();
        let task = tokio::spawn(async move { inner.probe().await });
        task.await
            .map_err(|e| format!("database client failed: {e}"))?
    }

    /// Everything the database answered, for operators.
    pub async fn test(&self, credentials: &Credentials) -> Answer {
        let inner = self.inner.clone();
        let credentials = Credentials {
            username: credentials.username.clone(),
            password: credentials.password.clone(),
        };
        // In its own task: a panic in the driver is an unavailable
        // database, not a lost request.
        let task = tokio::spawn(async move { inner.authenticate(&credentials).await });
        match task.await {
            Ok(answer) => answer,
            Err(e) => Answer {
                result: Err(AuthnError::Backend(format!("database client failed: {e}"))),
                hash_format: None,
            },
        }
    }

    /// The rows for `username` (at most two are read).
    pub async fn lookup(&self, username: &str) -> Result<Lookup, AuthnError> {
        self.inner.lookup(username).await
    }
}

#[async_trait]
impl Authenticator for SqlAuthenticator {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Arc<Principal>, AuthnError> {
        self.test(credentials).await.result
    }
}

impl Inner {
    fn pool(&self) -> Pool {
        self.pool
            .get_or_init(|| {
                let s = &self.settings;
                match &self.connect {
                    Connect::Postgres(o) => {
                        let ms = s.statement_timeout.as_millis();
                        Pool::Postgres(
                            PgPoolOptions::new()
                                .max_connections(s.pool_size)
                                .acquire_timeout(s.pool_timeout)
                                .idle_timeout(Duration::from_secs(300))
                                .after_connect(move |conn, _| {
                                    Box::pin(async move {
                                        conn.execute(
                                            format!("SET statement_timeout = {ms}").as_str(),
                                        )
                                        .await?;
                                        Ok(())
                                    })
                                })
                                .connect_lazy_with(o.clone()),
                        )
                    }
                    Connect::Sqlite(o) => Pool::Sqlite(
                        SqlitePoolOptions::new()
                            .max_connections(s.pool_size)
                            .acquire_timeout(s.pool_timeout)
                            .idle_timeout(Duration::from_secs(300))
                            .connect_lazy_with(o.clone()),
                    ),
                }
            })
            .clone()
    }

    /// The longest a lookup may take: a connection, then the statement.
    fn deadline(&self) -> Duration {
        self.settings.pool_timeout + self.settings.statement_timeout + Duration::from_secs(1)
    }

    async fn probe(&self) -> Result<String, String> {
        let work = async {
            let columns: Vec<String> = match self.pool() {
                Pool::Postgres(p) => {
                    p.execute("SELECT 1").await?;
                    let st = p.prepare(self.settings.query.as_str()).await?;
                    st.columns().iter().map(|c| c.name().to_owned()).collect()
                }
                Pool::Sqlite(p) => {
                    p.execute("SELECT 1").await?;
                    let st = p.prepare(self.settings.query.as_str()).await?;
                    st.columns().iter().map(|c| c.name().to_owned()).collect()
                }
            };
            Ok::<_, sqlx::Error>(columns)
        };
        let columns = tokio::time::timeout(self.deadline(), work)
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|e| e.to_string())?;
        let Some((hash, attributes)) = columns.split_first() else {
            return Err("the query returns no column: the first must be the stored hash".into());
        };
        Ok(format!(
            "SELECT 1 answered; the query reads the hash from {hash}{}",
            if attributes.is_empty() {
                String::new()
            } else {
                format!(", attributes {}", attributes.join(", "))
            }
        ))
    }

    async fn lookup(&self, username: &str) -> Result<Lookup, AuthnError> {
        let name = &self.settings.name;
        let query = self.settings.query.as_str();
        // PostgreSQL text cannot hold NUL (it refuses the parameter): no
        // account has such a name.
        if self.settings.backend == Backend::Postgres && username.contains('\0') {
            return Ok(Lookup::NoRow);
        }
        let work = async {
            let mut rows = Vec::new();
            match self.pool() {
                Pool::Postgres(p) => {
                    let mut stream = sqlx::query(query).bind(username).fetch(&p);
                    while let Some(row) = stream.try_next().await? {
                        rows.push(pg_cells(&row));
                        if rows.len() > 1 {
                            break;
                        }
                    }
                }
                Pool::Sqlite(p) => {
                    let mut stream = sqlx::query(query).bind(username).fetch(&p);
                    while let Some(row) = stream.try_next().await? {
                        rows.push(sqlite_cells(&row));
                        if rows.len() > 1 {
                            break;
                        }
                    }
                }
            }
            Ok::<_, sqlx::Error>(rows)
        };
        let rows = tokio::time::timeout(self.deadline(), work)
            .await
            .map_err(|_| backend(name, "query", "no answer in time"))?
            .map_err(|e| backend(name, "query", e))?;
        let mut rows = rows.into_iter();
        match (rows.next(), rows.next()) {
            (None, _) => Ok(Lookup::NoRow),
            (Some(cells), None) => cells
                .and_then(record)
                .map_err(|e| backend(name, "reading the row", e)),
            (Some(_), Some(_)) => Ok(Lookup::Several),
        }
    }

    fn decoy(&self) -> &str {
        match self.decoy.get() {
            Some(d) => d,
            None => self.default_decoy.get_or_init(hash::default_decoy),
        }
    }

    /// Verifies on a blocking thread; without a usable hash, the decoy is
    /// verified instead so that every attempt costs one verification.
    async fn verify(
        self: &Arc<Self>,
        stored: Option<String>,
        password: &str,
    ) -> Result<Result<bool, hash::HashError>, AuthnError> {
        let _permit = self
            .verifications
            .acquire()
            .await
            .map_err(|e| AuthnError::Backend(e.to_string()))?;
        let inner = self.clone();
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            let verdict = match &stored {
                Some(h) => hash::verify(h, &password),
                None => Ok(false),
            };
            match (&stored, &verdict) {
                (Some(h), Ok(_)) => {
                    if inner.decoy.get().is_none() {
                        if let Some(d) = hash::decoy_like(h) {
                            let _ = inner.decoy.set(d);
                        }
                    }
                }
                _ => {
                    let _ = hash::verify(inner.decoy(), &password);
                }
            }
            // An empty password is never right, whatever the table holds.
            verdict.map(|ok| ok && !password.is_empty())
        })
        .await
        .map_err(|e| AuthnError::Backend(format!("password verification failed: {e}")))
    }

    async fn authenticate(self: Arc<Self>, credentials: &Credentials) -> Answer {
        let name = &self.settings.name;
        let username = credentials.username.as_str();
        let mut answer = Answer {
            result: Err(AuthnError::InvalidCredentials),
            hash_format: None,
        };
        let (stored, attributes) = match self.lookup(username).await {
            Err(e) => {
                answer.result = Err(e);
                return answer;
            }
            Ok(Lookup::Several) => {
                tracing::error!(authenticator = %name, user = %username, "the query returns more than one row for this username; login refused");
                answer.result = Err(AuthnError::Backend(format!(
                    "database {name}: the query returns more than one row for one username"
                )));
                return answer;
            }
            Ok(Lookup::NoRow) => {
                // The same work as for a known user: one verification.
                answer.result = match self.verify(None, &credentials.password).await {
                    Ok(_) => Err(AuthnError::UnknownUser),
                    Err(e) => Err(e),
                };
                return answer;
            }
            Ok(Lookup::One { hash, attributes }) => (hash, attributes),
        };
        answer.hash_format = Some(match &stored {
            Some(h) => hash::describe(h),
            None => "NULL (no password)".into(),
        });
        if stored.is_none() {
            tracing::info!(authenticator = %name, user = %username, "the account has no stored password (NULL)");
        }
        answer.result = match self.verify(stored, &credentials.password).await {
            Err(e) => Err(e),
            Ok(Ok(true)) => Ok(Arc::new(Principal {
                id: username.to_owned(),
                attributes,
            })),
            Ok(Ok(false)) => Err(AuthnError::InvalidCredentials),
            Ok(Err(e)) => {
                tracing::error!(authenticator = %name, user = %username, "{e}; login refused");
                Err(AuthnError::InvalidCredentials)
            }
        };
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn cells(v: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        v.iter()
            .map(|(n, v)| (n.to_string(), v.map(str::to_owned)))
            .collect()
    }

    #[test]
    fn columns_become_attributes() {
        let Lookup::One { hash, attributes } = record(cells(&[
            ("password", Some("$2b$04$x")),
            ("mail", Some("a@example.org")),
            ("phone", None),
            ("group", Some("staff")),
            ("group", Some("admins")),
        ]))
        .unwrap() else {
            panic!("one row")
        };
        assert_eq!(hash.as_deref(), Some("$2b$04$x"));
        assert_eq!(attributes.len(), 2, "NULL is absent: {attributes:?}");
        assert_eq!(attributes["mail"], vec!["a@example.org"]);
        assert_eq!(attributes["group"], vec!["staff", "admins"]);
        assert!(record(Vec::new()).is_err());
        assert_eq!(
            record(cells(&[("password", None)])).unwrap(),
            Lookup::One {
                hash: None,
                attributes: Attributes::new()
            }
        );
    }

    fn sqlite_source(dir: &Path, query: &str) -> SqlAuthenticator {
        let db = dir.join("app.db");
        let e = SqlEntry {
            name: "appdb".into(),
            url: format!("sqlite://{}", db.display()),
            password_file: None,
            query: query.into(),
            pool_size: Some(2),
            pool_timeout: Some("2s".into()),
            statement_timeout: Some("2s".into()),
        };
        SqlAuthenticator::new(e.validate(dir).unwrap()).unwrap()
    }

    async fn make_db(dir: &Path) {
        let o =
            SqliteConnectOptions::from_str(&format!("sqlite://{}", dir.join("app.db").display()))
                .unwrap()
                .create_if_missing(true);
        let pool = SqlitePoolOptions::new().connect_with(o).await.unwrap();
        for statement in [
            "CREATE TABLE users (username TEXT, password TEXT, mail TEXT, age INTEGER, admin BOOLEAN, score REAL, blob BLOB)",
            // "correct horse"
            "INSERT INTO users VALUES ('alice', '$2b$04$jDlyyQwPNNWruQ9TWHkafOVskLv9BfADm/1opFDK2Rnu6GQ20xwDW', 'alice@example.org', 42, 1, 1.5, NULL)",
            "INSERT INTO users VALUES ('bob', 'pbkdf2_sha256$10000$seasalt$yUSQkCSBBGjOglsg2f0YsigZVwZC6oXxFCoUK6nZWMQ=', NULL, NULL, 0, NULL, NULL)",
            "INSERT INTO users VALUES ('carol', '$1$abc$mEYYKBYwc4Odg5SoPgnFr/', NULL, NULL, 0, NULL, NULL)",
            "INSERT INTO users VALUES ('dave', NULL, NULL, NULL, 0, NULL, NULL)",
            "INSERT INTO users VALUES ('twin', '$2b$04$jDlyyQwPNNWruQ9TWHkafOVskLv9BfADm/1opFDK2Rnu6GQ20xwDW', NULL, NULL, 0, NULL, NULL)",
            "INSERT INTO users VALUES ('twin', '$2b$04$jDlyyQwPNNWruQ9TWHkafOVskLv9BfADm/1opFDK2Rnu6GQ20xwDW', NULL, NULL, 0, NULL, NULL)",
            "INSERT INTO users VALUES ('eve', '$2b$04$jDlyyQwPNNWruQ9TWHkafOVskLv9BfADm/1opFDK2Rnu6GQ20xwDW', NULL, NULL, 0, NULL, x'00ff')",
        ] {
            pool.execute(statement).await.unwrap();
        }
        pool.close().await;
    }

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("castellan-sql-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn sqlite_logins_with_dollar_one_and_question_mark() {
        let dir = temp_dir("logins");
        make_db(&dir).await;
        for query in [
            "SELECT password, mail, age, admin, score FROM users WHERE username = $1",
            "SELECT password, mail, age, admin, score FROM users WHERE username = ?",
        ] {
            let s = sqlite_source(&dir, query);
            let alice = s
                .authenticate(&creds("alice", "correct horse"))
                .await
                .unwrap();
            assert_eq!(alice.id, "alice");
            assert_eq!(alice.attributes["mail"], vec!["alice@example.org"]);
            assert_eq!(alice.attributes["age"], vec!["42"]);
            assert_eq!(alice.attributes["admin"], vec!["1"]);
            assert_eq!(alice.attributes["score"], vec!["1.5"]);
            assert_eq!(
                s.authenticate(&creds("alice", "wrong")).await.unwrap_err(),
                AuthnError::InvalidCredentials
            );
            assert_eq!(
                s.authenticate(&creds("alice", "")).await.unwrap_err(),
                AuthnError::InvalidCredentials
            );
            let bob = s
                .authenticate(&creds("bob", "correct horse"))
                .await
                .unwrap();
            assert!(bob.attributes.is_empty() || !bob.attributes.contains_key("mail"));
            // Unknown: the chain moves on.
            assert_eq!(
                s.authenticate(&creds("nobody", "correct horse"))
                    .await
                    .unwrap_err(),
                AuthnError::UnknownUser
            );
            // A username that looks like SQL is a value.
            assert_eq!(
                s.authenticate(&creds("' OR '1'='1", "correct horse"))
                    .await
                    .unwrap_err(),
                AuthnError::UnknownUser
            );
            // An unknown format and a NULL hash never match.
            let carol = s.test(&creds("carol", "correct horse")).await;
            assert_eq!(carol.result.unwrap_err(), AuthnError::InvalidCredentials);
            assert_eq!(carol.hash_format.as_deref(), Some("$1$"));
            assert_eq!(
                s.authenticate(&creds("dave", "")).await.unwrap_err(),
                AuthnError::InvalidCredentials
            );
            // Two rows for one username: never the first one.
            assert!(matches!(
                s.authenticate(&creds("twin", "correct horse")).await,
                Err(AuthnError::Backend(m)) if m.contains("more than one row")
            ));
        }
        // A column of a type that is not text is a clear error.
        let s = sqlite_source(&dir, "SELECT password, blob FROM users WHERE username = $1");
        assert!(matches!(
            s.authenticate(&creds("eve", "correct horse")).await,
            Err(AuthnError::Backend(m)) if m.contains("column blob")
        ));
        assert!(s
            .probe()
            .await
            .unwrap()
            .contains("hash from password, attributes blob"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_missing_database_is_unavailable_not_a_wrong_password() {
        let dir = temp_dir("missing");
        let s = sqlite_source(&dir, "SELECT password FROM users WHERE username = $1");
        assert!(matches!(
            s.authenticate(&creds("alice", "correct horse")).await,
            Err(AuthnError::Backend(_))
        ));
        assert!(s.probe().await.is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_query_on_a_missing_table_fails_the_probe() {
        let dir = temp_dir("probe");
        make_db(&dir).await;
        let s = sqlite_source(&dir, "SELECT password FROM accounts WHERE username = $1");
        let e = s.probe().await.unwrap_err();
        assert!(e.contains("accounts"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
