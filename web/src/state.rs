//! The application's state: the engine with its protocol modules and
//! seams, built once from validated settings. Handlers read it; it knows no
//! handler.

use crate::config::MfaStoreKind;
use crate::config::{Settings, StoreKind};
use crate::metrics::Metrics;
use anyhow::Context as _;
use castellan_audit::AuditLog;
use castellan_cas::{CasLogout, HttpProxyCallback};
use castellan_core::store::redis::{RedisStore, RedisTimeouts};
use castellan_core::{Authenticator, AuthenticatorChain};
use castellan_core::{
    Clock, DeliveryPolicy, Engine, InProcessClient, LogoutParticipant, MemoryStore,
    ServiceRegistry, SingleLogout, StaticUserAuthenticator, SystemClock, TicketStore,
};
use castellan_delegation::UpstreamRegistry;
use castellan_mfa::{Factors, KeySource, MfaSettings, StoreLocation};
use castellan_oidc::OidcLogout;
use castellan_saml::{IdentityProvider, SamlLogout};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Every call to an upstream is bounded.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AppState {
    pub engine: Engine,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// The configuration's generation and its last reload.
    pub reloads: Arc<crate::metrics::ReloadStatus>,
    pub memory_store: Option<Arc<MemoryStore>>,
    /// `{public_url}` as issuer of SAML 1.1 assertions.
    pub issuer: String,
    pub oidc: Arc<castellan_oidc::Provider>,
    pub saml: Arc<IdentityProvider>,
    /// The upstream identity providers (delegation).
    pub upstreams: UpstreamRegistry,
    /// By upstream name: the `[[authenticators]]` entry its principals get
    /// more attributes from (`attributes_from`).
    pub attributes_from: HashMap<String, Arc<dyn Authenticator>>,
    /// The users' second factors (`[mfa]`).
    pub factors: Arc<Factors>,
    /// The audit log (`[audit]`), built once in `run` and kept across
    /// configurations.
    pub audit: Option<Arc<AuditLog>>,
}

pub type SharedState = Arc<AppState>;

impl AppState {
    pub fn prefix(&self) -> &str {
        &self.settings.prefix
    }

    pub fn now(&self) -> u64 {
        self.engine.clock().now()
    }
}

/// What lives as long as the process, shared by every configuration
/// generation: the ticket store (sessions, tickets and pending flows
/// survive a reload), the token signing keys, the factor store, the counters.
pub struct Lasting {
    store: Arc<dyn TicketStore>,
    memory_store: Option<Arc<MemoryStore>>,
    signing_keys: castellan_oidc::signing_keys::KeyCell,
    factors: Arc<Factors>,
    metrics: Arc<Metrics>,
    reloads: Arc<crate::metrics::ReloadStatus>,
    clock: Arc<dyn Clock>,
    audit: Option<Arc<AuditLog>>,
}

impl Lasting {
    pub fn reloads(&self) -> &Arc<crate::metrics::ReloadStatus> {
        &self.reloads
    }

    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// Opens the stores the settings name. Needs a tokio runtime (the
    /// memory store's sweeper runs on it).
    pub async fn open(settings: &Settings) -> anyhow::Result<Self> {
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (store, memory_store): (Arc<dyn TicketStore>, _) = match &settings.store {
            StoreKind::Memory => {
                let memory = Arc::new(MemoryStore::new(clock.clone()));
                memory.spawn_sweeper(Duration::from_secs(2));
                (memory.clone(), Some(memory))
            }
            StoreKind::Redis { url } => {
                let redis = RedisStore::new(url, RedisTimeouts::default())
                    .map_err(|e| anyhow::anyhow!("tickets.redis_url: {e}"))?;
                (Arc::new(redis), None)
            }
        };
        let shared = matches!(settings.store, StoreKind::Redis { .. });
        let signing_keys = castellan_oidc::signing_keys::prepare_or_retry(
            &settings.data_dir,
            store.clone(),
            shared,
        )
        .await?;
        let factors = Arc::new(
            Factors::open(mfa_settings(settings))
                .await
                .context("opening the MFA store ([mfa])")?,
        );
        let audit = match &settings.audit {
            Some(target) => Some(Arc::new(
                AuditLog::open(target.clone()).context("[audit] path")?,
            )),
            None => None,
        };
        Ok(Self {
            audit,
            store,
            memory_store,
            signing_keys,
            factors,
            metrics: Arc::default(),
            reloads: Arc::default(),
            clock,
        })
    }
}

/// Builds one configuration generation's state from validated settings
/// over the lasting parts; `previous` is the generation it replaces.
pub async fn build(
    settings: Settings,
    lasting: &Lasting,
    previous: Option<&AppState>,
) -> anyhow::Result<SharedState> {
    let clock = lasting.clock.clone();
    let store = lasting.store.clone();
    let memory_store = lasting.memory_store.clone();
    let signing_keys = lasting.signing_keys.clone();
    // One client for every back-channel logout and for private_key_jwt
    // clients' jwks_uri: verified TLS with the system roots and
    // SSL_CERT_FILE, bounded, redirects not followed.
    let http = castellan_cas::proxy_callback::http_client(false, Duration::from_secs(5))
        .context("building the single logout client")?;
    let provider = Arc::new(
        castellan_oidc::Provider::new(
            settings.oidc.clone(),
            settings.public_url.as_str(),
            signing_keys,
            clock.clone(),
        )?
        .with_http_client(http.clone()),
    );
    // The OIDC callbacks first: a broad CAS pattern must not capture them.
    let idp = Arc::new(IdentityProvider::new(
        settings.saml.clone(),
        settings.public_url.as_str(),
        &settings.data_dir,
    )?);
    let upstreams = UpstreamRegistry::build(
        &settings.upstreams,
        settings.public_url.as_str(),
        idp.credentials(),
        UPSTREAM_TIMEOUT,
    )?;
    let factors = lasting.factors.clone();
    let mut services = provider.callback_services()?;
    services.extend(idp.callback_services()?);
    // The user's own page signs in through the core like any client.
    services.push(mfa_page_registration(&settings)?);
    services.extend(settings.services.iter().cloned());
    // Every protocol's registrations carry their service's name and look
    // (an OIDC client's or SAML SP's callbacks are named after it).
    for service in &mut services {
        if let Some(theme) = settings.themes.get(&service.name) {
            service.display = castellan_core::ServiceDisplay {
                name: theme.display_name.clone(),
                theme: (theme.logo.is_some() || theme.accent_color.is_some())
                    .then(|| service.name.clone()),
            };
        }
    }
    // [[users]] first, then [[authenticators]] in order.
    let users =
        StaticUserAuthenticator::new(settings.users.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let users = if settings.authenticators.is_empty() {
        users
    } else {
        users.followed_by_other_sources()
    };
    // Named as the audit log names the source that decided a login.
    let mut sources: Vec<(String, Arc<dyn Authenticator>)> =
        vec![("users".into(), Arc::new(users))];
    let mut named: HashMap<String, Arc<dyn Authenticator>> = HashMap::new();
    for s in &settings.authenticators {
        let source = castellan_authenticators::Source::build(s)
            .map_err(|e| anyhow::anyhow!("authenticator {:?}: {e}", s.name()))?;
        named.insert(s.name().to_owned(), source.authenticator());
        sources.push((s.name().to_owned(), source.authenticator()));
    }
    let authenticator = AuthenticatorChain::named(sources);
    // Upstreams whose principals get their attributes from a directory.
    let attributes_from = settings
        .upstreams
        .iter()
        .filter_map(|u| {
            let source = named.get(u.attributes_from.as_deref()?)?;
            Some((u.name.clone(), source.clone()))
        })
        .collect();
    // CAS last: it owns every service the others do not.
    let participants: Vec<Arc<dyn LogoutParticipant>> = vec![
        Arc::new(OidcLogout::new(provider.clone(), http.clone())),
        Arc::new(SamlLogout::new(
            idp.clone(),
            store.clone(),
            clock.clone(),
            http,
        )),
        Arc::new(
            CasLogout::new(Duration::from_secs(5), clock.clone())
                .context("building the single logout client")?,
        ),
    ];
    let clock_for_consents = clock.clone();
    let engine = Engine::new(
        store,
        Arc::new(ServiceRegistry::new(services)),
        Arc::new(authenticator),
        settings.throttle.clone(),
        settings.tickets.clone(),
        clock,
        Arc::new(HttpProxyCallback::new().context("building the proxy callback client")?),
    )
    .with_single_logout(SingleLogout::new(participants, DeliveryPolicy::default()))
    .with_clients(vec![
        provider.clone() as Arc<dyn InProcessClient>,
        idp.clone() as Arc<dyn InProcessClient>,
    ])
    .with_second_factors(Arc::new(Enrolled(factors.clone())))
    .with_consents(Arc::new(Decisions {
        factors: factors.clone(),
        clock: clock_for_consents,
    }));
    let engine = match previous {
        Some(p) => engine.carrying_over(&p.engine),
        None => engine,
    };
    let audit = lasting.audit.clone();
    let engine = match &audit {
        Some(log) => engine.with_audit(log.clone()),
        None => engine,
    };
    let issuer = settings
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let state = Arc::new(AppState {
        engine,
        metrics: lasting.metrics.clone(),
        reloads: lasting.reloads.clone(),
        memory_store,
        issuer,
        oidc: provider,
        saml: idp,
        upstreams,
        attributes_from,
        factors,
        audit,
        settings,
    });
    Ok(state)
}

/// The engine asks whether a user has a factor; the store answers.
struct Enrolled(Arc<Factors>);

#[async_trait::async_trait]
impl castellan_core::SecondFactors for Enrolled {
    async fn enrolled(&self, user: &str) -> Result<bool, castellan_core::AuthnError> {
        self.0
            .has_factor(user)
            .await
            .map_err(|e| castellan_core::AuthnError::Backend(e.to_string()))
    }
}

/// The engine's consent decisions, kept in the factors' SQL store.
struct Decisions {
    factors: Arc<Factors>,
    clock: Arc<dyn Clock>,
}

impl Decisions {
    fn now(&self) -> u64 {
        self.clock.now() / 1000
    }
}

fn consent_store_error(e: castellan_mfa::MfaError) -> castellan_core::ConsentStoreError {
    castellan_core::ConsentStoreError(e.to_string())
}

#[async_trait::async_trait]
impl castellan_core::Consents for Decisions {
    async fn given(
        &self,
        user: &str,
        service: &str,
        digest: &str,
    ) -> Result<bool, castellan_core::ConsentStoreError> {
        self.factors
            .consent_given(user, service, digest, self.now())
            .await
            .map_err(consent_store_error)
    }

    async fn remember(
        &self,
        user: &str,
        service: &str,
        digest: &str,
        ttl: Duration,
    ) -> Result<(), castellan_core::ConsentStoreError> {
        self.factors
            .remember_consent(user, service, digest, ttl, self.now())
            .await
            .map_err(consent_store_error)
    }

    async fn forget(
        &self,
        user: &str,
        service: &str,
    ) -> Result<(), castellan_core::ConsentStoreError> {
        self.factors
            .forget_consent(user, service, self.now())
            .await
            .map_err(consent_store_error)
    }
}

/// `[mfa]` as the factor store takes it: the SQLite file and the key file
/// in data_dir unless configured, WebAuthn bound to `public_url`.
pub fn mfa_settings(settings: &Settings) -> MfaSettings {
    let public = &settings.public_url;
    MfaSettings {
        store: match &settings.mfa.store {
            MfaStoreKind::Sqlite => StoreLocation::Sqlite {
                path: settings.data_dir.join("mfa.sqlite"),
            },
            MfaStoreKind::Postgres { url } => StoreLocation::Postgres { url: url.clone() },
        },
        issuer: settings.mfa.issuer.clone(),
        key: match settings.mfa.key {
            Some(key) => KeySource::Configured(key),
            None => KeySource::File(settings.data_dir.join("mfa.key")),
        },
        rp_origin: url::Url::parse(&public.origin().ascii_serialization())
            .unwrap_or_else(|_| public.clone()),
        rp_id: public.host_str().unwrap_or("localhost").to_owned(),
        rp_name: settings.mfa.issuer.clone(),
    }
}

/// The `/mfa` page's registration: internal (no CAS client may validate its
/// tickets), asking the enrolled for their second factor.
fn mfa_page_registration(settings: &Settings) -> anyhow::Result<castellan_core::RegisteredService> {
    let pattern = format!(r"{}(\?.*)?", escape(&settings.mfa_page_url()));
    Ok(castellan_core::RegisteredService::new(
        "your sign-in methods",
        &pattern,
        Vec::new(),
        None,
        castellan_core::LogoutMode::None,
    )?
    .internal()
    .with_mfa(Some(castellan_core::MfaPolicy::Optional)))
}

/// A URL as a regex that matches it literally.
fn escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len() * 2);
    for c in literal.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
