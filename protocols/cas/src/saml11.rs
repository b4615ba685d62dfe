//! `/samlValidate`: a SAML 1.1 Request in a SOAP envelope in, a SAML 1.1
//! Response with an attribute statement out — as Apereo CAS answers it and as
//! mod_auth_cas (`CASValidateSAML On`) and python-cas's SAML client read it.

use crate::error::{CasError, CasErrorCode};
use crate::response::{CasResponse, SOAP_XML};
use crate::time_format::iso8601_millis;
use crate::validate::required;
use crate::xml::escape;
use castellan_core::{Assertion, Engine, ValidationRequest};
use castellan_xml::{self as xml_read, Item, TextReader};
use quick_xml::events::Event;
use rand::RngCore;
use std::fmt::Write as _;

/// Largest SOAP request read; a real one is a few hundred bytes.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// How long the assertion's Conditions window stays open.
const VALIDITY_MILLIS: u64 = 30_000;

/// What a SAML 1.1 request carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SamlRequest {
    pub request_id: Option<String>,
    pub artifact: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SamlRequestError {
    #[error("request too large")]
    TooLarge,
    #[error("request is not UTF-8")]
    NotUtf8,
    #[error("a DOCTYPE is not allowed")]
    DocType,
    #[error("malformed XML: {0}")]
    Malformed(String),
    #[error("{0}")]
    TooManyAttributes(#[from] xml_read::TooManyAttributes),
    #[error("no AssertionArtifact in the request")]
    NoArtifact,
}

/// Extracts the AssertionArtifact (the ticket). DTDs are refused outright, so
/// no entity — external or internal — is ever expanded.
pub fn parse_request(body: &[u8]) -> Result<SamlRequest, SamlRequestError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(SamlRequestError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| SamlRequestError::NotUtf8)?;
    let mut reader = TextReader::new(text);
    let mut request = SamlRequest::default();
    let mut in_artifact = false;
    let mut found = false;
    loop {
        match reader.read() {
            Ok(Item::Event(Event::DocType(_))) => return Err(SamlRequestError::DocType),
            Ok(Item::Event(Event::Start(e))) => {
                let name = e.local_name();
                if name.as_ref() == b"Request" {
                    for attr in xml_read::attributes(&e)?.into_iter().flatten() {
                        if attr.key.local_name().as_ref() == b"RequestID" {
                            request.request_id = xml_read::value(&attr)
                                .ok()
                                .map(|v| v.chars().take(128).collect());
                        }
                    }
                } else if name.as_ref() == b"AssertionArtifact" && !found {
                    in_artifact = true;
                }
            }
            Ok(Item::Text(t)) if in_artifact => {
                let v = t.map_err(|e| SamlRequestError::Malformed(e.to_string()))?;
                request.artifact.push_str(v.trim());
            }
            Ok(Item::Event(Event::End(e)))
                if in_artifact && e.local_name().as_ref() == b"AssertionArtifact" =>
            {
                in_artifact = false;
                found = true;
            }
            Ok(Item::Event(Event::Eof)) => break,
            Ok(_) => {}
            Err(e) => return Err(SamlRequestError::Malformed(e.to_string())),
        }
    }
    if !found || request.artifact.is_empty() {
        return Err(SamlRequestError::NoArtifact);
    }
    Ok(request)
}

/// Handles one `/samlValidate` POST; `target` is the `TARGET` query parameter
/// (the service URL) and `issuer` names this server in the assertion.
pub async fn saml_validate(
    engine: &Engine,
    target: Option<&str>,
    body: &[u8],
    issuer: &str,
    now_millis: u64,
) -> CasResponse {
    let (request_id, outcome) = match parse_request(body) {
        Err(e) => (
            None,
            Err(CasError::new(CasErrorCode::InvalidRequest, e.to_string())),
        ),
        Ok(request) => {
            let outcome = match required(Some(&request.artifact), target) {
                Err(e) => Err(e),
                Ok((ticket, service)) => engine
                    .validate(ValidationRequest {
                        ticket,
                        service,
                        renew: false,
                        pgt_url: None,
                        allow_proxy_tickets: true,
                        in_process: false,
                    })
                    .await
                    .map_err(|e| CasError::from_engine(e, ticket)),
            };
            (request.request_id, outcome)
        }
    };
    if let Err(e) = &outcome {
        tracing::info!(code = e.code.as_str(), "SAML 1.1 validation failed");
    }
    CasResponse {
        status: 200,
        content_type: SOAP_XML,
        failure: outcome.as_ref().err().map(|e| e.code),
        body: render(
            &outcome,
            request_id.as_deref(),
            target.unwrap_or(""),
            issuer,
            now_millis,
        ),
    }
}

fn saml_id() -> String {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    let mut id = String::from("_");
    for b in bytes {
        let _ = write!(id, "{b:02x}");
    }
    id
}

/// The SOAP-wrapped SAML 1.1 Response.
pub fn render(
    outcome: &Result<Assertion, CasError>,
    in_response_to: Option<&str>,
    recipient: &str,
    issuer: &str,
    now: u64,
) -> String {
    let instant = iso8601_millis(now);
    let mut out = String::with_capacity(2048);
    out.push_str("<SOAP-ENV:Envelope xmlns:SOAP-ENV=\"http://schemas.xmlsoap.org/soap/envelope/\"><SOAP-ENV:Header/><SOAP-ENV:Body>");
    let _ = write!(
        out,
        "<saml1p:Response xmlns:saml1p=\"urn:oasis:names:tc:SAML:1.0:protocol\" IssueInstant=\"{instant}\" MajorVersion=\"1\" MinorVersion=\"1\" Recipient=\"{}\" ResponseID=\"{}\"",
        escape(recipient),
        saml_id()
    );
    if let Some(id) = in_response_to {
        let _ = write!(out, " InResponseTo=\"{}\"", escape(id));
    }
    out.push('>');
    match outcome {
        Err(e) => {
            let _ = write!(
                out,
                "<saml1p:Status><saml1p:StatusCode Value=\"saml1p:RequestDenied\"/><saml1p:StatusMessage>{}</saml1p:StatusMessage></saml1p:Status>",
                escape(&format!("{}: {}", e.code.as_str(), e.description))
            );
        }
        Ok(a) => {
            out.push_str(
                "<saml1p:Status><saml1p:StatusCode Value=\"saml1p:Success\"/></saml1p:Status>",
            );
            let subject = format!(
                "<saml1:Subject><saml1:NameIdentifier>{}</saml1:NameIdentifier><saml1:SubjectConfirmation><saml1:ConfirmationMethod>urn:oasis:names:tc:SAML:1.0:cm:artifact</saml1:ConfirmationMethod></saml1:SubjectConfirmation></saml1:Subject>",
                escape(&a.principal.id)
            );
            let _ = write!(
                out,
                "<saml1:Assertion xmlns:saml1=\"urn:oasis:names:tc:SAML:1.0:assertion\" AssertionID=\"{}\" IssueInstant=\"{instant}\" Issuer=\"{}\" MajorVersion=\"1\" MinorVersion=\"1\">",
                saml_id(),
                escape(issuer)
            );
            let _ = write!(
                out,
                "<saml1:Conditions NotBefore=\"{instant}\" NotOnOrAfter=\"{}\"><saml1:AudienceRestrictionCondition><saml1:Audience>{}</saml1:Audience></saml1:AudienceRestrictionCondition></saml1:Conditions>",
                iso8601_millis(now + VALIDITY_MILLIS),
                escape(&a.service)
            );
            // mod_auth_cas reads the user from the AttributeStatement's
            // Subject, so the statement is always there, even with no attributes.
            out.push_str("<saml1:AttributeStatement>");
            out.push_str(&subject);
            for (name, values) in &a.attributes {
                let _ = write!(
                    out,
                    "<saml1:Attribute AttributeName=\"{}\" AttributeNamespace=\"http://www.ja-sig.org/products/cas/\">",
                    escape(name)
                );
                for v in values {
                    let _ = write!(
                        out,
                        "<saml1:AttributeValue>{}</saml1:AttributeValue>",
                        escape(v)
                    );
                }
                out.push_str("</saml1:Attribute>");
            }
            out.push_str("</saml1:AttributeStatement>");
            let _ = write!(
                out,
                "<saml1:AuthenticationStatement AuthenticationInstant=\"{}\" AuthenticationMethod=\"urn:oasis:names:tc:SAML:1.0:am:password\">{subject}</saml1:AuthenticationStatement>",
                iso8601_millis(a.authenticated_at)
            );
            out.push_str("</saml1:Assertion>");
        }
    }
    out.push_str("</saml1p:Response></SOAP-ENV:Body></SOAP-ENV:Envelope>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOD_AUTH_CAS: &str = r#"<?xml version="1.0" encoding="utf-8"?><SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Header/><SOAP-ENV:Body><samlp:Request xmlns:samlp="urn:oasis:names:tc:SAML:1.0:protocol"  MajorVersion="1" MinorVersion="1"><samlp:AssertionArtifact>ST-1-abc</samlp:AssertionArtifact></samlp:Request></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;

    #[test]
    fn reads_the_artifact_as_mod_auth_cas_sends_it() {
        let r = parse_request(MOD_AUTH_CAS.as_bytes()).unwrap();
        assert_eq!(r.artifact, "ST-1-abc");
        assert_eq!(r.request_id, None);
    }

    #[test]
    fn reads_request_id_and_artifact_with_whitespace() {
        let body = r#"<SOAP-ENV:Envelope xmlns:SOAP-ENV="http://schemas.xmlsoap.org/soap/envelope/"><SOAP-ENV:Body>
          <samlp:Request xmlns:samlp="urn:oasis:names:tc:SAML:1.0:protocol" MajorVersion="1" MinorVersion="1" RequestID="_192.168.16.51.1024506224022" IssueInstant="2002-06-19T17:03:44.022Z">
            <samlp:AssertionArtifact>
              ST-1-xyz
            </samlp:AssertionArtifact></samlp:Request></SOAP-ENV:Body></SOAP-ENV:Envelope>"#;
        let r = parse_request(body.as_bytes()).unwrap();
        assert_eq!(r.artifact, "ST-1-xyz");
        assert_eq!(
            r.request_id.as_deref(),
            Some("_192.168.16.51.1024506224022")
        );
    }

    #[test]
    fn refuses_dtds_and_garbage() {
        let xxe = r#"<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r><AssertionArtifact>&x;</AssertionArtifact></r>"#;
        assert_eq!(
            parse_request(xxe.as_bytes()),
            Err(SamlRequestError::DocType)
        );
        assert!(parse_request(b"<a><b></a>").is_err());
        assert_eq!(parse_request(b"\xff\xfe"), Err(SamlRequestError::NotUtf8));
        assert_eq!(
            parse_request(b"<Request/>"),
            Err(SamlRequestError::NoArtifact)
        );
        assert_eq!(parse_request(b""), Err(SamlRequestError::NoArtifact));
        assert_eq!(
            parse_request(&vec![b' '; MAX_REQUEST_BYTES + 1]),
            Err(SamlRequestError::TooLarge)
        );
    }

    #[test]
    fn references_in_the_artifact_and_request_id_are_resolved() {
        // quick-xml splits text at references; the artifact is still one.
        let body = r#"<samlp:Request RequestID="_a&amp;b&#33;"><samlp:AssertionArtifact> ST&#45;1&#x2D;a &amp; b </samlp:AssertionArtifact></samlp:Request>"#;
        let r = parse_request(body.as_bytes()).unwrap();
        assert_eq!(r.artifact, "ST-1-a & b");
        assert_eq!(r.request_id.as_deref(), Some("_a&b!"));
        // No entity but the predefined ones, inside the artifact or not.
        for bad in [
            "<Request><AssertionArtifact>ST-&x;</AssertionArtifact></Request>",
            "<Request><AssertionArtifact>ST-1 & 2</AssertionArtifact></Request>",
        ] {
            assert!(
                matches!(
                    parse_request(bad.as_bytes()),
                    Err(SamlRequestError::Malformed(_))
                ),
                "{bad}"
            );
        }
        // Text the parser does not read (outside the artifact) does not matter.
        let stray =
            "<Request><Other>a & b</Other><AssertionArtifact>ST-1</AssertionArtifact></Request>";
        assert_eq!(parse_request(stray.as_bytes()).unwrap().artifact, "ST-1");
    }

    #[test]
    fn a_request_element_with_thousands_of_attributes_is_refused() {
        // RUSTSEC-2026-0194: quick-xml < 0.41 checked a tag's attributes for
        // duplicates in quadratic time; no element is read past 64 now.
        let mut body = String::from("<samlp:Request");
        for i in 0..1_500 {
            body.push_str(&format!(" a{i}=\"\""));
        }
        body.push_str("><samlp:AssertionArtifact>ST-1</samlp:AssertionArtifact></samlp:Request>");
        assert!(body.len() <= MAX_REQUEST_BYTES);
        assert_eq!(
            parse_request(body.as_bytes()),
            Err(SamlRequestError::TooManyAttributes(
                castellan_xml::TooManyAttributes
            ))
        );
        // 64 are fine.
        let mut body = String::from("<samlp:Request RequestID=\"_r\"");
        for i in 1..castellan_xml::MAX_ATTRIBUTES {
            body.push_str(&format!(" a{i}=\"\""));
        }
        body.push_str("><samlp:AssertionArtifact>ST-1</samlp:AssertionArtifact></samlp:Request>");
        let r = parse_request(body.as_bytes()).unwrap();
        assert_eq!(r.request_id.as_deref(), Some("_r"));
    }

    #[test]
    fn failure_response_has_a_non_success_status() {
        let body = render(
            &Err(CasError::new(CasErrorCode::InvalidTicket, "<nope>")),
            Some("_r1"),
            "https://app/",
            "https://cas/",
            0,
        );
        assert!(body.contains(r#"StatusCode Value="saml1p:RequestDenied""#));
        assert!(body.contains(r#"InResponseTo="_r1""#));
        assert!(body.contains("&lt;nope&gt;"));
        assert!(!body.contains("Assertion "));
    }
}
