//! The configured upstreams at run time: one connector each, built from its
//! [`UpstreamSettings`]. Adding an upstream kind means a connector file, a
//! [`UpstreamKind`] and its arm here; the web layer only routes to them.

use crate::cas::CasConnector;
use crate::config::{UpstreamKind, UpstreamSettings};
use crate::mapping::Mapping;
use crate::oauth2::OAuth2Connector;
use crate::oidc::OidcConnector;
use crate::saml::SamlConnector;
use crate::Connector;
use castellan_saml::IdpCredentials;
use std::sync::Arc;
use std::time::Duration;

/// What every connector is built with, beside its own settings.
pub struct ConnectorContext {
    /// Castellan's public URL: a SAML upstream's SP entityID and ACS are
    /// below it.
    pub public_url: String,
    /// The key a SAML upstream's AuthnRequests are signed with (the IdP's).
    pub credentials: Arc<IdpCredentials>,
    /// For the calls to upstreams, bounded in time.
    pub http: reqwest::Client,
}

/// Builds the connector of one upstream.
pub fn connector(u: &UpstreamSettings, context: &ConnectorContext) -> Arc<dyn Connector> {
    let http = context.http.clone();
    match &u.kind {
        UpstreamKind::Cas { url } => Arc::new(CasConnector::new(
            u.name.clone(),
            u.display_name.clone(),
            url.clone(),
            u.validate_path.clone(),
            http,
        )),
        UpstreamKind::Oidc {
            issuer,
            client_id,
            client_secret,
            scopes,
            userinfo,
        } => Arc::new(OidcConnector::new(
            u.name.clone(),
            u.display_name.clone(),
            issuer.clone(),
            client_id.clone(),
            client_secret.clone(),
            scopes.clone(),
            *userinfo,
            http,
        )),
        UpstreamKind::Saml { idp } => Arc::new(SamlConnector::new(
            u.name.clone(),
            u.display_name.clone(),
            idp.clone(),
            &context.public_url,
            context.credentials.clone(),
        )),
        UpstreamKind::OAuth2 {
            authorize_url,
            token_url,
            profile_url,
            client_id,
            client_secret,
            scopes,
            id_attribute,
        } => Arc::new(OAuth2Connector::new(
            u.name.clone(),
            u.display_name.clone(),
            authorize_url.clone(),
            token_url.clone(),
            profile_url.clone(),
            client_id.clone(),
            client_secret.clone(),
            scopes.clone(),
            id_attribute.clone(),
            http,
        )),
    }
}

/// Whether an upstream answers as configured (`castellan upstreams test`):
/// a line saying what was found, or what failed.
pub async fn probe(u: &UpstreamSettings, http: &reqwest::Client) -> Result<String, String> {
    let reach = |url: String| async move {
        http.get(&url)
            .send()
            .await
            .map(|r| format!("{url} answered {}", r.status()))
            .map_err(|e| format!("{url}: {e}"))
    };
    match &u.kind {
        UpstreamKind::Cas { url } => reach(format!("{url}/login")).await,
        UpstreamKind::OAuth2 { authorize_url, .. } => reach(authorize_url.clone()).await,
        UpstreamKind::Oidc { issuer, .. } => crate::oidc::check_discovery(issuer, http)
            .await
            .map_err(|e| e.to_string()),
        UpstreamKind::Saml { idp } => Ok(format!(
            "IdP {} (metadata as configured): SSO {}, {} signing certificate(s)",
            idp.entity_id,
            idp.sso_redirect,
            idp.signing_certs.len()
        )),
    }
}

/// One upstream: its connector, and how its identities become principals.
pub struct Upstream {
    connector: Arc<dyn Connector>,
    mapping: Mapping,
    auto_redirect: bool,
    trust_mfa: bool,
}

impl Upstream {
    pub fn connector(&self) -> &dyn Connector {
        self.connector.as_ref()
    }

    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    /// Whether the upstream's own second factor counts for this login.
    pub fn trust_mfa(&self) -> bool {
        self.trust_mfa
    }

    /// The only way in: `/login` goes straight to it.
    pub fn auto_redirect(&self) -> bool {
        self.auto_redirect
    }
}

/// Every configured upstream, in the order configured.
#[derive(Default)]
pub struct UpstreamRegistry {
    upstreams: Vec<Upstream>,
}

impl UpstreamRegistry {
    /// Builds every upstream's connector; calls to upstreams are bounded by
    /// `timeout`.
    pub fn build(
        settings: &[UpstreamSettings],
        public_url: &str,
        credentials: Arc<IdpCredentials>,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        let context = ConnectorContext {
            public_url: public_url.to_owned(),
            credentials,
            http: crate::http_client(timeout)?,
        };
        let upstreams = settings
            .iter()
            .map(|u| Upstream {
                connector: connector(u, &context),
                mapping: u.mapping.clone(),
                auto_redirect: u.auto_redirect,
                trust_mfa: u.trust_mfa,
            })
            .collect();
        Ok(Self { upstreams })
    }

    pub fn get(&self, name: &str) -> Option<&Upstream> {
        self.upstreams.iter().find(|u| u.connector.name() == name)
    }

    /// The upstream `/login` goes straight to, if any.
    pub fn auto_redirect(&self) -> Option<&str> {
        self.upstreams
            .iter()
            .find(|u| u.auto_redirect)
            .map(|u| u.connector.name())
    }

    pub fn iter(&self) -> impl Iterator<Item = &Upstream> {
        self.upstreams.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{UpstreamInput, Upstreams};

    /// IdP credentials made in a directory of this test's own.
    fn credentials(test: &str) -> Arc<IdpCredentials> {
        let dir = std::env::temp_dir().join(format!(
            "castellan-delegation-{}-{test}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let credentials = IdpCredentials::load_or_generate(&dir, None, "test").unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        Arc::new(credentials)
    }

    fn settings() -> Vec<UpstreamSettings> {
        let mut u = Upstreams::default();
        u.add(UpstreamInput {
            name: "campus".into(),
            protocol: "cas".into(),
            url: Some("https://cas.example/cas".into()),
            display_name: Some("Campus".into()),
            ..Default::default()
        })
        .unwrap();
        u.add(UpstreamInput {
            name: "forge".into(),
            protocol: "oauth2".into(),
            authorize_url: Some("https://forge.example/authorize".into()),
            token_url: Some("https://forge.example/token".into()),
            profile_url: Some("https://forge.example/user".into()),
            client_id: Some("c".into()),
            auto_redirect: Some(true),
            ..Default::default()
        })
        .unwrap();
        u.finish(&[], &mut Vec::new()).unwrap()
    }

    #[test]
    fn each_kind_gets_its_connector() {
        let context = ConnectorContext {
            public_url: "https://sso.example/cas".into(),
            credentials: credentials("kinds"),
            http: crate::http_client(Duration::from_secs(1)).unwrap(),
        };
        let all = settings();
        let cas = connector(&all[0], &context);
        assert_eq!(cas.name(), "campus");
        assert_eq!(cas.display_name(), "Campus");
        assert!(cas.supports_passive() && cas.proves_fresh_login());
        let forge = connector(&all[1], &context);
        assert_eq!(forge.display_name(), "forge");
        assert!(!forge.proves_fresh_login(), "plain OAuth2 cannot tell");
    }

    #[test]
    fn the_registry_finds_upstreams_by_name() {
        let registry = UpstreamRegistry::build(
            &settings(),
            "https://sso.example/cas",
            credentials("registry"),
            Duration::from_secs(1),
        )
        .unwrap();
        assert!(registry.get("campus").is_some());
        assert!(registry.get("nowhere").is_none());
        assert_eq!(registry.auto_redirect(), Some("forge"));
        assert_eq!(registry.iter().count(), 2);
        assert_eq!(
            registry.get("campus").unwrap().mapping().namespace(),
            "campus:"
        );
    }
}
