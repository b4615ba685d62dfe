//! `/health`, `/metrics` and the pages' static files.

use crate::state::SharedState;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

pub async fn health(State(state): State<SharedState>) -> Response {
    match state.engine.store().ping().await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CACHE_CONTROL, "no-store")],
            "ok\n",
        )
            .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: ticket store unreachable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::CACHE_CONTROL, "no-store")],
                "ticket store unreachable\n",
            )
                .into_response()
        }
    }
}

/// The token signing keys' public halves (RFC 7517).
pub async fn jwks(State(state): State<SharedState>) -> Response {
    let Some(keys) = state.oidc.signing_keys().get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":"temporarily_unavailable","error_description":"signing keys not ready"}"#,
        )
            .into_response();
    };
    let body = keys
        .keys()
        .jwks(castellan_oidc::signing_keys::unix_now())
        .to_string();
    (
        [
            (header::CONTENT_TYPE, "application/jwk-set+json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

pub async fn metrics(State(state): State<SharedState>) -> Response {
    let entries = state
        .memory_store
        .as_ref()
        .map(|m| m.len() as u64)
        .unwrap_or(0);
    let mut gauges = vec![(
        "memory_store_entries",
        "Entries held by the in-memory ticket store, expired ones not yet swept included",
        entries,
    )];
    gauges.extend(state.reloads.gauges());
    let mut body = state.metrics.render(&gauges);
    if let Some(audit) = &state.audit {
        crate::metrics::render_counter(
            &mut body,
            "audit_events_written",
            "Audit log lines written",
            audit.written(),
        );
        crate::metrics::render_counter(
            &mut body,
            "audit_events_dropped",
            "Audit log lines dropped because the queue was full",
            audit.dropped(),
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

pub async fn static_file(Path(file): Path<String>) -> Response {
    let (content_type, body): (&str, &'static str) = match file.as_str() {
        "castellan.css" => (
            "text/css; charset=utf-8",
            include_str!("../static/castellan.css"),
        ),
        "castellan.svg" => ("image/svg+xml", include_str!("../static/castellan.svg")),
        "autosubmit.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../static/autosubmit.js"),
        ),
        "webauthn.js" => (
            "text/javascript; charset=utf-8",
            include_str!("../static/webauthn.js"),
        ),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// `/static/themes/{service}/logo` and `…/style.css`: a service's theme,
/// read and checked at load; served from our origin, so the CSP's
/// `img-src 'self'` and `style-src 'self'` hold.
pub async fn theme_file(
    State(state): State<SharedState>,
    Path((name, file)): Path<(String, String)>,
) -> Response {
    let Some(theme) = state.settings.themes.get(&name) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match (file.as_str(), &theme.logo) {
        ("logo", Some(logo)) => (
            [
                (header::CONTENT_TYPE, logo.content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            axum::body::Bytes::copy_from_slice(&logo.bytes),
        )
            .into_response(),
        ("style.css", _) if theme.accent_color.is_some() => (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            theme.stylesheet(),
        )
            .into_response(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}
