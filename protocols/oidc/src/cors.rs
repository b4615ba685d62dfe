//! Cross-origin access for browser-only clients (public clients with PKCE
//! running in a page): which origins may read the answers of which
//! endpoint, and the headers that say so (the Fetch standard's CORS
//! protocol).
//!
//! The metadata (discovery, JWKS) is public: any origin may read it. The
//! token, userinfo, revocation and pushed authorization request endpoints
//! answer only the origins of the registered clients' `redirect_uris` and
//! their `allowed_origins`. Credentials (cookies) are never allowed: none of
//! these endpoints reads a cookie, and a browser app sends its tokens in
//! headers and forms.

use crate::client::OidcClient;
use std::collections::HashSet;
use url::Url;

/// How long a browser may cache a preflight's answer (seconds; Chromium
/// caps it at 7200).
pub const PREFLIGHT_MAX_AGE: u32 = 7200;

/// Longest `Origin` header considered.
const MAX_ORIGIN_LEN: usize = 512;

/// The endpoints a page may call across origins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorsEndpoint {
    Discovery,
    Jwks,
    Token,
    Userinfo,
    Revocation,
    PushedAuthorization,
}

impl CorsEndpoint {
    /// Readable from every origin, without credentials.
    fn is_public(self) -> bool {
        matches!(self, CorsEndpoint::Discovery | CorsEndpoint::Jwks)
    }

    fn methods(self) -> &'static str {
        match self {
            CorsEndpoint::Discovery | CorsEndpoint::Jwks => "GET",
            CorsEndpoint::Userinfo => "GET, POST",
            _ => "POST",
        }
    }
}

/// Request headers a page may send: a bearer token or DPoP proof, and the
/// form's type.
const ALLOWED_HEADERS: &str = "authorization, content-type, dpop";
/// Response headers a page may read beside the CORS-safelisted ones.
const EXPOSED_HEADERS: &str = "www-authenticate, dpop-nonce";

/// The origin of a URL as browsers send it in `Origin`
/// (`scheme://host[:port]`, the default port left out), for http(s) only.
pub fn origin_of(uri: &str) -> Option<String> {
    let url = Url::parse(uri).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

/// Checks a configured `allowed_origins` entry: exactly
/// `scheme://host[:port]` (http or https), as a browser writes it; nothing
/// else (no path, not even `/`, no wildcard).
pub fn parse_origin(value: &str) -> Option<String> {
    if value.contains('*') {
        return None;
    }
    let origin = origin_of(value)?;
    (origin == value).then_some(origin)
}

/// The origins that may call the client endpoints, computed once per
/// configuration generation.
#[derive(Debug, Default, Clone)]
pub struct CorsOrigins {
    origins: HashSet<String>,
}

impl CorsOrigins {
    pub fn of_clients<'a>(clients: impl IntoIterator<Item = &'a OidcClient>) -> Self {
        let mut origins = HashSet::new();
        for c in clients {
            origins.extend(c.redirect_uris.iter().filter_map(|u| origin_of(u)));
            origins.extend(c.allowed_origins.iter().cloned());
        }
        Self { origins }
    }

    pub fn allows(&self, origin: &str) -> bool {
        origin.len() <= MAX_ORIGIN_LEN && self.origins.contains(origin)
    }

    /// The `Access-Control-Allow-Origin` value for a page of `origin`
    /// calling `endpoint`; `None`: the browser must not let it read.
    fn allow_origin(&self, endpoint: CorsEndpoint, origin: &str) -> Option<String> {
        if endpoint.is_public() {
            Some("*".to_owned())
        } else if self.allows(origin) {
            Some(origin.to_owned())
        } else {
            None
        }
    }

    /// The answer to a preflight (`OPTIONS` with
    /// `Access-Control-Request-Method`) from `origin`; `None`: refused (the
    /// browser then fails the request).
    pub fn preflight(
        &self,
        endpoint: CorsEndpoint,
        origin: &str,
        method: &str,
    ) -> Option<Vec<(&'static str, String)>> {
        if !endpoint.methods().split(", ").any(|m| m == method) {
            return None;
        }
        let allow = self.allow_origin(endpoint, origin)?;
        Some(vec![
            ("access-control-allow-origin", allow),
            (
                "access-control-allow-methods",
                endpoint.methods().to_owned(),
            ),
            ("access-control-allow-headers", ALLOWED_HEADERS.to_owned()),
            ("access-control-max-age", PREFLIGHT_MAX_AGE.to_string()),
            ("vary", "Origin".to_owned()),
        ])
    }

    /// The headers of an actual response to `origin` (none when the
    /// request has no `Origin` or the origin is not allowed).
    pub fn response_headers(
        &self,
        endpoint: CorsEndpoint,
        origin: Option<&str>,
    ) -> Vec<(&'static str, String)> {
        if endpoint.is_public() {
            return vec![("access-control-allow-origin", "*".to_owned())];
        }
        // The answer differs per origin: caches must keep them apart.
        let mut headers = vec![("vary", "Origin".to_owned())];
        if let Some(allow) = origin.and_then(|o| self.allow_origin(endpoint, o)) {
            headers.push(("access-control-allow-origin", allow));
            headers.push(("access-control-expose-headers", EXPOSED_HEADERS.to_owned()));
        }
        headers
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::tests::client;

    fn origins() -> CorsOrigins {
        let mut spa = client("spa", None);
        spa.redirect_uris = vec!["https://spa.example:8443/cb?x=1".into()];
        spa.allowed_origins = vec!["https://also.example".into()];
        let mut web = client("web", Some("s"));
        web.redirect_uris = vec!["https://web.example:443/cb".into()];
        CorsOrigins::of_clients([&spa, &web])
    }

    fn get<'a>(headers: &'a [(&'static str, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn origins_are_those_of_redirect_uris_and_allowed_origins() {
        let o = origins();
        assert!(o.allows("https://spa.example:8443"));
        assert!(o.allows("https://also.example"));
        // The default port is left out, as browsers do.
        assert!(o.allows("https://web.example"));
        assert!(!o.allows("https://web.example:443"));
        assert!(!o.allows("https://spa.example"));
        assert!(!o.allows("http://spa.example:8443"));
        assert!(!o.allows("null"));
        assert!(!o.allows("*"));
    }

    #[test]
    fn an_allowed_origin_is_an_origin_and_nothing_else() {
        assert_eq!(
            parse_origin("https://a.example").as_deref(),
            Some("https://a.example")
        );
        assert_eq!(
            parse_origin("http://127.0.0.1:8080").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        for bad in [
            "https://a.example/",
            "https://a.example/app",
            "https://a.example?x",
            "https://user@a.example",
            "https://a.example:443",
            "HTTPS://A.example",
            "*",
            "https://*.example",
            "null",
            "file:///tmp",
            "ftp://a.example",
            "a.example",
        ] {
            assert_eq!(parse_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn client_endpoints_echo_only_registered_origins_never_with_credentials() {
        let o = origins();
        let ok = o
            .preflight(CorsEndpoint::Token, "https://spa.example:8443", "POST")
            .unwrap();
        assert_eq!(
            get(&ok, "access-control-allow-origin"),
            Some("https://spa.example:8443")
        );
        assert_eq!(get(&ok, "access-control-max-age"), Some("7200"));
        assert_eq!(get(&ok, "vary"), Some("Origin"));
        assert!(get(&ok, "access-control-allow-credentials").is_none());
        assert!(o
            .preflight(CorsEndpoint::Token, "https://evil.example", "POST")
            .is_none());
        assert!(o
            .preflight(CorsEndpoint::Token, "https://spa.example:8443", "DELETE")
            .is_none());
        let actual = o.response_headers(CorsEndpoint::Userinfo, Some("https://also.example"));
        assert_eq!(
            get(&actual, "access-control-allow-origin"),
            Some("https://also.example")
        );
        let refused = o.response_headers(CorsEndpoint::Userinfo, Some("https://evil.example"));
        assert_eq!(get(&refused, "access-control-allow-origin"), None);
        assert_eq!(get(&refused, "vary"), Some("Origin"));
    }

    #[test]
    fn metadata_is_public_without_credentials() {
        let o = origins();
        for endpoint in [CorsEndpoint::Discovery, CorsEndpoint::Jwks] {
            let h = o.response_headers(endpoint, Some("https://anyone.example"));
            assert_eq!(get(&h, "access-control-allow-origin"), Some("*"));
            assert!(get(&h, "access-control-allow-credentials").is_none());
            let p = o
                .preflight(endpoint, "https://anyone.example", "GET")
                .unwrap();
            assert_eq!(get(&p, "access-control-allow-origin"), Some("*"));
        }
    }
}
