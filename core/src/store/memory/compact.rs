//! Compact byte forms of what the memory store keeps for every session and
//! ticket: identifiers of this server's own shape packed at 6 bits a
//! character, and little-endian base-128 lengths.
//!
//! An id such as `TGT-1-<32 letters or digits>-<16>` (55 bytes) becomes 37:
//! a form byte naming its prefix and whether it carries a session tag, then
//! its 48 characters packed four into three bytes. Any other id (a test's,
//! another release's) is kept as it is, behind a form byte 0 and its length.

/// Prefixes packed ids may have; the form byte names one by its index.
const PREFIXES: [&str; 6] = ["TGT", "ST", "PT", "PGT", "PGTIOU", "LF"];
/// Characters of an id's random part, and of a session's tag.
const RANDOM: usize = 32;
const TAG: usize = 16;
/// The longest packed form: a form byte and 48 characters in 36 bytes.
pub(super) const MAX_PACKED: usize = 1 + (RANDOM + TAG) / 4 * 3;
/// The packed form of an id whose tag [`write_in`] leaves out.
pub(super) const ELIDED_LEN: usize = 1 + RANDOM / 4 * 3;

fn digit(c: u8) -> Option<u32> {
    match c {
        b'0'..=b'9' => Some(u32::from(c - b'0')),
        b'A'..=b'Z' => Some(u32::from(c - b'A') + 10),
        b'a'..=b'z' => Some(u32::from(c - b'a') + 36),
        _ => None,
    }
}

fn char_of(d: u32) -> Option<char> {
    let d = u8::try_from(d).ok()?;
    Some(char::from(match d {
        0..=9 => b'0' + d,
        10..=35 => b'A' + d - 10,
        36..=61 => b'a' + d - 36,
        _ => return None,
    }))
}

/// A form byte, the random characters, the session tag if any.
type Shape<'a> = (u8, &'a [u8], Option<&'a [u8]>);

/// The form byte and the characters to pack, when `id` has this server's shape.
fn shape(id: &str) -> Option<Shape<'_>> {
    let (index, prefix) = PREFIXES
        .iter()
        .enumerate()
        .find(|(_, p)| id.starts_with(**p) && id[p.len()..].starts_with("-1-"))?;
    let rest = &id.as_bytes()[prefix.len() + 3..];
    let (random, tag) = match rest.len() {
        RANDOM => (rest, None),
        n if n == RANDOM + 1 + TAG && rest[RANDOM] == b'-' => {
            (&rest[..RANDOM], Some(&rest[RANDOM + 1..]))
        }
        _ => return None,
    };
    let alnum = |s: &[u8]| s.iter().all(u8::is_ascii_alphanumeric);
    if !alnum(random) || !tag.is_none_or(alnum) {
        return None;
    }
    Some((1 + 2 * index as u8 + u8::from(tag.is_some()), random, tag))
}

/// Added to a tagged form byte: the id's session tag is left out, because
/// it is the tag of the session the bytes are kept in (a session's
/// single-logout records name its own tickets).
const ELIDED: u8 = 0x40;

/// The session tag of `id`, when it has this server's shape with one.
pub(super) fn tag_of(id: &str) -> Option<&[u8]> {
    shape(id)?.2
}

/// Like [`write`], leaving out a tag equal to `tag`; [`read_in`] reads it
/// back given the same tag.
pub(super) fn write_in(id: &str, tag: Option<&[u8]>, out: &mut Vec<u8>) {
    match shape(id) {
        Some((form, random, Some(own))) if tag == Some(own) => {
            let start = out.len();
            out.push(form + ELIDED);
            out.resize(start + 1 + RANDOM / 4 * 3, 0);
            pack(random.iter().copied(), &mut out[start + 1..]);
        }
        _ => write(id, out),
    }
}

/// What [`write_in`] writes for `id`, when that is [`ELIDED_LEN`] bytes
/// (an id of this server's shape with the tag `tag`): a fixed-size form,
/// which [`read_in`] reads back whole with the same tag.
pub(super) fn elided(id: &str, tag: Option<&[u8]>) -> Option<[u8; ELIDED_LEN]> {
    let mut out = Vec::with_capacity(MAX_PACKED);
    write_in(id, tag, &mut out);
    out.as_slice().try_into().ok()
}

/// Reads an id [`write_in`] wrote with `tag`.
pub(super) fn read_in<'a>(bytes: &'a [u8], tag: Option<&[u8]>) -> Option<(String, &'a [u8])> {
    let (&form, rest) = bytes.split_first()?;
    if form < ELIDED {
        return read(bytes);
    }
    let tag = std::str::from_utf8(tag?).ok()?;
    let (mut id, tagged, rest) = read_packed(form - ELIDED, rest, false)?;
    if !tagged {
        return None;
    }
    id.push('-');
    id.push_str(tag);
    Some((id, rest))
}

/// The packed form `form`'s id and the bytes after it; `with_tag`: its tag
/// too, when it has one. Also says whether it has one.
fn read_packed(form: u8, bytes: &[u8], with_tag: bool) -> Option<(String, bool, &[u8])> {
    let index = usize::from(form.checked_sub(1)? / 2);
    let tagged = (form - 1) % 2 == 1;
    let prefix = PREFIXES.get(index)?;
    let chars = RANDOM + if tagged && with_tag { TAG } else { 0 };
    let (packed, rest) = bytes.split_at_checked(chars / 4 * 3)?;
    let mut id = String::with_capacity(prefix.len() + 3 + RANDOM + 1 + TAG);
    id.push_str(prefix);
    id.push_str("-1-");
    for (i, three) in packed.chunks_exact(3).enumerate() {
        if i == RANDOM / 4 {
            id.push('-');
        }
        let word = u32::from_be_bytes([0, three[0], three[1], three[2]]);
        for shift in [18, 12, 6, 0] {
            id.push(char_of(word >> shift & 63)?);
        }
    }
    Some((id, tagged, rest))
}

/// Bytes [`write`] appends for `id`.
pub(super) fn len(id: &str) -> usize {
    match shape(id) {
        Some((_, random, tag)) => 1 + (random.len() + tag.map_or(0, <[u8]>::len)) / 4 * 3,
        None => 1 + varint_len(id.len()) + id.len(),
    }
}

fn pack(chars: impl Iterator<Item = u8>, out: &mut [u8]) {
    let mut word = 0u32;
    let mut n = 0;
    let mut at = 0;
    for c in chars {
        word = word << 6 | digit(c).unwrap_or(0);
        n += 1;
        if n == 4 {
            out[at..at + 3].copy_from_slice(&word.to_be_bytes()[1..]);
            at += 3;
            word = 0;
            n = 0;
        }
    }
}

/// Appends `id`'s compact form.
pub(super) fn write(id: &str, out: &mut Vec<u8>) {
    match shape(id) {
        Some((form, random, tag)) => {
            let start = out.len();
            let packed = (random.len() + tag.map_or(0, <[u8]>::len)) / 4 * 3;
            out.push(form);
            out.resize(start + 1 + packed, 0);
            let chars = random.iter().chain(tag.unwrap_or_default()).copied();
            pack(chars, &mut out[start + 1..]);
        }
        None => {
            out.push(0);
            write_varint(id.len(), out);
            out.extend_from_slice(id.as_bytes());
        }
    }
}

/// The packed form of `id` in a fixed array, when it has this server's shape.
pub(super) fn packed(id: &str) -> Option<[u8; MAX_PACKED]> {
    let (form, random, tag) = shape(id)?;
    let mut out = [0u8; MAX_PACKED];
    out[0] = form;
    pack(
        random.iter().chain(tag.unwrap_or_default()).copied(),
        &mut out[1..],
    );
    Some(out)
}

/// Reads an id [`write`] wrote; returns it and the bytes after it.
pub(super) fn read(bytes: &[u8]) -> Option<(String, &[u8])> {
    let (&form, rest) = bytes.split_first()?;
    if form == 0 {
        let (n, rest) = read_varint(rest)?;
        let (id, rest) = rest.split_at_checked(n)?;
        return Some((std::str::from_utf8(id).ok()?.to_owned(), rest));
    }
    if form >= ELIDED {
        return None;
    }
    read_packed(form, rest, true).map(|(id, _, rest)| (id, rest))
}

pub(super) fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

pub(super) fn write_varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

pub(super) fn read_varint(bytes: &[u8]) -> Option<(usize, &[u8])> {
    let mut n = 0usize;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        n |= usize::from(b & 0x7f).checked_shl(7 * i as u32)?;
        if b < 0x80 {
            return Some((n, &bytes[i + 1..]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{new_session_id, new_session_ticket_id, new_ticket_id};

    fn round_trip(id: &str) -> usize {
        let mut out = vec![7];
        write(id, &mut out);
        assert_eq!(out.len(), 1 + len(id));
        out.extend_from_slice(b"after");
        let (back, rest) = read(&out[1..]).unwrap();
        assert_eq!(back, id);
        assert_eq!(rest, b"after");
        out.len() - 6
    }

    #[test]
    fn ids_of_this_servers_shape_are_packed() {
        let session = new_session_id("TGT");
        assert_eq!(round_trip(&session), 37);
        let packed = packed(&session).unwrap();
        assert_eq!(read(&packed).unwrap().0, session);
        let ticket = new_session_ticket_id("ST", &session).unwrap();
        assert_eq!(round_trip(&ticket), 37);
        for prefix in PREFIXES {
            assert_eq!(round_trip(&new_ticket_id(prefix)), 25);
        }
    }

    #[test]
    fn other_ids_are_kept_as_they_are() {
        for id in [
            "",
            "TGT-1-short",
            "ST-1-carried3",
            "TGT-2-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "TGT-1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_",
            "TGT-1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa_bbbbbbbbbbbbbbbb",
            "XY-1-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "ü-1-ünïcödé",
        ] {
            assert_eq!(round_trip(id), 1 + varint_len(id.len()) + id.len());
            assert!(packed(id).is_none());
        }
        let long = "x".repeat(300);
        round_trip(&long);
    }

    #[test]
    fn a_sessions_own_tag_is_left_out() {
        let session = new_session_id("TGT");
        let tag = tag_of(&session);
        assert_eq!(tag.map(<[u8]>::len), Some(TAG));
        let ticket = new_session_ticket_id("ST", &session).unwrap();
        let other = new_session_ticket_id("ST", &new_session_id("TGT")).unwrap();
        for (id, expected) in [
            (&ticket, ELIDED_LEN),
            (&other, 37),
            (&"ST-1-x".to_owned(), 8),
        ] {
            let mut out = Vec::new();
            write_in(id, tag, &mut out);
            assert_eq!(out.len(), expected);
            out.push(9);
            let (back, rest) = read_in(&out, tag).unwrap();
            assert_eq!((&back, rest), (id, &[9][..]));
        }
        let mut out = Vec::new();
        write_in(&ticket, tag, &mut out);
        assert!(read_in(&out, None).is_none(), "the tag is needed");
        assert!(read(&out).is_none());
    }

    #[test]
    fn truncated_bytes_are_refused() {
        let mut out = Vec::new();
        write(&new_session_id("TGT"), &mut out);
        assert!(read(&out[..20]).is_none());
        assert!(read(&[0, 5, b'a']).is_none());
        assert!(read(&[200]).is_none());
        assert!(read(&[]).is_none());
    }
}
