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

pub fn fmt_datetime(t: NaiveDateTime) -> String {
    t.format(DATETIME_FORMAT).to_string()
}

pub fn fmt_date(d: NaiveDate) -> String {
    d.format(DATE_FORMAT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

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
