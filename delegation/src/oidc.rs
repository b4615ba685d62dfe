//! An upstream OpenID Connect provider: discovery, the code flow with PKCE
//! and nonce, and the ID token verified by the `openidconnect` crate
//! (issuer, audience, signature against the provider's JWKS, nonce,
//! expiry). The provider's metadata and keys are cached; an ID token signed
//! with a key the cache does not know triggers one fresh discovery.

use crate::{Authenticated, Connector, DelegationError, Finish, Start, Started};
use async_trait::async_trait;
use castellan_core::Principal;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio::sync::RwLock;

/// How long discovery results (metadata and JWKS) are trusted.
const METADATA_TTL: Duration = Duration::from_secs(600);

pub struct OidcConnector {
    name: String,
    display_name: String,
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    userinfo: bool,
    http: openidconnect::reqwest::Client,
    metadata: RwLock<Option<(Instant, CoreProviderMetadata)>>,
}

/// A client built from discovery: authorization endpoint set, token and
/// userinfo endpoints as the provider announced them.
type DiscoveredClient = openidconnect::Client<
    openidconnect::EmptyAdditionalClaims,
    openidconnect::core::CoreAuthDisplay,
    openidconnect::core::CoreGenderClaim,
    openidconnect::core::CoreJweContentEncryptionAlgorithm,
    openidconnect::core::CoreJsonWebKey,
    openidconnect::core::CoreAuthPrompt,
    openidconnect::StandardErrorResponse<openidconnect::core::CoreErrorResponseType>,
    openidconnect::core::CoreTokenResponse,
    openidconnect::core::CoreTokenIntrospectionResponse,
    openidconnect::core::CoreRevocableToken,
    openidconnect::core::CoreRevocationErrorResponse,
    openidconnect::EndpointSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointNotSet,
    openidconnect::EndpointMaybeSet,
    openidconnect::EndpointMaybeSet,
>;

/// Kept in the store between start and finish.
#[derive(Serialize, Deserialize)]
struct Saved {
    nonce: String,
    verifier: String,
}

impl OidcConnector {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        display_name: String,
        issuer: String,
        client_id: String,
        client_secret: Option<String>,
        scopes: Vec<String>,
        userinfo: bool,
        http: openidconnect::reqwest::Client,
    ) -> Self {
        Self {
            name,
            display_name,
            issuer,
            client_id,
            client_secret,
            scopes,
            userinfo,
            http,
            metadata: RwLock::new(None),
        }
    }

    async fn metadata(&self, fresh: bool) -> Result<CoreProviderMetadata, DelegationError> {
        if !fresh {
            if let Some((at, m)) = self.metadata.read().await.as_ref() {
                if at.elapsed() < METADATA_TTL {
                    return Ok(m.clone());
                }
            }
        }
        let issuer = IssuerUrl::new(self.issuer.clone())
            .map_err(|e| DelegationError::Invalid(format!("issuer: {e}")))?;
        let m = CoreProviderMetadata::discover_async(issuer, &self.http)
            .await
            .map_err(|e| DelegationError::Unavailable(format!("discovery: {e}")))?;
        *self.metadata.write().await = Some((Instant::now(), m.clone()));
        Ok(m)
    }

    fn client(
        &self,
        metadata: CoreProviderMetadata,
        callback_url: &str,
    ) -> Result<DiscoveredClient, DelegationError> {
        Ok(CoreClient::from_provider_metadata(
            metadata,
            ClientId::new(self.client_id.clone()),
            self.client_secret.clone().map(ClientSecret::new),
        )
        .set_redirect_uri(
            RedirectUrl::new(callback_url.to_owned())
                .map_err(|e| DelegationError::Invalid(format!("callback URL: {e}")))?,
        ))
    }
}

/// For `castellan upstreams test`: the provider's discovery document and
/// keys, fetched now.
pub async fn check_discovery(
    issuer: &str,
    http: &openidconnect::reqwest::Client,
) -> Result<String, DelegationError> {
    let url = IssuerUrl::new(issuer.to_owned())
        .map_err(|e| DelegationError::Invalid(format!("issuer: {e}")))?;
    let m = CoreProviderMetadata::discover_async(url, http)
        .await
        .map_err(|e| DelegationError::Unavailable(format!("discovery: {e}")))?;
    Ok(format!(
        "issuer {}, authorization endpoint {}, token endpoint {}, {} signing key(s)",
        m.issuer().as_str(),
        m.authorization_endpoint().as_str(),
        m.token_endpoint().map(|t| t.as_str()).unwrap_or("(none)"),
        m.jwks().keys().len()
    ))
}

/// The string, number and boolean claims of a JSON object, as attributes.
pub fn claims_to_attributes(claims: &Value) -> HashMap<String, Vec<String>> {
    let mut out = HashMap::new();
    if let Value::Object(map) = claims {
        for (k, v) in map {
            let values: Vec<String> = match v {
                Value::String(s) => vec![s.clone()],
                Value::Bool(b) => vec![b.to_string()],
                Value::Number(n) => vec![n.to_string()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| match x {
                        Value::String(s) => Some(s.clone()),
                        Value::Number(n) => Some(n.to_string()),
                        Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => vec![],
            };
            if !values.is_empty() {
                out.insert(k.clone(), values);
            }
        }
    }
    out
}

/// Token and protocol claims that say nothing about the user.
const PROTOCOL_CLAIMS: &[&str] = &[
    "iss",
    "aud",
    "exp",
    "iat",
    "nbf",
    "auth_time",
    "nonce",
    "at_hash",
    "c_hash",
    "azp",
    "sid",
    "jti",
    "acr",
    "amr",
];

#[async_trait]
impl Connector for OidcConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn supports_passive(&self) -> bool {
        true
    }

    fn proves_fresh_login(&self) -> bool {
        true
    }

    async fn start(&self, start: &Start<'_>) -> Result<Started, DelegationError> {
        let client = self.client(self.metadata(false).await?, start.callback_url)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = start.state.to_owned();
        let mut request = client.authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(state),
            Nonce::new_random,
        );
        for s in self.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(s.clone()));
        }
        if start.renew {
            // OIDC Core §3.1.2.1: prompt=login asks for credentials again,
            // max_age=0 makes auth_time a required claim to check it by.
            request = request
                .add_prompt(openidconnect::core::CoreAuthPrompt::Login)
                .set_max_age(std::time::Duration::ZERO);
        } else if start.passive {
            request = request.add_prompt(openidconnect::core::CoreAuthPrompt::None);
        }
        let (url, _, nonce) = request.set_pkce_challenge(challenge).url();
        let saved = serde_json::to_string(&Saved {
            nonce: nonce.secret().clone(),
            verifier: verifier.secret().clone(),
        })
        .map_err(|e| DelegationError::Invalid(e.to_string()))?;
        Ok(Started {
            redirect: url.to_string(),
            saved,
        })
    }

    async fn finish(&self, finish: &Finish<'_>) -> Result<Authenticated, DelegationError> {
        let (params, callback_url, saved) = (finish.params, finish.callback_url, finish.saved);
        if let Some(error) = params.get("error") {
            let description = params.get("error_description").cloned().unwrap_or_default();
            return Err(DelegationError::Refused(
                format!("{error} {description}").trim().to_owned(),
            ));
        }
        let code = params
            .get("code")
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| DelegationError::Refused("no code came back".into()))?;
        let saved: Saved = serde_json::from_str(saved)
            .map_err(|_| DelegationError::Invalid("lost login state".into()))?;
        let client = self.client(self.metadata(false).await?, callback_url)?;
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.clone()))
            .map_err(|e| DelegationError::Invalid(format!("token endpoint: {e}")))?
            .set_pkce_verifier(PkceCodeVerifier::new(saved.verifier))
            .request_async(&self.http)
            .await
            .map_err(|e| crate::exchange_error(&e))?;
        let id_token = openidconnect::TokenResponse::id_token(&tokens)
            .ok_or_else(|| DelegationError::Invalid("no ID token".into()))?;
        let nonce = Nonce::new(saved.nonce);
        let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
            Ok(c) => c.clone(),
            Err(first) => {
                // Perhaps a key rotated at the provider: discover again, once.
                let client = self.client(self.metadata(true).await?, callback_url)?;
                let verifier = client.id_token_verifier();
                let claims = id_token
                    .claims(&verifier, &nonce)
                    .map_err(|_| DelegationError::Invalid(format!("ID token: {first}")))?
                    .clone();
                claims
            }
        };
        let mut json =
            serde_json::to_value(&claims).map_err(|e| DelegationError::Invalid(e.to_string()))?;
        if self.userinfo {
            if let Ok(request) = client.user_info(tokens.access_token().clone(), None) {
                let info: CoreUserInfoClaims = request
                    .request_async(&self.http)
                    .await
                    .map_err(|e| DelegationError::Unavailable(format!("userinfo: {e}")))?;
                if info.subject() != claims.subject() {
                    return Err(DelegationError::Invalid(
                        "userinfo is about another subject".into(),
                    ));
                }
                if let (Value::Object(base), Ok(Value::Object(extra))) =
                    (&mut json, serde_json::to_value(&info))
                {
                    for (k, v) in extra {
                        base.entry(k).or_insert(v);
                    }
                }
            }
        }
        // auth_time comes from the verified ID token only, never userinfo.
        let auth_time = claims
            .auth_time()
            .and_then(|t| u64::try_from(t.timestamp()).ok());
        let fresh = crate::authenticated_since(auth_time, finish.started_at);
        let mfa = said_mfa(&json);
        let mut principal = Principal::new(claims.subject().as_str());
        for (k, v) in claims_to_attributes(&json) {
            if k != "sub" && !PROTOCOL_CLAIMS.contains(&k.as_str()) {
                principal.attributes.insert(k, v);
            }
        }
        Ok(Authenticated {
            principal,
            fresh,
            mfa,
        })
    }
}

/// Whether verified ID token claims say the login used more than one
/// factor: RFC 8176 `amr` values of a second factor, or an MFA `acr`.
fn said_mfa(claims: &Value) -> bool {
    const SECOND: [&str; 9] = [
        "mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "iris", "sc",
    ];
    const ACR: [&str; 3] = [
        "https://refeds.org/profile/mfa",
        "http://schemas.openid.net/pape/policies/2007/06/multi-factor",
        "mfa",
    ];
    let amr = claims["amr"].as_array().is_some_and(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .any(|v| SECOND.contains(&v))
    });
    let acr = claims["acr"].as_str().is_some_and(|v| ACR.contains(&v));
    amr || acr
}

#[cfg(test)]
mod mfa_tests {
    use super::said_mfa;
    use serde_json::json;

    #[test]
    fn an_upstream_says_mfa_by_amr_or_acr() {
        assert!(said_mfa(&json!({"amr": ["pwd", "otp"]})));
        assert!(said_mfa(&json!({"acr": "https://refeds.org/profile/mfa"})));
        assert!(!said_mfa(&json!({"amr": ["pwd"], "acr": "1"})));
        assert!(!said_mfa(&json!({})));
    }
}
