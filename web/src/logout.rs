//! `/logout` (CAS 3.0 §2.3): ends the SSO session and starts single logout.

use crate::cookies;
use crate::metrics::Metrics;
use crate::pages::{render, MessagePage, PostRedirectPage};
use crate::respond::{redirect, unavailable};
use crate::state::SharedState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_cas::MAX_SERVICE_LEN;
use castellan_core::FrontChannelVisit;
use castellan_saml::{LogoutStep, PostForm};
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct LogoutQuery {
    pub service: Option<String>,
}

pub async fn logout(
    State(state): State<SharedState>,
    query: Result<Query<LogoutQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let service = query.ok().and_then(|Query(q)| q.service);
    let mut ended = true;
    let mut visits = Vec::new();
    if let Some(id) = cookies::session_id(&headers) {
        match state.engine.logout(&id, None).await {
            Ok(out) => {
                if out.user.is_some() {
                    Metrics::inc(&state.metrics.logouts);
                }
                // SAML SPs with only browser SLO endpoints are visited first.
                visits = out.visits;
            }
            Err(e) => {
                tracing::error!(error = %e, "logout failed on the ticket store");
                Metrics::inc(&state.metrics.store_errors);
                ended = false;
            }
        }
    }
    let clear = cookies::clear_session(state.prefix(), state.settings.secure_cookies());
    // Follow `service` only to a registered service: never an open redirect.
    let registered = service
        .as_deref()
        .filter(|s| s.len() <= MAX_SERVICE_LEN && state.engine.service(s).is_some());
    let mut response = match (registered, ended) {
        (destination, true) if !visits.is_empty() => {
            front_channel_logout(&state, &visits, destination.map(str::to_owned)).await
        }
        (Some(url), true) => match HeaderValue::from_str(url) {
            Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            Err(_) => signed_out(&state),
        },
        (_, true) => signed_out(&state),
        (_, false) => render(
            StatusCode::SERVICE_UNAVAILABLE,
            &MessagePage::unavailable(state.prefix()),
        ),
    };
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

pub fn signed_out(state: &SharedState) -> Response {
    render(StatusCode::OK, &MessagePage::signed_out(state.prefix()))
}

/// Posts a SAML message to a party (HTTP-POST binding): an auto-submitting
/// form, never cached.
pub fn post_form(state: &SharedState, form: PostForm) -> Response {
    let mut response = render(
        StatusCode::OK,
        &PostRedirectPage {
            prefix: state.prefix().to_owned(),
            action: form.action,
            fields: form.fields,
        },
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Renders a step of a logout: the next SP, or its end.
pub fn logout_step(state: &SharedState, step: LogoutStep) -> Response {
    match step {
        LogoutStep::Redirect(location) => redirect(&location),
        LogoutStep::Post(form) => post_form(state, form),
        LogoutStep::Done {
            destination: Some(url),
        } => match HeaderValue::from_str(&url) {
            Ok(location) => (StatusCode::FOUND, [(header::LOCATION, location)]).into_response(),
            Err(_) => render(StatusCode::OK, &MessagePage::signed_out(state.prefix())),
        },
        LogoutStep::Done { destination: None } => {
            render(StatusCode::OK, &MessagePage::signed_out(state.prefix()))
        }
    }
}

/// A logout in a browser (CAS `/logout`, OIDC `/oidc/logout`) whose ended
/// session left parties to visit: the SAML SPs among `visits` are visited in
/// a chain, then the browser goes to `destination` (a registered service, a
/// relying party's post_logout_redirect_uri), or sees the signed-out page.
pub async fn front_channel_logout(
    state: &SharedState,
    visits: &[FrontChannelVisit],
    destination: Option<String>,
) -> Response {
    let step = state
        .saml
        .front_channel_logout(
            state.engine.store().as_ref(),
            state.now(),
            visits,
            destination,
        )
        .await;
    match step {
        Ok(step) => logout_step(state, step),
        Err(castellan_saml::SamlError::Engine(e)) => unavailable(state, &e),
        Err(e) => {
            tracing::error!(error = %e, "starting the front-channel logout failed");
            render(StatusCode::OK, &MessagePage::signed_out(state.prefix()))
        }
    }
}
