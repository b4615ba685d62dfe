//! Responses every endpoint module gives the same way.

use crate::metrics::Metrics;
use crate::pages::{render, MessagePage};
use crate::state::SharedState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_core::EngineError;

/// A 302; a location that is not a valid header value (registered patterns
/// may still admit odd bytes) is a 400, never a 500.
pub fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(l) => (StatusCode::FOUND, [(header::LOCATION, l)]).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "bad redirect").into_response(),
    }
}

/// An error page that goes nowhere.
pub fn error_page(
    state: &SharedState,
    status: StatusCode,
    heading: &str,
    message: &str,
) -> Response {
    render(
        status,
        &MessagePage::error(state.prefix(), heading, message),
    )
}

/// The ticket store failed: logged (the request span names the endpoint),
/// counted, and a 503 page.
pub fn unavailable(state: &SharedState, e: &EngineError) -> Response {
    if matches!(e, EngineError::Busy) {
        // The ceiling on pending sign-ins (the engine logged it).
        let mut page = render(
            StatusCode::SERVICE_UNAVAILABLE,
            &MessagePage::error(
                state.prefix(),
                "Too many sign-ins in progress",
                "The sign-in service is handling too many requests right now. Please try again in a minute.",
            ),
        );
        page.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return page;
    }
    tracing::error!(error = %e, "request failed on the ticket store");
    Metrics::inc(&state.metrics.store_errors);
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        &MessagePage::unavailable(state.prefix()),
    )
}

/// `/login` for an in-process protocol module's callback: `renew` for a
/// forced login, `gateway` for a passive one.
pub fn login_location(state: &SharedState, service: &str, renew: bool, gateway: bool) -> String {
    let service: String = url::form_urlencoded::byte_serialize(service.as_bytes()).collect();
    let mut location = format!("{}/login?service={service}", state.prefix());
    if renew {
        location.push_str("&renew=true");
    }
    if gateway {
        location.push_str("&gateway=true");
    }
    location
}
