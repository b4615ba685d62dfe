//! The `[[authenticators]]` entry of kind `sql`, and its validation.

use crate::parse_duration;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// As written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlEntry {
    pub name: String,
    /// `postgres://user@host/db` or `sqlite:///path/app.db`.
    pub url: String,
    /// The database user's password, read from a file rather than written
    /// in the URL.
    pub password_file: Option<PathBuf>,
    /// One parameter, `$1` (SQLite also takes `?`): the username. The
    /// first column is the stored hash, the others become attributes.
    pub query: String,
    pub pool_size: Option<u32>,
    /// Waiting for a connection, including opening one.
    pub pool_timeout: Option<String>,
    /// PostgreSQL's `statement_timeout`; SQLite's busy timeout.
    pub statement_timeout: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// A validated entry.
#[derive(Clone)]
pub struct SqlSettings {
    pub name: String,
    pub backend: Backend,
    pub url: String,
    pub password: Option<String>,
    pub query: String,
    pub pool_size: u32,
    pub pool_timeout: Duration,
    pub statement_timeout: Duration,
}

impl std::fmt::Debug for SqlSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqlSettings")
            .field("name", &self.name)
            .field("backend", &self.backend)
            .field("query", &self.query)
            .finish_non_exhaustive()
    }
}

/// A relative SQLite path in the URL is taken from the configuration
/// file's directory, like every other path.
fn sqlite_url(url: &str, base: &Path) -> Result<String, String> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or_default();
    let (path, params) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    if path.is_empty() || path == ":memory:" {
        return Err(format!("url: {url:?} names no database file"));
    }
    let path = Path::new(path);
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    };
    let mut out = format!("sqlite://{}", path.display());
    if let Some(q) = params {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// Whether the query takes the username as its one parameter.
fn has_parameter(query: &str, backend: Backend) -> bool {
    let mentions = |n: &str| {
        query
            .match_indices(n)
            .any(|(i, _)| !query[i + n.len()..].starts_with(|c: char| c.is_ascii_digit()))
    };
    mentions("$1") || (backend == Backend::Sqlite && (query.contains('?') || mentions("?1")))
}

impl SqlEntry {
    /// Checks the entry; relative paths are resolved against `base`.
    pub fn validate(&self, base: &Path) -> Result<SqlSettings, Vec<String>> {
        let mut problems = Vec::new();
        let name = &self.name;
        let mut p = |m: String| problems.push(format!("authenticator {name:?}: {m}"));
        let (backend, url) = if self.url.starts_with("postgres://")
            || self.url.starts_with("postgresql://")
        {
            match url::Url::parse(&self.url) {
                Ok(_) => (Backend::Postgres, self.url.clone()),
                Err(e) => {
                    p(format!("url: not a postgres:// URL: {e}"));
                    (Backend::Postgres, String::new())
                }
            }
        } else if self.url.starts_with("sqlite:") {
            match sqlite_url(&self.url, base) {
                Ok(u) => (Backend::Sqlite, u),
                Err(e) => {
                    p(e);
                    (Backend::Sqlite, String::new())
                }
            }
        } else {
            p("url: postgres://… or sqlite:///path (the URL is not shown here: it may hold a password)".into());
            (Backend::Postgres, String::new())
        };
        let password = match &self.password_file {
            None => None,
            Some(_) if backend == Backend::Sqlite => {
                p("password_file is for postgres:// URLs".into());
                None
            }
            Some(f) => {
                let f = if f.is_absolute() {
                    f.clone()
                } else {
                    base.join(f)
                };
                match std::fs::read_to_string(&f) {
                    Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_owned()),
                    Err(e) => {
                        p(format!("password_file {}: {e}", f.display()));
                        None
                    }
                }
            }
        };
        let query = self.query.trim();
        if query.is_empty() {
            p("query: a SELECT whose first column is the stored password hash".into());
        } else if !has_parameter(query, backend) {
            p(format!(
                "query: the username is its parameter $1{}",
                if backend == Backend::Sqlite {
                    " (or ?)"
                } else {
                    ""
                }
            ));
        }
        if query.contains("$2") {
            p("query: one parameter only ($1, the username)".into());
        }
        let mut duration = |key: &str, v: &Option<String>, default: Duration| match v {
            None => default,
            Some(s) => match parse_duration(s) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => {
                    p(format!("{key}: must be longer than zero"));
                    default
                }
                Err(e) => {
                    p(format!("{key}: {e}"));
                    default
                }
            },
        };
        let pool_timeout = duration("pool_timeout", &self.pool_timeout, Duration::from_secs(3));
        let statement_timeout = duration(
            "statement_timeout",
            &self.statement_timeout,
            Duration::from_secs(5),
        );
        let pool_size = self.pool_size.unwrap_or(8);
        if !(1..=256).contains(&pool_size) {
            problems.push(format!(
                "authenticator {name:?}: pool_size: between 1 and 256"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(SqlSettings {
            name: self.name.clone(),
            backend,
            url,
            password,
            query: query.to_owned(),
            pool_size,
            pool_timeout,
            statement_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(url: &str, query: &str) -> SqlEntry {
        SqlEntry {
            name: "appdb".into(),
            url: url.into(),
            password_file: None,
            query: query.into(),
            pool_size: None,
            pool_timeout: None,
            statement_timeout: None,
        }
    }

    #[test]
    fn urls_and_parameters() {
        let s = entry(
            "postgres://castellan@127.0.0.1/app",
            "SELECT password, mail FROM users WHERE username = $1",
        )
        .validate(Path::new("/etc/castellan"))
        .unwrap();
        assert_eq!(s.backend, Backend::Postgres);
        assert_eq!(s.pool_size, 8);
        assert_eq!(s.statement_timeout, Duration::from_secs(5));
        let s = entry("sqlite://app.db", "SELECT p FROM u WHERE n = ?")
            .validate(Path::new("/etc/castellan"))
            .unwrap();
        assert_eq!(s.backend, Backend::Sqlite);
        assert_eq!(s.url, "sqlite:///etc/castellan/app.db");
        let s = entry(
            "sqlite:///var/app.db?mode=ro",
            "SELECT p FROM u WHERE n = $1",
        )
        .validate(Path::new("/etc"))
        .unwrap();
        assert_eq!(s.url, "sqlite:///var/app.db?mode=ro");
    }

    #[test]
    fn problems_are_told() {
        let problems = |url: &str, query: &str| {
            entry(url, query)
                .validate(Path::new("."))
                .unwrap_err()
                .join("\n")
        };
        let p = problems(
            "mysql://root:hunter2@db/app",
            "SELECT p FROM u WHERE n = $1",
        );
        assert!(p.contains("postgres://"), "{p}");
        assert!(
            !p.contains("hunter2"),
            "the URL's password is never shown: {p}"
        );
        assert!(problems("postgres://h/app", "SELECT p FROM u WHERE n = ?").contains("$1"));
        assert!(problems("postgres://h/app", "SELECT p FROM u WHERE n = $10").contains("$1"));
        assert!(problems(
            "postgres://h/app",
            "SELECT p FROM u WHERE n = $1 AND m = $2"
        )
        .contains("one parameter"));
        assert!(problems("postgres://h/app", "  ").contains("first column"));
        assert!(problems("sqlite::memory:", "SELECT p FROM u WHERE n = ?").contains("no database"));
        let mut e = entry("postgres://h/app", "SELECT p FROM u WHERE n = $1");
        e.pool_size = Some(0);
        e.statement_timeout = Some("0s".into());
        e.password_file = Some("/nonexistent/pw".into());
        let p = e.validate(Path::new(".")).unwrap_err().join("\n");
        for needle in ["pool_size", "statement_timeout", "password_file"] {
            assert!(p.contains(needle), "{needle} missing in {p}");
        }
    }
}
