//! The application: state, routes and the middleware around them.

use crate::config::{Settings, StoreKind};
use crate::metrics::Metrics;
use crate::{cas_endpoints, delegation, login, logout, middleware, oidc, operations, saml};
use anyhow::Context as _;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use castellan_cas::{CasLogout, HttpProxyCallback};
use castellan_core::store::redis::{RedisStore, RedisTimeouts};
use castellan_core::{
    Authenticator, AuthenticatorChain, Clock, DeliveryPolicy, Engine, LogoutParticipant,
    MemoryStore, ServiceRegistry, SingleLogout, StaticUserAuthenticator, SystemClock, TicketStore,
};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Largest request body accepted by any endpoint (login forms, SOAP).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct AppState {
    pub engine: Engine,
    pub settings: Settings,
    pub metrics: Metrics,
    pub memory_store: Option<Arc<MemoryStore>>,
    /// `{public_url}` as issuer of SAML 1.1 assertions.
    pub issuer: String,
    pub signing_keys: crate::signing_keys::KeyCell,
    pub oidc: oidc::Provider,
    pub saml: saml::IdentityProvider,
    pub delegation: delegation::Delegation,
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

/// Builds the state from validated settings. Needs a tokio runtime (the
/// memory store's sweeper runs on it).
pub async fn state(settings: Settings) -> anyhow::Result<SharedState> {
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
    let signing_keys =
        crate::signing_keys::prepare_or_retry(&settings.data_dir, store.clone(), shared).await?;
    let provider = oidc::Provider::new(settings.oidc.clone(), settings.public_url.as_str())?;
    // The OIDC callbacks first: a broad CAS pattern must not capture them.
    let idp = saml::IdentityProvider::new(
        settings.saml.clone(),
        settings.public_url.as_str(),
        &settings.data_dir,
    )?;
    // [[users]] first, then [[authenticators]] in order.
    let users =
        StaticUserAuthenticator::new(settings.users.clone()).map_err(|e| anyhow::anyhow!(e))?;
    let users = if settings.authenticators.is_empty() {
        users
    } else {
        users.followed_by_other_sources()
    };
    let mut sources: Vec<Arc<dyn Authenticator>> = vec![Arc::new(users)];
    let mut named: Vec<(String, Arc<dyn Authenticator>)> = Vec::new();
    for s in &settings.authenticators {
        let source = castellan_authenticators::Source::build(s)
            .map_err(|e| anyhow::anyhow!("authenticator {:?}: {e}", s.name()))?;
        named.push((s.name().to_owned(), source.authenticator()));
        sources.push(source.authenticator());
    }
    let authenticator = AuthenticatorChain::new(sources);
    let delegation = delegation::Delegation::new(
        &settings.upstreams,
        settings.public_url.as_str(),
        idp.credentials(),
        &named,
    )?;
    let mut services = provider.callback_services()?;
    services.extend(idp.callback_services()?);
    services.extend(settings.services.iter().cloned());
    let web_state = Arc::new(OnceLock::new());
    // CAS last: it owns every service the others do not.
    let participants: Vec<Arc<dyn LogoutParticipant>> = vec![
        Arc::new(crate::single_logout::WebParticipant::oidc(
            web_state.clone(),
        )),
        Arc::new(crate::single_logout::WebParticipant::saml(
            web_state.clone(),
        )),
        Arc::new(
            CasLogout::new(Duration::from_secs(5), clock.clone())
                .context("building the single logout client")?,
        ),
    ];
    let engine = Engine::new(
        store,
        Arc::new(ServiceRegistry::new(services)),
        Arc::new(authenticator),
        settings.throttle.clone(),
        settings.tickets.clone(),
        clock,
        Arc::new(HttpProxyCallback::new().context("building the proxy callback client")?),
    )
    .with_single_logout(SingleLogout::new(participants, DeliveryPolicy::default()));
    let issuer = settings
        .public_url
        .as_str()
        .trim_end_matches('/')
        .to_owned();
    let state = Arc::new(AppState {
        engine,
        metrics: Metrics::default(),
        memory_store,
        issuer,
        signing_keys,
        oidc: provider,
        saml: idp,
        delegation,
        settings,
    });
    let _ = web_state.set(Arc::downgrade(&state));
    Ok(state)
}

pub fn router(state: SharedState) -> Router {
    let endpoints = Router::new()
        .route("/login", get(login::form).post(login::submit))
        .route("/logout", get(logout::logout))
        .route("/validate", get(cas_endpoints::validate))
        .route("/serviceValidate", get(cas_endpoints::service_validate))
        .route("/proxyValidate", get(cas_endpoints::proxy_validate))
        .route(
            "/p3/serviceValidate",
            get(cas_endpoints::p3_service_validate),
        )
        .route("/p3/proxyValidate", get(cas_endpoints::p3_proxy_validate))
        .route("/proxy", get(cas_endpoints::proxy))
        .route(
            "/samlValidate",
            post(cas_endpoints::saml_validate).layer(DefaultBodyLimit::max(
                castellan_cas::saml11::MAX_REQUEST_BYTES,
            )),
        )
        .route("/oidc/jwks", get(operations::jwks))
        .route(
            "/oidc/.well-known/openid-configuration",
            get(oidc::configuration),
        )
        .route(
            "/oidc/authorize",
            get(oidc::authorize_get).post(oidc::authorize_post),
        )
        .route("/oidc/callback", get(oidc::callback))
        .route("/oidc/token", post(oidc::token))
        .route(
            "/oidc/userinfo",
            get(oidc::userinfo_get).post(oidc::userinfo_post),
        )
        .route("/oidc/introspect", post(oidc::introspect))
        .route("/oidc/revoke", post(oidc::revoke))
        .route(
            "/oidc/logout",
            get(oidc::logout_get).post(oidc::logout_post),
        )
        .route("/idp/metadata", get(saml::metadata))
        .route("/idp/profile/SAML2/Redirect/SSO", get(saml::sso_redirect))
        .route("/idp/profile/SAML2/POST/SSO", post(saml::sso_post))
        .route("/idp/profile/SAML2/Unsolicited/SSO", get(saml::unsolicited))
        .route("/idp/profile/SAML2/Redirect/SLO", get(saml::slo_redirect))
        .route("/idp/profile/SAML2/POST/SLO", post(saml::slo_post))
        .route("/idp/callback", get(saml::callback))
        .route("/delegated/{name}/callback", get(delegation::callback))
        .route("/delegated/{name}/metadata", get(delegation::metadata))
        .route("/delegated/{name}/acs", post(delegation::acs))
        .route("/health", get(operations::health))
        .route("/metrics", get(operations::metrics))
        .route("/static/{file}", get(operations::static_file))
        .with_state(state.clone());
    let prefix = state.prefix().to_owned();
    let app = if prefix.is_empty() {
        endpoints
    } else {
        Router::new().nest(&prefix, endpoints)
    };
    middleware::wrap(app.layer(DefaultBodyLimit::max(MAX_BODY_BYTES)))
}
