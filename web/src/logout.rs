//! `/logout` (CAS 3.0 §2.3): ends the SSO session and starts single logout.

use crate::cookies;
use crate::metrics::Metrics;
use crate::pages::{render, MessagePage};
use crate::state::SharedState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_cas::MAX_SERVICE_LEN;
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
            crate::saml::front_channel_logout(&state, &visits, destination.map(str::to_owned)).await
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
