//! Timestamps as CAS and SAML 1.1 clients read them (UTC, ISO 8601).

use time::OffsetDateTime;

/// `2026-11-25T15:30:46.123Z`
pub fn iso8601_millis(unix_millis: u64) -> String {
    let t = OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_millis) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(
            super::iso8601_millis(1_764_084_646_123),
            "2025-11-25T15:30:46.123Z"
        );
        assert_eq!(super::iso8601_millis(0), "1970-01-01T00:00:00.000Z");
    }
}
