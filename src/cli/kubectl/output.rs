//! Small pieces of output the commands share: durations and ages as people read them, the
//! machine-readable formats, and the `--timeout` parser.

use std::time::Duration;

use serde::Serialize;

use super::exit::PluginError;

/// `-o json|yaml`: the object (or its status) for a program to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectFormat {
    Json,
    Yaml,
}

impl ObjectFormat {
    pub fn render(self, value: &impl Serialize) -> Result<String, PluginError> {
        let text = match self {
            ObjectFormat::Json => serde_json::to_string_pretty(value)
                .map(|json| json + "\n")
                .map_err(|e| e.to_string()),
            ObjectFormat::Yaml => serde_saphyr::to_string(value).map_err(|e| e.to_string()),
        };
        text.map_err(|e| PluginError::Refused(format!("could not render the output: {e}")))
    }
}

/// An object as `kubectl get -o yaml` shows it: without `metadata.managedFields`.
pub fn without_managed_fields(mut object: serde_json::Value) -> serde_json::Value {
    if let Some(metadata) = object.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        metadata.remove("managedFields");
    }
    object
}

/// `--timeout`: a duration as the spec writes them (30s, 10m, 1h30m).
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = crate::api::parse_duration(text).map_err(|e| e.to_string())?;
    Duration::try_from(duration).map_err(|e| format!("{text:?}: {e}"))
}

/// `42s`, `3m05s`, `1h02m`.
pub fn seconds(total: i64) -> String {
    let total = total.max(0);
    let (hours, minutes, secs) = (total / 3600, total % 3600 / 60, total % 60);
    if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{secs:02}s")
    } else {
        format!("{secs}s")
    }
}

/// An object's age as `kubectl get` shows it: `45s`, `12m`, `5h`, `3d`.
pub fn age(since: jiff::Timestamp, now: jiff::Timestamp) -> String {
    let total = since.duration_until(now).as_secs().max(0);
    match total {
        0..120 => format!("{total}s"),
        120..7200 => format!("{}m", total / 60),
        7200..172_800 => format!("{}h", total / 3600),
        _ => format!("{}d", total / 86_400),
    }
}

/// Left-aligned columns, three spaces apart; the last one unpadded.
pub fn columns(header: &[&str], rows: impl Iterator<Item = Vec<String>>) -> String {
    let mut all: Vec<Vec<String>> = vec![header.iter().map(|h| h.to_string()).collect()];
    all.extend(rows);
    let last = header.len() - 1;
    let widths: Vec<usize> = (0..last)
        .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut text = String::new();
    for row in all {
        for (cell, width) in row.iter().zip(&widths) {
            text.push_str(&format!("{cell:<width$}   "));
        }
        text.push_str(&row[last]);
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(seconds(0), "0s");
        assert_eq!(seconds(42), "42s");
        assert_eq!(seconds(185), "3m05s");
        assert_eq!(seconds(3720), "1h02m");
        assert_eq!(seconds(-4), "0s");
    }

    #[test]
    fn ages_read_like_kubectl_get() {
        let now: jiff::Timestamp = "2026-01-02T03:04:05Z".parse().expect("time");
        let ago = |secs: i64| now - jiff::SignedDuration::from_secs(secs);
        assert_eq!(age(ago(45), now), "45s");
        assert_eq!(age(ago(12 * 60), now), "12m");
        assert_eq!(age(ago(5 * 3600), now), "5h");
        assert_eq!(age(ago(3 * 86_400), now), "3d");
    }

    #[test]
    fn timeouts_are_durations_like_the_spec_s() {
        assert_eq!(parse_timeout("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("0s").is_err());
    }
}
