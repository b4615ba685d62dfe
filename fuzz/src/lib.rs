//! Castellan's fuzz targets: their checks ([`targets`], one `run(&[u8])`
//! each, shared by the libFuzzer binaries and the corpus replay test) and the
//! oracles they share.
//!
//! [`parse_well_formed`] is a strict, small XML well-formedness check on top of
//! quick-xml (the same parser version the CAS crate uses): every event must
//! parse, entities must resolve, end tags must match, there must be exactly one
//! root element, and every character must be one XML 1.0 allows. It returns
//! the elements in document order so that targets can check that a value they
//! fed in comes back out unchanged (i.e. was escaped, not interpreted).

pub mod targets;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// One element of a parsed document, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Qualified name as written, e.g. `cas:user`.
    pub name: String,
    /// Nesting depth; the root is 0.
    pub depth: usize,
    /// Index of the parent element in the returned list.
    pub parent: Option<usize>,
    /// Attributes as (qualified name, unescaped value), in document order.
    pub attributes: Vec<(String, String)>,
    /// The element's own unescaped text (children's text excluded).
    pub text: String,
}

/// Whether `c` is an XML 1.0 `Char`.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// What a value is expected to look like after `castellan_cas::xml::escape`
/// and a parse: characters XML cannot carry are dropped, and (quick-xml does
/// no end-of-line normalization, a conforming parser does) `\r` is compared
/// as `\n`.
pub fn expected_text(value: &str) -> String {
    normalize_eol(
        &value
            .chars()
            .filter(|c| is_xml_char(*c))
            .collect::<String>(),
    )
}

/// XML 1.0 §2.11 end-of-line handling: `\r\n` and a lone `\r` read as `\n`.
pub fn normalize_eol(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

fn attributes(e: &BytesStart<'_>) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    // with_checks (the default) rejects duplicate and malformed attributes.
    for a in e.attributes() {
        let a = a.map_err(|e| format!("attribute: {e}"))?;
        let key = std::str::from_utf8(a.key.as_ref())
            .map_err(|e| format!("attribute name: {e}"))?
            .to_owned();
        // Entities and character references resolved, no attribute-value
        // normalization (the escaper writes \t, \n, \r as references).
        let value = std::str::from_utf8(&a.value)
            .map_err(|e| format!("attribute {key}: {e}"))
            .and_then(|raw| {
                quick_xml::escape::unescape(raw).map_err(|e| format!("attribute {key}: {e}"))
            })?
            .into_owned();
        out.push((key, value));
    }
    Ok(out)
}

fn name_of(e: &BytesStart<'_>) -> Result<String, String> {
    std::str::from_utf8(e.name().as_ref())
        .map(str::to_owned)
        .map_err(|e| format!("element name: {e}"))
}

/// Appends character data to the open element; outside the root only
/// whitespace may appear.
fn add_text(elements: &mut [Element], open: &[usize], text: &str) -> Result<(), String> {
    match open.last() {
        Some(&i) => elements[i].text.push_str(text),
        None if text.trim_matches([' ', '\t', '\n', '\r']).is_empty() => {}
        None => return Err(format!("text outside the root element: {text:?}")),
    }
    Ok(())
}

/// Parses `doc` strictly; `Err` describes the first well-formedness problem.
pub fn parse_well_formed(doc: &str) -> Result<Vec<Element>, String> {
    if let Some((i, c)) = doc.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        return Err(format!(
            "character {c:?} (U+{:04X}) at byte {i} is not an XML Char",
            c as u32
        ));
    }
    let mut reader = Reader::from_str(doc);
    {
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.trim_text(false);
    }
    let mut elements: Vec<Element> = Vec::new();
    // Indices into `elements` of the open elements.
    let mut open: Vec<usize> = Vec::new();
    let mut roots = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("at byte {}: {e}", reader.buffer_position()))?;
        match event {
            Event::Start(e) | Event::Empty(e) if open.is_empty() && roots > 0 => {
                return Err(format!("second root element {:?}", name_of(&e)?));
            }
            Event::Start(e) => {
                if open.is_empty() {
                    roots += 1;
                }
                elements.push(Element {
                    name: name_of(&e)?,
                    depth: open.len(),
                    parent: open.last().copied(),
                    attributes: attributes(&e)?,
                    text: String::new(),
                });
                open.push(elements.len() - 1);
            }
            Event::Empty(e) => {
                if open.is_empty() {
                    roots += 1;
                }
                elements.push(Element {
                    name: name_of(&e)?,
                    depth: open.len(),
                    parent: open.last().copied(),
                    attributes: attributes(&e)?,
                    text: String::new(),
                });
            }
            Event::End(e) => {
                let Some(i) = open.pop() else {
                    return Err("end tag with no open element".into());
                };
                let qname = e.name();
                let name = std::str::from_utf8(qname.as_ref()).unwrap_or("");
                if elements[i].name != name {
                    return Err(format!("</{name}> closes <{}>", elements[i].name));
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(|e| format!("text: {e}"))?;
                add_text(&mut elements, &open, &text)?;
            }
            // quick-xml splits text at each reference: this is one, resolved
            // here (predefined entities and character references only;
            // without a DTD anything else is not well-formed).
            Event::GeneralRef(r) => {
                let name = r.decode().map_err(|e| format!("reference: {e}"))?;
                let reference = format!("&{name};");
                let text = quick_xml::escape::unescape(&reference)
                    .map_err(|e| format!("reference: {e}"))?;
                add_text(&mut elements, &open, &text)?;
            }
            Event::CData(c) => match open.last() {
                Some(&i) => elements[i]
                    .text
                    .push_str(std::str::from_utf8(&c).map_err(|e| format!("CDATA: {e}"))?),
                None => return Err("CDATA outside the root element".into()),
            },
            Event::DocType(_) => return Err("unexpected DOCTYPE in a response".into()),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if let Some(&i) = open.last() {
        return Err(format!("<{}> is never closed", elements[i].name));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(elements)
}

/// The direct children of `elements[parent]` named `name` (any name: `None`).
pub fn children<'a>(
    elements: &'a [Element],
    parent: usize,
    name: Option<&'a str>,
) -> impl Iterator<Item = &'a Element> + 'a {
    elements
        .iter()
        .filter(move |e| e.parent == Some(parent) && name.is_none_or(|n| e.name == n))
}

/// Index of the first element named `name`.
pub fn position(elements: &[Element], name: &str) -> Option<usize> {
    elements.iter().position(|e| e.name == name)
}

/// Panics with the document when it is not well-formed.
pub fn assert_well_formed(doc: &str, what: &str) -> Vec<Element> {
    match parse_well_formed(doc) {
        Ok(e) => e,
        Err(why) => panic!("{what} is not well-formed XML: {why}\n--- document ---\n{doc}\n---"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_rejects() {
        let els = parse_well_formed("<a x=\"1&amp;\"><b>t&lt;</b></a>\n").unwrap();
        assert_eq!(els[0].attributes, vec![("x".into(), "1&".into())]);
        assert_eq!(els[1].text, "t<");
        assert_eq!(els[1].parent, Some(0));
        assert_eq!(children(&els, 0, Some("b")).count(), 1);
        for bad in [
            "<a><b></a>",
            "<a>",
            "<a/><b/>",
            "<a>&bogus;</a>",
            "<a>a & b</a>",
            "<a x=\"1\" x=\"2\"/>",
            "<a>\u{1}</a>",
            "text<a/>",
            "<!DOCTYPE a><a/>",
            "",
        ] {
            assert!(parse_well_formed(bad).is_err(), "{bad:?}");
        }
    }
}
