//! Kubernetes-style durations ("30m", "90s", "1h30m"), as the spec's timeouts are written.

use jiff::SignedDuration;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    #[error("{0:?} is not a duration; write it like 30m, 90s or 1h30m")]
    Malformed(String),
    #[error("{0:?} must be longer than zero")]
    NotPositive(String),
}

/// Parses a sequence of `<number><unit>` with units `ms`, `s`, `m`, `h` (the CRD's CEL rule
/// accepts the same grammar, so a value the API server took always parses here).
pub fn parse_duration(text: &str) -> Result<SignedDuration, DurationError> {
    let malformed = || DurationError::Malformed(text.to_string());
    let mut rest = text;
    let mut total_ms: u128 = 0;
    if rest.is_empty() {
        return Err(malformed());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(malformed)?;
        let (number, after) = rest.split_at(digits);
        let value: f64 = number.parse().map_err(|_| malformed())?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let unit_ms: f64 = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            _ => return Err(malformed()),
        };
        total_ms += (value * unit_ms).round() as u128;
        rest = next;
    }
    if total_ms == 0 {
        return Err(DurationError::NotPositive(text.to_string()));
    }
    let ms = i64::try_from(total_ms).map_err(|_| malformed())?;
    Ok(SignedDuration::from_millis(ms))
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
}
