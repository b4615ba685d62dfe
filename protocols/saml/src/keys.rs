//! The IdP's signing key and certificate: an operator's pair by path, or an
//! RSA-2048 key and a self-signed certificate generated in `data_dir` at
//! first start (nodes sharing a data_dir share them).

use crate::SamlError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use castellan_signing::RsaSha256;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::x509::{X509Name, X509};
use samael::crypto::{Crypto, CryptoProvider};
use std::path::{Path, PathBuf};

pub const KEY_FILE: &str = "saml-signing-key.pem";
pub const CERT_FILE: &str = "saml-signing-cert.pem";
pub const SECRET_FILE: &str = "saml-persistent-id-secret";

const DS_NS: &str = "http://www.w3.org/2000/09/xmldsig#";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";

pub struct IdpCredentials {
    pub cert_der: Vec<u8>,
    /// For metadata and KeyInfo.
    pub cert_base64: String,
    /// PKCS#1 DER, as xmlsec loads it.
    key_der: Vec<u8>,
    signer: RsaSha256,
}

fn io(path: &Path, e: std::io::Error) -> SamlError {
    SamlError::Credentials(format!("{}: {e}", path.display()))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SamlError> {
    use std::io::Write as _;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(path).map_err(|e| io(path, e))?;
    f.write_all(bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

fn self_signed(key: &PKey<Private>, common_name: &str) -> Result<X509, SamlError> {
    let mut name = X509Name::builder()?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    let name = name.build();
    let mut b = X509::builder()?;
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    let serial = serial.to_asn1_integer()?;
    b.set_serial_number(&serial)?;
    b.set_version(2)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    let not_before = Asn1Time::days_from_now(0)?;
    let not_after = Asn1Time::days_from_now(3650)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

impl IdpCredentials {
    /// The operator's key and certificate when both paths are given, else
    /// the pair in `data_dir`, generated when absent.
    pub fn load_or_generate(
        data_dir: &Path,
        configured: Option<(&Path, &Path)>,
        common_name: &str,
    ) -> Result<Self, SamlError> {
        let (key_path, cert_path): (PathBuf, PathBuf) = match configured {
            Some((k, c)) => (k.to_owned(), c.to_owned()),
            None => (data_dir.join(KEY_FILE), data_dir.join(CERT_FILE)),
        };
        if configured.is_none() && !key_path.exists() {
            let rsa = Rsa::generate(2048)?;
            let key = PKey::from_rsa(rsa)?;
            let cert = self_signed(&key, common_name)?;
            write_private(&key_path, &key.private_key_to_pem_pkcs8()?)?;
            std::fs::write(&cert_path, cert.to_pem()?).map_err(|e| io(&cert_path, e))?;
            tracing::info!(path = %key_path.display(), "SAML signing key and certificate generated");
        }
        let key_pem = std::fs::read(&key_path).map_err(|e| io(&key_path, e))?;
        let cert_pem = std::fs::read(&cert_path).map_err(|e| io(&cert_path, e))?;
        let key = PKey::private_key_from_pem(&key_pem)
            .map_err(|e| SamlError::Credentials(format!("{}: {e}", key_path.display())))?;
        let cert = X509::from_pem(&cert_pem)
            .map_err(|e| SamlError::Credentials(format!("{}: {e}", cert_path.display())))?;
        if !cert.public_key()?.public_eq(&key) {
            return Err(SamlError::Credentials(format!(
                "{} is not the certificate of {}",
                cert_path.display(),
                key_path.display()
            )));
        }
        let rsa = key
            .rsa()
            .map_err(|_| SamlError::Credentials("the SAML signing key must be RSA".into()))?;
        let cert_der = cert.to_der()?;
        Ok(Self {
            cert_base64: STANDARD.encode(&cert_der),
            cert_der,
            key_der: rsa.private_key_to_der()?,
            signer: RsaSha256::new(key),
        })
    }

    /// Signs the first `ds:Signature` template of `xml` (xmlsec, with `ID`
    /// attributes registered); returns the document without its XML
    /// declaration.
    pub fn sign_xml(&self, xml: &str) -> Result<String, SamlError> {
        let signed = Crypto::sign_xml(xml, &self.key_der)
            .map_err(|e| SamlError::Crypto(format!("signing: {e}")))?;
        Ok(strip_declaration(&signed).trim().to_owned())
    }

    /// RSA-SHA256 over the Redirect binding's signed octets.
    pub fn sign_query(&self, octets: &[u8]) -> Result<Vec<u8>, SamlError> {
        Ok(self.signer.sign(octets)?)
    }

    /// An enveloped signature over an element the IdP wrote in exclusive
    /// canonical form (exc-c14n: attributes sorted, namespaces declared
    /// where first used, no empty-element tags, [`crate::xml::text`] and
    /// [`crate::xml::attr`] escaping). `head` is the element up to where
    /// the signature goes (after its Issuer), `tail` the rest.
    ///
    /// Because the bytes written are the canonical form, the reference
    /// digest is one SHA-256 over `head` and `tail` (the enveloped-signature
    /// transform takes the Signature out), and the signature one RSA
    /// operation over the canonical `SignedInfo`: no parse, no generic
    /// canonicalisation, no key decoding per document. xmlsec, Shibboleth
    /// and pysaml2 verify what this writes (unit and end-to-end tests).
    pub fn sign_enveloped(&self, id: &str, head: &str, tail: &str) -> Result<String, SamlError> {
        let mut digest = openssl::sha::Sha256::new();
        digest.update(head.as_bytes());
        digest.update(tail.as_bytes());
        let digest = STANDARD.encode(digest.finish());
        // The canonical SignedInfo declares `ds` itself (it is the apex of
        // its canonicalisation); in the document the Signature declares it.
        let inner = format!(
            "<ds:CanonicalizationMethod Algorithm=\"{EXC_C14N}\"></ds:CanonicalizationMethod>\
<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"></ds:SignatureMethod>\
<ds:Reference URI=\"#{id}\"><ds:Transforms>\
<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"></ds:Transform>\
<ds:Transform Algorithm=\"{EXC_C14N}\"><ec:InclusiveNamespaces xmlns:ec=\"{EXC_C14N}\" PrefixList=\"xs\">\
</ec:InclusiveNamespaces></ds:Transform></ds:Transforms>\
<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"></ds:DigestMethod>\
<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference>"
        );
        let canonical = format!("<ds:SignedInfo xmlns:ds=\"{DS_NS}\">{inner}</ds:SignedInfo>");
        let value = STANDARD.encode(self.sign_query(canonical.as_bytes())?);
        let mut out = String::with_capacity(
            head.len() + tail.len() + inner.len() + value.len() + self.cert_base64.len() + 256,
        );
        out.push_str(head);
        out.push_str("<ds:Signature xmlns:ds=\"");
        out.push_str(DS_NS);
        out.push_str("\"><ds:SignedInfo>");
        out.push_str(&inner);
        out.push_str("</ds:SignedInfo><ds:SignatureValue>");
        out.push_str(&value);
        out.push_str("</ds:SignatureValue><ds:KeyInfo><ds:X509Data><ds:X509Certificate>");
        out.push_str(&self.cert_base64);
        out.push_str("</ds:X509Certificate></ds:X509Data></ds:KeyInfo></ds:Signature>");
        out.push_str(tail);
        Ok(out)
    }
}

pub fn strip_declaration(xml: &str) -> &str {
    let t = xml.trim_start();
    if t.starts_with("<?xml") {
        match t.find("?>") {
            Some(end) => &t[end + 2..],
            None => t,
        }
    } else {
        t
    }
}

/// The secret persistent NameIDs are derived from: configured, or generated
/// in `data_dir` at first start.
pub fn persistent_secret(data_dir: &Path, configured: Option<&str>) -> Result<Vec<u8>, SamlError> {
    if let Some(s) = configured {
        return Ok(s.as_bytes().to_vec());
    }
    let path = data_dir.join(SECRET_FILE);
    if !path.exists() {
        let bytes: [u8; 32] = rand::random();
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match write_private(&path, hex.as_bytes()) {
            Ok(()) => {}
            // Another node on the same data_dir wrote it first.
            Err(_) if path.exists() => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::read(&path).map_err(|e| io(&path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_are_reloaded_and_sign() {
        let dir = std::env::temp_dir().join(format!("castellan-saml-keys-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let a = IdpCredentials::load_or_generate(&dir, None, "idp.example").unwrap();
        let b = IdpCredentials::load_or_generate(&dir, None, "idp.example").unwrap();
        assert_eq!(a.cert_der, b.cert_der);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // Each signature, with a kept context or a new one, is RSA-SHA256
        // of its own octets under the certificate's key.
        let public = X509::from_der(&a.cert_der).unwrap().public_key().unwrap();
        for octets in [
            &b"SAMLRequest=a&SigAlg=b"[..],
            b"other",
            b"SAMLRequest=a&SigAlg=b",
        ] {
            let signature = b.sign_query(octets).unwrap();
            let mut verifier =
                openssl::sign::Verifier::new(MessageDigest::sha256(), &public).unwrap();
            verifier.update(octets).unwrap();
            assert!(verifier.verify(&signature).unwrap());
            let mut verifier =
                openssl::sign::Verifier::new(MessageDigest::sha256(), &public).unwrap();
            verifier.update(b"tampered").unwrap();
            assert!(!verifier.verify(&signature).unwrap());
        }
        let s1 = persistent_secret(&dir, None).unwrap();
        assert_eq!(s1, persistent_secret(&dir, None).unwrap());
        assert_eq!(s1.len(), 64);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
