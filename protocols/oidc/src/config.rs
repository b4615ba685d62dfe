//! The provider's configuration: OAuth2 / OpenID Connect clients as the
//! configuration file registers them (`[[services]]` with
//! `protocol = "oidc"`), and the `[oidc]` section's lifetimes and pairwise
//! salt.
//!
//! The web crate parses the file and knows where each key was written; this
//! module gets the plain values and names the key of every problem (`key()`
//! of each error), so that the file's line can be told.

use crate::client::{GrantTypes, OidcClient, Subject};
use crate::keys::Algorithm;
use std::collections::HashSet;
use std::time::Duration;
use url::Url;

/// The keys an OIDC client may have; any other key written for it (a CAS
/// service's `logout`, a SAML SP's `metadata`) is an error.
pub const KEYS: &[&str] = &[
    "name",
    "protocol",
    "release",
    "client_id",
    "client_secret",
    "redirect_uris",
    "post_logout_redirect_uris",
    "scopes",
    "backchannel_logout_uri",
    "grant_types",
    "subject",
    "id_token_signing_alg",
    "access_token_signing_alg",
    "resource_servers",
    "mfa",
    "dpop_bound_access_tokens",
    "token_exchange_from",
    "token_endpoint_auth_method",
    "jwks",
    "jwks_uri",
    "require_pushed_authorization_requests",
    "allowed_origins",
    "id_token_on_refresh",
];

/// The CAS service's keys, refused with a message of their own: the one
/// mistake made when turning a CAS service into an OIDC client.
const CAS_KEYS: [&str; 2] = ["service", "proxy_callback"];

/// One `[[services]]` entry with `protocol = "oidc"`.
#[derive(Debug, Clone, Default)]
pub struct ClientInput {
    pub name: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub redirect_uris: Vec<String>,
    pub post_logout_redirect_uris: Vec<String>,
    pub scopes: Vec<String>,
    pub release: Vec<String>,
    /// OIDC Back-Channel Logout 1.0.
    pub backchannel_logout_uri: Option<String>,
    /// Default: authorization_code and refresh_token, plus
    /// client_credentials for a confidential client.
    pub grant_types: Option<Vec<String>>,
    /// "public" (default) or "pairwise".
    pub subject: Option<String>,
    /// RS256 (default) or ES256.
    pub id_token_signing_alg: Option<String>,
    /// ES256 (default) or RS256.
    pub access_token_signing_alg: Option<String>,
    /// client_ids of the resource servers that may introspect this
    /// client's tokens (RFC 7662); by default only the client itself.
    pub resource_servers: Vec<String>,
    /// "required" or "optional" (a second factor).
    pub mfa: Option<String>,
    /// Attribute release consent, remembered this long (read by the
    /// caller, common to every protocol).
    pub consent: Option<std::time::Duration>,
    /// RFC 9449: token requests must carry a DPoP proof.
    pub dpop_bound_access_tokens: bool,
    /// RFC 8693: client_ids whose access tokens this client may exchange.
    pub token_exchange_from: Vec<String>,
    /// `client_secret_basic`, `client_secret_post`, `private_key_jwt` or
    /// `none` (default: by the presence of client_secret).
    pub token_endpoint_auth_method: Option<String>,
    /// private_key_jwt: an inline JWK Set (JSON), or where to fetch it.
    pub jwks: Option<String>,
    pub jwks_uri: Option<String>,
    pub require_pushed_authorization_requests: Option<bool>,
    /// CORS origins (`scheme://host[:port]`) beyond those of redirect_uris.
    pub allowed_origins: Vec<String>,
    pub id_token_on_refresh: Option<bool>,
    /// Every key written in the entry, for the check that each belongs to an
    /// OIDC client.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientConfigError {
    #[error("service {name:?}: {key} is not a key of an OIDC client")]
    ForeignKey { name: String, key: String },
    #[error("service {name:?}: `service` and `proxy_callback` are for CAS services; an OIDC client has redirect_uris")]
    CasKeys { name: String },
    #[error("service {name:?}: client_id is required for protocol \"oidc\"")]
    MissingClientId { name: String },
    #[error("service {name:?}: client_id must be 1 to 255 characters without ':'")]
    BadClientId { name: String },
    #[error("service {name:?}: redirect_uris needs at least one URI")]
    NoRedirectUri { name: String },
    #[error("service {name:?}: {uri:?} is not an absolute http(s) URI without a fragment")]
    BadUri { name: String, uri: String },
    #[error("services.grant_types: client_credentials needs a client_secret")]
    ClientCredentialsWithoutSecret,
    #[error("services.grant_types: token exchange needs a client_secret")]
    TokenExchangeWithoutSecret,
    #[error("services.grant_types: {0:?} is not authorization_code, refresh_token, client_credentials, urn:ietf:params:oauth:grant-type:device_code or urn:ietf:params:oauth:grant-type:token-exchange")]
    UnknownGrantType(String),
    #[error("services.subject: {0:?} is not \"public\" or \"pairwise\"")]
    BadSubject(String),
    #[error("services.{key}: {value:?} is not RS256 or ES256")]
    BadAlgorithm { key: &'static str, value: String },
    #[error("services.client_id: {0:?} is used twice")]
    DuplicateClientId(String),
    #[error("services.mfa: {0:?} is not \"required\" or \"optional\"")]
    BadMfa(String),
    #[error("services.token_endpoint_auth_method: {0:?} is not client_secret_basic, client_secret_post, private_key_jwt or none, or does not fit client_secret")]
    BadAuthMethod(String),
    #[error("services.{key}: {error}")]
    BadKeys {
        key: &'static str,
        error: crate::client_assertion::KeysConfigError,
    },
    #[error(
        "services.allowed_origins: {0:?} is not an origin (scheme://host[:port], nothing else)"
    )]
    BadOrigin(String),
}

impl ClientConfigError {
    /// The key whose value is wrong; `None`: the client as a whole.
    pub fn key(&self) -> Option<&str> {
        use ClientConfigError::*;
        match self {
            ForeignKey { key, .. } => Some(key),
            ClientCredentialsWithoutSecret | TokenExchangeWithoutSecret | UnknownGrantType(_) => {
                Some("grant_types")
            }
            BadSubject(_) => Some("subject"),
            BadMfa(_) => Some("mfa"),
            BadAuthMethod(_) => Some("token_endpoint_auth_method"),
            BadKeys { key, .. } => Some(key),
            BadOrigin(_) => Some("allowed_origins"),
            BadAlgorithm { key, .. } => Some(key),
            CasKeys { .. }
            | MissingClientId { .. }
            | BadClientId { .. }
            | NoRedirectUri { .. }
            | BadUri { .. }
            | DuplicateClientId(_) => None,
        }
    }
}

/// The registered clients, checked one by one and against each other.
#[derive(Debug, Default)]
pub struct Clients {
    clients: Vec<OidcClient>,
    client_ids: HashSet<String>,
}

impl Clients {
    /// Checks one client and registers it; every problem found is returned.
    /// Warnings (plain-http URIs) go to `warnings`.
    pub fn add(
        &mut self,
        input: ClientInput,
        warnings: &mut Vec<String>,
    ) -> Result<(), Vec<ClientConfigError>> {
        let client = client(input, warnings)?;
        let duplicate = !self.client_ids.insert(client.client_id.clone());
        let client_id = client.client_id.clone();
        self.clients.push(client);
        if duplicate {
            return Err(vec![ClientConfigError::DuplicateClientId(client_id)]);
        }
        Ok(())
    }

    pub fn into_vec(self) -> Vec<OidcClient> {
        self.clients
    }

    pub fn as_slice(&self) -> &[OidcClient] {
        &self.clients
    }
}

/// Checks one client on its own.
pub fn client(
    input: ClientInput,
    warnings: &mut Vec<String>,
) -> Result<OidcClient, Vec<ClientConfigError>> {
    use ClientConfigError::*;
    let name = input.name;
    let mut problems: Vec<ClientConfigError> = input
        .keys
        .iter()
        .filter(|k| !KEYS.contains(&k.as_str()) && !CAS_KEYS.contains(&k.as_str()))
        .map(|k| ForeignKey {
            name: name.clone(),
            key: k.clone(),
        })
        .collect();
    let Some(client_id) = input.client_id else {
        problems.push(MissingClientId { name });
        return Err(problems);
    };
    if client_id.is_empty() || client_id.len() > 255 || client_id.contains(':') {
        problems.push(BadClientId { name: name.clone() });
    }
    if input.keys.iter().any(|k| CAS_KEYS.contains(&k.as_str())) {
        problems.push(CasKeys { name: name.clone() });
    }
    if input.redirect_uris.is_empty() {
        problems.push(NoRedirectUri { name: name.clone() });
    }
    for uri in input
        .redirect_uris
        .iter()
        .chain(&input.post_logout_redirect_uris)
        .chain(input.backchannel_logout_uri.as_ref())
    {
        match Url::parse(uri) {
            Ok(u) if matches!(u.scheme(), "https" | "http") && u.fragment().is_none() => {
                if u.scheme() == "http"
                    && !matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
                {
                    warnings.push(format!(
                        "service {name:?}: {uri} is plain http: codes and tokens travel unprotected"
                    ));
                }
            }
            _ => problems.push(BadUri {
                name: name.clone(),
                uri: uri.clone(),
            }),
        }
    }
    let assertion_keys = advanced_keys(
        input.client_secret.is_some(),
        input.token_endpoint_auth_method.as_deref(),
        input.jwks.as_deref(),
        input.jwks_uri.as_deref(),
        &mut problems,
    );
    for origin in &input.allowed_origins {
        if crate::cors::parse_origin(origin).is_none() {
            problems.push(BadOrigin(origin.clone()));
        }
    }
    let confidential = input.client_secret.is_some() || assertion_keys.is_some();
    let grant_types = match &input.grant_types {
        None => GrantTypes {
            authorization_code: true,
            refresh_token: true,
            client_credentials: confidential,
            device_code: false,
            token_exchange: false,
        },
        Some(list) => {
            let mut g = GrantTypes {
                authorization_code: false,
                refresh_token: false,
                client_credentials: false,
                device_code: false,
                token_exchange: false,
            };
            for t in list {
                match t.as_str() {
                    "authorization_code" => g.authorization_code = true,
                    "refresh_token" => g.refresh_token = true,
                    "client_credentials" if confidential => g.client_credentials = true,
                    "client_credentials" => problems.push(ClientCredentialsWithoutSecret),
                    crate::device::GRANT_TYPE => g.device_code = true,
                    crate::exchange::GRANT_TYPE if confidential => g.token_exchange = true,
                    crate::exchange::GRANT_TYPE => problems.push(TokenExchangeWithoutSecret),
                    other => problems.push(UnknownGrantType(other.to_owned())),
                }
            }
            g
        }
    };
    let subject = match input.subject.as_deref() {
        None | Some("public") => Subject::Public,
        Some("pairwise") => Subject::Pairwise {
            sector: input
                .redirect_uris
                .first()
                .and_then(|u| Url::parse(u).ok())
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
        },
        Some(other) => {
            problems.push(BadSubject(other.to_owned()));
            Subject::Public
        }
    };
    let mut alg = |value: Option<String>, key: &'static str, default| match value {
        None => default,
        Some(value) => Algorithm::parse(&value).unwrap_or_else(|| {
            problems.push(BadAlgorithm { key, value });
            default
        }),
    };
    let id_token_alg = alg(
        input.id_token_signing_alg,
        "id_token_signing_alg",
        Algorithm::RS256,
    );
    let access_token_alg = alg(
        input.access_token_signing_alg,
        "access_token_signing_alg",
        Algorithm::ES256,
    );
    let mfa = input.mfa.as_deref().and_then(|word| {
        let policy = castellan_core::MfaPolicy::parse(word);
        if policy.is_none() {
            problems.push(BadMfa(word.to_owned()));
        }
        policy
    });
    if !problems.is_empty() {
        return Err(problems);
    }
    let scopes = if input.scopes.is_empty() {
        vec!["openid".into(), "profile".into(), "email".into()]
    } else {
        input.scopes
    };
    Ok(OidcClient {
        name,
        client_id,
        secret: input.client_secret,
        redirect_uris: input.redirect_uris,
        post_logout_redirect_uris: input.post_logout_redirect_uris,
        scopes,
        release: input.release,
        backchannel_logout_uri: input.backchannel_logout_uri,
        grant_types,
        subject,
        id_token_alg,
        access_token_alg,
        resource_servers: input.resource_servers,
        mfa,
        consent: input.consent,
        dpop_bound_access_tokens: input.dpop_bound_access_tokens,
        token_exchange_from: input.token_exchange_from,
        assertion_keys,
        require_par: input.require_pushed_authorization_requests.unwrap_or(false),
        allowed_origins: input.allowed_origins,
        id_token_on_refresh: input.id_token_on_refresh.unwrap_or(false),
    })
}

/// `token_endpoint_auth_method` against the credentials given: a secret
/// for the `client_secret_*` methods, `jwks` or `jwks_uri` (and no secret)
/// for `private_key_jwt`, nothing for `none`. The keys of a private_key_jwt
/// client.
fn advanced_keys(
    secret: bool,
    method: Option<&str>,
    jwks: Option<&str>,
    jwks_uri: Option<&str>,
    problems: &mut Vec<ClientConfigError>,
) -> Option<crate::client_assertion::ClientKeys> {
    use crate::client_assertion::{ClientKeys, KeysConfigError};
    let fits = match method {
        None => true,
        Some("client_secret_basic" | "client_secret_post") => secret,
        Some("private_key_jwt" | "none") => !secret,
        Some(_) => false,
    };
    if !fits {
        problems.push(ClientConfigError::BadAuthMethod(
            method.unwrap_or_default().to_owned(),
        ));
    }
    if method != Some("private_key_jwt") {
        if jwks.is_some() || jwks_uri.is_some() {
            problems.push(ClientConfigError::BadAuthMethod(
                "jwks and jwks_uri are for private_key_jwt".into(),
            ));
        }
        return None;
    }
    match ClientKeys::parse(jwks, jwks_uri) {
        Ok(keys) => Some(keys),
        Err(error) => {
            let key = match error {
                KeysConfigError::BadJwksUri => "jwks_uri",
                KeysConfigError::Missing => "token_endpoint_auth_method",
                _ => "jwks",
            };
            problems.push(ClientConfigError::BadKeys { key, error });
            None
        }
    }
}

/// The `[oidc]` section, durations already read.
#[derive(Debug, Clone, Default)]
pub struct ProviderInput {
    pub code_ttl: Option<Duration>,
    pub access_token_ttl: Option<Duration>,
    pub id_token_ttl: Option<Duration>,
    pub refresh_token_ttl: Option<Duration>,
    pub offline_token_ttl: Option<Duration>,
    /// Secret mixed into pairwise subjects; required when a client uses them.
    pub pairwise_salt: Option<String>,
    /// When set, DPoP proofs must carry a server nonce derived from it.
    pub dpop_nonce_secret: Option<String>,
    pub device_code_ttl: Option<Duration>,
}

/// The `[oidc]` section, checked, with its defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderConfig {
    pub code_ttl: Duration,
    pub access_token_ttl: Duration,
    pub id_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub offline_token_ttl: Duration,
    pub pairwise_salt: String,
    pub dpop_nonce_secret: Option<String>,
    pub device_code_ttl: Duration,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            code_ttl: MAX_CODE_TTL,
            access_token_ttl: Duration::from_secs(300),
            id_token_ttl: Duration::from_secs(300),
            refresh_token_ttl: Duration::from_secs(8 * 3600),
            offline_token_ttl: Duration::from_secs(30 * 86_400),
            pairwise_salt: String::new(),
            dpop_nonce_secret: None,
            device_code_ttl: crate::device::DEVICE_CODE_TTL,
        }
    }
}

/// Codes are short-lived (RFC 6749 §4.1.2 recommends 10 minutes at most;
/// one is plenty for a redirect).
const MAX_CODE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderConfigError {
    #[error("oidc.code_ttl: at most 60s (codes are short-lived)")]
    CodeTtlTooLong,
    #[error("oidc.pairwise_salt: use at least 16 random characters")]
    ShortPairwiseSalt,
    #[error("a client uses subject = \"pairwise\": set oidc.pairwise_salt (a secret shared by every node)")]
    MissingPairwiseSalt,
    #[error("oidc.dpop_nonce_secret: use at least 32 random characters")]
    ShortDpopNonceSecret,
}

impl ProviderConfigError {
    /// The key of the `[oidc]` section whose value is wrong; `None`: the
    /// configuration as a whole.
    pub fn key(&self) -> Option<&str> {
        match self {
            ProviderConfigError::CodeTtlTooLong => Some("code_ttl"),
            ProviderConfigError::ShortPairwiseSalt => Some("pairwise_salt"),
            ProviderConfigError::MissingPairwiseSalt => None,
            ProviderConfigError::ShortDpopNonceSecret => Some("dpop_nonce_secret"),
        }
    }
}

/// Checks the `[oidc]` section against the registered clients. Warnings
/// (a resource server that is no client) go to `warnings`.
pub fn provider(
    input: ProviderInput,
    clients: &[OidcClient],
    warnings: &mut Vec<String>,
) -> Result<ProviderConfig, Vec<ProviderConfigError>> {
    let mut problems = Vec::new();
    let code_ttl = input.code_ttl.unwrap_or(MAX_CODE_TTL);
    if code_ttl > MAX_CODE_TTL {
        problems.push(ProviderConfigError::CodeTtlTooLong);
    }
    for c in clients {
        for rs in &c.resource_servers {
            if !clients.iter().any(|o| &o.client_id == rs) {
                warnings.push(format!(
                    "services: client {:?} names {rs:?} in resource_servers, and no client has that client_id",
                    c.client_id
                ));
            }
        }
    }
    let pairwise = clients
        .iter()
        .any(|c| matches!(c.subject, Subject::Pairwise { .. }));
    let pairwise_salt = match input.pairwise_salt {
        Some(s) if s.len() >= 16 => s,
        Some(_) => {
            problems.push(ProviderConfigError::ShortPairwiseSalt);
            String::new()
        }
        None => {
            if pairwise {
                problems.push(ProviderConfigError::MissingPairwiseSalt);
            }
            String::new()
        }
    };
    if input
        .dpop_nonce_secret
        .as_ref()
        .is_some_and(|s| s.len() < 32)
    {
        problems.push(ProviderConfigError::ShortDpopNonceSecret);
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let defaults = ProviderConfig::default();
    Ok(ProviderConfig {
        code_ttl,
        access_token_ttl: input.access_token_ttl.unwrap_or(defaults.access_token_ttl),
        id_token_ttl: input.id_token_ttl.unwrap_or(defaults.id_token_ttl),
        refresh_token_ttl: input
            .refresh_token_ttl
            .unwrap_or(defaults.refresh_token_ttl),
        offline_token_ttl: input
            .offline_token_ttl
            .unwrap_or(defaults.offline_token_ttl),
        pairwise_salt,
        dpop_nonce_secret: input.dpop_nonce_secret,
        device_code_ttl: input.device_code_ttl.unwrap_or(defaults.device_code_ttl),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(client_id: &str, extra_keys: &[&str]) -> ClientInput {
        ClientInput {
            name: client_id.into(),
            client_id: Some(client_id.into()),
            redirect_uris: vec![format!("https://{client_id}.example/cb")],
            keys: ["name", "protocol", "client_id", "redirect_uris"]
                .iter()
                .chain(extra_keys)
                .map(|k| k.to_string())
                .collect(),
            ..Default::default()
        }
    }

    fn errors(input: ClientInput) -> Vec<ClientConfigError> {
        client(input, &mut Vec::new()).unwrap_err()
    }

    #[test]
    fn a_public_client_gets_the_defaults() {
        let mut warnings = Vec::new();
        let c = client(input("wiki", &[]), &mut warnings).unwrap();
        assert!(c.is_public());
        assert!(c.grant_types.authorization_code && c.grant_types.refresh_token);
        assert!(!c.grant_types.client_credentials);
        assert_eq!(c.scopes, ["openid", "profile", "email"]);
        assert_eq!(c.subject, Subject::Public);
        assert_eq!(c.id_token_alg, Algorithm::RS256);
        assert_eq!(c.access_token_alg, Algorithm::ES256);
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn a_confidential_client_may_use_client_credentials() {
        let mut i = input("api", &["client_secret", "grant_types"]);
        i.client_secret = Some("s3cret".into());
        i.grant_types = Some(vec!["client_credentials".into()]);
        let c = client(i, &mut Vec::new()).unwrap();
        assert!(c.grant_types.client_credentials && !c.grant_types.authorization_code);
        let mut i = input("api", &["grant_types"]);
        i.grant_types = Some(vec!["client_credentials".into(), "implicit".into()]);
        let problems = errors(i);
        assert_eq!(
            problems,
            [
                ClientConfigError::ClientCredentialsWithoutSecret,
                ClientConfigError::UnknownGrantType("implicit".into())
            ]
        );
        assert!(problems.iter().all(|p| p.key() == Some("grant_types")));
    }

    #[test]
    fn keys_of_another_protocol_are_errors() {
        for key in [
            "logout",
            "metadata",
            "name_id_format",
            "sign",
            "encrypt_assertions",
        ] {
            let problems = errors(input("wiki", &[key]));
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert_eq!(problems[0].key(), Some(key));
            assert_eq!(
                problems[0].to_string(),
                format!("service \"wiki\": {key} is not a key of an OIDC client")
            );
        }
        // The CAS keys keep their message, once for both, at the client.
        let problems = errors(input("wiki", &["service", "proxy_callback"]));
        assert_eq!(
            problems,
            [ClientConfigError::CasKeys {
                name: "wiki".into()
            }]
        );
        assert_eq!(problems[0].key(), None);
    }

    #[test]
    fn client_ids_and_uris_are_checked() {
        let mut i = input("c", &[]);
        i.client_id = None;
        assert_eq!(
            errors(i)[0].to_string(),
            "service \"c\": client_id is required for protocol \"oidc\""
        );
        let mut i = input("a:b", &["post_logout_redirect_uris"]);
        i.redirect_uris = vec!["/relative".into()];
        i.post_logout_redirect_uris = vec!["https://a.example/#bye".into()];
        let all: Vec<_> = errors(i).iter().map(ToString::to_string).collect();
        assert_eq!(
            all,
            [
                "service \"a:b\": client_id must be 1 to 255 characters without ':'",
                "service \"a:b\": \"/relative\" is not an absolute http(s) URI without a fragment",
                "service \"a:b\": \"https://a.example/#bye\" is not an absolute http(s) URI without a fragment",
            ]
        );
        let mut i = input("d", &[]);
        i.redirect_uris.clear();
        assert_eq!(
            errors(i),
            [ClientConfigError::NoRedirectUri { name: "d".into() }]
        );
    }

    #[test]
    fn plain_http_is_warned_about_except_on_loopback() {
        let mut warnings = Vec::new();
        let mut i = input("w", &[]);
        i.redirect_uris = vec![
            "http://w.example/cb".into(),
            "http://127.0.0.1:8000/cb".into(),
        ];
        client(i, &mut warnings).unwrap();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("http://w.example/cb is plain http"));
    }

    #[test]
    fn subject_and_algorithms_are_checked() {
        let mut i = input("p", &["subject"]);
        i.subject = Some("pairwise".into());
        let c = client(i, &mut Vec::new()).unwrap();
        assert_eq!(
            c.subject,
            Subject::Pairwise {
                sector: "p.example".into()
            }
        );
        let mut i = input("p", &["subject", "id_token_signing_alg"]);
        i.subject = Some("secret".into());
        i.id_token_signing_alg = Some("HS256".into());
        let problems = errors(i);
        let keys: Vec<_> = problems.iter().map(ClientConfigError::key).collect();
        assert_eq!(keys, [Some("subject"), Some("id_token_signing_alg")]);
        assert_eq!(
            problems[1].to_string(),
            "services.id_token_signing_alg: \"HS256\" is not RS256 or ES256"
        );
    }

    #[test]
    fn auth_methods_keys_and_origins_are_checked() {
        let jwks = r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#;
        let mut i = input("pk", &["token_endpoint_auth_method", "jwks", "grant_types"]);
        i.token_endpoint_auth_method = Some("private_key_jwt".into());
        i.jwks = Some(jwks.into());
        i.grant_types = Some(vec!["client_credentials".into()]);
        let c = client(i, &mut Vec::new()).unwrap();
        assert!(!c.is_public(), "a private_key_jwt client is confidential");
        assert!(c.grant_types.client_credentials);
        // No keys, keys and a secret, keys without the method.
        let mut i = input("pk", &["token_endpoint_auth_method"]);
        i.token_endpoint_auth_method = Some("private_key_jwt".into());
        assert_eq!(errors(i)[0].key(), Some("token_endpoint_auth_method"));
        let mut i = input(
            "pk",
            &["token_endpoint_auth_method", "jwks", "client_secret"],
        );
        i.token_endpoint_auth_method = Some("private_key_jwt".into());
        i.jwks = Some(jwks.into());
        i.client_secret = Some("s".into());
        assert!(!errors(i).is_empty());
        let mut i = input("pk", &["jwks_uri"]);
        i.jwks_uri = Some("https://k.example/jwks".into());
        assert!(!errors(i).is_empty());
        let mut i = input("pk", &["token_endpoint_auth_method", "jwks"]);
        i.token_endpoint_auth_method = Some("private_key_jwt".into());
        i.jwks = Some("{\"keys\":[]}".into());
        assert_eq!(errors(i)[0].key(), Some("jwks"));
        let mut i = input("spa", &["allowed_origins"]);
        i.allowed_origins = vec!["https://ok.example".into(), "https://bad.example/".into()];
        let problems = errors(i);
        assert_eq!(
            problems,
            [ClientConfigError::BadOrigin("https://bad.example/".into())]
        );
        assert_eq!(problems[0].key(), Some("allowed_origins"));
    }

    #[test]
    fn a_client_id_is_registered_once() {
        let mut clients = Clients::default();
        clients.add(input("a", &[]), &mut Vec::new()).unwrap();
        let mut again = input("a", &[]);
        again.name = "b".into();
        let problems = clients.add(again, &mut Vec::new()).unwrap_err();
        assert_eq!(problems, [ClientConfigError::DuplicateClientId("a".into())]);
        assert_eq!(
            problems[0].to_string(),
            "services.client_id: \"a\" is used twice"
        );
        assert_eq!(clients.as_slice().len(), 2);
    }

    #[test]
    fn the_provider_section_has_defaults_and_limits() {
        let p = provider(ProviderInput::default(), &[], &mut Vec::new()).unwrap();
        assert_eq!(p.code_ttl, Duration::from_secs(60));
        assert_eq!(p.access_token_ttl, Duration::from_secs(300));
        assert_eq!(p.offline_token_ttl, Duration::from_secs(30 * 86_400));
        let long = ProviderInput {
            code_ttl: Some(Duration::from_secs(300)),
            pairwise_salt: Some("short".into()),
            ..Default::default()
        };
        let problems = provider(long, &[], &mut Vec::new()).unwrap_err();
        let keys: Vec<_> = problems.iter().map(ProviderConfigError::key).collect();
        assert_eq!(keys, [Some("code_ttl"), Some("pairwise_salt")]);
    }

    #[test]
    fn pairwise_subjects_need_a_salt_and_resource_servers_are_clients() {
        let mut pw = input("pw", &["subject", "resource_servers"]);
        pw.subject = Some("pairwise".into());
        pw.resource_servers = vec!["api".into(), "pw".into()];
        let clients = [client(pw, &mut Vec::new()).unwrap()];
        let mut warnings = Vec::new();
        let problems = provider(ProviderInput::default(), &clients, &mut warnings).unwrap_err();
        assert_eq!(problems, [ProviderConfigError::MissingPairwiseSalt]);
        assert_eq!(problems[0].key(), None);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("names \"api\" in resource_servers"));
        let salted = ProviderInput {
            pairwise_salt: Some("0123456789abcdef".into()),
            ..Default::default()
        };
        let p = provider(salted, &clients, &mut Vec::new()).unwrap();
        assert_eq!(p.pairwise_salt, "0123456789abcdef");
    }
}
