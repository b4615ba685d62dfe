//! Reading XML with quick-xml, as the protocol code expects it: character
//! data as one unescaped string per run of text, attribute values unescaped,
//! and never more than [`MAX_ATTRIBUTES`] attributes read from one element.
//!
//! quick-xml (>= 0.38) splits character data at every reference: `a &amp; b`
//! arrives as `Text("a ")`, `GeneralRef("amp")`, `Text(" b")`. [`TextReader`]
//! joins such a run back into one [`Item::Text`] and resolves each reference
//! like quick-xml 0.37's `unescape()` did: the five predefined entities and
//! character references only; any other entity is an error, never expanded.
//! A stray `&` is not a reader error but makes the run's text an error
//! (again as with 0.37), so the caller decides whether it matters.

use quick_xml::events::attributes::Attribute;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use std::borrow::Cow;

/// Most attributes read from one element. Protocol elements carry a handful;
/// a start tag with thousands is an attack on the parser (RUSTSEC-2026-0194:
/// quick-xml < 0.41 checked them for duplicates in quadratic time), so an
/// element with more is refused whatever the parser does.
pub const MAX_ATTRIBUTES: usize = 64;

/// An element had more than [`MAX_ATTRIBUTES`] attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an element has more than {MAX_ATTRIBUTES} attributes")]
pub struct TooManyAttributes;

/// One step of [`TextReader`].
#[derive(Debug)]
pub enum Item<'a> {
    /// A run of character data (text and references, no markup), unescaped;
    /// `Err` when a reference in it is not a predefined entity, a valid
    /// character reference, or is not terminated.
    Text(Result<String, quick_xml::Error>),
    /// Any event but `Text` and `GeneralRef`.
    Event(Event<'a>),
}

/// A [`Reader`] over a string that delivers whole runs of text.
pub struct TextReader<'a> {
    reader: Reader<&'a [u8]>,
    /// The event (or error) that ended the last run of text.
    next: Option<Result<Event<'a>, quick_xml::Error>>,
}

impl<'a> TextReader<'a> {
    pub fn new(xml: &'a str) -> Self {
        let mut reader = Reader::from_str(xml);
        // A stray `&` is reported through the text (below), as before.
        reader.config_mut().allow_dangling_amp = true;
        Self { reader, next: None }
    }

    /// The next item; `Err` for a well-formedness error of the reader.
    pub fn read(&mut self) -> Result<Item<'a>, quick_xml::Error> {
        let mut text: Option<Result<String, quick_xml::Error>> = None;
        loop {
            let event = match self.next.take() {
                Some(e) => e,
                None => self.reader.read_event(),
            };
            let piece = match &event {
                Ok(Event::Text(t)) => t
                    .decode()
                    .map_err(quick_xml::Error::from)
                    .and_then(|s| Ok(unescape(&s)?.into_owned())),
                Ok(Event::GeneralRef(r)) => r
                    .decode()
                    .map_err(quick_xml::Error::from)
                    .and_then(|name| Ok(unescape(&format!("&{name};"))?.into_owned())),
                _ => match text {
                    Some(t) => {
                        self.next = Some(event);
                        return Ok(Item::Text(t));
                    }
                    None => return event.map(Item::Event),
                },
            };
            text = Some(match (text, piece) {
                (None, p) => p,
                (Some(Ok(mut t)), Ok(p)) => {
                    t.push_str(&p);
                    Ok(t)
                }
                (Some(Err(e)), _) | (Some(Ok(_)), Err(e)) => Err(e),
            });
        }
    }
}

fn unescape(s: &str) -> Result<Cow<'_, str>, quick_xml::escape::EscapeError> {
    quick_xml::escape::unescape(s)
}

/// The element's attributes, at most [`MAX_ATTRIBUTES`] of them: `Err` when
/// it has more. Each item is an attribute or quick-xml's error for a
/// malformed or duplicated one.
pub fn attributes<'e>(
    e: &'e BytesStart<'_>,
) -> Result<Vec<Result<Attribute<'e>, quick_xml::events::attributes::AttrError>>, TooManyAttributes>
{
    let mut out = Vec::new();
    for a in e.attributes() {
        if out.len() == MAX_ATTRIBUTES {
            return Err(TooManyAttributes);
        }
        out.push(a);
    }
    Ok(out)
}

/// An attribute's value with the predefined entities and character
/// references resolved (no attribute-value normalisation, as quick-xml 0.37's
/// `unescape_value()`).
pub fn value(a: &Attribute<'_>) -> Result<String, quick_xml::Error> {
    let raw = std::str::from_utf8(&a.value).map_err(quick_xml::encoding::EncodingError::Utf8)?;
    Ok(unescape(raw)?.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(xml: &str) -> Vec<String> {
        let mut reader = TextReader::new(xml);
        let mut out = Vec::new();
        loop {
            match reader.read() {
                Ok(Item::Event(Event::Eof)) => return out,
                Ok(Item::Event(Event::Start(e))) => {
                    out.push(format!("<{}", String::from_utf8_lossy(e.name().as_ref())))
                }
                Ok(Item::Event(Event::Empty(e))) => {
                    out.push(format!("<{}/", String::from_utf8_lossy(e.name().as_ref())))
                }
                Ok(Item::Event(Event::End(_))) => out.push(">".into()),
                Ok(Item::Event(Event::Comment(_))) => out.push("!".into()),
                Ok(Item::Event(e)) => out.push(format!("{e:?}")),
                Ok(Item::Text(Ok(t))) => out.push(format!("T:{t}")),
                Ok(Item::Text(Err(_))) => out.push("T:error".into()),
                Err(_) => {
                    out.push("error".into());
                    return out;
                }
            }
        }
    }

    #[test]
    fn a_run_of_text_and_references_is_one_text() {
        assert_eq!(
            items("<a> x &amp; y&#33;&#x20;&lt;<b/>z<!---->w</a>"),
            ["<a", "T: x & y! <", "<b/", "T:z", "!", "T:w", ">"]
        );
        assert_eq!(items("<a>&quot;&apos;&gt;</a>"), ["<a", "T:\"'>", ">"]);
    }

    #[test]
    fn only_predefined_entities_and_character_references_resolve() {
        // No DTD, so no other entity exists: the text is an error, nothing
        // is expanded, and the reader goes on (as quick-xml 0.37's unescape).
        assert_eq!(items("<a>x&bogus;y</a>"), ["<a", "T:error", ">"]);
        assert_eq!(items("<a>&#0;</a>"), ["<a", "T:error", ">"]);
        // A stray `&` too makes the text an error, not the document.
        assert_eq!(items("<a>x & y</a><b/>"), ["<a", "T:error", ">", "<b/"]);
        assert_eq!(items("<a>x &</a>"), ["<a", "T:error", ">"]);
    }

    #[test]
    fn attribute_values_are_unescaped_not_normalised() {
        let xml = "<a k=\"1 &amp; &#10;2\tx\" j='&bogus;'/>";
        let mut reader = TextReader::new(xml);
        let Ok(Item::Event(Event::Empty(e))) = reader.read() else {
            panic!("no element")
        };
        let attrs = attributes(&e).unwrap();
        let values: Vec<_> = attrs
            .iter()
            .map(|a| value(a.as_ref().unwrap()).ok())
            .collect();
        assert_eq!(values, [Some("1 & \n2\tx".to_owned()), None]);
    }

    fn tag_with_attributes(n: usize, last: &str) -> String {
        let mut xml = String::from("<a");
        for i in 0..n {
            xml.push_str(&format!(" a{i}=\"\""));
        }
        xml.push_str(last);
        xml.push_str("/>");
        xml
    }

    fn start_tag(xml: &str) -> BytesStart<'_> {
        match TextReader::new(xml).read() {
            Ok(Item::Event(Event::Empty(e))) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_more_than_max_attributes_are_read_from_an_element() {
        let ok = tag_with_attributes(MAX_ATTRIBUTES, "");
        assert_eq!(attributes(&start_tag(&ok)).unwrap().len(), MAX_ATTRIBUTES);
        let over = tag_with_attributes(MAX_ATTRIBUTES + 1, "");
        assert_eq!(attributes(&start_tag(&over)).err(), Some(TooManyAttributes));
        // RUSTSEC-2026-0194: 20,000 attributes on one tag are refused after
        // reading 64 of them, whatever the parser's duplicate check costs.
        let flood = tag_with_attributes(20_000, " a0=\"\"");
        assert_eq!(
            attributes(&start_tag(&flood)).err(),
            Some(TooManyAttributes)
        );
    }

    #[test]
    fn quick_xml_reads_20000_attributes_and_refuses_a_duplicate() {
        // The parser itself (>= 0.41): each of 20,000 distinct attributes
        // reads, and a duplicate of the first one, last, is refused.
        let distinct = tag_with_attributes(20_000, "");
        let e = start_tag(&distinct);
        assert_eq!(e.attributes().filter(Result::is_ok).count(), 20_000);
        let duplicated = tag_with_attributes(20_000, " a0=\"\"");
        let e = start_tag(&duplicated);
        let results: Vec<_> = e.attributes().collect();
        assert_eq!(results.len(), 20_001);
        assert!(results[..20_000].iter().all(Result::is_ok));
        assert!(matches!(
            results[20_000],
            Err(quick_xml::events::attributes::AttrError::Duplicated(..))
        ));
    }
}
