//! An upstream CAS server: `/login?service=…` there, and the ticket that
//! comes back validated at its `/p3/serviceValidate` (JSON).

use crate::{Connector, DelegationError, Start, Started};
use async_trait::async_trait;
use castellan_core::Principal;
use serde_json::Value;
use std::collections::HashMap;

pub struct CasConnector {
    name: String,
    display_name: String,
    /// The upstream's base URL, e.g. `https://cas.campus.example/cas`.
    url: String,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl CasConnector {
    pub fn new(name: String, display_name: String, url: String, http: reqwest::Client) -> Self {
        Self {
            name,
            display_name,
            url: url.trim_end_matches('/').to_owned(),
            http,
        }
    }
}

/// The user and attributes of a CAS 3.0 JSON validation response.
pub fn parse_validation(body: &Value) -> Result<Principal, DelegationError> {
    let response = body
        .get("serviceResponse")
        .ok_or_else(|| DelegationError::Invalid("not a CAS validation response".into()))?;
    if let Some(failure) = response.get("authenticationFailure") {
        let code = failure.get("code").and_then(Value::as_str).unwrap_or("?");
        return Err(DelegationError::Refused(format!(
            "ticket validation failed: {code}"
        )));
    }
    let success = response
        .get("authenticationSuccess")
        .ok_or_else(|| DelegationError::Invalid("no authenticationSuccess".into()))?;
    let user = success
        .get("user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| DelegationError::Invalid("no user".into()))?;
    let mut principal = Principal::new(user);
    if let Some(Value::Object(attributes)) = success.get("attributes") {
        for (name, value) in attributes {
            let values: Vec<String> = match value {
                Value::Array(a) => a.iter().filter_map(scalar).collect(),
                v => scalar(v).into_iter().collect(),
            };
            if !values.is_empty() {
                principal.attributes.insert(name.clone(), values);
            }
        }
    }
    Ok(principal)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// CAS protocol attributes of the upstream, not the user's.
const PROTOCOL_ATTRIBUTES: &[&str] = &[
    "authenticationDate",
    "isFromNewLogin",
    "longTermAuthenticationRequestTokenUsed",
    "successfulAuthenticationHandlers",
    "authenticationMethod",
    "credentialType",
    "samlAuthenticationStatementAuthMethod",
];

#[async_trait]
impl Connector for CasConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn supports_passive(&self) -> bool {
        true
    }

    async fn start(&self, start: &Start<'_>) -> Result<Started, DelegationError> {
        let service = format!("{}?state={}", start.callback_url, start.state);
        let mut redirect = format!("{}/login?service={}", self.url, enc(&service));
        if start.renew {
            redirect.push_str("&renew=true");
        }
        if start.passive {
            redirect.push_str("&gateway=true");
        }
        Ok(Started {
            redirect,
            saved: String::new(),
        })
    }

    async fn finish(
        &self,
        params: &HashMap<String, String>,
        callback_url: &str,
        state: &str,
        _saved: &str,
    ) -> Result<Principal, DelegationError> {
        let service = format!("{callback_url}?state={state}");
        let ticket = params
            .get("ticket")
            .filter(|t| !t.is_empty() && t.len() <= 1024)
            .ok_or_else(|| DelegationError::Refused("no ticket came back".into()))?;
        let url = format!(
            "{}/p3/serviceValidate?service={}&ticket={}&format=JSON",
            self.url,
            enc(&service),
            enc(ticket)
        );
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| DelegationError::Unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(DelegationError::Unavailable(format!(
                "validation answered {}",
                response.status()
            )));
        }
        let body: Value = response
            .json()
            .await
            .map_err(|e| DelegationError::Invalid(format!("validation response: {e}")))?;
        let mut principal = parse_validation(&body)?;
        principal
            .attributes
            .retain(|k, _| !PROTOCOL_ATTRIBUTES.contains(&k.as_str()));
        Ok(principal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_and_failure_responses() {
        let ok = json!({"serviceResponse": {"authenticationSuccess": {
            "user": "alice",
            "attributes": {"mail": ["a@x"], "cn": "Alice", "isFromNewLogin": [true]}}}});
        let p = parse_validation(&ok).unwrap();
        assert_eq!(p.id, "alice");
        assert_eq!(p.attributes["mail"], vec!["a@x"]);
        assert_eq!(p.attributes["cn"], vec!["Alice"]);
        let bad = json!({"serviceResponse": {"authenticationFailure": {"code": "INVALID_TICKET"}}});
        assert!(matches!(
            parse_validation(&bad),
            Err(DelegationError::Refused(_))
        ));
        assert!(parse_validation(&json!({"x": 1})).is_err());
    }
}
