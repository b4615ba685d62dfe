//! The second step of a sign-in (`POST /login/mfa`): a code from an
//! authenticator app or a recovery code in the `otp` field, or a passkey.
//! A user without a factor enrols one here first: the QR code and the
//! `otpauth://` URI, the ten recovery codes, and the first code confirms.
//!
//! The sign-in waits in the engine ([`Engine::defer_sign_in`]), bound to
//! the browser; nothing of the session exists until the factor passed, so
//! going to the service without it gets nothing.
//!
//! [`Engine::defer_sign_in`]: castellan_core::Engine::defer_sign_in

use crate::client_address::client_ip;
use crate::cookies::Browser;
use crate::pages::{render, MessagePage};
use crate::respond::unavailable;
use crate::sign_in::{complete_sign_in, expired, step_page, Completion};
use crate::state::SharedState;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use castellan_core::{AuthnError, AuthnMethod, EngineError};
use castellan_mfa::{Proof, Verified};
use serde::Deserialize;
use std::net::SocketAddr;

const MAX_FLOW_ID: usize = 80;

#[derive(Debug, Deserialize)]
pub struct StepForm {
    #[serde(default)]
    flow: String,
    otp: Option<String>,
    webauthn: Option<String>,
    webauthn_register: Option<String>,
}

fn method_of(verified: &Verified) -> AuthnMethod {
    match verified {
        Verified::Totp { .. } => AuthnMethod::Totp,
        Verified::RecoveryCode { .. } => AuthnMethod::RecoveryCode,
        Verified::Passkey { hardware: true, .. } => AuthnMethod::HardwareKey,
        Verified::Passkey {
            hardware: false, ..
        } => AuthnMethod::SoftwareKey,
    }
}

/// POST `/login/mfa`.
pub async fn submit(
    State(state): State<SharedState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    form: Result<Form<StepForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return render(
            StatusCode::BAD_REQUEST,
            &MessagePage::error(state.prefix(), "error-invalid-request", "step-invalid-form"),
        );
    };
    if crate::login::cross_site(&state, &headers) {
        tracing::warn!("second-step form posted from another site refused");
        return expired(&state, None);
    }
    let browser = Browser::of(&headers);
    if form.flow.len() > MAX_FLOW_ID {
        return expired(&state, None);
    }
    let pending = match state.engine.deferred_sign_in(&form.flow, &browser.id).await {
        Ok(Some(p)) => p,
        Ok(None) => return expired(&state, None),
        Err(e) => return unavailable(&state, &e),
    };
    let proof = Proof::from_fields(
        form.otp.as_deref(),
        form.webauthn.as_deref(),
        form.webauthn_register.as_deref(),
    );
    let user = pending.principal.id.clone();
    let client = client_ip(peer.ip(), &headers, &state.settings.trusted_proxies);
    let checked = match &proof {
        None => Ok(None),
        Some(proof) => {
            let now = state.now() / 1000;
            let factors = &state.factors;
            state
                .engine
                .check_second_factor(&user, Some(client), async {
                    match factors
                        .check_step(&user, &pending.challenge, proof, now)
                        .await
                    {
                        Ok(verified) => Ok(verified.as_ref().map(method_of)),
                        Err(e) => Err(AuthnError::Backend(e.to_string())),
                    }
                })
                .await
        }
    };
    let (error, status) = match checked {
        Ok(Some(method)) => return finish(&state, &headers, &browser, &form.flow, method).await,
        Ok(None) if proof.is_none() => ("step-enter-code-or-passkey", StatusCode::UNAUTHORIZED),
        Ok(None) => {
            tracing::info!(user = %user, "second factor refused");
            ("step-wrong-code", StatusCode::UNAUTHORIZED)
        }
        Err(EngineError::Authentication(AuthnError::Throttled)) => {
            tracing::warn!(user = %user, ip = %client, "second factor refused: throttled");
            ("step-throttled", StatusCode::TOO_MANY_REQUESTS)
        }
        Err(EngineError::Authentication(AuthnError::Backend(e))) => {
            tracing::error!(user = %user, error = %e, "second factor not decided: MFA store unavailable");
            return render(
                StatusCode::SERVICE_UNAVAILABLE,
                &MessagePage::unavailable(state.prefix()),
            );
        }
        Err(e) => return unavailable(&state, &e),
    };
    step_page(&state, &browser, &form.flow, pending, Some(error), status).await
}

/// The factor passed: the deferred sign-in is taken out and completed.
async fn finish(
    state: &SharedState,
    headers: &HeaderMap,
    browser: &Browser,
    flow: &str,
    method: AuthnMethod,
) -> Response {
    // Once: of two tabs finishing together, one signs in.
    let pending = match state.engine.take_deferred_sign_in(flow, &browser.id).await {
        Ok(Some(p)) => p,
        Ok(None) => return expired(state, None),
        Err(e) => return unavailable(state, &e),
    };
    tracing::info!(user = %pending.principal.id, method = ?method, "second factor passed");
    let service = pending.service.clone();
    let signed = complete_sign_in(
        state,
        headers,
        Completion {
            principal: pending.principal,
            service: service.as_deref(),
            from_new_login: pending.from_new_login,
            method: pending.response_method.as_deref(),
            methods: pending.methods.with(method),
            step_up: pending.step_up.as_deref(),
            passive: false,
            consented: None,
        },
    )
    .await;
    match signed {
        Ok(response) => response,
        Err(page) => {
            let user = page.signed.session.principal.id.clone();
            page.with_page(crate::login::logged_in_page(state, &user))
        }
    }
}
