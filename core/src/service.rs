//! The service registry: which service URLs may get tickets, and on what terms.

use crate::methods::MfaPolicy;
use parking_lot::RwLock;
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// How a service learns that an SSO session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogoutMode {
    #[default]
    None,
    /// A SAML `LogoutRequest` POSTed server to server, as Apereo CAS sends it.
    BackChannel,
}

/// How the pages name and show a service: a display name, and the theme
/// (logo, accent colour) that the web layer serves under this key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceDisplay {
    pub name: Option<String>,
    pub theme: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RegisteredService {
    pub name: String,
    /// Anchored: it must match the whole service URL.
    pub pattern: Regex,
    pub release: Vec<String>,
    /// pgtUrl values allowed to receive a PGT; none means no proxying.
    pub proxy_callback: Option<Regex>,
    pub logout: LogoutMode,
    /// Validated only by an in-process protocol module (the OIDC
    /// provider's callback): its tickets are refused at the CAS endpoints,
    /// which would otherwise hand its released attributes to anyone
    /// holding one.
    pub internal: bool,
    /// A second factor asked before a ticket (none: the first is enough).
    pub mfa: Option<MfaPolicy>,
    /// Attribute release consent: asked before the first ticket, and
    /// remembered this long (none: released without asking).
    pub consent: Option<Duration>,
    /// The login page's name and look for the service.
    pub display: ServiceDisplay,
}

impl RegisteredService {
    /// `pattern` and `proxy_callback` are matched against the whole URL
    /// whether or not the administrator wrote `^…$`.
    pub fn new(
        name: impl Into<String>,
        pattern: &str,
        release: Vec<String>,
        proxy_callback: Option<&str>,
        logout: LogoutMode,
    ) -> Result<Self, regex::Error> {
        Ok(Self {
            name: name.into(),
            pattern: anchored(pattern)?,
            release,
            proxy_callback: proxy_callback.map(anchored).transpose()?,
            logout,
            internal: false,
            mfa: None,
            consent: None,
            display: ServiceDisplay::default(),
        })
    }

    /// Marks the service as one only an in-process module validates.
    pub fn internal(mut self) -> Self {
        self.internal = true;
        self
    }

    /// Asks a second factor of the logins for this service.
    pub fn with_mfa(mut self, mfa: Option<MfaPolicy>) -> Self {
        self.mfa = mfa;
        self
    }

    /// Asks the user's consent before releasing attributes to this
    /// service; a decision lives `ttl`.
    pub fn with_consent(mut self, ttl: Option<Duration>) -> Self {
        self.consent = ttl;
        self
    }

    pub fn with_display(mut self, display: ServiceDisplay) -> Self {
        self.display = display;
        self
    }

    pub fn allows_proxy_callback(&self, pgt_url: &str) -> bool {
        self.proxy_callback
            .as_ref()
            .is_some_and(|re| re.is_match(pgt_url))
    }
}

fn anchored(pattern: &str) -> Result<Regex, regex::Error> {
    // Compiled alone first: a pattern such as `a)|(b` would otherwise escape
    // the group below and be anchored at one end only.
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()?;
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
}

/// Services in declaration order; the first match wins.
#[derive(Debug, Default)]
pub struct ServiceRegistry {
    services: Vec<RegisteredService>,
    /// URLs already looked up, with the position of the service each
    /// matched (`None`: none). A login and its validation name the same
    /// few URLs, and a regex pass over every registration per request was
    /// a visible share of a CAS round trip. Bounded: emptied when full, so
    /// that made-up URLs cost their own lookup and no memory.
    matched: RwLock<HashMap<Box<str>, Option<usize>>>,
}

/// Entries of the lookup cache, and the longest URL it keeps.
const MATCHED_ENTRIES: usize = 4096;
const MATCHED_URL_LEN: usize = 1024;

impl Clone for ServiceRegistry {
    fn clone(&self) -> Self {
        Self::new(self.services.clone())
    }
}

impl ServiceRegistry {
    pub fn new(services: Vec<RegisteredService>) -> Self {
        Self {
            services,
            matched: RwLock::default(),
        }
    }

    pub fn find(&self, service_url: &str) -> Option<&RegisteredService> {
        let cached = self.matched.read().get(service_url).copied();
        let position = match cached {
            Some(position) => position,
            None => {
                let position = self
                    .services
                    .iter()
                    .position(|s| s.pattern.is_match(service_url));
                if service_url.len() <= MATCHED_URL_LEN {
                    let mut matched = self.matched.write();
                    if matched.len() >= MATCHED_ENTRIES {
                        matched.clear();
                    }
                    matched.insert(service_url.into(), position);
                }
                position
            }
        };
        self.services.get(position?)
    }

    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }

    pub fn len(&self) -> usize {
        self.services.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, pattern: &str) -> RegisteredService {
        RegisteredService::new(name, pattern, vec![], None, LogoutMode::None).unwrap()
    }

    #[test]
    fn first_match_in_declaration_order_over_the_whole_url() {
        let reg = ServiceRegistry::new(vec![
            svc("a", r"https://app\.example\.org/admin.*"),
            svc("b", r"https://app\.example\.org(/.*)?"),
        ]);
        assert_eq!(
            reg.find("https://app.example.org/admin/x").unwrap().name,
            "a"
        );
        assert_eq!(reg.find("https://app.example.org/home").unwrap().name, "b");
        // Unanchored patterns still match the whole URL only.
        assert!(reg
            .find("https://evil.example/?https://app.example.org/")
            .is_none());
        assert!(reg.find("https://app.example.org.evil.example/").is_none());
    }

    #[test]
    fn remembered_lookups_answer_as_the_patterns_do() {
        let reg = ServiceRegistry::new(vec![
            svc("a", r"https://a\.example\.org/.*"),
            svc("b", r"https://[a-z0-9]+\.example\.org/.*"),
        ]);
        // Twice each: the second answer comes from the cache.
        for _ in 0..2 {
            assert_eq!(reg.find("https://a.example.org/x").unwrap().name, "a");
            assert_eq!(reg.find("https://b.example.org/x").unwrap().name, "b");
            assert!(reg.find("https://evil.example/").is_none());
        }
        // Past its bound the cache starts again; answers stay the same.
        for n in 0..MATCHED_ENTRIES + 10 {
            let url = format!("https://h{n}.example.org/");
            assert!(reg.find(&url).is_some_and(|s| s.name == "b"), "{url}");
        }
        assert!(reg.matched.read().len() <= MATCHED_ENTRIES);
        assert_eq!(reg.find("https://a.example.org/x").unwrap().name, "a");
        // A long URL is matched but not kept.
        let long = format!("https://a.example.org/{}", "x".repeat(MATCHED_URL_LEN));
        assert_eq!(reg.find(&long).unwrap().name, "a");
        assert!(!reg.matched.read().contains_key(long.as_str()));
        // A clone (a reload) starts with an empty cache.
        assert!(reg.clone().matched.read().is_empty());
    }

    #[test]
    fn a_pattern_cannot_break_out_of_its_anchors() {
        assert!(RegisteredService::new(
            "x",
            r"https://app\.example\.org/)|(https://x",
            vec![],
            None,
            LogoutMode::None
        )
        .is_err());
    }

    #[test]
    fn proxy_callback_must_match_whole_url() {
        let s = RegisteredService::new(
            "p",
            ".*",
            vec![],
            Some(r"https://p\.example/pgt"),
            LogoutMode::None,
        )
        .unwrap();
        assert!(s.allows_proxy_callback("https://p.example/pgt"));
        assert!(!s.allows_proxy_callback("https://p.example/pgt/../x"));
        assert!(!svc("n", ".*").allows_proxy_callback("https://p.example/pgt"));
    }
}
