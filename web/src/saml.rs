//! The SAML 2.0 IdP's endpoints under `/idp`: each parses its binding,
//! calls the identity provider of `castellan_saml` and renders what it
//! answers (a redirect, an auto-submitting form, a page).

use crate::client_address::ClientAddress;
use crate::cookies;
use crate::logout::{logout_step, post_form};
use crate::metrics::Metrics;
use crate::respond::{
    error_page as page, login_location, protocol_error_page, redirect, unavailable,
};
use crate::state::SharedState;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_saml::binding::BindingParameters;
use castellan_saml::sso::post_message;
use castellan_saml::{SamlError, SamlMessage, SsoNext, ToLogin};
use std::net::IpAddr;

/// A SAML error as a page: the message for what the SP sent wrong, 503
/// when the store failed, 500 when a response could not be signed.
fn failed(state: &SharedState, heading: &'static str, e: SamlError) -> Response {
    match e {
        SamlError::Untrusted(message) | SamlError::Status { message, .. } => protocol_error_page(
            state,
            StatusCode::BAD_REQUEST,
            heading,
            "error-application-request-refused",
            &message,
        ),
        SamlError::Expired => page(
            state,
            StatusCode::BAD_REQUEST,
            "error-sign-in-expired",
            "error-request-expired-message",
        ),
        SamlError::Engine(e) => unavailable(state, &e),
        SamlError::Credentials(_) | SamlError::Crypto(_) | SamlError::Metadata(_) => page(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "error-sign-in-failed",
            "error-response-not-built",
        ),
    }
}

fn invalid(state: &SharedState, e: SamlError) -> Response {
    failed(state, "error-invalid-request", e)
}

/// Posts a SAML message to the SP (HTTP-POST binding): an auto-submitting
/// form that also works without JavaScript.
fn to_login(state: &SharedState, to: ToLogin) -> Response {
    redirect(&login_location(state, &to.service, to.renew, to.gateway))
}

// ------------------------------------------------------------------ metadata

pub async fn metadata(State(state): State<SharedState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/samlmetadata+xml"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        state.saml.metadata().to_owned(),
    )
        .into_response()
}

// ------------------------------------------------------------------ SSO

pub async fn sso_redirect(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let message = BindingParameters::parse(&query).and_then(|p| state.saml.redirect_message(&p));
    match message {
        Ok(m) => sso(&state, client, m).await,
        Err(e) => invalid(&state, SamlError::Untrusted(e.to_string())),
    }
}

pub async fn sso_post(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    body: Bytes,
) -> Response {
    match BindingParameters::parse_form(&body).and_then(|p| post_message(&p)) {
        Ok(m) => sso(&state, client, m).await,
        Err(e) => invalid(&state, SamlError::Untrusted(e.to_string())),
    }
}

async fn sso(state: &SharedState, client: Option<IpAddr>, message: SamlMessage) -> Response {
    match state
        .saml
        .authn_request(&state.engine, client, message)
        .await
    {
        Ok(SsoNext::Login(to)) => to_login(state, to),
        Ok(SsoNext::Refused(form)) => post_form(state, form),
        Err(e) => invalid(state, e),
    }
}

pub async fn unsolicited(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let p = match BindingParameters::parse(&query) {
        Ok(p) => p,
        Err(e) => return invalid(&state, SamlError::Untrusted(e.to_string())),
    };
    match state.saml.unsolicited(&state.engine, client, &p).await {
        Ok(to) => to_login(&state, to),
        Err(e) => invalid(&state, e),
    }
}

pub async fn callback(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Response {
    let query = query.unwrap_or_default();
    let Ok(p) = BindingParameters::parse(&query) else {
        return failed(&state, "error-sign-in-expired", SamlError::Expired);
    };
    let (Some(sp), Some(request_id)) = (p.get("sp"), p.get("req")) else {
        return failed(&state, "error-sign-in-expired", SamlError::Expired);
    };
    match state
        .saml
        .callback(
            &state.engine,
            sp,
            request_id,
            p.get("ticket"),
            p.get(castellan_core::ConsentRefusal::PARAMETER)
                .and_then(castellan_core::ConsentRefusal::parse),
        )
        .await
    {
        Ok(answer) => {
            if answer.success {
                Metrics::inc(&state.metrics.saml_responses_issued);
            }
            post_form(&state, answer.form)
        }
        Err(e) => failed(&state, "error-sign-in-failed", e),
    }
}

// ------------------------------------------------------------------ SLO

pub async fn slo_redirect(
    State(state): State<SharedState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let p = match BindingParameters::parse(&query) {
        Ok(p) => p,
        Err(e) => return invalid(&state, SamlError::Untrusted(e.to_string())),
    };
    if p.contains("SAMLResponse") {
        // An SP answering a logout request of a chain: on to the next.
        return chain_response(&state, p.get("RelayState")).await;
    }
    match state.saml.redirect_message(&p) {
        Ok(m) => slo(&state, &headers, m).await,
        Err(e) => invalid(&state, SamlError::Untrusted(e.to_string())),
    }
}

pub async fn slo_post(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let p = match BindingParameters::parse_form(&body) {
        Ok(p) => p,
        Err(e) => return invalid(&state, SamlError::Untrusted(e.to_string())),
    };
    if p.contains("SAMLResponse") {
        return chain_response(&state, p.get("RelayState")).await;
    }
    match post_message(&p) {
        Ok(m) => slo(&state, &headers, m).await,
        Err(e) => invalid(&state, SamlError::Untrusted(e.to_string())),
    }
}

async fn slo(state: &SharedState, headers: &HeaderMap, message: SamlMessage) -> Response {
    let session_id = cookies::session_id(headers);
    let answer = state
        .saml
        .logout_request(&state.engine, session_id.as_deref(), message)
        .await;
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return failed(state, "error-invalid-logout", e),
    };
    if answer.ended {
        Metrics::inc(&state.metrics.logouts);
    }
    let clear = cookies::clear_session(state.prefix(), state.settings.secure_cookies());
    let mut response = logout_step(state, answer.next);
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

async fn chain_response(state: &SharedState, relay_state: Option<&str>) -> Response {
    match state
        .saml
        .chain_response(state.engine.store().as_ref(), state.now(), relay_state)
        .await
    {
        Ok(step) => logout_step(state, step),
        Err(e) => failed(state, "error-sign-out-failed", e),
    }
}
