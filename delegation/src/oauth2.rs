//! A plain OAuth2 provider (GitHub-style): the code flow with PKCE through
//! the `oauth2` crate, then the profile URL fetched with the access token;
//! the user id is the profile member named by `id_attribute`.

use crate::oidc::claims_to_attributes;
use crate::{Authenticated, Connector, DelegationError, Finish, Start, Started};
use async_trait::async_trait;
use castellan_core::Principal;
use openidconnect::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, OAuth2TokenResponse,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenUrl,
};
use serde_json::Value;

pub struct OAuth2Connector {
    name: String,
    display_name: String,
    authorize_url: String,
    token_url: String,
    profile_url: String,
    client_id: String,
    client_secret: Option<String>,
    scopes: Vec<String>,
    id_attribute: String,
    http: openidconnect::reqwest::Client,
}

impl OAuth2Connector {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        display_name: String,
        authorize_url: String,
        token_url: String,
        profile_url: String,
        client_id: String,
        client_secret: Option<String>,
        scopes: Vec<String>,
        id_attribute: String,
        http: openidconnect::reqwest::Client,
    ) -> Self {
        Self {
            name,
            display_name,
            authorize_url,
            token_url,
            profile_url,
            client_id,
            client_secret,
            scopes,
            id_attribute,
            http,
        }
    }

    fn urls(
        &self,
        callback_url: &str,
    ) -> Result<(AuthUrl, TokenUrl, RedirectUrl), DelegationError> {
        let bad = |what: &str, e: &dyn std::fmt::Display| {
            DelegationError::Invalid(format!("{what}: {e}"))
        };
        Ok((
            AuthUrl::new(self.authorize_url.clone()).map_err(|e| bad("authorize_url", &e))?,
            TokenUrl::new(self.token_url.clone()).map_err(|e| bad("token_url", &e))?,
            RedirectUrl::new(callback_url.to_owned()).map_err(|e| bad("callback URL", &e))?,
        ))
    }
}

#[async_trait]
impl Connector for OAuth2Connector {
    fn name(&self) -> &str {
        &self.name
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    async fn start(&self, start: &Start<'_>) -> Result<Started, DelegationError> {
        let (auth, _, redirect) = self.urls(start.callback_url)?;
        let client = ::oauth2::basic::BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(auth)
            .set_redirect_uri(redirect);
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = start.state.to_owned();
        let mut request = client.authorize_url(move || CsrfToken::new(state));
        for s in &self.scopes {
            request = request.add_scope(Scope::new(s.clone()));
        }
        let (url, _) = request.set_pkce_challenge(challenge).url();
        Ok(Started {
            redirect: url.to_string(),
            saved: verifier.secret().clone(),
        })
    }

    /// A plain OAuth2 provider says nothing about when the user
    /// authenticated: never fresh (and never asked for a renew).
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
        let (auth, token, redirect) = self.urls(callback_url)?;
        let mut client = ::oauth2::basic::BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_redirect_uri(redirect);
        if let Some(secret) = &self.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.clone()));
        }
        let tokens = client
            .exchange_code(AuthorizationCode::new(code.clone()))
            .set_pkce_verifier(PkceCodeVerifier::new(saved.to_owned()))
            .request_async(&self.http)
            .await
            .map_err(|e| crate::exchange_error(&e))?;
        let response = self
            .http
            .get(&self.profile_url)
            .bearer_auth(tokens.access_token().secret())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| DelegationError::Unavailable(format!("profile: {e}")))?;
        if !response.status().is_success() {
            return Err(DelegationError::Unavailable(format!(
                "profile answered {}",
                response.status()
            )));
        }
        let profile: Value = response
            .json()
            .await
            .map_err(|e| DelegationError::Invalid(format!("profile is not JSON: {e}")))?;
        let id = match profile.get(&self.id_attribute) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(DelegationError::Invalid(format!(
                    "the profile has no {}",
                    self.id_attribute
                )))
            }
        };
        let mut principal = Principal::new(id);
        for (k, v) in claims_to_attributes(&profile) {
            if k != self.id_attribute {
                principal.attributes.insert(k, v);
            }
        }
        Ok(Authenticated {
            principal,
            fresh: false,
            // Plain OAuth2 says nothing of how the user signed in.
            mfa: false,
        })
    }
}
