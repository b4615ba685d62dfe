//! `loadgen ceiling`: the like-for-like ceiling of a CAS SSO round trip on
//! this machine. Trivial axum handlers answer what the `sso` loop sends
//! with what Castellan answers (a login form, a 302 with a fresh random
//! ticket and the SSO cookie, CAS 3 XML naming the user with the bench
//! service's attributes), on a two-worker runtime like the server's, and
//! keep nothing: no store, no check, no logging. Castellan's SSO rate as a
//! share of this one, measured in the same run, shows how much of the
//! machine the server's own work takes (bench/run.sh prints the ratio).

use anyhow::Result;
use axum::extract::RawQuery;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use clap::Args;

#[derive(Args)]
pub struct CeilingArgs {
    /// Address to listen on, e.g. 127.0.0.1:8999.
    #[arg(long)]
    listen: std::net::SocketAddr,
    /// Path prefix, as in the server's public URL (`/cas`).
    #[arg(long, default_value = "/cas")]
    prefix: String,
    /// Runtime worker threads (the server uses one per CPU).
    #[arg(long, default_value_t = 2)]
    workers: usize,
}

/// 128 random bits from the thread's CSPRNG, as the server's ticket ids.
fn random_id(prefix: &str) -> String {
    let bytes: [u8; 16] = rand::random();
    format!("{prefix}-1-{}", URL_SAFE_NO_PAD.encode(bytes))
}

fn query_value(query: &Option<String>, key: &str) -> Option<String> {
    let q = query.as_deref()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

fn redirect_with_ticket(service: &str, cookie: Option<String>) -> Response {
    let sep = if service.contains('?') { '&' } else { '?' };
    let location = format!("{service}{sep}ticket={}", random_id("ST"));
    let mut r = (StatusCode::FOUND, [(header::LOCATION, location)]).into_response();
    if let Some(c) = cookie {
        if let Ok(v) = c.parse() {
            r.headers_mut().insert(header::SET_COOKIE, v);
        }
    }
    r
}

async fn login_get(RawQuery(query): RawQuery, headers: HeaderMap) -> Response {
    let has_session = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.contains("CASTGC="));
    match (has_session, query_value(&query, "service")) {
        (true, Some(service)) => redirect_with_ticket(&service, None),
        _ => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            format!(
                "<!doctype html><form method=\"post\"><input type=\"hidden\" name=\"execution\" \
                 value=\"{}\"><button>Sign in</button></form>",
                random_id("LF")
            ),
        )
            .into_response(),
    }
}

async fn login_post(RawQuery(query): RawQuery) -> Response {
    let cookie = format!(
        "CASTGC={}; Path=/cas; HttpOnly; Secure; SameSite=Lax",
        random_id("TGT")
    );
    match query_value(&query, "service") {
        Some(service) => redirect_with_ticket(&service, Some(cookie)),
        None => ([(header::SET_COOKIE, cookie)], "signed in").into_response(),
    }
}

async fn service_validate(RawQuery(query): RawQuery) -> Response {
    if query_value(&query, "ticket").is_none() {
        return StatusCode::BAD_REQUEST.into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/xml; charset=utf-8")],
        "<cas:serviceResponse xmlns:cas=\"http://www.yale.edu/tp/cas\">\n  \
         <cas:authenticationSuccess>\n    <cas:user>bench</cas:user>\n    \
         <cas:attributes>\n      <cas:cn>Bench User</cas:cn>\n      \
         <cas:mail>bench@example.org</cas:mail>\n      <cas:memberOf>staff</cas:memberOf>\n    \
         </cas:attributes>\n  </cas:authenticationSuccess>\n</cas:serviceResponse>\n",
    )
        .into_response()
}

pub fn run(args: &CeilingArgs) -> Result<()> {
    let p = args.prefix.trim_end_matches('/');
    let app = Router::new()
        .route(&format!("{p}/login"), get(login_get).post(login_post))
        .route(&format!("{p}/p3/serviceValidate"), get(service_validate))
        .route(&format!("{p}/health"), get(|| async { "ok" }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        eprintln!("ceiling listening on {}", args.listen);
        axum::serve(listener, app).await?;
        Ok(())
    })
}
