//! Ticket identifiers: a type prefix and 192 bits from a CSPRNG, URL-safe.
//!
//! Tickets that belong to an SSO session (ST, PT, PGT) end with the session's
//! routing tag, so that a shared store can keep all of a session's keys
//! together (one Redis Cluster slot) and reach the session from a ticket in
//! one step. The tag is random and separate from the session id's secret
//! part: showing it to an application reveals nothing of the session id.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;

/// Bytes of randomness in every identifier (192 bits, above the 128 required).
const RANDOM_BYTES: usize = 24;
const RANDOM_CHARS: usize = 32;
/// A session's routing tag: 12 random bytes (96 bits, unique among any
/// number of live sessions), 16 characters.
const TAG_BYTES: usize = 12;
pub const TAG_CHARS: usize = 16;

fn push_random(id: &mut String, bytes: usize) {
    let mut buf = [0u8; RANDOM_BYTES];
    // ThreadRng is a ChaCha-based CSPRNG seeded and periodically reseeded from the OS.
    rand::rng().fill_bytes(&mut buf[..bytes]);
    URL_SAFE_NO_PAD.encode_string(&buf[..bytes], id);
}

/// A new identifier such as `LF-1-kq3...`; the `1` is the id format version.
pub fn new_ticket_id(prefix: &str) -> String {
    let mut id = String::with_capacity(prefix.len() + 3 + RANDOM_CHARS);
    id.push_str(prefix);
    id.push_str("-1-");
    push_random(&mut id, RANDOM_BYTES);
    id
}

/// A new SSO session id, `TGT-1-<secret>-<tag>`.
pub fn new_session_id(prefix: &str) -> String {
    let mut id = new_ticket_id(prefix);
    id.push('-');
    push_random(&mut id, TAG_BYTES);
    id
}

/// A new id for a ticket of the session `session_id`, carrying its tag;
/// `None` when `session_id` has no tag (it is not a session id).
pub fn new_session_ticket_id(prefix: &str, session_id: &str) -> Option<String> {
    let tag = session_tag(session_id)?;
    let mut id = new_ticket_id(prefix);
    id.push('-');
    id.push_str(tag);
    Some(id)
}

fn random_part<'a>(id: &'a str, prefix: &str) -> Option<&'a str> {
    id.strip_prefix(prefix)?.strip_prefix("-1-")
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// True when `id` has the shape of an identifier this server could have made
/// with `prefix` (with or without a session tag); a cheap filter before any
/// store lookup.
pub fn is_well_formed(id: &str, prefix: &str) -> bool {
    let Some(rest) = random_part(id, prefix) else {
        return false;
    };
    let shape_ok = rest.len() == RANDOM_CHARS
        || (rest.len() == RANDOM_CHARS + 1 + TAG_CHARS && rest.as_bytes()[RANDOM_CHARS] == b'-');
    shape_ok && rest.bytes().all(is_id_char)
}

/// The routing tag of a session id or of a session's ticket.
pub fn session_tag(id: &str) -> Option<&str> {
    let (_, rest) = id.split_once("-1-")?;
    if rest.len() == RANDOM_CHARS + 1 + TAG_CHARS
        && rest.as_bytes()[RANDOM_CHARS] == b'-'
        && rest.bytes().all(is_id_char)
    {
        Some(&rest[RANDOM_CHARS + 1..])
    } else {
        None
    }
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
    fn session_tickets_carry_the_session_tag_but_not_its_secret() {
        let tgt = new_session_id("TGT");
        assert!(is_well_formed(&tgt, "TGT"));
        let st = new_session_ticket_id("ST", &tgt).unwrap();
        assert!(is_well_formed(&st, "ST"));
        assert_eq!(session_tag(&st), session_tag(&tgt));
        assert_eq!(session_tag(&tgt).unwrap().len(), TAG_CHARS);
        let secret = &tgt[6..6 + RANDOM_CHARS];
        assert!(!st.contains(secret));
        assert_eq!(new_session_ticket_id("ST", &new_ticket_id("TGT")), None);
        assert_eq!(session_tag("ST-1-x"), None);
    }

    #[test]
    fn redaction_keeps_only_a_prefix() {
        let id = new_ticket_id("TGT");
        let r = redact(&id);
        assert!(r.len() < id.len());
        assert!(!r.contains(&id[10..]));
    }
}
