//! Validation of user input: dates, names, categories. Every failure names the field.

use serde::Serialize;

/// One input field that failed validation, with what is expected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field's name as the API spells it (e.g. `birth_date`).
    pub field: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl FieldError {
    /// A new error for `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Member categories understood by Amphi (DOMAIN.md), as API identifiers.
pub const CATEGORIES: &[&str] = &[
    "flowing",        // 流动党员
    "migrant-worker", // 外出务工
    "two-dwelling",   // 两栖
    "elderly",        // 老党员
    "retired",        // 离退休
    "no-post",        // 无职党员
    "in-service",     // 在职党员进社区
    "farmer-herder",  // 农牧民党员
];

/// Activity kinds (组织生活, 学习教育, 志愿服务, 主题党日, 党费, and other).
pub const ACTIVITY_KINDS: &[&str] = &[
    "organisation-life",
    "study",
    "volunteer-service",
    "party-day",
    "dues",
    "other",
];

/// Review ratings for the half-yearly review.
pub const RATINGS: &[&str] = &["excellent", "good", "fair", "poor"];

/// Genders accepted in identity.
pub const GENDERS: &[&str] = &["female", "male"];

/// Checks an ISO 8601 calendar date `YYYY-MM-DD` (years 1900–2199).
pub fn date(field: &str, value: &str) -> Result<(), FieldError> {
    let bad = || FieldError::new(field, format!("{value:?} is not a date; use YYYY-MM-DD"));
    let b = value.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let num = |s: &str| s.parse::<u32>().map_err(|_| bad());
    if !value[..4]
        .bytes()
        .chain(value[5..7].bytes())
        .chain(value[8..].bytes())
        .all(|c| c.is_ascii_digit())
    {
        return Err(bad());
    }
    let (y, m, d) = (num(&value[..4])?, num(&value[5..7])?, num(&value[8..])?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return Err(bad()),
    };
    if !(1900..=2199).contains(&y) || d == 0 || d > days {
        return Err(bad());
    }
    Ok(())
}

/// Checks a half-year period like `2026H1`.
pub fn period(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = value.len() == 6
        && value[..4].bytes().all(|c| c.is_ascii_digit())
        && (&value[4..] == "H1" || &value[4..] == "H2");
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not a half-year; use e.g. 2026H1"),
        ))
    }
}

/// Checks free text: trimmed non-empty (unless `allow_empty`), at most `max` characters, no
/// control characters.
pub fn text(field: &str, value: &str, max: usize, allow_empty: bool) -> Result<(), FieldError> {
    if !allow_empty && value.trim().is_empty() {
        return Err(FieldError::new(field, "must not be empty"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(field, format!("at most {max} characters")));
    }
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Checks that `value` is one of `allowed`.
pub fn one_of(field: &str, value: &str, allowed: &[&str]) -> Result<(), FieldError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{value:?} is not one of {}", allowed.join(", ")),
        ))
    }
}

/// Checks a 身份证号: 15 or 18 characters, digits with an optional final X.
pub fn id_number(field: &str, value: &str) -> Result<(), FieldError> {
    let b = value.as_bytes();
    let ok = (b.len() == 18 || b.len() == 15)
        && b[..b.len() - 1].iter().all(u8::is_ascii_digit)
        && (b[b.len() - 1].is_ascii_digit() || b[b.len() - 1] == b'X');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "an ID number is 15 or 18 digits; the last may be X",
        ))
    }
}

/// Checks a phone number: 3 to 20 characters of digits, spaces, `+` and `-`.
pub fn phone(field: &str, value: &str) -> Result<(), FieldError> {
    let ok = (3..=20).contains(&value.len())
        && value
            .bytes()
            .all(|c| c.is_ascii_digit() || c == b' ' || c == b'+' || c == b'-');
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "a phone number is 3 to 20 digits, spaces, + or -",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_checked_against_the_calendar() {
        for ok in ["2026-11-23", "2024-02-29", "1971-03-02"] {
            assert!(date("d", ok).is_ok(), "{ok}");
        }
        for bad in [
            "2025-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "26-1-1",
            "2026/01/01",
            "２026-01-01",
            "",
        ] {
            let e = date("birth_date", bad).unwrap_err();
            assert_eq!(e.field, "birth_date", "{bad}");
        }
    }

    #[test]
    fn periods_ids_and_phones() {
        assert!(period("p", "2026H1").is_ok());
        assert!(period("p", "2026H3").is_err());
        assert!(id_number("i", "65422119710302001X").is_ok());
        assert!(id_number("i", "6542211971030200XX").is_err());
        assert!(phone("p", "+86 138-0000-0000").is_ok());
        assert!(phone("p", "call me").is_err());
        assert!(text("t", "  ", 10, false).is_err());
        assert!(text("t", "a\u{0}b", 10, false).is_err());
        assert!(one_of("g", "female", GENDERS).is_ok());
        assert!(one_of("g", "f", GENDERS).is_err());
    }
}
