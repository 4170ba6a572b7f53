//! The downtime an upgrade will likely cause, from the measured downtimes of past upgrades in
//! the ledger: `hubgrade plan` prints it, and the ledger records it next to the measured one
//! when it first sees an upgrade.

use serde::Serialize;

use super::{Filter, UpgradeEntry};

/// A prediction and how it was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Prediction {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<i64>,
    /// How it was predicted, or why there is no prediction.
    pub basis: String,
}

/// One past upgrade, as far as a prediction needs it; newest first in a sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub namespace: String,
    pub hub: String,
    pub phase: String,
    pub downtime_seconds: Option<i64>,
}

impl From<&UpgradeEntry> for Sample {
    fn from(entry: &UpgradeEntry) -> Sample {
        Sample {
            namespace: entry.namespace.clone(),
            hub: entry.hub.clone(),
            phase: entry.phase.clone(),
            downtime_seconds: entry.downtime_seconds,
        }
    }
}

/// How many past upgrades a prediction averages.
const SAMPLE: usize = 5;

/// The mean downtime of the last (up to) five succeeded upgrades of `hub`, else of other hubs,
/// else none, saying which; `past` newest first, or why there is no history to read.
pub fn predict(past: &Result<Vec<Sample>, String>, hub: &Filter) -> Prediction {
    let samples = match past {
        Ok(samples) => samples,
        Err(why) => {
            return Prediction {
                seconds: None,
                basis: format!("no prediction: {why}"),
            };
        }
    };
    let measured = |s: &&Sample| s.phase == "Succeeded" && s.downtime_seconds.is_some();
    let this_hub = |s: &&Sample| {
        Some(&s.namespace) == hub.namespace.as_ref() && Some(&s.hub) == hub.hub.as_ref()
    };
    let mine: Vec<&Sample> = samples
        .iter()
        .filter(measured)
        .filter(this_hub)
        .take(SAMPLE)
        .collect();
    let (sample, whose) = if mine.is_empty() {
        let others: Vec<&Sample> = samples.iter().filter(measured).take(SAMPLE).collect();
        (others, "other hubs")
    } else {
        (mine, "this hub")
    };
    if sample.is_empty() {
        return Prediction {
            seconds: None,
            basis: "no prediction: the ledger has no finished upgrade yet (the rehearsal's \
                    migration time, measured when the upgrade runs, is the first estimate)"
                .into(),
        };
    }
    let times: Vec<i64> = sample.iter().filter_map(|s| s.downtime_seconds).collect();
    let mean = (times.iter().sum::<i64>() as f64 / times.len() as f64).round() as i64;
    Prediction {
        seconds: Some(mean),
        basis: format!(
            "the mean of the last {} measured upgrade(s) of {whose} in the ledger ({})",
            times.len(),
            times
                .iter()
                .map(|t| format!("{t}s"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn past(hub: &str, phase: &str, downtime: Option<i64>) -> Sample {
        Sample {
            namespace: "jhub".into(),
            hub: hub.into(),
            phase: phase.into(),
            downtime_seconds: downtime,
        }
    }

    #[test]
    fn the_downtime_is_predicted_from_this_hub_first_then_others_else_not_at_all() {
        let hub = Filter {
            namespace: Some("jhub".into()),
            hub: Some("hub".into()),
        };
        let ledger = Ok(vec![
            past("hub", "Succeeded", Some(40)),
            past("hub", "RolledBack", Some(300)),
            past("hub", "Succeeded", Some(50)),
            past("other", "Succeeded", Some(9)),
        ]);
        let mine = predict(&ledger, &hub);
        assert_eq!(mine.seconds, Some(45));
        assert!(mine.basis.contains("this hub") && mine.basis.contains("40s, 50s"));
        let others = predict(&Ok(vec![past("other", "Succeeded", Some(9))]), &hub);
        assert_eq!(others.seconds, Some(9));
        assert!(others.basis.contains("other hubs"));
        let none = predict(&Ok(vec![past("hub", "Failed", None)]), &hub);
        assert_eq!(none.seconds, None);
        assert!(none.basis.starts_with("no prediction"));
        let no_ledger = predict(&Err("no ledger given".into()), &hub);
        assert_eq!(no_ledger.basis, "no prediction: no ledger given");
    }
}
