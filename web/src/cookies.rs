//! The SSO session cookie `CASTGC` (contract: HttpOnly, SameSite=Lax, Secure
//! when public_url is https, path = the prefix).

use axum::http::{header, HeaderMap, HeaderValue};

pub const SESSION_COOKIE: &str = "CASTGC";

/// The session id from the request's cookies, if any.
pub fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, value)| *name == SESSION_COOKIE && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

fn path(prefix: &str) -> &str {
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
