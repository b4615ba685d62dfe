//! Delegated authentication: `/login?client_name=NAME` hands the login to an
//! upstream identity provider, `/delegated/NAME/callback` takes it back.
//!
//! The one-time state lives in the shared store and is bound to the browser
//! by a cookie holding a second random value: a callback with a missing,
//! wrong or replayed state, or from another browser, fails.

use crate::pages::{render, Link, MessagePage};
use crate::respond::{redirect, unavailable};
use crate::state::SharedState;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_core::ids::new_ticket_id;
use castellan_core::{AuditEvent, AuditKind, AuthnMethod, AuthnMethods, Outcome};
use castellan_delegation::pending::{state_key, PendingLogin, STATE_TTL};
use castellan_delegation::{DelegationError, Finish, Start};
use castellan_i18n::Msg;
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

const BINDING_COOKIE: &str = "CASDELEG";

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn random() -> String {
    new_ticket_id("DS")
}

fn binding_cookie(state: &SharedState, value: &str, max_age: Option<u64>) -> HeaderValue {
    let secure = if state.settings.secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let age = max_age
        .map(|a| format!("; Max-Age={a}"))
        .unwrap_or_else(|| "; Max-Age=0".into());
    let path = format!("{}/delegated", state.prefix());
    // A SAML IdP posts the Response from its own site: a Lax cookie would
    // not come along. None needs Secure, so plain-http deployments keep Lax.
    let same_site = if state.settings.secure_cookies() {
        "None"
    } else {
        "Lax"
    };
    HeaderValue::from_str(&format!(
        "{BINDING_COOKIE}={value}; Path={path}; HttpOnly; SameSite={same_site}{age}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("CASDELEG=; Max-Age=0"))
}

fn binding_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| p.trim().split_once('='))
        .find(|(k, _)| *k == BINDING_COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// A failure the user sees: what happened, and a way back.
fn failure(state: &SharedState, status: StatusCode, message: &'static str) -> Response {
    failure_for(state, status, message, None)
}

/// A failure with the way back to the login for the same service.
fn failure_for(
    state: &SharedState,
    status: StatusCode,
    message: &'static str,
    service: Option<&str>,
) -> Response {
    failure_page(
        state,
        status,
        MessagePage::error(state.prefix(), "error-sign-in-failed", message),
        service,
    )
}

/// An upstream's own error, told to the administrator beside a general
/// message.
fn upstream_failure(
    state: &SharedState,
    status: StatusCode,
    e: &dyn std::fmt::Display,
    service: Option<&str>,
) -> Response {
    let page = MessagePage::error(state.prefix(), "error-sign-in-failed", "upstream-failed")
        .with_technical_detail(&e.to_string());
    failure_page(state, status, page, service)
}

fn failure_page(
    state: &SharedState,
    status: StatusCode,
    mut page: MessagePage,
    service: Option<&str>,
) -> Response {
    let href = match service {
        Some(s) => format!("{}/login?service={}", state.prefix(), enc(s)),
        None => format!("{}/login", state.prefix()),
    };
    page.link = Some(Link {
        href,
        label: "back-to-sign-in".into(),
    });
    render(status, &page)
}

/// The redirect_uri registered at the upstream (the state travels beside it).
fn callback_url(state: &SharedState, name: &str) -> String {
    format!(
        "{}/delegated/{}/callback",
        state.settings.public_url.as_str().trim_end_matches('/'),
        enc(name)
    )
}

/// Starts a delegated login (from `/login?client_name=NAME`).
pub async fn start(
    state: &SharedState,
    client: Option<std::net::IpAddr>,
    name: &str,
    service: Option<String>,
    method: Option<String>,
    renew: bool,
    gateway: bool,
) -> Response {
    let Some(upstream) = state.upstreams.get(name) else {
        return failure(state, StatusCode::BAD_REQUEST, "upstream-unknown");
    };
    // CAS 3.0 §2.1.1: renew wins over gateway.
    let gateway = gateway && !renew;
    // renew: the login must be a fresh one, which only an upstream that can
    // prove it may be asked for; anything else would pretend.
    if renew && !upstream.connector().proves_fresh_login() {
        tracing::info!(upstream = %name, "renew asked of an upstream that cannot prove a fresh login");
        let mut page = MessagePage::error(
            state.prefix(),
            "error-sign-in-failed",
            Msg::new("upstream-cannot-renew").with("upstream", upstream.connector().display_name()),
        );
        let mut href = format!("{}/login?renew=true", state.prefix());
        if let Some(s) = &service {
            href.push_str(&format!("&service={}", enc(s)));
        }
        page.link = Some(Link {
            href,
            label: "back-to-sign-in".into(),
        });
        return render(StatusCode::FORBIDDEN, &page);
    }
    // Gateway: only an upstream that can answer without a page may be asked.
    if gateway && !upstream.connector().supports_passive() {
        return match service.as_deref() {
            Some(s) => redirect(s),
            None => failure(state, StatusCode::BAD_REQUEST, "upstream-not-silent"),
        };
    }
    let st = random();
    let binding = random();
    let callback = callback_url(state, name);
    let started_at = state.now() / 1000;
    let started = match upstream
        .connector()
        .start(&Start {
            callback_url: &callback,
            state: &st,
            renew,
            passive: gateway,
        })
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(upstream = %name, error = %e, "delegated login could not start");
            return upstream_failure(state, StatusCode::BAD_GATEWAY, &e, None);
        }
    };
    if let Err(e) = state.engine.admit_pending_flow(client) {
        return unavailable(state, &e);
    }
    let pending = PendingLogin {
        upstream: name.to_owned(),
        service,
        method: method.filter(|m| m.len() <= 8),
        renew,
        gateway,
        started_at,
        binding: binding.clone(),
        saved: started.saved,
    };
    let Ok(bytes) = pending.encode() else {
        return failure(
            state,
            StatusCode::INTERNAL_SERVER_ERROR,
            "upstream-not-started",
        );
    };
    if let Err(e) = state
        .engine
        .store()
        .put_record(&state_key(&st), &bytes, STATE_TTL)
        .await
    {
        return unavailable(state, &e.into());
    }
    let location = started.redirect;
    match HeaderValue::from_str(&location) {
        Ok(l) => (
            StatusCode::FOUND,
            [
                (header::LOCATION, l),
                (
                    header::SET_COOKIE,
                    binding_cookie(state, &binding, Some(STATE_TTL.as_secs())),
                ),
            ],
        )
            .into_response(),
        Err(_) => failure(state, StatusCode::BAD_GATEWAY, "upstream-bad-address"),
    }
}

/// `/delegated/{name}/metadata`: a SAML upstream's SP metadata.
pub async fn metadata(State(state): State<SharedState>, Path(name): Path<String>) -> Response {
    match state
        .upstreams
        .get(&name)
        .and_then(|u| u.connector().metadata())
    {
        Some(xml) => (
            [(header::CONTENT_TYPE, "application/samlmetadata+xml")],
            xml,
        )
            .into_response(),
        None => failure(&state, StatusCode::NOT_FOUND, "upstream-no-such-sp"),
    }
}

/// The callback's parameters, each at most once: a parameter given twice
/// (two SAMLResponses, two RelayStates, two tickets) could be read one way
/// here and another way by whatever sits in front; it is refused.
fn single_params(raw: &[u8]) -> Option<HashMap<String, String>> {
    let mut params = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if params.insert(k.into_owned(), v.into_owned()).is_some() {
            return None;
        }
    }
    Some(params)
}

fn duplicated(state: &SharedState, name: &str) -> Response {
    tracing::warn!(upstream = %name, "delegation callback with a parameter given twice");
    failure(state, StatusCode::BAD_REQUEST, "upstream-malformed")
}

/// `/delegated/{name}/acs`: a SAML upstream's Response (HTTP-POST), the
/// RelayState carrying the state.
pub async fn acs(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let clear = binding_cookie(&state, "", None);
    let mut response = match single_params(&body) {
        // The state travels as RelayState only: a `state` in the form is not it.
        Some(mut params) if !params.contains_key("state") => {
            if let Some(relay) = params.remove("RelayState") {
                params.insert("state".into(), relay);
            }
            finish(&state, &name, &params, &headers).await
        }
        _ => duplicated(&state, &name),
    };
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

/// `/delegated/{name}/callback`: verify, map, open the SSO session.
pub async fn callback(
    State(state): State<SharedState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let clear = binding_cookie(&state, "", None);
    let mut response = match single_params(query.unwrap_or_default().as_bytes()) {
        Some(params) => finish(&state, &name, &params, &headers).await,
        None => duplicated(&state, &name),
    };
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

async fn finish(
    state: &SharedState,
    name: &str,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    let expired = || failure(state, StatusCode::BAD_REQUEST, "upstream-expired");
    let Some(st) = params.get("state").filter(|s| s.len() <= 64) else {
        return expired();
    };
    let pending = match state.engine.store().take_record(&state_key(st)).await {
        Ok(Some(bytes)) => {
            state.engine.release_pending_flow();
            match PendingLogin::decode(&bytes) {
                Ok(p) => p,
                Err(_) => return expired(),
            }
        }
        Ok(None) => return expired(),
        Err(e) => return unavailable(state, &e.into()),
    };
    let bound = binding_of(headers)
        .is_some_and(|b| bool::from(b.as_bytes().ct_eq(pending.binding.as_bytes())));
    if pending.upstream != name || !bound {
        tracing::warn!(upstream = %name, "delegation callback with a state of another browser or upstream");
        return expired();
    }
    let Some(upstream) = state.upstreams.get(name) else {
        return expired();
    };
    // CAS gateway: the upstream came back without a login.
    if pending.gateway
        && !params.contains_key("ticket")
        && !params.contains_key("code")
        && !params.contains_key("SAMLResponse")
    {
        if let Some(service) = pending
            .service
            .as_deref()
            .filter(|s| state.engine.service(s).is_some())
        {
            return redirect(service);
        }
    }
    let callback = callback_url(state, name);
    let authenticated = match upstream
        .connector()
        .finish(&Finish {
            params,
            callback_url: &callback,
            state: st,
            saved: &pending.saved,
            renew: pending.renew,
            started_at: pending.started_at,
        })
        .await
    {
        Ok(a) => a,
        // Gateway: no login at the upstream means back to the service,
        // ticketless, never an error page (CAS 3.0 §2.1.1).
        Err(e) if pending.gateway && pending.service.is_some() => {
            tracing::info!(upstream = %name, error = %e, "no passive login at the upstream");
            match pending
                .service
                .as_deref()
                .filter(|s| state.engine.service(s).is_some())
            {
                Some(service) => return redirect(service),
                None => return upstream_failure(state, StatusCode::FORBIDDEN, &e, None),
            }
        }
        Err(e) => {
            tracing::warn!(upstream = %name, error = %e, "delegated login failed");
            upstream_login(
                state,
                name,
                pending.service.as_deref(),
                None,
                Outcome::Failed,
            );
            let status = match e {
                DelegationError::Unavailable(_) => StatusCode::BAD_GATEWAY,
                _ => StatusCode::FORBIDDEN,
            };
            return upstream_failure(state, status, &e, pending.service.as_deref());
        }
    };
    // renew: the upstream was asked for a fresh login and must have proved
    // one (CAS 3.0 §2.1.1).
    if pending.renew && !authenticated.fresh {
        tracing::warn!(upstream = %name, "renew: the upstream did not prove a fresh login");
        return failure_for(
            state,
            StatusCode::FORBIDDEN,
            "upstream-not-fresh",
            pending.service.as_deref(),
        );
    }
    // The ticket is from a new login only when the upstream proved that the
    // user presented credentials for this login: a trip through the
    // upstream's SSO session is not one, or a service validating with
    // renew=true would accept a login whose renew was dropped on the way.
    let from_new_login = authenticated.fresh;
    let Some(principal) = upstream.mapping().apply(authenticated.principal) else {
        tracing::warn!(upstream = %name, "the upstream identity lacks what the principal template names");
        return failure(state, StatusCode::FORBIDDEN, "upstream-missing-attributes");
    };
    let mut principal = principal;
    // The groups live at home: the directory adds its attributes (its
    // values win over the upstream's of the same name).
    if let Some(source) = state.attributes_from.get(name) {
        match source.lookup(&principal.id).await {
            Ok(Some(attributes)) => principal.attributes.extend(attributes),
            Ok(None) => {
                tracing::info!(upstream = %name, user = %principal.id, "not in the attributes_from directory");
            }
            Err(e) => {
                tracing::error!(upstream = %name, user = %principal.id, error = %e, "attributes_from: directory unavailable");
                return render(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &MessagePage::unavailable(state.prefix()),
                );
            }
        }
    }
    tracing::info!(upstream = %name, user = %principal.id, "delegated login");
    upstream_login(
        state,
        name,
        pending.service.as_deref(),
        Some(&principal.id),
        Outcome::Ok,
    );
    let service = pending
        .service
        .as_deref()
        .filter(|s| state.engine.service(s).is_some());
    let mut methods = AuthnMethods::of(AuthnMethod::Delegated);
    if authenticated.mfa && upstream.trust_mfa() {
        methods = methods.with(AuthnMethod::UpstreamMfa);
    }
    let signed_in = crate::sign_in::complete_sign_in(
        state,
        headers,
        crate::sign_in::Completion {
            principal: Arc::new(principal),
            service,
            from_new_login,
            method: pending.method.as_deref(),
            methods,
            step_up: None,
            passive: pending.gateway,
            consented: None,
        },
    )
    .await;
    match signed_in {
        Ok(response) => response,
        Err(page) => {
            let message = Msg::new("signed-in-through")
                .with("user", page.signed.session.principal.id.clone())
                .with("upstream", upstream.connector().display_name());
            page.with_page(render(
                StatusCode::OK,
                &MessagePage {
                    prefix: state.prefix().to_owned(),
                    title: "signed-in-title".into(),
                    heading: "signed-in-heading".into(),
                    message,
                    detail: None,
                    tone: "success",
                    link: None,
                },
            ))
        }
    }
}

/// The audit line of a login at an upstream: only this module sees its
/// outcome (the core sees the sign-in that follows).
fn upstream_login(
    state: &SharedState,
    name: &str,
    service: Option<&str>,
    user: Option<&str>,
    outcome: Outcome,
) {
    let mut event = AuditEvent::new(AuditKind::UpstreamLogin, outcome).source(name);
    event.user = user.map(str::to_owned);
    if let Some(service) = service {
        if let Some(registered) = state.engine.service(service) {
            event = event
                .service(&registered.name)
                .protocol(state.engine.protocol_of(service));
        }
    }
    state.engine.record(event);
}
