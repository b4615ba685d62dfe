//! The `claims` request parameter (OIDC Core §5.5): a client asks for
//! individual claims in the ID token and at userinfo, beyond those its
//! scopes bring. Only claims the client may get are released: those that
//! a scope registered for it would release, from the attributes released
//! to it. Essential or voluntary, a claim that cannot be released is left
//! out (§5.5.1: not an error).
//!
//! The request is kept beside the pending request, then beside the grant
//! (records of their own: the pinned records keep their bytes).

use crate::client::OidcClient;
use crate::tokens::scope_claims;
use castellan_core::Attributes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Most claims named per member.
const MAX_CLAIMS: usize = 64;
const MAX_CLAIM_NAME_LEN: usize = 128;

/// What a `claims` parameter asks for: the names, per member.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimsRequest {
    pub userinfo: Vec<String>,
    pub id_token: Vec<String>,
}

pub fn request_claims_key(request: &str) -> String {
    format!("oidc:claims:{request}")
}

pub fn grant_claims_key(grant: &str) -> String {
    format!("oidc:grant-claims:{grant}")
}

impl ClaimsRequest {
    /// Reads the parameter: a JSON object whose `userinfo` and `id_token`
    /// members map claim names to `null` or an object (`essential`,
    /// `value`, `values`). Other members are ignored (§5.5).
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|_| "claims is not JSON".to_owned())?;
        let Value::Object(top) = value else {
            return Err("claims is not a JSON object".into());
        };
        let member = |name: &str| -> Result<Vec<String>, String> {
            match top.get(name) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Object(claims)) => {
                    if claims.len() > MAX_CLAIMS {
                        return Err(format!("claims.{name} names too many claims"));
                    }
                    claims
                        .iter()
                        .map(|(claim, how)| match how {
                            _ if claim.is_empty() || claim.len() > MAX_CLAIM_NAME_LEN => {
                                Err(format!("claims.{name}: a claim name is too long"))
                            }
                            Value::Null | Value::Object(_) => Ok(claim.clone()),
                            _ => Err(format!("claims.{name}.{claim} must be null or an object")),
                        })
                        .collect()
                }
                Some(_) => Err(format!("claims.{name} is not a JSON object")),
            }
        };
        Ok(ClaimsRequest {
            userinfo: member("userinfo")?,
            id_token: member("id_token")?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.userinfo.is_empty() && self.id_token.is_empty()
    }

    /// Every name asked for (the consent page shows them).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.userinfo
            .iter()
            .chain(&self.id_token)
            .map(String::as_str)
    }
}

/// Adds to `claims` those of `names` the client may get: what its
/// registered scopes would release from `attributes` (the attributes
/// released to it). Claims already present are kept as they are.
pub fn add_requested<'a>(
    claims: &mut Map<String, Value>,
    names: impl IntoIterator<Item = &'a str>,
    client: &OidcClient,
    principal_id: &str,
    attributes: &Attributes,
) {
    let mut names = names.into_iter().peekable();
    if names.peek().is_none() {
        return;
    }
    let allowed = scope_claims(
        client.scopes.iter().map(String::as_str),
        principal_id,
        attributes,
    );
    for name in names {
        if claims.contains_key(name) {
            continue;
        }
        if let Some(v) = allowed.get(name) {
            claims.insert(name.to_owned(), v.clone());
            // email_verified comes with email (OIDC Core §5.1).
            if name == "email" {
                if let Some(v) = allowed.get("email_verified") {
                    claims.insert("email_verified".into(), v.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::client;

    #[test]
    fn a_claims_parameter_is_read_and_bounded() {
        let r = ClaimsRequest::parse(
            r#"{"userinfo":{"email":{"essential":true},"name":null},
                "id_token":{"auth_time":{"essential":true},"acr":{"values":["1"]}},
                "other":{"x":1}}"#,
        )
        .unwrap();
        let mut u = r.userinfo.clone();
        u.sort();
        assert_eq!(u, ["email", "name"]);
        assert_eq!(r.id_token.len(), 2);
        for bad in [
            "[]",
            "nope",
            r#"{"userinfo":[]}"#,
            r#"{"userinfo":{"email":true}}"#,
            r#"{"id_token":{"":null}}"#,
        ] {
            assert!(ClaimsRequest::parse(bad).is_err(), "{bad}");
        }
        let many: Map<String, Value> = (0..=MAX_CLAIMS)
            .map(|i| (format!("c{i}"), Value::Null))
            .collect();
        let text = serde_json::json!({ "userinfo": many }).to_string();
        assert!(ClaimsRequest::parse(&text).is_err());
        assert!(ClaimsRequest::parse("{}").unwrap().is_empty());
    }

    #[test]
    fn only_what_the_client_may_get_is_added() {
        let mut c = client("c", None);
        c.scopes = vec!["openid".into(), "email".into(), "memberOf".into()];
        let mut a = Attributes::new();
        a.insert("mail".into(), vec!["u@x".into()]);
        a.insert("cn".into(), vec!["U".into()]);
        a.insert("memberOf".into(), vec!["staff".into()]);
        let mut claims = Map::new();
        add_requested(
            &mut claims,
            ["email", "name", "memberOf", "secret", "sub"],
            &c,
            "u",
            &a,
        );
        assert_eq!(claims["email"], "u@x");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["memberOf"], "staff");
        // "profile" is not a scope of the client: no name; never an
        // attribute that was not released, nor sub from here.
        assert!(claims.get("name").is_none());
        assert!(claims.get("secret").is_none());
        assert!(claims.get("sub").is_none());
    }
}
