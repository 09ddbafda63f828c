//! Phone numbers: the key by which a caller's dossier is found again.
//!
//! The consultation register writes the caller's number first, in whatever
//! form the caller says it. Two forms of the same number must find the same
//! dossier, so every number is normalised to digits only before it is stored
//! or compared: `+86 138-0013-8000` and `13800138000` are one number.

use crate::DomainError;

/// Normalises a Chinese mobile or landline number to its digits.
///
/// Accepted: an 11-digit mobile starting with 1 (second digit 3–9), with an
/// optional `+86`/`0086`/`86` prefix; or a landline with its area code
/// (`0` + 2–3 digit area code + 7–8 digit number, 10–12 digits in all),
/// with an optional `-` extension separator ignored. Spaces, dashes, dots and
/// parentheses are allowed as separators.
///
/// ```
/// use keqing_shared::phone::normalise;
/// assert_eq!(normalise("+86 138-0013-8000").unwrap(), "13800138000");
/// assert_eq!(normalise("(010) 6552 9988").unwrap(), "01065529988");
/// assert!(normalise("12345").is_err());
/// ```
pub fn normalise(input: &str) -> Result<String, DomainError> {
    let bad = || DomainError::InvalidPhone(input.to_string());
    let mut digits = String::with_capacity(input.len());
    for (i, c) in input.trim().chars().enumerate() {
        match c {
            '0'..='9' => digits.push(c),
            ' ' | '-' | '.' | '(' | ')' | '（' | '）' => {}
            '+' if i == 0 => {}
            _ => return Err(bad()),
        }
    }
    let digits = if let Some(rest) = digits.strip_prefix("0086") {
        rest.to_string()
    } else if digits.len() == 13 && digits.starts_with("86") {
        digits[2..].to_string()
    } else {
        digits
    };
    let bytes = digits.as_bytes();
    let is_mobile = bytes.len() == 11 && bytes[0] == b'1' && (b'3'..=b'9').contains(&bytes[1]);
    let is_landline = (10..=12).contains(&bytes.len()) && bytes[0] == b'0' && bytes[1] != b'0';
    if is_mobile || is_landline {
        Ok(digits)
    } else {
        Err(bad())
    }
}

/// Whether `query` looks like (part of) a phone number rather than a name.
pub fn looks_like_digits(query: &str) -> bool {
    let q = query.trim();
    !q.is_empty()
        && q.chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '+'))
        && q.chars().any(|c| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mobiles() {
        assert_eq!(normalise("13800138000").unwrap(), "13800138000");
        assert_eq!(normalise("138 0013 8000").unwrap(), "13800138000");
        assert_eq!(normalise("+8613800138000").unwrap(), "13800138000");
        assert_eq!(normalise("0086-138-0013-8000").unwrap(), "13800138000");
        assert!(
            normalise("12800138000").is_err(),
            "second digit 2 is not a mobile prefix"
        );
        assert!(
            normalise("1380013800").is_err(),
            "10 digits starting with 1"
        );
        assert!(normalise("138001380001").is_err(), "12 digits");
    }

    #[test]
    fn landlines() {
        assert_eq!(normalise("010-65529988").unwrap(), "01065529988");
        assert_eq!(normalise("0755-8888888").unwrap(), "07558888888");
        assert_eq!(normalise("(0971) 6123456").unwrap(), "09716123456");
        assert!(normalise("65529988").is_err(), "no area code");
        assert!(
            normalise("0065529988").is_err(),
            "area code cannot start 00"
        );
    }

    #[test]
    fn garbage() {
        for s in [
            "",
            "abc",
            "138o0138000",
            "1380013800０",
            "+",
            "13800138000x",
            "1+3800138000",
        ] {
            assert!(
                matches!(normalise(s), Err(DomainError::InvalidPhone(_))),
                "{s:?}"
            );
        }
    }

    #[test]
    fn digit_queries() {
        assert!(looks_like_digits("8000"));
        assert!(looks_like_digits("138-0013"));
        assert!(!looks_like_digits("张三"));
        assert!(!looks_like_digits("  "));
    }
}
