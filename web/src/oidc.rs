//! The OpenID Connect provider's endpoints under `/oidc`: each parses the
//! request, calls the [`castellan_oidc::Provider`], and renders its answer
//! (JSON, a redirect, a form post, an error page).

/// The device authorization grant's endpoints and page (RFC 8628).
pub mod device;

use crate::client_address::ClientAddress;
use crate::cookies;
use crate::metrics::Metrics;
use crate::pages::{render, PostRedirectPage};
use crate::respond::{error_page as page, protocol_error_page, redirect, unavailable};
use crate::state::SharedState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_oidc::dpop::Presentation;
use castellan_oidc::{parameters, ClientAnswer, ErrorCode, OAuthError, ResponseMode, SignInError};
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) fn json_response(status: StatusCode, body: String) -> Response {
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
pub(crate) fn oauth_error(state: &SharedState, e: &OAuthError) -> Response {
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
fn to_client(state: &SharedState, answer: ClientAnswer) -> Response {
    match answer.response_mode {
        ResponseMode::Query => {
            let mut location = answer.redirect_uri;
            let mut sep = if location.contains('?') { '&' } else { '?' };
            for (k, v) in &answer.params {
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
                action: answer.redirect_uri,
                fields: answer
                    .params
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            },
        ),
    }
}

/// A form-posted endpoint answering JSON (PAR, introspection, the device
/// authorization): parses the body, calls, answers `status` with the value
/// or the OAuth2 error.
pub(crate) async fn form_json<F, Fut>(
    state: &SharedState,
    body: &[u8],
    status: StatusCode,
    call: F,
) -> Response
where
    F: FnOnce(HashMap<String, String>) -> Fut,
    Fut: Future<Output = Result<Value, OAuthError>>,
{
    match parameters(body) {
        Ok(params) => match call(params).await {
            Ok(value) => json_response(status, value.to_string()),
            Err(e) => oauth_error(state, &e),
        },
        Err(e) => oauth_error(state, &e),
    }
}

/// The `Authorization: Basic` credentials, after the scheme.
pub(crate) fn basic(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        })
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

/// A sign-in step that did not end with a code.
fn sign_in_error(state: &SharedState, e: SignInError) -> Response {
    match e {
        SignInError::Invalid(message) => protocol_error_page(
            state,
            StatusCode::BAD_REQUEST,
            "error-invalid-request",
            "error-application-request-refused",
            &message,
        ),
        SignInError::Expired => page(
            state,
            StatusCode::BAD_REQUEST,
            "error-sign-in-expired",
            "error-request-expired-message",
        ),
        SignInError::NotConfirmed(_) => page(
            state,
            StatusCode::BAD_REQUEST,
            "error-sign-in-failed",
            "error-not-confirmed-message",
        ),
        SignInError::Client { answer, .. } => to_client(state, *answer),
        SignInError::Unavailable(e) => unavailable(state, &e),
    }
}

// ------------------------------------------------------------ discovery

pub async fn configuration(State(state): State<SharedState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        state.oidc.discovery().to_owned(),
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
            return protocol_error_page(
                state,
                StatusCode::BAD_REQUEST,
                "error-invalid-request",
                "error-application-request-refused",
                &e.error_description,
            )
        }
    };
    let session = cookies::session_id(headers);
    let login = match state
        .oidc
        .authorize(&state.engine, &params, session.as_deref(), client)
        .await
    {
        Ok(l) => l,
        Err(e) => return sign_in_error(state, e),
    };
    let mut location =
        crate::respond::login_location(state, &login.service, login.renew, login.gateway);
    if let Some(hint) = login.login_hint {
        location.push_str("&login_hint=");
        location.push_str(&enc(&hint));
    }
    redirect(&location)
}

// ------------------------------------------------------------ callback

pub async fn callback(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Response {
    let raw = query.unwrap_or_default();
    let params = parameters(raw.as_bytes()).ok();
    let Some((client_id, request_id)) = params
        .as_ref()
        .and_then(|p| Some((p.get("client_id")?, p.get("req")?)))
    else {
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "error-invalid-request",
            "error-response-not-understood",
        );
    };
    let ticket = params
        .as_ref()
        .and_then(|p| p.get("ticket"))
        .map(String::as_str);
    let consent_refusal = params
        .as_ref()
        .and_then(|p| p.get(castellan_core::ConsentRefusal::PARAMETER))
        .and_then(|v| castellan_core::ConsentRefusal::parse(v));
    match state
        .oidc
        .callback(
            &state.engine,
            client_id,
            request_id,
            ticket,
            consent_refusal,
        )
        .await
    {
        Ok(answer) => {
            Metrics::inc(&state.metrics.oidc_codes_issued);
            to_client(&state, answer)
        }
        Err(e) => sign_in_error(&state, e),
    }
}

// ------------------------------------------------------------ token

pub async fn token(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let dpop = dpop_proof(&headers);
    let result = match (parameters(&body), dpop) {
        (Ok(params), Ok(dpop)) => {
            state
                .oidc
                .token(&state.engine, basic(&headers), dpop, &params)
                .await
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    };
    let mut response = match result {
        Ok(body) => {
            Metrics::inc(&state.metrics.oidc_tokens_issued);
            json_response(StatusCode::OK, body.to_string())
        }
        Err(e) => oauth_error(&state, &e),
    };
    if headers.contains_key(DPOP) {
        add_dpop_nonce(&state, &mut response);
    }
    response
}

const DPOP: &str = "dpop";

/// The request's one `DPoP` header (RFC 9449 §4.3: exactly one).
fn dpop_proof(headers: &HeaderMap) -> Result<Option<&str>, OAuthError> {
    let mut all = headers.get_all(DPOP).iter();
    match (all.next(), all.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .map(Some)
            .map_err(|_| OAuthError::new(ErrorCode::InvalidDpopProof, "unreadable DPoP header")),
        (Some(_), Some(_)) => Err(OAuthError::new(
            ErrorCode::InvalidDpopProof,
            "more than one DPoP header",
        )),
    }
}

/// RFC 9449 §8: the nonce the next proof must carry, when nonces are on.
fn add_dpop_nonce(state: &SharedState, response: &mut Response) {
    if let Some(v) = state
        .oidc
        .dpop_nonce()
        .and_then(|n| HeaderValue::from_str(&n).ok())
    {
        response.headers_mut().insert("dpop-nonce", v);
    }
}

// ------------------------------------------------------------ pushed authorization requests

pub async fn par(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &state;
    let client_auth = basic(&headers);
    // RFC 9126 §2.2: 201 Created.
    form_json(s, &body, StatusCode::CREATED, move |params| async move {
        s.oidc
            .push_authorization_request(&s.engine, client_auth, &params, client)
            .await
    })
    .await
}

// ------------------------------------------------------------ userinfo

pub async fn userinfo_get(State(state): State<SharedState>, headers: HeaderMap) -> Response {
    userinfo(&state, &headers, None, "GET").await
}

pub async fn userinfo_post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let form_token = parameters(&body)
        .ok()
        .and_then(|mut p| p.remove("access_token"));
    userinfo(&state, &headers, form_token, "POST").await
}

/// `Authorization: DPoP …` (RFC 9449 §7.1).
fn dpop_token(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("dpop").then_some(token.trim())
}

async fn userinfo(
    state: &SharedState,
    headers: &HeaderMap,
    form_token: Option<String>,
    method: &str,
) -> Response {
    if let Some(token) = dpop_token(headers) {
        let presentation = match dpop_proof(headers) {
            Ok(proof) => Presentation::Dpop { proof, method },
            Err(e) => return dpop_error(state, &e),
        };
        return match state
            .oidc
            .userinfo(&state.engine, token, presentation)
            .await
        {
            Ok(claims) => json_response(StatusCode::OK, Value::Object(claims).to_string()),
            Err(e) => dpop_error(state, &e),
        };
    }
    // RFC 6750 §2: in the header or the form, never both.
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
    match state
        .oidc
        .userinfo(&state.engine, token, Presentation::Bearer)
        .await
    {
        Ok(claims) => json_response(StatusCode::OK, Value::Object(claims).to_string()),
        Err(e)
            if matches!(
                e.error,
                ErrorCode::InvalidToken | ErrorCode::InsufficientScope
            ) =>
        {
            bearer_error(e.error, &e.error_description)
        }
        Err(e) => oauth_error(state, &e),
    }
}

/// An error at a resource endpoint for a DPoP request (RFC 9449 §7.1):
/// a `DPoP` challenge, with a fresh nonce when the proof lacked one.
fn dpop_error(state: &SharedState, e: &OAuthError) -> Response {
    if !matches!(
        e.error,
        ErrorCode::InvalidToken
            | ErrorCode::InsufficientScope
            | ErrorCode::InvalidDpopProof
            | ErrorCode::UseDpopNonce
    ) {
        return oauth_error(state, e);
    }
    let status = match e.error {
        ErrorCode::InsufficientScope => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let challenge = format!(
        "DPoP error=\"{}\", error_description=\"{}\", algs=\"{}\"",
        e.error.as_str(),
        e.error_description.replace(['"', '\\'], "'"),
        castellan_oidc::dpop::ALGORITHMS.join(" ")
    );
    let mut response = json_response(status, e.to_json());
    if let Ok(v) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    add_dpop_nonce(state, &mut response);
    response
}

// ------------------------------------------------------------ introspection, revocation

pub async fn introspect(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &state;
    let client_auth = basic(&headers);
    form_json(s, &body, StatusCode::OK, move |params| async move {
        s.oidc.introspect(&s.engine, client_auth, &params).await
    })
    .await
}

pub async fn revoke(State(state): State<SharedState>, headers: HeaderMap, body: Bytes) -> Response {
    let result = match parameters(&body) {
        Ok(params) => {
            state
                .oidc
                .revoke(&state.engine, basic(&headers), &params)
                .await
        }
        Err(e) => Err(e),
    };
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
    let Ok(params) = parameters(raw) else {
        return page(
            state,
            StatusCode::BAD_REQUEST,
            "error-invalid-logout",
            "error-logout-not-understood",
        );
    };
    let target = match state.oidc.end_session(&params) {
        Ok(t) => t,
        Err(e) => {
            return protocol_error_page(
                state,
                StatusCode::BAD_REQUEST,
                "error-invalid-logout",
                "error-application-request-refused",
                &e.to_string(),
            )
        }
    };
    let mut visits = Vec::new();
    if let Some(id) = cookies::session_id(headers) {
        match state.engine.logout(&id, None).await {
            Ok(out) => {
                if out.user.is_some() {
                    Metrics::inc(&state.metrics.logouts);
                }
                visits = out.visits;
            }
            Err(e) => return unavailable(state, &e),
        }
    }
    let mut response = match target {
        // SAML SPs with only browser SLO endpoints are visited first, as
        // after a CAS or a SAML logout; then on to the relying party.
        target if !visits.is_empty() => {
            crate::logout::front_channel_logout(state, &visits, target).await
        }
        Some(location) => redirect(&location),
        None => crate::logout::signed_out(state),
    };
    response.headers_mut().append(
        header::SET_COOKIE,
        cookies::clear_session(state.prefix(), state.settings.secure_cookies()),
    );
    response
}
