//! Rendering of validation and proxy outcomes in the forms CAS clients parse.

use crate::error::{CasError, CasErrorCode};
use crate::time_format::iso8601_millis;
use crate::xml::{escape, escape_into, is_element_name};
use castellan_core::Assertion;
use serde_json::{json, Map, Value};
use std::borrow::Cow;
use std::fmt::Write as _;

/// What the web layer sends: Apereo CAS's status codes and content types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CasResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
    /// The error code when the outcome was a failure (for metrics and logs).
    pub failure: Option<CasErrorCode>,
}

pub const XML: &str = "application/xml;charset=UTF-8";
pub const JSON: &str = "application/json;charset=UTF-8";
pub const TEXT: &str = "text/plain;charset=UTF-8";
pub const SOAP_XML: &str = "text/xml;charset=UTF-8";

impl CasResponse {
    fn ok<T>(content_type: &'static str, body: String, outcome: &Result<T, CasError>) -> Self {
        Self {
            status: 200,
            content_type,
            body,
            failure: outcome.as_ref().err().map(|e| e.code),
        }
    }
}

/// CAS 1.0 `/validate` (§2.4.2): two lines, nothing else.
pub fn cas1(outcome: &Result<Assertion, CasError>) -> CasResponse {
    let body = match outcome {
        // A newline in a user id would forge a second line: never emit one.
        Ok(a) => format!("yes\n{}\n", a.principal.id.replace(['\r', '\n'], "")),
        Err(_) => "no\n\n".to_owned(),
    };
    CasResponse::ok(TEXT, body, outcome)
}

/// CAS 2.0/3.0 XML (§2.5.2, §2.6.2); `with_attributes` for the `/p3` endpoints.
pub fn xml(outcome: &Result<Assertion, CasError>, with_attributes: bool) -> CasResponse {
    let mut out = String::with_capacity(512);
    out.push_str("<cas:serviceResponse xmlns:cas=\"http://www.yale.edu/tp/cas\">\n");
    match outcome {
        Ok(a) => {
            out.push_str("    <cas:authenticationSuccess>\n");
            out.push_str("        <cas:user>");
            escape_into(&mut out, &a.principal.id);
            out.push_str("</cas:user>\n");
            if with_attributes {
                // Written in place, escaped as they go: this runs on every
                // validation, and each format! or copy showed in profiles.
                out.push_str("        <cas:attributes>\n");
                for (name, values) in attribute_view(a) {
                    for v in values.iter() {
                        out.push_str("            <cas:");
                        out.push_str(name);
                        out.push('>');
                        escape_into(&mut out, v);
                        out.push_str("</cas:");
                        out.push_str(name);
                        out.push_str(">\n");
                    }
                }
                out.push_str("        </cas:attributes>\n");
            }
            if let Some(iou) = &a.pgt_iou {
                let _ = writeln!(
                    out,
                    "        <cas:proxyGrantingTicket>{}</cas:proxyGrantingTicket>",
                    escape(iou)
                );
            }
            if !a.proxies.is_empty() {
                out.push_str("        <cas:proxies>\n");
                for p in &a.proxies {
                    let _ = writeln!(out, "            <cas:proxy>{}</cas:proxy>", escape(p));
                }
                out.push_str("        </cas:proxies>\n");
            }
            out.push_str("    </cas:authenticationSuccess>\n");
        }
        Err(e) => {
            let _ = writeln!(
                out,
                "    <cas:authenticationFailure code=\"{}\">{}</cas:authenticationFailure>",
                e.code.as_str(),
                escape(&e.description)
            );
        }
    }
    out.push_str("</cas:serviceResponse>\n");
    CasResponse::ok(XML, out, outcome)
}

/// The JSON form of the same response (§2.5.2 "JSON").
pub fn json(outcome: &Result<Assertion, CasError>, with_attributes: bool) -> CasResponse {
    let body = match outcome {
        Ok(a) => {
            let mut success = Map::new();
            success.insert("user".into(), Value::String(a.principal.id.clone()));
            if let Some(iou) = &a.pgt_iou {
                success.insert("proxyGrantingTicket".into(), Value::String(iou.clone()));
            }
            if !a.proxies.is_empty() {
                success.insert("proxies".into(), json!(a.proxies));
            }
            if with_attributes {
                let attributes: Map<String, Value> = attribute_view(a)
                    .into_iter()
                    .map(|(name, values)| {
                        let v = match &*values {
                            [one] => Value::String(one.clone()),
                            many => json!(many),
                        };
                        (name.to_owned(), v)
                    })
                    .collect();
                success.insert("attributes".into(), Value::Object(attributes));
            }
            json!({ "serviceResponse": { "authenticationSuccess": success } })
        }
        Err(e) => json!({
            "serviceResponse": {
                "authenticationFailure": { "code": e.code.as_str(), "description": e.description }
            }
        }),
    };
    CasResponse::ok(JSON, body.to_string(), outcome)
}

/// Names a released attribute may not take: clients look these elements up
/// by name, and an attribute must never pass for one of them.
pub const RESERVED: &[&str] = &[
    "user",
    "attributes",
    "proxyGrantingTicket",
    "proxies",
    "proxy",
    "authenticationDate",
    "isFromNewLogin",
    "longTermAuthenticationRequestTokenUsed",
    "authenticationMethod",
    "successfulAuthenticationHandlers",
    "authenticationSuccess",
    "authenticationFailure",
];

/// CAS 3.0 attributes: the protocol's own three first, then released ones.
/// Names that cannot be XML element names are left out (and logged).
fn attribute_view(a: &Assertion) -> Vec<(&str, Cow<'_, [String]>)> {
    let flag = |b: bool| Cow::<[String]>::Owned(vec![b.to_string()]);
    let mut view = Vec::with_capacity(5 + a.attributes.len());
    view.extend([
        (
            "authenticationDate",
            Cow::Owned(vec![iso8601_millis(a.authenticated_at)]),
        ),
        ("isFromNewLogin", flag(a.from_new_login)),
        ("longTermAuthenticationRequestTokenUsed", flag(a.long_term)),
    ]);
    // How the user proved who they are, as Apereo CAS names it: both
    // attributes list every method of the session (a second factor too).
    if !a.methods.is_empty() {
        let names: Vec<String> = a
            .methods
            .cas_names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        view.push(("authenticationMethod", Cow::Owned(names.clone())));
        view.push(("successfulAuthenticationHandlers", Cow::Owned(names)));
    }
    for (name, values) in &a.attributes {
        if RESERVED.contains(&name.as_str()) {
            tracing::warn!(attribute = %name, "attribute name is a CAS protocol element; not released");
        } else if is_element_name(name) {
            view.push((name, Cow::Borrowed(values.as_slice())));
        } else {
            tracing::warn!(attribute = %name, "attribute name is not a valid XML name; not released");
        }
    }
    view
}

/// `/proxy` (§2.7.2).
pub fn proxy_xml(outcome: &Result<String, CasError>) -> CasResponse {
    let inner = match outcome {
        Ok(pt) => format!(
            "    <cas:proxySuccess>\n        <cas:proxyTicket>{}</cas:proxyTicket>\n    </cas:proxySuccess>\n",
            escape(pt)
        ),
        Err(e) => format!(
            "    <cas:proxyFailure code=\"{}\">{}</cas:proxyFailure>\n",
            e.code.as_str(),
            escape(&e.description)
        ),
    };
    CasResponse::ok(
        XML,
        format!("<cas:serviceResponse xmlns:cas=\"http://www.yale.edu/tp/cas\">\n{inner}</cas:serviceResponse>\n"),
        outcome,
    )
}

pub fn proxy_json(outcome: &Result<String, CasError>) -> CasResponse {
    let body = match outcome {
        Ok(pt) => json!({ "serviceResponse": { "proxySuccess": { "proxyTicket": pt } } }),
        Err(e) => json!({
            "serviceResponse": {
                "proxyFailure": { "code": e.code.as_str(), "description": e.description }
            }
        }),
    };
    CasResponse::ok(JSON, body.to_string(), outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use castellan_core::Principal;
    use std::sync::Arc;

    fn assertion() -> Assertion {
        let p = Principal::new("jdoe<&>")
            .with_attribute("memberOf", &["staff", "faculty"])
            .with_attribute("cn", &["J. \"Doe\" & <Co>"])
            .with_attribute("bad name", &["x"])
            .with_attribute("proxyGrantingTicket", &["PGTIOU-forged"]);
        Assertion {
            attributes: p.attributes.clone(),
            principal: Arc::new(p),
            service: "https://app/".into(),
            service_name: "app".into(),
            authenticated_at: 1_764_084_646_123,
            from_new_login: true,
            long_term: false,
            proxies: vec!["https://p2/pgt".into(), "https://p1/pgt".into()],
            pgt_iou: Some("PGTIOU-1-x".into()),
            methods: castellan_core::AuthnMethods::NONE,
            session_id: "TGT-1-x".into(),
        }
    }

    #[test]
    fn cas1_lines() {
        assert_eq!(cas1(&Ok(assertion())).body, "yes\njdoe<&>\n");
        let err = Err(CasError::new(CasErrorCode::InvalidTicket, "x"));
        assert_eq!(cas1(&err).body, "no\n\n");
    }

    #[test]
    fn cas3_xml_escapes_everything_and_orders_proxies() {
        let r = xml(&Ok(assertion()), true);
        assert_eq!(r.content_type, XML);
        let b = &r.body;
        assert!(b.contains("<cas:user>jdoe&lt;&amp;&gt;</cas:user>"));
        assert!(b.contains("<cas:cn>J. &quot;Doe&quot; &amp; &lt;Co&gt;</cas:cn>"));
        assert!(b.contains(
            "<cas:memberOf>staff</cas:memberOf>\n            <cas:memberOf>faculty</cas:memberOf>"
        ));
        assert!(
            b.contains("<cas:authenticationDate>2025-11-25T15:30:46.123Z</cas:authenticationDate>")
        );
        assert!(b.contains("<cas:isFromNewLogin>true</cas:isFromNewLogin>"));
        assert!(!b.contains("bad name"));
        assert!(
            !b.contains("PGTIOU-forged"),
            "no attribute passes for a protocol element"
        );
        let p2 = b.find("https://p2/pgt").unwrap();
        let p1 = b.find("https://p1/pgt").unwrap();
        assert!(p2 < p1, "most recent proxy first");
        assert!(b.contains("<cas:proxyGrantingTicket>PGTIOU-1-x</cas:proxyGrantingTicket>"));
    }

    #[test]
    fn cas2_xml_has_no_attributes() {
        assert!(!xml(&Ok(assertion()), false).body.contains("cas:attributes"));
    }

    #[test]
    fn failure_xml_and_json() {
        let err = Err(CasError::new(
            CasErrorCode::InvalidTicket,
            "Ticket '<x>' not recognized",
        ));
        let x = xml(&err, true).body;
        assert!(x.contains(r#"<cas:authenticationFailure code="INVALID_TICKET">Ticket &apos;&lt;x&gt;&apos; not recognized</cas:authenticationFailure>"#));
        let j: Value = serde_json::from_str(&json(&err, true).body).unwrap();
        assert_eq!(
            j["serviceResponse"]["authenticationFailure"]["code"],
            "INVALID_TICKET"
        );
    }

    #[test]
    fn json_success() {
        let j: Value = serde_json::from_str(&json(&Ok(assertion()), true).body).unwrap();
        let s = &j["serviceResponse"]["authenticationSuccess"];
        assert_eq!(s["user"], "jdoe<&>");
        assert_eq!(s["attributes"]["memberOf"], json!(["staff", "faculty"]));
        assert_eq!(s["attributes"]["cn"], "J. \"Doe\" & <Co>");
        assert_eq!(s["proxies"][0], "https://p2/pgt");
    }
}
