//! The web side of the one sign-in sequence ([`Engine::sign_in`]): whatever
//! proved who the user is (the password form, an upstream, a second
//! factor) ends here, with the session cookie and the service's ticket; or,
//! when the service asks for a second factor not yet given, with the
//! second step (`/login/mfa`); when it asks consent not yet given, with the
//! consent page (`/login/consent`).
//!
//! [`Engine::sign_in`]: castellan_core::Engine::sign_in

use crate::cookies::{self, Browser};
use crate::metrics::Metrics;
use crate::pages::{
    render, ConsentPage, Link, MessagePage, PostRedirectPage, SecondStepPage, TotpOffer,
};
use crate::respond::{redirect, unavailable};
use crate::state::SharedState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use castellan_cas::service_url::with_ticket;
use castellan_core::{
    AfterConsent, AuthnMethods, ConsentRefusal, EngineError, PendingConsent, PendingSignIn,
    Principal, SignIn, SignedIn,
};
use castellan_mfa::MfaError;
use std::sync::Arc;

/// Sends the browser back to the service with its ticket (302, or a form
/// POST when the client asked for `method=POST`).
pub fn to_service(
    state: &SharedState,
    service: &str,
    ticket: &str,
    method: Option<&str>,
) -> Response {
    if method.is_some_and(|m| m.eq_ignore_ascii_case("post")) {
        render(
            StatusCode::OK,
            &PostRedirectPage {
                prefix: state.prefix().to_owned(),
                action: service.to_owned(),
                fields: vec![("ticket".to_owned(), ticket.to_owned())],
            },
        )
    } else {
        redirect(&with_ticket(service, ticket))
    }
}

/// A login whose factors passed, to turn into a session.
pub struct Completion<'a> {
    pub principal: Arc<Principal>,
    /// The service to grant a ticket for, if the login was for one.
    pub service: Option<&'a str>,
    /// Whether the user presented primary credentials for this very login.
    pub from_new_login: bool,
    /// The CAS `method` the ticket goes back with.
    pub method: Option<&'a str>,
    /// How the user proved who they are (all factors so far).
    pub methods: AuthnMethods,
    /// The session whose first factor a second one completes (step-up).
    pub step_up: Option<&'a str>,
    /// A passive login (CAS gateway): nothing may be asked of the user,
    /// so a second factor still needed sends the browser back without a
    /// ticket.
    pub passive: bool,
    /// The digest of the release the user just accepted on the consent
    /// page, if any.
    pub consented: Option<&'a str>,
}

/// The web side of the one sign-in sequence ([`Engine::sign_in`]): the
/// session cookie, and the service's ticket sent back to it. A service that
/// asks for a second factor the login has not given gets the second step
/// instead, and nothing of the session exists until it passes. `Err` holds
/// the sign-in when it was for no service, for the caller's own page.
///
/// [`Engine::sign_in`]: castellan_core::Engine::sign_in
pub async fn complete_sign_in(
    state: &SharedState,
    headers: &HeaderMap,
    login: Completion<'_>,
) -> Result<Response, SignedInPage> {
    if login.step_up.is_none() {
        if let Some(registered) = login.service.and_then(|s| state.engine.service(s)) {
            let needed = state
                .engine
                .needs_second_factor(registered, &login.principal.id, login.methods, false)
                .await;
            match needed {
                Ok(false) => {}
                Ok(true) if login.passive => {
                    return Ok(redirect(login.service.unwrap_or_default()));
                }
                Ok(true) => {
                    let browser = Browser::of(headers);
                    let pending = PendingSignIn {
                        principal: login.principal,
                        methods: login.methods,
                        service: login.service.map(str::to_owned),
                        long_term: false,
                        from_new_login: login.from_new_login,
                        step_up: None,
                        browser: browser.id.clone(),
                        response_method: login.method.map(str::to_owned),
                        challenge: Vec::new(),
                    };
                    return Ok(begin(state, &browser, pending).await);
                }
                Err(e) => return Ok(unavailable(state, &e)),
            }
        }
    }
    // The service's consent, once the factors passed: nothing of the
    // session exists until the user decided either.
    if let (Some(service), None) = (login.service, login.consented) {
        match state.engine.consent_needed(service, &login.principal).await {
            Ok(None) => {}
            Ok(Some(_)) if login.passive => {
                return Ok(cannot_ask(state, service));
            }
            Ok(Some(ask)) => {
                let browser = Browser::of(headers);
                let pending = PendingConsent {
                    principal: login.principal.clone(),
                    service: service.to_owned(),
                    ask,
                    browser: browser.id.clone(),
                    response_method: login.method.map(str::to_owned),
                    then: AfterConsent::SignIn(PendingSignIn {
                        principal: login.principal,
                        methods: login.methods,
                        service: Some(service.to_owned()),
                        long_term: false,
                        from_new_login: login.from_new_login,
                        step_up: login.step_up.map(str::to_owned),
                        browser: browser.id.clone(),
                        response_method: login.method.map(str::to_owned),
                        challenge: Vec::new(),
                    }),
                };
                return Ok(ask_consent(state, &browser, pending).await);
            }
            Err(e) => return Ok(unavailable(state, &e)),
        }
    }
    let previous = match login.step_up {
        Some(id) => Some(id.to_owned()),
        None => cookies::session_id(headers),
    };
    let signed = state
        .engine
        .sign_in(SignIn {
            previous: previous.as_deref(),
            principal: login.principal,
            long_term: false,
            service: login.service,
            from_new_login: login.from_new_login,
            methods: login.methods,
            step_up: login.step_up.is_some(),
            consented: login.consented,
        })
        .await;
    let signed = match signed {
        Ok(s) => s,
        Err(EngineError::SessionNotFound) if login.step_up.is_some() => {
            // A step-up whose session ended meanwhile: start over.
            tracing::info!("second factor for a session that ended: sign in again");
            return Ok(expired(state, login.service));
        }
        Err(e) => return Ok(unavailable(state, &e)),
    };
    Metrics::inc(&state.metrics.logins_succeeded);
    let cookie = session_cookie(state, &signed.session.id);
    let mut response = match (&signed.ticket, login.service) {
        (Some(st), Some(service)) => {
            Metrics::inc(&state.metrics.service_tickets_granted);
            to_service(state, service, &st.id, login.method)
        }
        _ => return Err(SignedInPage { signed, cookie }),
    };
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// A sign-in for no service: the caller renders its page and sets the cookie.
pub struct SignedInPage {
    pub signed: SignedIn,
    cookie: HeaderValue,
}

impl SignedInPage {
    pub fn with_page(self, mut page: Response) -> Response {
        page.headers_mut().append(header::SET_COOKIE, self.cookie);
        page
    }
}

fn session_cookie(state: &SharedState, session_id: &str) -> HeaderValue {
    cookies::set_session(state.prefix(), session_id, state.settings.secure_cookies())
}

/// Keeps the sign-in and shows the consent page.
pub async fn ask_consent(
    state: &SharedState,
    browser: &Browser,
    pending: PendingConsent,
) -> Response {
    let flow = match state.engine.defer_consent(&pending).await {
        Ok(id) => id,
        Err(e) => return unavailable(state, &e),
    };
    tracing::info!(user = %pending.principal.id, service = %pending.ask.service_key, "consent asked");
    let page = ConsentPage {
        prefix: state.prefix().to_owned(),
        action: format!("{}/login/consent", state.prefix()),
        service_name: service_name(state, &pending.service),
        user: pending.principal.id.clone(),
        flow,
        attributes: pending.ask.attributes,
    };
    let mut response = render(StatusCode::OK, &page);
    if let Some(cookie) = browser.cookie(state.prefix()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// A passive login (CAS gateway, OIDC `prompt=none`, SAML `IsPassive`)
/// cannot ask: back without a ticket, an in-process callback told why.
pub fn cannot_ask(state: &SharedState, service: &str) -> Response {
    if state.engine.is_callback(service) {
        redirect(&ConsentRefusal::Required.on(service))
    } else {
        redirect(service)
    }
}

/// Starts the second step (`/login/mfa`) of a
/// sign-in whose first factor passed.
pub async fn begin(state: &SharedState, browser: &Browser, pending: PendingSignIn) -> Response {
    let flow = match state.engine.defer_sign_in(&pending).await {
        Ok(id) => id,
        Err(e) => return unavailable(state, &e),
    };
    tracing::info!(user = %pending.principal.id, step_up = pending.step_up.is_some(), "second factor asked");
    step_page(state, browser, &flow, pending, None, StatusCode::OK).await
}

/// The second step's page, with a fresh passkey challenge (kept in the
/// deferred sign-in). An enrolment keeps its secret and codes across
/// renderings: what is shown is what will be saved.
pub(crate) async fn step_page(
    state: &SharedState,
    browser: &Browser,
    flow: &str,
    mut pending: PendingSignIn,
    error: Option<&'static str>,
    status: StatusCode,
) -> Response {
    let user = pending.principal.id.clone();
    let (view, challenge) = match state.factors.prepare_step(&user, &pending.challenge).await {
        Ok(prepared) => prepared,
        Err(e) => return mfa_unavailable(state, &e),
    };
    let page = SecondStepPage {
        prefix: state.prefix().to_owned(),
        action: format!("{}/login/mfa", state.prefix()),
        service_name: pending.service.as_deref().map(|s| service_name(state, s)),
        theme: crate::respond::theme_links(state, pending.service.as_deref()),
        user,
        flow: flow.to_owned(),
        error: error.map(castellan_i18n::Msg::new),
        invalid: status == StatusCode::UNAUTHORIZED,
        enrol: view.enrol.map(|(uri, qr_svg)| TotpOffer { uri, qr_svg }),
        recovery_codes: view.recovery_codes,
        passkey_options: view.passkey_options,
        passkey_create_options: view.passkey_create_options,
    };
    pending.challenge = challenge;
    match state.engine.update_deferred_sign_in(flow, &pending).await {
        Ok(true) => {}
        Ok(false) => return expired(state, pending.service.as_deref()),
        Err(e) => return unavailable(state, &e),
    }
    let mut response = render(status, &page);
    if let Some(cookie) = browser.cookie(state.prefix()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

pub(crate) fn service_name(state: &SharedState, service: &str) -> String {
    state
        .engine
        .display_name(service)
        .or_else(|| state.engine.service(service).map(|r| r.name.clone()))
        .unwrap_or_default()
}

/// A second step that is gone (expired, used, another browser's).
pub fn expired(state: &SharedState, service: Option<&str>) -> Response {
    let href = match service {
        Some(s) => format!(
            "{}/login?service={}",
            state.prefix(),
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
        ),
        None => format!("{}/login", state.prefix()),
    };
    let mut page = MessagePage::error(
        state.prefix(),
        "error-sign-in-expired",
        "error-sign-in-expired-message",
    );
    page.link = Some(Link {
        href,
        label: "sign-in-again".into(),
    });
    render(StatusCode::FORBIDDEN, &page)
}

pub(crate) fn mfa_unavailable(state: &SharedState, e: &MfaError) -> Response {
    tracing::error!(error = %e, "MFA store unavailable");
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        &MessagePage::unavailable(state.prefix()),
    )
}
