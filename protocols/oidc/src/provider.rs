//! The provider: its clients, its issuer, its callback URLs at the core,
//! its signing keys and settings. The endpoints' rules are methods of it,
//! one module per concept (`sign_in`, `grants`, `access`, `logout`).

use crate::client::{ClientRegistry, OidcClient};
use crate::discovery::{self, DiscoveryError};
use crate::error::{ErrorCode, OAuthError};
use crate::keys::Keyring;
use crate::records::{consent_prompt_key, request_key, PendingRequest, Records};
use crate::signing_keys::KeyCell;
use castellan_core::{
    Attributes, CallbackUrls, Clock, InProcessClient, LogoutMode, RegisteredService, Release,
    StoreError, TicketStore,
};
use std::sync::Arc;
use std::time::Duration;

/// The OIDC provider's settings, validated from the configuration.
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub clients: Vec<OidcClient>,
    pub code_ttl: Duration,
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub offline_token_ttl: Duration,
    pub pairwise_salt: String,
    /// DPoP server nonces (RFC 9449 §8) are required when set.
    pub dpop_nonce_secret: Option<String>,
    /// How long a device code waits for its user (RFC 8628 `expires_in`).
    pub device_code_ttl: Duration,
}

pub struct Provider {
    pub(crate) clients: ClientRegistry,
    pub(crate) settings: OidcSettings,
    /// `{public_url}/oidc`.
    pub(crate) issuer: String,
    /// `{issuer}/callback?client_id=…&req=…`: where a login for a client's
    /// pending request returns.
    callbacks: CallbackUrls,
    discovery: String,
    keys: KeyCell,
    clock: Arc<dyn Clock>,
    pub(crate) dpop_nonces: Option<crate::dpop::Nonces>,
    /// The origins browser apps may call from (CORS).
    cors: crate::cors::CorsOrigins,
    /// The key sets of private_key_jwt clients' `jwks_uri`.
    pub(crate) jwks_cache: crate::client_assertion::JwksCache,
}

impl Provider {
    pub fn new(
        settings: OidcSettings,
        public_url: &str,
        keys: KeyCell,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, DiscoveryError> {
        let issuer = format!("{}/oidc", public_url.trim_end_matches('/'));
        Ok(Self {
            clients: ClientRegistry::new(settings.clients.clone()),
            cors: crate::cors::CorsOrigins::of_clients(&settings.clients),
            jwks_cache: Default::default(),
            discovery: discovery::document(&issuer)?,
            callbacks: CallbackUrls::new(format!("{issuer}/callback?client_id=")),
            issuer,
            dpop_nonces: settings
                .dpop_nonce_secret
                .as_deref()
                .map(|s| crate::dpop::Nonces::new(s.as_bytes())),
            settings,
            keys,
            clock,
        })
    }

    /// The HTTP client that fetches private_key_jwt clients' `jwks_uri`.
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.jwks_cache = crate::client_assertion::JwksCache::new(http);
        self
    }

    /// Which origins may call which endpoint from a page.
    pub fn cors(&self) -> &crate::cors::CorsOrigins {
        &self.cors
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn clients(&self) -> &ClientRegistry {
        &self.clients
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// The discovery document, as served.
    pub fn discovery(&self) -> &str {
        &self.discovery
    }

    /// The signing keys' cell (the JWKS endpoint publishes them).
    pub fn signing_keys(&self) -> &KeyCell {
        &self.keys
    }

    /// The keys to sign or verify with; until they are ready (a store that
    /// was down at start), the token endpoints answer 503.
    pub(crate) fn keys(&self) -> Result<Arc<Keyring>, OAuthError> {
        self.keys.get().ok_or_else(|| {
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "signing keys are not ready yet",
            )
        })
    }

    /// Unix seconds.
    pub(crate) fn now(&self) -> u64 {
        self.clock.now() / 1000
    }

    pub(crate) fn clock_millis(&self) -> u64 {
        self.clock.now()
    }

    /// The service URL a login for `client_id`'s pending `request` returns to.
    pub(crate) fn callback_url(&self, client_id: &str, request: &str) -> String {
        self.callbacks.build(client_id, request)
    }

    pub(crate) fn records<'a>(&self, store: &'a dyn TicketStore) -> Records<'a> {
        Records { store }
    }

    /// Whether a service URL is one of the provider's callbacks.
    pub fn is_callback(&self, service: &str) -> bool {
        self.callbacks.owns(service)
    }

    /// The client a callback service URL belongs to.
    pub(crate) fn client_of_callback(&self, service: &str) -> Option<&OidcClient> {
        let (client_id, _) = self.callbacks.parse(service)?;
        self.clients.get(&client_id)
    }

    /// The implicit CAS registrations of the callbacks: one per client, so
    /// that the core releases that client's attributes and records its
    /// logout mode. They come before the CAS services: a broad CAS pattern
    /// must not capture them.
    pub fn callback_services(&self) -> Result<Vec<RegisteredService>, regex::Error> {
        self.clients
            .iter()
            .map(|c| {
                let logout = if c.backchannel_logout_uri.is_some() {
                    LogoutMode::BackChannel
                } else {
                    LogoutMode::None
                };
                self.callbacks.registration(
                    &c.name,
                    &c.client_id,
                    c.release.clone(),
                    logout,
                    c.mfa,
                    c.consent,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|r| r.into_iter().flatten().collect())
    }
}

#[async_trait::async_trait]
impl InProcessClient for Provider {
    fn callbacks(&self) -> &CallbackUrls {
        &self.callbacks
    }

    fn protocol(&self) -> &'static str {
        "oidc"
    }

    /// A client by its name and the host it sends the user back to (the
    /// callback's host is ours).
    fn display_name(&self, client_id: &str) -> Option<String> {
        let client = self.clients.get(client_id)?;
        let host = client
            .redirect_uris
            .first()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned));
        Some(match host {
            Some(h) => format!("{} ({h})", client.name),
            None => client.name.clone(),
        })
    }

    /// The user claims the request's scopes release (what the ID token
    /// and userinfo will carry), as the consent page shows them; and
    /// `prompt=consent` asks again.
    async fn release(
        &self,
        store: &dyn TicketStore,
        client_id: &str,
        request: &str,
        principal_id: &str,
        allowed: Attributes,
    ) -> Result<Release, StoreError> {
        let records = self.records(store);
        let pending: Option<PendingRequest> = records.get(&request_key(request)).await?;
        let Some(pending) = pending.filter(|p| p.client_id == client_id) else {
            // Gone: the callback will refuse the ticket anyway.
            return Ok(Release {
                attributes: allowed,
                ask_again: false,
            });
        };
        let mut claims = crate::tokens::scope_claims(
            pending.scopes.iter().map(String::as_str),
            principal_id,
            &allowed,
        );
        // The claims asked for one by one are consented to as well.
        let requested: Option<crate::claims::ClaimsRequest> = records
            .get(&crate::claims::request_claims_key(request))
            .await?;
        if let (Some(requested), Some(client)) = (requested, self.clients.get(client_id)) {
            crate::claims::add_requested(
                &mut claims,
                requested.names(),
                client,
                principal_id,
                &allowed,
            );
        }
        let attributes = claims
            .into_iter()
            .map(|(name, value)| {
                let values = match value {
                    serde_json::Value::String(s) => vec![s],
                    serde_json::Value::Array(many) => many
                        .into_iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                        .collect(),
                    other => vec![other.to_string()],
                };
                (name, values)
            })
            .collect();
        let ask_again = records
            .get::<bool>(&consent_prompt_key(request))
            .await?
            .unwrap_or(false);
        Ok(Release {
            attributes,
            ask_again,
        })
    }
}
