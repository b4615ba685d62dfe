//! The line format: one JSON object per event, fields in a fixed order.
//! `time`, `event`, `outcome`, `user`, `service`, `protocol`, `client` and
//! `request_id` are always there (null when unknown); `source`, `method`,
//! `party` and `detail` only when the event has them.

use crate::context::RequestContext;
use castellan_core::audit::AuditEvent;
use serde::Serialize;
use time::macros::format_description;
use time::OffsetDateTime;

#[derive(Serialize)]
struct Line<'a> {
    time: &'a str,
    event: &'static str,
    outcome: &'static str,
    user: Option<&'a str>,
    service: Option<&'a str>,
    protocol: Option<&'static str>,
    client: Option<String>,
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    method: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    party: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

/// RFC 3339 in UTC, to the millisecond: `2024-05-01T12:00:00.123Z`.
fn timestamp(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    at.format(format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    ))
    .unwrap_or_default()
}

/// The event as one line (with its newline).
pub fn format_line(
    event: &AuditEvent,
    at: OffsetDateTime,
    context: Option<&RequestContext>,
) -> String {
    let time = timestamp(at);
    let line = Line {
        time: &time,
        event: event.kind.as_str(),
        outcome: event.outcome.as_str(),
        user: event.user.as_deref(),
        service: event.service.as_deref(),
        protocol: event.protocol,
        client: context.and_then(|c| c.client).map(|ip| ip.to_string()),
        request_id: context.and_then(|c| c.request_id.as_deref()),
        source: event.source.as_deref(),
        method: event.method,
        party: event.party.as_deref(),
        detail: event.detail.as_deref(),
    };
    // One allocation of about a line's size, not a string grown by halves.
    let mut out = Vec::with_capacity(384);
    // Serialising plain strings and options into memory cannot fail, and
    // yields UTF-8.
    let _ = serde_json::to_writer(&mut out, &line);
    out.push(b'\n');
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use castellan_core::audit::{AuditKind, Outcome};

    fn at() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(1_714_564_800_123_456_789).unwrap()
    }

    fn full() -> AuditEvent {
        AuditEvent::new(AuditKind::Login, Outcome::Failed)
            .user("alice \"the\" user\n")
            .service("portal")
            .protocol("cas")
            .source("appdb")
            .method("totp")
            .party("https://app/")
            .detail("unknown_user")
    }

    #[test]
    fn a_line_is_one_json_object_with_the_fixed_fields() {
        let ctx = RequestContext {
            request_id: Some("0badcafe-7".into()),
            client: Some("2001:db8::1".parse().unwrap()),
        };
        let line = format_line(&full(), at(), Some(&ctx));
        assert!(line.ends_with('\n'));
        assert_eq!(
            line.matches('\n').count(),
            1,
            "a newline in a value is escaped"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["time"], "2024-05-01T12:00:00.123Z");
        assert_eq!(v["event"], "login");
        assert_eq!(v["outcome"], "failed");
        assert_eq!(v["user"], "alice \"the\" user\n");
        assert_eq!(v["service"], "portal");
        assert_eq!(v["protocol"], "cas");
        assert_eq!(v["client"], "2001:db8::1");
        assert_eq!(v["request_id"], "0badcafe-7");
        assert_eq!(v["source"], "appdb");
        assert_eq!(v["method"], "totp");
        assert_eq!(v["party"], "https://app/");
        assert_eq!(v["detail"], "unknown_user");
        assert!(line.starts_with(r#"{"time":"#), "time comes first");
    }

    #[test]
    fn unknown_common_fields_are_null_and_optional_ones_absent() {
        let line = format_line(&AuditEvent::new(AuditKind::Reload, Outcome::Ok), at(), None);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let fixed = [
            "time",
            "event",
            "outcome",
            "user",
            "service",
            "protocol",
            "client",
            "request_id",
        ];
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = fixed.to_vec();
        want.sort_unstable();
        assert_eq!(keys, want);
        // Written in the fixed order (the parsed map sorts its keys).
        let at: Vec<usize> = fixed
            .iter()
            .map(|k| line.find(&format!("\"{k}\":")).unwrap())
            .collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "{line}");
        assert!(v["user"].is_null() && v["client"].is_null() && v["request_id"].is_null());
    }

    #[test]
    fn no_field_is_named_after_a_secret() {
        let ctx = RequestContext {
            request_id: Some("id".into()),
            client: Some("192.0.2.1".parse().unwrap()),
        };
        let v: serde_json::Value =
            serde_json::from_str(&format_line(&full(), at(), Some(&ctx))).unwrap();
        for key in v.as_object().unwrap().keys() {
            let key = key.to_ascii_lowercase();
            for secret in [
                "password",
                "secret",
                "otp",
                "code",
                "ticket",
                "token",
                "assertion",
                "saml",
                "attribute",
                "cookie",
                "session",
            ] {
                assert!(
                    !key.contains(secret),
                    "field {key:?} is named after a secret"
                );
            }
        }
    }
}
