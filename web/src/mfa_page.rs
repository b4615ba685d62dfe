//! `/mfa`: the user's own page of second factors (list, add an
//! authenticator app or a passkey, remove one, new recovery codes).
//!
//! It is behind a fresh login: a session whose last full login is under
//! [`FRESH`] old and, when the user has a factor, used it. Otherwise the
//! browser goes through `/login?renew=true` with this page as its service,
//! a client of the core like any other (registered internal, `mfa =
//! "optional"`: whoever has a factor must give it).

use crate::config::Settings;
use crate::cookies::{self, Browser};
use crate::pages::{render, FactorLine, MfaPage, TotpOffer};
use crate::respond::{redirect, unavailable};
use crate::state::SharedState;
use axum::extract::rejection::{FormRejection, QueryRejection};
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use castellan_core::{MfaPolicy, TicketGrantingTicket};
use castellan_i18n::Msg;
use castellan_mfa::{FactorKind, MfaError};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How recent the last full login must be to change one's factors.
const FRESH: Duration = castellan_mfa::FRESH_LOGIN;
const RECORD_TTL: Duration = Duration::from_secs(10 * 60);
const MAX_FIELD: usize = 128;
const MAX_WEBAUTHN_JSON: usize = 64 * 1024;

/// This page's own URL, the service its logins return to.
fn own_url(settings: &Settings) -> String {
    settings.mfa_page_url()
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    ticket: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ActionForm {
    #[serde(default)]
    action: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    flow: String,
    factor: Option<String>,
    otp: Option<String>,
    webauthn_register: Option<String>,
}

/// What an addition in progress keeps between the page and its POST.
#[derive(Default, Serialize, Deserialize)]
struct Addition {
    user: String,
    totp: Option<(String, String, String)>,
    passkey_registration: Option<Vec<u8>>,
}

fn record_key(flow: &str) -> Option<String> {
    (flow.len() <= MAX_FIELD && flow.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .then(|| format!("mfa-page:{flow}"))
}

/// The session, when fresh enough for this page.
async fn fresh_session(
    state: &SharedState,
    headers: &HeaderMap,
) -> Result<Option<TicketGrantingTicket>, Response> {
    let Some(id) = cookies::session_id(headers) else {
        return Ok(None);
    };
    let session = match state.engine.session(&id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(e) => return Err(unavailable(state, &e)),
    };
    let age = state.now().saturating_sub(session.authenticated_at);
    if age > FRESH.as_millis() as u64 {
        return Ok(None);
    }
    if !session.methods.has_second_factor() {
        match state.factors.has_factor(&session.principal.id).await {
            Ok(false) => {}
            Ok(true) => return Ok(None),
            Err(e) => return Err(mfa_unavailable(state, &e)),
        }
    }
    Ok(Some(session))
}

fn to_login(state: &SharedState) -> Response {
    let service: String =
        url::form_urlencoded::byte_serialize(own_url(&state.settings).as_bytes()).collect();
    redirect(&format!(
        "{}/login?service={service}&renew=true",
        state.prefix()
    ))
}

/// GET `/mfa`.
pub async fn page(
    State(state): State<SharedState>,
    query: Result<Query<PageQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    if let Some(ticket) = query.ticket.filter(|t| t.len() <= 256) {
        // Back from the login: the ticket is spent here, whatever it is
        // (the session's freshness decides), and the address cleaned.
        if let Err(e) = state
            .engine
            .validate_callback(&ticket, &own_url(&state.settings), true)
            .await
        {
            tracing::info!(error = %e, "/mfa: login ticket not accepted");
        }
        return redirect(&format!("{}/mfa", state.prefix()));
    }
    let session = match fresh_session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(&state),
        Err(response) => return response,
    };
    list(
        &state,
        &headers,
        &session.principal.id,
        None,
        None,
        StatusCode::OK,
    )
    .await
}

/// The list of factors, with the forms that change them.
async fn list(
    state: &SharedState,
    headers: &HeaderMap,
    user: &str,
    notice: Option<&'static str>,
    error: Option<&'static str>,
    status: StatusCode,
) -> Response {
    let mut page = match base_page(state, headers, user).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    page.notice = notice.map(Msg::new);
    page.error = error.map(Msg::new);
    let mut addition = Addition {
        user: user.to_owned(),
        ..Default::default()
    };
    match state.factors.start_passkey_registration(user).await {
        Ok((options, st)) => {
            page.passkey_create_options = Some(castellan_mfa::script_json(&options));
            addition.passkey_registration = Some(st);
        }
        Err(e) => return mfa_unavailable(state, &e),
    }
    if let Err(r) = keep(state, &page.flow, &addition).await {
        return r;
    }
    finish(state, headers, status, &page)
}

/// The page's common part: the user's factors, a CSRF token, a flow id.
async fn base_page(
    state: &SharedState,
    headers: &HeaderMap,
    user: &str,
) -> Result<MfaPage, Response> {
    let enrolment = state
        .factors
        .list(user)
        .await
        .map_err(|e| mfa_unavailable(state, &e))?;
    let browser = Browser::of(headers);
    let csrf = state
        .engine
        .start_login_flow(Some(&own_url(&state.settings)), &browser.id)
        .await
        .map_err(|e| unavailable(state, &e))?
        .id;
    let factors = enrolment
        .factors
        .iter()
        .map(|f| FactorLine {
            id: f.id.clone(),
            label: f.label.clone(),
            kind: match f.kind {
                FactorKind::Totp => Msg::new("mfa-kind-totp"),
                FactorKind::Passkey { hardware: true } => Msg::new("mfa-kind-security-key"),
                FactorKind::Passkey { hardware: false } => Msg::new("mfa-kind-passkey"),
            },
            added: date(f.created_at),
        })
        .collect();
    Ok(MfaPage {
        prefix: state.prefix().to_owned(),
        user: user.to_owned(),
        csrf,
        flow: castellan_core::ids::new_ticket_id("MFAPAGE"),
        notice: None,
        error: None,
        factors,
        recovery_left: enrolment.recovery_codes_left,
        recovery_codes: Vec::new(),
        enrol: None,
        passkey_create_options: None,
    })
}

fn date(unix: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix as i64)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!("[year]-[month]-[day]"))
                .ok()
        })
        .unwrap_or_default()
}

async fn keep(state: &SharedState, flow: &str, addition: &Addition) -> Result<(), Response> {
    let Some(key) = record_key(flow) else {
        return Ok(());
    };
    // It may hold a TOTP secret: sealed with the MFA key.
    let bytes = state
        .factors
        .seal_state(
            &addition.user,
            &serde_json::to_vec(addition).unwrap_or_default(),
        )
        .map_err(|e| mfa_unavailable(state, &e))?;
    state
        .engine
        .store()
        .put_record(&key, &bytes, RECORD_TTL)
        .await
        .map_err(|e| unavailable(state, &e.into()))
}

async fn addition(
    state: &SharedState,
    flow: &str,
    user: &str,
) -> Result<Option<Addition>, Response> {
    let Some(key) = record_key(flow) else {
        return Ok(None);
    };
    let bytes = state
        .engine
        .store()
        .record(&key)
        .await
        .map_err(|e| unavailable(state, &e.into()))?;
    Ok(bytes
        .map(|b| state.factors.open_state(user, &b))
        .and_then(|b| serde_json::from_slice::<Addition>(&b).ok())
        .filter(|a| a.user == user))
}

fn finish(
    state: &SharedState,
    headers: &HeaderMap,
    status: StatusCode,
    page: &MfaPage,
) -> Response {
    let mut response = render(status, page);
    if let Some(cookie) = Browser::of(headers).cookie(state.prefix()) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// Whether some service, client or SP requires a second factor: then a
/// user keeps at least one.
fn required_somewhere(state: &SharedState) -> bool {
    let s = &state.settings;
    s.services
        .iter()
        .any(|r| r.mfa == Some(MfaPolicy::Required))
        || s.oidc
            .clients
            .iter()
            .any(|c| c.mfa == Some(MfaPolicy::Required))
        || s.saml
            .sps
            .iter()
            .any(|sp| sp.mfa == Some(MfaPolicy::Required))
}

/// POST `/mfa`.
pub async fn act(
    State(state): State<SharedState>,
    headers: HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return to_login(&state);
    };
    let session = match fresh_session(&state, &headers).await {
        Ok(Some(s)) => s,
        Ok(None) => return to_login(&state),
        Err(response) => return response,
    };
    let user = session.principal.id.clone();
    if crate::login::cross_site(&state, &headers) {
        tracing::warn!(user = %user, "/mfa form posted from another site refused");
        return list(
            &state,
            &headers,
            &user,
            None,
            Some("mfa-cross-site"),
            StatusCode::FORBIDDEN,
        )
        .await;
    }
    let browser = Browser::of(&headers);
    let taken = if form.csrf.len() > 2 * MAX_FIELD {
        Ok(false)
    } else {
        state
            .engine
            .take_login_flow(&form.csrf, Some(&own_url(&state.settings)), &browser.id)
            .await
    };
    match taken {
        Ok(true) => {}
        Ok(false) => {
            return list(
                &state,
                &headers,
                &user,
                None,
                Some("mfa-form-expired"),
                StatusCode::FORBIDDEN,
            )
            .await;
        }
        Err(e) => return unavailable(&state, &e),
    }
    let now = state.now() / 1000;
    match form.action.as_str() {
        "remove" => {
            let Some(factor) = form.factor.filter(|f| f.len() <= MAX_FIELD) else {
                return list(
                    &state,
                    &headers,
                    &user,
                    None,
                    Some("mfa-no-such-method"),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            };
            let enrolment = match state.factors.list(&user).await {
                Ok(e) => e,
                Err(e) => return mfa_unavailable(&state, &e),
            };
            let owned = enrolment.factors.iter().any(|f| f.id == factor);
            if owned && enrolment.factors.len() == 1 && required_somewhere(&state) {
                return list(
                    &state,
                    &headers,
                    &user,
                    None,
                    Some("mfa-only-factor"),
                    StatusCode::CONFLICT,
                )
                .await;
            }
            match state.factors.remove(&user, &factor).await {
                Ok(true) => {
                    tracing::info!(user = %user, "second factor removed by its user");
                    list(
                        &state,
                        &headers,
                        &user,
                        Some("mfa-removed"),
                        None,
                        StatusCode::OK,
                    )
                    .await
                }
                Ok(false) => {
                    list(
                        &state,
                        &headers,
                        &user,
                        None,
                        Some("mfa-no-such-method"),
                        StatusCode::NOT_FOUND,
                    )
                    .await
                }
                Err(e) => mfa_unavailable(&state, &e),
            }
        }
        "add-totp" => {
            let mut page = match base_page(&state, &headers, &user).await {
                Ok(p) => p,
                Err(r) => return r,
            };
            let t = state.factors.new_totp(&user);
            page.enrol = Some(TotpOffer {
                uri: t.uri.clone(),
                qr_svg: t.qr_svg.clone(),
            });
            let addition = Addition {
                user: user.clone(),
                totp: Some((t.secret, t.uri, t.qr_svg)),
                passkey_registration: None,
            };
            if let Err(r) = keep(&state, &page.flow, &addition).await {
                return r;
            }
            finish(&state, &headers, StatusCode::OK, &page)
        }
        "confirm-totp" => {
            let pending = match addition(&state, &form.flow, &user).await {
                Ok(a) => a,
                Err(r) => return r,
            };
            let Some((secret, uri, qr_svg)) = pending.and_then(|a| a.totp) else {
                return list(
                    &state,
                    &headers,
                    &user,
                    None,
                    Some("mfa-add-too-slow"),
                    StatusCode::FORBIDDEN,
                )
                .await;
            };
            let code: String = form
                .otp
                .unwrap_or_default()
                .chars()
                .filter(|c| !c.is_whitespace())
                .take(65)
                .collect();
            let factors = &state.factors;
            let checked = state
                .engine
                .check_second_factor(&user, None, async {
                    match factors
                        .confirm_totp(&user, &secret, &code, &app_label(), now)
                        .await
                    {
                        Ok(_) => Ok(Some(castellan_core::AuthnMethod::Totp)),
                        Err(
                            MfaError::InvalidCode | MfaError::Replayed | MfaError::InvalidInput(_),
                        ) => Ok(None),
                        Err(e) => Err(castellan_core::AuthnError::Backend(e.to_string())),
                    }
                })
                .await;
            match checked {
                Ok(Some(_)) => {
                    tracing::info!(user = %user, "authenticator app added by its user");
                    if let Some(key) = record_key(&form.flow) {
                        let _ = state.engine.store().remove_record(&key).await;
                    }
                    new_codes_if_none(&state, &headers, &user, "mfa-app-added").await
                }
                Ok(None)
                | Err(castellan_core::EngineError::Authentication(
                    castellan_core::AuthnError::Throttled,
                )) => {
                    let mut page = match base_page(&state, &headers, &user).await {
                        Ok(p) => p,
                        Err(r) => return r,
                    };
                    page.flow = form.flow.clone();
                    page.enrol = Some(TotpOffer { uri, qr_svg });
                    page.error = Some("mfa-wrong-code".into());
                    finish(&state, &headers, StatusCode::UNAUTHORIZED, &page)
                }
                Err(e) => unavailable(&state, &e),
            }
        }
        "add-passkey" => {
            let pending = match addition(&state, &form.flow, &user).await {
                Ok(a) => a,
                Err(r) => return r,
            };
            let response = form
                .webauthn_register
                .filter(|w| w.len() <= MAX_WEBAUTHN_JSON)
                .and_then(|w| serde_json::from_str::<serde_json::Value>(&w).ok());
            let (Some(st), Some(response)) =
                (pending.and_then(|a| a.passkey_registration), response)
            else {
                return list(
                    &state,
                    &headers,
                    &user,
                    None,
                    Some("mfa-passkey-not-added"),
                    StatusCode::BAD_REQUEST,
                )
                .await;
            };
            match state
                .factors
                .finish_passkey_registration(&user, &st, &response, "Passkey")
                .await
            {
                Ok(_) => {
                    tracing::info!(user = %user, "passkey added by its user");
                    if let Some(key) = record_key(&form.flow) {
                        let _ = state.engine.store().remove_record(&key).await;
                    }
                    new_codes_if_none(&state, &headers, &user, "mfa-passkey-added").await
                }
                Err(e @ (MfaError::Store(_) | MfaError::Key(_) | MfaError::KeyMismatch(_))) => {
                    mfa_unavailable(&state, &e)
                }
                Err(e) => {
                    tracing::info!(user = %user, error = %e, "passkey not added");
                    list(
                        &state,
                        &headers,
                        &user,
                        None,
                        Some("mfa-passkey-not-added"),
                        StatusCode::BAD_REQUEST,
                    )
                    .await
                }
            }
        }
        "recovery" => show_new_codes(&state, &headers, &user, None).await,
        _ => {
            list(
                &state,
                &headers,
                &user,
                None,
                Some("mfa-unknown-action"),
                StatusCode::BAD_REQUEST,
            )
            .await
        }
    }
}

/// After a first factor: its recovery codes, shown once.
async fn new_codes_if_none(
    state: &SharedState,
    headers: &HeaderMap,
    user: &str,
    notice: &'static str,
) -> Response {
    match state.factors.list(user).await {
        Ok(e) if e.recovery_codes_left == 0 => {
            show_new_codes(state, headers, user, Some(notice)).await
        }
        Ok(_) => list(state, headers, user, Some(notice), None, StatusCode::OK).await,
        Err(e) => mfa_unavailable(state, &e),
    }
}

async fn show_new_codes(
    state: &SharedState,
    headers: &HeaderMap,
    user: &str,
    notice: Option<&'static str>,
) -> Response {
    let codes = state.factors.new_recovery_codes(user);
    if let Err(e) = state.factors.save_recovery_codes(user, &codes.hashes).await {
        return mfa_unavailable(state, &e);
    }
    tracing::info!(user = %user, "recovery codes made anew");
    let mut page = match base_page(state, headers, user).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    page.notice = notice.map(Msg::new);
    page.recovery_codes = codes.codes;
    finish(state, headers, StatusCode::OK, &page)
}

/// The name an authenticator app is listed under, in the language of the
/// page that added it.
fn app_label() -> String {
    castellan_i18n::text(crate::locale::current().lang, &Msg::new("mfa-app-label"))
}

fn mfa_unavailable(state: &SharedState, e: &MfaError) -> Response {
    tracing::error!(error = %e, "MFA store unavailable");
    render(
        StatusCode::SERVICE_UNAVAILABLE,
        &crate::pages::MessagePage::unavailable(state.prefix()),
    )
}
