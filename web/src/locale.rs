//! The language of a request's pages: negotiated once by the frame around
//! the routes (`middleware`), read by the pages' `render` and the
//! templates' filters.
//!
//! The frame also remembers a `?locale=` choice in a cookie (HttpOnly,
//! SameSite=Lax, path = the prefix) and marks HTML answers with
//! `Content-Language` and `Vary: Accept-Language, Cookie`.

use crate::cookies;
use crate::state::AppState;
use askama::Values;
use axum::http::{header, HeaderValue, Method, Request, Uri};
use axum::response::Response;
use castellan_i18n::{negotiate, text, Lang, Msg, LOCALE_COOKIE, LOCALE_PARAM};
use std::future::Future;
use tokio::task::futures::TaskLocalFuture;

/// What a page needs to know of its request.
#[derive(Debug, Clone, Default)]
pub struct PageLocale {
    pub lang: Lang,
    /// The URI of a GET (path and query): the language menu links to it,
    /// without `locale`. `None` for other methods (a form post is not
    /// repeated). Kept whole (a reference-counted copy) and read only when
    /// a page draws its menu: most requests are redirects and XML.
    pub here: Option<Uri>,
}

tokio::task_local! {
    static CURRENT: PageLocale;
}

/// The current request's language (English outside a request).
pub fn current() -> PageLocale {
    CURRENT.try_with(Clone::clone).unwrap_or_default()
}

/// What the frame around the routes marks an answer with, once served.
pub struct Marks {
    lang: Lang,
    /// A `?locale=` choice, remembered in a cookie.
    chosen: Option<Lang>,
    cookie: Option<String>,
}

/// Negotiates a request's language: what its pages read, and what its
/// answer is marked with.
pub fn choose<B>(req: &Request<B>) -> (PageLocale, Marks) {
    let query = req.uri().query().unwrap_or("");
    // Parsed only when it can be there: a ticket's query is long.
    let chosen = query
        .contains(LOCALE_PARAM)
        .then(|| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(k, _)| k == LOCALE_PARAM)
                .and_then(|(_, v)| Lang::from_tag(&v))
        })
        .flatten();
    let cookie = cookies::cookie(req.headers(), LOCALE_COOKIE);
    let accept = req
        .headers()
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok());
    let lang = negotiate(chosen.map(Lang::code), cookie.as_deref(), accept);
    // The frame reads it before routing: the URI the browser asked for.
    let here = (req.method() == Method::GET).then(|| req.uri().clone());
    (
        PageLocale { lang, here },
        Marks {
            lang,
            chosen,
            cookie,
        },
    )
}

/// Runs `future` (the request) in its language.
pub fn scope<F: Future>(page: PageLocale, future: F) -> TaskLocalFuture<PageLocale, F> {
    CURRENT.scope(page, future)
}

/// Marks HTML answers with their language, and remembers a `?locale=`
/// choice in a cookie.
pub fn mark(state: &AppState, marks: &Marks, response: &mut Response) {
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    let headers = response.headers_mut();
    if is_html {
        headers.insert(
            header::CONTENT_LANGUAGE,
            HeaderValue::from_static(marks.lang.code()),
        );
        headers.append(
            header::VARY,
            HeaderValue::from_static("Accept-Language, Cookie"),
        );
    }
    if let Some(lang) = marks.chosen {
        if marks.cookie.as_deref().and_then(Lang::from_tag) != Some(lang) {
            let secure = if state.settings.secure_cookies() {
                "; Secure"
            } else {
                ""
            };
            let value = format!(
                "{LOCALE_COOKIE}={}; Path={}; Max-Age=31536000; HttpOnly; SameSite=Lax{secure}",
                lang.code(),
                cookies::path(state.prefix())
            );
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.append(header::SET_COOKIE, v);
            }
        }
    }
}

/// The parameters a language link carries over: those of a login (the
/// flow continues in the other language). Anything else a request carried
/// (a SAML message, a RelayState, an error's input) is not echoed into
/// the page.
const KEPT_PARAMS: [&str; 5] = ["service", "renew", "gateway", "method", "client_name"];

fn without_locale(path: &str, query: &str) -> String {
    let kept: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| KEPT_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.extend_pairs(kept);
    let query = query.finish();
    if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    }
}

impl PageLocale {
    /// The language menu's links (none on a page answering a post).
    pub fn menu(&self) -> Vec<LanguageLink> {
        let Some(uri) = &self.here else {
            return Vec::new();
        };
        let here = without_locale(uri.path(), uri.query().unwrap_or(""));
        let sep = if here.contains('?') { '&' } else { '?' };
        Lang::ALL
            .into_iter()
            .map(|l| LanguageLink {
                href: format!("{here}{sep}{LOCALE_PARAM}={}", l.code()),
                code: l.code(),
                name: l.native_name(),
                current: l == self.lang,
            })
            .collect()
    }
}

pub struct LanguageLink {
    pub href: String,
    pub code: &'static str,
    pub name: &'static str,
    pub current: bool,
}

/// The key under which templates find the [`PageLocale`].
pub const VALUE: &str = "locale";

fn of(values: &dyn Values) -> Lang {
    askama::get_value::<PageLocale>(values, VALUE)
        .map(|l| l.lang)
        .unwrap_or_default()
}

/// Something a template translates: a key written in it, or a [`Msg`] a
/// handler passed.
pub trait Translatable {
    fn to_msg(&self) -> Msg;
}

impl Translatable for str {
    fn to_msg(&self) -> Msg {
        Msg::dynamic(self)
    }
}

impl Translatable for Msg {
    fn to_msg(&self) -> Msg {
        self.clone()
    }
}

impl<T: Translatable + ?Sized> Translatable for &T {
    fn to_msg(&self) -> Msg {
        (**self).to_msg()
    }
}

/// The templates' filters: `{{ "login-title"|t }}`, `{{ error|t }}`,
/// `{{ "mfa-signed-in-as"|t1("user", user) }}`, `{{ "x"|tn("count", n) }}`.
pub mod filters {
    use super::*;

    pub fn t<T: Translatable + ?Sized>(m: &T, values: &dyn Values) -> askama::Result<String> {
        Ok(text(of(values), &m.to_msg()))
    }

    pub fn t1<T: Translatable + ?Sized>(
        m: &T,
        values: &dyn Values,
        name: &'static str,
        value: impl std::fmt::Display,
    ) -> askama::Result<String> {
        Ok(text(of(values), &m.to_msg().with(name, value.to_string())))
    }

    pub fn t2<T: Translatable + ?Sized>(
        m: &T,
        values: &dyn Values,
        name: &'static str,
        value: impl std::fmt::Display,
        name2: &'static str,
        value2: impl std::fmt::Display,
    ) -> askama::Result<String> {
        let msg = m
            .to_msg()
            .with(name, value.to_string())
            .with(name2, value2.to_string());
        Ok(text(of(values), &msg))
    }

    pub fn tn<T: Translatable + ?Sized>(
        m: &T,
        values: &dyn Values,
        name: &'static str,
        n: &usize,
    ) -> askama::Result<String> {
        let n = i64::try_from(*n).unwrap_or(i64::MAX);
        Ok(text(of(values), &m.to_msg().count(name, n)))
    }

    /// A sentence with a name in it, the name emphasised: the sentence is
    /// escaped, then the (escaped) name is wrapped in `<strong>`. Marked
    /// safe in the template.
    pub fn t_strong<T: Translatable + ?Sized>(
        m: &T,
        values: &dyn Values,
        name: &'static str,
        value: impl std::fmt::Display,
    ) -> askama::Result<String> {
        emphasised(of(values), m.to_msg(), name, &value.to_string())
    }

    /// [`t_strong`] with one more (plain) argument.
    pub fn t_strong_with<T: Translatable + ?Sized>(
        m: &T,
        values: &dyn Values,
        name: &'static str,
        value: impl std::fmt::Display,
        other: &'static str,
        other_value: impl std::fmt::Display,
    ) -> askama::Result<String> {
        let msg = m.to_msg().with(other, other_value.to_string());
        emphasised(of(values), msg, name, &value.to_string())
    }

    fn emphasised(lang: Lang, msg: Msg, name: &'static str, value: &str) -> askama::Result<String> {
        const MARK: &str = "\u{E000}";
        let sentence = text(lang, &msg.with(name, MARK));
        let strong = format!("<strong class=\"service-name\">{}</strong>", escape(value));
        Ok(escape(&sentence).replace(MARK, &strong))
    }

    /// A hidden field's value, marked safe in the template: a value with
    /// none of the five characters HTML escapes (base64, as a SAML message
    /// of tens of KiB is) is written as it is; anything else is escaped
    /// here. The scan has no early exit, so that it runs as vector code.
    pub fn field<'a>(value: &'a str, _: &dyn Values) -> askama::Result<std::borrow::Cow<'a, str>> {
        let special = value.bytes().fold(false, |found, b| {
            found | (b == b'<') | (b == b'>') | (b == b'&') | (b == b'"') | (b == b'\'')
        });
        Ok(if special {
            std::borrow::Cow::Owned(escape(value))
        } else {
            std::borrow::Cow::Borrowed(value)
        })
    }

    pub(crate) fn escape(s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            match c {
                '<' => out.push_str("&lt;"),
                '>' => out.push_str("&gt;"),
                '&' => out.push_str("&amp;"),
                '"' => out.push_str("&quot;"),
                '\'' => out.push_str("&#39;"),
                c => out.push(c),
            }
        }
        out
    }

    /// The page's language code (`<html lang>`); the argument is ignored.
    pub fn lang<T: ?Sized>(_: &T, values: &dyn Values) -> askama::Result<&'static str> {
        Ok(of(values).code())
    }

    /// The language menu's links.
    pub fn languages<T: ?Sized>(_: &T, values: &dyn Values) -> askama::Result<Vec<LanguageLink>> {
        Ok(askama::get_value::<PageLocale>(values, VALUE)
            .map(PageLocale::menu)
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_menu_keeps_the_login_parameters_only() {
        let l = PageLocale {
            lang: Lang::Fr,
            here: Some(Uri::from_static(
                "/cas/login?service=https%3A%2F%2Fa%2F&locale=de&RelayState=evil&SAMLRequest=x",
            )),
        };
        let menu = l.menu();
        assert_eq!(menu.len(), 4);
        assert_eq!(
            menu[2].href,
            "/cas/login?service=https%3A%2F%2Fa%2F&locale=de"
        );
        assert!(menu[1].current);
        assert!(PageLocale::default().menu().is_empty());
    }

    #[test]
    fn hidden_field_values_are_escaped_when_they_need_it() {
        let locale = PageLocale::default();
        let values = (VALUE, &locale as &dyn std::any::Any);
        assert_eq!(
            filters::field("PHNhbWxw+/=", &values).unwrap(),
            "PHNhbWxw+/="
        );
        assert_eq!(
            filters::field("a\"><script>&'", &values).unwrap(),
            "a&quot;&gt;&lt;script&gt;&amp;&#39;"
        );
        for c in ['<', '>', '&', '"', '\'', ' ', '%'] {
            let value = format!("{}{c}{}", "A".repeat(100), "b".repeat(100));
            let written = filters::field(&value, &values).unwrap();
            assert_eq!(written, filters::escape(&value), "{c}");
        }
    }

    #[test]
    fn a_name_in_a_sentence_is_escaped_and_emphasised() {
        let locale = PageLocale::default();
        let values = (VALUE, &locale as &dyn std::any::Any);
        let html = filters::t_strong("login-continue-to", &values, "name", "<b>&x</b>").unwrap();
        assert_eq!(
            html,
            "to continue to <strong class=\"service-name\">&lt;b&gt;&amp;x&lt;/b&gt;</strong>"
        );
    }
}
