//! Timestamps as CAS and SAML 1.1 clients read them (UTC, ISO 8601).

/// `2026-11-25T15:30:46.123Z`. Written by hand: it is in every CAS 3
/// validation, and a calendar library's conversion and `format!` took a
/// measurable share of one.
pub fn iso8601_millis(unix_millis: u64) -> String {
    let millis = unix_millis % 1000;
    let secs = unix_millis / 1000;
    let (days, secs_of_day) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    let mut out = [0u8; 24];
    let mut put = |at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, year.min(9999));
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, secs_of_day / 3600);
    put(14, 2, secs_of_day / 60 % 60);
    put(17, 2, secs_of_day % 60);
    put(20, 3, millis);
    for (at, c) in [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
    ] {
        out[at] = c;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// Year, month and day of the `days`th day after 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use time::OffsetDateTime;

    #[test]
    fn formats_utc_with_millis() {
        assert_eq!(
            super::iso8601_millis(1_764_084_646_123),
            "2025-11-25T15:30:46.123Z"
        );
        assert_eq!(super::iso8601_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::iso8601_millis(951_825_600_007),
            "2000-02-29T12:00:00.007Z"
        );
    }

    #[test]
    fn agrees_with_the_time_crate_across_leap_years_and_centuries() {
        // Every day from 1970 to past 2400, at a time of day that moves.
        let mut millis = 0u64;
        while millis < 13_600_000_000_000 {
            let t =
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second(),
                t.millisecond()
            );
            assert_eq!(super::iso8601_millis(millis), expected, "{millis}");
            millis += 86_400_000 + 3_601_001;
        }
    }
}
