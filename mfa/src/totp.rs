//! TOTP (RFC 6238): SHA-1, 6 digits, 30-second steps, as every
//! authenticator app reads an `otpauth://` URI by default.

use crate::MfaError;
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Secret, TOTP};

pub const DIGITS: usize = 6;
pub const STEP_SECONDS: u64 = 30;
/// 160 bits, the HMAC-SHA1 block's worth RFC 4226 §4 recommends.
const SECRET_BYTES: usize = 20;

/// What the enrolment page shows; nothing is saved yet.
#[derive(Clone)]
pub struct TotpEnrolment {
    /// Base32 (RFC 4648, no padding).
    pub secret: String,
    /// `otpauth://totp/ISSUER:USER?secret=...&issuer=ISSUER&...`
    pub uri: String,
    /// An inline `<svg>` of the URI as a QR code.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrolment").finish_non_exhaustive()
    }
}

pub(crate) fn new_secret() -> [u8; SECRET_BYTES] {
    // The OS random source failing is not a state to serve logins in.
    crate::key::random().expect("the operating system's random source")
}

pub(crate) fn encode_secret(secret: &[u8]) -> String {
    Secret::Raw(secret.to_vec()).to_encoded().to_string()
}

/// A secret as enrolment handed it out (base32); spaces and case tolerated.
pub(crate) fn decode_secret(b32: &str) -> Result<Vec<u8>, MfaError> {
    let bad = || MfaError::InvalidInput("not a TOTP secret".into());
    if b32.len() > 256 {
        return Err(bad());
    }
    let cleaned: String = b32
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '=')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let bytes = Secret::Encoded(cleaned).to_bytes().map_err(|_| bad())?;
    // RFC 4226 §4: at least 128 bits.
    if !(16..=64).contains(&bytes.len()) {
        return Err(bad());
    }
    Ok(bytes)
}

/// RFC 3986 unreserved characters stay, everything else is %-encoded.
fn percent(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Key URI format (google-authenticator wiki): `secret` first, then
/// `issuer` (also the label's prefix) and the parameters, spelled out even
/// though they are the defaults.
pub(crate) fn uri(issuer: &str, user: &str, secret_b32: &str) -> String {
    let issuer = percent(issuer);
    format!(
        "otpauth://totp/{issuer}:{}?secret={secret_b32}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        percent(user)
    )
}

/// An inline SVG (no XML declaration, colours as attributes, no style).
pub(crate) fn qr_svg(uri: &str) -> String {
    use qrcode::render::svg;
    match qrcode::QrCode::with_error_correction_level(uri.as_bytes(), qrcode::EcLevel::M) {
        Ok(code) => {
            let image = code
                .render::<svg::Color>()
                .min_dimensions(200, 200)
                .quiet_zone(true)
                .build();
            match image.find("<svg") {
                Some(i) => image[i..].to_owned(),
                None => image,
            }
        }
        // Only a URI too long for any QR version: the page still shows the text.
        Err(_) => String::new(),
    }
}

pub(crate) fn step(now_unix: u64) -> u64 {
    now_unix / STEP_SECONDS
}

fn generator(secret: &[u8]) -> TOTP {
    TOTP::new_unchecked(Algorithm::SHA1, DIGITS, 1, STEP_SECONDS, secret.to_vec())
}

/// A typed code as the digits it should be: spaces dropped.
pub(crate) fn digits(code: &str) -> Option<String> {
    let d: String = code.chars().filter(|c| !c.is_whitespace()).collect();
    (d.len() == DIGITS && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

/// The latest step of previous, current and next whose code is `code`
/// (compared in constant time; every step of the window is computed).
pub(crate) fn matching_step(secret: &[u8], code: &str, now_unix: u64) -> Option<u64> {
    let generator = generator(secret);
    let current = step(now_unix);
    let mut found: Option<u64> = None;
    for s in [current.saturating_sub(1), current, current + 1] {
        let expected = generator.generate(s * STEP_SECONDS);
        if bool::from(expected.as_bytes().ct_eq(code.as_bytes())) {
            found = Some(found.map_or(s, |f| f.max(s)));
        }
    }
    found
}

/// The code of `secret` at a time: for tests and benches.
pub fn code_at(secret_b32: &str, unix: u64) -> Option<String> {
    decode_secret(secret_b32)
        .ok()
        .map(|s| generator(&s).generate(unix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_sha1_vectors() {
        // RFC 6238 appendix B, the SHA-1 seed, last 6 of the 8 digits.
        let seed = b"12345678901234567890";
        let g = generator(seed);
        for (t, code) in [
            (59u64, "287082"),
            (1111111109, "081804"),
            (1111111111, "050471"),
            (1234567890, "005924"),
            (2000000000, "279037"),
            (20000000000, "353130"),
        ] {
            assert_eq!(g.generate(t), code, "t={t}");
        }
    }

    #[test]
    fn window_is_one_step_each_way() {
        let secret = new_secret();
        let now = 1_700_000_015;
        let g = generator(&secret);
        for (offset, accepted) in [
            (-60i64, false),
            (-30, true),
            (0, true),
            (30, true),
            (60, false),
        ] {
            let t = (now as i64 + offset) as u64;
            let code = g.generate(t);
            let m = matching_step(&secret, &code, now);
            if accepted {
                assert_eq!(m, Some(step(t)), "offset {offset}");
            } else {
                // A code two steps away may still equal a code of the
                // window by chance (1 in 10^6 per step): then it matches that step.
                assert_ne!(m, Some(step(t)), "offset {offset}");
            }
        }
    }

    #[test]
    fn secrets_round_trip_and_garbage_is_refused() {
        let s = new_secret();
        let b32 = encode_secret(&s);
        assert_eq!(b32.len(), 32);
        assert_eq!(decode_secret(&b32).unwrap(), s);
        assert_eq!(decode_secret(&b32.to_lowercase()).unwrap(), s);
        for bad in ["", "!!!!", "AAAA", &"A".repeat(300)] {
            assert!(decode_secret(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn uri_has_secret_first_and_escapes_the_label() {
        let u = uri("Castellan", "jean dupont@example.org", "ABCDEF");
        assert_eq!(
            u,
            "otpauth://totp/Castellan:jean%20dupont%40example.org?secret=ABCDEF&issuer=Castellan&algorithm=SHA1&digits=6&period=30"
        );
        let u = uri("My IdP", "a:b&c", "X");
        assert!(u.starts_with("otpauth://totp/My%20IdP:a%3Ab%26c?secret=X&issuer=My%20IdP&"));
    }

    #[test]
    fn qr_is_a_bare_svg_without_style() {
        let svg = qr_svg(&uri("Castellan", "alice", &encode_secret(&new_secret())));
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.ends_with("</svg>"));
        assert!(!svg.contains("<?xml"));
        assert!(!svg.contains("style"));
    }

    #[test]
    fn typed_codes_are_normalised() {
        assert_eq!(digits(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(digits("12345"), None);
        assert_eq!(digits("12345a"), None);
        assert_eq!(digits("１２３４５６"), None);
    }
}
