//! An upstream CAS server: `/login?service=…` there, and the ticket that
//! comes back validated at its `validate_path` (`/p3/serviceValidate` by
//! default, `/serviceValidate` for a CAS 2.0 server). CAS 3.0 §2.5 makes
//! XML the answer's format (JSON only on request, and many servers have
//! none), so the XML answer is read; a JSON one is understood too.

use crate::{Authenticated, Connector, DelegationError, Finish, Start, Started};
use async_trait::async_trait;
use castellan_core::Principal;
use quick_xml::events::Event;
use quick_xml::name::ResolveResult;
use serde_json::Value;
use std::collections::BTreeMap;

pub const DEFAULT_VALIDATE_PATH: &str = "/p3/serviceValidate";
const CAS_NS: &[u8] = b"http://www.yale.edu/tp/cas";
/// A validation answer larger than this is not one.
const MAX_RESPONSE: usize = 256 * 1024;

pub struct CasConnector {
    name: String,
    display_name: String,
    /// The upstream's base URL, e.g. `https://cas.campus.example/cas`.
    url: String,
    /// Below `url`: where tickets are validated.
    validate_path: String,
    http: reqwest::Client,
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

impl CasConnector {
    pub fn new(
        name: String,
        display_name: String,
        url: String,
        validate_path: Option<String>,
        http: reqwest::Client,
    ) -> Self {
        Self {
            name,
            display_name,
            url: url.trim_end_matches('/').to_owned(),
            validate_path: validate_path.unwrap_or_else(|| DEFAULT_VALIDATE_PATH.to_owned()),
            http,
        }
    }
}

/// The user and attributes of a CAS 3.0 JSON validation response.
pub fn parse_validation(body: &Value) -> Result<Principal, DelegationError> {
    let response = body
        .get("serviceResponse")
        .ok_or_else(|| DelegationError::Invalid("not a CAS validation response".into()))?;
    if let Some(failure) = response.get("authenticationFailure") {
        let code = failure.get("code").and_then(Value::as_str).unwrap_or("?");
        return Err(DelegationError::Refused(format!(
            "ticket validation failed: {code}"
        )));
    }
    let success = response
        .get("authenticationSuccess")
        .ok_or_else(|| DelegationError::Invalid("no authenticationSuccess".into()))?;
    let user = success
        .get("user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
        .ok_or_else(|| DelegationError::Invalid("no user".into()))?;
    let mut principal = Principal::new(user);
    if let Some(Value::Object(attributes)) = success.get("attributes") {
        for (name, value) in attributes {
            let values: Vec<String> = match value {
                Value::Array(a) => a.iter().filter_map(scalar).collect(),
                v => scalar(v).into_iter().collect(),
            };
            if !values.is_empty() {
                principal.attributes.insert(name.clone(), values);
            }
        }
    }
    Ok(principal)
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The user and attributes of a CAS 2.0 / 3.0 XML validation response
/// (CAS 3.0 §2.5.2, appendix A): `cas:authenticationSuccess` with
/// `cas:user` and `cas:attributes` (an element per value, repeated for a
/// multi-valued attribute), or `cas:authenticationFailure` with its `code`.
/// A DTD is refused and no entity beyond XML's own is ever resolved.
pub fn parse_validation_xml(xml: &str) -> Result<Principal, DelegationError> {
    let invalid = |m: &str| DelegationError::Invalid(m.to_owned());
    let mut reader = quick_xml::NsReader::from_str(xml);
    // Open elements: (is in the CAS namespace, local name).
    let mut path: Vec<(bool, Vec<u8>)> = Vec::new();
    let mut user: Option<String> = None;
    let mut success = false;
    let mut failure: Option<String> = None;
    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // The attribute whose value is being read, and the text so far.
    let mut value: Option<(String, String)> = None;
    let mut seen_root = false;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|_| invalid("the validation response is not well-formed XML"))?;
        let cas = matches!(ns, ResolveResult::Bound(n) if n.as_ref() == CAS_NS);
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::DocType(_) => return Err(invalid("the validation response has a DTD")),
            Event::Start(e) | Event::Empty(e) => {
                let local = e.local_name().as_ref().to_vec();
                let parent = path.last().map(|(c, l)| (*c, l.as_slice()));
                match (path.len(), parent, cas, local.as_slice()) {
                    (0, _, true, b"serviceResponse") => seen_root = true,
                    (0, _, _, _) => return Err(invalid("not a CAS validation response")),
                    (1, _, true, b"authenticationSuccess") => success = true,
                    (1, _, true, b"authenticationFailure") => {
                        let code = e
                            .try_get_attribute("code")
                            .ok()
                            .flatten()
                            .and_then(|a| castellan_xml::value(&a).ok());
                        failure = Some(code.unwrap_or_else(|| "?".into()));
                    }
                    // Attributes: one element per value.
                    (3, Some((true, b"attributes")), _, name)
                        if path[1] == (true, b"authenticationSuccess".to_vec()) =>
                    {
                        value = Some((String::from_utf8_lossy(name).into_owned(), String::new()));
                    }
                    // The name-value style some servers use:
                    // <cas:attribute name="mail" value="a@x"/>.
                    (2, Some((true, b"authenticationSuccess")), true, b"attribute") => {
                        let get = |k: &str| {
                            e.try_get_attribute(k)
                                .ok()
                                .flatten()
                                .and_then(|a| castellan_xml::value(&a).ok())
                        };
                        if let (Some(n), Some(v)) = (get("name"), get("value")) {
                            attributes.entry(n).or_default().push(v);
                        }
                    }
                    _ => {}
                }
                if empty {
                    // An empty attribute element: an empty value, not kept.
                    if path.len() == 3 {
                        value = None;
                    }
                } else {
                    path.push((cas, local));
                }
            }
            Event::End(_) => {
                if path.len() == 4 {
                    if let Some((name, text)) = value.take() {
                        let text = text.trim();
                        if !text.is_empty() {
                            attributes.entry(name).or_default().push(text.to_owned());
                        }
                    }
                }
                path.pop();
            }
            Event::Text(t) => {
                let text = t
                    .decode()
                    .map_err(|_| invalid("the validation response is not UTF-8"))?;
                append_text(&path, &mut user, &mut value, &text);
            }
            // quick-xml hands each reference on its own: only XML's
            // predefined entities and character references are resolved.
            Event::GeneralRef(r) => {
                let name = r
                    .decode()
                    .map_err(|_| invalid("the validation response is not UTF-8"))?;
                let reference = format!("&{name};");
                let text = quick_xml::escape::unescape(&reference)
                    .map_err(|_| invalid("the validation response names an unknown entity"))?;
                append_text(&path, &mut user, &mut value, &text);
            }
            Event::CData(t) => {
                let text = String::from_utf8_lossy(&t.into_inner()).into_owned();
                append_text(&path, &mut user, &mut value, &text);
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !seen_root {
        return Err(invalid("not a CAS validation response"));
    }
    if let Some(code) = failure {
        return Err(DelegationError::Refused(format!(
            "ticket validation failed: {code}"
        )));
    }
    if !success {
        return Err(invalid("no authenticationSuccess"));
    }
    let user = user
        .map(|u| u.trim().to_owned())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| invalid("no user"))?;
    let mut principal = Principal::new(user);
    principal.attributes = attributes;
    Ok(principal)
}

fn append_text(
    path: &[(bool, Vec<u8>)],
    user: &mut Option<String>,
    value: &mut Option<(String, String)>,
    text: &str,
) {
    let in_cas = |i: usize, name: &[u8]| path.get(i).is_some_and(|(c, l)| *c && l == name);
    if path.len() == 3
        && in_cas(0, b"serviceResponse")
        && in_cas(1, b"authenticationSuccess")
        && in_cas(2, b"user")
    {
        user.get_or_insert_with(String::new).push_str(text);
    } else if path.len() == 4 {
        if let Some((_, v)) = value.as_mut() {
            v.push_str(text);
        }
    }
}

/// CAS protocol attributes of the upstream, not the user's.
const PROTOCOL_ATTRIBUTES: &[&str] = &[
    "authenticationDate",
    "isFromNewLogin",
    "longTermAuthenticationRequestTokenUsed",
    "successfulAuthenticationHandlers",
    "authenticationMethod",
    "credentialType",
    "samlAuthenticationStatementAuthMethod",
    "authnContextClass",
];

/// Whether an upstream CAS server says a second factor was used: Apereo
/// CAS names the MFA provider in `authnContextClass` (`mfa-gauth`...), and
/// Castellan lists the second factor in `authenticationMethod`.
fn said_mfa(principal: &Principal) -> bool {
    let values = |name: &str| principal.attributes.get(name).into_iter().flatten();
    values("authnContextClass")
        .any(|v| v.starts_with("mfa") || v == "https://refeds.org/profile/mfa")
        || values("authenticationMethod").any(|v| {
            matches!(
                v.as_str(),
                "TOTP" | "RecoveryCode" | "WebAuthn" | "UpstreamMFA"
            )
        })
}

/// What the upstream proved about the login: a validation with `renew=true`
/// succeeds only for a ticket from fresh credentials (CAS 3.0 §2.5.1);
/// otherwise only `isFromNewLogin` can tell. An `isFromNewLogin` of false
/// is believed over everything else.
fn fresh(principal: &Principal, validated_with_renew: bool) -> bool {
    match principal
        .attributes
        .get("isFromNewLogin")
        .and_then(|v| v.first())
        .map(|v| v.trim().eq_ignore_ascii_case("true"))
    {
        Some(false) => false,
        Some(true) => true,
        None => validated_with_renew,
    }
}

#[async_trait]
impl Connector for CasConnector {
    fn name(&self) -> &str {
        &self.name
    }

    fn display_name(&self) -> &str {
        &self.display_name
    }

    fn supports_passive(&self) -> bool {
        true
    }

    fn proves_fresh_login(&self) -> bool {
        true
    }

    async fn start(&self, start: &Start<'_>) -> Result<Started, DelegationError> {
        let service = format!("{}?state={}", start.callback_url, start.state);
        let mut redirect = format!("{}/login?service={}", self.url, enc(&service));
        if start.renew {
            redirect.push_str("&renew=true");
        } else if start.passive {
            redirect.push_str("&gateway=true");
        }
        Ok(Started {
            redirect,
            saved: String::new(),
        })
    }

    async fn finish(&self, finish: &Finish<'_>) -> Result<Authenticated, DelegationError> {
        let service = format!("{}?state={}", finish.callback_url, finish.state);
        let ticket = finish
            .params
            .get("ticket")
            .filter(|t| !t.is_empty() && t.len() <= 1024)
            .ok_or_else(|| DelegationError::Refused("no ticket came back".into()))?;
        let mut url = format!(
            "{}{}?service={}&ticket={}",
            self.url,
            self.validate_path,
            enc(&service),
            enc(ticket)
        );
        if finish.renew {
            url.push_str("&renew=true");
        }
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| DelegationError::Unavailable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(DelegationError::Unavailable(format!(
                "validation answered {}",
                response.status()
            )));
        }
        let body = crate::body_limited(response, MAX_RESPONSE).await?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| DelegationError::Invalid("validation response: not UTF-8".into()))?;
        let mut principal = if text.trim_start().starts_with('{') {
            let json: Value = serde_json::from_str(text)
                .map_err(|e| DelegationError::Invalid(format!("validation response: {e}")))?;
            parse_validation(&json)?
        } else {
            parse_validation_xml(text)?
        };
        let fresh = fresh(&principal, finish.renew);
        let mfa = said_mfa(&principal);
        principal
            .attributes
            .retain(|k, _| !PROTOCOL_ATTRIBUTES.contains(&k.as_str()));
        Ok(Authenticated {
            principal,
            fresh,
            mfa,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn success_and_failure_responses() {
        let ok = json!({"serviceResponse": {"authenticationSuccess": {
            "user": "alice",
            "attributes": {"mail": ["a@x"], "cn": "Alice", "isFromNewLogin": [true]}}}});
        let p = parse_validation(&ok).unwrap();
        assert_eq!(p.id, "alice");
        assert_eq!(p.attributes["mail"], vec!["a@x"]);
        assert_eq!(p.attributes["cn"], vec!["Alice"]);
        let bad = json!({"serviceResponse": {"authenticationFailure": {"code": "INVALID_TICKET"}}});
        assert!(matches!(
            parse_validation(&bad),
            Err(DelegationError::Refused(_))
        ));
        assert!(parse_validation(&json!({"x": 1})).is_err());
    }

    #[test]
    fn xml_success_with_multi_valued_attributes() {
        let xml = r#"<?xml version="1.0"?>
<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas">
  <cas:authenticationSuccess>
    <cas:user> alice </cas:user>
    <cas:attributes>
      <cas:mail>a@x.org</cas:mail>
      <cas:memberOf>staff</cas:memberOf>
      <cas:memberOf>a &amp; b</cas:memberOf>
      <cas:cn><![CDATA[Alice <A>]]></cas:cn>
      <cas:isFromNewLogin>true</cas:isFromNewLogin>
      <cas:empty/>
    </cas:attributes>
    <cas:proxyGrantingTicket>PGTIOU-1</cas:proxyGrantingTicket>
  </cas:authenticationSuccess>
</cas:serviceResponse>"#;
        let p = parse_validation_xml(xml).unwrap();
        assert_eq!(p.id, "alice");
        assert_eq!(p.attributes["mail"], vec!["a@x.org"]);
        assert_eq!(p.attributes["memberOf"], vec!["staff", "a & b"]);
        assert_eq!(p.attributes["cn"], vec!["Alice <A>"]);
        assert!(!p.attributes.contains_key("empty"));
        assert!(!p.attributes.contains_key("proxyGrantingTicket"));
        assert!(fresh(&p, false));
        // A CAS 2.0 answer (no attributes), another prefix for the namespace.
        let v2 = "<x:serviceResponse xmlns:x='http://www.yale.edu/tp/cas'>\
<x:authenticationSuccess><x:user>bob</x:user></x:authenticationSuccess></x:serviceResponse>";
        let p = parse_validation_xml(v2).unwrap();
        assert_eq!(p.id, "bob");
        assert!(p.attributes.is_empty());
        assert!(!fresh(&p, false) && fresh(&p, true));
        // Name-value style.
        let nv = "<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'><cas:authenticationSuccess>\
<cas:user>c</cas:user><cas:attribute name='mail' value='c@x'/></cas:authenticationSuccess></cas:serviceResponse>";
        assert_eq!(
            parse_validation_xml(nv).unwrap().attributes["mail"],
            vec!["c@x"]
        );
    }

    #[test]
    fn xml_of_django_mama_cas() {
        let xml = r#"<cas:serviceResponse xmlns:cas="http://www.yale.edu/tp/cas"><cas:authenticationSuccess><cas:user>casuser</cas:user><cas:attributes><cas:mail>casuser@mama.example</cas:mail><cas:cn>Mama User</cas:cn><cas:memberOf>staff</cas:memberOf><cas:memberOf>a &amp; b &lt;c&gt;</cas:memberOf></cas:attributes></cas:authenticationSuccess></cas:serviceResponse>"#;
        let p = parse_validation_xml(xml).unwrap();
        assert_eq!(p.id, "casuser");
        assert_eq!(p.attributes["memberOf"], vec!["staff", "a & b <c>"]);
        assert_eq!(p.attributes["mail"], vec!["casuser@mama.example"]);
    }

    #[test]
    fn xml_failures_and_hostile_input() {
        let failure = "<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'>\
<cas:authenticationFailure code=\"INVALID_TICKET\">Ticket ST-1 not recognized</cas:authenticationFailure>\
</cas:serviceResponse>";
        match parse_validation_xml(failure) {
            Err(DelegationError::Refused(m)) => assert!(m.contains("INVALID_TICKET"), "{m}"),
            other => panic!("{other:?}"),
        }
        let dtd = "<!DOCTYPE x [<!ENTITY u \"root\">]><cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'>\
<cas:authenticationSuccess><cas:user>&u;</cas:user></cas:authenticationSuccess></cas:serviceResponse>";
        assert!(parse_validation_xml(dtd).is_err());
        let entity = "<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'>\
<cas:authenticationSuccess><cas:user>&u;</cas:user></cas:authenticationSuccess></cas:serviceResponse>";
        assert!(parse_validation_xml(entity).is_err());
        // The user outside the CAS namespace is not the user.
        let foreign =
            "<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas' xmlns:o='urn:o'>\
<cas:authenticationSuccess><o:user>root</o:user></cas:authenticationSuccess></cas:serviceResponse>";
        assert!(parse_validation_xml(foreign).is_err());
        let wrong_ns = "<cas:serviceResponse xmlns:cas='urn:other'><cas:authenticationSuccess>\
<cas:user>root</cas:user></cas:authenticationSuccess></cas:serviceResponse>";
        assert!(parse_validation_xml(wrong_ns).is_err());
        for junk in [
            "",
            "<",
            "not xml",
            "<a><b></a>",
            "<html><body>CAS</body></html>",
        ] {
            assert!(parse_validation_xml(junk).is_err(), "{junk}");
        }
        let p = parse_validation_xml(
            "<cas:serviceResponse xmlns:cas='http://www.yale.edu/tp/cas'><cas:authenticationSuccess>\
<cas:user>u</cas:user><cas:attributes><cas:isFromNewLogin>false</cas:isFromNewLogin></cas:attributes>\
</cas:authenticationSuccess></cas:serviceResponse>",
        )
        .unwrap();
        assert!(!fresh(&p, true));
    }
}
