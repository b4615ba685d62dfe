//! The CAS browser and application flows the benchmarks drive.

use crate::client::{expect_status, Conn, Resp};
use anyhow::{anyhow, bail, Context as _, Result};
use hyper::StatusCode;

/// What every flow needs to know: whom to log in and for which service.
#[derive(Debug, Clone)]
pub struct Flow {
    /// `{base}/login?service=…`
    pub login_url: String,
    /// `{base}/login`: a login for no service (a 200 page, no ticket).
    pub plain_login_url: String,
    /// `{base}/p3/serviceValidate?service=…&ticket=` (the ticket is appended).
    pub validate_prefix: String,
    pub username: String,
    pub password: String,
    /// `<cas:user>{username}</cas:user>`, looked for in the validation response.
    expect_user: String,
}

impl Flow {
    pub fn new(base_path: &str, service: &str, username: &str, password: &str) -> Self {
        let service_q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("service", service)
            .finish();
        Self {
            login_url: format!("{base_path}/login?{service_q}"),
            plain_login_url: format!("{base_path}/login"),
            validate_prefix: format!("{base_path}/p3/serviceValidate?{service_q}&ticket="),
            username: username.to_owned(),
            password: password.to_owned(),
            expect_user: format!("<cas:user>{}</cas:user>", xml_escape(username)),
        }
    }
}

impl Flow {
    /// The same flow for another user (whose session was made elsewhere).
    pub fn for_user(&self, username: &str) -> Self {
        let mut flow = self.clone();
        flow.username = username.to_owned();
        flow.expect_user = format!("<cas:user>{}</cas:user>", xml_escape(username));
        flow
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A successful password login: the SSO cookie and the first service ticket.
pub struct Login {
    /// `CASTGC=TGT-…`, ready for a `Cookie` header.
    pub cookie: String,
    /// Empty for a login without a service.
    pub ticket: String,
}

/// The value of `name="execution"` in the login form.
fn execution_token(html: &[u8]) -> Result<String> {
    let text = std::str::from_utf8(html).context("login page is not UTF-8")?;
    let marker = "name=\"execution\" value=\"";
    let start = text
        .find(marker)
        .ok_or_else(|| anyhow!("no execution token in the login page"))?
        + marker.len();
    let end = text[start..]
        .find('"')
        .ok_or_else(|| anyhow!("unterminated execution token"))?;
    Ok(text[start..start + end].to_owned())
}

/// The `ticket` parameter of a redirect back to the service.
fn ticket_from_location(r: &Resp) -> Result<String> {
    let location = r
        .header("location")
        .ok_or_else(|| anyhow!("302 without Location"))?;
    let query = location
        .split_once('?')
        .map(|(_, q)| q)
        .ok_or_else(|| anyhow!("Location has no query: {location}"))?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "ticket")
        .map(|(_, v)| v.into_owned())
        .filter(|t| t.starts_with("ST-"))
        .ok_or_else(|| anyhow!("Location has no service ticket: {location}"))
}

fn session_cookie(r: &Resp) -> Result<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let pair = v.split(';').next()?.trim();
            (pair.starts_with("CASTGC=") && pair.len() > "CASTGC=".len()).then(|| pair.to_owned())
        })
        .ok_or_else(|| anyhow!("login answered without a CASTGC cookie"))
}

/// The form dance: GET the login page, POST the credentials with its
/// execution token; the answer is a 302 to the service with a ticket and
/// the SSO cookie. No cookie is sent, so each call opens a new SSO session.
pub async fn login(conn: &mut Conn, flow: &Flow) -> Result<Login> {
    login_at(conn, flow, true).await
}

/// `login`, or with `for_service` false a login straight to the server
/// (no `service`): the answer is a 200 page with the cookie and no ticket.
pub async fn login_at(conn: &mut Conn, flow: &Flow, for_service: bool) -> Result<Login> {
    let url = if for_service {
        &flow.login_url
    } else {
        &flow.plain_login_url
    };
    let page = conn.get(url, None).await?;
    expect_status(&page, StatusCode::OK, "GET login form")?;
    let execution = execution_token(&page.body)?;
    // The form's token is bound to the browser cookie set with the form.
    let browser = page
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            let pair = v.split(';').next()?.trim();
            pair.starts_with("CASBROWSER=").then(|| pair.to_owned())
        });
    let form = form_urlencoded::Serializer::new(String::new())
        .append_pair("username", &flow.username)
        .append_pair("password", &flow.password)
        .append_pair("execution", &execution)
        .finish();
    let answer = conn.post_form(url, browser.as_deref(), form).await?;
    if !for_service {
        expect_status(&answer, StatusCode::OK, "POST login form")?;
        return Ok(Login {
            cookie: session_cookie(&answer)?,
            ticket: String::new(),
        });
    }
    expect_status(&answer, StatusCode::FOUND, "POST login form")?;
    Ok(Login {
        cookie: session_cookie(&answer)?,
        ticket: ticket_from_location(&answer)?,
    })
}

/// Validates a service ticket on `/p3/serviceValidate` and checks the user.
pub async fn validate(conn: &mut Conn, flow: &Flow, ticket: &str) -> Result<()> {
    let url = format!("{}{ticket}", flow.validate_prefix);
    let r = conn.get(&url, None).await?;
    expect_status(&r, StatusCode::OK, "GET p3/serviceValidate")?;
    let found = r
        .body
        .windows(flow.expect_user.len())
        .any(|w| w == flow.expect_user.as_bytes());
    if !found {
        bail!(
            "validation did not name {}: {}",
            flow.username,
            r.snippet().replace('\n', " ")
        );
    }
    Ok(())
}

/// One SSO round trip: the browser comes back with its cookie and gets a
/// ticket at once (302), then the application validates that ticket.
pub async fn sso_round_trip(conn: &mut Conn, flow: &Flow, cookie: &str) -> Result<()> {
    let r = conn.get(&flow.login_url, Some(cookie)).await?;
    expect_status(&r, StatusCode::FOUND, "GET login with CASTGC")?;
    let ticket = ticket_from_location(&r)?;
    validate(conn, flow, &ticket).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_execution_token() {
        let html = br#"<form><input type="hidden" name="execution" value="LF-1-abc_-9"><button>"#;
        assert_eq!(execution_token(html).unwrap(), "LF-1-abc_-9");
        assert!(execution_token(b"<html></html>").is_err());
    }

    #[test]
    fn builds_urls_with_an_encoded_service() {
        let f = Flow::new("/cas", "https://app.example.org/home?a=b", "bench", "pw");
        assert_eq!(
            f.login_url,
            "/cas/login?service=https%3A%2F%2Fapp.example.org%2Fhome%3Fa%3Db"
        );
        assert!(f.validate_prefix.ends_with("&ticket="));
        assert_eq!(f.expect_user, "<cas:user>bench</cas:user>");
    }
}
