//! Ticket identifiers: a type prefix and 192 bits from a CSPRNG, URL-safe.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;

/// Bytes of randomness in every identifier (192 bits, above the 128 required).
const RANDOM_BYTES: usize = 24;

/// A new identifier such as `ST-1-kq3...`; the `1` is the id format version.
pub fn new_ticket_id(prefix: &str) -> String {
    let mut bytes = [0u8; RANDOM_BYTES];
    // ThreadRng is a ChaCha-based CSPRNG seeded and periodically reseeded from the OS.
    rand::rng().fill_bytes(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + 3 + 32);
    id.push_str(prefix);
    id.push_str("-1-");
    URL_SAFE_NO_PAD.encode_string(bytes, &mut id);
    id
}

/// True when `id` has the shape of an identifier this server could have made
/// with `prefix`; a cheap filter before any store lookup.
pub fn is_well_formed(id: &str, prefix: &str) -> bool {
    let Some(rest) = id.strip_prefix(prefix).and_then(|r| r.strip_prefix("-1-")) else {
        return false;
    };
    rest.len() == 32
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A shortened form for logs: never a whole ticket id in a log line.
pub fn redact(id: &str) -> String {
    let cut = id
        .char_indices()
        .nth(10)
        .map(|(i, _)| i)
        .unwrap_or(id.len());
    format!("{}…", &id[..cut])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_prefixed_unique_and_well_formed() {
        let a = new_ticket_id("ST");
        let b = new_ticket_id("ST");
        assert_ne!(a, b);
        assert!(a.starts_with("ST-1-"));
        assert!(is_well_formed(&a, "ST"));
        assert!(!is_well_formed(&a, "PT"));
        assert!(!is_well_formed("ST-1-short", "ST"));
        assert!(!is_well_formed(
            "ST-1-<script>aaaaaaaaaaaaaaaaaaaaaaaaaa",
            "ST"
        ));
    }

    #[test]
    fn redaction_keeps_only_a_prefix() {
        let id = new_ticket_id("TGT");
        let r = redact(&id);
        assert!(r.len() < id.len());
        assert!(!r.contains(&id[10..]));
    }
}
