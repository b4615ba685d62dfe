//! The Fluent catalogues, embedded and parsed once.

use crate::Lang;
use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use std::borrow::Cow;
use std::sync::LazyLock;

const SOURCES: [(Lang, &str); 4] = [
    (Lang::En, include_str!("../locales/en/castellan.ftl")),
    (Lang::Fr, include_str!("../locales/fr/castellan.ftl")),
    (Lang::De, include_str!("../locales/de/castellan.ftl")),
    (Lang::Es, include_str!("../locales/es/castellan.ftl")),
];

struct Catalogue {
    lang: Lang,
    bundle: FluentBundle<FluentResource>,
}

static CATALOGUES: LazyLock<Vec<Catalogue>> = LazyLock::new(|| {
    SOURCES
        .iter()
        .map(|(lang, source)| Catalogue {
            lang: *lang,
            bundle: bundle(*lang, source),
        })
        .collect()
});

/// A catalogue as Fluent parses it. The embedded files are checked by the
/// tests below; a message that failed to parse is missing, and [`text`]
/// falls back to English, then to the key.
fn bundle(lang: Lang, source: &str) -> FluentBundle<FluentResource> {
    let id: unic_langid::LanguageIdentifier = lang.code().parse().unwrap_or_default();
    let mut bundle = FluentBundle::new_concurrent(vec![id]);
    // The text goes into HTML, escaped by the templates: no Unicode
    // isolation marks around names.
    bundle.set_use_isolating(false);
    let resource = FluentResource::try_new(source.to_owned()).unwrap_or_else(|(r, _)| r);
    // Only duplicate ids fail here, and the first one is kept.
    let _ = bundle.add_resource(resource);
    bundle
}

fn catalogue(lang: Lang) -> Option<&'static Catalogue> {
    CATALOGUES.iter().find(|c| c.lang == lang)
}

/// A value given to a message: a name, or a count (plural rules).
#[derive(Debug, Clone, PartialEq)]
pub enum Arg {
    Text(String),
    Number(i64),
}

/// A message by key, with its arguments: what handlers hand to pages.
#[derive(Debug, Clone, PartialEq)]
pub struct Msg {
    pub key: Cow<'static, str>,
    pub args: Vec<(&'static str, Arg)>,
}

impl Msg {
    pub fn new(key: &'static str) -> Self {
        Self {
            key: Cow::Borrowed(key),
            args: Vec::new(),
        }
    }

    /// A key known only at run time (a template's).
    pub fn dynamic(key: &str) -> Self {
        Self {
            key: Cow::Owned(key.to_owned()),
            args: Vec::new(),
        }
    }

    /// A name or other text given to the message as `{ $name }`.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.args.push((name, Arg::Text(value.into())));
        self
    }

    /// A count given to the message (Fluent selects the plural form).
    pub fn count(mut self, name: &'static str, n: i64) -> Self {
        self.args.push((name, Arg::Number(n)));
        self
    }
}

impl From<&'static str> for Msg {
    fn from(key: &'static str) -> Self {
        Msg::new(key)
    }
}

/// The message in `lang`; in English when `lang` lacks it; the key itself
/// when no catalogue has it (a test keeps that from happening).
pub fn text(lang: Lang, msg: &Msg) -> String {
    format_in(lang, msg)
        .or_else(|| format_in(Lang::En, msg))
        .unwrap_or_else(|| msg.key.clone().into_owned())
}

fn format_in(lang: Lang, msg: &Msg) -> Option<String> {
    let bundle = &catalogue(lang)?.bundle;
    let pattern = bundle.get_message(&msg.key)?.value()?;
    let mut args = FluentArgs::new();
    for (name, value) in &msg.args {
        match value {
            Arg::Text(s) => args.set(*name, FluentValue::from(s.as_str())),
            Arg::Number(n) => args.set(*name, FluentValue::from(*n)),
        }
    }
    let mut errors = Vec::new();
    let out = bundle.format_pattern(pattern, Some(&args), &mut errors);
    errors.is_empty().then(|| out.into_owned())
}

/// Every message id of a catalogue, in file order.
#[cfg(test)]
fn ids(source: &str) -> Vec<String> {
    let resource = FluentResource::try_new(source.to_owned()).expect("catalogue parses");
    resource
        .entries()
        .filter_map(|e| match e {
            fluent_syntax::ast::Entry::Message(m) => Some(m.id.name.to_owned()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The variables a message uses, as written in the English catalogue.
    fn variables(source: &str, id: &str) -> BTreeSet<String> {
        let start = source
            .lines()
            .position(|l| l.starts_with(&format!("{id} =")))
            .expect("message present");
        let mut vars = BTreeSet::new();
        for line in source.lines().skip(start).take_while({
            let mut first = true;
            move |l| std::mem::replace(&mut first, false) || l.starts_with(' ')
        }) {
            let mut rest = line;
            while let Some(i) = rest.find('$') {
                rest = &rest[i + 1..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                    .collect();
                vars.insert(name);
            }
        }
        vars
    }

    #[test]
    fn every_catalogue_parses_without_errors() {
        for (lang, source) in SOURCES {
            if let Err((_, errors)) = FluentResource::try_new(source.to_owned()) {
                panic!("{}: {errors:?}", lang.code());
            }
        }
    }

    #[test]
    fn every_english_key_is_in_every_language_and_no_other() {
        let en: BTreeSet<_> = ids(SOURCES[0].1).into_iter().collect();
        assert!(en.len() > 50, "{}", en.len());
        for (lang, source) in &SOURCES[1..] {
            let other: BTreeSet<_> = ids(source).into_iter().collect();
            let missing: Vec<_> = en.difference(&other).collect();
            let extra: Vec<_> = other.difference(&en).collect();
            assert!(missing.is_empty(), "{} lacks {missing:?}", lang.code());
            assert!(extra.is_empty(), "{} has unknown {extra:?}", lang.code());
        }
    }

    #[test]
    fn each_message_formats_with_its_arguments_in_every_language() {
        let en_source = SOURCES[0].1;
        for id in ids(en_source) {
            let mut msg = Msg::dynamic(&id);
            let vars = variables(en_source, &id);
            for v in &vars {
                let name: &'static str = Box::leak(v.clone().into_boxed_str());
                msg = if v == "count" {
                    msg.count(name, 3)
                } else {
                    msg.with(name, format!("<{v}>"))
                };
            }
            for lang in Lang::ALL {
                let out = format_in(lang, &msg)
                    .unwrap_or_else(|| panic!("{}: {id} does not format", lang.code()));
                assert!(!out.trim().is_empty(), "{}: {id} is empty", lang.code());
                for v in &vars {
                    if v != "count" {
                        assert!(
                            out.contains(&format!("<{v}>")),
                            "{}: {id} drops ${v}: {out}",
                            lang.code()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_missing_argument_or_key_never_panics() {
        let out = text(Lang::Fr, &Msg::new("login-continue-to"));
        assert!(!out.is_empty());
        assert_eq!(text(Lang::De, &Msg::new("no-such-key")), "no-such-key");
    }

    #[test]
    fn plurals_follow_the_language() {
        let one = Msg::new("mfa-recovery-left").count("count", 1);
        let many = Msg::new("mfa-recovery-left").count("count", 5);
        assert_ne!(text(Lang::En, &one), text(Lang::En, &many));
        assert!(text(Lang::Fr, &many).contains('5'));
    }
}
