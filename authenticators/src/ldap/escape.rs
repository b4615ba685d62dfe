//! Putting a typed username into a search filter (RFC 4515) or a DN
//! (RFC 4514) without changing its meaning.

/// A filter assertion value: `*`, `(`, `)`, `\` and NUL are written as
/// `\2a`, `\28`, `\29`, `\5c` and `\00`, so a username never widens a
/// search or adds a clause.
pub fn filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// An attribute value in a DN: the special characters of RFC 4514 §2.4
/// get a backslash, a leading `#` or space and a trailing space too, NUL
/// is `\00`.
pub fn dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 4);
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' if i == 0 => out.push_str("\\#"),
            ' ' if i == 0 || i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// `template` with every `{name}` replaced by `escape(value)`.
pub fn fill(template: &str, name: &str, value: &str, escape: fn(&str) -> String) -> String {
    template.replace(&format!("{{{name}}}"), &escape(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_values_cannot_widen_a_search() {
        assert_eq!(filter_value("casuser"), "casuser");
        assert_eq!(filter_value("*"), "\\2a");
        assert_eq!(filter_value("casuser)(uid=*"), "casuser\\29\\28uid=\\2a");
        assert_eq!(filter_value("a\\b"), "a\\5cb");
        assert_eq!(filter_value("a\0b"), "a\\00b");
        assert_eq!(
            filter_value("*)(|(objectClass=*)"),
            "\\2a\\29\\28|\\28objectClass=\\2a\\29"
        );
        // Non-ASCII stays UTF-8 (RFC 4515 allows it unescaped).
        assert_eq!(filter_value("jérôme"), "jérôme");
        assert_eq!(
            fill(
                "(&(objectClass=person)(uid={user}))",
                "user",
                "x)(uid=*",
                filter_value
            ),
            "(&(objectClass=person)(uid=x\\29\\28uid=\\2a))"
        );
    }

    #[test]
    fn dn_values_stay_one_value() {
        assert_eq!(dn_value("jdoe"), "jdoe");
        assert_eq!(dn_value("doe, john"), "doe\\, john");
        assert_eq!(dn_value("a+b"), "a\\+b");
        assert_eq!(dn_value("x,ou=admins"), "x\\,ou\\=admins");
        assert_eq!(dn_value("#hash"), "\\#hash");
        assert_eq!(dn_value("in#side"), "in#side");
        assert_eq!(dn_value(" lead"), "\\ lead");
        assert_eq!(dn_value("trail "), "trail\\ ");
        assert_eq!(dn_value("mid dle"), "mid dle");
        assert_eq!(dn_value("q\"<>;\\"), "q\\\"\\<\\>\\;\\\\");
        assert_eq!(dn_value("nul\0"), "nul\\00");
        assert_eq!(
            fill(
                "uid={user},ou=people,dc=example,dc=org",
                "user",
                "x,ou=admins",
                dn_value
            ),
            "uid=x\\,ou\\=admins,ou=people,dc=example,dc=org"
        );
    }
}
