//! Token exchange (RFC 8693) for delegation: a service that received a
//! user's access token (issued by Castellan to another client) exchanges
//! it for one of its own, to call a further service on the user's behalf.
//!
//! Which client may exchange which clients' tokens is configured on the
//! requesting client (`token_exchange_from`). The new token can only be
//! narrower than the one presented: its scopes a subset, its audience the
//! requester or one of its resource servers, its expiry no later; it keeps
//! the user's grant (revoking that revokes it) and names the requester in
//! an `act` claim (§4.1), nesting any earlier actor.

use crate::access::Inactive;
use crate::client::OidcClient;
use crate::error::{ErrorCode, OAuthError};
use crate::grants::{narrow_scopes, token_type};
use crate::parameters::required;
use crate::provider::Provider;
use crate::tokens::{sign, AccessTokenClaims, ACCESS_TOKEN_TYPE};
use castellan_core::ids::new_ticket_id;
use castellan_core::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";
/// How deep `act` claims may nest (each exchange adds one).
const MAX_ACTORS: usize = 8;

/// `act` (RFC 8693 §4.1): the requester acts, for whoever acted before.
pub fn actor(requester: &str, previous: Option<&Value>) -> Value {
    let mut act = json!({ "sub": requester, "client_id": requester });
    if let Some(previous) = previous {
        act["act"] = previous.clone();
    }
    act
}

fn depth(act: Option<&Value>) -> usize {
    let mut n = 0;
    let mut at = act;
    while let Some(a) = at {
        n += 1;
        at = a.get("act");
    }
    n
}

/// The audience asked for (`audience` or `resource`, RFC 8693 §2.1): the
/// requester itself or one of its resource servers, by client_id.
fn audience<'a>(
    requester: &'a OidcClient,
    params: &'a HashMap<String, String>,
) -> Result<&'a str, OAuthError> {
    let asked: Vec<&str> = ["audience", "resource"]
        .iter()
        .filter_map(|k| params.get(*k))
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .collect();
    match asked.as_slice() {
        [] => Ok(&requester.client_id),
        [one]
            if *one == requester.client_id
                || requester.resource_servers.iter().any(|r| r == one) =>
        {
            Ok(one)
        }
        [_] => Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "the audience is neither the client nor one of its resource servers",
        )),
        _ => Err(OAuthError::new(
            ErrorCode::InvalidTarget,
            "one audience or resource at most",
        )),
    }
}

impl Provider {
    /// The token endpoint's token-exchange grant (RFC 8693 §2).
    pub(crate) async fn exchange_grant(
        &self,
        engine: &Engine,
        requester: &OidcClient,
        params: &HashMap<String, String>,
        jkt: Option<&str>,
    ) -> Result<Value, OAuthError> {
        if requester.is_public() || !requester.grant_types.token_exchange {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client may not exchange tokens",
            ));
        }
        let subject_token = required(params, "subject_token")?;
        if required(params, "subject_token_type")? != ACCESS_TOKEN {
            return Err(OAuthError::invalid_request(
                "subject_token_type must be an access token's",
            ));
        }
        if params
            .get("requested_token_type")
            .is_some_and(|t| !t.is_empty() && t != ACCESS_TOKEN)
        {
            return Err(OAuthError::invalid_request(
                "only access tokens are issued by exchange",
            ));
        }
        if params.contains_key("actor_token") {
            return Err(OAuthError::invalid_request(
                "actor_token is not supported: the authenticated client is the actor",
            ));
        }
        let (subject, _grant) = match self.active_access_token(engine, subject_token).await {
            Ok(x) => x,
            Err(Inactive::Invalid(why)) => {
                tracing::warn!(client = %requester.client_id, %why, "token exchange with an invalid subject_token");
                return Err(OAuthError::invalid_request(
                    "the subject_token is not active",
                ));
            }
            Err(Inactive::Unavailable(e)) => return Err(e),
        };
        if !requester.token_exchange_from.contains(&subject.client_id) {
            tracing::warn!(client = %requester.client_id, from = %subject.client_id, "token exchange refused for this pair of clients");
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "the client may not exchange tokens issued to that client",
            ));
        }
        // A key-bound token is exchanged only by the key's holder.
        if let Some(cnf) = &subject.cnf {
            if jkt != Some(cnf.jkt.as_str()) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidDpopProof,
                    "the subject_token is DPoP-bound: prove its key",
                ));
            }
        }
        if depth(subject.act.as_ref()) >= MAX_ACTORS {
            return Err(OAuthError::invalid_request("too many exchanges in a chain"));
        }
        let granted: Vec<String> = subject.scopes().map(str::to_owned).collect();
        let scope = narrow_scopes(params, &granted)?.join(" ");
        let aud = audience(requester, params)?.to_owned();
        let now = self.now();
        let claims = AccessTokenClaims {
            iss: self.issuer.clone(),
            sub: subject.sub.clone(),
            aud,
            client_id: requester.client_id.clone(),
            exp: (now + self.settings.access_token_ttl.as_secs()).min(subject.exp),
            iat: now,
            jti: new_ticket_id("AT"),
            scope: scope.clone(),
            auth_time: subject.auth_time,
            grant: subject.grant.clone(),
            cnf: jkt.map(|jkt| crate::dpop::Confirmation {
                jkt: jkt.to_owned(),
            }),
            act: Some(actor(&requester.client_id, subject.act.as_ref())),
        };
        let keys = self.keys()?;
        let token = sign(
            &keys,
            requester.access_token_alg,
            ACCESS_TOKEN_TYPE,
            &claims,
        )
        .map_err(|e| {
            tracing::error!(error = %e, "access token signing failed");
            OAuthError::server_error()
        })?;
        tracing::info!(client = %requester.client_id, from = %subject.client_id, "token exchanged");
        Ok(json!({
            "access_token": token,
            "issued_token_type": ACCESS_TOKEN,
            "token_type": token_type(jkt),
            "expires_in": claims.exp.saturating_sub(now),
            "scope": scope,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::client;

    #[test]
    fn actors_nest_and_are_counted() {
        let first = actor("b", None);
        assert_eq!(first, json!({"sub": "b", "client_id": "b"}));
        let second = actor("c", Some(&first));
        assert_eq!(second["act"]["sub"], "b");
        assert_eq!(depth(Some(&second)), 2);
        assert_eq!(depth(None), 0);
    }

    #[test]
    fn the_audience_is_the_client_or_its_resource_servers() {
        let mut b = client("b", Some("s"));
        b.resource_servers = vec!["c".into()];
        let p = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect()
        };
        assert_eq!(audience(&b, &p(&[])).unwrap(), "b");
        assert_eq!(audience(&b, &p(&[("audience", "c")])).unwrap(), "c");
        assert_eq!(audience(&b, &p(&[("resource", "c")])).unwrap(), "c");
        let e = audience(&b, &p(&[("audience", "d")])).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidTarget);
        let e = audience(&b, &p(&[("audience", "b"), ("resource", "c")])).unwrap_err();
        assert_eq!(e.error, ErrorCode::InvalidTarget);
    }
}
