//! XML text helpers for the hand-written responses (they are small and fixed).

/// Escapes a value for element text or a double- or single-quoted attribute.
/// Characters XML 1.0 forbids (most C0 controls) are dropped: they cannot be
/// represented, and a client parser would reject the whole document.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
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
    out
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
