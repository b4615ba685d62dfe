//! The OpenID Connect provider's endpoints under `/oidc`, built as a client
//! of the CAS core: `/oidc/authorize` keeps the checked request in the store
//! and sends the browser to `/login` with its own callback as the service;
//! `/oidc/callback` validates the service ticket through the engine (the
//! semantics of `/p3/serviceValidate`) and answers the client with a code.

use crate::app::SharedState;
use crate::client_address::ClientAddress;
use crate::config::OidcSettings;
use crate::cookies;
use crate::metrics::Metrics;
use crate::pages::{render, PostRedirectPage};
use crate::respond::{error_page as page, redirect, unavailable};
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_core::ids::{new_ticket_id, session_tag};
use castellan_core::{
    EngineError, LogoutMode, LogoutNotification, RegisteredService, ValidationRequest,
};
use castellan_oidc::authorize::{self, pkce_matches, Rejection};
use castellan_oidc::client::ClientCredentials;
use castellan_oidc::records::{
    code_key, grant_key, refresh_key, request_key, revoked_key, Code, CodeRecord, Grant,
    PendingRequest, Records, Redemption, RefreshRecord, RefreshToken, ResponseMode,
};
use castellan_oidc::tokens::{
    self, at_hash, scope_claims, sign, subject, AccessTokenClaims, ACCESS_TOKEN_TYPE,
    BACKCHANNEL_LOGOUT_EVENT, LOGOUT_TOKEN_TYPE,
};
use castellan_oidc::{ClientRegistry, ErrorCode, Keyring, OAuthError, OidcClient};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest token accepted in any parameter or header.
const MAX_TOKEN_LEN: usize = 8 * 1024;

pub struct Provider {
    pub clients: ClientRegistry,
    pub settings: OidcSettings,
    /// `{public_url}/oidc`.
    pub issuer: String,
    /// `{public_url}/oidc/callback?client_id=`: every callback service URL
    /// starts with it.
    callback_prefix: String,
    discovery: String,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl Provider {
    pub fn new(settings: OidcSettings, public_url: &str) -> anyhow::Result<Self> {
        let base = public_url.trim_end_matches('/');
        let issuer = format!("{base}/oidc");
        // Verified TLS with the system roots and SSL_CERT_FILE, as for CAS
        // single logout; plain http is allowed (loopback relying parties).
        let http = castellan_cas::proxy_callback::http_client(false, Duration::from_secs(5))?;
        Ok(Self {
            clients: ClientRegistry::new(settings.clients.clone()),
            discovery: discovery(&issuer)?,
            callback_prefix: format!("{issuer}/callback?client_id="),
            issuer,
            settings,
            http,
        })
    }

    /// The service URL a login for `client_id` returns to.
    fn callback(&self, client_id: &str, request_id: &str) -> String {
        format!(
            "{}{}&req={request_id}",
            self.callback_prefix,
            enc(client_id)
        )
    }

    /// The implicit CAS registrations of the callbacks: one per client, so
    /// that the core releases that client's attributes and records its
    /// logout mode. They come first: a broad CAS pattern must not capture
    /// them.
    pub fn callback_services(&self) -> anyhow::Result<Vec<RegisteredService>> {
        self.clients
            .iter()
            .map(|c| {
                let pattern = format!(
                    "{}[A-Za-z0-9-]+",
                    regex::escape(&format!(
                        "{}{}&req=",
                        self.callback_prefix,
                        enc(&c.client_id)
                    ))
                );
                let logout = if c.backchannel_logout_uri.is_some() {
                    LogoutMode::BackChannel
                } else {
                    LogoutMode::None
                };
                Ok(RegisteredService::new(
                    c.name.clone(),
                    &pattern,
                    c.release.clone(),
                    None,
                    logout,
                )?
                .internal())
            })
            .collect()
    }

    /// How the login page names an OIDC client: by its name and the host
    /// it sends the user back to (the callback's host is ours).
    pub fn display_name(&self, service: &str) -> Option<String> {
        let client = self.client_of_callback(service)?;
        let host = client
            .redirect_uris
            .first()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_owned));
        Some(match host {
            Some(h) => format!("{} ({h})", client.name),
            None => client.name.clone(),
        })
    }

    /// The client id of a callback service URL.
    pub fn party(&self, service: &str) -> Option<String> {
        self.client_of_callback(service)
            .map(|c| c.client_id.clone())
    }

    /// The client a callback service URL belongs to.
    fn client_of_callback(&self, service: &str) -> Option<&OidcClient> {
        let rest = service.strip_prefix(&self.callback_prefix)?;
        let (client, _) = rest.split_once("&req=")?;
        let client = url::form_urlencoded::parse(format!("c={client}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())?;
        self.clients.get(&client)
    }
}

/// OpenID Connect Discovery 1.0 metadata, built with openidconnect's types.
fn discovery(issuer: &str) -> anyhow::Result<String> {
    use openidconnect::core::{
        CoreAuthDisplay, CoreClaimName, CoreClaimType, CoreClientAuthMethod, CoreGrantType,
        CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJweKeyManagementAlgorithm,
        CoreJwsSigningAlgorithm, CoreResponseMode, CoreResponseType, CoreSubjectIdentifierType,
    };
    use openidconnect::{
        AdditionalProviderMetadata, AuthUrl, IssuerUrl, JsonWebKeySetUrl, ProviderMetadata,
        ResponseTypes, Scope, TokenUrl, UserInfoUrl,
    };
    #[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
    struct Extra {
        introspection_endpoint: String,
        revocation_endpoint: String,
        end_session_endpoint: String,
        code_challenge_methods_supported: Vec<String>,
        introspection_endpoint_auth_methods_supported: Vec<String>,
        revocation_endpoint_auth_methods_supported: Vec<String>,
        backchannel_logout_supported: bool,
        backchannel_logout_session_supported: bool,
        authorization_response_iss_parameter_supported: bool,
        request_parameter_supported: bool,
        request_uri_parameter_supported: bool,
    }
    impl AdditionalProviderMetadata for Extra {}
    type Metadata = ProviderMetadata<
        Extra,
        CoreAuthDisplay,
        CoreClientAuthMethod,
        CoreClaimName,
        CoreClaimType,
        CoreGrantType,
        CoreJweContentEncryptionAlgorithm,
        CoreJweKeyManagementAlgorithm,
        CoreJsonWebKey,
        CoreResponseMode,
        CoreResponseType,
        CoreSubjectIdentifierType,
    >;
    let secret_methods = vec![
        "client_secret_basic".to_owned(),
        "client_secret_post".to_owned(),
    ];
    let metadata = Metadata::new(
        IssuerUrl::new(issuer.to_owned())?,
        AuthUrl::new(format!("{issuer}/authorize"))?,
        JsonWebKeySetUrl::new(format!("{issuer}/jwks"))?,
        vec![ResponseTypes::new(vec![CoreResponseType::Code])],
        vec![
            CoreSubjectIdentifierType::Public,
            CoreSubjectIdentifierType::Pairwise,
        ],
        vec![
            CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
            CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        ],
        Extra {
            introspection_endpoint: format!("{issuer}/introspect"),
            revocation_endpoint: format!("{issuer}/revoke"),
            end_session_endpoint: format!("{issuer}/logout"),
            code_challenge_methods_supported: vec!["S256".into()],
            introspection_endpoint_auth_methods_supported: secret_methods.clone(),
            revocation_endpoint_auth_methods_supported: secret_methods,
            backchannel_logout_supported: true,
            backchannel_logout_session_supported: true,
            authorization_response_iss_parameter_supported: true,
            request_parameter_supported: false,
            request_uri_parameter_supported: false,
        },
    )
    .set_token_endpoint(Some(TokenUrl::new(format!("{issuer}/token"))?))
    .set_userinfo_endpoint(Some(UserInfoUrl::new(format!("{issuer}/userinfo"))?))
    .set_scopes_supported(Some(
        ["openid", "profile", "email", "phone", "offline_access"]
            .into_iter()
            .map(|s| Scope::new(s.into()))
            .collect(),
    ))
    .set_response_modes_supported(Some(vec![
        CoreResponseMode::Query,
        CoreResponseMode::FormPost,
    ]))
    .set_grant_types_supported(Some(vec![
        CoreGrantType::AuthorizationCode,
        CoreGrantType::RefreshToken,
        CoreGrantType::ClientCredentials,
    ]))
    .set_token_endpoint_auth_methods_supported(Some(vec![
        CoreClientAuthMethod::ClientSecretBasic,
        CoreClientAuthMethod::ClientSecretPost,
        CoreClientAuthMethod::None,
    ]))
    .set_claims_supported(Some(
        [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "acr",
            "sid",
            "name",
            "given_name",
            "family_name",
            "preferred_username",
            "email",
            "email_verified",
            "phone_number",
        ]
        .into_iter()
        .map(|c| CoreClaimName::new(c.into()))
        .collect(),
    ))
    .set_acr_values_supported(Some(vec![
        openidconnect::AuthenticationContextClass::new("0".into()),
        openidconnect::AuthenticationContextClass::new("1".into()),
    ]));
    Ok(serde_json::to_string(&metadata)?)
}

// ------------------------------------------------------------------ helpers

fn unix_now(state: &SharedState) -> u64 {
    state.now() / 1000
}

fn keys(state: &SharedState) -> Result<Arc<Keyring>, OAuthError> {
    state.signing_keys.get().ok_or_else(|| {
        OAuthError::new(
            ErrorCode::TemporarilyUnavailable,
            "signing keys are not ready yet",
        )
    })
}

fn records(state: &SharedState) -> Records<'_> {
    Records {
        store: state.engine.store().as_ref(),
    }
}

/// Form or query parameters; a repeated parameter is an error (RFC 6749 §3.1).
fn parameters(raw: &[u8]) -> Result<HashMap<String, String>, OAuthError> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if out.insert(k.clone().into_owned(), v.into_owned()).is_some() {
            return Err(OAuthError::invalid_request(format!(
                "parameter {k} is repeated"
            )));
        }
    }
    Ok(out)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
            (header::PRAGMA, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// An error at the token, introspection or revocation endpoint (RFC 6749 §5.2).
fn oauth_error(state: &SharedState, e: &OAuthError) -> Response {
    if e.error == ErrorCode::TemporarilyUnavailable {
        Metrics::inc(&state.metrics.store_errors);
    }
    let status = StatusCode::from_u16(e.error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    let mut response = json_response(status, e.to_json());
    if e.error == ErrorCode::InvalidClient {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"castellan\""),
        );
    }
    response
}

/// Answers the client at its redirect_uri, by query or by form post.
fn to_client(
    state: &SharedState,
    redirect_uri: &str,
    mode: &ResponseMode,
    params: Vec<(&str, String)>,
) -> Response {
    match mode {
        ResponseMode::Query => {
            let mut location = redirect_uri.to_owned();
            let mut sep = if location.contains('?') { '&' } else { '?' };
            for (k, v) in &params {
                location.push(sep);
                location.push_str(k);
                location.push('=');
                location.push_str(&enc(v));
                sep = '&';
            }
            redirect(&location)
        }
        ResponseMode::FormPost => render(
            StatusCode::OK,
            &PostRedirectPage {
                prefix: state.prefix().to_owned(),
                action: redirect_uri.to_owned(),
                fields: params.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            },
        ),
    }
}

fn error_to_client(
    state: &SharedState,
    redirect_uri: &str,
    mode: &ResponseMode,
    client_state: Option<&str>,
    error: &OAuthError,
) -> Response {
    let mut params = vec![
        ("error", error.error.as_str().to_owned()),
        ("error_description", error.error_description.clone()),
    ];
    if let Some(s) = client_state {
        params.push(("state", s.to_owned()));
    }
    params.push(("iss", state.oidc.issuer.clone()));
    to_client(state, redirect_uri, mode, params)
}

// ------------------------------------------------------------ discovery

pub async fn configuration(State(state): State<SharedState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
        state.oidc.discovery.clone(),
    )
        .into_response()
}

// ------------------------------------------------------------ authorize

pub async fn authorize_get(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    authorize(
        &state,
        client,
        &headers,
        query.unwrap_or_default().as_bytes(),
    )
    .await
}

pub async fn authorize_post(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    authorize(&state, client, &headers, &body).await
}

async fn authorize(
    state: &SharedState,
    client: Option<IpAddr>,
    headers: &HeaderMap,
    raw: &[u8],
) -> Response {
    let params = match parameters(raw) {
        Ok(p) => p,
        Err(e) => {
            return page(
                state,
                StatusCode::BAD_REQUEST,
                "Invalid request",
                &e.error_description,
            )
        }
    };
    let checked = match authorize::check(&state.oidc.clients, &params) {
        Ok(c) => c,
        Err(Rejection::Page(message)) => {
            tracing::warn!(%message, "authorization request refused");
            return page(state, StatusCode::BAD_REQUEST, "Invalid request", &message);
        }
        Err(Rejection::Redirect {
            redirect_uri,
            response_mode,
            state: client_state,
            error,
        }) => {
            return error_to_client(
                state,
                &redirect_uri,
                &response_mode,
                client_state.as_deref(),
                &error,
            )
        }
    };
    let mut request = checked.request;
    // max_age: a session older than the client accepts means a new login.
    if let Some(max_age) = request.max_age {
        if let Some(id) = cookies::session_id(headers) {
            match state.engine.session(&id).await {
                Ok(Some(s)) => {
                    // max_age=0 is prompt=login (OIDC Core §3.1.2.1).
                    let age_ms = state.now().saturating_sub(s.authenticated_at);
                    if max_age == 0 || age_ms > max_age.saturating_mul(1000) {
                        request.renew = true;
                    }
                }
                Ok(None) => {}
                Err(e) => return unavailable(state, &e),
            }
        }
    }
    if request.prompt_none && request.renew {
        return error_to_client(
            state,
            &request.redirect_uri,
            &request.response_mode,
            request.state.as_deref(),
            &OAuthError::new(
                ErrorCode::LoginRequired,
                "a new login is required, and prompt=none forbids asking",
            ),
        );
    }
    if let Err(e) = state.engine.admit_pending_flow(client) {
        return unavailable(state, &e);
    }
    let id = new_ticket_id("OR");
    if let Err(e) = records(state)
        .put(
            &request_key(&id),
            &request,
            state.engine.policy().login_flow_ttl,
        )
        .await
    {
        return unavailable(state, &e.into());
    }
    let service = state.oidc.callback(&request.client_id, &id);
    let mut location =
        crate::respond::login_location(state, &service, request.renew, request.prompt_none);
    if let Some(hint) = checked.login_hint {
        location.push_str("&login_hint=");
        location.push_str(&enc(&hint));
    }
    redirect(&location)
}

// ------------------------------------------------------------ callback

pub async fn callback(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Response {
    let raw = query.unwrap_or_default();
    let Ok(params) = parameters(raw.as_bytes()) else {
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The sign-in response could not be understood.",
        );
    };
    let (Some(client_id), Some(request_id)) = (params.get("client_id"), params.get("req")) else {
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "Invalid request",
            "The sign-in response could not be understood.",
        );
    };
    let expired = || {
        page(
            &state,
            StatusCode::BAD_REQUEST,
            "Sign-in expired",
            "This sign-in request expired or was already used. Go back to the application and sign in again.",
        )
    };
    if request_id.len() > 64 {
        return expired();
    }
    let request: PendingRequest = match records(&state).take(&request_key(request_id)).await {
        Ok(Some(r)) => r,
        Ok(None) => return expired(),
        Err(e) => return unavailable(&state, &e.into()),
    };
    let Some(client) = state
        .oidc
        .clients
        .get(&request.client_id)
        .filter(|c| &c.client_id == client_id)
    else {
        return expired();
    };
    let to_client_error = |error: OAuthError| {
        error_to_client(
            &state,
            &request.redirect_uri,
            &request.response_mode,
            request.state.as_deref(),
            &error,
        )
    };
    let Some(ticket) = params.get("ticket") else {
        // CAS gateway came back without a ticket: there is no session.
        return to_client_error(OAuthError::new(
            ErrorCode::LoginRequired,
            "the user is not signed in",
        ));
    };
    let service = state.oidc.callback(client_id, request_id);
    let assertion = match state
        .engine
        .validate(ValidationRequest {
            ticket,
            service: &service,
            renew: request.renew,
            pgt_url: None,
            allow_proxy_tickets: false,
            in_process: true,
        })
        .await
    {
        Ok(a) => a,
        Err(e @ EngineError::Store(_)) => return unavailable(&state, &e),
        Err(e) => {
            tracing::warn!(error = %e, client = %client.name, "OIDC callback with an invalid ticket");
            return page(
                &state,
                StatusCode::BAD_REQUEST,
                "Sign-in failed",
                "The sign-in could not be confirmed. Go back to the application and sign in again.",
            );
        }
    };
    let auth_time = assertion.authenticated_at / 1000;
    if let Some(max_age) = request.max_age {
        if unix_now(&state).saturating_sub(auth_time) > max_age && !assertion.from_new_login {
            return to_client_error(OAuthError::new(
                ErrorCode::LoginRequired,
                "the login is older than max_age",
            ));
        }
    }
    let offline =
        request.scopes.iter().any(|s| s == "offline_access") && client.grant_types.refresh_token;
    let code = new_ticket_id("OC");
    let record = CodeRecord::Live(Box::new(Code {
        client_id: client.client_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        code_challenge: request.code_challenge.clone(),
        nonce: request.nonce.clone(),
        grant_id: new_ticket_id("OG"),
        grant: Grant {
            client_id: client.client_id.clone(),
            principal_id: assertion.principal.id.clone(),
            attributes: assertion.attributes,
            scopes: request.scopes.clone(),
            session_id: assertion.session_id,
            auth_time,
            fresh_login: assertion.from_new_login,
            offline,
        },
    }));
    if let Err(e) = records(&state)
        .put(&code_key(&code), &record, state.oidc.settings.code_ttl)
        .await
    {
        return unavailable(&state, &e.into());
    }
    Metrics::inc(&state.metrics.oidc_codes_issued);
    let mut params = vec![("code", code)];
    if let Some(s) = &request.state {
        params.push(("state", s.clone()));
    }
    params.push(("iss", state.oidc.issuer.clone()));
    to_client(
        &state,
        &request.redirect_uri,
        &request.response_mode,
        params,
    )
}

// ------------------------------------------------------------ token

fn client_credentials<'a>(
    headers: &'a HeaderMap,
    params: &'a HashMap<String, String>,
) -> ClientCredentials<'a> {
    ClientCredentials {
        basic: headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Basic ")
                    .or_else(|| v.strip_prefix("basic "))
            }),
        form_client_id: params.get("client_id").map(String::as_str),
        form_client_secret: params.get("client_secret").map(String::as_str),
    }
}

fn authenticate_client<'a>(
    state: &'a SharedState,
    headers: &HeaderMap,
    params: &HashMap<String, String>,
) -> Result<&'a OidcClient, OAuthError> {
    state
        .oidc
        .clients
        .authenticate(&client_credentials(headers, params))
        .map_err(|e| {
            tracing::warn!(error = %e, "client authentication failed");
            OAuthError::new(ErrorCode::InvalidClient, e.to_string())
        })
}

pub async fn token(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = parameters(&body)?;
        let client = authenticate_client(&state, &headers, &params)?;
        match params.get("grant_type").map(String::as_str) {
            Some("authorization_code") => code_grant(&state, client, &params).await,
            Some("refresh_token") => refresh_grant(&state, client, &params).await,
            Some("client_credentials") => client_credentials_grant(&state, client, &params),
            None => Err(OAuthError::invalid_request("grant_type is missing")),
            Some(other) => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!("grant_type {other} is not supported"),
            )),
        }
    }
    .await;
    match result {
        Ok(body) => {
            Metrics::inc(&state.metrics.oidc_tokens_issued);
            json_response(StatusCode::OK, body.to_string())
        }
        Err(e) => oauth_error(&state, &e),
    }
}

fn param<'a>(params: &'a HashMap<String, String>, name: &str) -> Result<&'a str, OAuthError> {
    match params.get(name).map(String::as_str) {
        Some(v) if !v.is_empty() && v.len() <= MAX_TOKEN_LEN => Ok(v),
        Some(v) if !v.is_empty() => Err(OAuthError::invalid_request(format!("{name} is too long"))),
        _ => Err(OAuthError::invalid_request(format!("{name} is missing"))),
    }
}

async fn revoke_grant(state: &SharedState, grant_id: &str, why: &str) {
    tracing::warn!(grant = %castellan_core::ids::redact(grant_id), "{why}: grant revoked");
    if let Err(e) = state
        .engine
        .store()
        .remove_record(&grant_key(grant_id))
        .await
    {
        tracing::error!(error = %e, "could not revoke a grant");
    }
}

async fn code_grant(
    state: &SharedState,
    client: &OidcClient,
    params: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    if !client.grant_types.authorization_code {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the client may not use authorization codes",
        ));
    }
    let code = param(params, "code")?;
    let code = match records(state).redeem_code(code).await? {
        Redemption::First(c) => c,
        Redemption::Unknown => {
            return Err(OAuthError::invalid_grant("the code is unknown or expired"))
        }
        Redemption::Replay { grant_id } => {
            revoke_grant(state, &grant_id, "authorization code presented twice").await;
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
    if !state.engine.session_is_live(&code.grant.session_id).await? {
        return Err(OAuthError::invalid_grant(
            "the SSO session of this code has ended",
        ));
    }
    issue(
        state,
        client,
        code.grant,
        &code.grant_id,
        code.nonce.as_deref(),
    )
    .await
}

/// Stores the grant and issues its tokens: an access token, a refresh
/// token (when the client may refresh) and an ID token (scope openid).
async fn issue(
    state: &SharedState,
    client: &OidcClient,
    grant: Grant,
    grant_id: &str,
    nonce: Option<&str>,
) -> Result<Value, OAuthError> {
    let settings = &state.oidc.settings;
    let keys = keys(state)?;
    let ttl = if grant.offline {
        settings.offline_token_ttl
    } else {
        settings.refresh_token_ttl
    };
    records(state)
        .put(&grant_key(grant_id), &grant, ttl)
        .await?;
    let now = unix_now(state);
    let sub = subject(client, &grant.principal_id, &settings.pairwise_salt);
    let scope = grant.scopes.join(" ");
    let access_token = access_token(
        state,
        &keys,
        client,
        &sub,
        &scope,
        Some(grant_id),
        Some(grant.auth_time),
    )?;
    let mut body = json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl.as_secs(),
        "scope": scope,
    });
    if client.grant_types.refresh_token {
        let refresh = new_ticket_id("RT");
        records(state)
            .put(
                &refresh_key(&refresh),
                &RefreshRecord::Live(RefreshToken {
                    grant_id: grant_id.to_owned(),
                    client_id: client.client_id.clone(),
                    scopes: grant.scopes.clone(),
                }),
                ttl,
            )
            .await?;
        body["refresh_token"] = Value::String(refresh);
    }
    if grant.scopes.iter().any(|s| s == "openid") {
        let mut claims = scope_claims(
            grant.scopes.iter().map(String::as_str),
            &grant.principal_id,
            &grant.attributes,
        );
        claims.insert("iss".into(), json!(state.oidc.issuer));
        claims.insert("sub".into(), json!(sub));
        claims.insert("aud".into(), json!(client.client_id));
        claims.insert("azp".into(), json!(client.client_id));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + settings.id_token_ttl.as_secs()));
        claims.insert("auth_time".into(), json!(grant.auth_time));
        claims.insert(
            "acr".into(),
            json!(if grant.fresh_login { "1" } else { "0" }),
        );
        if let Some(nonce) = nonce {
            claims.insert("nonce".into(), json!(nonce));
        }
        if let Some(sid) = session_tag(&grant.session_id) {
            claims.insert("sid".into(), json!(sid));
        }
        claims.insert("at_hash".into(), json!(at_hash(&access_token)));
        let id_token = sign(&keys, client.id_token_alg, "JWT", &claims).map_err(|e| {
            tracing::error!(error = %e, "ID token signing failed");
            OAuthError::server_error()
        })?;
        body["id_token"] = Value::String(id_token);
    }
    Ok(body)
}

#[allow(clippy::too_many_arguments)]
fn access_token(
    state: &SharedState,
    keys: &Keyring,
    client: &OidcClient,
    sub: &str,
    scope: &str,
    grant_id: Option<&str>,
    auth_time: Option<u64>,
) -> Result<String, OAuthError> {
    let now = unix_now(state);
    let claims = AccessTokenClaims {
        iss: state.oidc.issuer.clone(),
        sub: sub.to_owned(),
        aud: client.client_id.clone(),
        client_id: client.client_id.clone(),
        exp: now + state.oidc.settings.access_token_ttl.as_secs(),
        iat: now,
        jti: new_ticket_id("AT"),
        scope: scope.to_owned(),
        auth_time,
        grant: grant_id.map(str::to_owned),
    };
    sign(keys, client.access_token_alg, ACCESS_TOKEN_TYPE, &claims).map_err(|e| {
        tracing::error!(error = %e, "access token signing failed");
        OAuthError::server_error()
    })
}

/// Requested scopes: a subset of `allowed`; none requested means all of them.
fn narrow_scopes(
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

async fn refresh_grant(
    state: &SharedState,
    client: &OidcClient,
    params: &HashMap<String, String>,
) -> Result<Value, OAuthError> {
    if !client.grant_types.refresh_token {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "the client may not use refresh tokens",
        ));
    }
    let presented = param(params, "refresh_token")?;
    let token = match records(state).redeem_refresh(presented).await? {
        Redemption::First(t) => t,
        Redemption::Unknown => {
            return Err(OAuthError::invalid_grant(
                "the refresh token is unknown or expired",
            ))
        }
        Redemption::Replay { grant_id } => {
            revoke_grant(state, &grant_id, "rotated refresh token presented again").await;
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
    let Some(grant) = records(state)
        .get::<Grant>(&grant_key(&token.grant_id))
        .await?
    else {
        return Err(OAuthError::invalid_grant(
            "the grant was revoked or expired",
        ));
    };
    if !grant.offline && !state.engine.session_is_live(&grant.session_id).await? {
        revoke_grant(state, &token.grant_id, "SSO session ended").await;
        return Err(OAuthError::invalid_grant("the SSO session has ended"));
    }
    let scopes = narrow_scopes(params, &token.scopes)?;
    let keys = keys(state)?;
    let settings = &state.oidc.settings;
    let sub = subject(client, &grant.principal_id, &settings.pairwise_salt);
    let scope = scopes.join(" ");
    let access_token = access_token(
        state,
        &keys,
        client,
        &sub,
        &scope,
        Some(&token.grant_id),
        Some(grant.auth_time),
    )?;
    let refresh = new_ticket_id("RT");
    let ttl = if grant.offline {
        settings.offline_token_ttl
    } else {
        settings.refresh_token_ttl
    };
    records(state)
        .put(
            &refresh_key(&refresh),
            &RefreshRecord::Live(RefreshToken {
                grant_id: token.grant_id.clone(),
                client_id: client.client_id.clone(),
                // A narrowed refresh keeps the original grant for later.
                scopes: token.scopes,
            }),
            ttl,
        )
        .await?;
    Ok(json!({
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl.as_secs(),
        "refresh_token": refresh,
        "scope": scope,
    }))
}

/// Scopes that mean a user: never granted to a client acting for itself.
const USER_SCOPES: &[&str] = &["openid", "offline_access", "profile", "email", "phone"];

fn client_credentials_grant(
    state: &SharedState,
    client: &OidcClient,
    params: &HashMap<String, String>,
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
    let keys = keys(state)?;
    let scope = scopes.join(" ");
    let token = access_token(state, &keys, client, &client.client_id, &scope, None, None)?;
    Ok(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": state.oidc.settings.access_token_ttl.as_secs(),
        "scope": scope,
    }))
}

// ------------------------------------------------------------ token checks

/// Why a presented access token is not good.
enum Inactive {
    Invalid(String),
    Store(OAuthError),
}

/// A valid, unexpired, unrevoked access token, with its grant (none for
/// client_credentials).
async fn active_access_token(
    state: &SharedState,
    token: &str,
) -> Result<(AccessTokenClaims, Option<Grant>), Inactive> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Inactive::Invalid("token too long".into()));
    }
    let keys = keys(state).map_err(Inactive::Store)?;
    let claims = tokens::verify_access_token(&keys, &state.oidc.issuer, token)
        .map_err(|e| Inactive::Invalid(e.to_string()))?;
    let store = state.engine.store();
    if store
        .record(&revoked_key(&claims.jti))
        .await
        .map_err(|e| Inactive::Store(e.into()))?
        .is_some()
    {
        return Err(Inactive::Invalid("the token was revoked".into()));
    }
    let grant = match &claims.grant {
        None => None,
        Some(id) => {
            let grant = records(state)
                .get::<Grant>(&grant_key(id))
                .await
                .map_err(|e| Inactive::Store(e.into()))?
                .ok_or_else(|| Inactive::Invalid("the grant was revoked".into()))?;
            if !grant.offline
                && !state
                    .engine
                    .session_is_live(&grant.session_id)
                    .await
                    .map_err(|e| Inactive::Store(e.into()))?
            {
                return Err(Inactive::Invalid("the SSO session has ended".into()));
            }
            Some(grant)
        }
    };
    Ok((claims, grant))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn bearer_error(code: ErrorCode, description: &str) -> Response {
    let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::UNAUTHORIZED);
    let challenge = format!(
        "Bearer realm=\"castellan\", error=\"{}\", error_description=\"{}\"",
        code.as_str(),
        description.replace(['"', '\\'], "'")
    );
    let mut response = json_response(status, OAuthError::new(code, description).to_json());
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    response
}

pub async fn userinfo_get(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    userinfo(&state, &headers, None).await
}

pub async fn userinfo_post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_token = parameters(&body)
        .ok()
        .and_then(|mut p| p.remove("access_token"));
    userinfo(&state, &headers, form_token).await
}

async fn userinfo(
    state: &SharedState,
    headers: &HeaderMap,
    form_token: Option<String>,
) -> Response {
    let token = match (bearer(headers), form_token.as_deref()) {
        (Some(t), None) | (None, Some(t)) => t,
        (Some(_), Some(_)) => {
            return bearer_error(ErrorCode::InvalidRequest, "the token was sent twice")
        }
        (None, None) => {
            let mut r = json_response(StatusCode::UNAUTHORIZED, String::new());
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"castellan\""),
            );
            return r;
        }
    };
    let (claims, grant) = match active_access_token(state, token).await {
        Ok(x) => x,
        Err(Inactive::Invalid(why)) => return bearer_error(ErrorCode::InvalidToken, &why),
        Err(Inactive::Store(e)) => return oauth_error(state, &e),
    };
    let Some(grant) = grant.filter(|_| claims.scopes().any(|s| s == "openid")) else {
        return bearer_error(
            ErrorCode::InsufficientScope,
            "the token was not issued for openid",
        );
    };
    let mut body: Map<String, Value> =
        scope_claims(claims.scopes(), &grant.principal_id, &grant.attributes);
    body.insert("sub".into(), json!(claims.sub));
    json_response(StatusCode::OK, Value::Object(body).to_string())
}

// ------------------------------------------------------------ introspection, revocation

fn confidential(client: &OidcClient) -> Result<&OidcClient, OAuthError> {
    if client.is_public() {
        Err(OAuthError::new(
            ErrorCode::InvalidClient,
            "only confidential clients may introspect tokens",
        ))
    } else {
        Ok(client)
    }
}

pub async fn introspect(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let result = async {
        let params = parameters(&body)?;
        let caller = confidential(authenticate_client(&state, &headers, &params)?)?;
        let token = param(&params, "token")?;
        if token.starts_with("RT-") {
            return introspect_refresh(&state, token, &caller.client_id).await;
        }
        Ok(match active_access_token(&state, token).await {
            Ok((c, _)) if !may_introspect(&state, &c.client_id, &caller.client_id) => {
                tracing::warn!(caller = %caller.client_id, owner = %c.client_id, "introspection of another client's token refused");
                json!({"active": false})
            }
            Ok((c, _)) => json!({
                "active": true,
                "iss": c.iss,
                "sub": c.sub,
                "aud": c.aud,
                "client_id": c.client_id,
                "scope": c.scope,
                "exp": c.exp,
                "iat": c.iat,
                "jti": c.jti,
                "token_type": "Bearer",
            }),
            Err(Inactive::Invalid(_)) => json!({"active": false}),
            Err(Inactive::Store(e)) => return Err(e),
        })
    }
    .await;
    match result {
        Ok(body) => json_response(StatusCode::OK, body.to_string()),
        Err(e) => oauth_error(&state, &e),
    }
}

/// RFC 7662 §2.2: a client learns only about its own tokens, or those of
/// clients that name it as their resource server.
fn may_introspect(state: &SharedState, owner: &str, caller: &str) -> bool {
    state
        .oidc
        .clients
        .get(owner)
        .is_some_and(|c| c.may_be_introspected_by(caller))
}

async fn introspect_refresh(
    state: &SharedState,
    token: &str,
    caller: &str,
) -> Result<Value, OAuthError> {
    let inactive = json!({"active": false});
    let Some(RefreshRecord::Live(t)) = records(state)
        .get::<RefreshRecord>(&refresh_key(token))
        .await?
    else {
        return Ok(inactive);
    };
    if !may_introspect(state, &t.client_id, caller) {
        tracing::warn!(%caller, owner = %t.client_id, "introspection of another client's token refused");
        return Ok(inactive);
    }
    let Some(grant) = records(state).get::<Grant>(&grant_key(&t.grant_id)).await? else {
        return Ok(inactive);
    };
    if !grant.offline && !state.engine.session_is_live(&grant.session_id).await? {
        return Ok(inactive);
    }
    let client = state.oidc.clients.get(&t.client_id);
    let sub = client
        .map(|c| subject(c, &grant.principal_id, &state.oidc.settings.pairwise_salt))
        .unwrap_or_default();
    Ok(json!({
        "active": true,
        "iss": state.oidc.issuer,
        "sub": sub,
        "client_id": t.client_id,
        "scope": t.scopes.join(" "),
        "token_type": "refresh_token",
    }))
}

pub async fn revoke(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = async {
        let params = parameters(&body)?;
        let client = authenticate_client(&state, &headers, &params)?;
        let token = param(&params, "token")?;
        if token.starts_with("RT-") {
            let key = refresh_key(token);
            if let Some(RefreshRecord::Live(t)) = records(&state).get::<RefreshRecord>(&key).await?
            {
                if t.client_id != client.client_id {
                    return Err(OAuthError::new(
                        ErrorCode::UnauthorizedClient,
                        "the token was issued to another client",
                    ));
                }
                state.engine.store().remove_record(&key).await?;
                state
                    .engine
                    .store()
                    .remove_record(&grant_key(&t.grant_id))
                    .await?;
            }
            return Ok(());
        }
        // An access token: remembered as revoked until it would expire.
        let keys = keys(&state)?;
        if let Ok(c) = tokens::verify_access_token(&keys, &state.oidc.issuer, token) {
            if c.client_id != client.client_id {
                return Err(OAuthError::new(
                    ErrorCode::UnauthorizedClient,
                    "the token was issued to another client",
                ));
            }
            let left = c.exp.saturating_sub(unix_now(&state)).max(1);
            state
                .engine
                .store()
                .put_record(&revoked_key(&c.jti), b"", Duration::from_secs(left))
                .await?;
        }
        // RFC 7009 §2.2: an unknown or invalid token is not an error.
        Ok(())
    }
    .await;
    match result {
        Ok(()) => json_response(StatusCode::OK, String::new()),
        Err(e) => oauth_error(&state, &e),
    }
}

// ------------------------------------------------------------ logout

pub async fn logout_get(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    logout(&state, &headers, query.unwrap_or_default().as_bytes()).await
}

pub async fn logout_post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    logout(&state, &headers, &body).await
}

/// RP-Initiated Logout 1.0: ends the SSO session (CAS and OIDC alike), then
/// returns to a registered post_logout_redirect_uri.
async fn logout(state: &SharedState, headers: &HeaderMap, raw: &[u8]) -> Response {
    let bad = |message: &str| {
        page(
            state,
            StatusCode::BAD_REQUEST,
            "Invalid logout request",
            message,
        )
    };
    let Ok(params) = parameters(raw) else {
        return bad("The logout request could not be understood.");
    };
    if params.values().any(|v| v.len() > MAX_TOKEN_LEN) {
        return bad("A parameter is too long.");
    }
    // A hint that does not verify (a key rotated out long ago, a token of
    // another server) names no client; the logout itself still happens,
    // it is what the user asked for.
    let hint_client = params.get("id_token_hint").and_then(|hint| {
        let keys = state.signing_keys.get()?;
        match tokens::verify_id_token_hint(&keys, &state.oidc.issuer, hint) {
            Ok(claims) => match claims.get("aud") {
                Some(Value::String(a)) => Some(a.clone()),
                Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_owned),
                _ => None,
            },
            Err(e) => {
                tracing::warn!(error = %e, "logout with an id_token_hint that does not verify; ignored");
                None
            }
        }
    });
    let client_id = match (hint_client, params.get("client_id")) {
        (Some(h), Some(c)) if &h != c => return bad("client_id does not match the id_token_hint."),
        (Some(h), _) => Some(h),
        (None, c) => c.cloned(),
    };
    let target = match params.get("post_logout_redirect_uri") {
        None => None,
        Some(uri) => {
            let client = client_id.as_deref().and_then(|c| state.oidc.clients.get(c));
            match client {
                Some(c) if c.post_logout_redirect_uris.iter().any(|u| u == uri) => Some(uri),
                _ => {
                    return bad(
                        "The post_logout_redirect_uri is not registered for this application.",
                    )
                }
            }
        }
    };
    if let Some(id) = cookies::session_id(headers) {
        match state.engine.logout(&id, None).await {
            Ok(out) => {
                if out.user.is_some() {
                    Metrics::inc(&state.metrics.logouts);
                }
            }
            Err(e) => return unavailable(state, &e),
        }
    }
    let mut response = match target {
        Some(uri) => {
            let mut location = uri.clone();
            if let Some(s) = params.get("state") {
                location.push(if location.contains('?') { '&' } else { '?' });
                location.push_str("state=");
                location.push_str(&enc(s));
            }
            redirect(&location)
        }
        None => crate::logout::signed_out(state),
    };
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::clear_session(state.prefix(), state.settings.secure_cookies()),
    );
    response
}

/// Tells the OIDC clients of an ended session by a back-channel logout token.
pub fn notify_logout(state: &SharedState, notifications: Vec<LogoutNotification>) {
    let mut told = HashSet::new();
    for n in notifications {
        if n.mode != LogoutMode::BackChannel {
            continue;
        }
        let Some(client) = state.oidc.client_of_callback(&n.service) else {
            continue;
        };
        let Some(uri) = client.backchannel_logout_uri.clone() else {
            continue;
        };
        // One token per client and session id: a renewed session carries
        // records of the session it replaced, known to the client by its sid.
        let sid = session_tag(&n.ticket_id).map(str::to_owned);
        if !told.insert((client.client_id.clone(), sid.clone())) {
            continue;
        }
        let Some(keys) = state.signing_keys.get() else {
            tracing::warn!(client = %client.name, "no signing keys: back-channel logout not sent");
            continue;
        };
        let now = unix_now(state);
        let mut claims = json!({
            "iss": state.oidc.issuer,
            "aud": client.client_id,
            "iat": now,
            "exp": now + 120,
            "jti": new_ticket_id("LT"),
            "sub": subject(client, &n.principal_id, &state.oidc.settings.pairwise_salt),
            "events": { BACKCHANNEL_LOGOUT_EVENT: {} },
        });
        if let Some(sid) = sid {
            claims["sid"] = json!(sid);
        }
        let token = match sign(&keys, client.id_token_alg, LOGOUT_TOKEN_TYPE, &claims) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "logout token signing failed");
                continue;
            }
        };
        let http = state.oidc.http.clone();
        let name = client.name.clone();
        tokio::spawn(async move {
            for attempt in 1..=3u32 {
                match http
                    .post(&uri)
                    .form(&[("logout_token", token.as_str())])
                    .send()
                    .await
                {
                    Ok(r) if r.status().is_success() => {
                        tracing::info!(client = %name, "back-channel logout delivered");
                        return;
                    }
                    Ok(r) => {
                        tracing::warn!(client = %name, status = %r.status(), attempt, "back-channel logout refused")
                    }
                    Err(e) => {
                        tracing::warn!(client = %name, error = %e, attempt, "back-channel logout failed")
                    }
                }
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
            }
        });
    }
}
