//! Service URLs and tickets as clients send them: `service_url::with_ticket`,
//! `ServiceRegistry::find`, `ids::is_well_formed`/`redact` and
//! `validate::required`/`flag`.
//!
//! Input: the bytes (lossy UTF-8) are the service URL; when they contain a NUL,
//! the part before it is the service URL and the part after it the ticket.

use castellan_cas::service_url::with_ticket;
use castellan_cas::validate::{flag, required};
use castellan_cas::{MAX_SERVICE_LEN, MAX_TICKET_LEN};
use castellan_core::ids::{is_well_formed, new_session_ticket_id, redact, session_tag, TAG_CHARS};
use castellan_core::{LogoutMode, RegisteredService, ServiceRegistry};
use std::sync::OnceLock;

/// A ticket as the server makes them (`new_ticket_id("ST")`'s shape).
const TICKET: &str = "ST-1-kq3Xb0vN_5yT-2mLp8QrZs4Wd6Fh1JcA";

/// Realistic registrations: what administrators write, anchored or not.
const PATTERNS: &[(&str, &str)] = &[
    ("admin", r"https://app\.example\.org/admin/.*"),
    ("app", r"https://app\.example\.org(:443)?(/.*)?"),
    ("www", r"https://(www\.)?example\.com/portal/.*"),
    ("legacy", r"^https://legacy\.example\.net/.*$"),
    (
        "either",
        r"https://a\.example\.org/.*|https://b\.example\.org/.*",
    ),
    ("case", r"(?i)https://CaseApp\.example\.org/.*"),
    ("local", r"http://localhost:\d{2,5}/.*"),
    (
        "ports",
        r"https://svc\.example\.org:(8443|9443)/cas-client/\S*",
    ),
];

fn registry() -> &'static ServiceRegistry {
    static REG: OnceLock<ServiceRegistry> = OnceLock::new();
    REG.get_or_init(|| {
        ServiceRegistry::new(
            PATTERNS
                .iter()
                .map(|(name, p)| {
                    RegisteredService::new(*name, p, vec![], Some(p), LogoutMode::None).unwrap()
                })
                .collect(),
        )
    })
}

/// Independently anchored copies (`\A…\z`) of the same patterns.
fn reference() -> &'static [regex::Regex] {
    static REF: OnceLock<Vec<regex::Regex>> = OnceLock::new();
    REF.get_or_init(|| {
        PATTERNS
            .iter()
            .map(|(_, p)| regex::Regex::new(&format!(r"\A(?:{p})\z")).unwrap())
            .collect()
    })
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// One fuzz input; panics when a check fails.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (service, ticket) = match text.split_once('\0') {
        Some((s, t)) => (s, Some(t)),
        None => (&*text, None),
    };

    // with_ticket, with a server-shaped ticket and with the fuzzer's.
    for t in [Some(TICKET), ticket].into_iter().flatten() {
        let out = with_ticket(service, t);
        assert_eq!(
            count(&out, "ticket="),
            count(service, "ticket=") + count(t, "ticket=") + 1,
            "with_ticket({service:?}, {t:?}) = {out:?}: 'ticket=' count"
        );
        let fragment = service.find('#').map_or("", |i| &service[i..]);
        let base = &service[..service.len() - fragment.len()];
        assert!(out.starts_with(base), "with_ticket lost the URL: {out:?}");
        assert!(
            out.ends_with(&format!("ticket={t}{fragment}")),
            "with_ticket({service:?}, {t:?}) = {out:?}: ticket not right before the fragment"
        );
        assert_eq!(out.len(), service.len() + "?ticket=".len() + t.len());
        if is_well_formed(t, "ST") {
            // The ticket cannot end the query early or start a fragment.
            assert_eq!(
                out.find('#'),
                service.find('#').map(|i| i + "?ticket=".len() + t.len())
            );
        }
    }

    // The registry: first match wins, and only over the whole URL.
    let reg = registry();
    let reference = reference();
    let found = reg.find(service);
    let expected = reference.iter().position(|re| re.is_match(service));
    assert_eq!(
        found.map(|s| s.name.as_str()),
        expected.map(|i| PATTERNS[i].0),
        "registry and reference disagree on {service:?}"
    );
    if let Some(s) = found {
        let m = s.pattern.find(service).expect("find agrees with is_match");
        assert_eq!(
            (m.start(), m.end()),
            (0, service.len()),
            "{service:?} matched {:?} only in part",
            s.name
        );
        assert!(s.allows_proxy_callback(service));
    }
    // Anything appended after a whole match must still be judged as a whole.
    let evil = format!("{service}@evil.example");
    if let Some(s) = reg.find(&evil) {
        let m = s.pattern.find(&evil).unwrap();
        assert_eq!((m.start(), m.end()), (0, evil.len()));
    }

    // Ticket ids.
    for candidate in [Some(service), ticket].into_iter().flatten() {
        for prefix in ["ST", "PT", "PGT", "PGTIOU", "TGT", ""] {
            if is_well_formed(candidate, prefix) {
                let plain = prefix.len() + 3 + 32;
                let tagged = plain + 1 + TAG_CHARS;
                assert!(
                    candidate.len() == plain || candidate.len() == tagged,
                    "is_well_formed({candidate:?}, {prefix:?}) with length {}",
                    candidate.len()
                );
                assert!(candidate.starts_with(&format!("{prefix}-1-")) && candidate.is_ascii());
                assert!(!candidate.contains(['<', '&', '"', '\'', '#', '?', '=', ' ', '%', '/']));
                if candidate.len() == tagged {
                    assert_eq!(session_tag(candidate), Some(&candidate[plain + 1..]));
                }
            }
        }
        if let Some(tag) = session_tag(candidate) {
            assert_eq!(tag.len(), TAG_CHARS);
            assert!(candidate.ends_with(&format!("-{tag}")));
            // A ticket made for this "session" carries the same tag.
            let st = new_session_ticket_id("ST", candidate).expect("a tagged id");
            assert!(is_well_formed(&st, "ST"), "{st:?}");
            assert_eq!(session_tag(&st), Some(tag));
        } else {
            assert_eq!(new_session_ticket_id("ST", candidate), None);
        }
        let r = redact(candidate);
        let head: String = candidate.chars().take(10).collect();
        assert_eq!(r, format!("{head}…"), "redact({candidate:?})");
    }

    // Parameter checks, for every combination of present/absent.
    let t = ticket.unwrap_or(service);
    for (tk, sv) in [
        (Some(t), Some(service)),
        (Some(service), Some(t)),
        (None, Some(service)),
        (Some(t), None),
        (None, None),
    ] {
        match required(tk, sv) {
            Ok((a, b)) => {
                assert_eq!((Some(a), Some(b)), (tk, sv));
                assert!(!a.is_empty() && !b.is_empty());
                assert!(a.len() <= MAX_TICKET_LEN && b.len() <= MAX_SERVICE_LEN);
            }
            Err(e) => assert!(
                tk.is_none_or(|x| x.is_empty() || x.len() > MAX_TICKET_LEN)
                    || sv.is_none_or(|x| x.is_empty() || x.len() > MAX_SERVICE_LEN),
                "required refused a valid pair: {e}"
            ),
        }
    }
    let _ = flag(Some(service));
    assert!(!flag(None));
}
