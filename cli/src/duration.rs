//! Durations on the command line: `90s`, `30m`, `12h`, `7d`, `2w`, or sums like `1h30m`.

use std::time::Duration;

/// Why a duration was refused; clap prints it under the flag's name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; use e.g. 30m, 12h or 7d")]
    Empty,
    #[error("{0:?} lacks a unit; use s, m, h, d or w, e.g. 30m")]
    MissingUnit(String),
    #[error("{0:?} is not a duration; use a number and a unit (s, m, h, d, w), e.g. 12h or 1h30m")]
    Malformed(String),
    #[error("{0:?} is too long")]
    Overflow(String),
    #[error("{0:?} is zero; give a positive duration")]
    Zero(String),
}

/// Parses a positive duration made of `<number><unit>` parts, units `s`, `m`, `h`, `d`, `w`.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let s = text.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    let malformed = || DurationError::Malformed(text.to_owned());
    let overflow = || DurationError::Overflow(text.to_owned());
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(malformed());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| overflow())?;
        rest = &rest[digits..];
        let unit = rest.chars().next().ok_or_else(|| {
            if total == 0 && digits == s.len() {
                DurationError::MissingUnit(text.to_owned())
            } else {
                malformed()
            }
        })?;
        let secs_per_unit = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(malformed()),
        };
        rest = &rest[unit.len_utf8()..];
        total = number
            .checked_mul(secs_per_unit)
            .and_then(|secs| total.checked_add(secs))
            .ok_or_else(overflow)?;
    }
    if total == 0 {
        return Err(DurationError::Zero(text.to_owned()));
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> u64 {
        parse_duration(s).unwrap().as_secs()
    }

    #[test]
    fn parses_each_unit_and_sums() {
        assert_eq!(secs("90s"), 90);
        assert_eq!(secs("30m"), 1800);
        assert_eq!(secs("12h"), 43_200);
        assert_eq!(secs("7d"), 604_800);
        assert_eq!(secs("2w"), 1_209_600);
        assert_eq!(secs("1h30m"), 5400);
        assert_eq!(secs(" 1d12h "), 129_600);
    }

    #[test]
    fn refuses_what_is_not_a_positive_duration() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("30"),
            Err(DurationError::MissingUnit("30".into()))
        );
        assert_eq!(
            parse_duration("1h30"),
            Err(DurationError::Malformed("1h30".into()))
        );
        assert!(matches!(
            parse_duration("12y"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("h"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("-5m"),
            Err(DurationError::Malformed(_))
        ));
        assert!(matches!(
            parse_duration("1.5h"),
            Err(DurationError::Malformed(_))
        ));
        assert_eq!(parse_duration("0m"), Err(DurationError::Zero("0m".into())));
        assert!(matches!(
            parse_duration("99999999999999999999w"),
            Err(DurationError::Overflow(_))
        ));
        assert!(matches!(
            parse_duration("30000000000000000w"),
            Err(DurationError::Overflow(_))
        ));
    }
}
