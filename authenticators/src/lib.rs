//! Castellan's external sources of accounts, consulted after `[[users]]`:
//! `[[authenticators]]` of kind `ldap` (LDAP, Active Directory) and `sql`
//! (PostgreSQL, SQLite). Each kind is a module with its entry, its
//! validation and its [`castellan_core::Authenticator`]; a new kind is one
//! more variant of [`AuthenticatorEntry`] and [`Source`].

pub mod ldap;
pub mod sql;

use castellan_core::Authenticator;
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// One `[[authenticators]]` entry, by `kind`.
// Read once per configuration load: the size of the larger kind is no cost.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AuthenticatorEntry {
    Ldap(ldap::LdapEntry),
    Sql(sql::SqlEntry),
}

/// A validated entry.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum SourceSettings {
    Ldap(ldap::LdapSettings),
    Sql(sql::SqlSettings),
}

impl SourceSettings {
    pub fn name(&self) -> &str {
        match self {
            Self::Ldap(s) => &s.name,
            Self::Sql(s) => &s.name,
        }
    }
}

impl AuthenticatorEntry {
    pub fn name(&self) -> &str {
        match self {
            Self::Ldap(e) => &e.name,
            Self::Sql(e) => &e.name,
        }
    }

    /// Checks one entry; relative paths are resolved against `base`.
    pub fn validate(&self, base: &Path) -> Result<SourceSettings, Vec<String>> {
        match self {
            Self::Ldap(e) => e.validate(base).map(SourceSettings::Ldap),
            Self::Sql(e) => e.validate(base).map(SourceSettings::Sql),
        }
    }
}

/// Names must be unique and not empty: `authenticators test NAME` and
/// `attributes_from = "NAME"` refer to them.
pub fn check_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for n in names {
        if n.is_empty() {
            problems.push("authenticator: name must not be empty".into());
        } else if !seen.insert(n) {
            problems.push(format!("authenticator {n:?}: the name is used twice"));
        }
    }
    problems
}

/// A source ready to answer (connections are opened on first use: a
/// directory that is down does not stop the server from starting).
#[derive(Clone)]
pub enum Source {
    Ldap(Arc<ldap::LdapAuthenticator>),
    Sql(Arc<sql::SqlAuthenticator>),
}

impl Source {
    pub fn build(settings: &SourceSettings) -> Result<Self, String> {
        match settings {
            SourceSettings::Ldap(s) => Ok(Self::Ldap(Arc::new(ldap::LdapAuthenticator::new(
                s.clone(),
            )?))),
            SourceSettings::Sql(s) => {
                Ok(Self::Sql(Arc::new(sql::SqlAuthenticator::new(s.clone())?)))
            }
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Ldap(l) => l.name(),
            Self::Sql(s) => s.name(),
        }
    }

    pub fn authenticator(&self) -> Arc<dyn Authenticator> {
        match self {
            Self::Ldap(l) => l.clone(),
            Self::Sql(s) => s.clone(),
        }
    }

    /// Reaches the source as the service account (LDAP) or runs `SELECT 1`
    /// (SQL): `check-config --probe`.
    pub async fn probe(&self) -> Result<String, String> {
        match self {
            Self::Ldap(l) => l.probe().await,
            Self::Sql(s) => s.probe().await,
        }
    }
}

/// "10s", "500ms", "2m".
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("bad duration {s:?}: give a unit (ms, s or m)"))?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("bad duration {s:?}: expected a number then ms, s or m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        _ => Err(format!("bad duration {s:?}: unit must be ms, s or m")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(toml_text: &str) -> Result<AuthenticatorEntry, String> {
        #[derive(Deserialize)]
        struct File {
            authenticators: Vec<AuthenticatorEntry>,
        }
        toml::from_str::<File>(toml_text)
            .map(|f| f.authenticators.into_iter().next().expect("one entry"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_contract_example_validates() {
        let e = entry(
            r#"
[[authenticators]]
name = "directory"
kind = "ldap"
urls = ["ldaps://ldap1.example.org", "ldap://ldap2.example.org"]
bind_dn = "cn=castellan,ou=services,dc=example,dc=org"
bind_password = "secret"
base_dn = "ou=people,dc=example,dc=org"
user_filter = "(uid={user})"
attributes = ["mail", "cn", "memberOf"]
principal = "uid"
"#,
        )
        .unwrap();
        let SourceSettings::Ldap(s) = e.validate(Path::new(".")).unwrap() else {
            panic!("an ldap entry");
        };
        assert_eq!(s.urls.len(), 2);
        assert_eq!(s.pool_size, 8);
        assert_eq!(s.operation_timeout, Duration::from_secs(5));
        assert!(matches!(s.locate, ldap::Locate::Search { .. }));
    }

    #[test]
    fn the_contract_sql_example_validates() {
        let e = entry(
            r#"
[[authenticators]]
name = "appdb"
kind = "sql"
url = "postgres://castellan@127.0.0.1/app"
query = "SELECT password, mail, cn FROM users WHERE username = $1"
"#,
        )
        .unwrap();
        let SourceSettings::Sql(s) = e.validate(Path::new(".")).unwrap() else {
            panic!("an sql entry");
        };
        assert_eq!(s.backend, sql::Backend::Postgres);
        assert_eq!(s.pool_size, 8);
        let err = entry("[[authenticators]]\nname = \"d\"\nkind = \"sql\"\nurl = \"sqlite://a.db\"\nquery = \"SELECT p FROM u WHERE n = ?\"\nbind_dn = \"x\"\n")
            .unwrap_err();
        assert!(err.contains("bind_dn"), "{err}");
    }

    #[test]
    fn unknown_keys_and_kinds_are_refused() {
        let err = entry("[[authenticators]]\nname = \"d\"\nkind = \"ldap\"\nurls = []\nbase_dn = \"x\"\nbogus = 1\n")
            .unwrap_err();
        assert!(err.contains("bogus"), "{err}");
        let err = entry("[[authenticators]]\nname = \"d\"\nkind = \"kerberos\"\n").unwrap_err();
        assert!(err.contains("kerberos"), "{err}");
    }

    #[test]
    fn problems_are_told() {
        let e = entry(
            r#"
[[authenticators]]
name = "d"
kind = "ldap"
urls = ["http://x", "ldaps://ok"]
start_tls = true
bind_dn = "cn=x"
user_filter = "uid={user}"
bind_dn_template = "uid=x"
group_filter = "(member={dn})"
connect_timeout = "3 parsecs"
pool_size = 0
password_change_url = "javascript:alert(1)"
ca_file = "/nonexistent/ca.pem"
"#,
        )
        .unwrap();
        let problems = e.validate(Path::new(".")).unwrap_err().join("\n");
        for needle in [
            "\"http://x\" is not an ldap",
            "start_tls is for ldap://",
            "bind_dn needs",
            "bind_dn_template and user_filter",
            "group_filter without group_base_dn",
            "connect_timeout",
            "pool_size",
            "password_change_url",
            "ca_file",
        ] {
            assert!(
                problems.contains(needle),
                "{needle} missing in:\n{problems}"
            );
        }
        let e = entry("[[authenticators]]\nname = \"d\"\nkind = \"ldap\"\nurls = [\"ldap://h\"]\nbase_dn = \"dc=x\"\nuser_filter = \"(uid={user}\"\n").unwrap();
        assert!(e.validate(Path::new(".")).unwrap_err()[0].contains("not an LDAP filter"));
        let e = entry("[[authenticators]]\nname = \"d\"\nkind = \"ldap\"\nurls = [\"ldap://h\"]\n")
            .unwrap();
        assert!(e.validate(Path::new(".")).unwrap_err()[0].contains("base_dn"));
    }

    #[test]
    fn names_are_unique() {
        assert!(check_names(["a", "b"].into_iter()).is_empty());
        assert_eq!(check_names(["a", "a"].into_iter()).len(), 1);
        assert_eq!(check_names([""].into_iter()).len(), 1);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("3").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3h").is_err());
    }
}
