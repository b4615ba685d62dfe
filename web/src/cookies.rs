//! The SSO session cookie `CASTGC` (contract: HttpOnly, SameSite=Lax, Secure
//! when public_url is https, path = the prefix).

use axum::http::{header, HeaderMap, HeaderValue};

pub const SESSION_COOKIE: &str = "CASTGC";
/// The pre-session cookie: a random id of the browser, set with the login
/// form, that its `execution` token is bound to (login CSRF: a token fetched
/// by someone else cannot be posted from this browser).
pub const BROWSER_COOKIE: &str = "CASBROWSER";
const MAX_COOKIE_VALUE: usize = 256;

pub(crate) fn cookie(headers: &HeaderMap, wanted: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| {
            *name == wanted && !value.is_empty() && value.len() <= MAX_COOKIE_VALUE
        })
        .map(|(_, value)| value.to_owned())
}

/// The session id from the request's cookies, if any.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    cookie(headers, SESSION_COOKIE)
}

/// The browser's pre-session id: the one it sent, or a new one that
/// [`Browser::cookie`] must then set.
pub struct Browser {
    pub id: String,
    pub fresh: bool,
}

impl Browser {
    pub fn of(headers: &HeaderMap) -> Self {
        match cookie(headers, BROWSER_COOKIE) {
            Some(id) => Self { id, fresh: false },
            None => {
                use base64::Engine as _;
                let id = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(rand::random::<[u8; 16]>());
                Self { id, fresh: true }
            }
        }
    }

    /// The Set-Cookie header for a fresh id: a browser-session cookie,
    /// HttpOnly, SameSite=Lax (the form posts back to the same site).
    /// Deliberately not `Secure`: it is no credential (knowing it lets no
    /// one sign in or forge a token), and a deployment reached over plain
    /// http in front of an https `public_url` must still be able to sign in.
    pub fn cookie(&self, prefix: &str) -> Option<HeaderValue> {
        if !self.fresh {
            return None;
        }
        HeaderValue::from_str(&format!(
            "{BROWSER_COOKIE}={}; Path={}; HttpOnly; SameSite=Lax",
            self.id,
            path(prefix)
        ))
        .ok()
    }
}

pub(crate) fn path(prefix: &str) -> &str {
    if prefix.is_empty() {
        "/"
    } else {
        prefix
    }
}

pub fn set_session(prefix: &str, id: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{SESSION_COOKIE}={id}; Path={}; HttpOnly; SameSite=Lax{secure}",
        path(prefix)
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("CASTGC=; Max-Age=0"))
}

pub fn clear_session(prefix: &str, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let value = format!(
        "{SESSION_COOKIE}=; Path={}; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax{secure}",
        path(prefix)
    );
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("CASTGC=; Max-Age=0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_session_among_other_cookies() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; CASTGCX=2"));
        h.append(
            header::COOKIE,
            HeaderValue::from_static("b=3;CASTGC=TGT-1-abc; c=4"),
        );
        assert_eq!(session_id(&h).as_deref(), Some("TGT-1-abc"));
        assert_eq!(session_id(&HeaderMap::new()), None);
    }

    #[test]
    fn cookie_attributes() {
        let v = set_session("/cas", "TGT-1-x", true);
        assert_eq!(
            v,
            "CASTGC=TGT-1-x; Path=/cas; HttpOnly; SameSite=Lax; Secure"
        );
        assert!(clear_session("", false)
            .to_str()
            .unwrap()
            .contains("Path=/; Max-Age=0"));
    }
}
