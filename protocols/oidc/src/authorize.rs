//! Checking an authorization request (RFC 6749 §4.1.1, OIDC Core §3.1.2).
//!
//! An error goes back to the client's redirect_uri only once the client and
//! the redirect_uri are known to be valid; before that it is shown to the
//! user: never an open redirect.

use crate::client::{ClientRegistry, OidcClient};
use crate::error::{ErrorCode, OAuthError};
use crate::records::{PendingRequest, ResponseMode};
use std::collections::HashMap;

/// Longest value accepted for any authorization request parameter.
pub const MAX_PARAM_LEN: usize = 2048;
/// What an anonymous client makes the server keep for the length of a login
/// is bounded: clients use 22-64 characters of state and nonce (a random
/// value or its hash); these leave room for a client that packs a little more.
pub const MAX_STATE_LEN: usize = 512;
pub const MAX_NONCE_LEN: usize = 256;
pub const MAX_LOGIN_HINT_LEN: usize = 256;
const MAX_SCOPES: usize = 32;

#[derive(Debug)]
pub enum Rejection {
    /// Shown to the user: the client or the redirect_uri cannot be trusted.
    Page(String),
    /// Sent to the client's redirect_uri.
    Redirect {
        redirect_uri: String,
        response_mode: ResponseMode,
        state: Option<String>,
        error: OAuthError,
    },
}

/// A checked request, and the client it is for.
pub struct Checked<'a> {
    pub client: &'a OidcClient,
    pub request: PendingRequest,
    pub login_hint: Option<String>,
}

fn is_pkce_challenge(s: &str) -> bool {
    // base64url of a SHA-256 digest: 43 characters (RFC 7636 §4.2).
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn check<'a>(
    clients: &'a ClientRegistry,
    params: &HashMap<String, String>,
) -> Result<Checked<'a>, Rejection> {
    if let Some((name, _)) = params.iter().find(|(_, v)| v.len() > MAX_PARAM_LEN) {
        return Err(Rejection::Page(format!(
            "The parameter {name} is too long."
        )));
    }
    let get = |name: &str| {
        params
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let client_id = get("client_id").ok_or_else(|| {
        Rejection::Page("The request names no client (client_id is missing).".into())
    })?;
    let client = clients
        .get(client_id)
        .ok_or_else(|| Rejection::Page("The application is not registered here.".into()))?;
    let redirect_uri = match get("redirect_uri") {
        Some(uri) if client.allows_redirect(uri) => uri.to_owned(),
        Some(_) => {
            return Err(Rejection::Page(
                "The redirect_uri is not registered for this application.".into(),
            ))
        }
        // OAuth 2.0 allows leaving it out when only one is registered.
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => {
            return Err(Rejection::Page(
                "The request has no redirect_uri, and the application registered several.".into(),
            ))
        }
    };
    let response_mode = match get("response_mode") {
        None | Some("query") => ResponseMode::Query,
        Some("form_post") => ResponseMode::FormPost,
        Some(_) => ResponseMode::Query,
    };
    let state = match get("state") {
        // Not echoed: a value this long is not one the client will check.
        Some(s) if s.len() > MAX_STATE_LEN => {
            return Err(Rejection::Redirect {
                redirect_uri,
                response_mode,
                state: None,
                error: OAuthError::new(
                    ErrorCode::InvalidRequest,
                    format!("state is longer than {MAX_STATE_LEN} characters"),
                ),
            })
        }
        s => s.map(str::to_owned),
    };
    let reject = |error: ErrorCode, description: &str| Rejection::Redirect {
        redirect_uri: redirect_uri.clone(),
        response_mode: response_mode.clone(),
        state: state.clone(),
        error: OAuthError::new(error, description),
    };
    if let Some(mode) = get("response_mode") {
        if mode != "query" && mode != "form_post" {
            return Err(reject(
                ErrorCode::InvalidRequest,
                "response_mode must be query or form_post",
            ));
        }
    }
    if get("request").is_some() {
        return Err(reject(
            ErrorCode::RequestNotSupported,
            "request objects are not supported",
        ));
    }
    if get("request_uri").is_some() {
        return Err(reject(
            ErrorCode::RequestUriNotSupported,
            "request_uri is not supported",
        ));
    }
    match get("response_type") {
        Some("code") => {}
        None => {
            return Err(reject(
                ErrorCode::InvalidRequest,
                "response_type is missing",
            ))
        }
        Some(_) => {
            return Err(reject(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ))
        }
    }
    if !client.grant_types.authorization_code {
        return Err(reject(
            ErrorCode::UnauthorizedClient,
            "the client may not use the authorization code flow",
        ));
    }
    let mut scopes: Vec<String> = Vec::new();
    for s in get("scope")
        .unwrap_or("")
        .split(' ')
        .filter(|s| !s.is_empty())
    {
        if !scopes.iter().any(|k| k == s) {
            scopes.push(s.to_owned());
        }
    }
    if scopes.is_empty() {
        return Err(reject(ErrorCode::InvalidScope, "scope is missing"));
    }
    if scopes.len() > MAX_SCOPES {
        return Err(reject(ErrorCode::InvalidScope, "too many scopes"));
    }
    if let Some(s) = scopes.iter().find(|s| !client.allows_scope(s)) {
        return Err(reject(
            ErrorCode::InvalidScope,
            &format!("scope {s} is not allowed for this client"),
        ));
    }
    let code_challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (Some(c), Some("S256")) if is_pkce_challenge(c) => Some(c.to_owned()),
        (Some(_), Some("S256")) => {
            return Err(reject(
                ErrorCode::InvalidRequest,
                "malformed code_challenge",
            ))
        }
        (Some(_), None) | (Some(_), Some("plain")) | (None, Some("plain")) => {
            return Err(reject(
                ErrorCode::InvalidRequest,
                "code_challenge_method must be S256 (plain is refused)",
            ))
        }
        (_, Some(_)) => {
            return Err(reject(
                ErrorCode::InvalidRequest,
                "unsupported code_challenge_method",
            ))
        }
        (None, None) if client.is_public() => {
            return Err(reject(
                ErrorCode::InvalidRequest,
                "PKCE (code_challenge with S256) is required for public clients",
            ))
        }
        (None, None) => None,
    };
    let prompts: Vec<&str> = get("prompt")
        .unwrap_or("")
        .split(' ')
        .filter(|p| !p.is_empty())
        .collect();
    if prompts.contains(&"none") && prompts.len() > 1 {
        return Err(reject(
            ErrorCode::InvalidRequest,
            "prompt=none cannot be combined with other values",
        ));
    }
    if let Some(p) = prompts
        .iter()
        .find(|p| !matches!(**p, "none" | "login" | "consent" | "select_account"))
    {
        return Err(reject(
            ErrorCode::InvalidRequest,
            &format!("unknown prompt value {p}"),
        ));
    }
    if get("nonce").is_some_and(|n| n.len() > MAX_NONCE_LEN) {
        return Err(reject(
            ErrorCode::InvalidRequest,
            &format!("nonce is longer than {MAX_NONCE_LEN} characters"),
        ));
    }
    if get("login_hint").is_some_and(|h| h.len() > MAX_LOGIN_HINT_LEN) {
        return Err(reject(
            ErrorCode::InvalidRequest,
            &format!("login_hint is longer than {MAX_LOGIN_HINT_LEN} characters"),
        ));
    }
    let max_age = match get("max_age") {
        None => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            reject(
                ErrorCode::InvalidRequest,
                "max_age must be a number of seconds",
            )
        })?),
    };
    Ok(Checked {
        client,
        login_hint: get("login_hint").map(str::to_owned),
        request: PendingRequest {
            client_id: client.client_id.clone(),
            redirect_uri,
            scopes,
            state,
            nonce: get("nonce").map(str::to_owned),
            code_challenge,
            response_mode,
            prompt_none: prompts.contains(&"none"),
            renew: prompts.contains(&"login"),
            max_age,
        },
    })
}

/// RFC 7636 §4.6: BASE64URL(SHA256(verifier)) equals the challenge, by
/// openidconnect's PKCE type; compared in constant time.
pub fn pkce_matches(challenge: &str, verifier: &str) -> bool {
    use subtle::ConstantTimeEq;
    let ok_len = (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if !ok_len {
        return false;
    }
    let computed = openidconnect::PkceCodeChallenge::from_code_verifier_sha256(
        &openidconnect::PkceCodeVerifier::new(verifier.to_owned()),
    );
    computed
        .as_str()
        .as_bytes()
        .ct_eq(challenge.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::client;

    fn registry() -> ClientRegistry {
        ClientRegistry::new(vec![client("conf", Some("s")), client("pub", None)])
    }

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn base(client: &str) -> Vec<(&str, &str)> {
        vec![
            ("client_id", client),
            ("redirect_uri", "https://rp.example/cb"),
            ("response_type", "code"),
            ("scope", "openid profile"),
            ("state", "S"),
        ]
    }

    fn error_of(r: Result<Checked<'_>, Rejection>) -> String {
        match r {
            Err(Rejection::Redirect { error, .. }) => error.error.as_str().into(),
            Err(Rejection::Page(p)) => format!("page: {p}"),
            Ok(_) => "ok".into(),
        }
    }

    #[test]
    fn unknown_client_and_foreign_redirect_uri_never_redirect() {
        let r = registry();
        let mut p = base("nobody");
        assert!(error_of(check(&r, &params(&p))).starts_with("page:"));
        p = base("conf");
        p[1] = ("redirect_uri", "https://evil.example/cb");
        assert!(error_of(check(&r, &params(&p))).starts_with("page:"));
        // A prefix of a registered URI is not the URI.
        p[1] = ("redirect_uri", "https://rp.example/c");
        assert!(error_of(check(&r, &params(&p))).starts_with("page:"));
    }

    #[test]
    fn what_a_client_makes_the_server_keep_is_bounded() {
        let r = registry();
        let long_state = "s".repeat(MAX_STATE_LEN + 1);
        let mut p = base("conf");
        p[4] = ("state", &long_state);
        match check(&r, &params(&p)) {
            Err(Rejection::Redirect { state, error, .. }) => {
                assert_eq!(state, None, "not echoed");
                assert_eq!(error.error.as_str(), "invalid_request");
            }
            _ => panic!("refused to the client"),
        }
        let fits = "s".repeat(MAX_STATE_LEN);
        p[4] = ("state", &fits);
        assert_eq!(error_of(check(&r, &params(&p))), "ok");
        let long_nonce = "n".repeat(MAX_NONCE_LEN + 1);
        p.push(("nonce", &long_nonce));
        assert_eq!(error_of(check(&r, &params(&p))), "invalid_request");
        p.pop();
        let long_hint = "h".repeat(MAX_LOGIN_HINT_LEN + 1);
        p.push(("login_hint", &long_hint));
        assert_eq!(error_of(check(&r, &params(&p))), "invalid_request");
    }

    #[test]
    fn public_clients_need_s256_pkce() {
        let r = registry();
        assert_eq!(
            error_of(check(&r, &params(&base("pub")))),
            "invalid_request"
        );
        let mut p = base("pub");
        p.push(("code_challenge", CHALLENGE));
        p.push(("code_challenge_method", "plain"));
        assert_eq!(error_of(check(&r, &params(&p))), "invalid_request");
        p.pop();
        p.push(("code_challenge_method", "S256"));
        assert_eq!(error_of(check(&r, &params(&p))), "ok");
    }

    #[test]
    fn scopes_and_prompts_are_checked() {
        let r = registry();
        let mut p = base("conf");
        p[3] = ("scope", "openid admin");
        assert_eq!(error_of(check(&r, &params(&p))), "invalid_scope");
        p[3] = ("scope", "openid");
        p.push(("prompt", "none login"));
        assert_eq!(error_of(check(&r, &params(&p))), "invalid_request");
        p.pop();
        p.push(("response_type", "token"));
        let mut q = params(&p);
        q.insert("response_type".into(), "token".into());
        assert_eq!(error_of(check(&r, &q)), "unsupported_response_type");
    }

    #[test]
    fn pkce_verifier_matches_rfc_7636_example() {
        assert!(pkce_matches(
            CHALLENGE,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        ));
        assert!(!pkce_matches(
            CHALLENGE,
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK"
        ));
        assert!(!pkce_matches(CHALLENGE, "short"));
    }
}
