//! OAuth2 / OpenID Connect load: client_credentials grants, refresh grants,
//! and authorization-code round trips with an SSO session.

use crate::client::{expect_status, Conn, Resp};
use crate::flows::{self, Flow};
use anyhow::{anyhow, Context as _, Result};
use hyper::StatusCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A fixed PKCE pair (RFC 7636 Appendix B): the server does the same work
/// whatever the verifier.
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

pub struct Client {
    /// `{base}/oidc`
    pub oidc: String,
    pub client_id: String,
    pub client_secret: String,
    pub redirect_uri: String,
    /// private_key_jwt instead of client_secret_post.
    pub assertions: Option<Assertions>,
}

/// ES256 client assertions (RFC 7523) of one client: signed ahead of the
/// measurement (`presign`), then one per request, each with its own jti.
pub struct Assertions {
    key: p256::ecdsa::SigningKey,
    kid: String,
    client_id: String,
    aud: String,
    /// Unique per run: jtis stay unique across runs against one store.
    run: u128,
    counter: AtomicU64,
    ready: Mutex<Vec<String>>,
}

impl Assertions {
    pub fn new(pem: &str, kid: &str, client_id: &str, aud: &str) -> Result<Self> {
        use p256::pkcs8::DecodePrivateKey;
        let key = p256::ecdsa::SigningKey::from_pkcs8_pem(pem)
            .map_err(|e| anyhow!("the assertion key is not a P-256 PKCS#8 PEM key: {e}"))?;
        let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        Ok(Self {
            key,
            kid: kid.to_owned(),
            client_id: client_id.to_owned(),
            aud: aud.to_owned(),
            run,
            counter: AtomicU64::new(0),
            ready: Mutex::new(Vec::new()),
        })
    }

    fn sign(&self) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine as _;
        use p256::ecdsa::signature::Signer as _;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = format!(r#"{{"alg":"ES256","typ":"JWT","kid":"{}"}}"#, self.kid);
        let claims = format!(
            r#"{{"iss":"{c}","sub":"{c}","aud":"{a}","iat":{now},"exp":{exp},"jti":"{r:x}-{n}"}}"#,
            c = self.client_id,
            a = self.aud,
            exp = now + 540,
            r = self.run,
        );
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let signature: p256::ecdsa::Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// Signs `n` assertions ahead.
    pub fn presign(&self, n: usize) {
        let signed: Vec<String> = (0..n).map(|_| self.sign()).collect();
        self.ready.lock().expect("not poisoned").extend(signed);
    }

    fn next(&self) -> String {
        let ready = self.ready.lock().expect("not poisoned").pop();
        ready.unwrap_or_else(|| self.sign())
    }
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The path and query of a Location header (absolute or not).
fn path_of(location: &str) -> &str {
    match location.split_once("://") {
        Some((_, rest)) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => location,
    }
}

fn location(r: &Resp) -> Result<&str> {
    r.header("location")
        .ok_or_else(|| anyhow!("{} without Location", r.status))
}

fn query_param(url: &str, name: &str) -> Option<String> {
    let (_, query) = url.split_once('?')?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A string member of a flat JSON object (enough for token responses).
fn json_str(body: &[u8], name: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let marker = format!("\"{name}\":\"");
    let start = text.find(&marker)? + marker.len();
    let end = text[start..].find('"')?;
    Some(text[start..start + end].to_owned())
}

async fn token(conn: &mut Conn, client: &Client, pairs: &[(&str, &str)]) -> Result<Resp> {
    let mut all = pairs.to_vec();
    let assertion;
    match &client.assertions {
        Some(a) => {
            assertion = a.next();
            all.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ));
            all.push(("client_assertion", &assertion));
        }
        None => {
            all.push(("client_id", &client.client_id));
            all.push(("client_secret", &client.client_secret));
        }
    }
    let r = conn
        .post_form(&format!("{}/token", client.oidc), None, form(&all))
        .await?;
    expect_status(&r, StatusCode::OK, "POST oidc/token")?;
    Ok(r)
}

pub async fn client_credentials(conn: &mut Conn, client: &Client) -> Result<()> {
    let r = token(conn, client, &[("grant_type", "client_credentials")]).await?;
    json_str(&r.body, "access_token")
        .map(|_| ())
        .ok_or_else(|| anyhow!("no access_token"))
}

/// authorize → /login with the SSO cookie → callback → code → token.
/// Returns the refresh token.
pub async fn code_round_trip(conn: &mut Conn, client: &Client, cookie: &str) -> Result<String> {
    let authorize = format!(
        "{}/authorize?{}",
        client.oidc,
        form(&[
            ("client_id", &client.client_id),
            ("redirect_uri", &client.redirect_uri),
            ("response_type", "code"),
            ("scope", "openid profile email"),
            ("state", "s"),
            ("nonce", "n"),
            ("code_challenge", CHALLENGE),
            ("code_challenge_method", "S256"),
        ])
    );
    let r = conn.get(&authorize, Some(cookie)).await?;
    expect_status(&r, StatusCode::FOUND, "GET oidc/authorize")?;
    let r = conn.get(path_of(location(&r)?), Some(cookie)).await?;
    expect_status(&r, StatusCode::FOUND, "GET login with CASTGC")?;
    let r = conn.get(path_of(location(&r)?), Some(cookie)).await?;
    expect_status(&r, StatusCode::FOUND, "GET oidc/callback")?;
    let code = query_param(location(&r)?, "code").context("callback without a code")?;
    let r = token(
        conn,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &client.redirect_uri),
            ("code_verifier", VERIFIER),
        ],
    )
    .await?;
    json_str(&r.body, "id_token").context("no id_token")?;
    json_str(&r.body, "refresh_token").context("no refresh_token")
}

/// One refresh grant; returns the rotated refresh token.
pub async fn refresh(conn: &mut Conn, client: &Client, refresh_token: &str) -> Result<String> {
    let r = token(
        conn,
        client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await?;
    json_str(&r.body, "refresh_token").context("no refresh_token")
}

/// A SAML SSO round trip with an SSO session: a fresh Redirect-binding
/// AuthnRequest → /login with CASTGC → callback → the 200 page that posts
/// the signed Response to the ACS.
pub async fn saml_round_trip(
    conn: &mut Conn,
    base_path: &str,
    sp_entity: &str,
    acs: &str,
    cookie: &str,
    n: u64,
) -> Result<()> {
    use base64::Engine as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, mo, d, h, mi, s) = civil(now);
    let request = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_lg{n:x}{:x}\" Version=\"2.0\" \
IssueInstant=\"{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z\" AssertionConsumerServiceURL=\"{acs}\">\
<saml:Issuer>{sp_entity}</saml:Issuer></samlp:AuthnRequest>",
        rand_u64()
    );
    let encoded = base64::engine::general_purpose::STANDARD.encode(deflate(request.as_bytes())?);
    let url = format!(
        "{base_path}/idp/profile/SAML2/Redirect/SSO?{}",
        form(&[("SAMLRequest", &encoded), ("RelayState", "lg")])
    );
    let r = conn.get(&url, Some(cookie)).await?;
    expect_status(&r, StatusCode::FOUND, "GET SAML2/Redirect/SSO")?;
    let r = conn.get(path_of(location(&r)?), Some(cookie)).await?;
    expect_status(&r, StatusCode::FOUND, "GET login with CASTGC")?;
    let r = conn.get(path_of(location(&r)?), Some(cookie)).await?;
    expect_status(&r, StatusCode::OK, "GET idp/callback")?;
    let body = std::str::from_utf8(&r.body).unwrap_or("");
    if !body.contains("name=\"SAMLResponse\"") {
        anyhow::bail!("the callback page has no SAMLResponse");
    }
    Ok(())
}

thread_local! {
    /// One raw-deflate state per loadgen thread, reset for each request: a
    /// fresh encoder allocates and zeroes ~200 KiB of tables, which cost the
    /// loadgen more CPU than the server spends on the whole request.
    static DEFLATE: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), false));
}

/// Raw DEFLATE (RFC 1951), as the Redirect binding wants it.
fn deflate(input: &[u8]) -> Result<Vec<u8>> {
    DEFLATE.with_borrow_mut(|c| {
        c.reset();
        // Stored blocks cost 5 bytes per 64 KiB: this always has room.
        let mut out = Vec::with_capacity(input.len() + 64);
        match c.compress_vec(input, &mut out, flate2::FlushCompress::Finish)? {
            flate2::Status::StreamEnd => Ok(out),
            other => Err(anyhow!("deflate stopped early: {other:?}")),
        }
    })
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    h.finish()
}

/// Unix seconds to (year, month, day, hour, minute, second), UTC.
fn civil(t: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (t / 86_400) as i64;
    let rem = t % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// A password login without a service: the SSO cookie.
pub async fn sso_cookie(conn: &mut Conn, flow: &Flow) -> Result<String> {
    Ok(flows::login_at(conn, flow, false).await?.cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_params() {
        assert_eq!(path_of("http://h:1/cas/x?a=b"), "/cas/x?a=b");
        assert_eq!(path_of("/cas/login?s=1"), "/cas/login?s=1");
        assert_eq!(
            query_param("http://h/cb?code=OC-1-x&state=s", "code").as_deref(),
            Some("OC-1-x")
        );
        assert_eq!(
            json_str(br#"{"a":1,"refresh_token":"RT-1-y"}"#, "refresh_token").as_deref(),
            Some("RT-1-y")
        );
        assert_eq!(civil(1_764_084_646), (2025, 11, 25, 15, 30, 46));
        for text in ["<a/>", "<samlp:AuthnRequest ID=\"_1\"/>"] {
            // Twice: the reset state must give the same stream again.
            for _ in 0..2 {
                let packed = deflate(text.as_bytes()).unwrap();
                let mut back = String::new();
                std::io::Read::read_to_string(
                    &mut flate2::read::DeflateDecoder::new(&packed[..]),
                    &mut back,
                )
                .unwrap();
                assert_eq!(back, text);
            }
        }
    }
}
