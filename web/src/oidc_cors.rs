//! CORS on the OIDC endpoints browser apps call: answers preflights and
//! adds the headers to actual responses, as `castellan_oidc::cors` decides.

use crate::state::SharedState;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use castellan_oidc::cors::CorsEndpoint;

fn set_headers(response: &mut Response, headers: Vec<(&'static str, String)>) {
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            let name = HeaderName::from_static(name);
            if name == header::VARY {
                response.headers_mut().append(name, v);
            } else {
                response.headers_mut().insert(name, v);
            }
        }
    }
}

pub async fn layer(
    State((state, endpoint)): State<(SharedState, CorsEndpoint)>,
    request: Request,
    next: Next,
) -> Response {
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let cors = state.oidc.cors();
    let preflight_method = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok());
    if let (&Method::OPTIONS, Some(origin), Some(method)) =
        (request.method(), origin.as_deref(), preflight_method)
    {
        return match cors.preflight(endpoint, origin, method) {
            Some(headers) => {
                let mut response = StatusCode::NO_CONTENT.into_response();
                set_headers(&mut response, headers);
                response
            }
            None => {
                tracing::info!(%origin, "CORS preflight refused");
                StatusCode::FORBIDDEN.into_response()
            }
        };
    }
    let mut response = next.run(request).await;
    set_headers(
        &mut response,
        cors.response_headers(endpoint, origin.as_deref()),
    );
    response
}
