//! Pushed authorization requests (RFC 9126): the client sends its
//! authorization request to `/oidc/par` over its authenticated back channel
//! and gets a one-time `request_uri`; the browser then carries only that
//! (and the `client_id`) to `/oidc/authorize`.

use crate::authorize::{self, Rejection};
use crate::error::{ErrorCode, OAuthError};
use crate::provider::Provider;
use crate::sign_in::SignInError;
use castellan_core::ids::new_ticket_id;
use castellan_core::{Engine, EngineError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

/// RFC 9126 §2.2: the `request_uri` is a URN of this prefix.
pub const REQUEST_URI_PREFIX: &str = "urn:ietf:params:oauth:request_uri:";
/// How long a pushed request waits for the browser (RFC 9126 §2.2
/// suggests a short time; the browser is redirected at once).
pub const PUSHED_REQUEST_TTL: Duration = Duration::from_secs(60);
/// Most parameters a pushed request may have (each one is bounded by the
/// authorization request's own limits).
const MAX_PARAMETERS: usize = 64;
/// Parameters that authenticate the client at `/oidc/par`: not part of the
/// authorization request.
const CLIENT_AUTH: [&str; 3] = ["client_secret", "client_assertion", "client_assertion_type"];

fn pushed_key(id: &str) -> String {
    format!("oidc:par:{id}")
}

/// A pushed request, as kept until the browser comes with its URI.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PushedRequest {
    pub client_id: String,
    pub params: Vec<(String, String)>,
}

impl Provider {
    /// `/oidc/par`: checks the request as the authorization endpoint would
    /// and keeps it; the JSON body of the 201 answer.
    pub async fn push_authorization_request(
        &self,
        engine: &Engine,
        basic: Option<&str>,
        params: &HashMap<String, String>,
        address: Option<IpAddr>,
    ) -> Result<Value, OAuthError> {
        let client = self.authenticate_client(engine, basic, params).await?;
        // Anybody can push as a public client: such a request counts as a
        // pending sign-in of its address, as one at /authorize does.
        if client.is_public() {
            engine.admit_pending_flow(address)?;
        }
        // RFC 9126 §2.1: request_uri is not allowed here.
        if params.contains_key("request_uri") {
            return Err(OAuthError::invalid_request("request_uri may not be pushed"));
        }
        if params.len() > MAX_PARAMETERS {
            return Err(OAuthError::invalid_request("too many parameters"));
        }
        let mut request: HashMap<String, String> = params
            .iter()
            .filter(|(k, _)| !CLIENT_AUTH.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        request.insert("client_id".into(), client.client_id.clone());
        match authorize::check(&self.clients, &request) {
            Ok(_) => {}
            Err(Rejection::Page(message)) => return Err(OAuthError::invalid_request(message)),
            Err(Rejection::Redirect { error, .. }) => return Err(error),
        }
        if let Some(claims) = request.get("claims") {
            crate::claims::ClaimsRequest::parse(claims).map_err(OAuthError::invalid_request)?;
        }
        let id = new_ticket_id("PR");
        let record = PushedRequest {
            client_id: client.client_id.clone(),
            params: request.into_iter().collect(),
        };
        self.records(engine.store().as_ref())
            .put(&pushed_key(&id), &record, PUSHED_REQUEST_TTL)
            .await?;
        Ok(json!({
            "request_uri": format!("{REQUEST_URI_PREFIX}{id}"),
            "expires_in": PUSHED_REQUEST_TTL.as_secs(),
        }))
    }

    /// At `/oidc/authorize`: the pushed request a `request_uri` names,
    /// taken (one use), when the request has one of ours; `None` otherwise.
    /// RFC 9126 §4: the `client_id` beside it must be the pusher's; the
    /// other parameters beside it are ignored.
    pub(crate) async fn pushed_request(
        &self,
        engine: &Engine,
        params: &HashMap<String, String>,
    ) -> Result<Option<HashMap<String, String>>, SignInError> {
        let Some(id) = params
            .get("request_uri")
            .and_then(|u| u.strip_prefix(REQUEST_URI_PREFIX))
        else {
            return Ok(None);
        };
        let gone = || {
            SignInError::Invalid(
                "The pushed authorization request is unknown, expired or was already used.".into(),
            )
        };
        if id.len() > castellan_core::client::MAX_REQUEST_ID {
            return Err(gone());
        }
        let pushed: PushedRequest = self
            .records(engine.store().as_ref())
            .take(&pushed_key(id))
            .await
            .map_err(EngineError::from)?
            .ok_or_else(gone)?;
        if params.get("client_id") != Some(&pushed.client_id) {
            tracing::warn!(client = %pushed.client_id, "pushed request used with another client_id");
            return Err(SignInError::Invalid(
                "The pushed authorization request belongs to another application.".into(),
            ));
        }
        Ok(Some(pushed.params.into_iter().collect()))
    }
}

/// The refusal of a plain authorization request from a client that must
/// push its requests (RFC 9126 §5).
pub(crate) fn required_error() -> OAuthError {
    OAuthError::new(
        ErrorCode::InvalidRequest,
        "this client must use pushed authorization requests (/oidc/par)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pushed_request_keeps_its_parameters() {
        let record = PushedRequest {
            client_id: "c".into(),
            params: vec![("scope".into(), "openid".into())],
        };
        let back: PushedRequest =
            crate::records::decode(&crate::records::encode(&record).unwrap()).unwrap();
        assert_eq!(back.params, record.params);
        assert!(pushed_key("PR-1-x").starts_with("oidc:par:"));
    }
}
