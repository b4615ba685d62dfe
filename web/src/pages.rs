//! HTML pages (askama templates in `web/templates`). Every text on them is
//! a catalogue key (castellan-i18n), formatted in the request's language
//! when the page is rendered.

use crate::locale::{self, filters};
use askama::Template;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use castellan_i18n::Msg;

/// A service's look on the pages that name it (a `[themes]` table or its
/// own keys): where its logo and stylesheet are served.
#[derive(Debug, Clone, Default)]
pub struct ThemeLinks {
    pub logo: Option<String>,
    pub stylesheet: Option<String>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub prefix: String,
    pub action: String,
    pub service_name: Option<String>,
    pub theme: ThemeLinks,
    pub username: String,
    pub execution: String,
    pub error: Option<Msg>,
    /// A link shown with the error (where to change a password).
    pub error_link: Option<Link>,
    /// The error is about the credentials typed (marks the fields invalid).
    pub invalid: bool,
    pub notice: Option<Msg>,
    /// One button per upstream identity provider, by its name.
    pub upstreams: Vec<NamedLink>,
}

/// A signed-in user's password expires soon: told before going on.
#[derive(Template)]
#[template(path = "notice.html")]
pub struct NoticePage {
    pub prefix: String,
    pub message: Msg,
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
    pub theme: ThemeLinks,
    pub user: String,
    pub flow: String,
    pub error: Option<Msg>,
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
    pub notice: Option<Msg>,
    pub error: Option<Msg>,
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
    /// The catalogue key of the factor's kind.
    pub kind: Msg,
    pub added: String,
}

pub struct TotpOffer {
    pub uri: String,
    /// Inline SVG, made by us from the URI.
    pub qr_svg: String,
}

/// A link whose label is a message.
pub struct Link {
    pub href: String,
    pub label: Msg,
}

/// A link whose label is a name (an upstream identity provider's).
pub struct NamedLink {
    pub href: String,
    pub name: String,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub prefix: String,
    pub title: Msg,
    pub heading: Msg,
    pub message: Msg,
    pub detail: Option<Msg>,
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

/// Renders a page in the request's language.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    let current = locale::current();
    let values = (locale::VALUE, &current as &dyn std::any::Any);
    match page.render_with_values(&values) {
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
    pub fn error(prefix: &str, heading: &'static str, message: impl Into<Msg>) -> Self {
        Self {
            prefix: prefix.to_owned(),
            title: Msg::new(heading),
            heading: Msg::new(heading),
            message: message.into(),
            detail: None,
            tone: "error",
            link: None,
        }
    }

    /// A protocol's own description of what was wrong, for the
    /// application's administrator (not translated: it names parameters).
    pub fn with_technical_detail(mut self, detail: &str) -> Self {
        self.detail = Some(Msg::new("error-technical-detail").with("detail", detail));
        self
    }

    /// The end of a logout.
    pub fn signed_out(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            title: Msg::new("signed-out-title"),
            heading: Msg::new("signed-out-heading"),
            message: Msg::new("signed-out-message"),
            detail: None,
            tone: "success",
            link: Some(Link {
                href: format!("{prefix}/login"),
                label: Msg::new("sign-in-again"),
            }),
        }
    }

    pub fn unavailable(prefix: &str) -> Self {
        Self::error(prefix, "error-unavailable", "error-unavailable-message")
    }
}
