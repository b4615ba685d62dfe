//! The XML the IdP writes: Responses with signed (and optionally
//! encrypted) assertions, LogoutRequests and LogoutResponses, and its
//! metadata. Signed documents are written in exclusive canonical form
//! (attributes in canonical order, namespaces declared where first used,
//! values through [`text`] and [`attr`]), so that they are signed in one
//! pass with no parse ([`IdpCredentials::sign_enveloped`]); the signature
//! goes where SAML Core §5 puts it, after the Issuer.

use crate::idp::NameId;
use crate::keys::IdpCredentials;
use crate::sp::{AttributeNameFormat, ServiceProvider};
use crate::xml::{attr, escape, instant, new_id, text};
use crate::{nameid, status, SamlError, ASSERTION_NS, BINDING_POST, BINDING_REDIRECT, PROTOCOL_NS};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use castellan_core::Attributes;
use openssl::encrypt::Encrypter;
use openssl::rsa::Padding;
use openssl::symm::Cipher;
use openssl::x509::X509;

const URI_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:uri";
const BASIC_FORMAT: &str = "urn:oasis:names:tc:SAML:2.0:attrname-format:basic";

/// The usual eduPerson / inetOrgPerson OIDs.
pub fn oid(attribute: &str) -> Option<&'static str> {
    Some(match attribute {
        "uid" => "urn:oid:0.9.2342.19200300.100.1.1",
        "mail" => "urn:oid:0.9.2342.19200300.100.1.3",
        "cn" => "urn:oid:2.5.4.3",
        "sn" => "urn:oid:2.5.4.4",
        "givenName" => "urn:oid:2.5.4.42",
        "displayName" => "urn:oid:2.16.840.1.113730.3.1.241",
        "telephoneNumber" => "urn:oid:2.5.4.20",
        "ou" => "urn:oid:2.5.4.11",
        "o" => "urn:oid:2.5.4.10",
        "title" => "urn:oid:2.5.4.12",
        "employeeNumber" => "urn:oid:2.16.840.1.113730.3.1.3",
        "memberOf" => "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
        "isMemberOf" => "urn:oid:1.3.6.1.4.1.5923.1.5.1.1",
        "eduPersonPrincipalName" => "urn:oid:1.3.6.1.4.1.5923.1.1.1.6",
        "eduPersonAffiliation" => "urn:oid:1.3.6.1.4.1.5923.1.1.1.1",
        "eduPersonScopedAffiliation" => "urn:oid:1.3.6.1.4.1.5923.1.1.1.9",
        "eduPersonEntitlement" => "urn:oid:1.3.6.1.4.1.5923.1.1.1.7",
        "eduPersonUniqueId" => "urn:oid:1.3.6.1.4.1.5923.1.1.1.13",
        "eduPersonTargetedID" => "urn:oid:1.3.6.1.4.1.5923.1.1.1.10",
        _ => return None,
    })
}

pub(crate) fn signature_template(reference_id: &str, cert_base64: &str) -> String {
    format!(
        "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>\
<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>\
<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>\
<ds:Reference URI=\"#{reference_id}\"><ds:Transforms>\
<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>\
<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue/></ds:Reference>\
</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert_base64}\
</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>"
    )
}

/// Who the assertion is about.
pub struct Subject<'a> {
    pub name_id: &'a str,
    pub name_id_format: &'a str,
    pub attributes: &'a Attributes,
    /// Unix ms of the login.
    pub authn_instant: u64,
    pub session_index: &'a str,
    /// The `AuthnContextClassRef` the assertion states.
    pub authn_context_class: &'a str,
}

/// Everything a Response needs beyond the subject.
pub struct ResponseContext<'a> {
    pub idp_entity_id: &'a str,
    pub sp: &'a ServiceProvider,
    pub acs_url: &'a str,
    /// None for an IdP-initiated (unsolicited) response.
    pub in_response_to: Option<&'a str>,
    pub now_ms: u64,
    pub skew_ms: u64,
    pub ttl_ms: u64,
}

fn attribute_statement(sp: &ServiceProvider, attributes: &Attributes) -> String {
    let mut out = String::new();
    for (name, values) in attributes {
        let (attr_name, format, friendly) = match (sp.attribute_format, oid(name)) {
            (AttributeNameFormat::Uri, Some(o)) => (o.to_owned(), URI_FORMAT, Some(name)),
            _ => (name.clone(), BASIC_FORMAT, None),
        };
        // Canonical attribute order: FriendlyName, Name, NameFormat.
        out.push_str("<saml:Attribute");
        if let Some(f) = friendly {
            out.push_str(&format!(" FriendlyName=\"{}\"", attr(f)));
        }
        out.push_str(&format!(
            " Name=\"{}\" NameFormat=\"{format}\">",
            attr(&attr_name)
        ));
        for v in values {
            // `xs` is used only inside a value (xsi:type), which exc-c14n
            // does not see: the signature names it in InclusiveNamespaces.
            out.push_str(&format!(
                "<saml:AttributeValue xmlns:xs=\"http://www.w3.org/2001/XMLSchema\" \
xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"xs:string\">{}</saml:AttributeValue>",
                text(v)
            ));
        }
        out.push_str("</saml:Attribute>");
    }
    if out.is_empty() {
        out
    } else {
        format!("<saml:AttributeStatement>{out}</saml:AttributeStatement>")
    }
}

/// The assertion, signed when the SP's registration asks for it.
fn assertion(
    ctx: &ResponseContext<'_>,
    subject: &Subject<'_>,
    credentials: &IdpCredentials,
) -> Result<String, SamlError> {
    let id = new_id();
    let now = instant(ctx.now_ms);
    let not_before = instant(ctx.now_ms.saturating_sub(ctx.skew_ms));
    let not_on_or_after = instant(ctx.now_ms + ctx.ttl_ms);
    let in_response_to = ctx
        .in_response_to
        .map(|r| format!(" InResponseTo=\"{}\"", attr(r)))
        .unwrap_or_default();
    let qualifiers = if subject.name_id_format == nameid::PERSISTENT
        || subject.name_id_format == nameid::TRANSIENT
    {
        format!(
            " NameQualifier=\"{}\" SPNameQualifier=\"{}\"",
            attr(ctx.idp_entity_id),
            attr(&ctx.sp.entity_id)
        )
    } else {
        String::new()
    };
    let head = format!(
        "<saml:Assertion xmlns:saml=\"{ASSERTION_NS}\" ID=\"{id}\" IssueInstant=\"{now}\" Version=\"2.0\">\
<saml:Issuer>{issuer}</saml:Issuer>",
        issuer = text(ctx.idp_entity_id),
    );
    let tail = format!(
        "<saml:Subject><saml:NameID Format=\"{format}\"{qualifiers}>{name_id}</saml:NameID>\
<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\">\
<saml:SubjectConfirmationData{in_response_to} NotOnOrAfter=\"{not_on_or_after}\" Recipient=\"{acs}\">\
</saml:SubjectConfirmationData></saml:SubjectConfirmation></saml:Subject>\
<saml:Conditions NotBefore=\"{not_before}\" NotOnOrAfter=\"{not_on_or_after}\">\
<saml:AudienceRestriction><saml:Audience>{audience}</saml:Audience></saml:AudienceRestriction></saml:Conditions>\
<saml:AuthnStatement AuthnInstant=\"{authn}\" SessionIndex=\"{session_index}\">\
<saml:AuthnContext><saml:AuthnContextClassRef>{class}</saml:AuthnContextClassRef>\
</saml:AuthnContext></saml:AuthnStatement>{attributes}</saml:Assertion>",
        class = text(subject.authn_context_class),
        format = attr(subject.name_id_format),
        name_id = text(subject.name_id),
        acs = attr(ctx.acs_url),
        audience = text(&ctx.sp.entity_id),
        authn = instant(subject.authn_instant),
        session_index = attr(subject.session_index),
        attributes = attribute_statement(ctx.sp, subject.attributes),
    );
    signed_if(ctx.sp.sign.assertion(), &id, head, tail, credentials)
}

/// The element `head` + `tail`, with an enveloped signature between the
/// two when `sign`.
fn signed_if(
    sign: bool,
    id: &str,
    head: String,
    tail: String,
    credentials: &IdpCredentials,
) -> Result<String, SamlError> {
    if sign {
        credentials.sign_enveloped(id, &head, &tail)
    } else {
        let mut xml = head;
        xml.push_str(&tail);
        Ok(xml)
    }
}

/// XML Encryption of the assertion for the SP (AES-256-GCM, key transport
/// RSA-OAEP with MGF1/SHA-1), as Shibboleth and xmlsec decrypt it.
fn encrypt(assertion: &str, sp: &ServiceProvider) -> Result<String, SamlError> {
    let der = sp
        .encryption_cert
        .as_ref()
        .ok_or_else(|| SamlError::Crypto("no encryption certificate".into()))?;
    let key = X509::from_der(der)?.public_key()?;
    let content_key: [u8; 32] = rand::random();
    let iv: [u8; 12] = rand::random();
    let mut tag = [0u8; 16];
    let ciphertext = openssl::symm::encrypt_aead(
        Cipher::aes_256_gcm(),
        &content_key,
        Some(&iv),
        &[],
        assertion.as_bytes(),
        &mut tag,
    )?;
    let mut data = Vec::with_capacity(12 + ciphertext.len() + 16);
    data.extend_from_slice(&iv);
    data.extend_from_slice(&ciphertext);
    data.extend_from_slice(&tag);
    let mut encrypter = Encrypter::new(&key)?;
    encrypter.set_rsa_padding(Padding::PKCS1_OAEP)?;
    let mut wrapped = vec![0u8; encrypter.encrypt_len(&content_key)?];
    let n = encrypter.encrypt(&content_key, &mut wrapped)?;
    wrapped.truncate(n);
    Ok(format!(
        "<saml:EncryptedAssertion xmlns:saml=\"{ASSERTION_NS}\"><xenc:EncryptedData xmlns:xenc=\"http://www.w3.org/2001/04/xmlenc#\" \
Type=\"http://www.w3.org/2001/04/xmlenc#Element\">\
<xenc:EncryptionMethod Algorithm=\"http://www.w3.org/2009/xmlenc11#aes256-gcm\"></xenc:EncryptionMethod>\
<ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><xenc:EncryptedKey>\
<xenc:EncryptionMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p\">\
<ds:DigestMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"></ds:DigestMethod></xenc:EncryptionMethod>\
<xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedKey></ds:KeyInfo>\
<xenc:CipherData><xenc:CipherValue>{}</xenc:CipherValue></xenc:CipherData></xenc:EncryptedData>\
</saml:EncryptedAssertion>",
        STANDARD.encode(wrapped),
        STANDARD.encode(data)
    ))
}

fn response_envelope(
    ctx: &ResponseContext<'_>,
    status_xml: &str,
    body: &str,
    sign: bool,
    credentials: &IdpCredentials,
) -> Result<String, SamlError> {
    let id = new_id();
    let in_response_to = ctx
        .in_response_to
        .map(|r| format!(" InResponseTo=\"{}\"", attr(r)))
        .unwrap_or_default();
    let head = format!(
        "<samlp:Response xmlns:samlp=\"{PROTOCOL_NS}\" Destination=\"{acs}\" ID=\"{id}\"{in_response_to} \
IssueInstant=\"{now}\" Version=\"2.0\"><saml:Issuer xmlns:saml=\"{ASSERTION_NS}\">{issuer}</saml:Issuer>",
        now = instant(ctx.now_ms),
        acs = attr(ctx.acs_url),
        issuer = text(ctx.idp_entity_id),
    );
    let mut tail = String::with_capacity(status_xml.len() + body.len() + 20);
    tail.push_str(status_xml);
    tail.push_str(body);
    tail.push_str("</samlp:Response>");
    signed_if(sign, &id, head, tail, credentials)
}

fn status_element(code: &str, message: Option<&str>) -> String {
    let message = message
        .map(|m| format!("<samlp:StatusMessage>{}</samlp:StatusMessage>", text(m)))
        .unwrap_or_default();
    if code == status::SUCCESS {
        format!("<samlp:Status><samlp:StatusCode Value=\"{code}\"></samlp:StatusCode>{message}</samlp:Status>")
    } else {
        // A second-level code goes inside a top-level Requester/Responder.
        let top = if code == status::REQUESTER || code == status::RESPONDER {
            return format!(
                "<samlp:Status><samlp:StatusCode Value=\"{code}\"></samlp:StatusCode>{message}</samlp:Status>"
            );
        } else if code == status::NO_PASSIVE
            || code == status::REQUEST_DENIED
            || code == status::NO_AUTHN_CONTEXT
        {
            status::RESPONDER
        } else {
            status::REQUESTER
        };
        format!(
            "<samlp:Status><samlp:StatusCode Value=\"{top}\"><samlp:StatusCode Value=\"{code}\">\
</samlp:StatusCode></samlp:StatusCode>{message}</samlp:Status>"
        )
    }
}

/// A successful Response for `subject`.
pub fn success(
    ctx: &ResponseContext<'_>,
    subject: &Subject<'_>,
    credentials: &IdpCredentials,
) -> Result<String, SamlError> {
    let mut body = assertion(ctx, subject, credentials)?;
    if ctx.sp.encrypt {
        body = encrypt(&body, ctx.sp)?;
    }
    response_envelope(
        ctx,
        &status_element(status::SUCCESS, None),
        &body,
        ctx.sp.sign.response(),
        credentials,
    )
}

/// An error Response (signed: the SP may insist on it), no assertion.
pub fn failure(
    ctx: &ResponseContext<'_>,
    code: &str,
    message: &str,
    credentials: &IdpCredentials,
) -> Result<String, SamlError> {
    response_envelope(
        ctx,
        &status_element(code, Some(message)),
        "",
        true,
        credentials,
    )
}

/// A LogoutResponse to an SP's LogoutRequest. Signed in the document for
/// the POST binding; the Redirect binding signs the query instead.
pub fn logout_response(
    idp_entity_id: &str,
    destination: &str,
    in_response_to: &str,
    code: &str,
    now_ms: u64,
    sign: bool,
    credentials: &IdpCredentials,
) -> Result<String, SamlError> {
    let id = new_id();
    let head = format!(
        "<samlp:LogoutResponse xmlns:samlp=\"{PROTOCOL_NS}\" Destination=\"{dest}\" ID=\"{id}\" \
InResponseTo=\"{irt}\" IssueInstant=\"{now}\" Version=\"2.0\">\
<saml:Issuer xmlns:saml=\"{ASSERTION_NS}\">{issuer}</saml:Issuer>",
        now = instant(now_ms),
        dest = attr(destination),
        irt = attr(in_response_to),
        issuer = text(idp_entity_id),
    );
    let tail = format!("{}</samlp:LogoutResponse>", status_element(code, None));
    signed_if(sign, &id, head, tail, credentials)
}

/// What a LogoutRequest the IdP sends names.
pub struct LogoutRequestParams<'a> {
    pub idp_entity_id: &'a str,
    pub destination: &'a str,
    /// The NameID exactly as the SP was sent it.
    pub name_id: &'a NameId,
    pub session_index: &'a str,
    pub now_ms: u64,
}

/// A LogoutRequest the IdP sends an SP, naming the subject exactly as the
/// assertion did (qualifiers included); signed in the document for SOAP and
/// POST (`sign`), unsigned for the Redirect binding, which signs the query.
/// Returns its ID and XML.
pub fn logout_request(
    p: &LogoutRequestParams<'_>,
    sign: bool,
    credentials: &IdpCredentials,
) -> Result<(String, String), SamlError> {
    let id = new_id();
    let mut qualifiers = String::new();
    if let Some(q) = &p.name_id.name_qualifier {
        qualifiers.push_str(&format!(" NameQualifier=\"{}\"", attr(q)));
    }
    if let Some(q) = &p.name_id.sp_name_qualifier {
        qualifiers.push_str(&format!(" SPNameQualifier=\"{}\"", attr(q)));
    }
    let head = format!(
        "<samlp:LogoutRequest xmlns:samlp=\"{PROTOCOL_NS}\" Destination=\"{dest}\" ID=\"{id}\" \
IssueInstant=\"{now}\" Version=\"2.0\"><saml:Issuer xmlns:saml=\"{ASSERTION_NS}\">{issuer}</saml:Issuer>",
        now = instant(p.now_ms),
        dest = attr(p.destination),
        issuer = text(p.idp_entity_id),
    );
    let tail = format!(
        "<saml:NameID xmlns:saml=\"{ASSERTION_NS}\" Format=\"{format}\"{qualifiers}>{name_id}</saml:NameID>\
<samlp:SessionIndex>{session_index}</samlp:SessionIndex></samlp:LogoutRequest>",
        format = attr(&p.name_id.format),
        name_id = text(&p.name_id.value),
        session_index = text(p.session_index),
    );
    let xml = signed_if(sign, &id, head, tail, credentials)?;
    Ok((id, xml))
}

/// The IdP's metadata (SAML Metadata §2.4.3).
pub fn metadata(entity_id: &str, base: &str, credentials: &IdpCredentials) -> String {
    let key = |usage: &str| {
        format!(
            "<md:KeyDescriptor use=\"{usage}\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\">\
<ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>",
            credentials.cert_base64
        )
    };
    let formats: String = nameid::ALL
        .iter()
        .map(|f| format!("<md:NameIDFormat>{f}</md:NameIDFormat>"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<md:EntityDescriptor xmlns:md=\"urn:oasis:names:tc:SAML:2.0:metadata\" \
entityID=\"{entity}\"><md:IDPSSODescriptor WantAuthnRequestsSigned=\"false\" \
protocolSupportEnumeration=\"{PROTOCOL_NS}\">{signing}\
<md:SingleLogoutService Binding=\"{BINDING_REDIRECT}\" Location=\"{base}/profile/SAML2/Redirect/SLO\"/>\
<md:SingleLogoutService Binding=\"{BINDING_POST}\" Location=\"{base}/profile/SAML2/POST/SLO\"/>\
{formats}\
<md:SingleSignOnService Binding=\"{BINDING_REDIRECT}\" Location=\"{base}/profile/SAML2/Redirect/SSO\"/>\
<md:SingleSignOnService Binding=\"{BINDING_POST}\" Location=\"{base}/profile/SAML2/POST/SSO\"/>\
</md:IDPSSODescriptor></md:EntityDescriptor>\n",
        entity = escape(entity_id),
        base = escape(base),
        signing = key("signing"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sp::tests::{registration, METADATA};
    use crate::sp::SignMode;
    use samael::crypto::{CertificateDer, Crypto, CryptoProvider, ReduceMode};

    fn credentials(tag: &str) -> (IdpCredentials, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("castellan-saml-resp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (
            IdpCredentials::load_or_generate(&dir, None, "idp").unwrap(),
            dir,
        )
    }

    fn response_for(sp: &ServiceProvider, creds: &IdpCredentials) -> String {
        let mut attributes = Attributes::new();
        attributes.insert("mail".into(), vec!["u@example.org".into()]);
        // Every character canonical XML escapes or keeps, in text and in
        // attributes: the signature covers the bytes as written.
        attributes.insert(
            "we\"i>r&d\t".into(),
            vec!["a<b&\"c'd>e\tf\ng\rh é\u{1}".into(), "x".into()],
        );
        let ctx = ResponseContext {
            idp_entity_id: "https://idp.example/idp?a=1&b='2'",
            sp,
            acs_url: "https://sp.example/acs",
            in_response_to: Some("_req1\"<>&'\n"),
            now_ms: 1_764_084_646_000,
            skew_ms: 60_000,
            ttl_ms: 300_000,
        };
        let subject = Subject {
            name_id: "u",
            name_id_format: nameid::UNSPECIFIED,
            attributes: &attributes,
            authn_instant: 1_764_084_600_000,
            session_index: "S1",
            authn_context_class: crate::authn_context::PASSWORD_PROTECTED_TRANSPORT,
        };
        success(&ctx, &subject, creds).unwrap()
    }

    #[test]
    fn signatures_verify_and_cover_what_is_used() {
        let (creds, dir) = credentials("sign");
        let cert = [CertificateDer::from(creds.cert_der.clone())];
        for mode in [SignMode::Assertion, SignMode::Response, SignMode::Both] {
            let mut r = registration();
            r.sign = mode;
            let sp = ServiceProvider::from_metadata(METADATA, r).unwrap();
            let xml = response_for(&sp, &creds);
            assert_eq!(
                xml.matches("<ds:Signature xmlns").count(),
                usize::from(mode.assertion()) + usize::from(mode.response())
            );
            let signed =
                Crypto::reduce_xml_to_signed(&xml, &cert, ReduceMode::ValidateAndMarkNoAncestors)
                    .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
            assert!(signed.contains(">u</saml:NameID>"), "{mode:?}");
            assert!(signed.contains("a&lt;b&amp;"), "values are escaped");
            assert!(!xml.contains("a<b"), "never raw markup");
            // A changed value breaks the signature.
            let tampered = xml.replace(">u</saml:NameID>", ">admin</saml:NameID>");
            assert!(Crypto::reduce_xml_to_signed(
                &tampered,
                &cert,
                ReduceMode::ValidateAndMarkNoAncestors
            )
            .is_err());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn encrypted_assertions_decrypt_with_the_sp_key() {
        let (creds, dir) = credentials("enc");
        // The SP's key pair: its certificate goes into the metadata.
        let (sp_creds, sp_dir) = credentials("enc-sp");
        let sp_key = openssl::pkey::PKey::private_key_from_pem(
            &std::fs::read(sp_dir.join(crate::keys::KEY_FILE)).unwrap(),
        )
        .unwrap();
        let metadata = METADATA.replace(
            "<md:SingleLogoutService",
            &format!(
                "<md:KeyDescriptor use=\"encryption\"><ds:KeyInfo xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor><md:SingleLogoutService",
                sp_creds.cert_base64
            ),
        );
        let mut r = registration();
        r.encrypt = true;
        let sp = ServiceProvider::from_metadata(&metadata, r).unwrap();
        let xml = response_for(&sp, &creds);
        assert!(!xml.contains("u@example.org"), "no attribute in clear");
        let values: Vec<&str> = xml
            .split("<xenc:CipherValue>")
            .skip(1)
            .map(|s| s.split('<').next().unwrap())
            .collect();
        let wrapped = STANDARD.decode(values[0]).unwrap();
        let data = STANDARD.decode(values[1]).unwrap();
        let mut d = openssl::encrypt::Decrypter::new(&sp_key).unwrap();
        d.set_rsa_padding(Padding::PKCS1_OAEP).unwrap();
        let mut key = vec![0u8; d.decrypt_len(&wrapped).unwrap()];
        let n = d.decrypt(&wrapped, &mut key).unwrap();
        key.truncate(n);
        let (iv, rest) = data.split_at(12);
        let (ct, tag) = rest.split_at(rest.len() - 16);
        let plain =
            openssl::symm::decrypt_aead(Cipher::aes_256_gcm(), &key, Some(iv), &[], ct, tag)
                .unwrap();
        let assertion = String::from_utf8(plain).unwrap();
        assert!(assertion.starts_with("<saml:Assertion") && assertion.contains("u@example.org"));
        // Still signed inside.
        let cert = [CertificateDer::from(creds.cert_der.clone())];
        Crypto::reduce_xml_to_signed(&assertion, &cert, ReduceMode::ValidateAndMarkNoAncestors)
            .unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(sp_dir).unwrap();
    }

    #[test]
    fn error_statuses_nest_second_level_codes() {
        assert!(status_element(status::NO_PASSIVE, None).contains(&format!(
            "<samlp:StatusCode Value=\"{}\"><samlp:StatusCode Value=\"{}\"></samlp:StatusCode>",
            status::RESPONDER,
            status::NO_PASSIVE
        )));
        assert!(status_element(status::REQUESTER, Some("x<y")).contains("x&lt;y"));
    }
}
