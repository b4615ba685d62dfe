//! Registered OAuth2 / OpenID Connect clients and their authentication at
//! the token, introspection and revocation endpoints.

use crate::keys::Algorithm;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantTypes {
    pub authorization_code: bool,
    pub refresh_token: bool,
    pub client_credentials: bool,
    /// RFC 8628.
    pub device_code: bool,
    /// RFC 8693.
    pub token_exchange: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `sub` is the principal id, the same for every client.
    Public,
    /// `sub` differs per sector (RFC: OIDC Core §8.1), so that clients of
    /// different sectors cannot correlate a user.
    Pairwise { sector: String },
}

#[derive(Debug, Clone)]
pub struct OidcClient {
    pub name: String,
    pub client_id: String,
    /// `None`: a public client, which must use PKCE.
    pub secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    /// Scopes the client may be granted.
    pub scopes: Vec<String>,
    /// Principal attributes the client may see.
    pub release: Vec<String>,
    pub backchannel_logout_uri: Option<String>,
    pub grant_types: GrantTypes,
    pub subject: Subject,
    pub id_token_alg: Algorithm,
    pub access_token_alg: Algorithm,
    /// Other clients (resource servers) that may introspect this client's
    /// tokens. A client may always introspect its own.
    pub resource_servers: Vec<String>,
    /// A second factor asked of every login for this client.
    pub mfa: Option<castellan_core::MfaPolicy>,
    /// Attribute release consent asked of users, remembered this long.
    pub consent: Option<std::time::Duration>,
    /// RFC 9449 §5.2: every token request must carry a DPoP proof.
    pub dpop_bound_access_tokens: bool,
    /// RFC 8693: the clients whose access tokens this one may exchange.
    pub token_exchange_from: Vec<String>,
    /// `private_key_jwt` (RFC 7523): the keys its assertions are signed with.
    pub assertion_keys: Option<crate::client_assertion::ClientKeys>,
    /// RFC 9126 §5: authorization requests only by `/oidc/par`.
    pub require_par: bool,
    /// Origins of browser apps beyond those of `redirect_uris` (CORS).
    pub allowed_origins: Vec<String>,
    /// An ID token in refresh responses too.
    pub id_token_on_refresh: bool,
}

impl OidcClient {
    /// RFC 7662 §2.2: whether `caller` may learn about a token issued to
    /// this client; otherwise the token is "not active" for it.
    pub fn may_be_introspected_by(&self, caller: &str) -> bool {
        self.client_id == caller || self.resource_servers.iter().any(|r| r == caller)
    }

    /// A client without a secret or keys: one that cannot authenticate.
    pub fn is_public(&self) -> bool {
        self.secret.is_none() && self.assertion_keys.is_none()
    }

    pub fn allows_redirect(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }

    pub fn allows_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// Constant time in the secret's content: the digests are compared, so
    /// not even the length leaks.
    pub fn secret_matches(&self, presented: &str) -> bool {
        match &self.secret {
            Some(secret) => {
                let a = Sha256::digest(secret.as_bytes());
                let b = Sha256::digest(presented.as_bytes());
                a.ct_eq(&b).into()
            }
            None => false,
        }
    }
}

#[derive(Debug, Default)]
pub struct ClientRegistry {
    clients: HashMap<String, OidcClient>,
}

impl ClientRegistry {
    pub fn new(clients: Vec<OidcClient>) -> Self {
        Self {
            clients: clients
                .into_iter()
                .map(|c| (c.client_id.clone(), c))
                .collect(),
        }
    }

    pub fn get(&self, client_id: &str) -> Option<&OidcClient> {
        self.clients.get(client_id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &OidcClient> {
        self.clients.values()
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }
}

/// How a client presented itself at an endpoint.
#[derive(Debug, Default)]
pub struct ClientCredentials<'a> {
    /// The `Authorization: Basic` header's value, after `Basic `.
    pub basic: Option<&'a str>,
    pub form_client_id: Option<&'a str>,
    pub form_client_secret: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientAuthError {
    #[error("client authentication failed")]
    Failed,
    #[error("more than one client authentication method")]
    Ambiguous,
    #[error("malformed client credentials")]
    Malformed,
}

/// RFC 6749 §2.3.1: the Basic credentials are form-urlencoded before the
/// base64 step.
fn decode_basic(value: &str) -> Result<(String, String), ClientAuthError> {
    let raw = STANDARD
        .decode(value.trim())
        .map_err(|_| ClientAuthError::Malformed)?;
    let text = String::from_utf8(raw).map_err(|_| ClientAuthError::Malformed)?;
    let (id, secret) = text.split_once(':').ok_or(ClientAuthError::Malformed)?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Ok((unescape(id), unescape(secret)))
}

impl ClientRegistry {
    /// The client a request authenticates as. A public client names itself
    /// with `client_id` only; a confidential client must present its secret
    /// by exactly one method.
    pub fn authenticate(
        &self,
        credentials: &ClientCredentials<'_>,
    ) -> Result<&OidcClient, ClientAuthError> {
        if credentials.basic.is_some() && credentials.form_client_secret.is_some() {
            return Err(ClientAuthError::Ambiguous);
        }
        if let Some(basic) = credentials.basic {
            let (id, secret) = decode_basic(basic)?;
            if credentials.form_client_id.is_some_and(|f| f != id) {
                return Err(ClientAuthError::Malformed);
            }
            let client = self.get(&id).ok_or(ClientAuthError::Failed)?;
            return if client.secret_matches(&secret) {
                Ok(client)
            } else {
                Err(ClientAuthError::Failed)
            };
        }
        let id = credentials.form_client_id.ok_or(ClientAuthError::Failed)?;
        let client = self.get(id).ok_or(ClientAuthError::Failed)?;
        match (credentials.form_client_secret, client.is_public()) {
            (None, true) => Ok(client),
            (Some(secret), false) if client.secret_matches(secret) => Ok(client),
            _ => Err(ClientAuthError::Failed),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn client(id: &str, secret: Option<&str>) -> OidcClient {
        OidcClient {
            name: id.into(),
            client_id: id.into(),
            secret: secret.map(Into::into),
            redirect_uris: vec!["https://rp.example/cb".into()],
            post_logout_redirect_uris: vec![],
            scopes: vec!["openid".into(), "profile".into()],
            release: vec![],
            backchannel_logout_uri: None,
            grant_types: GrantTypes {
                authorization_code: true,
                refresh_token: true,
                client_credentials: secret.is_some(),
                device_code: false,
                token_exchange: false,
            },
            subject: Subject::Public,
            id_token_alg: Algorithm::RS256,
            access_token_alg: Algorithm::ES256,
            resource_servers: vec![],
            mfa: None,
            consent: None,
            dpop_bound_access_tokens: false,
            token_exchange_from: vec![],
            assertion_keys: None,
            require_par: false,
            allowed_origins: vec![],
            id_token_on_refresh: false,
        }
    }

    fn registry() -> ClientRegistry {
        ClientRegistry::new(vec![client("conf", Some("s3cr:t&x")), client("pub", None)])
    }

    #[test]
    fn basic_credentials_are_form_decoded() {
        let r = registry();
        // "conf:s3cr%3At%26x" — the secret percent-encoded per RFC 6749 §2.3.1.
        let basic = STANDARD.encode("conf:s3cr%3At%26x");
        let c = r
            .authenticate(&ClientCredentials {
                basic: Some(&basic),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(c.client_id, "conf");
        let wrong = STANDARD.encode("conf:nope");
        assert_eq!(
            r.authenticate(&ClientCredentials {
                basic: Some(&wrong),
                ..Default::default()
            })
            .unwrap_err(),
            ClientAuthError::Failed
        );
    }

    #[test]
    fn confidential_client_needs_its_secret_and_public_client_none() {
        let r = registry();
        let auth = |id, secret| {
            r.authenticate(&ClientCredentials {
                basic: None,
                form_client_id: Some(id),
                form_client_secret: secret,
            })
            .map(|c| c.client_id.clone())
        };
        assert_eq!(auth("conf", Some("s3cr:t&x")).unwrap(), "conf");
        assert!(auth("conf", None).is_err());
        assert!(auth("conf", Some("s3cr:t&")).is_err());
        assert_eq!(auth("pub", None).unwrap(), "pub");
        assert!(auth("pub", Some("anything")).is_err());
        assert!(auth("nobody", None).is_err());
    }

    #[test]
    fn two_methods_at_once_are_refused() {
        let r = registry();
        let basic = STANDARD.encode("conf:s3cr%3At%26x");
        assert_eq!(
            r.authenticate(&ClientCredentials {
                basic: Some(&basic),
                form_client_id: Some("conf"),
                form_client_secret: Some("s3cr:t&x"),
            })
            .unwrap_err(),
            ClientAuthError::Ambiguous
        );
    }
}
