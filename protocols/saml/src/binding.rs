//! The HTTP-Redirect and HTTP-POST bindings (SAML Bindings §3.4, §3.5):
//! decoding with size limits, and the Redirect binding's query signatures,
//! which are computed over the URL-encoded parameters exactly as sent.

use crate::keys::IdpCredentials;
use crate::SamlError;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use openssl::hash::MessageDigest;
use openssl::sign::Verifier;
use openssl::x509::X509;
use std::io::Read as _;

/// Largest decoded SAML message accepted.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

pub const RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
pub const RSA_SHA1: &str = "http://www.w3.org/2000/09/xmldsig#rsa-sha1";

fn b64(text: &str) -> Result<Vec<u8>, SamlError> {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if compact.len() > MAX_MESSAGE_BYTES * 4 / 3 + 4 {
        return Err(SamlError::untrusted("the SAML message is too large"));
    }
    STANDARD
        .decode(compact)
        .map_err(|_| SamlError::untrusted("the SAML message is not base64"))
}

fn utf8(bytes: Vec<u8>) -> Result<String, SamlError> {
    String::from_utf8(bytes).map_err(|_| SamlError::untrusted("the SAML message is not UTF-8"))
}

/// A Redirect-binding message: base64 of raw DEFLATE, inflated to at most
/// [`MAX_MESSAGE_BYTES`] (a deflate bomb stops there).
pub fn decode_redirect(value: &str) -> Result<String, SamlError> {
    let compressed = b64(value)?;
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(&compressed[..])
        .take(MAX_MESSAGE_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| SamlError::untrusted("the SAML message is not DEFLATE data"))?;
    if out.len() > MAX_MESSAGE_BYTES {
        return Err(SamlError::untrusted("the SAML message is too large"));
    }
    utf8(out)
}

/// A POST-binding message: base64 of the XML.
pub fn decode_post(value: &str) -> Result<String, SamlError> {
    let bytes = b64(value)?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(SamlError::untrusted("the SAML message is too large"));
    }
    utf8(bytes)
}

/// The query parameters as sent (still URL-encoded).
fn raw_params(query: &str) -> Vec<(&str, &str)> {
    query.split('&').filter_map(|p| p.split_once('=')).collect()
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Outcome of checking a Redirect-binding signature.
#[derive(Debug, PartialEq, Eq)]
pub enum QuerySignature {
    Absent,
    Valid,
    Invalid,
}

/// Checks `Signature` over `{message}=…&RelayState=…&SigAlg=…` (§3.4.4.1)
/// against any of `certs` (DER).
pub fn verify_query(query: &str, message: &str, certs: &[Vec<u8>]) -> QuerySignature {
    let params = raw_params(query);
    let get = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let (Some(sig_alg), Some(signature)) = (get("SigAlg"), get("Signature")) else {
        return QuerySignature::Absent;
    };
    let Some(msg) = get(message) else {
        return QuerySignature::Invalid;
    };
    let mut octets = format!("{message}={msg}");
    if let Some(relay) = get("RelayState") {
        octets.push_str("&RelayState=");
        octets.push_str(relay);
    }
    octets.push_str("&SigAlg=");
    octets.push_str(sig_alg);
    let digest = match url_decode(sig_alg).as_str() {
        RSA_SHA256 => MessageDigest::sha256(),
        RSA_SHA1 => MessageDigest::sha1(),
        _ => return QuerySignature::Invalid,
    };
    let Ok(signature) = STANDARD.decode(url_decode(signature)) else {
        return QuerySignature::Invalid;
    };
    for der in certs {
        let ok = (|| -> Result<bool, openssl::error::ErrorStack> {
            let key = X509::from_der(der)?.public_key()?;
            let mut v = Verifier::new(digest, &key)?;
            v.update(octets.as_bytes())?;
            v.verify(&signature)
        })();
        if matches!(ok, Ok(true)) {
            return QuerySignature::Valid;
        }
    }
    QuerySignature::Invalid
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A signed Redirect-binding query string carrying `xml` as `message`.
pub fn encode_redirect(
    message: &str,
    xml: &str,
    relay_state: Option<&str>,
    credentials: &IdpCredentials,
) -> Result<String, SamlError> {
    use std::io::Write as _;
    let mut deflater =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflater
        .write_all(xml.as_bytes())
        .map_err(|e| SamlError::Crypto(e.to_string()))?;
    let compressed = deflater
        .finish()
        .map_err(|e| SamlError::Crypto(e.to_string()))?;
    let mut query = format!("{message}={}", enc(&STANDARD.encode(compressed)));
    if let Some(r) = relay_state {
        query.push_str("&RelayState=");
        query.push_str(&enc(r));
    }
    query.push_str("&SigAlg=");
    query.push_str(&enc(RSA_SHA256));
    let signature = credentials.sign_query(query.as_bytes())?;
    query.push_str("&Signature=");
    query.push_str(&enc(&STANDARD.encode(signature)));
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirect_messages_round_trip_and_verify() {
        let dir =
            std::env::temp_dir().join(format!("castellan-saml-binding-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let creds = IdpCredentials::load_or_generate(&dir, None, "idp").unwrap();
        let query = encode_redirect("SAMLResponse", "<x>é</x>", Some("r&s"), &creds).unwrap();
        let value = raw_params(&query)[0].1;
        assert_eq!(decode_redirect(&url_decode(value)).unwrap(), "<x>é</x>");
        let certs = vec![creds.cert_der.clone()];
        assert_eq!(
            verify_query(&query, "SAMLResponse", &certs),
            QuerySignature::Valid
        );
        // Any change to a signed parameter breaks it.
        let tampered = query.replace("RelayState=r%26s", "RelayState=r%26t");
        assert_eq!(
            verify_query(&tampered, "SAMLResponse", &certs),
            QuerySignature::Invalid
        );
        let unsigned = query.split("&SigAlg").next().unwrap();
        assert_eq!(
            verify_query(unsigned, "SAMLResponse", &certs),
            QuerySignature::Absent
        );
        let other = IdpCredentials::load_or_generate(&dir.join("x"), None, "idp");
        assert!(other.is_err(), "no such dir");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn deflate_bombs_stop_at_the_limit() {
        use std::io::Write as _;
        let mut d = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        d.write_all(&vec![b'a'; MAX_MESSAGE_BYTES * 4]).unwrap();
        let bomb = STANDARD.encode(d.finish().unwrap());
        assert!(decode_redirect(&bomb).is_err());
    }
}
