//! Castellan as a SAML service provider of an upstream IdP (delegated
//! authentication): the IdP's metadata, the AuthnRequest, and the checks
//! on the Response. The assertion used is the one the signature covered:
//! it is read from xmlsec's verified output, never from the raw document.

use crate::binding::decode_post;
use crate::keys::IdpCredentials;
use crate::xml::{escape, instant, new_id, refuse_dtd};
use crate::{SamlError, ASSERTION_NS, BINDING_POST, BINDING_REDIRECT, PROTOCOL_NS};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use castellan_xml::{self as xml_read, Item, TextReader};
use quick_xml::events::Event;
use samael::crypto::{CertificateDer, Crypto, CryptoProvider, ReduceMode};
use samael::metadata::EntityDescriptor;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct UpstreamIdp {
    pub entity_id: String,
    pub sso_redirect: String,
    pub signing_certs: Vec<Vec<u8>>,
}

impl UpstreamIdp {
    pub fn from_metadata(xml: &str) -> Result<Self, SamlError> {
        refuse_dtd(xml).map_err(|_| SamlError::Metadata("has a DTD".into()))?;
        let entity: EntityDescriptor = xml
            .parse()
            .map_err(|e| SamlError::Metadata(format!("not an EntityDescriptor: {e}")))?;
        let entity_id = entity
            .entity_id
            .clone()
            .ok_or_else(|| SamlError::Metadata("no entityID".into()))?;
        let idp = entity
            .idp_sso_descriptors
            .as_ref()
            .and_then(|d| d.first())
            .ok_or_else(|| SamlError::Metadata("no IDPSSODescriptor".into()))?;
        let sso_redirect = idp
            .single_sign_on_services
            .iter()
            .find(|e| e.binding == BINDING_REDIRECT)
            .map(|e| e.location.clone())
            .ok_or_else(|| {
                SamlError::Metadata("no SingleSignOnService with HTTP-Redirect".into())
            })?;
        let mut signing_certs = Vec::new();
        for kd in &idp.key_descriptors {
            if kd.key_use.as_deref().is_none_or(|u| u == "signing") {
                for c in kd
                    .key_info
                    .x509_data
                    .iter()
                    .flat_map(|d| d.certificates.iter())
                {
                    let compact: String = c.chars().filter(|c| !c.is_whitespace()).collect();
                    signing_certs.push(
                        STANDARD
                            .decode(compact)
                            .map_err(|e| SamlError::Metadata(format!("certificate: {e}")))?,
                    );
                }
            }
        }
        if signing_certs.is_empty() {
            return Err(SamlError::Metadata("no signing certificate".into()));
        }
        Ok(Self {
            entity_id,
            sso_redirect,
            signing_certs,
        })
    }
}

/// This SP's metadata.
pub fn sp_metadata(entity_id: &str, acs: &str, credentials: &IdpCredentials) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
entityID=\"{entity}\"><md:SPSSODescriptor AuthnRequestsSigned=\"true\" WantAssertionsSigned=\"true\" \
protocolSupportEnumeration=\"{PROTOCOL_NS}\"><md:KeyDescriptor use=\"signing\"><ds:KeyInfo \
xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate>\
</ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:AssertionConsumerService Binding=\"{BINDING_POST}\" \
Location=\"{acs}\" index=\"0\" isDefault=\"true\"/></md:SPSSODescriptor></md:EntityDescriptor>\n",
        entity = escape(entity_id),
        cert = credentials.cert_base64,
        acs = escape(acs),
    )
}

/// An AuthnRequest to the upstream (signed over the Redirect query by the
/// caller); returns its ID and XML.
pub fn authn_request(
    sp_entity_id: &str,
    acs: &str,
    destination: &str,
    force: bool,
    passive: bool,
    now_ms: u64,
) -> (String, String) {
    let id = new_id();
    let force = match (force, passive) {
        (_, true) => " IsPassive=\"true\"",
        (true, false) => " ForceAuthn=\"true\"",
        (false, false) => "",
    };
    let xml = format!(
        "<samlp:AuthnRequest xmlns:samlp=\"{PROTOCOL_NS}\" xmlns:saml=\"{ASSERTION_NS}\" ID=\"{id}\" Version=\"2.0\" \
IssueInstant=\"{now}\" Destination=\"{dest}\" AssertionConsumerServiceURL=\"{acs}\" \
ProtocolBinding=\"{BINDING_POST}\"{force}><saml:Issuer>{issuer}</saml:Issuer></samlp:AuthnRequest>",
        now = instant(now_ms),
        dest = escape(destination),
        acs = escape(acs),
        issuer = escape(sp_entity_id),
    );
    (id, xml)
}

/// What the checks on a Response need.
pub struct Expect<'a> {
    pub idp: &'a UpstreamIdp,
    pub sp_entity_id: &'a str,
    pub acs: &'a str,
    pub request_id: &'a str,
    pub now_ms: u64,
    pub skew_ms: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub name_id: String,
    pub attributes: BTreeMap<String, Vec<String>>,
    /// The signed AuthnStatement's AuthnInstant (ms since the epoch): when
    /// the user authenticated at the IdP.
    pub authn_instant_ms: Option<i64>,
    /// The signed AuthnStatement's AuthnContextClassRef: how the user
    /// authenticated at the IdP.
    pub authn_context_class: Option<String>,
}

fn parse_instant(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The value of the first attribute with local name `name` (malformed ones
/// skipped); `Err` for an element with more than
/// [`xml_read::MAX_ATTRIBUTES`] attributes.
fn attr(e: &quick_xml::events::BytesStart<'_>, name: &[u8]) -> Result<Option<String>, SamlError> {
    let attributes = xml_read::attributes(e).map_err(|e| SamlError::requester(e.to_string()))?;
    Ok(attributes
        .into_iter()
        .flatten()
        .find(|a| a.key.local_name().as_ref() == name)
        .and_then(|a| xml_read::value(&a).ok()))
}

/// Verifies a Response (base64, from the ACS POST) and returns the subject.
pub fn verify_response(b64: &str, expect: &Expect<'_>) -> Result<Identity, SamlError> {
    let bad = |m: &str| SamlError::requester(m.to_owned());
    let xml = decode_post(b64)?;
    refuse_dtd(&xml)?;
    // The outer Response, unverified: only its status, Destination and
    // InResponseTo, which must match what this SP sent anyway.
    let mut reader = TextReader::new(&xml);
    let mut depth = 0usize;
    let mut status_ok = false;
    loop {
        let (e, empty) = match reader.read() {
            Ok(Item::Event(Event::Start(e))) => (e, false),
            Ok(Item::Event(Event::Empty(e))) => (e, true),
            Ok(Item::Event(Event::End(_))) => {
                depth = depth.saturating_sub(1);
                continue;
            }
            Ok(Item::Event(Event::Eof)) => break,
            Err(_) => return Err(bad("the Response is not well-formed XML")),
            _ => continue,
        };
        let local = e.local_name();
        if depth == 0 {
            if local.as_ref() != b"Response" {
                return Err(bad("not a SAML Response"));
            }
            if let Some(d) = attr(&e, b"Destination")? {
                if d != expect.acs {
                    return Err(bad("the Response is for another Destination"));
                }
            }
            if attr(&e, b"InResponseTo")?.as_deref() != Some(expect.request_id) {
                return Err(bad("the Response answers another request"));
            }
        }
        // Response > Status > StatusCode (the top-level one).
        if local.as_ref() == b"StatusCode" && depth == 2 {
            status_ok = attr(&e, b"Value")?.as_deref() == Some(crate::status::SUCCESS);
        }
        if !empty {
            depth += 1;
        }
    }
    if !status_ok {
        return Err(SamlError::Status {
            status: crate::status::AUTHN_FAILED,
            message: "the identity provider did not sign the user in".into(),
        });
    }
    let certs: Vec<CertificateDer> = expect
        .idp
        .signing_certs
        .iter()
        .cloned()
        .map(CertificateDer::from)
        .collect();
    let verified =
        Crypto::reduce_xml_to_signed(&xml, &certs, ReduceMode::ValidateAndMarkNoAncestors)
            .map_err(|e| bad(&format!("the signature does not verify: {e}")))?;
    read_assertion(&verified, expect)
}

/// The one Assertion of the verified content, checked.
fn read_assertion(verified: &str, expect: &Expect<'_>) -> Result<Identity, SamlError> {
    let bad = |m: &str| SamlError::requester(m.to_owned());
    let mut reader = TextReader::new(verified);
    let mut path: Vec<Vec<u8>> = Vec::new();
    let mut assertions = 0;
    let mut issuer = String::new();
    let mut audiences = Vec::new();
    let mut identity = Identity::default();
    let mut name_id_comment = false;
    let mut current_attribute: Option<String> = None;
    let mut recipient_ok = false;
    let now = expect.now_ms as i64;
    let skew = expect.skew_ms as i64;
    let in_window = |before: Option<String>, after: Option<String>| -> bool {
        before
            .and_then(|b| parse_instant(&b))
            .is_none_or(|b| now + skew >= b)
            && after
                .and_then(|a| parse_instant(&a))
                .is_some_and(|a| now - skew < a)
    };
    loop {
        let item = reader
            .read()
            .map_err(|_| bad("the assertion is not well-formed"))?;
        let event = match item {
            Item::Text(t) => {
                let text = t.map_err(|_| bad("bad text"))?;
                match path.last().map(Vec::as_slice) {
                    Some(b"Issuer") if path.len() >= 2 && path[path.len() - 2] == b"Assertion" => {
                        issuer.push_str(text.trim())
                    }
                    Some(b"Audience") => audiences.push(text.trim().to_owned()),
                    Some(b"NameID") => identity.name_id.push_str(&text),
                    Some(b"AuthnContextClassRef") => {
                        identity.authn_context_class = Some(text.trim().to_owned())
                    }
                    Some(b"AttributeValue") => {
                        if let Some(name) = &current_attribute {
                            identity
                                .attributes
                                .entry(name.clone())
                                .or_default()
                                .push(text);
                        }
                    }
                    _ => {}
                }
                continue;
            }
            Item::Event(event) => event,
        };
        let empty = matches!(event, Event::Empty(_));
        match event {
            Event::Start(e) | Event::Empty(e) => {
                let local = e.local_name().as_ref().to_vec();
                match local.as_slice() {
                    b"Assertion" => assertions += 1,
                    b"Conditions" => {
                        let within = in_window(attr(&e, b"NotBefore")?, attr(&e, b"NotOnOrAfter")?);
                        if !within {
                            return Err(bad("the assertion is outside its validity window"));
                        }
                    }
                    b"SubjectConfirmationData" => {
                        recipient_ok |= attr(&e, b"Recipient")?.as_deref() == Some(expect.acs)
                            && attr(&e, b"InResponseTo")?.as_deref() == Some(expect.request_id)
                            && in_window(None, attr(&e, b"NotOnOrAfter")?);
                    }
                    b"AuthnStatement" => {
                        identity.authn_instant_ms =
                            attr(&e, b"AuthnInstant")?.and_then(|a| parse_instant(&a));
                    }
                    b"Attribute" => {
                        current_attribute = match attr(&e, b"FriendlyName")? {
                            Some(n) => Some(n),
                            None => attr(&e, b"Name")?,
                        };
                    }
                    _ => {}
                }
                if !empty {
                    path.push(local);
                }
            }
            Event::End(_) => {
                if path.last().is_some_and(|l| l == b"Attribute") {
                    current_attribute = None;
                }
                path.pop();
            }
            Event::Comment(_) if path.last().is_some_and(|l| l == b"NameID") => {
                name_id_comment = true;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if assertions != 1 {
        return Err(bad("the signed content holds no single assertion"));
    }
    if issuer != expect.idp.entity_id {
        return Err(bad("the assertion is from another issuer"));
    }
    if !audiences.iter().any(|a| a == expect.sp_entity_id) {
        return Err(bad("the assertion is for another audience"));
    }
    if !recipient_ok {
        return Err(bad(
            "no bearer confirmation for this consumer service and request",
        ));
    }
    if name_id_comment {
        // A comment would let "admin@x<!---->.evil" read as "admin@x".
        return Err(bad("the NameID contains a comment"));
    }
    identity.name_id = identity.name_id.trim().to_owned();
    if identity.name_id.is_empty() {
        return Err(bad("the assertion names no subject"));
    }
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idp() -> UpstreamIdp {
        UpstreamIdp {
            entity_id: "https://idp.example/?a=1&b=2".into(),
            sso_redirect: "https://idp.example/sso".into(),
            signing_certs: vec![],
        }
    }

    fn expect(idp: &UpstreamIdp) -> Expect<'_> {
        Expect {
            idp,
            sp_entity_id: "https://sp.example/?x&y",
            acs: "https://sp.example/acs",
            request_id: "_req",
            now_ms: 1_764_084_646_000,
            skew_ms: 60_000,
        }
    }

    fn message(status: &SamlError) -> String {
        match status {
            SamlError::Status { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }

    #[test]
    fn a_response_element_with_thousands_of_attributes_is_refused() {
        // RUSTSEC-2026-0194: quick-xml < 0.41 checked a tag's attributes for
        // duplicates in quadratic time; no element is read past 64 now, and
        // the refusal comes before any signature work.
        let mut xml = String::from("<samlp:Response");
        for i in 0..5_000 {
            xml.push_str(&format!(" a{i}=\"\""));
        }
        xml.push_str(" InResponseTo=\"_req\"><samlp:Status/></samlp:Response>");
        let idp = idp();
        let err = verify_response(&STANDARD.encode(&xml), &expect(&idp)).unwrap_err();
        assert!(message(&err).contains("more than 64 attributes"), "{err:?}");
    }

    #[test]
    fn the_assertion_text_is_read_whole_across_references() {
        let xml = r#"<saml:Assertion xmlns:saml="urn:oasis:names:tc:SAML:2.0:assertion">
<saml:Issuer> https://idp.example/?a=1&amp;b=2 </saml:Issuer>
<saml:Subject><saml:NameID>j&#246;e &amp; co</saml:NameID>
<saml:SubjectConfirmation><saml:SubjectConfirmationData Recipient="https://sp.example/acs" InResponseTo="_req" NotOnOrAfter="2030-01-01T00:00:00Z"/></saml:SubjectConfirmation></saml:Subject>
<saml:Conditions NotBefore="2020-01-01T00:00:00Z" NotOnOrAfter="2030-01-01T00:00:00Z"><saml:AudienceRestriction><saml:Audience>https://sp.example/?x&amp;y</saml:Audience></saml:AudienceRestriction></saml:Conditions>
<saml:AttributeStatement><saml:Attribute Name="cn"><saml:AttributeValue>A &lt;B&gt; &amp; C</saml:AttributeValue><saml:AttributeValue>D</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>
</saml:Assertion>"#;
        let idp = idp();
        let identity = read_assertion(xml, &expect(&idp)).unwrap();
        assert_eq!(identity.name_id, "jöe & co");
        assert_eq!(
            identity.attributes.get("cn"),
            Some(&vec!["A <B> & C".to_owned(), "D".to_owned()])
        );
        // An entity that is not predefined is an error, never expanded.
        let bad = xml.replace("j&#246;e", "j&ouml;e");
        assert_eq!(
            message(&read_assertion(&bad, &expect(&idp)).unwrap_err()),
            "bad text"
        );
    }
}
