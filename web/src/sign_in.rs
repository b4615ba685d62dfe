//! The web side of the one sign-in sequence ([`Engine::sign_in`]): whatever
//! proved who the user is (the password form, an upstream, next a second
//! factor) ends here, with the session cookie and the service's ticket.
//!
//! [`Engine::sign_in`]: castellan_core::Engine::sign_in

use crate::cookies;
use crate::metrics::Metrics;
use crate::pages::{render, PostRedirectPage};
use crate::respond::{redirect, unavailable};
use crate::state::SharedState;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use castellan_cas::service_url::with_ticket;
use castellan_core::{Principal, SignIn, SignedIn};
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

/// The web side of the one sign-in sequence ([`Engine::sign_in`]), for
/// whatever proved who the user is (the password form, an upstream): the
/// session cookie, and the service's ticket sent back to it. `Err` holds
/// the sign-in when it was for no service, for the caller's own page; the
/// caller then adds [`session_cookie`].
///
/// [`Engine::sign_in`]: castellan_core::Engine::sign_in
pub async fn complete_sign_in(
    state: &SharedState,
    headers: &HeaderMap,
    principal: Arc<Principal>,
    service: Option<&str>,
    from_new_login: bool,
    method: Option<&str>,
) -> Result<Response, SignedInPage> {
    let previous = cookies::session_id(headers);
    let signed = state
        .engine
        .sign_in(SignIn {
            previous: previous.as_deref(),
            principal,
            long_term: false,
            service,
            from_new_login,
        })
        .await;
    let signed = match signed {
        Ok(s) => s,
        Err(e) => return Ok(unavailable(state, &e)),
    };
    Metrics::inc(&state.metrics.logins_succeeded);
    let cookie = session_cookie(state, &signed.session.id);
    let mut response = match (&signed.ticket, service) {
        (Some(st), Some(service)) => {
            Metrics::inc(&state.metrics.service_tickets_granted);
            to_service(state, service, &st.id, method)
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
