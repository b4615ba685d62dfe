//! Responses every endpoint module gives the same way.

use crate::metrics::Metrics;
use crate::pages::{render, MessagePage, ThemeLinks};
use crate::state::SharedState;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_core::EngineError;
use castellan_i18n::Msg;

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
    heading: &'static str,
    message: impl Into<Msg>,
) -> Response {
    render(
        status,
        &MessagePage::error(state.prefix(), heading, message),
    )
}

/// An error page with a protocol's own description of the problem, for the
/// application's administrator.
pub fn protocol_error_page(
    state: &SharedState,
    status: StatusCode,
    heading: &'static str,
    message: &'static str,
    detail: &str,
) -> Response {
    render(
        status,
        &MessagePage::error(state.prefix(), heading, message).with_technical_detail(detail),
    )
}

/// The ticket store failed: logged (the request span names the endpoint),
/// counted, and a 503 page.
pub fn unavailable(state: &SharedState, e: &EngineError) -> Response {
    if matches!(e, EngineError::Busy) {
        // The ceiling on pending sign-ins (the engine logged it).
        let mut page = render(
            StatusCode::SERVICE_UNAVAILABLE,
            &MessagePage::error(state.prefix(), "error-busy", "error-busy-message"),
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

/// Where a service's theme is served (`/static/themes/<service>/…`), when
/// it has one.
pub fn theme_links(state: &SharedState, service: Option<&str>) -> ThemeLinks {
    let Some(key) = service
        .and_then(|s| state.engine.service(s))
        .and_then(|r| r.display.theme.as_deref())
    else {
        return ThemeLinks::default();
    };
    let Some(theme) = state.settings.themes.get(key) else {
        return ThemeLinks::default();
    };
    let base = format!(
        "{}/static/themes/{}",
        state.prefix(),
        url::form_urlencoded::byte_serialize(key.as_bytes()).collect::<String>()
    );
    ThemeLinks {
        logo: theme.logo.as_ref().map(|_| format!("{base}/logo")),
        stylesheet: theme
            .accent_color
            .as_ref()
            .map(|_| format!("{base}/style.css")),
    }
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
