//! Checking what an SP sends: AuthnRequests (SAML Core §3.4, Profiles
//! §4.1.4.1) and LogoutRequests (§3.7).
//!
//! A signed POST message is verified by xmlsec and then *reduced to what
//! was signed*: the request the IdP acts on is parsed from the verified
//! bytes only, so a signature cannot vouch for an element it did not cover
//! (signature wrapping).

use crate::binding::QuerySignature;
use crate::sp::ServiceProvider;
use crate::xml::refuse_dtd;
use crate::SamlError;
use samael::crypto::{CertificateDer, Crypto, CryptoProvider, ReduceMode};
use samael::schema::{AuthnRequest, LogoutRequest};

/// How a message arrived, and what that says about its signature.
pub enum Binding {
    /// HTTP-Redirect: the query signature, already checked.
    Redirect(QuerySignature),
    /// HTTP-POST: an enveloped XML signature, if any, in the document.
    Post,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub now_ms: u64,
    pub skew_ms: u64,
    pub max_age_ms: u64,
    /// Our own endpoints: a Destination must be one of them.
    pub destinations: Vec<String>,
}

#[derive(Debug)]
pub struct CheckedAuthnRequest<'a> {
    pub sp: &'a ServiceProvider,
    pub id: String,
    pub acs_url: String,
    pub force_authn: bool,
    pub is_passive: bool,
    /// The NameID format to answer with.
    pub name_id_format: String,
    pub signed: bool,
    /// The `AuthnContextClassRef` a `RequestedAuthnContext` asked for.
    pub authn_context: Option<String>,
}

/// The Issuer of a message, unverified: only to pick the SP whose keys
/// verify it.
pub fn issuer_of(xml: &str) -> Result<String, SamlError> {
    if let Ok(request) = xml.parse::<AuthnRequest>() {
        if let Some(v) = request.issuer.and_then(|i| i.value) {
            return Ok(v.trim().to_owned());
        }
    }
    if let Ok(request) = xml.parse::<LogoutRequest>() {
        if let Some(v) = request.issuer.and_then(|i| i.value) {
            return Ok(v.trim().to_owned());
        }
    }
    Err(SamlError::untrusted("the message has no Issuer"))
}

/// Verifies the enveloped signature with the SP's certificates and returns
/// only the signed content.
pub fn verified_content(xml: &str, certs: &[Vec<u8>]) -> Result<String, SamlError> {
    let certs: Vec<CertificateDer> = certs.iter().cloned().map(CertificateDer::from).collect();
    Crypto::reduce_xml_to_signed(xml, &certs, ReduceMode::ValidateAndMarkNoAncestors)
        .map_err(|e| SamlError::requester(format!("the signature does not verify: {e}")))
}

fn has_signature(xml: &str) -> bool {
    xml.contains(":Signature") || xml.contains("<Signature")
}

fn within(instant_ms: i64, limits: &Limits) -> bool {
    let now = limits.now_ms as i64;
    instant_ms <= now + limits.skew_ms as i64
        && instant_ms >= now - (limits.max_age_ms + limits.skew_ms) as i64
}

pub fn check_authn_request<'a>(
    xml: &str,
    binding: Binding,
    sps: &'a [ServiceProvider],
    limits: &Limits,
) -> Result<CheckedAuthnRequest<'a>, SamlError> {
    refuse_dtd(xml)
        .map_err(|_| SamlError::untrusted("document type declarations are not accepted"))?;
    // Parsed once: the Issuer picks the SP, the rest is checked against it.
    let unverified: AuthnRequest = xml
        .parse()
        .map_err(|_| SamlError::untrusted("the message is not a SAML AuthnRequest"))?;
    let issuer = unverified
        .issuer
        .as_ref()
        .and_then(|i| i.value.as_deref())
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| SamlError::untrusted("the message has no Issuer"))?;
    let sp = sps
        .iter()
        .find(|sp| sp.entity_id == issuer)
        .ok_or_else(|| {
            SamlError::untrusted(format!("the service provider {issuer} is not registered"))
        })?;
    // The ACS must come from the metadata before anything is answered to it.
    let acs = sp
        .acs_for(
            unverified.assertion_consumer_service_url.as_deref(),
            unverified.assertion_consumer_service_index,
        )
        .ok_or_else(|| {
            SamlError::untrusted(
                "the AssertionConsumerService is not in the service provider's metadata",
            )
        })?;
    let (request, signed) = match binding {
        Binding::Redirect(QuerySignature::Valid) => (unverified, true),
        Binding::Redirect(QuerySignature::Invalid) => {
            return Err(SamlError::requester(
                "the request's signature does not verify",
            ))
        }
        Binding::Redirect(QuerySignature::Absent) => (unverified, false),
        Binding::Post if has_signature(xml) => {
            let content = verified_content(xml, &sp.signing_certs)?;
            let request: AuthnRequest = content
                .parse()
                .map_err(|_| SamlError::requester("the signed element is not the AuthnRequest"))?;
            // Core §5.4.2: the signature is enveloped in the element it
            // signs. A signed request wrapped in an unsigned one is refused.
            if request.id != unverified.id {
                return Err(SamlError::requester(
                    "the signature does not cover the request's root element",
                ));
            }
            (request, true)
        }
        Binding::Post => (unverified, false),
    };
    // The verified request must be the one whose ACS was checked.
    let acs = sp
        .acs_for(
            request.assertion_consumer_service_url.as_deref(),
            request.assertion_consumer_service_index,
        )
        .filter(|a| a.url == acs.url)
        .ok_or_else(|| SamlError::requester("the signed request names another consumer service"))?;
    if request
        .issuer
        .as_ref()
        .and_then(|i| i.value.as_deref())
        .map(str::trim)
        != Some(issuer.as_str())
    {
        return Err(SamlError::requester(
            "the signed request has another Issuer",
        ));
    }
    if sp.require_signed_requests && !signed {
        return Err(SamlError::requester(
            "this service provider's requests must be signed",
        ));
    }
    if request.version != "2.0" {
        return Err(SamlError::requester("only SAML 2.0 requests are accepted"));
    }
    if !within(request.issue_instant.timestamp_millis(), limits) {
        return Err(SamlError::requester(
            "the request's IssueInstant is outside the accepted window",
        ));
    }
    if let Some(d) = &request.destination {
        if !limits.destinations.iter().any(|o| o == d) {
            return Err(SamlError::requester(
                "the request's Destination is not this endpoint",
            ));
        }
    }
    if request.id.is_empty() || request.id.len() > 256 {
        return Err(SamlError::requester("the request has no usable ID"));
    }
    // NameIDPolicy (Core §3.4.1.1): the NameID must have the requested
    // Format; the SP's configured one, or transient, can be given.
    let requested = request
        .name_id_policy
        .as_ref()
        .and_then(|p| p.format.as_deref())
        .map(str::trim)
        .filter(|f| *f != crate::nameid::UNSPECIFIED);
    let name_id_format = match requested {
        None => sp.name_id_format.clone(),
        Some(f) if f == sp.name_id_format || f == crate::nameid::TRANSIENT => f.to_owned(),
        Some(f) => {
            return Err(SamlError::Status {
                status: crate::status::INVALID_NAME_ID_POLICY,
                message: format!("NameID format {f} is not available to this service provider"),
            })
        }
    };
    let authn_context = crate::authn_context::requested(request.requested_authn_context.as_ref())?;
    Ok(CheckedAuthnRequest {
        authn_context,
        sp,
        id: request.id.clone(),
        acs_url: acs.url.clone(),
        force_authn: request.force_authn.unwrap_or(false),
        is_passive: request.is_passive.unwrap_or(false),
        name_id_format,
        signed,
    })
}

#[derive(Debug)]
pub struct CheckedLogoutRequest<'a> {
    pub sp: &'a ServiceProvider,
    pub id: String,
    /// Core §3.7.1: the principal to log out (required).
    pub name_id: String,
    /// The NameID's Format attribute, when given.
    pub name_id_format: Option<String>,
    /// The `samlp:SessionIndex` elements (samael reads them as an attribute).
    pub session_indexes: Vec<String>,
}

fn session_indexes(xml: &str) -> Vec<String> {
    use castellan_xml::{Item, TextReader};
    use quick_xml::events::Event;
    let mut reader = TextReader::new(xml);
    let mut out = Vec::new();
    let mut inside = false;
    loop {
        match reader.read() {
            Ok(Item::Event(Event::Start(e))) if e.local_name().as_ref() == b"SessionIndex" => {
                inside = true
            }
            Ok(Item::Event(Event::End(e))) if e.local_name().as_ref() == b"SessionIndex" => {
                inside = false
            }
            Ok(Item::Text(Ok(v))) if inside => out.push(v.trim().to_owned()),
            Ok(Item::Event(Event::Eof)) | Err(_) => break,
            _ => {}
        }
        if out.len() > 16 {
            break;
        }
    }
    out
}

/// A LogoutRequest from a registered SP, signed (Profiles §4.4.4.1: the
/// requester must authenticate itself; on the front channel only a
/// signature does — else any page could log a user out).
pub fn check_logout_request<'a>(
    xml: &str,
    binding: Binding,
    sps: &'a [ServiceProvider],
    limits: &Limits,
) -> Result<CheckedLogoutRequest<'a>, SamlError> {
    refuse_dtd(xml)
        .map_err(|_| SamlError::untrusted("document type declarations are not accepted"))?;
    let unverified: LogoutRequest = xml
        .parse()
        .map_err(|_| SamlError::untrusted("the message is not a SAML LogoutRequest"))?;
    let issuer = unverified
        .issuer
        .as_ref()
        .and_then(|i| i.value.as_deref())
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| SamlError::untrusted("the LogoutRequest has no Issuer"))?;
    let sp = sps
        .iter()
        .find(|sp| sp.entity_id == issuer)
        .ok_or_else(|| {
            SamlError::untrusted(format!("the service provider {issuer} is not registered"))
        })?;
    let (request, verified_xml) = match binding {
        Binding::Redirect(QuerySignature::Valid) => (unverified, xml.to_owned()),
        Binding::Redirect(QuerySignature::Invalid) => {
            return Err(SamlError::untrusted(
                "the LogoutRequest's signature does not verify",
            ))
        }
        Binding::Redirect(QuerySignature::Absent) => {
            return Err(SamlError::untrusted("a LogoutRequest must be signed"))
        }
        Binding::Post if has_signature(xml) => {
            let content = verified_content(xml, &sp.signing_certs).map_err(|_| {
                SamlError::untrusted("the LogoutRequest's signature does not verify")
            })?;
            let request: LogoutRequest = content
                .parse()
                .map_err(|_| SamlError::untrusted("the signed element is not the LogoutRequest"))?;
            (request, content)
        }
        Binding::Post => return Err(SamlError::untrusted("a LogoutRequest must be signed")),
    };
    if let Some(instant) = &request.issue_instant {
        if !within(instant.timestamp_millis(), limits) {
            return Err(SamlError::untrusted(
                "the LogoutRequest's IssueInstant is outside the accepted window",
            ));
        }
    }
    // Core §3.7.1: a LogoutRequest names its principal. One that names
    // nobody (or only by an EncryptedID, which is not decrypted here) could
    // not be matched against the session it would end.
    let name_id = request
        .name_id
        .as_ref()
        .map(|n| n.value.trim().to_owned())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| SamlError::untrusted("the LogoutRequest names no principal (NameID)"))?;
    let name_id_format = request
        .name_id
        .as_ref()
        .and_then(|n| n.format.as_deref())
        .map(|f| f.trim().to_owned());
    Ok(CheckedLogoutRequest {
        sp,
        id: request.id.clone().unwrap_or_default(),
        name_id,
        name_id_format,
        session_indexes: session_indexes(&verified_xml),
    })
}

/// Where an error about an AuthnRequest may be sent: the SP and an ACS from
/// its metadata, and the request's ID; `None` when the request cannot name
/// a registered SP and one of its consumer services.
pub fn error_target<'a>(
    xml: &str,
    sps: &'a [ServiceProvider],
) -> Option<(&'a ServiceProvider, String, String)> {
    if refuse_dtd(xml).is_err() {
        return None;
    }
    let request: AuthnRequest = xml.parse().ok()?;
    let issuer = request.issuer.as_ref()?.value.as_deref()?.trim().to_owned();
    let sp = sps.iter().find(|sp| sp.entity_id == issuer)?;
    let acs = sp.acs_for(
        request.assertion_consumer_service_url.as_deref(),
        request.assertion_consumer_service_index,
    )?;
    Some((sp, acs.url.clone(), request.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::IdpCredentials;
    use crate::response::signature_template;
    use crate::sp::tests::{registration, METADATA};
    use crate::status;

    const NOW: u64 = 1_764_084_646_000;

    fn limits() -> Limits {
        Limits {
            now_ms: NOW,
            skew_ms: 60_000,
            max_age_ms: 300_000,
            destinations: vec!["https://idp.example/idp/profile/SAML2/POST/SSO".into()],
        }
    }

    fn request(id: &str, acs: &str, signature: &str) -> String {
        format!(
            "<samlp:AuthnRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" \
IssueInstant=\"2025-11-25T15:30:00Z\" AssertionConsumerServiceURL=\"{acs}\">\
<saml:Issuer>https://sp.example/shibboleth</saml:Issuer>{signature}</samlp:AuthnRequest>"
        )
    }

    /// An SP (whose key is `creds`) and its signed POST request.
    fn signed_setup(tag: &str) -> (Vec<ServiceProvider>, String, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("castellan-saml-req-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let creds = IdpCredentials::load_or_generate(&dir, None, "sp").unwrap();
        let metadata = METADATA.replace(
            "<md:SingleLogoutService",
            &format!(
                "<md:KeyDescriptor use=\"signing\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleLogoutService",
                creds.cert_base64
            ),
        );
        let mut r = registration();
        r.require_signed_requests = true;
        let sps = vec![ServiceProvider::from_metadata(&metadata, r).unwrap()];
        let template = signature_template("_signed", &creds.cert_base64);
        let signed = creds
            .sign_xml(&request("_signed", "https://sp.example/acs", &template))
            .unwrap();
        (sps, signed, dir)
    }

    fn status_of(r: Result<CheckedAuthnRequest<'_>, SamlError>) -> String {
        match r {
            Ok(c) => format!("ok {}", c.acs_url),
            Err(SamlError::Status { status, .. }) => status.to_owned(),
            Err(e) => format!("untrusted: {e}"),
        }
    }

    #[test]
    fn a_signed_post_request_verifies_and_tampering_breaks_it() {
        let (sps, signed, dir) = signed_setup("ok");
        assert_eq!(
            status_of(check_authn_request(&signed, Binding::Post, &sps, &limits())),
            "ok https://sp.example/acs"
        );
        let tampered = signed.replace(
            "ID=\"_signed\" Version",
            "ID=\"_signed\" ForceAuthn=\"true\" Version",
        );
        assert_eq!(
            status_of(check_authn_request(
                &tampered,
                Binding::Post,
                &sps,
                &limits()
            )),
            status::REQUESTER
        );
        // Unsigned, for an SP that must sign.
        let unsigned = request("_u", "https://sp.example/acs", "");
        assert_eq!(
            status_of(check_authn_request(
                &unsigned,
                Binding::Post,
                &sps,
                &limits()
            )),
            status::REQUESTER
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_signed_request_wrapped_in_an_unsigned_one_is_refused() {
        let (sps, signed, dir) = signed_setup("wrap");
        let inner = crate::keys::strip_declaration(&signed).to_owned();
        // The genuine signed request inside an unsigned root with the same ACS.
        let wrapped = request(
            "_evil",
            "https://sp.example/acs",
            &format!("<samlp:Extensions>{inner}</samlp:Extensions>"),
        );
        assert_eq!(
            status_of(check_authn_request(
                &wrapped,
                Binding::Post,
                &sps,
                &limits()
            )),
            status::REQUESTER
        );
        // Another ACS in the wrapper: not even answered there.
        let elsewhere = request(
            "_evil",
            "https://sp.example/acs2",
            &format!("<samlp:Extensions>{inner}</samlp:Extensions>"),
        );
        assert_ne!(
            status_of(check_authn_request(
                &elsewhere,
                Binding::Post,
                &sps,
                &limits()
            )),
            "ok https://sp.example/acs2"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let (sps, signed, dir) = signed_setup("dup");
        // A second element carrying the signed ID, so that a reference could
        // resolve to either.
        let duplicated = signed.replace(
            "<saml:Issuer>",
            "<samlp:Extensions><x ID=\"_signed\"/></samlp:Extensions><saml:Issuer>",
        );
        assert_eq!(
            status_of(check_authn_request(
                &duplicated,
                Binding::Post,
                &sps,
                &limits()
            )),
            status::REQUESTER
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn logout_request(name_id: &str, session_index: &str) -> String {
        format!(
            "<samlp:LogoutRequest xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" \
xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_l\" Version=\"2.0\" \
IssueInstant=\"2025-11-25T15:30:00Z\"><saml:Issuer>https://sp.example/shibboleth</saml:Issuer>\
{name_id}{session_index}</samlp:LogoutRequest>"
        )
    }

    #[test]
    fn a_logout_request_must_name_its_principal() {
        let sps = vec![ServiceProvider::from_metadata(METADATA, registration()).unwrap()];
        // The signature is taken as checked: only the content is at stake.
        let check = |xml: &str| {
            check_logout_request(
                xml,
                Binding::Redirect(QuerySignature::Valid),
                &sps,
                &limits(),
            )
        };
        let named = logout_request(
            "<saml:NameID>alice</saml:NameID>",
            "<samlp:SessionIndex>s1</samlp:SessionIndex>",
        );
        let c = check(&named).unwrap();
        assert_eq!(
            (c.name_id.as_str(), c.session_indexes),
            ("alice", vec!["s1".to_owned()])
        );
        for nobody in [
            logout_request("", ""),
            logout_request("", "<samlp:SessionIndex>s1</samlp:SessionIndex>"),
            logout_request("<saml:NameID> </saml:NameID>", ""),
        ] {
            assert!(check(&nobody).is_err(), "{nobody}");
        }
        // And unsigned it is refused whatever it says.
        assert!(check_logout_request(
            &named,
            Binding::Redirect(QuerySignature::Absent),
            &sps,
            &limits()
        )
        .is_err());
    }

    #[test]
    fn stale_and_future_requests_are_refused() {
        let sps = vec![ServiceProvider::from_metadata(METADATA, registration()).unwrap()];
        let xml = request("_t", "https://sp.example/acs", "");
        let mut old = limits();
        old.now_ms = NOW + 3_600_000;
        assert_eq!(
            status_of(check_authn_request(&xml, Binding::Post, &sps, &old)),
            status::REQUESTER
        );
        let mut early = limits();
        early.now_ms = NOW - 3_600_000;
        assert_eq!(
            status_of(check_authn_request(&xml, Binding::Post, &sps, &early)),
            status::REQUESTER
        );
        assert!(
            status_of(check_authn_request(&xml, Binding::Post, &sps, &limits())).starts_with("ok")
        );
    }
}
