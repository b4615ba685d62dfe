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
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};

/// Largest request body accepted by any endpoint (login forms, SOAP).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// No request is served longer than this (the client gets a 408).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; \
                   form-action 'self' https: http:; frame-ancestors 'none'; base-uri 'none'";

/// The application as served: the routes inside the frame.
pub type App = Frame<Limited>;

/// The routes with the body limit every extractor reads.
type Limited = <DefaultBodyLimit as Layer<Router>>::Service;

/// Everything around the routes, around the router as a whole rather than
/// as a `Router::layer`: axum applies a layer to each route and boxes each
/// route again (a boxed clone and a boxed future per request for every
/// layer). Unmatched paths (the 404 fallback) go through the frame too.
pub fn wrap(app: Router, state: SharedState, https: bool) -> App {
    Frame {
        inner: DefaultBodyLimit::max(MAX_BODY_BYTES).layer(app),
        shared: Arc::new(Shared {
            state,
            https,
            ids_base: rand::random(),
            ids: AtomicU64::new(0),
        }),
    }
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
    type Future = Framed<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let shared = self.shared.clone();
        let prepared = shared.prepare(&mut request);
        // Axum only routes here; the handler runs when the future is
        // polled, inside the request's scopes. A panic costs its request
        // only (500).
        let future = std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request))).ok();
        let guarded = Guarded {
            future,
            deadline: None,
        };
        // Plain nested futures, no `async` blocks: each block wrapping the
        // next held a copy of what it wrapped, and the request's future
        // had grown to 4.8 KB, moved into a box per request.
        Framed {
            served: logging::scope(
                prepared.label,
                locale::scope(
                    prepared.page,
                    castellan_audit::scope(prepared.audit, guarded),
                ),
            ),
            finish: Finish {
                shared,
                started: prepared.started,
                id: prepared.id,
                marks: prepared.marks,
            },
        }
    }
}

type Scoped<F> = TaskLocalFuture<
    RequestLabel,
    TaskLocalFuture<locale::PageLocale, TaskLocalFuture<Option<Arc<RequestContext>>, Guarded<F>>>,
>;

pin_project! {
    /// A request being served inside its scopes (log label, page language,
    /// audit context), then marked with the headers every answer carries.
    pub struct Framed<F> {
        #[pin]
        served: Scoped<F>,
        finish: Finish,
    }
}

/// What the frame adds to an answer.
struct Finish {
    shared: Arc<Shared>,
    started: Instant,
    id: HeaderValue,
    marks: locale::Marks,
}

impl<F> Future for Framed<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Poll::Ready(mut response) = this.served.as_mut().poll(cx) else {
            return Poll::Pending;
        };
        this.finish.mark(&mut response);
        if response.status().is_server_error() {
            let failed = || {
                tracing::error!(status = response.status().as_u16(), latency = ?this.finish.started.elapsed(), "response failed");
            };
            match this.served.take_value() {
                Some(label) => logging::in_scope(label, failed),
                None => failed(),
            }
        }
        Poll::Ready(Ok(response))
    }
}

pin_project! {
    /// The routes' future, its panics caught and its time bounded. The
    /// deadline is set only if the answer is not ready at once: most are.
    struct Guarded<F> {
        // `None`: calling the routes panicked.
        #[pin]
        future: Option<F>,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F> Future for Guarded<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Response;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response> {
        let this = self.project();
        let Some(future) = this.future.as_pin_mut() else {
            return Poll::Ready(panicked());
        };
        match std::panic::catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Ready(Ok(response))) => return Poll::Ready(response),
            Ok(Poll::Ready(Err(never))) => match never {},
            Err(_) => return Poll::Ready(panicked()),
            Ok(Poll::Pending) => {}
        }
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(REQUEST_TIMEOUT)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(StatusCode::REQUEST_TIMEOUT.into_response()),
            Poll::Pending => Poll::Pending,
        }
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
        // A request id set by a proxy in front is kept.
        let id = match request.headers().get(&X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let n = self.ids.fetch_add(1, Ordering::Relaxed);
                // Sized once (8 hex digits, a dash, up to 20 digits).
                let mut text = String::with_capacity(29);
                let _ = write!(text, "{:08x}-{n}", self.ids_base);
                let id =
                    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("-"));
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

impl Finish {
    /// The headers every answer carries.
    fn mark(&self, response: &mut Response) {
        // Room for what follows at once, rather than growing the map twice.
        response.headers_mut().reserve(8);
        locale::mark(&self.shared.state, &self.marks, response);
        let headers = response.headers_mut();
        if self.shared.https && !headers.contains_key(header::STRICT_TRANSPORT_SECURITY) {
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
            headers.insert(X_REQUEST_ID.clone(), self.id.clone());
        }
    }
}

fn panicked() -> Response {
    // The panic hook has printed the message and location.
    tracing::error!("a handler panicked");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{config, state};
    use axum::routing::get;
    use std::path::Path;

    async fn framed(routes: Router) -> (App, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("castellan-frame-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("data dir");
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:8080\"\npublic_url = \"https://sso.example.org/cas\"\n\
             data_dir = {:?}\n",
            dir.display().to_string()
        );
        let settings = config::parse(&text, Path::new("/etc/castellan"), false).expect("valid");
        let lasting = state::Lasting::open(&settings).await.expect("stores");
        let state = state::build(settings, &lasting, None).await.expect("state");
        (wrap(routes, state, true), dir)
    }

    async fn answer(app: &App, path: &str) -> Response {
        let request = Request::get(path).body(Body::empty()).expect("request");
        match app.clone().call(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    #[tokio::test]
    async fn every_answer_is_marked_and_a_stuck_or_panicking_handler_costs_its_request_only() {
        let (app, dir) = framed(
            Router::new()
                .route("/ok", get(|| async { "ok" }))
                .route("/stuck", get(std::future::pending::<&'static str>))
                .route(
                    "/panics",
                    get(|| async {
                        if REQUEST_TIMEOUT.as_secs() > 0 {
                            panic!("handler bug");
                        }
                        "unreachable"
                    }),
                ),
        )
        .await;
        // Paused once the stores are open: with the clock paused from the
        // start, the database pool's connect timeout passed at once.
        tokio::time::pause();
        let ok = answer(&app, "/ok").await;
        assert_eq!(ok.status(), StatusCode::OK);
        let headers = ok.headers();
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
        assert_eq!(
            headers[header::STRICT_TRANSPORT_SECURITY],
            "max-age=31536000"
        );
        assert_eq!(headers[header::CONTENT_SECURITY_POLICY], CSP);
        let id = headers[&X_REQUEST_ID].to_str().expect("ascii").to_owned();
        assert_ne!(
            answer(&app, "/ok").await.headers()[&X_REQUEST_ID],
            id.as_str()
        );
        // Paths no route matches are framed too.
        let missing = answer(&app, "/missing").await;
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        assert_eq!(missing.headers()[header::X_FRAME_OPTIONS], "DENY");
        // Time is paused: the 30 s bound passes as soon as nothing else can run.
        let stuck = answer(&app, "/stuck").await;
        assert_eq!(stuck.status(), StatusCode::REQUEST_TIMEOUT);
        assert!(stuck.headers().contains_key(&X_REQUEST_ID));
        let panicked = answer(&app, "/panics").await;
        assert_eq!(panicked.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            panicked.headers()[header::X_CONTENT_TYPE_OPTIONS],
            "nosniff"
        );
        assert_eq!(answer(&app, "/ok").await.status(), StatusCode::OK);
        let _ = std::fs::remove_dir_all(dir);
    }
}
