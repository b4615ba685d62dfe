//! Writing XML text: every value the IdP puts into a document goes through
//! [`escape`].

/// Escapes text and attribute values (both quote kinds, and the
/// whitespace characters an attribute would otherwise normalise away).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

/// A document type declaration is refused before any parser sees the
/// document: no DTD, so no entity can be declared, expanded or fetched.
pub fn refuse_dtd(xml: &str) -> Result<(), crate::SamlError> {
    if xml.contains("<!DOCTYPE") || xml.contains("<!ENTITY") || xml.contains("<!doctype") {
        return Err(crate::SamlError::requester(
            "document type declarations are not accepted",
        ));
    }
    Ok(())
}

/// Text content as canonical XML writes it (C14N 1.0 §2.3, which
/// exc-c14n shares): `&`, `<`, `>` and CR escaped, nothing else. The IdP's
/// signed documents are written in canonical form, so that their bytes are
/// what a verifier digests.
pub fn text(s: &str) -> std::borrow::Cow<'_, str> {
    canonical(s, false)
}

/// An attribute value as canonical XML writes it: `&`, `<`, `"`, TAB, LF
/// and CR escaped (`>` and `'` stay as they are).
pub fn attr(s: &str) -> std::borrow::Cow<'_, str> {
    canonical(s, true)
}

fn canonical(s: &str, attribute: bool) -> std::borrow::Cow<'_, str> {
    let special = |c: char| match c {
        '&' | '<' | '\r' => true,
        '>' => !attribute,
        '"' | '\t' | '\n' => attribute,
        c => (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}',
    };
    if !s.contains(special) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '\r' => out.push_str("&#xD;"),
            '>' if !attribute => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\t' if attribute => out.push_str("&#x9;"),
            '\n' if attribute => out.push_str("&#xA;"),
            '\t' | '\n' => out.push(c),
            // Not allowed in XML 1.0 at all.
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// xs:dateTime in UTC, seconds precision.
pub fn instant(unix_ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((unix_ms / 1000) as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A fresh XML ID (an NCName: starts with `_`), 128 random bits.
pub fn new_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(33);
    id.push('_');
    for b in bytes {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape("a<b&c>\"d'e\n"),
            "a&lt;b&amp;c&gt;&quot;d&#39;e&#10;"
        );
        assert_eq!(escape("x\u{1}y"), "xy");
    }

    #[test]
    fn canonical_text_and_attributes_escape_what_c14n_escapes() {
        assert_eq!(
            text("a<b&c>\"d'e\n\tf\r"),
            "a&lt;b&amp;c&gt;\"d'e\n\tf&#xD;"
        );
        assert_eq!(
            attr("a<b&c>\"d'e\n\tf\r"),
            "a&lt;b&amp;c>&quot;d'e&#xA;&#x9;f&#xD;"
        );
        assert!(matches!(text("plain"), std::borrow::Cow::Borrowed(_)));
        assert_eq!(attr("x\u{1}y"), "xy");
    }

    #[test]
    fn dtds_are_refused() {
        assert!(refuse_dtd("<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>").is_err());
        assert!(refuse_dtd("<samlp:AuthnRequest/>").is_ok());
    }

    #[test]
    fn instants_are_utc_seconds() {
        assert_eq!(instant(1_764_084_646_123), "2025-11-25T15:30:46Z");
        assert!(new_id().starts_with('_') && new_id().len() == 33);
    }
}
