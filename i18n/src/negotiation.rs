//! Which language a page is in.

/// A language the pages are translated into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lang {
    #[default]
    En,
    Fr,
    De,
    Es,
}

impl Lang {
    pub const ALL: [Lang; 4] = [Lang::En, Lang::Fr, Lang::De, Lang::Es];

    /// The BCP 47 tag (`<html lang>`, `Content-Language`, `?locale=`).
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Fr => "fr",
            Lang::De => "de",
            Lang::Es => "es",
        }
    }

    /// The language's own name, for the language menu.
    pub fn native_name(self) -> &'static str {
        match self {
            Lang::En => "English",
            Lang::Fr => "Français",
            Lang::De => "Deutsch",
            Lang::Es => "Español",
        }
    }

    /// A language tag or range, by its primary subtag: `fr-CA` and `fr_FR`
    /// are French (RFC 4647 lookup falls back to the shorter range).
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next()?;
        Lang::ALL
            .into_iter()
            .find(|l| l.code().eq_ignore_ascii_case(primary))
    }
}

/// The language ranges of an `Accept-Language` header (RFC 9110 §12.5.4),
/// best first: by q-value, then in the order written. Ranges with q=0, a
/// malformed q or an empty tag are dropped.
pub fn parse_accept_language(header: &str) -> Vec<(String, f32)> {
    let mut ranges: Vec<(String, f32)> = header
        .split(',')
        .take(32)
        .filter_map(|item| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            if tag.is_empty() {
                return None;
            }
            let mut q = 1.0f32;
            for p in parts {
                let (k, v) = p.split_once('=')?;
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v
                        .trim()
                        .parse()
                        .ok()
                        .filter(|q: &f32| (0.0..=1.0).contains(q))?;
                }
            }
            (q > 0.0).then(|| (tag.to_owned(), q))
        })
        .collect();
    // A stable sort keeps the written order among equal q-values.
    ranges.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranges
}

/// A page's language: `?locale=` when it names a known language, else the
/// remembered cookie, else the best range of `Accept-Language` that we
/// have, else English.
pub fn negotiate(
    query_locale: Option<&str>,
    cookie: Option<&str>,
    accept_language: Option<&str>,
) -> Lang {
    if let Some(lang) = query_locale.and_then(Lang::from_tag) {
        return lang;
    }
    if let Some(lang) = cookie.and_then(Lang::from_tag) {
        return lang;
    }
    accept_language
        .map(parse_accept_language)
        .unwrap_or_default()
        .iter()
        .find_map(|(tag, _)| Lang::from_tag(tag))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_values_order_the_ranges_and_zero_excludes() {
        assert_eq!(
            negotiate(None, None, Some("en;q=0.5, de;q=0.9, fr;q=0.7")),
            Lang::De
        );
        assert_eq!(negotiate(None, None, Some("de;q=0, es")), Lang::Es);
        assert_eq!(
            negotiate(None, None, Some("ja, es;q=0.1, fr;q=0.2")),
            Lang::Fr
        );
    }

    #[test]
    fn regional_ranges_fall_back_to_their_language() {
        assert_eq!(negotiate(None, None, Some("fr-CA,fr;q=0.9")), Lang::Fr);
        assert_eq!(negotiate(None, None, Some("de-AT")), Lang::De);
        assert_eq!(Lang::from_tag("es_MX"), Some(Lang::Es));
    }

    #[test]
    fn unknown_or_malformed_is_english() {
        assert_eq!(negotiate(None, None, None), Lang::En);
        assert_eq!(
            negotiate(None, None, Some("ja, zh;q=0.8, *;q=0.1")),
            Lang::En
        );
        assert_eq!(negotiate(None, None, Some(";;;,=,q=")), Lang::En);
        assert_eq!(negotiate(None, None, Some("fr;q=2")), Lang::En);
        assert_eq!(negotiate(Some("xx"), Some("yy"), Some("zz")), Lang::En);
    }

    #[test]
    fn the_query_wins_then_the_cookie() {
        assert_eq!(negotiate(Some("es"), Some("de"), Some("fr")), Lang::Es);
        assert_eq!(negotiate(None, Some("de"), Some("fr")), Lang::De);
        // An unknown ?locale= does not hide the cookie.
        assert_eq!(negotiate(Some("klingon"), Some("de"), Some("fr")), Lang::De);
    }

    #[test]
    fn equal_q_values_keep_the_written_order() {
        let r = parse_accept_language("es, fr;q=0.8, de;q=0.8");
        let tags: Vec<_> = r.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(tags, ["es", "fr", "de"]);
    }
}
