//! The token endpoint (RFC 6749 §3.2): the authorization code grant (a
//! replayed code revokes what it granted, RFC 6749 §4.1.2), refresh token
//! rotation (a rotated token presented again revokes the grant, RFC 9700
//! §4.14.2), and client_credentials.
//!
//! A grant is bound to the SSO session it came from: when that session
//! ends, its refresh tokens stop working, unless the user granted
//! offline_access.

use crate::authorize::pkce_matches;
use crate::client::{ClientCredentials, OidcClient};
use crate::error::{ErrorCode, OAuthError};
use crate::keys::Keyring;
use crate::parameters::required;
use crate::provider::Provider;
use crate::records::{grant_key, refresh_key, Grant, Redemption, RefreshRecord, RefreshToken};
use crate::tokens::{sign, subject, AccessTokenClaims, ACCESS_TOKEN_TYPE};
use castellan_core::ids::{new_ticket_id, redact};
use castellan_core::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;

/// Scopes that mean a user: never granted to a client acting for itself.
const USER_SCOPES: &[&str] = &["openid", "offline_access", "profile", "email", "phone"];

impl Provider {
    /// The client a request to the token, introspection or revocation
    /// endpoint authenticates as. `basic` is the `Authorization: Basic`
    /// header's value after `Basic `.
    pub(crate) async fn authenticate_client(
        &self,
        engine: &Engine,
        basic: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Result<&OidcClient, OAuthError> {
        // RFC 7523: private_key_jwt.
        if params.contains_key("client_assertion") || params.contains_key("client_assertion_type") {
            return self.authenticate_by_assertion(engine, basic, params).await;
        }
        self.clients
            .authenticate(&ClientCredentials {
                basic,
                form_client_id: params.get("client_id").map(String::as_str),
                form_client_secret: params.get("client_secret").map(String::as_str),
            })
            .map_err(|e| {
                tracing::warn!(error = %e, "client authentication failed");
                OAuthError::new(ErrorCode::InvalidClient, e.to_string())
            })
    }

    /// `/oidc/token`: the JSON body of a successful token response. `dpop`
    /// is the request's `DPoP` header (RFC 9449): the tokens are bound to
    /// its key.
    pub async fn token(
        &self,
        engine: &Engine,
        basic: Option<&str>,
        dpop: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Result<Value, OAuthError> {
        let client = self.authenticate_client(engine, basic, params).await?;
        let jkt = self.token_binding(engine, client, dpop).await?;
        let jkt = jkt.as_deref();
        match params.get("grant_type").map(String::as_str) {
            Some("authorization_code") => self.code_grant(engine, client, params, jkt).await,
            Some("refresh_token") => self.refresh_grant(engine, client, params, jkt).await,
            Some("client_credentials") => self.client_credentials_grant(client, params, jkt),
            Some(crate::device::GRANT_TYPE) => self.device_grant(engine, client, params, jkt).await,
            Some(crate::exchange::GRANT_TYPE) => {
                self.exchange_grant(engine, client, params, jkt).await
            }
            None => Err(OAuthError::invalid_request("grant_type is missing")),
            Some(other) => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!("grant_type {other} is not supported"),
            )),
        }
    }

    /// Removes a grant: every token issued from it stops working.
    pub(crate) async fn revoke_grant(&self, engine: &Engine, grant_id: &str, why: &str) {
        tracing::warn!(grant = %redact(grant_id), "{why}: grant revoked");
        if let Err(e) = engine.store().remove_record(&grant_key(grant_id)).await {
            tracing::error!(error = %e, "could not revoke a grant");
        }
    }

    async fn code_grant(
        &self,
        engine: &Engine,
        client: &OidcClient,
        params: &HashMap<String, String>,
        jkt: Option<&str>,
    ) -> Result<Value, OAuthError> {
        if !client.grant_types.authorization_code {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client may not use authorization codes",
            ));
        }
        let code = required(params, "code")?;
        let code = match self
            .records(engine.store().as_ref())
            .redeem_code(code)
            .await?
        {
            Redemption::First(c) => c,
            Redemption::Unknown => {
                return Err(OAuthError::invalid_grant("the code is unknown or expired"))
            }
            Redemption::Replay { grant_id } => {
                self.revoke_grant(engine, &grant_id, "authorization code presented twice")
                    .await;
                return Err(OAuthError::invalid_grant(
                    "the code was already used; the tokens issued with it are revoked",
                ));
            }
        };
        if code.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "the code was issued to another client",
            ));
        }
        if params.get("redirect_uri") != Some(&code.redirect_uri) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri does not match the authorization request",
            ));
        }
        match (&code.code_challenge, params.get("code_verifier")) {
            (Some(challenge), Some(verifier)) if pkce_matches(challenge, verifier) => {}
            (Some(_), _) => {
                return Err(OAuthError::invalid_grant("PKCE verification failed"));
            }
            (None, Some(_)) => {
                return Err(OAuthError::invalid_grant(
                    "code_verifier sent, but the authorization request had no code_challenge",
                ))
            }
            (None, None) => {}
        }
        // The session may have ended (and its back-channel logout gone out)
        // between the callback and this redemption.
        if !engine.session_is_live(&code.grant.session_id).await? {
            return Err(OAuthError::invalid_grant(
                "the SSO session of this code has ended",
            ));
        }
        self.issue(
            engine,
            client,
            code.grant,
            &code.grant_id,
            code.nonce.as_deref(),
            jkt,
        )
        .await
    }

    /// How long a grant and its refresh tokens live.
    fn grant_ttl(&self, grant: &Grant) -> std::time::Duration {
        if grant.offline {
            self.settings.offline_token_ttl
        } else {
            self.settings.refresh_token_ttl
        }
    }

    /// Stores the grant and issues its tokens: an access token, a refresh
    /// token (when the client may refresh) and an ID token (scope openid).
    pub(crate) async fn issue(
        &self,
        engine: &Engine,
        client: &OidcClient,
        grant: Grant,
        grant_id: &str,
        nonce: Option<&str>,
        jkt: Option<&str>,
    ) -> Result<Value, OAuthError> {
        let keys = self.keys()?;
        let records = self.records(engine.store().as_ref());
        let ttl = self.grant_ttl(&grant);
        records.put(&grant_key(grant_id), &grant, ttl).await?;
        let sub = subject(client, &grant.principal_id, &self.settings.pairwise_salt);
        let scope = grant.scopes.join(" ");
        let access_token = self.access_token(
            &keys,
            client,
            &sub,
            &scope,
            Some(grant_id),
            Some(grant.auth_time),
            jkt,
        )?;
        let mut body = json!({
            "access_token": access_token,
            "token_type": token_type(jkt),
            "expires_in": self.settings.access_token_ttl.as_secs(),
            "scope": scope,
        });
        if client.grant_types.refresh_token {
            let refresh = new_ticket_id("RT");
            records
                .put(
                    &refresh_key(&refresh),
                    &RefreshRecord::new(
                        RefreshToken {
                            grant_id: grant_id.to_owned(),
                            client_id: client.client_id.clone(),
                            scopes: grant.scopes.clone(),
                        },
                        refresh_binding(client, jkt),
                    ),
                    ttl,
                )
                .await?;
            body["refresh_token"] = Value::String(refresh);
        }
        if grant.scopes.iter().any(|s| s == "openid") {
            let id_token = self
                .grant_id_token(
                    &records,
                    &keys,
                    client,
                    &sub,
                    &grant,
                    grant_id,
                    nonce,
                    &access_token,
                )
                .await?;
            body["id_token"] = Value::String(id_token);
        }
        Ok(body)
    }

    /// An RFC 9068 access token, bound to its grant when it has one, and to
    /// a DPoP key (`jkt`) when the request proved one.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn access_token(
        &self,
        keys: &Keyring,
        client: &OidcClient,
        sub: &str,
        scope: &str,
        grant_id: Option<&str>,
        auth_time: Option<u64>,
        jkt: Option<&str>,
    ) -> Result<String, OAuthError> {
        let now = self.now();
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: sub.to_owned(),
            aud: client.client_id.clone(),
            client_id: client.client_id.clone(),
            exp: now + self.settings.access_token_ttl.as_secs(),
            iat: now,
            jti: new_ticket_id("AT"),
            scope: scope.to_owned(),
            auth_time,
            grant: grant_id.map(str::to_owned),
            cnf: jkt.map(|jkt| crate::dpop::Confirmation {
                jkt: jkt.to_owned(),
            }),
            act: None,
        };
        sign(keys, client.access_token_alg, ACCESS_TOKEN_TYPE, &claims).map_err(|e| {
            tracing::error!(error = %e, "access token signing failed");
            OAuthError::server_error()
        })
    }

    async fn refresh_grant(
        &self,
        engine: &Engine,
        client: &OidcClient,
        params: &HashMap<String, String>,
        jkt: Option<&str>,
    ) -> Result<Value, OAuthError> {
        if !client.grant_types.refresh_token {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client may not use refresh tokens",
            ));
        }
        let presented = required(params, "refresh_token")?;
        let records = self.records(engine.store().as_ref());
        let (token, bound_to) = match records.redeem_refresh(presented).await? {
            Redemption::First(t) => t,
            Redemption::Unknown => {
                return Err(OAuthError::invalid_grant(
                    "the refresh token is unknown or expired",
                ))
            }
            Redemption::Replay { grant_id } => {
                self.revoke_grant(engine, &grant_id, "rotated refresh token presented again")
                    .await;
                return Err(OAuthError::invalid_grant(
                    "the refresh token was already used; the whole grant is revoked",
                ));
            }
        };
        if token.client_id != client.client_id {
            return Err(OAuthError::invalid_grant(
                "the refresh token was issued to another client",
            ));
        }
        if let Some(bound_to) = bound_to {
            self.check_refresh_binding(engine, presented, token.clone(), bound_to, jkt)
                .await?;
        }
        let Some(grant) = records.get::<Grant>(&grant_key(&token.grant_id)).await? else {
            return Err(OAuthError::invalid_grant(
                "the grant was revoked or expired",
            ));
        };
        if !grant.offline && !engine.session_is_live(&grant.session_id).await? {
            self.revoke_grant(engine, &token.grant_id, "SSO session ended")
                .await;
            return Err(OAuthError::invalid_grant("the SSO session has ended"));
        }
        let scopes = narrow_scopes(params, &token.scopes)?;
        let keys = self.keys()?;
        let sub = subject(client, &grant.principal_id, &self.settings.pairwise_salt);
        let scope = scopes.join(" ");
        let access_token = self.access_token(
            &keys,
            client,
            &sub,
            &scope,
            Some(&token.grant_id),
            Some(grant.auth_time),
            jkt,
        )?;
        let refresh = new_ticket_id("RT");
        records
            .put(
                &refresh_key(&refresh),
                &RefreshRecord::new(
                    RefreshToken {
                        grant_id: token.grant_id.clone(),
                        client_id: client.client_id.clone(),
                        // A narrowed refresh keeps the original grant for later.
                        scopes: token.scopes,
                    },
                    refresh_binding(client, jkt),
                ),
                self.grant_ttl(&grant),
            )
            .await?;
        let mut body = json!({
            "access_token": access_token,
            "token_type": token_type(jkt),
            "expires_in": self.settings.access_token_ttl.as_secs(),
            "refresh_token": refresh,
            "scope": scope,
        });
        // A client's option: an ID token in refresh responses (OIDC Core §12.2).
        if client.id_token_on_refresh && scopes.iter().any(|s| s == "openid") {
            let id_token = self
                .grant_id_token(
                    &records,
                    &keys,
                    client,
                    &sub,
                    &grant,
                    &token.grant_id,
                    None,
                    &access_token,
                )
                .await?;
            body["id_token"] = Value::String(id_token);
        }
        Ok(body)
    }

    fn client_credentials_grant(
        &self,
        client: &OidcClient,
        params: &HashMap<String, String>,
        jkt: Option<&str>,
    ) -> Result<Value, OAuthError> {
        if client.is_public() || !client.grant_types.client_credentials {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client may not use client_credentials",
            ));
        }
        let allowed: Vec<String> = client
            .scopes
            .iter()
            .filter(|s| !USER_SCOPES.contains(&s.as_str()))
            .cloned()
            .collect();
        let scopes = narrow_scopes(params, &allowed)?;
        let keys = self.keys()?;
        let scope = scopes.join(" ");
        let token = self.access_token(&keys, client, &client.client_id, &scope, None, None, jkt)?;
        Ok(json!({
            "access_token": token,
            "token_type": token_type(jkt),
            "expires_in": self.settings.access_token_ttl.as_secs(),
            "scope": scope,
        }))
    }
}

/// Requested scopes: a subset of `allowed`; none requested means all of them.
pub(crate) fn narrow_scopes(
    params: &HashMap<String, String>,
    allowed: &[String],
) -> Result<Vec<String>, OAuthError> {
    match params.get("scope").filter(|s| !s.trim().is_empty()) {
        None => Ok(allowed.to_vec()),
        Some(requested) => {
            let mut scopes = Vec::new();
            for s in requested.split(' ').filter(|s| !s.is_empty()) {
                if !allowed.iter().any(|a| a == s) {
                    return Err(OAuthError::new(
                        ErrorCode::InvalidScope,
                        format!("scope {s} was not granted"),
                    ));
                }
                if !scopes.iter().any(|k: &String| k == s) {
                    scopes.push(s.to_owned());
                }
            }
            Ok(scopes)
        }
    }
}

/// RFC 9449 §5: `DPoP` for tokens bound to a key.
pub(crate) fn token_type(jkt: Option<&str>) -> &'static str {
    if jkt.is_some() {
        "DPoP"
    } else {
        "Bearer"
    }
}

/// RFC 9449 §5: a public client's refresh tokens are bound to its DPoP key;
/// a confidential client's are bound by its authentication already.
fn refresh_binding(client: &OidcClient, jkt: Option<&str>) -> Option<String> {
    jkt.filter(|_| client.is_public()).map(str::to_owned)
}
