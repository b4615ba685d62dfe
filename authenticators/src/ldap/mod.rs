//! LDAP and Active Directory: search-then-bind or direct bind, on pooled
//! connections, with the directory's password policy told in plain words.

pub mod ad;
pub mod binary;
pub mod config;
pub mod escape;
mod pool;
pub mod ppolicy;
pub mod tls;

pub use config::{LdapEntry, LdapSettings, Locate};

use async_trait::async_trait;
use base64::Engine as _;
use castellan_core::{
    AccountProblem, AccountRefusal, Attributes, Authenticator, AuthnError, Credentials, Principal,
};
use ldap3::controls::RawControl;
use ldap3::{LdapConnSettings, LdapResult, Scope, SearchEntry};
use pool::{Conn, Pool};
use std::sync::Arc;

/// A directory as a source of accounts.
pub struct LdapAuthenticator {
    inner: Arc<Inner>,
}

struct Inner {
    settings: Arc<LdapSettings>,
    /// Searches, bound as the service account (or anonymous).
    search: Pool,
    /// Users' binds: a connection is rebound by each login.
    binds: Pool,
}

/// What the directory said about a password that it accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordNotice {
    ExpiresIn { seconds: u64 },
    GraceLoginsLeft(u64),
}

impl PasswordNotice {
    /// The notice as a sentence for the login page.
    pub fn sentence(&self) -> String {
        let text = self.to_string();
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => format!("{}{}.", first.to_uppercase(), chars.as_str()),
            None => text,
        }
    }
}

impl std::fmt::Display for PasswordNotice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::ExpiresIn { seconds } => {
                let days = seconds / 86_400;
                if days > 0 {
                    write!(f, "your password expires in {days} day(s)")
                } else {
                    write!(f, "your password expires in {} hour(s)", seconds / 3600)
                }
            }
            Self::GraceLoginsLeft(n) => write!(
                f,
                "your password has expired; {n} sign-in(s) left before the account is locked"
            ),
        }
    }
}

/// The full answer, for `castellan authenticators test`.
#[derive(Debug)]
pub struct Answer {
    pub result: Result<Arc<Principal>, AuthnError>,
    pub dn: Option<String>,
    pub notice: Option<PasswordNotice>,
}

fn backend(name: &str, what: &str, e: impl std::fmt::Display) -> AuthnError {
    tracing::warn!(authenticator = %name, error = %e, "directory {what} failed");
    AuthnError::Backend(format!("directory {name}: {what}: {e}"))
}

/// The result codes that say the directory could not answer, not that
/// the password was wrong.
fn directory_trouble(rc: u32) -> bool {
    matches!(rc, 1 | 2 | 3 | 11 | 51 | 52 | 54 | 80)
}

/// Reads a bind's result: `Ok` with a notice when the password was
/// accepted, the account's problem or a wrong password otherwise.
pub fn judge_bind(
    rc: u32,
    text: &str,
    ppolicy: Option<ppolicy::Response>,
) -> Result<Option<PasswordNotice>, BindVerdict> {
    use ppolicy::{PolicyError, Warning};
    let policy = ppolicy.unwrap_or_default();
    let from_policy = match policy.error {
        Some(PolicyError::AccountLocked) => Some(AccountProblem::Locked),
        Some(PolicyError::PasswordExpired) => Some(AccountProblem::PasswordExpired),
        Some(PolicyError::ChangeAfterReset) => Some(AccountProblem::MustChangePassword),
        Some(PolicyError::Other(_)) | None => None,
    };
    if let Some(problem) = from_policy {
        return Err(BindVerdict::Refused(problem));
    }
    if rc == 0 {
        return Ok(policy.warning.map(|w| match w {
            Warning::TimeBeforeExpiration(s) => PasswordNotice::ExpiresIn { seconds: s },
            Warning::GraceLoginsLeft(n) => PasswordNotice::GraceLoginsLeft(n),
        }));
    }
    match ad::refusal(text) {
        Some(ad::BindRefusal::Account(problem)) => return Err(BindVerdict::Refused(problem)),
        Some(ad::BindRefusal::BadCredentials) => return Err(BindVerdict::WrongPassword),
        None => {}
    }
    if directory_trouble(rc) {
        return Err(BindVerdict::Trouble);
    }
    Err(BindVerdict::WrongPassword)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindVerdict {
    WrongPassword,
    Refused(AccountProblem),
    Trouble,
}

impl LdapAuthenticator {
    pub fn new(settings: LdapSettings) -> Result<Self, String> {
        let needs_tls = settings.start_tls || settings.urls.iter().any(|u| u.scheme() == "ldaps");
        let mut tls = LdapConnSettings::new();
        if needs_tls || settings.ca_file.is_some() {
            tls = tls.set_config(tls::client_config(settings.ca_file.as_deref())?);
        }
        let settings = Arc::new(settings);
        Ok(Self {
            inner: Arc::new(Inner {
                search: Pool::new(settings.clone(), tls.clone(), true),
                binds: Pool::new(settings.clone(), tls, false),
                settings,
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.settings.name
    }

    /// Directory connections opened since start (searches, binds).
    pub fn connections_opened(&self) -> (u64, u64) {
        (self.inner.search.opened(), self.inner.binds.opened())
    }

    /// Connects and binds as the service account (or anonymously) on a
    /// new connection: for `check-config --probe`.
    pub async fn probe(&self) -> Result<String, String> {
        let conn = self
            .inner
            .search
            .get(true)
            .await
            .map_err(|e| e.to_string())?;
        conn.release();
        Ok(match &self.inner.settings.service_account {
            Some((dn, _)) => format!("connected, bound as {dn}"),
            None => "connected (anonymous)".into(),
        })
    }

    /// Everything the directory answered, for operators.
    pub async fn test(&self, credentials: &Credentials) -> Answer {
        let inner = self.inner.clone();
        let credentials = Credentials {
            username: credentials.username.clone(),
            password: credentials.password.clone(),
        };
        let task = tokio::spawn(async move { inner.authenticate(&credentials).await });
        match task.await {
            Ok(answer) => answer,
            Err(e) => Answer {
                result: Err(AuthnError::Backend(format!("directory client failed: {e}"))),
                dn: None,
                notice: None,
            },
        }
    }
}

#[async_trait]
impl Authenticator for LdapAuthenticator {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Arc<Principal>, AuthnError> {
        Ok(self.authenticate_noting(credentials).await?.0)
    }

    async fn authenticate_noting(
        &self,
        credentials: &Credentials,
    ) -> Result<(Arc<Principal>, Option<castellan_core::PasswordNotice>), AuthnError> {
        // In its own task: a panic in the client (on a malformed answer)
        // is an unavailable directory, not a lost request.
        let answer = self.test(credentials).await;
        let principal = answer.result?;
        let notice = answer.notice.map(|notice| {
            tracing::info!(authenticator = %self.name(), user = %principal.id, "password notice: {notice}");
            castellan_core::PasswordNotice {
                message: notice.sentence(),
                kind: Some(match notice {
                    PasswordNotice::ExpiresIn { seconds } => {
                        castellan_core::PasswordNoticeKind::ExpiresIn { seconds }
                    }
                    PasswordNotice::GraceLoginsLeft(n) => {
                        castellan_core::PasswordNoticeKind::GraceLoginsLeft(n)
                    }
                }),
                password_change_url: self.inner.settings.password_change_url.clone(),
            }
        });
        Ok((principal, notice))
    }

    async fn lookup(&self, username: &str) -> Result<Option<Attributes>, AuthnError> {
        let inner = self.inner.clone();
        let username = username.to_owned();
        tokio::spawn(async move { inner.lookup(&username).await })
            .await
            .map_err(|e| AuthnError::Backend(format!("directory client failed: {e}")))?
    }
}

impl Inner {
    fn refusal(&self, problem: AccountProblem) -> AuthnError {
        AuthnError::Refused(AccountRefusal {
            problem,
            password_change_url: self.settings.password_change_url.clone(),
        })
    }

    /// The attributes to ask the directory for.
    fn wanted(&self) -> Vec<String> {
        let mut wanted = self.settings.attributes.clone();
        if let Some(p) = &self.settings.principal {
            if !wanted.iter().any(|a| a.eq_ignore_ascii_case(p)) {
                wanted.push(p.clone());
            }
        }
        if wanted.is_empty() {
            // "No attributes" (RFC 4511 §4.5.1.8).
            wanted.push("1.1".into());
        }
        wanted
    }

    /// The entry of `username` read as the service account, its
    /// attributes as a login would release them.
    async fn lookup(&self, username: &str) -> Result<Option<Attributes>, AuthnError> {
        let entries = match &self.settings.locate {
            Locate::Search { base_dn, filter } => {
                let filter = escape::fill(filter, "user", username, escape::filter_value);
                self.search_entries(base_dn, Scope::Subtree, &filter, self.wanted())
                    .await?
            }
            Locate::Template(template) => {
                let dn = escape::fill(template, "user", username, escape::dn_value);
                self.search_entries(&dn, Scope::Base, "(objectClass=*)", self.wanted())
                    .await?
            }
        };
        if entries.len() != 1 {
            return Ok(None);
        }
        let Some(entry) = entries.into_iter().next() else {
            return Ok(None);
        };
        let principal = self.principal(username, entry).await?;
        Ok(Some(principal.attributes.clone()))
    }

    async fn authenticate(&self, credentials: &Credentials) -> Answer {
        let mut answer = Answer {
            result: Err(AuthnError::InvalidCredentials),
            dn: None,
            notice: None,
        };
        let username = credentials.username.as_str();
        match &self.settings.locate {
            Locate::Search { base_dn, filter } => {
                let filter = escape::fill(filter, "user", username, escape::filter_value);
                let entries = match self
                    .search_entries(base_dn, Scope::Subtree, &filter, self.wanted())
                    .await
                {
                    Ok(e) => e,
                    Err(e) => {
                        answer.result = Err(e);
                        return answer;
                    }
                };
                let entry = match entries.len() {
                    0 => {
                        answer.result = Err(AuthnError::UnknownUser);
                        return answer;
                    }
                    1 => entries.into_iter().next(),
                    n => {
                        tracing::error!(authenticator = %self.settings.name, entries = n, "the user filter matches more than one entry; login refused");
                        return answer;
                    }
                };
                let Some(entry) = entry else { return answer };
                answer.dn = Some(entry.dn.clone());
                // An empty password would be an anonymous bind (RFC 4513
                // §5.1.2) that "succeeds": it never reaches the directory.
                if credentials.password.is_empty() {
                    return answer;
                }
                match self.bind(&entry.dn, &credentials.password, None).await {
                    Ok((notice, _)) => answer.notice = notice,
                    Err(e) => {
                        answer.result = Err(e);
                        return answer;
                    }
                }
                answer.result = self.principal(username, entry).await;
            }
            Locate::Template(template) => {
                if credentials.password.is_empty() {
                    return answer;
                }
                let dn = escape::fill(template, "user", username, escape::dn_value);
                answer.dn = Some(dn.clone());
                match self
                    .bind(&dn, &credentials.password, Some(self.wanted()))
                    .await
                {
                    Ok((notice, Some(entry))) => {
                        answer.notice = notice;
                        answer.result = self.principal(username, entry).await;
                    }
                    Ok((notice, None)) => {
                        answer.notice = notice;
                        answer.result = self
                            .principal(
                                username,
                                SearchEntry {
                                    dn,
                                    attrs: Default::default(),
                                    bin_attrs: Default::default(),
                                },
                            )
                            .await;
                    }
                    Err(e) => answer.result = Err(e),
                }
            }
        }
        answer
    }

    /// A search on a service connection; a reused connection that fails
    /// is given one more try on a new one (the server may have restarted).
    async fn search_entries(
        &self,
        base: &str,
        scope: Scope,
        filter: &str,
        attrs: Vec<String>,
    ) -> Result<Vec<SearchEntry>, AuthnError> {
        let name = &self.settings.name;
        let mut fresh = false;
        loop {
            let mut conn = self
                .search
                .get(fresh)
                .await
                .map_err(|e| backend(name, "connection", e))?;
            let result = conn
                .ldap
                .with_timeout(self.settings.operation_timeout)
                .search(base, scope, filter, attrs.clone())
                .await;
            match result {
                Ok(ldap3::SearchResult(entries, res)) => {
                    conn.release();
                    // noSuchObject: the base is not there, nobody is.
                    if res.rc != 0 && res.rc != 32 {
                        return Err(backend(
                            name,
                            "search",
                            format!("result {} {}", res.rc, res.text),
                        ));
                    }
                    return Ok(entries.into_iter().map(SearchEntry::construct).collect());
                }
                Err(e) if conn.reused && !fresh => {
                    tracing::debug!(authenticator = %name, error = %e, "pooled connection failed; trying a new one");
                    self.search.clear();
                    fresh = true;
                }
                Err(e) => return Err(backend(name, "search", e)),
            }
        }
    }

    /// The user's bind with the password policy control; with `read`, the
    /// user's entry is read on the same connection afterwards.
    async fn bind(
        &self,
        dn: &str,
        password: &str,
        read: Option<Vec<String>>,
    ) -> Result<(Option<PasswordNotice>, Option<SearchEntry>), AuthnError> {
        let name = &self.settings.name;
        let mut fresh = false;
        let (mut conn, result): (Conn<'_>, LdapResult) = loop {
            let mut conn = self
                .binds
                .get(fresh)
                .await
                .map_err(|e| backend(name, "connection", e))?;
            let result = conn
                .ldap
                .with_controls(RawControl {
                    ctype: ppolicy::OID.into(),
                    crit: false,
                    val: None,
                })
                .with_timeout(self.settings.operation_timeout)
                .simple_bind(dn, password)
                .await;
            match result {
                Ok(r) => break (conn, r),
                Err(e) if conn.reused && !fresh => {
                    tracing::debug!(authenticator = %name, error = %e, "pooled connection failed; trying a new one");
                    self.binds.clear();
                    fresh = true;
                }
                Err(e) => return Err(backend(name, "bind", e)),
            }
        };
        let policy = result
            .ctrls
            .iter()
            .find(|c| c.1.ctype == ppolicy::OID)
            .and_then(|c| c.1.val.as_deref())
            .and_then(ppolicy::parse);
        let notice = match judge_bind(result.rc, &result.text, policy) {
            Ok(notice) => notice,
            Err(verdict) => {
                conn.release();
                return Err(match verdict {
                    BindVerdict::WrongPassword => AuthnError::InvalidCredentials,
                    BindVerdict::Refused(problem) => {
                        tracing::info!(authenticator = %name, dn = %dn, "directory refused the account: {problem}");
                        self.refusal(problem)
                    }
                    BindVerdict::Trouble => backend(
                        name,
                        "bind",
                        format!("result {} {}", result.rc, result.text),
                    ),
                });
            }
        };
        let entry = match read {
            None => None,
            Some(attrs) => {
                let found = conn
                    .ldap
                    .with_timeout(self.settings.operation_timeout)
                    .search(dn, Scope::Base, "(objectClass=*)", attrs)
                    .await;
                match found {
                    Ok(ldap3::SearchResult(entries, _)) => {
                        entries.into_iter().next().map(SearchEntry::construct)
                    }
                    Err(e) => return Err(backend(name, "reading the user's entry", e)),
                }
            }
        };
        conn.release();
        Ok((notice, entry))
    }

    async fn principal(
        &self,
        username: &str,
        entry: SearchEntry,
    ) -> Result<Arc<Principal>, AuthnError> {
        let mut attributes = Attributes::new();
        for want in &self.settings.attributes {
            let values = values(&entry, want);
            if !values.is_empty() {
                attributes.insert(want.clone(), values);
            }
        }
        if let Some(groups) = &self.settings.groups {
            let filter = escape::fill(&groups.filter, "dn", &entry.dn, escape::filter_value);
            let filter = escape::fill(&filter, "user", username, escape::filter_value);
            let attrs = vec![groups.attribute.clone().unwrap_or_else(|| "1.1".into())];
            let found = self
                .search_entries(&groups.base_dn, Scope::Subtree, &filter, attrs)
                .await?;
            let mut names: Vec<String> = found
                .iter()
                .flat_map(|g| match &groups.attribute {
                    Some(a) => values(g, a),
                    None => vec![g.dn.clone()],
                })
                .collect();
            if !names.is_empty() {
                let list = attributes.entry(groups.attribute_as.clone()).or_default();
                list.append(&mut names);
                list.sort();
                list.dedup();
            }
        }
        let id = match &self.settings.principal {
            None => username.to_owned(),
            Some(p) => match values(&entry, p).into_iter().next() {
                Some(id) if !id.is_empty() => id,
                _ => {
                    return Err(backend(
                        &self.settings.name,
                        "principal",
                        format!("the entry {} has no {p}", entry.dn),
                    ))
                }
            },
        };
        Ok(Arc::new(Principal { id, attributes }))
    }
}

/// How a binary attribute is written as text (`None` when malformed).
type BinaryAsText = fn(&[u8]) -> Option<String>;

/// An attribute's values, the name matched without regard to case;
/// `objectGUID` and `objectSid` as text, other binary values in base64.
fn values(entry: &SearchEntry, name: &str) -> Vec<String> {
    let lower = name.to_ascii_lowercase();
    let as_text: Option<BinaryAsText> = match lower.as_str() {
        "objectguid" => Some(binary::guid),
        "objectsid" => Some(binary::sid),
        _ => None,
    };
    let mut out = Vec::new();
    for (k, vs) in &entry.attrs {
        if k.eq_ignore_ascii_case(name) {
            for v in vs {
                match as_text {
                    Some(f) => out.push(f(v.as_bytes()).unwrap_or_else(|| v.clone())),
                    None => out.push(v.clone()),
                }
            }
        }
    }
    for (k, vs) in &entry.bin_attrs {
        if k.eq_ignore_ascii_case(name) {
            for v in vs {
                out.push(
                    as_text
                        .and_then(|f| f(v))
                        .unwrap_or_else(|| base64::engine::general_purpose::STANDARD.encode(v)),
                );
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ppolicy::{PolicyError, Response, Warning};

    #[test]
    fn binds_are_judged_by_policy_then_ad_code_then_result() {
        assert_eq!(judge_bind(0, "", None), Ok(None));
        assert_eq!(
            judge_bind(
                0,
                "",
                Some(Response {
                    warning: Some(Warning::GraceLoginsLeft(2)),
                    error: None
                })
            ),
            Ok(Some(PasswordNotice::GraceLoginsLeft(2)))
        );
        assert_eq!(
            judge_bind(
                49,
                "",
                Some(Response {
                    warning: None,
                    error: Some(PolicyError::AccountLocked)
                })
            ),
            Err(BindVerdict::Refused(AccountProblem::Locked))
        );
        assert_eq!(
            judge_bind(
                49,
                "",
                Some(Response {
                    warning: None,
                    error: Some(PolicyError::PasswordExpired)
                })
            ),
            Err(BindVerdict::Refused(AccountProblem::PasswordExpired))
        );
        // slapd accepts the bind of a reset password, restricted to a change.
        assert_eq!(
            judge_bind(
                0,
                "",
                Some(Response {
                    warning: None,
                    error: Some(PolicyError::ChangeAfterReset)
                })
            ),
            Err(BindVerdict::Refused(AccountProblem::MustChangePassword))
        );
        assert_eq!(
            judge_bind(49, "Invalid credentials", None),
            Err(BindVerdict::WrongPassword)
        );
        assert_eq!(
            judge_bind(49, "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 533, v4563", None),
            Err(BindVerdict::Refused(AccountProblem::Disabled))
        );
        assert_eq!(
            judge_bind(49, "80090308: LdapErr: DSID-0C09044E, comment: AcceptSecurityContext error, data 52e, v4563", None),
            Err(BindVerdict::WrongPassword)
        );
        assert_eq!(
            judge_bind(52, "unavailable", None),
            Err(BindVerdict::Trouble)
        );
        assert_eq!(judge_bind(51, "busy", None), Err(BindVerdict::Trouble));
        assert_eq!(
            judge_bind(32, "no such object", None),
            Err(BindVerdict::WrongPassword)
        );
        assert_eq!(
            judge_bind(34, "invalid DN", None),
            Err(BindVerdict::WrongPassword)
        );
    }

    #[test]
    fn notices_in_plain_words() {
        assert_eq!(
            PasswordNotice::ExpiresIn {
                seconds: 3 * 86_400 + 5
            }
            .to_string(),
            "your password expires in 3 day(s)"
        );
        assert_eq!(
            PasswordNotice::ExpiresIn { seconds: 7200 }.to_string(),
            "your password expires in 2 hour(s)"
        );
    }

    #[test]
    fn attribute_values_matched_without_case_and_binary_as_text() {
        let mut entry = SearchEntry {
            dn: "uid=a,dc=x".into(),
            attrs: Default::default(),
            bin_attrs: Default::default(),
        };
        entry
            .attrs
            .insert("memberOf".into(), vec!["cn=a".into(), "cn=b".into()]);
        entry.bin_attrs.insert(
            "objectGUID".into(),
            vec![vec![
                0x5e, 0x8c, 0x16, 0xf9, 0xb2, 0xce, 0xaa, 0x4f, 0xb6, 0xbf, 0x32, 0x9b, 0xf3, 0x9f,
                0xa1, 0xe4,
            ]],
        );
        entry
            .bin_attrs
            .insert("jpegPhoto".into(), vec![vec![0xff, 0xd8]]);
        assert_eq!(values(&entry, "memberof"), vec!["cn=a", "cn=b"]);
        assert_eq!(
            values(&entry, "objectGUID"),
            vec!["f9168c5e-ceb2-4faa-b6bf-329bf39fa1e4"]
        );
        assert_eq!(values(&entry, "jpegPhoto"), vec!["/9g="]);
        assert!(values(&entry, "mail").is_empty());
    }
}
