//! `/login`: the SSO entry point (CAS 3.0 §2.1, §2.2).

use crate::client_address::{client_ip, ClientAddress};
use crate::cookies::{self, Browser};
use crate::metrics::Metrics;
use crate::pages::{render, Link, LoginPage, MessagePage, NamedLink, NoticePage};
use crate::respond::{redirect, unavailable};
use crate::state::SharedState;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{ConnectInfo, Form, Query, RawQuery, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use castellan_cas::validate::flag;
use castellan_cas::MAX_SERVICE_LEN;
use castellan_core::{
    AccountProblem, AccountRefusal, AfterConsent, AuthnError, AuthnMethod, AuthnMethods,
    Credentials, EngineError, PasswordNotice, PasswordNoticeKind, PendingConsent, PendingSignIn,
    RegisteredService,
};
use castellan_i18n::Msg;
use serde::Deserialize;
use std::net::SocketAddr;

#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    pub service: Option<String>,
    pub renew: Option<String>,
    pub gateway: Option<String>,
    pub method: Option<String>,
    /// Prefills the username (sent by the OIDC provider from `login_hint`).
    pub login_hint: Option<String>,
    /// Delegated authentication: the upstream to hand the login to.
    pub client_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub execution: String,
}

const MAX_USERNAME: usize = 256;
const MAX_PASSWORD: usize = 1024;

/// The service a login is for, once checked against the registry.
struct Target<'a> {
    url: String,
    registered: &'a RegisteredService,
}

impl Target<'_> {
    fn display_name(&self) -> String {
        match url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_owned))
        {
            Some(host) => format!("{} ({host})", self.registered.name),
            None => self.registered.name.clone(),
        }
    }
}

/// An unregistered or malformed service gets an error page that redirects nowhere.
fn target<'a>(
    state: &'a SharedState,
    service: Option<&str>,
) -> Result<Option<Target<'a>>, Box<Response>> {
    let Some(url) = service.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if url.len() > MAX_SERVICE_LEN {
        return Err(Box::new(render(
            StatusCode::BAD_REQUEST,
            &MessagePage::error(
                state.prefix(),
                "error-invalid-service-address",
                "error-service-address-too-long",
            ),
        )));
    }
    match state.engine.service(url) {
        Some(registered) => Ok(Some(Target {
            url: url.to_owned(),
            registered,
        })),
        None => {
            tracing::warn!("login for an unregistered service refused");
            let mut page = MessagePage::error(
                state.prefix(),
                "error-service-not-authorized",
                "error-service-not-authorized-message",
            );
            page.detail = Some("error-contact-administrator".into());
            Err(Box::new(render(StatusCode::FORBIDDEN, &page)))
        }
    }
}

pub(crate) fn logged_in_page(state: &SharedState, user: &str) -> Response {
    render(
        StatusCode::OK,
        &MessagePage {
            prefix: state.prefix().to_owned(),
            title: "signed-in-title".into(),
            heading: "signed-in-heading".into(),
            message: Msg::new("signed-in-as").with("user", user),
            detail: None,
            tone: "success",
            link: Some(Link {
                href: format!("{}/logout", state.prefix()),
                label: "sign-out".into(),
            }),
        },
    )
}

fn bad_request(state: &SharedState) -> Response {
    render(
        StatusCode::BAD_REQUEST,
        &MessagePage::error(
            state.prefix(),
            "error-invalid-request",
            "error-request-not-understood",
        ),
    )
}

struct FormState<'a> {
    status: StatusCode,
    username: String,
    error: Option<Msg>,
    /// Shown with the error (where to change a password).
    error_link: Option<Link>,
    invalid: bool,
    notice: Option<Msg>,
    target: Option<&'a Target<'a>>,
    raw_query: Option<&'a str>,
    browser: &'a Browser,
}

async fn login_form(state: &SharedState, f: FormState<'_>) -> Response {
    let flow = match state
        .engine
        .start_login_flow(f.target.map(|t| t.url.as_str()), &f.browser.id)
        .await
    {
        Ok(flow) => flow,
        Err(e) => return unavailable(state, &e),
    };
    let action = match f.raw_query {
        Some(q) if !q.is_empty() => format!("login?{q}"),
        _ => "login".to_owned(),
    };
    let mut page = render(
        f.status,
        &LoginPage {
            prefix: state.prefix().to_owned(),
            action,
            service_name: f.target.map(|t| {
                // An OIDC or SAML callback is named by its client or SP
                // (the engine asks the in-process client that owns it).
                state
                    .engine
                    .display_name(&t.url)
                    .unwrap_or_else(|| t.display_name())
            }),
            theme: crate::respond::theme_links(state, f.target.map(|t| t.url.as_str())),
            username: f.username,
            execution: flow.id,
            error: f.error,
            error_link: f.error_link,
            invalid: f.invalid,
            notice: f.notice,
            upstreams: upstream_links(state, f.raw_query),
        },
    );
    if let Some(cookie) = f.browser.cookie(state.prefix()) {
        page.headers_mut().append(header::SET_COOKIE, cookie);
    }
    page
}

/// Login CSRF, second line (the first is the token's binding to the
/// browser): a browser that says the form was posted from another site is
/// refused. Absent headers (older browsers, non-browser clients) pass.
pub(crate) fn cross_site(state: &SharedState, headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("sec-fetch-site").is_some_and(|v| v.eq_ignore_ascii_case("cross-site")) {
        return true;
    }
    let Some(origin) = header("origin").filter(|o| *o != "null") else {
        return false;
    };
    let ours = state.settings.public_url.origin().ascii_serialization();
    if origin.eq_ignore_ascii_case(&ours) {
        return false;
    }
    // Reached under another name than public_url (a test, a second vhost):
    // same origin as the request itself.
    let host = header("host").unwrap_or_default();
    let same_host = url::Url::parse(origin)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .is_some_and(|h| !host.is_empty() && h.eq_ignore_ascii_case(host));
    !same_host
}

/// GET `/login`.
pub async fn form(
    State(state): State<SharedState>,
    ClientAddress(client): ClientAddress,
    query: Result<Query<LoginQuery>, QueryRejection>,
    RawQuery(raw_query): RawQuery,
    // The request itself, not its headers: a `HeaderMap` argument is a copy.
    request: Request,
) -> Response {
    let headers = request.headers();
    let Ok(Query(query)) = query else {
        return bad_request(&state);
    };
    let target = match target(&state, query.service.as_deref()) {
        Ok(t) => t,
        Err(page) => return *page,
    };
    let renew = flag(query.renew.as_deref());
    let gateway = flag(query.gateway.as_deref());
    // Made when a page needs it, not for the SSO redirect.
    let browser = || Browser::of(headers);

    // Delegated authentication, asked for by name: the upstream decides.
    if let Some(name) = query.client_name.as_deref() {
        return Box::pin(crate::delegation::start(
            &state,
            client,
            name,
            target.as_ref().map(|t| t.url.clone()),
            query.method.clone(),
            renew,
            gateway,
        ))
        .await;
    }

    // §2.1.1: renew forces credentials whatever the SSO session.
    let session_id = cookies::session_id(headers).filter(|_| !renew);
    if let Some(session_id) = &session_id {
        match &target {
            // The grant itself checks and extends the session: one store step.
            Some(target) => match state
                .engine
                .grant_service_ticket(session_id, &target.url, false)
                .await
            {
                Ok(st) => {
                    Metrics::inc(&state.metrics.service_tickets_granted);
                    return crate::sign_in::to_service(
                        &state,
                        &target.url,
                        &st.id,
                        query.method.as_deref(),
                    );
                }
                Err(EngineError::SessionNotFound) => {}
                // gateway asks nothing of the user: back without a ticket.
                Err(EngineError::SecondFactorRequired) if gateway => {
                    return redirect(&target.url);
                }
                Err(EngineError::SecondFactorRequired) => {
                    let browser = browser();
                    let page = step_up(&state, &browser, session_id, target, query.method);
                    return Box::pin(page).await;
                }
                Err(EngineError::ConsentRequired) if gateway => {
                    return crate::sign_in::cannot_ask(&state, &target.url);
                }
                Err(EngineError::ConsentRequired) => {
                    let browser = browser();
                    let page = ask_consent(&state, &browser, session_id, target, query.method);
                    return Box::pin(page).await;
                }
                Err(e) => return unavailable(&state, &e),
            },
            None => match state.engine.session(session_id).await {
                Ok(Some(session)) => return logged_in_page(&state, &session.principal.id),
                Ok(None) => {}
                Err(e) => return unavailable(&state, &e),
            },
        }
    }
    // §2.1.1: gateway without a session goes back to the service, ticketless.
    if gateway && !renew {
        if let Some(target) = &target {
            return redirect(&target.url);
        }
    }
    // The only way in is an upstream: go there at once.
    if let Some(name) = state.upstreams.auto_redirect() {
        let name = name.to_owned();
        return Box::pin(crate::delegation::start(
            &state,
            client,
            &name,
            target.as_ref().map(|t| t.url.clone()),
            query.method.clone(),
            renew,
            false,
        ))
        .await;
    }
    // Boxed, as the other ways but the SSO redirect: the handler's future
    // is as large as its largest await, and axum moves it into a box for
    // every request, the redirects included.
    Box::pin(login_form(
        &state,
        FormState {
            status: StatusCode::OK,
            username: query
                .login_hint
                .filter(|h| h.len() <= MAX_USERNAME)
                .unwrap_or_default(),
            error: None,
            error_link: None,
            invalid: false,
            notice: None,
            target: target.as_ref(),
            raw_query: raw_query.as_deref(),
            browser: &browser(),
        },
    ))
    .await
}

/// A session whose first factor serves a service that asks for a second:
/// the second step only, not the password again.
async fn step_up(
    state: &SharedState,
    browser: &Browser,
    session_id: &str,
    target: &Target<'_>,
    method: Option<String>,
) -> Response {
    let again = |renew: &str| {
        let method = method
            .as_deref()
            .map(|m| format!("&method={}", form_encode(m)))
            .unwrap_or_default();
        redirect(&format!(
            "{}/login?service={}{renew}{method}",
            state.prefix(),
            form_encode(&target.url)
        ))
    };
    let session = match state.engine.session(session_id).await {
        Ok(Some(session)) => session,
        // Ended between the grant and here: as without a session.
        Ok(None) => return again(""),
        Err(e) => return unavailable(state, &e),
    };
    // A first factor is enrolled only after a recent full login: whoever
    // holds an old session must not bind their own phone to the account.
    let age = state.now().saturating_sub(session.authenticated_at);
    if age > castellan_mfa::FRESH_LOGIN.as_millis() as u64 {
        match state.factors.has_factor(&session.principal.id).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(user = %session.principal.id, "step-up to a first factor: a fresh login first");
                return again("&renew=true");
            }
            Err(e) => return crate::sign_in::mfa_unavailable(state, &e),
        }
    }
    let pending = PendingSignIn {
        principal: session.principal,
        methods: AuthnMethods::NONE,
        service: Some(target.url.clone()),
        long_term: session.long_term,
        from_new_login: false,
        step_up: Some(session.id),
        browser: browser.id.clone(),
        response_method: method,
        challenge: Vec::new(),
    };
    crate::sign_in::begin(state, browser, pending).await
}

/// A live session for a service that asks consent the user has not given:
/// the consent page, then the ticket from the same session.
async fn ask_consent(
    state: &SharedState,
    browser: &Browser,
    session_id: &str,
    target: &Target<'_>,
    method: Option<String>,
) -> Response {
    let again = || {
        redirect(&format!(
            "{}/login?service={}",
            state.prefix(),
            form_encode(&target.url)
        ))
    };
    let session = match state.engine.session(session_id).await {
        Ok(Some(session)) => session,
        Ok(None) => return again(),
        Err(e) => return unavailable(state, &e),
    };
    let ask = match state
        .engine
        .consent_needed(&target.url, &session.principal)
        .await
    {
        Ok(Some(ask)) => ask,
        // Given meanwhile (another tab): SSO as usual.
        Ok(None) => return again(),
        Err(e) => return unavailable(state, &e),
    };
    let pending = PendingConsent {
        principal: session.principal,
        service: target.url.clone(),
        ask,
        browser: browser.id.clone(),
        response_method: method,
        then: AfterConsent::Session(session.id),
    };
    crate::sign_in::ask_consent(state, browser, pending).await
}

/// POST `/login`: credentials with the one-time `execution` token.
pub async fn submit(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    query: Result<Query<LoginQuery>, QueryRejection>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    let (Ok(Query(query)), Ok(Form(form))) = (query, form) else {
        return bad_request(&state);
    };
    let target = match target(&state, query.service.as_deref()) {
        Ok(t) => t,
        Err(page) => return *page,
    };
    let browser = Browser::of(&headers);
    let again = |status: StatusCode,
                 username: String,
                 error: Option<&'static str>,
                 notice: Option<Msg>| FormState {
        status,
        username,
        // Only wrong credentials mark the fields; other errors are not theirs.
        invalid: status == StatusCode::UNAUTHORIZED,
        error: error.map(Msg::new),
        error_link: None,
        notice,
        target: target.as_ref(),
        raw_query: raw_query.as_deref(),
        browser: &browser,
    };

    if cross_site(&state, &headers) {
        tracing::warn!("login form posted from another site refused");
        return login_form(
            &state,
            again(
                StatusCode::FORBIDDEN,
                String::new(),
                None,
                Some(Msg::new("login-cross-site")),
            ),
        )
        .await;
    }
    // The token must be one this server rendered, unused, for this very
    // service, in this very browser.
    let service = target.as_ref().map(|t| t.url.as_str());
    let taken = if browser.fresh {
        Ok(false)
    } else {
        state
            .engine
            .take_login_flow(&form.execution, service, &browser.id)
            .await
    };
    let taken = match taken {
        Ok(taken) => taken,
        Err(e) => return unavailable(&state, &e),
    };
    if !taken {
        return login_form(
            &state,
            again(
                StatusCode::FORBIDDEN,
                String::new(),
                None,
                Some(Msg::new("login-form-expired")),
            ),
        )
        .await;
    }

    let username = form.username.trim_end_matches(['\r', '\n']).to_owned();
    let invalid = "login-invalid-credentials";
    if username.is_empty() || username.len() > MAX_USERNAME || form.password.len() > MAX_PASSWORD {
        let shown = if username.len() > MAX_USERNAME {
            String::new()
        } else {
            username
        };
        return login_form(
            &state,
            again(StatusCode::UNAUTHORIZED, shown, Some(invalid), None),
        )
        .await;
    }
    let credentials = Credentials {
        username: username.clone(),
        password: form.password,
    };
    let client = client_ip(peer.ip(), &headers, &state.settings.trusted_proxies);
    let (principal, notice) = match state
        .engine
        .authenticate_noting(&credentials, Some(client))
        .await
    {
        Ok(accepted) => accepted,
        Err(EngineError::Authentication(AuthnError::InvalidCredentials)) => {
            Metrics::inc(&state.metrics.logins_failed);
            tracing::info!(user = %username, "login refused: wrong credentials");
            return login_form(
                &state,
                again(StatusCode::UNAUTHORIZED, username, Some(invalid), None),
            )
            .await;
        }
        Err(EngineError::Authentication(AuthnError::Throttled)) => {
            Metrics::inc(&state.metrics.logins_throttled);
            tracing::warn!(user = %username, ip = %client, "login refused: throttled");
            let message = "login-throttled";
            return login_form(
                &state,
                again(StatusCode::TOO_MANY_REQUESTS, username, Some(message), None),
            )
            .await;
        }
        Err(EngineError::Authentication(AuthnError::Refused(refusal))) => {
            Metrics::inc(&state.metrics.logins_failed);
            tracing::info!(user = %username, "login refused: {}", refusal.problem);
            let (message, link) = refusal_message(&refusal);
            let mut form = again(StatusCode::FORBIDDEN, username, Some(message), None);
            form.error_link = link;
            return login_form(&state, form).await;
        }
        Err(EngineError::Authentication(AuthnError::Backend(e))) => {
            // A directory or database that cannot answer: "try again
            // later", never "wrong password".
            tracing::error!(user = %username, error = %e, "login not decided: authentication source unavailable");
            return render(
                StatusCode::SERVICE_UNAVAILABLE,
                &MessagePage::unavailable(state.prefix()),
            );
        }
        Err(e) => return unavailable(&state, &e),
    };

    // A new login replaces the browser's previous session: the same user's
    // (renew) carries its applications over, another user's is logged out.
    let service = target.as_ref().map(|t| t.url.as_str());
    // A password that expires soon (or lives on grace logins) is told on a
    // page of its own; the application is one click on, through SSO. Not
    // so for renew: the ticket must come from this very login.
    let notice = notice.filter(|_| !flag(query.renew.as_deref()));
    let granted_for = if notice.is_some() { None } else { service };
    crate::sign_in::complete_sign_in(
        &state,
        &headers,
        crate::sign_in::Completion {
            principal,
            service: granted_for,
            from_new_login: true,
            method: query.method.as_deref(),
            methods: AuthnMethods::of(AuthnMethod::Password),
            step_up: None,
            passive: false,
            consented: None,
        },
    )
    .await
    .unwrap_or_else(|p| {
        let page = match &notice {
            Some(notice) => notice_page(&state, notice, raw_query.as_deref(), service.is_some()),
            None => logged_in_page(&state, &p.signed.session.principal.id),
        };
        p.with_page(page)
    })
}

/// The page that tells a signed-in user about their password, with the
/// way on: to the application (through SSO, keeping the request's
/// parameters) or nowhere, and to the password change page.
/// A source's notice about the password, in the page's language; a notice
/// the source gave only as a sentence is shown as it is.
fn notice_message(notice: &PasswordNotice) -> Msg {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    match notice.kind {
        Some(PasswordNoticeKind::ExpiresIn { seconds }) if seconds >= 86_400 => {
            Msg::new("notice-expires-in-days").count("count", count(seconds / 86_400))
        }
        Some(PasswordNoticeKind::ExpiresIn { seconds }) => {
            Msg::new("notice-expires-in-hours").count("count", count(seconds / 3600))
        }
        Some(PasswordNoticeKind::GraceLoginsLeft(n)) => {
            Msg::new("notice-grace-logins").count("count", count(n))
        }
        None => Msg::new("notice-other").with("detail", notice.message.clone()),
    }
}

fn notice_page(
    state: &SharedState,
    notice: &PasswordNotice,
    raw_query: Option<&str>,
    for_service: bool,
) -> Response {
    let next = for_service.then(|| Link {
        href: format!("{}/login?{}", state.prefix(), raw_query.unwrap_or_default()),
        label: "continue-to-application".into(),
    });
    let change = notice.password_change_url.as_ref().map(|href| Link {
        href: href.clone(),
        label: "change-password".into(),
    });
    render(
        StatusCode::OK,
        &NoticePage {
            prefix: state.prefix().to_owned(),
            message: notice_message(notice),
            change,
            next,
        },
    )
}

/// What the login page says about an account its source refused, and
/// the link to change the password where one is configured.
fn refusal_message(refusal: &AccountRefusal) -> (&'static str, Option<Link>) {
    let message = match refusal.problem {
        AccountProblem::PasswordExpired => "account-password-expired",
        AccountProblem::MustChangePassword => "account-must-change-password",
        AccountProblem::Locked => "account-locked",
        AccountProblem::Disabled => "account-disabled",
        AccountProblem::AccountExpired => "account-expired",
        AccountProblem::NotAllowedNow => "account-not-allowed-now",
        AccountProblem::NotAllowedFromHere => "account-not-allowed-from-here",
    };
    let about_password = matches!(
        refusal.problem,
        AccountProblem::PasswordExpired
            | AccountProblem::MustChangePassword
            | AccountProblem::Locked
    );
    let link = refusal
        .password_change_url
        .as_ref()
        .filter(|_| about_password)
        .map(|href| Link {
            href: href.clone(),
            label: "change-password".into(),
        });
    (message, link)
}

/// The login page's buttons, keeping the request's parameters.
fn upstream_links(state: &SharedState, raw_query: Option<&str>) -> Vec<NamedLink> {
    let keep: String = raw_query
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| matches!(k.as_ref(), "service" | "renew" | "gateway" | "method"))
                .map(|(k, v)| format!("&{}={}", k, form_encode(&v)))
                .collect()
        })
        .unwrap_or_default();
    state
        .upstreams
        .iter()
        .map(|u| NamedLink {
            href: format!(
                "login?client_name={}{keep}",
                form_encode(u.connector().name())
            ),
            name: u.connector().display_name().to_owned(),
        })
        .collect()
}

fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod notice_tests {
    use super::*;
    use castellan_i18n::{text, Lang};

    fn notice(kind: Option<PasswordNoticeKind>) -> PasswordNotice {
        PasswordNotice {
            message: "Your password expires soon.".into(),
            kind,
            password_change_url: None,
        }
    }

    #[test]
    fn password_notices_are_worded_in_the_page_language() {
        let days = notice(Some(PasswordNoticeKind::ExpiresIn {
            seconds: 3 * 86_400,
        }));
        assert_eq!(
            text(Lang::Fr, &notice_message(&days)),
            "Votre mot de passe expire dans 3 jours."
        );
        let hour = notice(Some(PasswordNoticeKind::ExpiresIn { seconds: 3600 }));
        assert_eq!(
            text(Lang::En, &notice_message(&hour)),
            "Your password expires in 1 hour."
        );
        let grace = notice(Some(PasswordNoticeKind::GraceLoginsLeft(2)));
        assert!(text(Lang::De, &notice_message(&grace)).contains("noch 2 Anmeldungen"));
        // A source that gave only a sentence: shown as it is.
        assert_eq!(
            text(Lang::Es, &notice_message(&notice(None))),
            "Your password expires soon."
        );
    }
}
