//! Ready / Progressing / Degraded conditions from the machine's progress, so `kubectl wait`
//! and dashboards read an upgrade like any other Kubernetes object.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::machine::{Phase, Progress};

pub fn for_progress(
    progress: &Progress,
    previous: &[Condition],
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let phase = progress.phase;
    let message = progress.message.clone();
    let waiting = progress.waiting_for.is_some() && phase == Phase::Preflight;
    let (ready, ready_reason) = match phase {
        Phase::Succeeded => ("True", "Succeeded"),
        _ => ("False", phase.as_str()),
    };
    let (progressing, progressing_reason) = match phase {
        _ if waiting => ("True", "WaitingForLock"),
        _ if phase.is_terminal() => ("False", phase.as_str()),
        _ => ("True", phase.as_str()),
    };
    let degraded = matches!(
        phase,
        Phase::RollingBack | Phase::RolledBack | Phase::Failed
    );
    let degraded_message = if degraded {
        progress.failure.clone().unwrap_or_else(|| message.clone())
    } else {
        String::new()
    };
    [
        ("Ready", ready, ready_reason, message.clone()),
        (
            "Progressing",
            progressing,
            progressing_reason,
            message.clone(),
        ),
        (
            "Degraded",
            if degraded { "True" } else { "False" },
            phase.as_str(),
            degraded_message,
        ),
    ]
    .into_iter()
    .map(|(kind, status, reason, message)| {
        // The transition time moves only when the status does.
        let since = previous
            .iter()
            .find(|c| c.type_ == kind && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or(Time(now));
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: since,
            observed_generation: None,
        }
    })
    .collect()
}
