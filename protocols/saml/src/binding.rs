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
    let not_deflate = || SamlError::untrusted("the SAML message is not DEFLATE data");
    let mut out = Vec::with_capacity((compressed.len() * 4).min(MAX_MESSAGE_BYTES) + 1);
    INFLATE.with_borrow_mut(|inflate| {
        inflate.reset(false);
        loop {
            let read = usize::try_from(inflate.total_in()).map_err(|_| not_deflate())?;
            let rest = compressed.get(read..).ok_or_else(not_deflate)?;
            let written = out.len();
            let status = inflate
                .decompress_vec(rest, &mut out, flate2::FlushDecompress::None)
                .map_err(|_| not_deflate())?;
            if out.len() > MAX_MESSAGE_BYTES {
                return Err(SamlError::untrusted("the SAML message is too large"));
            }
            let consumed = usize::try_from(inflate.total_in()).map_err(|_| not_deflate())? > read;
            if status == flate2::Status::StreamEnd || (!consumed && out.len() == written) {
                // The end of the stream, or of the input: a stream without
                // its final block gives what it holds, as a reader would.
                return Ok(());
            }
            if out.len() == out.capacity() {
                out.reserve((MAX_MESSAGE_BYTES + 1 - out.len()).min(out.capacity()));
            }
        }
    })?;
    utf8(out)
}

thread_local! {
    /// One raw-inflate state per thread, reset for each message: a new
    /// decoder allocates and initialises its window and tables (~40 KiB)
    /// for an AuthnRequest of a few hundred bytes.
    static INFLATE: std::cell::RefCell<flate2::Decompress> =
        std::cell::RefCell::new(flate2::Decompress::new(false));
}

/// A POST-binding message: base64 of the XML.
pub fn decode_post(value: &str) -> Result<String, SamlError> {
    let bytes = b64(value)?;
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(SamlError::untrusted("the SAML message is too large"));
    }
    utf8(bytes)
}

/// Longest `RelayState` (and IdP-initiated `target`) accepted, in bytes
/// once decoded. Bindings §3.4.3/§3.5.3 say it MUST NOT exceed 80 bytes,
/// but SPs send more in practice: Shibboleth SP's short `ss:mem:<hex>`
/// handles fit, pysaml2 and mod_auth_mellon send the target URL itself. 256
/// bytes takes those URLs while a pending request (kept in the store for
/// the whole login) stays small.
pub const MAX_RELAY_STATE_BYTES: usize = 256;

/// Refuses a RelayState (or `target`) over [`MAX_RELAY_STATE_BYTES`].
pub fn check_relay_state(value: &str) -> Result<(), SamlError> {
    if value.len() > MAX_RELAY_STATE_BYTES {
        return Err(SamlError::untrusted("The RelayState is too long."));
    }
    Ok(())
}

/// One `name=value` of a query string or form body: the octets as sent
/// and the decoded name and value.
#[derive(Debug)]
struct Parameter<'a> {
    raw: &'a str,
    name: String,
    value: String,
}

/// The parameters of a binding message (a Redirect query string or a POST
/// form body), parsed once: what the handler reads and what a query
/// signature covers are the very same parameters.
///
/// A name that appears twice, compared after decoding (`SAMLRequest` and
/// `SAML%52equest` are one name), is refused: otherwise a signature could
/// be checked over one copy while the other is acted upon.
#[derive(Debug)]
pub struct BindingParameters<'a> {
    params: Vec<Parameter<'a>>,
}

impl<'a> BindingParameters<'a> {
    pub fn parse(raw: &'a str) -> Result<Self, SamlError> {
        let mut params: Vec<Parameter<'a>> = Vec::new();
        for segment in raw.split('&').filter(|s| !s.is_empty()) {
            let Some((name, value)) = url::form_urlencoded::parse(segment.as_bytes()).next() else {
                continue;
            };
            if params.iter().any(|p| p.name == name) {
                let shown: String = name.chars().take(40).collect();
                return Err(SamlError::untrusted(format!(
                    "The parameter {shown} appears more than once."
                )));
            }
            params.push(Parameter {
                raw: segment,
                name: name.into_owned(),
                value: value.into_owned(),
            });
        }
        Ok(Self { params })
    }

    /// A form body; one that is not UTF-8 was not URL-encoded.
    pub fn parse_form(body: &'a [u8]) -> Result<Self, SamlError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| SamlError::untrusted("The form is not URL-encoded."))?;
        Self::parse(text)
    }

    fn find(&self, name: &str) -> Option<&Parameter<'a>> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The decoded value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).map(|p| p.value.as_str())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// The RelayState, refused when over [`MAX_RELAY_STATE_BYTES`].
    pub fn relay_state(&self) -> Result<Option<&str>, SamlError> {
        let relay = self.get("RelayState");
        if let Some(r) = relay {
            check_relay_state(r)?;
        }
        Ok(relay)
    }

    /// Checks `Signature` over `{message}=…&RelayState=…&SigAlg=…`
    /// (§3.4.4.1), the octets of those parameters exactly as sent, against
    /// any of `certs` (DER).
    pub fn verify_signature(&self, message: &str, certs: &[Vec<u8>]) -> QuerySignature {
        let (Some(sig_alg), Some(signature)) = (self.find("SigAlg"), self.find("Signature")) else {
            return QuerySignature::Absent;
        };
        let Some(msg) = self.find(message) else {
            return QuerySignature::Invalid;
        };
        let mut octets = msg.raw.to_owned();
        if let Some(relay) = self.find("RelayState") {
            octets.push('&');
            octets.push_str(relay.raw);
        }
        octets.push('&');
        octets.push_str(sig_alg.raw);
        let digest = match sig_alg.value.as_str() {
            RSA_SHA256 => MessageDigest::sha256(),
            RSA_SHA1 => MessageDigest::sha1(),
            _ => return QuerySignature::Invalid,
        };
        let Ok(signature) = STANDARD.decode(&signature.value) else {
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
}

/// Outcome of checking a Redirect-binding signature.
#[derive(Debug, PartialEq, Eq)]
pub enum QuerySignature {
    Absent,
    Valid,
    Invalid,
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

    fn credentials(tag: &str) -> (IdpCredentials, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "castellan-saml-binding-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        (
            IdpCredentials::load_or_generate(&dir, None, "idp").unwrap(),
            dir,
        )
    }

    fn verify(query: &str, message: &str, certs: &[Vec<u8>]) -> QuerySignature {
        BindingParameters::parse(query)
            .unwrap()
            .verify_signature(message, certs)
    }

    #[test]
    fn redirect_messages_round_trip_and_verify() {
        let (creds, dir) = credentials("rt");
        let query = encode_redirect("SAMLResponse", "<x>é</x>", Some("r&s"), &creds).unwrap();
        let params = BindingParameters::parse(&query).unwrap();
        assert_eq!(
            decode_redirect(params.get("SAMLResponse").unwrap()).unwrap(),
            "<x>é</x>"
        );
        assert_eq!(params.relay_state().unwrap(), Some("r&s"));
        let certs = vec![creds.cert_der.clone()];
        assert_eq!(
            params.verify_signature("SAMLResponse", &certs),
            QuerySignature::Valid
        );
        // Any change to a signed parameter breaks it.
        let tampered = query.replace("RelayState=r%26s", "RelayState=r%26t");
        assert_eq!(
            verify(&tampered, "SAMLResponse", &certs),
            QuerySignature::Invalid
        );
        let unsigned = query.split("&SigAlg").next().unwrap();
        assert_eq!(
            verify(unsigned, "SAMLResponse", &certs),
            QuerySignature::Absent
        );
        let other = IdpCredentials::load_or_generate(&dir.join("x"), None, "idp");
        assert!(other.is_err(), "no such dir");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_name_twice_after_decoding_is_refused() {
        for query in [
            "SAMLRequest=a&SAMLRequest=b",
            "SAML%52equest=forged&SAMLRequest=genuine&SigAlg=x&Signature=y",
            "SAMLRequest=genuine&SAML%52equest=forged",
            "SAMLResponse=a&SAMLRespons%65=b",
            "RelayState=a&Relay%53tate=https%3A%2F%2Fevil.test%2F",
            "SigAlg=a&Sig%41lg=b",
            "Signature=a&Signature",
            "a+b=1&a%20b=2",
        ] {
            let e = BindingParameters::parse(query).unwrap_err();
            assert!(
                e.to_string().contains("appears more than once"),
                "{query}: {e}"
            );
        }
        let form = BindingParameters::parse_form(b"SAMLRequest=PHg%2B&RelayState=r&RelayState=s");
        assert!(form.is_err());
        assert!(BindingParameters::parse_form(b"SAMLRequest=\xff").is_err());
        // Distinct names, empty segments and a name without a value are fine.
        let p = BindingParameters::parse("&SAMLRequest=a%2Bb+c&&RelayState&x=1=2").unwrap();
        assert_eq!(p.get("SAMLRequest"), Some("a+b c"));
        assert_eq!(p.get("RelayState"), Some(""));
        assert_eq!(p.get("x"), Some("1=2"));
        assert!(!p.contains("SAMLResponse"));
    }

    #[test]
    fn the_signature_covers_the_octets_as_sent() {
        let (creds, dir) = credentials("octets");
        let certs = vec![creds.cert_der.clone()];
        let query = encode_redirect("SAMLRequest", "<x>signed</x>", Some("a/b c"), &creds).unwrap();
        assert!(query.contains("RelayState=a%2Fb+c"), "{query}");
        assert_eq!(verify(&query, "SAMLRequest", &certs), QuerySignature::Valid);
        // The same decoded RelayState sent with other octets is not what was
        // signed.
        for variant in [
            "RelayState=a/b+c",
            "RelayState=a%2Fb%20c",
            "Relay%53tate=a%2Fb+c",
        ] {
            let changed = query.replace("RelayState=a%2Fb+c", variant);
            let p = BindingParameters::parse(&changed).unwrap();
            assert_eq!(p.get("RelayState"), Some("a/b c"), "{variant}");
            assert_eq!(
                p.verify_signature("SAMLRequest", &certs),
                QuerySignature::Invalid,
                "{variant}"
            );
        }
        // The message's name is signed too.
        let renamed = query.replacen("SAMLRequest=", "SAML%52equest=", 1);
        let p = BindingParameters::parse(&renamed).unwrap();
        assert!(p.get("SAMLRequest").is_some());
        assert_eq!(
            p.verify_signature("SAMLRequest", &certs),
            QuerySignature::Invalid
        );
        // A RelayState added to a query signed without one, or dropped from
        // one signed with it, breaks the signature.
        let bare = encode_redirect("SAMLRequest", "<x>signed</x>", None, &creds).unwrap();
        assert_eq!(verify(&bare, "SAMLRequest", &certs), QuerySignature::Valid);
        let added = format!("{bare}&RelayState=https%3A%2F%2Fevil.test%2F");
        assert_eq!(
            verify(&added, "SAMLRequest", &certs),
            QuerySignature::Invalid
        );
        let dropped = query.replace("&RelayState=a%2Fb+c", "");
        assert_eq!(
            verify(&dropped, "SAMLRequest", &certs),
            QuerySignature::Invalid
        );
        // Parameters the signature does not name may come in any order.
        let (head, signature) = query.split_once("&Signature=").unwrap();
        let reordered = format!("Signature={signature}&other=1&{head}");
        assert_eq!(
            verify(&reordered, "SAMLRequest", &certs),
            QuerySignature::Valid
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn relay_state_is_bounded() {
        let ok = "r".repeat(MAX_RELAY_STATE_BYTES);
        assert!(check_relay_state(&ok).is_ok());
        let long = format!("RelayState={ok}x");
        let p = BindingParameters::parse(&long).unwrap();
        assert!(p.relay_state().is_err());
        // Bytes, not characters.
        assert!(check_relay_state(&"é".repeat(MAX_RELAY_STATE_BYTES / 2 + 1)).is_err());
    }

    #[test]
    fn redirect_messages_inflate_one_after_another() {
        use std::io::Write as _;
        let deflated = |text: &str| {
            let mut d =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            d.write_all(text.as_bytes()).unwrap();
            d.finish().unwrap()
        };
        let long = "<a>".repeat(5000);
        for text in ["<samlp:AuthnRequest ID=\"_1\"/>", &long, "<b/>"] {
            let packed = deflated(text);
            assert_eq!(decode_redirect(&STANDARD.encode(&packed)).unwrap(), text);
            // Cut short, the stream gives what it holds or a clear error,
            // and the next message still inflates whole.
            let _ = decode_redirect(&STANDARD.encode(&packed[..packed.len() / 2]));
        }
        assert!(decode_redirect(&STANDARD.encode(b"\xff\xff\xff\xff")).is_err());
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
