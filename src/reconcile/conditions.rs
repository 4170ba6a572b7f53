//! The status the operator writes: the machine's progress plus what Kubernetes tools read, the
//! conditions and `observedGeneration`, so that `kubectl wait`, Flux, Argo CD and dashboards
//! read an upgrade like any other object.
//!
//! The conditions follow kstatus (`sigs.k8s.io/cli-utils/pkg/kstatus`), the rules Flux's health
//! checks apply: `Reconciling` and `Stalled` are "abnormal-true" (absent or False means normal),
//! `Ready` is True only when the upgrade reached its target. Every condition carries the
//! generation it describes, as does `status.observedGeneration`.
//!
//! | phase | Ready | Reconciling | Stalled | Progressing | Degraded | kstatus |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | Pending … Verifying (also waiting for the lock) | False | True | False | True | False | InProgress |
//! | RollingBack | False | True | False | True | True | InProgress |
//! | Succeeded | True | False | False | False | False | Current |
//! | RolledBack | False | False | True | False | True | Failed |
//! | Failed | False | False | True | False | True | Failed |
//!
//! A `RolledBack` upgrade is Stalled (kstatus `Failed`): the hub runs its original image again,
//! but the upgrade did not reach its desired state, the target image, and will not on its own.
//! A GitOps tool must not report it as healthy. `Progressing` and `Degraded` stay for people
//! and for tools that read them (`Degraded` is True from the moment a roll back starts).
//! `tests/gitops_health.rs` checks every phase against kstatus itself and against the Argo CD
//! health check in `charts/hubgrade/argocd/health.lua`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::HubUpgradeStatus;
use crate::machine::{Phase, Progress};

/// The whole status for `progress`, as `write_status` applies it. `generation` is the
/// `metadata.generation` of the object the progress was decided on; `previous` is the status
/// read with it, whose transition times are kept for conditions that did not change.
pub fn status(
    progress: &Progress,
    generation: Option<i64>,
    previous: &HubUpgradeStatus,
    now: jiff::Timestamp,
) -> HubUpgradeStatus {
    HubUpgradeStatus {
        progress: progress.clone(),
        observed_generation: generation,
        conditions: for_progress(progress, generation, &previous.conditions, now),
        downtime_seconds: progress.downtime_seconds(),
    }
}

/// Ready, Reconciling, Stalled, Progressing and Degraded for `progress` (table in the module
/// doc).
pub fn for_progress(
    progress: &Progress,
    generation: Option<i64>,
    previous: &[Condition],
    now: jiff::Timestamp,
) -> Vec<Condition> {
    let phase = progress.phase;
    let message = &progress.message;
    let waiting = progress.waiting_for.is_some() && phase == Phase::Preflight;
    // The reason of the conditions that describe a running upgrade.
    let running_reason = if waiting {
        "WaitingForLock"
    } else {
        phase.as_str()
    };
    let running = !phase.is_terminal();
    let stalled = matches!(phase, Phase::RolledBack | Phase::Failed);
    let degraded = stalled || phase == Phase::RollingBack;
    let why = || progress.failure.clone().unwrap_or_else(|| message.clone());
    // How it ended, when the phase alone does not say it (AlreadyAtTarget, Aborted, ...).
    let ended = if progress.reason.is_empty() {
        phase.as_str()
    } else {
        progress.reason.as_str()
    };
    let (ready, ready_reason) = match phase {
        Phase::Succeeded => (true, ended),
        _ => (false, running_reason),
    };
    [
        ("Ready", ready, ready_reason, message.clone()),
        (
            "Reconciling",
            running,
            running_reason,
            if_true(running, message),
        ),
        // The terminal message says what was reached instead (rolled back to the original
        // image, or why the hub was left as it is); kstatus and Flux show it.
        (
            "Stalled",
            stalled,
            if stalled { ended } else { phase.as_str() },
            if_true(stalled, message),
        ),
        ("Progressing", running, running_reason, message.clone()),
        (
            "Degraded",
            degraded,
            phase.as_str(),
            if degraded { why() } else { String::new() },
        ),
    ]
    .into_iter()
    .map(|(kind, holds, reason, message)| {
        let status = if holds { "True" } else { "False" };
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
            observed_generation: generation,
        }
    })
    .collect()
}

fn if_true(holds: bool, message: &str) -> String {
    if holds {
        message.to_string()
    } else {
        String::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn condition<'a>(conditions: &'a [Condition], kind: &str) -> &'a Condition {
        conditions
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap_or_else(|| panic!("no {kind} condition"))
    }

    fn progress(phase: Phase) -> Progress {
        Progress {
            phase,
            message: format!("in {phase}"),
            ..Progress::default()
        }
    }

    #[test]
    fn every_phase_has_the_kstatus_conditions_of_its_row() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        for phase in Phase::ALL {
            let conditions = for_progress(&progress(phase), Some(3), &[], now);
            let status = |kind| condition(&conditions, kind).status.as_str();
            let running = !phase.is_terminal();
            let stalled = matches!(phase, Phase::Failed | Phase::RolledBack);
            assert_eq!(
                status("Ready") == "True",
                phase == Phase::Succeeded,
                "{phase}"
            );
            assert_eq!(status("Reconciling") == "True", running, "{phase}");
            assert_eq!(status("Stalled") == "True", stalled, "{phase}");
            assert!(
                conditions.iter().all(|c| c.observed_generation == Some(3)),
                "{phase}: {conditions:?}"
            );
        }
    }

    #[test]
    fn a_stalled_upgrade_says_what_it_reached_and_a_normal_one_says_nothing() {
        let now = jiff::Timestamp::UNIX_EPOCH;
        let mut rolled_back = progress(Phase::RolledBack);
        rolled_back.message = "rolled back to hub:1: the migration failed".into();
        rolled_back.failure = Some("the migration failed".into());
        let conditions = for_progress(&rolled_back, Some(1), &[], now);
        let stalled = condition(&conditions, "Stalled");
        assert_eq!(stalled.reason, "RolledBack");
        assert_eq!(
            stalled.message,
            "rolled back to hub:1: the migration failed"
        );
        assert_eq!(
            condition(&conditions, "Degraded").message,
            "the migration failed"
        );

        let conditions = for_progress(&progress(Phase::Succeeded), Some(1), &[], now);
        assert_eq!(condition(&conditions, "Stalled").message, "");
        assert_eq!(condition(&conditions, "Reconciling").message, "");
    }

    #[test]
    fn waiting_for_the_lock_is_reconciling_with_its_own_reason() {
        let mut waiting = progress(Phase::Preflight);
        waiting.waiting_for = Some("first".into());
        let conditions = for_progress(&waiting, Some(1), &[], jiff::Timestamp::UNIX_EPOCH);
        let reconciling = condition(&conditions, "Reconciling");
        assert_eq!(
            (reconciling.status.as_str(), reconciling.reason.as_str()),
            ("True", "WaitingForLock")
        );
    }

    #[test]
    fn a_transition_time_moves_only_when_the_status_does() {
        let before = jiff::Timestamp::UNIX_EPOCH;
        let later = before + jiff::SignedDuration::from_secs(60);
        let first = for_progress(&progress(Phase::Preflight), Some(1), &[], before);
        let second = for_progress(&progress(Phase::Migrating), Some(1), &first, later);
        assert_eq!(
            condition(&second, "Reconciling").last_transition_time,
            Time(before)
        );
        let done = for_progress(&progress(Phase::Succeeded), Some(1), &second, later);
        assert_eq!(
            condition(&done, "Reconciling").last_transition_time,
            Time(later)
        );
        assert_eq!(condition(&done, "Ready").last_transition_time, Time(later));
    }
}
