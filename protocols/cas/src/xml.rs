//! XML text helpers for the hand-written responses (they are small and fixed).

/// Escapes a value for element text or a double- or single-quoted attribute.
/// Characters XML 1.0 forbids (most C0 controls) are dropped: they cannot be
/// represented, and a client parser would reject the whole document.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    escape_into(&mut out, value);
    out
}

/// [`escape`], appended to `out`. Most values (user ids, URLs, attribute
/// values) have nothing to escape: they are copied whole.
pub fn escape_into(out: &mut String, value: &str) {
    // U+FFFE and U+FFFF are EF BF BE / EF BF BF in UTF-8.
    let plain = value
        .bytes()
        .all(|b| b >= 0x20 && !matches!(b, b'&' | b'<' | b'>' | b'"' | b'\'' | 0xEF));
    if plain {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // As references, so that parsers keep them in attribute values
            // too (they would turn them into spaces) and keep a lone \r.
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
}

/// Whether `name` can be an element's local name (CAS 3 renders each
/// attribute as `<cas:NAME>`): ASCII letters, digits, `_`, `-`, `.`, not
/// starting with a digit, `-` or `.`, and not starting with "xml".
pub fn is_element_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    let Some(first) = bytes.next() else {
        return false;
    };
    (first.is_ascii_alphabetic() || first == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        && !name.to_ascii_lowercase().starts_with("xml")
        && name.len() <= 128
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_drops_forbidden_controls() {
        assert_eq!(
            escape(r#"<a href="x">&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;&lt;/a&gt;"
        );
        assert_eq!(escape("a\u{0}b\u{1b}c\nd\r\t"), "abc&#10;d&#13;&#9;");
        assert_eq!(escape("Zoë 日本"), "Zoë 日本");
        // Characters led by the byte 0xEF take the careful path: only
        // U+FFFE and U+FFFF go.
        assert_eq!(
            escape("\u{fb00}x\u{fffe}\u{ffff}\u{fffd}"),
            "\u{fb00}x\u{fffd}"
        );
        let mut out = "<a>".to_owned();
        escape_into(&mut out, "https://app.example.org/?a=1");
        assert_eq!(out, "<a>https://app.example.org/?a=1");
    }

    #[test]
    fn element_names() {
        assert!(is_element_name("mail"));
        assert!(is_element_name("eduPersonAffiliation"));
        assert!(is_element_name("given_name.x-y"));
        for bad in [
            "", "1a", "-a", "a b", "a:b", "a<b", "xmlns", "XMLthing", "é",
        ] {
            assert!(!is_element_name(bad), "{bad}");
        }
    }
}
