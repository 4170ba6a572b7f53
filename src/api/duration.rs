//! Kubernetes-style durations ("30m", "90s", "1h30m"), as the spec's timeouts are written.

use jiff::SignedDuration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("{0:?} is not a duration; write it like 30m, 90s or 1h30m (largest unit first)")]
    Malformed(String),
    #[error("{0:?} must be longer than zero")]
    NotPositive(String),
}

/// Parses a sequence of `<number><unit>` with units `ms`, `s`, `m`, `h`, largest unit first,
/// each once, a fraction only on the last.
///
/// jiff's friendly format does the parsing. It also reads spaces, signs, long unit names and
/// ISO 8601, which the CRD refuses, so only digits, `.` and the four units are let through. The
/// CRD's CEL rule takes exactly this grammar (`30m1h`, `1m1m`, `1.5h30m` are refused at
/// admission, see tests/invalid/); should one slip through, it is refused here, when the upgrade
/// is planned, with a message saying how to write it.
pub fn parse_duration(text: &str) -> Result<SignedDuration, DurationError> {
    let malformed = || DurationError::Malformed(text.to_string());
    let kubernetes_style = text.starts_with(|c: char| c.is_ascii_digit())
        && text
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'h' | 'm' | 's'));
    if !kubernetes_style {
        return Err(malformed());
    }
    let duration: SignedDuration = text.parse().map_err(|_| malformed())?;
    if !duration.is_positive() {
        return Err(DurationError::NotPositive(text.to_string()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kubernetes_style_durations() {
        assert_eq!(parse_duration("30m"), Ok(SignedDuration::from_mins(30)));
        assert_eq!(parse_duration("90s"), Ok(SignedDuration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(parse_duration("1.5h"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(
            parse_duration("250ms"),
            Ok(SignedDuration::from_millis(250))
        );
        assert_eq!(
            parse_duration("1h2m3s4ms"),
            Ok(SignedDuration::from_millis(3_723_004))
        );
    }

    #[test]
    fn refuses_what_is_not_a_positive_duration() {
        for bad in ["", "30", "m", "30 m", "-5m", "1d", "abc", "5mm"] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Malformed(_))),
                "{bad:?} was accepted"
            );
        }
        assert_eq!(
            parse_duration("0s"),
            Err(DurationError::NotPositive("0s".into()))
        );
    }

    #[test]
    fn refuses_units_out_of_order_repeated_or_with_an_early_fraction() {
        for odd in ["30m1h", "1m1m", "1.5h30m"] {
            let error = parse_duration(odd).expect_err(odd);
            assert!(error.to_string().contains("largest unit first"), "{error}");
        }
    }

    #[test]
    fn refuses_what_jiff_reads_but_the_crd_does_not() {
        for bad in [
            "PT30M",
            "30 minutes",
            "30min",
            "1h 30m",
            "+5m",
            "5m ago",
            "1.h",
        ] {
            assert!(
                matches!(parse_duration(bad), Err(DurationError::Malformed(_))),
                "{bad:?} was accepted"
            );
        }
    }
}
