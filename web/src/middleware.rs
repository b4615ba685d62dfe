//! Security headers, request ids, tracing, timeouts and panic containment,
//! applied to every response in one place.

use crate::client_address::client_ip;
use crate::state::SharedState;
use axum::extract::DefaultBodyLimit;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderName, HeaderValue, Request};
use axum::response::Response;
use axum::Router;
use castellan_audit::RequestContext;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Largest request body accepted by any endpoint (login forms, SOAP).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a per-process random base and a counter (cheap, unique).
#[derive(Clone)]
struct RequestIds {
    base: u32,
    counter: std::sync::Arc<AtomicU64>,
}

impl MakeRequestId for RequestIds {
    fn make_request_id<B>(&mut self, _: &Request<B>) -> Option<RequestId> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n}", self.base))
            .ok()
            .map(RequestId::new)
    }
}

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                   form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'";

/// Everything around the routes, as one layer: request ids, the trace span,
/// security headers (HSTS when reached over https: RFC 6797, so that a
/// later plain-http link cannot expose the CASTGC cookie or a login form),
/// the timeout, panic containment, the body limit, the audit context and
/// the page language. One `Router::layer` call, because axum boxes every
/// route's service again for each call and clones each box per request: a
/// dozen separate layers cost a dozen allocations and drops per request.
pub fn wrap(app: Router, state: SharedState, https: bool) -> Router {
    let ids = RequestIds {
        base: rand::random(),
        counter: Default::default(),
    };
    // Subdomains are not the identity provider's to decide.
    let hsts = https.then(|| {
        SetResponseHeaderLayer::if_not_present(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        )
    });
    // Outermost first: the request id exists before the trace span that
    // logs it. The span names the path, never the query, which carries
    // tickets.
    app.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::new(X_REQUEST_ID.clone(), ids))
            .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    let id = req
                        .headers()
                        .get(&X_REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-");
                    tracing::info_span!("request", id, method = %req.method(), path = %req.uri().path())
                }),
            )
            .option_layer(hsts)
            .layer(SetResponseHeaderLayer::overriding(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_FRAME_OPTIONS,
                HeaderValue::from_static("DENY"),
            ))
            .layer(SetResponseHeaderLayer::overriding(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ))
            .layer(SetResponseHeaderLayer::if_not_present(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(30),
            ))
            .layer(CatchPanicLayer::new())
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            // The request id made above exists when the audit context is set.
            .layer(axum::middleware::from_fn_with_state(
                state.clone(),
                audit_scope,
            ))
            .layer(axum::middleware::from_fn_with_state(
                state,
                crate::locale::layer,
            )),
    )
}

/// Runs each request in its audit context: the request id made above (the
/// tracing span's), and the client address as throttling sees it.
pub async fn audit_scope(
    State(state): State<SharedState>,
    request: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    if state.audit.is_none() {
        return next.run(request).await;
    }
    let request_id = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| {
            client_ip(
                peer.ip(),
                request.headers(),
                &state.settings.trusted_proxies,
            )
        });
    castellan_audit::scope(RequestContext { request_id, client }, next.run(request)).await
}
