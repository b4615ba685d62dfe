//! Castellan's page languages and per-service themes.
//!
//! - [`Lang`] and [`negotiate`]: which language a page is in (`?locale=`,
//!   the `castellan_locale` cookie, `Accept-Language`, else English).
//! - [`Msg`] and [`text`]: messages by key, formatted from the Fluent
//!   catalogues in `locales/<lang>/castellan.ftl`.
//! - [`theme`]: a service's display name, logo and accent colour, checked.

mod catalogue;
mod negotiation;
pub mod theme;

pub use catalogue::{text, Arg, Msg};
pub use negotiation::{negotiate, parse_accept_language, Lang};

/// The cookie that remembers a language chosen with `?locale=`.
pub const LOCALE_COOKIE: &str = "castellan_locale";

/// The query parameter that chooses a language (as in Apereo CAS).
pub const LOCALE_PARAM: &str = "locale";
