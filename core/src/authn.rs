//! Authenticators: who may open an SSO session.

use crate::error::AuthnError;
use crate::principal::{Attributes, Principal};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use subtle::ConstantTimeEq;

/// What a user typed on the login form.
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// A password-policy notice, as data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordNoticeKind {
    ExpiresIn { seconds: u64 },
    GraceLoginsLeft(u64),
}

/// A source of accounts: the built-in `[[users]]`, a directory, a database.
/// A warning about an accepted password, in plain words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswordNotice {
    pub message: String,
    /// What the notice says, for pages that word it in the user's
    /// language (`message` is the source's English sentence).
    pub kind: Option<PasswordNoticeKind>,
    /// Where the password can be changed (the source's
    /// `password_change_url`), shown with the message.
    pub password_change_url: Option<String>,
}

#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The principal when the password is right. A source that does not
    /// know the username answers [`AuthnError::UnknownUser`] (the next
    /// source is asked); one that knows it decides: a wrong password is
    /// [`AuthnError::InvalidCredentials`], an account it will not let in
    /// is [`AuthnError::Refused`].
    async fn authenticate(&self, credentials: &Credentials) -> Result<Arc<Principal>, AuthnError>;

    /// As [`Authenticator::authenticate`], with what the source said about
    /// an accepted password that the user should hear (it expires soon, or
    /// only grace logins are left).
    async fn authenticate_noting(
        &self,
        credentials: &Credentials,
    ) -> Result<(Arc<Principal>, Option<PasswordNotice>), AuthnError> {
        Ok((self.authenticate(credentials).await?, None))
    }

    /// The attributes of an account this source knows, without its
    /// password: for a user who signed in elsewhere (an upstream with
    /// `attributes_from`). `Ok(None)`: not known here, or the source cannot
    /// look accounts up.
    async fn lookup(&self, _username: &str) -> Result<Option<Attributes>, AuthnError> {
        Ok(None)
    }

    /// As [`Authenticator::authenticate_noting`], naming the source that
    /// decided (for the audit log): a chain names the entry that knew the
    /// user; a single source does not know its own name.
    async fn authenticate_deciding(&self, credentials: &Credentials) -> Decision {
        Decision {
            source: None,
            result: self.authenticate_noting(credentials).await,
        }
    }
}

/// A source's answer, with the name of the source that gave it.
#[derive(Debug)]
pub struct Decision {
    pub source: Option<Arc<str>>,
    pub result: Result<(Arc<Principal>, Option<PasswordNotice>), AuthnError>,
}

/// The sources in the order configured (`[[users]]`, then each of
/// `[[authenticators]]`): the first that knows the username decides.
pub struct AuthenticatorChain {
    sources: Vec<NamedSource>,
}

/// A source with the name the audit log gives it, if any.
type NamedSource = (Option<Arc<str>>, Arc<dyn Authenticator>);

impl AuthenticatorChain {
    pub fn new(sources: Vec<Arc<dyn Authenticator>>) -> Self {
        Self {
            sources: sources.into_iter().map(|s| (None, s)).collect(),
        }
    }

    /// Sources with the names the audit log gives them (`users`, each
    /// `[[authenticators]]` entry's name).
    pub fn named(sources: Vec<(String, Arc<dyn Authenticator>)>) -> Self {
        Self {
            sources: sources
                .into_iter()
                .map(|(name, s)| (Some(Arc::from(name)), s))
                .collect(),
        }
    }
}

#[async_trait]
impl Authenticator for AuthenticatorChain {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Arc<Principal>, AuthnError> {
        Ok(self.authenticate_noting(credentials).await?.0)
    }

    async fn authenticate_noting(
        &self,
        credentials: &Credentials,
    ) -> Result<(Arc<Principal>, Option<PasswordNotice>), AuthnError> {
        match self.authenticate_deciding(credentials).await.result {
            // Nobody knows the user: to the outside, a wrong password.
            Err(AuthnError::UnknownUser) => Err(AuthnError::InvalidCredentials),
            decided => decided,
        }
    }

    async fn authenticate_deciding(&self, credentials: &Credentials) -> Decision {
        for (name, source) in &self.sources {
            let decision = source.authenticate_deciding(credentials).await;
            match decision.result {
                Err(AuthnError::UnknownUser) => continue,
                result => {
                    return Decision {
                        source: decision.source.or_else(|| name.clone()),
                        result,
                    }
                }
            }
        }
        // Nobody knows the user: the caller says "wrong password".
        Decision {
            source: None,
            result: Err(AuthnError::UnknownUser),
        }
    }
}

#[derive(Clone)]
pub enum UserSecret {
    /// An argon2 PHC string (`$argon2id$v=19$...`).
    Hash(String),
    /// A plain password from the configuration (accepted, warned about).
    Plain(String),
}

#[derive(Clone)]
pub struct StaticUser {
    pub username: String,
    pub secret: UserSecret,
    pub attributes: Attributes,
}

/// The built-in user store from the configuration file.
pub struct StaticUserAuthenticator {
    users: HashMap<String, (UserSecret, Arc<Principal>)>,
    /// A hash verified when the user is unknown or has a plain password, so
    /// that every attempt costs one argon2 verification: unknown user and
    /// wrong password take the same time.
    decoy: Arc<OnceLock<String>>,
    /// Verifications at once: each takes ~19 MiB and a core, so a burst of
    /// attempts queues here instead of exhausting memory.
    verifications: Arc<tokio::sync::Semaphore>,
    /// Whether an unknown username costs a (decoy) verification too. True
    /// when these users are the only source; when directories follow, an
    /// unknown name goes on to them and its time is theirs.
    decoy_for_unknown: bool,
}

impl StaticUserAuthenticator {
    /// Fails on a password hash that is not a valid PHC string.
    pub fn new(users: Vec<StaticUser>) -> Result<Self, String> {
        let mut map = HashMap::new();
        for user in users {
            if let UserSecret::Hash(h) = &user.secret {
                PasswordHash::new(h)
                    .map_err(|e| format!("user {}: bad password_hash: {e}", user.username))?;
            }
            let principal = Arc::new(Principal {
                id: user.username.clone(),
                attributes: user.attributes,
            });
            map.insert(user.username, (user.secret, principal));
        }
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Self {
            users: map,
            decoy: Arc::new(OnceLock::new()),
            verifications: Arc::new(tokio::sync::Semaphore::new(cores)),
            decoy_for_unknown: true,
        })
    }

    /// Other sources follow (`[[authenticators]]`): an unknown username is
    /// passed on at once instead of costing a decoy verification first, so
    /// that directory logins do not pay for an argon2 hash they never use.
    pub fn followed_by_other_sources(mut self) -> Self {
        self.decoy_for_unknown = false;
        self
    }

    /// Usernames whose password is stored in plain text.
    pub fn plain_password_users(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .users
            .iter()
            .filter(|(_, (s, _))| matches!(s, UserSecret::Plain(_)))
            .map(|(n, _)| n.as_str())
            .collect();
        names.sort_unstable();
        names
    }
}

/// An argon2id PHC string for `password`, with the crate's default parameters.
pub fn hash_password(password: &str) -> Result<String, AuthnError> {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthnError::Backend(e.to_string()))
}

/// Whether `phc` is a PHC string argon2 can verify against.
pub fn is_password_hash(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok()
}

fn verify_hash(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

#[async_trait]
impl Authenticator for StaticUserAuthenticator {
    async fn authenticate(&self, credentials: &Credentials) -> Result<Arc<Principal>, AuthnError> {
        let user = self.users.get(&credentials.username).cloned();
        if user.is_none() && !self.decoy_for_unknown {
            return Err(AuthnError::UnknownUser);
        }
        let password = credentials.password.clone();
        let decoy = self.decoy.clone();
        let _permit = self
            .verifications
            .acquire()
            .await
            .map_err(|e| AuthnError::Backend(e.to_string()))?;
        // argon2 is deliberately slow: keep it off the async workers.
        let accepted = tokio::task::spawn_blocking(move || {
            let decoy_hash = || {
                decoy
                    .get_or_init(|| hash_password("castellan-decoy").unwrap_or_default())
                    .clone()
            };
            match &user {
                Some((UserSecret::Hash(h), _)) => verify_hash(h, &password),
                Some((UserSecret::Plain(p), _)) => {
                    let _ = verify_hash(&decoy_hash(), &password);
                    bool::from(p.as_bytes().ct_eq(password.as_bytes()))
                }
                None => {
                    let _ = verify_hash(&decoy_hash(), &password);
                    false
                }
            }
        })
        .await
        .map_err(|e| AuthnError::Backend(e.to_string()))?;
        // The same work was done whether the user exists or not (the decoy
        // verification): the answers differ only for the chain.
        match (accepted, self.users.get(&credentials.username)) {
            (true, Some((_, principal))) => Ok(principal.clone()),
            (_, Some(_)) => Err(AuthnError::InvalidCredentials),
            (_, None) => Err(AuthnError::UnknownUser),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StaticUserAuthenticator {
        StaticUserAuthenticator::new(vec![
            StaticUser {
                username: "hashed".into(),
                secret: UserSecret::Hash(hash_password("s3cret").unwrap()),
                attributes: Attributes::new(),
            },
            StaticUser {
                username: "plain".into(),
                secret: UserSecret::Plain("open".into()),
                attributes: Attributes::new(),
            },
        ])
        .unwrap()
    }

    fn creds(u: &str, p: &str) -> Credentials {
        Credentials {
            username: u.into(),
            password: p.into(),
        }
    }

    #[tokio::test]
    async fn accepts_right_and_refuses_wrong_passwords() {
        let s = store();
        assert_eq!(
            s.authenticate(&creds("hashed", "s3cret")).await.unwrap().id,
            "hashed"
        );
        assert_eq!(
            s.authenticate(&creds("plain", "open")).await.unwrap().id,
            "plain"
        );
        for (u, p) in [("hashed", "S3cret"), ("plain", "ope"), ("hashed", "")] {
            assert_eq!(
                s.authenticate(&creds(u, p)).await.unwrap_err(),
                AuthnError::InvalidCredentials
            );
        }
        assert_eq!(
            s.authenticate(&creds("nobody", "open")).await.unwrap_err(),
            AuthnError::UnknownUser
        );
        assert_eq!(s.plain_password_users(), vec!["plain"]);
    }

    /// A source that knows one user, with one password, and counts calls.
    struct Fixed {
        user: &'static str,
        password: &'static str,
        answer_unknown_as: AuthnError,
        calls: std::sync::atomic::AtomicUsize,
    }

    impl Fixed {
        fn new(user: &'static str, password: &'static str) -> Arc<Self> {
            Arc::new(Self {
                user,
                password,
                answer_unknown_as: AuthnError::UnknownUser,
                calls: Default::default(),
            })
        }
        fn calls(&self) -> usize {
            self.calls.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl Authenticator for Fixed {
        async fn authenticate(&self, c: &Credentials) -> Result<Arc<Principal>, AuthnError> {
            self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if c.username != self.user {
                return Err(self.answer_unknown_as.clone());
            }
            if c.password == self.password {
                Ok(Arc::new(Principal::new(format!(
                    "{}@{}",
                    self.user, self.password
                ))))
            } else {
                Err(AuthnError::InvalidCredentials)
            }
        }
    }

    /// Knows "expiring", whose password is accepted with a notice.
    struct Noting;

    #[async_trait]
    impl Authenticator for Noting {
        async fn authenticate(&self, c: &Credentials) -> Result<Arc<Principal>, AuthnError> {
            Ok(self.authenticate_noting(c).await?.0)
        }
        async fn authenticate_noting(
            &self,
            c: &Credentials,
        ) -> Result<(Arc<Principal>, Option<PasswordNotice>), AuthnError> {
            if c.username != "expiring" {
                return Err(AuthnError::UnknownUser);
            }
            let notice = PasswordNotice {
                message: "Your password expires in 2 day(s).".into(),
                kind: Some(PasswordNoticeKind::ExpiresIn {
                    seconds: 2 * 86_400,
                }),
                password_change_url: Some("https://pw.example.org/".into()),
            };
            Ok((Arc::new(Principal::new("expiring")), Some(notice)))
        }
    }

    #[tokio::test]
    async fn the_chain_names_the_source_that_decided() {
        let chain = AuthenticatorChain::named(vec![
            (
                "users".into(),
                Fixed::new("alice", "pw") as Arc<dyn Authenticator>,
            ),
            ("appdb".into(), Fixed::new("bob", "pw")),
        ]);
        let decide = |u: &'static str, p: &'static str| {
            let chain = &chain;
            async move {
                chain
                    .authenticate_deciding(&Credentials {
                        username: u.into(),
                        password: p.into(),
                    })
                    .await
            }
        };
        let d = decide("alice", "pw").await;
        assert_eq!(d.source.as_deref(), Some("users"));
        assert!(d.result.is_ok());
        let d = decide("bob", "wrong").await;
        assert_eq!(
            d.source.as_deref(),
            Some("appdb"),
            "a wrong password is the knower's"
        );
        assert_eq!(d.result.unwrap_err(), AuthnError::InvalidCredentials);
        let d = decide("carol", "pw").await;
        assert_eq!(d.source, None, "nobody decided");
        assert_eq!(d.result.unwrap_err(), AuthnError::UnknownUser);
        // A chain in a chain: the inner entry's name wins.
        let outer = AuthenticatorChain::named(vec![("all".into(), Arc::new(chain) as _)]);
        let d = outer
            .authenticate_deciding(&Credentials {
                username: "bob".into(),
                password: "pw".into(),
            })
            .await;
        assert_eq!(d.source.as_deref(), Some("appdb"));
    }

    #[tokio::test]
    async fn the_chain_passes_the_deciding_source_s_notice_on() {
        let chain = AuthenticatorChain::new(vec![Fixed::new("alice", "pw"), Arc::new(Noting)]);
        let creds = |u: &str| Credentials {
            username: u.into(),
            password: "pw".into(),
        };
        let (p, notice) = chain.authenticate_noting(&creds("expiring")).await.unwrap();
        assert_eq!(p.id, "expiring");
        assert_eq!(
            notice.map(|n| n.password_change_url),
            Some(Some("https://pw.example.org/".into()))
        );
        // A source without notices gives none; the plain call drops it.
        let (_, notice) = chain.authenticate_noting(&creds("alice")).await.unwrap();
        assert!(notice.is_none());
        assert_eq!(
            chain.authenticate(&creds("expiring")).await.unwrap().id,
            "expiring"
        );
    }

    #[tokio::test]
    async fn the_first_source_that_knows_the_user_decides() {
        let first = Fixed::new("alice", "one");
        let second = Fixed::new("alice", "two");
        let third = Fixed::new("bob", "three");
        let chain = AuthenticatorChain::new(vec![
            Arc::new(store()),
            first.clone(),
            second.clone(),
            third.clone(),
        ]);
        // [[users]] first.
        assert_eq!(
            chain
                .authenticate(&creds("plain", "open"))
                .await
                .unwrap()
                .id,
            "plain"
        );
        assert_eq!(first.calls(), 0);
        // A wrong password at [[users]] is final.
        assert_eq!(
            chain
                .authenticate(&creds("plain", "two"))
                .await
                .unwrap_err(),
            AuthnError::InvalidCredentials
        );
        assert_eq!(first.calls(), 0);
        // alice: the first directory decides, a wrong password there is
        // not a reason to try the second one with the same name.
        assert_eq!(
            chain.authenticate(&creds("alice", "one")).await.unwrap().id,
            "alice@one"
        );
        assert_eq!(
            chain
                .authenticate(&creds("alice", "two"))
                .await
                .unwrap_err(),
            AuthnError::InvalidCredentials
        );
        assert_eq!(second.calls(), 0);
        // bob is known only to the third.
        assert_eq!(
            chain.authenticate(&creds("bob", "three")).await.unwrap().id,
            "bob@three"
        );
        // Nobody knows carol: a wrong password to the outside.
        assert_eq!(
            chain.authenticate(&creds("carol", "x")).await.unwrap_err(),
            AuthnError::InvalidCredentials
        );
        assert_eq!(third.calls(), 2);
    }

    #[tokio::test]
    async fn a_source_that_is_down_stops_the_chain() {
        let down = Arc::new(Fixed {
            user: "alice",
            password: "one",
            answer_unknown_as: AuthnError::Backend("directory down".into()),
            calls: Default::default(),
        });
        let later = Fixed::new("bob", "two");
        let chain = AuthenticatorChain::new(vec![down, later.clone()]);
        // Whether bob is known there cannot be told: not a wrong password,
        // and not a reason to ask the next source either.
        assert_eq!(
            chain.authenticate(&creds("bob", "two")).await.unwrap_err(),
            AuthnError::Backend("directory down".into())
        );
        assert_eq!(later.calls(), 0);
    }

    #[test]
    fn rejects_malformed_hashes_at_start() {
        let err = StaticUserAuthenticator::new(vec![StaticUser {
            username: "x".into(),
            secret: UserSecret::Hash("not-a-phc".into()),
            attributes: Attributes::new(),
        }]);
        assert!(err.is_err());
    }
}
