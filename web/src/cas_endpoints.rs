//! Routes of the CAS validation and proxy endpoints to the protocol crate.

use crate::metrics::Metrics;
use crate::state::SharedState;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_cas::{CasResponse, ProxyParams, ValidateParams, ValidationEndpoint};
use serde::Deserialize;

fn respond(r: CasResponse) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    (
        status,
        [
            (header::CONTENT_TYPE, r.content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        r.body,
    )
        .into_response()
}

async fn run(
    state: SharedState,
    query: Result<Query<ValidateParams>, QueryRejection>,
    endpoint: ValidationEndpoint,
) -> Response {
    // Unreadable parameters (duplicates, bad encoding) validate as missing
    // ones: INVALID_REQUEST in the endpoint's own format.
    let params = query.map(|Query(p)| p).unwrap_or_default();
    let response = castellan_cas::validate(&state.engine, endpoint, &params).await;
    count(&state, response.failure.is_none());
    respond(response)
}

fn count(state: &SharedState, success: bool) {
    Metrics::inc(if success {
        &state.metrics.validations_succeeded
    } else {
        &state.metrics.validations_failed
    });
}

type Params = Result<Query<ValidateParams>, QueryRejection>;

pub async fn validate(State(s): State<SharedState>, q: Params) -> Response {
    run(s, q, ValidationEndpoint::Cas1).await
}

pub async fn service_validate(State(s): State<SharedState>, q: Params) -> Response {
    run(s, q, ValidationEndpoint::ServiceValidate).await
}

pub async fn proxy_validate(State(s): State<SharedState>, q: Params) -> Response {
    run(s, q, ValidationEndpoint::ProxyValidate).await
}

pub async fn p3_service_validate(State(s): State<SharedState>, q: Params) -> Response {
    run(s, q, ValidationEndpoint::P3ServiceValidate).await
}

pub async fn p3_proxy_validate(State(s): State<SharedState>, q: Params) -> Response {
    run(s, q, ValidationEndpoint::P3ProxyValidate).await
}

pub async fn proxy(
    State(state): State<SharedState>,
    query: Result<Query<ProxyParams>, QueryRejection>,
) -> Response {
    let params = query.map(|Query(p)| p).unwrap_or_default();
    let response = castellan_cas::proxy(&state.engine, &params).await;
    if response.failure.is_none() {
        Metrics::inc(&state.metrics.proxy_tickets_granted);
    }
    respond(response)
}

#[derive(Debug, Default, Deserialize)]
pub struct SamlQuery {
    #[serde(rename = "TARGET")]
    pub target: Option<String>,
}

pub async fn saml_validate(
    State(state): State<SharedState>,
    query: Result<Query<SamlQuery>, QueryRejection>,
    body: Bytes,
) -> Response {
    let target = query.ok().and_then(|Query(q)| q.target);
    let response = castellan_cas::saml_validate(
        &state.engine,
        target.as_deref(),
        &body,
        &state.issuer,
        state.now(),
    )
    .await;
    count(&state, response.failure.is_none());
    respond(response)
}
