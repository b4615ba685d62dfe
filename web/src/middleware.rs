//! Security headers, request ids, tracing, timeouts, panic containment, the
//! audit context and the page language: everything around the routes, in
//! one hand-written service with one future per request.
//!
//! It was a stack of a dozen tower and `from_fn` layers. Each layer nested
//! its future in the next, and each `from_fn` cloned and boxed the rest of
//! the stack per request: on a CAS round trip (~50 µs of CPU) the stack
//! took a fifth, mostly moving futures about. Here the same work is plain
//! code in one `async` block, boxed once.

use crate::client_address::client_ip;
use crate::locale;
use crate::state::SharedState;
use axum::body::Body;
use axum::extract::{ConnectInfo, DefaultBodyLimit};
use axum::http::{header, HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use castellan_audit::RequestContext;
use castellan_logging::{self as logging, RequestLabel};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::{Layer, Service};

/// Largest request body accepted by any endpoint (login forms, SOAP).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// No request is served longer than this (the client gets a 408).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                   form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'";

/// Everything around the routes, as one layer. One `Router::layer` call,
/// because axum boxes every route's service again for each call.
pub fn wrap(app: Router, state: SharedState, https: bool) -> Router {
    let frame = FrameLayer(Arc::new(Shared {
        state,
        https,
        ids_base: rand::random(),
        ids: AtomicU64::new(0),
    }));
    app.layer(frame)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

struct Shared {
    state: SharedState,
    /// Reached over https: HSTS on every answer (RFC 6797), so that a later
    /// plain-http link cannot expose the CASTGC cookie or a login form.
    /// Subdomains are not the identity provider's to decide.
    https: bool,
    /// Request ids: a per-process random base and a counter (cheap, unique).
    ids_base: u32,
    ids: AtomicU64,
}

#[derive(Clone)]
pub struct FrameLayer(Arc<Shared>);

impl<S> Layer<S> for FrameLayer {
    type Service = Frame<S>;

    fn layer(&self, inner: S) -> Frame<S> {
        Frame {
            inner,
            shared: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Frame<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Service<Request<Body>> for Frame<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let prepared = shared.prepare(&mut request);
        // Called here rather than in the future: the future would need a
        // clone of the routes of its own, a boxed clone per request. Axum
        // only routes here; the handler runs when the future is polled,
        // inside the request's scopes. A panic costs its request only (500).
        let future = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))).ok();
        Box::pin(async move { Ok(shared.serve(prepared, future).await) })
    }
}

/// What the frame reads of a request before it is served.
struct Prepared {
    started: Instant,
    id: HeaderValue,
    label: RequestLabel,
    audit: Option<RequestContext>,
    page: locale::PageLocale,
    marks: locale::Marks,
}

impl Shared {
    fn prepare(&self, request: &mut Request<Body>) -> Prepared {
        let started = Instant::now();
        // A request id set by a proxy in front is kept, as tower-http did.
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let n = self.ids.fetch_add(1, Ordering::Relaxed);
                let id = HeaderValue::try_from(format!("{:08x}-{n}", self.ids_base))
                    .unwrap_or_else(|_| HeaderValue::from_static("-"));
                request
                    .headers_mut()
                    .insert(X_REQUEST_ID.clone(), id.clone());
                id
            }
        };
        let label = RequestLabel {
            id: id.clone(),
            method: request.method().clone(),
            uri: request.uri().clone(),
        };
        let audit = self
            .state
            .audit
            .is_some()
            .then(|| self.audit_context(request, &id));
        let (page, marks) = locale::choose(request);
        Prepared {
            started,
            id,
            label,
            audit,
            page,
            marks,
        }
    }

    async fn serve<F>(&self, prepared: Prepared, future: Option<F>) -> Response
    where
        F: Future<Output = Result<Response, Infallible>>,
    {
        let served = async move {
            let Some(future) = future else {
                return panicked();
            };
            let mut future = std::pin::pin!(future);
            let caught = std::future::poll_fn(|cx| {
                match std::panic::catch_unwind(AssertUnwindSafe(|| future.as_mut().poll(cx))) {
                    Ok(Poll::Pending) => Poll::Pending,
                    Ok(Poll::Ready(Ok(response))) => Poll::Ready(Some(response)),
                    Ok(Poll::Ready(Err(never))) => match never {},
                    Err(_) => Poll::Ready(None),
                }
            });
            match tokio::time::timeout(REQUEST_TIMEOUT, caught).await {
                Ok(Some(response)) => response,
                Ok(None) => panicked(),
                Err(_) => StatusCode::REQUEST_TIMEOUT.into_response(),
            }
        };
        let served = locale::scope(prepared.page, served);
        let audit = prepared.audit;
        let served = async move {
            match audit {
                Some(context) => castellan_audit::scope(context, served).await,
                None => served.await,
            }
        };
        let mut served = std::pin::pin!(logging::scope(prepared.label, served));
        let mut response = served.as_mut().await;

        locale::mark(&self.state, &prepared.marks, &mut response);
        let headers = response.headers_mut();
        if self.https && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
            headers.insert(
                header::STRICT_TRANSPORT_SECURITY,
                HeaderValue::from_static("max-age=31536000"),
            );
        }
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        if !headers.contains_key(header::CONTENT_SECURITY_POLICY) {
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
        }
        if !headers.contains_key(&X_REQUEST_ID) {
            headers.insert(X_REQUEST_ID.clone(), prepared.id);
        }
        if response.status().is_server_error() {
            let label = served.as_mut().take_value();
            let failed = || {
                tracing::error!(status = response.status().as_u16(), latency = ?prepared.started.elapsed(), "response failed");
            };
            match label {
                Some(label) => logging::in_scope(label, failed),
                None => failed(),
            }
        }
        response
    }

    /// The audit context: the request id above (the log records'), and
    /// the client address as throttling sees it.
    fn audit_context(&self, request: &Request<Body>, id: &HeaderValue) -> RequestContext {
        let client =
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(peer)| {
                    client_ip(
                        peer.ip(),
                        request.headers(),
                        &self.state.settings.trusted_proxies,
                    )
                });
        RequestContext {
            request_id: id.to_str().ok().map(str::to_owned),
            client,
        }
    }
}

fn panicked() -> Response {
    // The panic hook has printed the message and location.
    tracing::error!("a handler panicked");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}
