//! Ticket identifiers: a type prefix and about 190 bits from a CSPRNG, in
//! letters and digits only — the alphabet every CAS client accepts
//! (mod_auth_cas rejects anything beyond `[A-Za-z0-9.-]`).
//!
//! Tickets that belong to an SSO session (ST, PT, PGT) end with the session's
//! routing tag, so that a shared store can keep all of a session's keys
//! together (one Redis Cluster slot) and reach the session from a ticket in
//! one step. The tag is random and separate from the session id's secret
//! part: showing it to an application reveals nothing of the session id.

use rand::distr::{Alphanumeric, SampleString};

/// Characters of randomness in every identifier: 32 of 62 letters and
/// digits, about 190 bits (above the 128 required).
const RANDOM_CHARS: usize = 32;
/// A session's routing tag: 16 characters, about 95 bits (unique among any
/// number of live sessions).
pub const TAG_CHARS: usize = 16;

fn push_random(id: &mut String, chars: usize) {
    // ThreadRng is a ChaCha-based CSPRNG seeded and periodically reseeded
    // from the OS; Alphanumeric samples the 62 characters uniformly.
    Alphanumeric.append_string(&mut rand::rng(), id, chars);
}

/// A new identifier such as `LF-1-kq3...`; the `1` is the id format version.
pub fn new_ticket_id(prefix: &str) -> String {
    ticket_id_with_room(prefix, 0)
}

/// A new id with room for `more` bytes after it (a tag: no reallocation).
fn ticket_id_with_room(prefix: &str, more: usize) -> String {
    let mut id = String::with_capacity(prefix.len() + 3 + RANDOM_CHARS + more);
    id.push_str(prefix);
    id.push_str("-1-");
    push_random(&mut id, RANDOM_CHARS);
    id
}

/// A new SSO session id, `TGT-1-<secret>-<tag>`.
pub fn new_session_id(prefix: &str) -> String {
    let mut id = ticket_id_with_room(prefix, 1 + TAG_CHARS);
    id.push('-');
    push_random(&mut id, TAG_CHARS);
    id
}

/// A new id for a ticket of the session `session_id`, carrying its tag;
/// `None` when `session_id` has no tag (it is not a session id).
pub fn new_session_ticket_id(prefix: &str, session_id: &str) -> Option<String> {
    let tag = session_tag(session_id)?;
    let mut id = ticket_id_with_room(prefix, 1 + tag.len());
    id.push('-');
    id.push_str(tag);
    Some(id)
}

fn random_part<'a>(id: &'a str, prefix: &str) -> Option<&'a str> {
    id.strip_prefix(prefix)?.strip_prefix("-1-")
}

fn is_id_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// True when `id` has the shape of an identifier this server could have made
/// with `prefix` (with or without a session tag); a cheap filter before any
/// store lookup.
pub fn is_well_formed(id: &str, prefix: &str) -> bool {
    let Some(rest) = random_part(id, prefix) else {
        return false;
    };
    let (random, tag) = match rest.split_at_checked(RANDOM_CHARS) {
        Some((random, "")) => (random, None),
        Some((random, tagged)) => match tagged.strip_prefix('-') {
            Some(tag) if tag.len() == TAG_CHARS => (random, Some(tag)),
            _ => return false,
        },
        None => return false,
    };
    random.bytes().all(is_id_char) && tag.is_none_or(|t| t.bytes().all(is_id_char))
}

/// The routing tag of a session id or of a session's ticket.
pub fn session_tag(id: &str) -> Option<&str> {
    let (_, rest) = id.split_once("-1-")?;
    let (random, tagged) = rest.split_at_checked(RANDOM_CHARS)?;
    let tag = tagged.strip_prefix('-')?;
    (tag.len() == TAG_CHARS && random.bytes().all(is_id_char) && tag.bytes().all(is_id_char))
        .then_some(tag)
}

/// The store key of a half-done step's id (a second factor, a consent):
/// ids are ours, `prefix` then URL-safe random characters; anything else
/// a browser sends has no key.
pub(crate) fn step_key(id: &str, prefix: &str, namespace: &str) -> Option<String> {
    let well_formed = id.len() <= 80
        && id.starts_with(prefix)
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| format!("{namespace}{id}"))
}

/// Whether the browser presenting a step is the one it was made for,
/// compared in constant time.
pub(crate) fn same_browser(expected: &str, presented: &str) -> bool {
    bool::from(subtle::ConstantTimeEq::ct_eq(
        expected.as_bytes(),
        presented.as_bytes(),
    ))
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
        assert!(!is_well_formed(
            "ST-1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_a",
            "ST"
        ));
        assert!(!is_well_formed(
            "ST-1-ééééééééééééééééaaaaaaaaaaaaaaaa",
            "ST"
        ));
    }

    #[test]
    fn ids_use_only_letters_digits_and_dashes() {
        for _ in 0..200 {
            let tgt = new_session_id("TGT");
            let st = new_session_ticket_id("ST", &tgt).unwrap();
            for id in [tgt, st] {
                assert!(
                    id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'),
                    "{id}"
                );
            }
        }
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
