//! What a presented token is worth: userinfo (OIDC Core §5.3),
//! introspection (RFC 7662) and revocation (RFC 7009).
//!
//! An access token is good while it verifies, has not expired, was not
//! revoked, and its grant (none for client_credentials) still exists and,
//! without offline_access, its SSO session is still live.

use crate::dpop::Presentation;
use crate::error::{ErrorCode, OAuthError};
use crate::grants::token_type;
use crate::parameters::{required, MAX_TOKEN_LEN};
use crate::provider::Provider;
use crate::records::{grant_key, refresh_key, revoked_key, Grant, RefreshRecord};
use crate::tokens::{self, scope_claims, subject, AccessTokenClaims};
use castellan_core::Engine;
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Why a presented access token is not good.
pub(crate) enum Inactive {
    Invalid(String),
    Unavailable(OAuthError),
}

impl Provider {
    /// A valid, unexpired, unrevoked access token, with its grant (none for
    /// client_credentials).
    pub(crate) async fn active_access_token(
        &self,
        engine: &Engine,
        token: &str,
    ) -> Result<(AccessTokenClaims, Option<Grant>), Inactive> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(Inactive::Invalid("token too long".into()));
        }
        let keys = self.keys().map_err(Inactive::Unavailable)?;
        let claims = tokens::verify_access_token(&keys, &self.issuer, token)
            .map_err(|e| Inactive::Invalid(e.to_string()))?;
        let unavailable = |e: castellan_core::StoreError| Inactive::Unavailable(e.into());
        if engine
            .store()
            .record(&revoked_key(&claims.jti))
            .await
            .map_err(unavailable)?
            .is_some()
        {
            return Err(Inactive::Invalid("the token was revoked".into()));
        }
        let grant = match &claims.grant {
            None => None,
            Some(id) => {
                let grant = self
                    .records(engine.store().as_ref())
                    .get::<Grant>(&grant_key(id))
                    .await
                    .map_err(unavailable)?
                    .ok_or_else(|| Inactive::Invalid("the grant was revoked".into()))?;
                if !grant.offline
                    && !engine
                        .session_is_live(&grant.session_id)
                        .await
                        .map_err(|e| Inactive::Unavailable(e.into()))?
                {
                    return Err(Inactive::Invalid("the SSO session has ended".into()));
                }
                Some(grant)
            }
        };
        Ok((claims, grant))
    }

    /// `/oidc/userinfo` for a bearer or DPoP-bound token (`method`: the
    /// request's): the user's claims. Its errors are `invalid_token` and
    /// `insufficient_scope` (RFC 6750 §3.1), the DPoP ones (RFC 9449 §7.1),
    /// or the store's `temporarily_unavailable`.
    pub async fn userinfo(
        &self,
        engine: &Engine,
        token: &str,
        presentation: Presentation<'_>,
    ) -> Result<Map<String, Value>, OAuthError> {
        let (claims, grant) = match self.active_access_token(engine, token).await {
            Ok(x) => x,
            Err(Inactive::Invalid(why)) => {
                return Err(OAuthError::new(ErrorCode::InvalidToken, why))
            }
            Err(Inactive::Unavailable(e)) => return Err(e),
        };
        self.check_presentation(
            engine,
            token,
            claims.cnf.as_ref(),
            presentation,
            "/userinfo",
        )
        .await?;
        let Some(grant) = grant.filter(|_| claims.scopes().any(|s| s == "openid")) else {
            return Err(OAuthError::new(
                ErrorCode::InsufficientScope,
                "the token was not issued for openid",
            ));
        };
        let mut body = scope_claims(claims.scopes(), &grant.principal_id, &grant.attributes);
        // OIDC Core §5.5: the claims request's userinfo member.
        if let (Some(grant_id), Some(client)) = (&claims.grant, self.clients.get(&claims.client_id))
        {
            let requested: Option<crate::claims::ClaimsRequest> = self
                .records(engine.store().as_ref())
                .get(&crate::claims::grant_claims_key(grant_id))
                .await?;
            if let Some(requested) = requested {
                crate::claims::add_requested(
                    &mut body,
                    requested.userinfo.iter().map(String::as_str),
                    client,
                    &grant.principal_id,
                    &grant.attributes,
                );
            }
        }
        body.insert("sub".into(), json!(claims.sub));
        Ok(body)
    }

    /// RFC 7662 §2.2: a client learns only about its own tokens, or those of
    /// clients that name it as their resource server.
    pub fn may_introspect(&self, owner: &str, caller: &str) -> bool {
        self.clients
            .get(owner)
            .is_some_and(|c| c.may_be_introspected_by(caller))
    }

    /// `/oidc/introspect`: the introspection response (RFC 7662 §2.2).
    /// Only confidential clients may ask.
    pub async fn introspect(
        &self,
        engine: &Engine,
        basic: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Result<Value, OAuthError> {
        let caller = self.authenticate_client(engine, basic, params).await?;
        if caller.is_public() {
            return Err(OAuthError::new(
                ErrorCode::InvalidClient,
                "only confidential clients may introspect tokens",
            ));
        }
        let token = required(params, "token")?;
        if token.starts_with("RT-") {
            return self
                .introspect_refresh(engine, token, &caller.client_id)
                .await;
        }
        Ok(match self.active_access_token(engine, token).await {
            Ok((c, _)) if !self.may_introspect(&c.client_id, &caller.client_id) => {
                tracing::warn!(caller = %caller.client_id, owner = %c.client_id, "introspection of another client's token refused");
                json!({"active": false})
            }
            Ok((c, _)) => {
                let mut body = json!({
                    "active": true,
                    "iss": c.iss,
                    "sub": c.sub,
                    "aud": c.aud,
                    "client_id": c.client_id,
                    "scope": c.scope,
                    "exp": c.exp,
                    "iat": c.iat,
                    "jti": c.jti,
                    "token_type": token_type(c.cnf.as_ref().map(|c| c.jkt.as_str())),
                });
                if let Some(cnf) = &c.cnf {
                    body["cnf"] = json!({ "jkt": cnf.jkt });
                }
                if let Some(act) = &c.act {
                    body["act"] = act.clone();
                }
                body
            }
            Err(Inactive::Invalid(_)) => json!({"active": false}),
            Err(Inactive::Unavailable(e)) => return Err(e),
        })
    }

    async fn introspect_refresh(
        &self,
        engine: &Engine,
        token: &str,
        caller: &str,
    ) -> Result<Value, OAuthError> {
        let inactive = json!({"active": false});
        let records = self.records(engine.store().as_ref());
        let Some((t, bound_to)) = records
            .get::<RefreshRecord>(&refresh_key(token))
            .await?
            .and_then(RefreshRecord::live)
        else {
            return Ok(inactive);
        };
        if !self.may_introspect(&t.client_id, caller) {
            tracing::warn!(%caller, owner = %t.client_id, "introspection of another client's token refused");
            return Ok(inactive);
        }
        let Some(grant) = records.get::<Grant>(&grant_key(&t.grant_id)).await? else {
            return Ok(inactive);
        };
        if !grant.offline && !engine.session_is_live(&grant.session_id).await? {
            return Ok(inactive);
        }
        let sub = self
            .clients
            .get(&t.client_id)
            .map(|c| subject(c, &grant.principal_id, &self.settings.pairwise_salt))
            .unwrap_or_default();
        let mut body = json!({
            "active": true,
            "iss": self.issuer,
            "sub": sub,
            "client_id": t.client_id,
            "scope": t.scopes.join(" "),
            "token_type": "refresh_token",
        });
        if let Some(jkt) = bound_to {
            body["cnf"] = json!({ "jkt": jkt });
        }
        Ok(body)
    }

    /// `/oidc/revoke` (RFC 7009): a refresh token takes its whole grant
    /// with it; an access token is remembered as revoked until it would
    /// expire. An unknown or invalid token is not an error (§2.2).
    pub async fn revoke(
        &self,
        engine: &Engine,
        basic: Option<&str>,
        params: &HashMap<String, String>,
    ) -> Result<(), OAuthError> {
        let client = self.authenticate_client(engine, basic, params).await?;
        let token = required(params, "token")?;
        let store = engine.store();
        if token.starts_with("RT-") {
            let key = refresh_key(token);
            if let Some((t, _)) = self
                .records(store.as_ref())
                .get::<RefreshRecord>(&key)
                .await?
                .and_then(RefreshRecord::live)
            {
                if t.client_id != client.client_id {
                    return Err(OAuthError::new(
                        ErrorCode::UnauthorizedClient,
                        "the token was issued to another client",
                    ));
                }
                store.remove_record(&key).await?;
                store.remove_record(&grant_key(&t.grant_id)).await?;
            }
            return Ok(());
        }
        let keys = self.keys()?;
        if let Ok(c) = tokens::verify_access_token(&keys, &self.issuer, token) {
            if c.client_id != client.client_id {
                return Err(OAuthError::new(
                    ErrorCode::UnauthorizedClient,
                    "the token was issued to another client",
                ));
            }
            let left = c.exp.saturating_sub(self.now()).max(1);
            store
                .put_record(&revoked_key(&c.jti), b"", Duration::from_secs(left))
                .await?;
        }
        Ok(())
    }
}
