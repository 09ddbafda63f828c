//! Dates and times as office staff type them.
//!
//! Keqing stores local wall-clock times of the office (China Standard Time,
//! one zone for all 27 offices) as `YYYY-MM-DDTHH:MM:SS` strings: they sort
//! as text and read the same in SQL, JSON and the automerge document.

use crate::DomainError;
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};

pub const DATE_FORMAT: &str = "%Y-%m-%d";
pub const DATETIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// Parses `2026-11-20`, `2026-11-20T09:30`, `2026-11-20 09:30` or with seconds.
/// A date alone means the start of that day.
pub fn parse_datetime(s: &str) -> Result<NaiveDateTime, DomainError> {
    let t = s.trim();
    for fmt in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(dt) = NaiveDateTime::parse_from_str(t, fmt) {
            return check_year(dt.date()).map(|_| dt);
        }
    }
    parse_date(t).map(|d| d.and_time(NaiveTime::MIN))
}

/// Parses `2026-11-20` (also `2026/11/20`).
pub fn parse_date(s: &str) -> Result<NaiveDate, DomainError> {
    let t = s.trim();
    let d = NaiveDate::parse_from_str(t, DATE_FORMAT)
        .or_else(|_| NaiveDate::parse_from_str(t, "%Y/%m/%d"))
        .map_err(|_| DomainError::InvalidDate(s.to_string()))?;
    check_year(d).map_err(|_| DomainError::InvalidDate(s.to_string()))
}

/// Years outside 1900..=2200 are typos, not medical history.
fn check_year(d: NaiveDate) -> Result<NaiveDate, DomainError> {
    use chrono::Datelike;
    if (1900..=2200).contains(&d.year()) {
        Ok(d)
    } else {
        Err(DomainError::InvalidDate(d.to_string()))
    }
}

/// How far after the clock that records it a record's time may be (an
/// evening entry of tomorrow morning's appointment is fine; a typo in the
/// year or a wrong clock is not).
pub const MAX_AHEAD: chrono::Duration = chrono::Duration::days(1);

/// Refuses a record time `at` more than [`MAX_AHEAD`] after `now`, the
/// clock of whoever records or receives it (`field` names the input).
pub fn check_not_ahead(
    field: &'static str,
    at: NaiveDateTime,
    now: NaiveDateTime,
) -> Result<(), DomainError> {
    if at > now + MAX_AHEAD {
        return Err(DomainError::invalid(
            field,
            format!(
                "{} 晚于本机时间一天以上 is more than a day after the clock ({}): a typo in the date, or a wrong clock?",
                fmt_datetime(at),
                fmt_datetime(now)
            ),
        ));
    }
    Ok(())
}

// Stored dates are written and read by the thousand (a dossier's
// projection rows, the day's follow-up list): the fixed forms are done by
// hand, byte for byte what chrono's `%Y-%m-%d` / `%Y-%m-%dT%H:%M:%S` give
// for years 0–9999, and chrono does the rest. Its format strings are
// interpreted on every call, which took ~12 % of a due list.

pub fn fmt_datetime(t: NaiveDateTime) -> String {
    use chrono::{Datelike, Timelike};
    if !(0..=9999).contains(&t.year()) {
        return t.format(DATETIME_FORMAT).to_string();
    }
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

pub fn fmt_date(d: NaiveDate) -> String {
    use chrono::Datelike;
    if !(0..=9999).contains(&d.year()) {
        return d.format(DATE_FORMAT).to_string();
    }
    format!("{:04}-{:02}-{:02}", d.year(), d.month(), d.day())
}

/// The decimal number in `s[range]`, if it is all ASCII digits.
fn digits(s: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
    s.get(range)?.iter().try_fold(0u32, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
    })
}

/// A date as [`fmt_date`] stores it (`2026-11-20`); `None` if it is not one.
pub fn read_stored_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let year = i32::try_from(digits(b, 0..4)?).ok()?;
        return NaiveDate::from_ymd_opt(year, digits(b, 5..7)?, digits(b, 8..10)?);
    }
    NaiveDate::parse_from_str(s, DATE_FORMAT).ok()
}

/// A time as [`fmt_datetime`] stores it (`2026-11-20T09:30:00`, or with a
/// space or fractional seconds as SQLite may write); `None` if it is not one.
pub fn read_stored_datetime(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() == 19 && matches!(b[10], b'T' | b' ') && b[13] == b':' && b[16] == b':' {
        let date = read_stored_date(s.get(..10)?)?;
        return date.and_hms_opt(digits(b, 11..13)?, digits(b, 14..16)?, digits(b, 17..19)?);
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    #[test]
    fn accepted_forms() {
        let want = NaiveDate::from_ymd_opt(2026, 11, 20)
            .unwrap()
            .and_hms_opt(9, 30, 0)
            .unwrap();
        assert_eq!(parse_datetime("2026-11-20T09:30").unwrap(), want);
        assert_eq!(parse_datetime("2026-11-20 09:30").unwrap(), want);
        assert_eq!(parse_datetime("2026-11-20T09:30:00").unwrap(), want);
        assert_eq!(
            parse_datetime("2026-11-20").unwrap(),
            want.date().and_hms_opt(0, 0, 0).unwrap()
        );
        assert_eq!(parse_date("2026/11/20").unwrap(), want.date());
        assert_eq!(fmt_datetime(want), "2026-11-20T09:30:00");
    }

    #[test]
    fn stored_forms_match_chrono_byte_for_byte() {
        let mut d = NaiveDate::from_ymd_opt(1899, 12, 25).unwrap();
        let mut k = 0u32;
        while d.year() < 2210 {
            let t = d.and_hms_opt(k % 24, (k * 7) % 60, (k * 13) % 60).unwrap();
            assert_eq!(fmt_date(d), d.format(DATE_FORMAT).to_string());
            assert_eq!(fmt_datetime(t), t.format(DATETIME_FORMAT).to_string());
            assert_eq!(read_stored_date(&fmt_date(d)), Some(d));
            assert_eq!(read_stored_datetime(&fmt_datetime(t)), Some(t));
            d += chrono::Duration::days(3);
            k += 1;
        }
        let far = NaiveDate::from_ymd_opt(12345, 1, 2).unwrap();
        assert_eq!(fmt_date(far), far.format(DATE_FORMAT).to_string());
        assert_eq!(read_stored_date(&fmt_date(far)), Some(far));
        let t = NaiveDate::from_ymd_opt(2026, 11, 20)
            .unwrap()
            .and_hms_milli_opt(9, 30, 1, 250)
            .unwrap();
        assert_eq!(
            read_stored_datetime("2026-11-20 09:30:01.250"),
            Some(t),
            "SQLite's own form"
        );
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "2026-1-011",
            "２０２６-11-20",
            "2026-11-20T25:00:00",
            "2026-11-20X09:30:00",
            "",
        ] {
            assert_eq!(read_stored_date(bad), None, "{bad}");
            assert_eq!(read_stored_datetime(bad), None, "{bad}");
        }
    }

    #[test]
    fn rejected_forms() {
        for s in [
            "2026-02-30",
            "2026-13-01",
            "20261120",
            "yesterday",
            "",
            "2026-11-20T25:00",
            "0001-01-01",
            "9999-01-01",
        ] {
            assert!(parse_datetime(s).is_err(), "{s}");
        }
    }
}
