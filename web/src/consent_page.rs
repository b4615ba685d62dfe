//! Attribute release consent: the page that shows what a service is about
//! to receive, and `POST /login/consent`, the user's decision.
//!
//! The sign-in waits in the engine ([`Engine::defer_consent`]), bound to
//! the browser and taken out once, so a decision is neither forged from
//! another site nor replayed. Accept records it and completes as SSO
//! would; decline sends a CAS user nowhere (no ticket) and an in-process
//! client's callback its protocol's refusal.
//!
//! [`Engine::defer_consent`]: castellan_core::Engine::defer_consent

use crate::cookies::Browser;
use crate::metrics::Metrics;
use crate::pages::{render, MessagePage};
use crate::respond::{redirect, unavailable};
use crate::sign_in::{complete_sign_in, expired, to_service, Completion};
use crate::state::SharedState;
use axum::extract::rejection::FormRejection;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use castellan_core::{AfterConsent, ConsentRefusal, EngineError, PendingConsent};
use castellan_i18n::Msg;
use serde::Deserialize;

const MAX_FLOW_ID: usize = 80;

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    #[serde(default)]
    flow: String,
    #[serde(default)]
    decision: String,
}

/// POST `/login/consent`.
pub async fn decide(
    State(state): State<SharedState>,
    headers: HeaderMap,
    form: Result<Form<DecisionForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return render(
            StatusCode::BAD_REQUEST,
            &MessagePage::error(
                state.prefix(),
                "error-invalid-request",
                "consent-invalid-form",
            ),
        );
    };
    if crate::login::cross_site(&state, &headers) {
        tracing::warn!("consent form posted from another site refused");
        return expired(&state, None);
    }
    let accept = match form.decision.as_str() {
        "accept" => true,
        "decline" => false,
        _ => return expired(&state, None),
    };
    let browser = Browser::of(&headers);
    if form.flow.len() > MAX_FLOW_ID {
        return expired(&state, None);
    }
    let pending = match state.engine.take_consent(&form.flow, &browser.id).await {
        Ok(Some(p)) => p,
        Ok(None) => return expired(&state, None),
        Err(e) => return unavailable(&state, &e),
    };
    if !accept {
        return declined(&state, &pending).await;
    }
    if let Err(e) = state.engine.remember_consent(&pending.ask).await {
        return unavailable(&state, &e);
    }
    tracing::info!(user = %pending.principal.id, service = %pending.ask.service_key, "consent given");
    let digest = pending.ask.digest.as_str();
    match pending.then {
        AfterConsent::Session(session_id) => {
            match state
                .engine
                .grant_service_ticket_consented(&session_id, &pending.service, false, Some(digest))
                .await
            {
                Ok(st) => {
                    Metrics::inc(&state.metrics.service_tickets_granted);
                    to_service(
                        &state,
                        &pending.service,
                        &st.id,
                        pending.response_method.as_deref(),
                    )
                }
                Err(EngineError::SessionNotFound) => expired(&state, Some(&pending.service)),
                Err(e) => unavailable(&state, &e),
            }
        }
        AfterConsent::SignIn(login) => complete_sign_in(
            &state,
            &headers,
            Completion {
                principal: login.principal,
                service: Some(&pending.service),
                from_new_login: login.from_new_login,
                method: login.response_method.as_deref(),
                methods: login.methods,
                step_up: login.step_up.as_deref(),
                passive: false,
                consented: Some(digest),
            },
        )
        .await
        .unwrap_or_else(|p| p.with_page(expired(&state, None))),
    }
}

/// Nothing is released: no ticket. An OIDC client or SAML SP hears its
/// protocol's refusal at its callback; a CAS user is told on a page.
async fn declined(state: &SharedState, pending: &PendingConsent) -> Response {
    tracing::info!(user = %pending.principal.id, service = %pending.ask.service_key, "consent declined");
    if let Err(e) = state.engine.forget_consent(&pending.ask).await {
        return unavailable(state, &e);
    }
    if state.engine.is_callback(&pending.service) {
        return redirect(&ConsentRefusal::Declined.on(&pending.service));
    }
    render(
        StatusCode::FORBIDDEN,
        &MessagePage {
            prefix: state.prefix().to_owned(),
            title: Msg::new("consent-declined-heading"),
            heading: Msg::new("consent-declined-heading"),
            message: Msg::new("consent-declined-message").with(
                "name",
                crate::sign_in::service_name(state, &pending.service),
            ),
            detail: None,
            tone: "info",
            link: None,
        },
    )
}
