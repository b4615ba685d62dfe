//! The `[[authenticators]]` entry of kind `ldap`, and its validation.

use crate::parse_duration;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// As written in the configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapEntry {
    pub name: String,
    /// Tried in order: the first that answers is used.
    pub urls: Vec<String>,
    #[serde(default)]
    pub start_tls: bool,
    /// Trust anchors (PEM) added to the system roots.
    pub ca_file: Option<PathBuf>,
    /// The service account; absent: anonymous search.
    pub bind_dn: Option<String>,
    pub bind_password: Option<String>,
    pub bind_password_file: Option<PathBuf>,
    pub base_dn: Option<String>,
    /// `{user}` is replaced by the username, escaped (RFC 4515).
    pub user_filter: Option<String>,
    /// Direct bind: the user's DN, `{user}` escaped (RFC 4514), e.g.
    /// `uid={user},ou=people,dc=example,dc=org`. No search before the bind.
    pub bind_dn_template: Option<String>,
    #[serde(default)]
    pub attributes: Vec<String>,
    /// The attribute that becomes the user id (default: the typed username).
    pub principal: Option<String>,
    /// Shown with the messages about expired, locked, must-change accounts.
    pub password_change_url: Option<String>,
    /// Group search, for directories without `memberOf`: `{dn}` is the
    /// user's DN and `{user}` the username, both filter-escaped.
    pub group_base_dn: Option<String>,
    pub group_filter: Option<String>,
    /// The group entry's attribute to release (default: the group's DN).
    pub group_attribute: Option<String>,
    /// The user attribute that receives the groups (default `memberOf`).
    pub groups_as: Option<String>,
    pub connect_timeout: Option<String>,
    pub operation_timeout: Option<String>,
    pub pool_timeout: Option<String>,
    pub pool_size: Option<usize>,
}

/// How the user's DN is found.
#[derive(Debug, Clone)]
pub enum Locate {
    /// A search under `base_dn` with `filter`, on the service account's connection.
    Search { base_dn: String, filter: String },
    /// The DN from a template: no search.
    Template(String),
}

#[derive(Debug, Clone)]
pub struct GroupSearch {
    pub base_dn: String,
    pub filter: String,
    pub attribute: Option<String>,
    pub attribute_as: String,
}

/// A validated entry.
#[derive(Clone)]
pub struct LdapSettings {
    pub name: String,
    pub urls: Vec<url::Url>,
    pub start_tls: bool,
    pub ca_file: Option<PathBuf>,
    pub service_account: Option<(String, String)>,
    pub locate: Locate,
    pub attributes: Vec<String>,
    pub principal: Option<String>,
    pub password_change_url: Option<String>,
    pub groups: Option<GroupSearch>,
    pub connect_timeout: Duration,
    pub operation_timeout: Duration,
    pub pool_timeout: Duration,
    pub pool_size: usize,
}

impl std::fmt::Debug for LdapSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LdapSettings")
            .field("name", &self.name)
            .field("urls", &self.urls)
            .field("locate", &self.locate)
            .finish_non_exhaustive()
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

impl LdapEntry {
    /// Checks the entry; relative paths are resolved against `base`.
    pub fn validate(&self, base: &Path) -> Result<LdapSettings, Vec<String>> {
        let mut problems = Vec::new();
        let name = &self.name;
        let mut p = |m: String| problems.push(format!("authenticator {name:?}: {m}"));
        if self.urls.is_empty() {
            p("urls: at least one ldap:// or ldaps:// URL".into());
        }
        let mut urls = Vec::new();
        for u in &self.urls {
            match url::Url::parse(u) {
                Ok(url) if matches!(url.scheme(), "ldap" | "ldaps") && url.host_str().is_some() => {
                    if self.start_tls && url.scheme() == "ldaps" {
                        p(format!("{u}: start_tls is for ldap:// URLs"));
                    }
                    urls.push(url);
                }
                _ => p(format!(
                    "urls: {u:?} is not an ldap:// or ldaps:// URL with a host"
                )),
            }
        }
        let ca_file = self.ca_file.as_deref().map(|f| resolve(base, f));
        if let Some(f) = &ca_file {
            match std::fs::read(f) {
                Ok(pem) if crate::ldap::tls::certificates(&pem).is_ok_and(|c| !c.is_empty()) => {}
                Ok(_) => p(format!("ca_file {}: no PEM certificate in it", f.display())),
                Err(e) => p(format!("ca_file {}: {e}", f.display())),
            }
        }
        let password = match (&self.bind_password, &self.bind_password_file) {
            (Some(_), Some(_)) => {
                p("bind_password and bind_password_file: one or the other".into());
                None
            }
            (Some(pw), None) => Some(pw.clone()),
            (None, Some(f)) => {
                let f = resolve(base, f);
                match std::fs::read_to_string(&f) {
                    Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_owned()),
                    Err(e) => {
                        p(format!("bind_password_file {}: {e}", f.display()));
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let service_account = match (&self.bind_dn, password) {
            (Some(dn), Some(pw)) if !pw.is_empty() => Some((dn.clone(), pw)),
            (Some(_), _) => {
                p("bind_dn needs a non-empty bind_password or bind_password_file".into());
                None
            }
            (None, Some(_)) => {
                p("bind_password without bind_dn".into());
                None
            }
            (None, None) => None,
        };
        let locate = match (&self.bind_dn_template, &self.base_dn) {
            (Some(t), _) if self.user_filter.is_some() => {
                p("bind_dn_template and user_filter: one or the other".into());
                Locate::Template(t.clone())
            }
            (Some(t), _) => {
                if !t.contains("{user}") {
                    p("bind_dn_template: must contain {user}".into());
                }
                Locate::Template(t.clone())
            }
            (None, Some(base_dn)) => {
                let filter = self
                    .user_filter
                    .clone()
                    .unwrap_or_else(|| "(uid={user})".into());
                if !filter.contains("{user}") {
                    p("user_filter: must contain {user}".into());
                }
                if !(filter.starts_with('(') && filter.ends_with(')'))
                    || ldap3::parse_filter(filter.replace("{user}", "x")).is_err()
                {
                    p(format!("user_filter: {filter:?} is not an LDAP filter"));
                }
                Locate::Search {
                    base_dn: base_dn.clone(),
                    filter,
                }
            }
            (None, None) => {
                p("base_dn (search then bind) or bind_dn_template (direct bind) is needed".into());
                Locate::Template(String::new())
            }
        };
        let groups = match (&self.group_base_dn, &self.group_filter) {
            (Some(base_dn), filter) => {
                let filter = filter.clone().unwrap_or_else(|| "(member={dn})".into());
                if ldap3::parse_filter(filter.replace("{dn}", "x").replace("{user}", "x")).is_err()
                {
                    p(format!("group_filter: {filter:?} is not an LDAP filter"));
                }
                Some(GroupSearch {
                    base_dn: base_dn.clone(),
                    filter,
                    attribute: self.group_attribute.clone(),
                    attribute_as: self.groups_as.clone().unwrap_or_else(|| "memberOf".into()),
                })
            }
            (None, Some(_)) => {
                p("group_filter without group_base_dn".into());
                None
            }
            (None, None) => None,
        };
        if let Some(u) = &self.password_change_url {
            if !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                p(format!("password_change_url: {u:?} is not an http(s) URL"));
            }
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
        let connect_timeout = duration(
            "connect_timeout",
            &self.connect_timeout,
            Duration::from_secs(3),
        );
        let operation_timeout = duration(
            "operation_timeout",
            &self.operation_timeout,
            Duration::from_secs(5),
        );
        let pool_timeout = duration("pool_timeout", &self.pool_timeout, Duration::from_secs(3));
        let pool_size = self.pool_size.unwrap_or(8);
        if !(1..=256).contains(&pool_size) {
            problems.push(format!(
                "authenticator {name:?}: pool_size: between 1 and 256"
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(LdapSettings {
            name: self.name.clone(),
            urls,
            start_tls: self.start_tls,
            ca_file,
            service_account,
            locate,
            attributes: self.attributes.clone(),
            principal: self.principal.clone(),
            password_change_url: self.password_change_url.clone(),
            groups,
            connect_timeout,
            operation_timeout,
            pool_timeout,
            pool_size,
        })
    }
}
