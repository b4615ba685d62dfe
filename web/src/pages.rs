//! HTML pages (askama templates in `web/templates`).

use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub prefix: String,
    pub action: String,
    pub service_name: Option<String>,
    pub username: String,
    pub execution: String,
    pub error: Option<String>,
    /// A link shown with the error (where to change a password).
    pub error_link: Option<Link>,
    /// The error is about the credentials typed (marks the fields invalid).
    pub invalid: bool,
    pub notice: Option<String>,
    /// One button per upstream identity provider.
    pub upstreams: Vec<Link>,
}

/// A signed-in user's password expires soon: told before going on.
#[derive(Template)]
#[template(path = "notice.html")]
pub struct NoticePage {
    pub prefix: String,
    pub message: String,
    pub change: Option<Link>,
    /// On to the application; `None` when the login was for none.
    pub next: Option<Link>,
}

/// The second step of a sign-in: a code (or passkey), or the enrolment of
/// a first factor.
#[derive(Template)]
#[template(path = "second_step.html")]
pub struct SecondStepPage {
    pub prefix: String,
    pub action: String,
    pub service_name: Option<String>,
    pub user: String,
    pub flow: String,
    pub error: Option<String>,
    pub invalid: bool,
    /// Enrolment: the authenticator app's QR code and URI.
    pub enrol: Option<TotpOffer>,
    pub recovery_codes: Vec<String>,
    /// `navigator.credentials.get` options (JSON), when the user has a passkey.
    pub passkey_options: Option<String>,
    /// `navigator.credentials.create` options (JSON), at enrolment.
    pub passkey_create_options: Option<String>,
}

/// Attribute release consent: what a service is about to receive.
#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage {
    pub prefix: String,
    pub action: String,
    pub service_name: String,
    pub user: String,
    pub flow: String,
    pub attributes: castellan_core::Attributes,
}

/// `/mfa`: the user's own factors.
#[derive(Template)]
#[template(path = "mfa.html")]
pub struct MfaPage {
    pub prefix: String,
    pub user: String,
    pub csrf: String,
    pub flow: String,
    pub notice: Option<String>,
    pub error: Option<String>,
    pub factors: Vec<FactorLine>,
    pub recovery_left: usize,
    /// Codes just made: shown once, instead of the list.
    pub recovery_codes: Vec<String>,
    /// Adding an authenticator app: its QR code and URI.
    pub enrol: Option<TotpOffer>,
    pub passkey_create_options: Option<String>,
}

pub struct FactorLine {
    pub id: String,
    pub label: String,
    pub kind: &'static str,
    pub added: String,
}

pub struct TotpOffer {
    pub uri: String,
    /// Inline SVG, made by us from the URI.
    pub qr_svg: String,
}

pub struct Link {
    pub href: String,
    pub label: String,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub prefix: String,
    pub title: String,
    pub heading: String,
    pub message: String,
    pub detail: Option<String>,
    /// "success", "error" or "info".
    pub tone: &'static str,
    pub link: Option<Link>,
}

#[derive(Template)]
#[template(path = "post_redirect.html")]
pub struct PostRedirectPage {
    pub prefix: String,
    pub action: String,
    /// Hidden fields posted to `action`.
    pub fields: Vec<(String, String)>,
}

pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

impl MessagePage {
    pub fn error(prefix: &str, heading: &str, message: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            title: heading.to_owned(),
            heading: heading.to_owned(),
            message: message.to_owned(),
            detail: None,
            tone: "error",
            link: None,
        }
    }

    /// The end of a logout.
    pub fn signed_out(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            title: "Signed out".into(),
            heading: "You have signed out".into(),
            message: "Your single sign-on session has ended. For security, close your browser if you used applications that keep their own sessions.".into(),
            detail: None,
            tone: "success",
            link: Some(Link {
                href: format!("{prefix}/login"),
                label: "Sign in again".into(),
            }),
        }
    }

    pub fn unavailable(prefix: &str) -> Self {
        Self::error(
            prefix,
            "Temporarily unavailable",
            "Sign-in is temporarily unavailable. Please try again in a few minutes.",
        )
    }
}
