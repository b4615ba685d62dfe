//! The device authorization grant's endpoints (RFC 8628): the device's
//! `POST /oidc/device_authorization`, and the user's page `/oidc/device`
//! (type the code, sign in through `/login`, confirm the device). The rules
//! are `castellan_oidc::device`'s.

use super::{basic, form_json};
use crate::client_address::ClientAddress;
use crate::locale::filters;
use crate::pages::{render, MessagePage};
use crate::respond::{error_page, redirect, unavailable};
use crate::state::SharedState;
use askama::Template;
use axum::body::Bytes;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use castellan_i18n::Msg;
use castellan_oidc::device::{is_device_request, ConfirmationPage, DeviceError};
use castellan_oidc::parameters;
use serde::Deserialize;

#[derive(Template)]
#[template(path = "device.html")]
pub struct DevicePage {
    pub prefix: String,
    pub action: String,
    pub user_code: String,
    pub error: Option<&'static str>,
    pub confirm: Option<ConfirmationPage>,
}

fn page(
    state: &SharedState,
    status: StatusCode,
    user_code: &str,
    error: Option<&'static str>,
) -> Response {
    render(
        status,
        &DevicePage {
            prefix: state.prefix().to_owned(),
            action: format!("{}/oidc/device", state.prefix()),
            user_code: user_code.chars().take(32).collect(),
            error,
            confirm: None,
        },
    )
}

/// POST `/oidc/device_authorization`.
pub async fn authorization(
    State(state): State<SharedState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let s = &state;
    let client_auth = basic(&headers);
    form_json(s, &body, StatusCode::OK, move |params| async move {
        s.oidc
            .device_authorization(&s.engine, client_auth, &params, address)
            .await
    })
    .await
}

/// GET `/oidc/device[?user_code=…]`: the form to type the code in.
pub async fn form(State(state): State<SharedState>, RawQuery(query): RawQuery) -> Response {
    let typed = parameters(query.unwrap_or_default().as_bytes())
        .ok()
        .and_then(|mut p| p.remove("user_code"))
        .unwrap_or_default();
    page(&state, StatusCode::OK, &typed, None)
}

#[derive(Debug, Deserialize)]
pub struct DeviceForm {
    user_code: Option<String>,
    confirmation: Option<String>,
    decision: Option<String>,
}

/// POST `/oidc/device`: a typed code (on to the login), or the decision on
/// the confirmation page.
pub async fn submit(
    State(state): State<SharedState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    form: Result<Form<DeviceForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "",
            Some("device-unknown-code"),
        );
    };
    if crate::login::cross_site(&state, &headers) {
        tracing::warn!("device form posted from another site refused");
        return page(
            &state,
            StatusCode::BAD_REQUEST,
            "",
            Some("device-unknown-code"),
        );
    }
    if let Some(confirmation) = form.confirmation {
        let approve = form.decision.as_deref() == Some("approve");
        return match state
            .oidc
            .device_confirm(&state.engine, &confirmation, approve)
            .await
        {
            Ok(true) => outcome(
                &state,
                "device-approved-heading",
                "device-approved-message",
                "success",
            ),
            Ok(false) => outcome(
                &state,
                "device-denied-heading",
                "device-denied-message",
                "info",
            ),
            Err(e) => device_error(&state, e),
        };
    }
    let typed = form.user_code.unwrap_or_default();
    match state
        .oidc
        .device_user_code(&state.engine, &typed, address)
        .await
    {
        Ok(login) => redirect(&crate::respond::login_location(
            &state,
            &login.service,
            login.renew,
            login.gateway,
        )),
        Err(DeviceError::UnknownCode) => page(
            &state,
            StatusCode::BAD_REQUEST,
            &typed,
            Some("device-unknown-code"),
        ),
        Err(DeviceError::Throttled) => page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            "",
            Some("device-throttled"),
        ),
        Err(e) => device_error(&state, e),
    }
}

/// GET `/oidc/callback`: a device's login comes back to the confirmation
/// page; any other to the authorization code flow.
pub async fn callback(state: State<SharedState>, RawQuery(query): RawQuery) -> Response {
    let raw = query.unwrap_or_default();
    let params = parameters(raw.as_bytes()).ok();
    let device = params.as_ref().and_then(|p| {
        let request = p.get("req").filter(|r| is_device_request(r))?;
        Some((p.get("client_id")?, request))
    });
    let Some((client_id, request)) = device else {
        return super::callback(state, RawQuery(Some(raw))).await;
    };
    let p = params.as_ref();
    let ticket = p.and_then(|p| p.get("ticket")).map(String::as_str);
    let refusal = p
        .and_then(|p| p.get(castellan_core::ConsentRefusal::PARAMETER))
        .and_then(|v| castellan_core::ConsentRefusal::parse(v));
    match state
        .oidc
        .device_callback(&state.engine, client_id, request, ticket, refusal)
        .await
    {
        Ok(confirm) => render(
            StatusCode::OK,
            &DevicePage {
                prefix: state.prefix().to_owned(),
                action: format!("{}/oidc/device", state.prefix()),
                user_code: String::new(),
                error: None,
                confirm: Some(confirm),
            },
        ),
        Err(e) => device_error(&state, e),
    }
}

fn outcome(
    state: &SharedState,
    heading: &'static str,
    message: &'static str,
    tone: &'static str,
) -> Response {
    render(
        StatusCode::OK,
        &MessagePage {
            prefix: state.prefix().to_owned(),
            title: Msg::new(heading),
            heading: Msg::new(heading),
            message: Msg::new(message),
            detail: None,
            tone,
            link: None,
        },
    )
}

fn device_error(state: &SharedState, e: DeviceError) -> Response {
    match e {
        DeviceError::UnknownCode => page(
            state,
            StatusCode::BAD_REQUEST,
            "",
            Some("device-unknown-code"),
        ),
        DeviceError::Throttled => page(
            state,
            StatusCode::TOO_MANY_REQUESTS,
            "",
            Some("device-throttled"),
        ),
        DeviceError::Declined => outcome(
            state,
            "device-denied-heading",
            "device-denied-message",
            "info",
        ),
        DeviceError::Expired => error_page(
            state,
            StatusCode::BAD_REQUEST,
            "error-sign-in-expired",
            "error-request-expired-message",
        ),
        DeviceError::Unavailable(e) => unavailable(state, &e),
    }
}
