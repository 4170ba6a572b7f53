//! One table test per transition of `hubgrade::machine::decide`: given a phase and an
//! observation, the action to take, the phase to record and the progress fields that matter.

#[allow(dead_code)]
mod machine_support;

use hubgrade::machine::{
    Action, Decision, DrainPlan, EventKind, HubApiAnswers, ImageManagement, LockState,
    MigrationFailure, OnDrainTimeout, Original, Outcome, Phase, Plan, Preflight, Progress, Release,
    RollbackPolicy, StepState, Target, Window, World, decide,
};
use jiff::SignedDuration;
use machine_support::*;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The timeline without timestamps and messages: which phases were entered and how they ended.
fn timeline(progress: &Progress) -> Vec<(Phase, Option<Outcome>)> {
    progress
        .steps
        .iter()
        .map(|step| (step.name, step.outcome))
        .collect()
}

/// The message recorded on the step of `phase` (the last one with that name).
fn step_message(progress: &Progress, phase: Phase) -> &str {
    &progress
        .steps
        .iter()
        .rev()
        .find(|step| step.name == phase)
        .unwrap_or_else(|| panic!("no step {phase} in {:?}", progress.steps))
        .message
}

/// The kind and reason of the decision's Kubernetes Event.
fn notice_of(decision: &Decision) -> (EventKind, &str) {
    let notice = decision
        .notice
        .as_ref()
        .unwrap_or_else(|| panic!("expected a notice, got none: {decision:?}"));
    (notice.kind, notice.reason.as_str())
}

fn drain_plan(max_active_servers: u32, on_timeout: OnDrainTimeout) -> Plan {
    Plan {
        drain: Some(DrainPlan {
            max_active_servers,
            on_timeout,
        }),
        ..plan()
    }
}

fn manual_plan() -> Plan {
    Plan {
        rollback: RollbackPolicy::Manual,
        ..plan()
    }
}

fn external_plan() -> Plan {
    Plan {
        image_management: Some(ImageManagement::External),
        ..plan()
    }
}

fn preflight_results(problems: &[&str]) -> Option<Preflight> {
    Some(Preflight {
        problems: problems.iter().map(|p| p.to_string()).collect(),
    })
}

/// A world in Preflight whose checks passed, with the lock in `lock`.
fn checked_world(lock: LockState) -> World {
    World {
        lock,
        preflight: preflight_results(&[]),
        ..world()
    }
}

/// A time just past `limit` after [`start`].
fn past(limit: SignedDuration) -> jiff::Timestamp {
    start() + limit + SignedDuration::from_secs(1)
}

/// Asserts the decision ends the upgrade as Failed after the hub was touched: the lock is kept
/// (no ReleaseLock), the failure is recorded and the open step is closed as Failed.
fn assert_failed_touched(decision: &Decision, failed_phase: Phase, failure_contains: &str) {
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Failed);
    let failure = progress.failure.as_deref().unwrap_or_default();
    assert!(
        failure.contains(failure_contains),
        "failure {failure:?} should mention {failure_contains:?}"
    );
    assert!(progress.message.contains(failure_contains));
    assert_eq!(
        timeline(progress)[timeline(progress).len() - 2..],
        [
            (failed_phase, Some(Outcome::Failed)),
            (Phase::Failed, Some(Outcome::Failed))
        ]
    );
    assert_eq!(notice_of(decision), (EventKind::Warning, "Failed"));
    assert_eq!(decision.requeue_after, None);
}

/// Asserts the decision starts a roll back from `failed_phase` (Automatic policy).
fn assert_rolling_back(decision: &Decision, failed_phase: Phase, failure_contains: &str) {
    let progress = &decision.progress;
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(progress.phase, Phase::RollingBack);
    // Timeouts of the roll back count from now, not from the failed phase's start.
    assert!(progress.phase_started_at > Some(start()));
    let failure = progress.failure.as_deref().unwrap_or_default();
    assert!(
        failure.contains(failure_contains),
        "failure {failure:?} should mention {failure_contains:?}"
    );
    assert_eq!(
        timeline(progress),
        [
            (failed_phase, Some(Outcome::Failed)),
            (Phase::RollingBack, None)
        ]
    );
    assert_eq!(step_message(progress, failed_phase), failure);
    assert_eq!(notice_of(decision), (EventKind::Warning, "RollingBack"));
    assert!(progress.message.starts_with("rolling back: "));
}

// ---------------------------------------------------------------------------------------------
// Terminal phases and Pending
// ---------------------------------------------------------------------------------------------

#[test]
fn terminal_phases_wait_forever_and_record_nothing_new() {
    let worlds = [
        World::default(),
        world(),
        world_with_stopped_hub(),
        World {
            lock: LockState::HeldBy(OTHER_UPGRADE.to_string()),
            migration: StepState::Running,
            restore: StepState::Failed("disk full".into()),
            ..world()
        },
    ];
    for phase in [Phase::Succeeded, Phase::RolledBack, Phase::Failed] {
        let progress = Progress {
            failure: Some("earlier failure".into()),
            ..progress_after_migration_started(phase)
        };
        for world in &worlds {
            let decision = decide(&plan(), &progress, world, after(86_400));
            // The only act left to a finished upgrade: giving back the lock it holds.
            let expected = if world.lock == LockState::HeldBySelf {
                Action::ReleaseLock
            } else {
                Action::Wait
            };
            assert_eq!(decision.action, expected, "{phase}");
            assert_eq!(decision.progress, progress, "{phase}");
            assert_eq!(decision.notice, None, "{phase}");
            assert_eq!(decision.requeue_after, None, "{phase}");
        }
    }
}

/// Entering a terminal phase is recorded first (no action); the next decision, made on the
/// recorded phase, releases the lock. A crash in between cannot leave a running upgrade unlocked.
fn assert_records_then_releases_the_lock(plan: &Plan, decision: &Decision, world: &World) {
    assert_eq!(
        decision.action,
        Action::Wait,
        "the terminal phase is recorded before the lock is released"
    );
    assert!(decision.progress.phase.is_terminal());
    let next = decide(plan, &decision.progress, world, after(100_000));
    assert_eq!(next.action, Action::ReleaseLock);
    assert_eq!(next.progress, decision.progress);
}

#[test]
fn a_failure_after_the_hub_was_touched_keeps_the_lock() {
    let progress = Progress {
        keeps_lock: true,
        ..progress_after_migration_started(Phase::Failed)
    };
    let decision = decide(&plan(), &progress, &world(), after(86_400));
    assert_eq!(decision.action, Action::Wait);
}

#[test]
fn after_preflight_a_lost_lock_is_taken_back() {
    let world = World {
        lock: LockState::Free,
        ..world_with_stopped_hub()
    };
    let decision = decide(&plan(), &progress_in(Phase::BackingUp), &world, after(5));
    assert_eq!(decision.action, Action::AcquireLock);
    assert_eq!(decision.progress, progress_in(Phase::BackingUp));
}

#[test]
fn after_preflight_a_lock_taken_by_another_upgrade_stops_without_touching_the_hub() {
    let world = World {
        lock: LockState::HeldBy(OTHER_UPGRADE.to_string()),
        ..world_with_stopped_hub()
    };
    let decision = decide(&plan(), &progress_in(Phase::BackingUp), &world, after(5));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::Failed);
    assert!(
        !decision.progress.keeps_lock,
        "the lock is not ours to keep"
    );
    assert!(decision.progress.message.contains(OTHER_UPGRADE));
}

#[test]
fn a_hub_scaled_up_during_the_migration_is_scaled_down_again_before_anything_else() {
    let world = World {
        hub: Some(hub(ORIGINAL_IMAGE, 1, 1, false)),
        ..world_with_stopped_hub()
    };
    let progress = progress_after_migration_started(Phase::Migrating);
    let decision = decide(&plan(), &progress, &world, after(5));
    assert_eq!(decision.action, Action::ScaleHub { replicas: 0 });
    assert!(decision.progress.message.contains("scaled up"));
    let still_running = World {
        hub: Some(hub(ORIGINAL_IMAGE, 0, 1, false)),
        ..world_with_stopped_hub()
    };
    let decision = decide(&plan(), &progress, &still_running, after(6));
    assert_eq!(
        decision.action,
        Action::DeleteHubPods,
        "nothing starts while a hub pod runs: it is stopped at once, without a grace period"
    );
}

#[test]
fn a_hub_scaled_up_during_the_backup_is_announced_naming_who_did_it() {
    let mut scaled = hub(ORIGINAL_IMAGE, 1, 0, false);
    scaled.scaled_by = Some("helm".into());
    let world = World {
        hub: Some(scaled),
        ..world_with_stopped_hub()
    };
    let decision = decide(&plan(), &progress_in(Phase::BackingUp), &world, after(5));
    assert_eq!(decision.action, Action::ScaleHub { replicas: 0 });
    let notice = decision.notice.expect("an Event");
    assert_eq!(notice.reason, "HubRestarted");
    assert!(notice.message.contains("by helm"), "{}", notice.message);
}

#[test]
fn a_deleted_upgrade_that_stopped_the_hub_rolls_back_first() {
    let world = World {
        deleting: true,
        migration: StepState::Running,
        ..world_with_stopped_hub()
    };
    let progress = progress_after_migration_started(Phase::Migrating);
    let decision = decide(&plan(), &progress, &world, after(5));
    assert_eq!(decision.progress.phase, Phase::RollingBack);
    assert!(decision.progress.message.contains("deleted"));
    // Even a Manual roll back policy rolls back: nobody will be left to decide.
    let manual = Plan {
        rollback: RollbackPolicy::Manual,
        ..plan()
    };
    let decision = decide(&manual, &progress, &world, after(5));
    assert_eq!(decision.progress.phase, Phase::RollingBack);
}

#[test]
fn a_deleted_upgrade_that_has_not_touched_the_hub_just_ends() {
    let world = World {
        deleting: true,
        ..world()
    };
    let decision = decide(&plan(), &progress_in(Phase::Rehearsal), &world, after(5));
    assert_eq!(decision.progress.phase, Phase::Failed);
    assert!(!decision.progress.keeps_lock);
    assert_eq!(decision.action, Action::Wait);
}

#[test]
fn a_deleted_upgrade_whose_migration_succeeded_finishes() {
    let world = World {
        deleting: true,
        hub: Some(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, true)),
        ..world()
    };
    let mut progress = progress_after_migration_started(Phase::Verifying);
    progress.migration_succeeded = true;
    let decision = decide(&plan(), &progress, &world, after(5));
    assert_eq!(decision.progress.phase, Phase::Succeeded);
}

#[test]
fn a_new_hub_that_cannot_start_rolls_back_without_waiting_for_the_timeout() {
    let mut stuck = hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, false);
    stuck.stuck = Some("pod hub-1, container hub: ImagePullBackOff: not found".into());
    let world = World {
        hub: Some(stuck),
        ..world()
    };
    let mut progress = progress_after_migration_started(Phase::Verifying);
    progress.migration_succeeded = true;
    let decision = decide(&plan(), &progress, &world, after(40));
    assert_eq!(decision.progress.phase, Phase::RollingBack);
    assert!(
        decision
            .progress
            .failure
            .as_deref()
            .unwrap_or_default()
            .contains("ImagePullBackOff")
    );
}

#[test]
fn a_blocked_rehearsal_is_skipped_with_its_reason() {
    let world = World {
        rehearsal_blocked: Some("the hub's claim is ReadWriteOncePod and in use".into()),
        ..world()
    };
    let rehearsing = Plan {
        rehearse: true,
        ..plan()
    };
    let decision = decide(
        &rehearsing,
        &progress_in(Phase::Rehearsal),
        &world,
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    let step = decision
        .progress
        .steps
        .iter()
        .find(|s| s.name == Phase::Rehearsal)
        .expect("the rehearsal step");
    assert_eq!(step.outcome, Some(Outcome::Skipped));
    assert!(
        step.message.contains("ReadWriteOncePod"),
        "{}",
        step.message
    );
}

#[test]
fn the_migrated_revision_is_recorded() {
    let world = World {
        migration: StepState::Succeeded(()),
        migrated_revision: Some("4621fec11365".into()),
        ..world_with_stopped_hub()
    };
    let progress = progress_after_migration_started(Phase::Migrating);
    let decision = decide(&plan(), &progress, &world, after(5));
    let to = decision.progress.to.expect("the target recorded");
    assert_eq!(to.revision.as_deref(), Some("4621fec11365"));
    assert_eq!(to.image, TARGET_IMAGE);
}

#[test]
fn pending_enters_preflight_without_acting() {
    let decision = decide(&plan(), &Progress::default(), &world(), start());
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Preflight);
    assert_eq!(progress.phase_started_at, Some(start()));
    assert_eq!(timeline(progress), [(Phase::Preflight, None)]);
    assert_eq!(notice_of(&decision), (EventKind::Normal, "Preflight"));
    assert_eq!(decision.requeue_after, Some(SignedDuration::from_secs(5)));
}

// ---------------------------------------------------------------------------------------------
// Preflight
// ---------------------------------------------------------------------------------------------

#[test]
fn preflight_waits_until_the_checks_have_run() {
    let progress = progress_in(Phase::Preflight);
    let world = World {
        lock: LockState::Free,
        ..world()
    };
    let decision = decide(&plan(), &progress, &world, after(10));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress, progress);
    assert_eq!(decision.notice, None);
}

#[test]
fn preflight_with_missing_hub_fails_with_the_first_problem() {
    let world = World {
        hub: None,
        lock: LockState::Free,
        preflight: preflight_results(&["the hub Deployment jhub/hub was not found", "second"]),
        ..World::default()
    };
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Failed);
    assert_eq!(
        progress.failure.as_deref(),
        Some("the hub Deployment jhub/hub was not found")
    );
    assert_eq!(
        timeline(progress),
        [
            (Phase::Preflight, Some(Outcome::Failed)),
            (Phase::Failed, Some(Outcome::Failed))
        ]
    );
    assert_eq!(
        notice_of(&decision),
        (EventKind::Warning, "PreflightFailed")
    );
    assert_eq!(decision.requeue_after, None);
}

#[test]
fn preflight_with_missing_hub_and_no_problem_listed_says_the_deployment_is_missing() {
    let world = World {
        hub: None,
        lock: LockState::Free,
        preflight: preflight_results(&[]),
        ..World::default()
    };
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::Failed);
    assert_eq!(
        decision.progress.failure.as_deref(),
        Some("the hub Deployment does not exist")
    );
    assert_eq!(
        notice_of(&decision),
        (EventKind::Warning, "PreflightFailed")
    );
}

#[test]
fn preflight_with_problems_fails_listing_all_of_them_and_releases_its_own_lock() {
    let world = World {
        preflight: preflight_results(&["the database is unreachable", "the target is older"]),
        ..world()
    };
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_records_then_releases_the_lock(&plan(), &decision, &world);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Failed);
    let expected = "the database is unreachable; the target is older";
    assert_eq!(progress.failure.as_deref(), Some(expected));
    assert_eq!(progress.message, expected);
    assert_eq!(step_message(progress, Phase::Preflight), expected);
    assert_eq!(progress.from, None);
    assert_eq!(
        notice_of(&decision),
        (EventKind::Warning, "PreflightFailed")
    );
}

#[test]
fn preflight_with_problems_and_lock_not_held_fails_without_touching_the_lock() {
    for lock in [
        LockState::Free,
        LockState::HeldBy(OTHER_UPGRADE.to_string()),
    ] {
        let world = World {
            lock: lock.clone(),
            preflight: preflight_results(&["the database is unreachable"]),
            ..world()
        };
        let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
        assert_eq!(decision.action, Action::Wait, "{lock:?}");
        assert_eq!(decision.progress.phase, Phase::Failed, "{lock:?}");
    }
}

#[test]
fn preflight_with_the_target_already_running_and_ready_succeeds_as_already_at_target() {
    let world = World {
        hub: Some(hub(TARGET_IMAGE, 2, 2, true)),
        ..checked_world(LockState::Free)
    };
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    // Nothing is touched: not even the lock is taken.
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Succeeded);
    assert_eq!(progress.reason, "AlreadyAtTarget");
    assert_eq!(progress.failure, None);
    assert_eq!(progress.from, None);
    assert_eq!(
        progress.to.as_ref().map(|t| t.image.as_str()),
        Some(TARGET_IMAGE)
    );
    assert!(progress.message.contains("nothing was changed"));
    assert_eq!(notice_of(&decision), (EventKind::Normal, "AlreadyAtTarget"));
}

#[test]
fn preflight_with_the_target_already_set_waits_for_that_hub_to_be_ready_then_fails_untouched() {
    let world = World {
        hub: Some(hub(TARGET_IMAGE, 1, 1, false)),
        ..checked_world(LockState::Free)
    };
    let waiting = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(waiting.action, Action::Wait);
    assert_eq!(waiting.progress.phase, Phase::Preflight);
    assert!(
        waiting
            .progress
            .message
            .contains("waiting for it to be Ready")
    );

    let late = decide(
        &plan(),
        &progress_in(Phase::Preflight),
        &world,
        past(plan().timeouts.verify),
    );
    assert_eq!(late.action, Action::Wait);
    assert_eq!(late.progress.phase, Phase::Failed);
    assert_eq!(late.progress.reason, "TargetNotReady");
    assert!(late.progress.message.contains("nothing to upgrade"));

    let stopped = World {
        hub: Some(stopped_hub(TARGET_IMAGE)),
        ..checked_world(LockState::Free)
    };
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &stopped, after(1));
    assert_eq!(decision.progress.phase, Phase::Failed);
    assert!(decision.progress.message.contains("scaled to zero"));
}

#[test]
fn preflight_with_the_target_running_waits_for_another_upgrades_lock_first() {
    let world = World {
        hub: Some(hub(TARGET_IMAGE, 1, 1, true)),
        ..checked_world(LockState::HeldBy(OTHER_UPGRADE.into()))
    };
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(decision.progress.phase, Phase::Preflight);
    assert_eq!(
        decision.progress.waiting_for.as_deref(),
        Some(OTHER_UPGRADE)
    );
}

fn managed(mut hub: hubgrade::machine::HubObservation) -> hubgrade::machine::HubObservation {
    hub.managed_by = Some("Helm (release jhub)".into());
    hub
}

#[test]
fn auto_image_management_is_external_on_a_hub_helm_manages_and_operator_otherwise() {
    for (hub, expected) in [
        (managed(running_hub()), ImageManagement::External),
        (running_hub(), ImageManagement::Operator),
    ] {
        let world = World {
            hub: Some(hub),
            ..checked_world(LockState::HeldBySelf)
        };
        let auto = Plan {
            image_management: None,
            ..plan()
        };
        let decision = decide(&auto, &progress_in(Phase::Preflight), &world, after(1));
        assert_eq!(decision.progress.phase, Phase::ScalingDown);
        assert_eq!(decision.progress.image_management, Some(expected));
    }
}

#[test]
fn operator_image_management_on_a_managed_hub_needs_the_drift_accepted() {
    let world = World {
        hub: Some(managed(running_hub())),
        ..checked_world(LockState::HeldBySelf)
    };
    let refused = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(refused.progress.phase, Phase::Failed);
    assert_eq!(refused.progress.reason, "ManagedHub");
    let message = &refused.progress.message;
    for words in [
        "managed by Helm (release jhub)",
        ORIGINAL_IMAGE,
        "rollout.acceptImageDrift",
    ] {
        assert!(message.contains(words), "{message} should say {words:?}");
    }
    assert!(!refused.action.touches_hub());

    let accepted = Plan {
        accept_image_drift: true,
        ..plan()
    };
    let decision = decide(&accepted, &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
    assert_eq!(
        decision.progress.image_management,
        Some(ImageManagement::Operator)
    );
}

#[test]
fn the_image_management_settled_in_preflight_is_what_rolling_out_follows() {
    // Settled External (Auto on a managed hub), even if the labels are gone since.
    let progress = Progress {
        image_management: Some(ImageManagement::External),
        migration_succeeded: true,
        ..progress_after_migration_started(Phase::RollingOut)
    };
    let auto = Plan {
        image_management: None,
        ..plan()
    };
    let world = World {
        hub: Some(stopped_hub(ORIGINAL_IMAGE)),
        ..world()
    };
    let decision = decide(&auto, &progress, &world, after(1));
    assert_eq!(decision.action, Action::Wait);
}

#[test]
fn an_external_roll_back_never_writes_the_image_and_keeps_the_hub_stopped_until_it_is_back() {
    let progress = Progress {
        database_restored: true,
        image_management: Some(ImageManagement::External),
        ..rolling_back_after_migration()
    };
    let restored = |hub| World {
        restore: StepState::Succeeded(()),
        ..rolling_back_world(managed(hub))
    };
    // The tool still shows the target image: wait, stopped.
    let decision = decide(
        &plan(),
        &progress,
        &restored(stopped_hub(TARGET_IMAGE)),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::RollingBack);
    let message = &decision.progress.message;
    assert!(
        message.contains("waiting for Helm (release jhub) to set the hub image back to")
            && message.contains(ORIGINAL_IMAGE),
        "{message}"
    );
    // The tool brought the target back up (a sync): scaled to zero again, no image write.
    let decision = decide(
        &plan(),
        &progress,
        &restored(hub(TARGET_IMAGE, 1, 1, false)),
        after(2),
    );
    assert_eq!(decision.action, Action::ScaleHub { replicas: 0 });
    // helm rollback put the original image back, replicas still zero: scaled up.
    let decision = decide(
        &plan(),
        &progress,
        &restored(stopped_hub(ORIGINAL_IMAGE)),
        after(3),
    );
    assert_eq!(
        decision.action,
        Action::ScaleHub {
            replicas: ORIGINAL_REPLICAS
        }
    );
    // Never back within the roll back timeout: Failed, the hub stopped.
    let late = decide(
        &plan(),
        &progress,
        &restored(stopped_hub(TARGET_IMAGE)),
        past(plan().timeouts.rollback),
    );
    assert_eq!(late.progress.phase, Phase::Failed);
}

#[test]
fn an_abort_before_the_hub_was_touched_ends_failed_with_nothing_changed() {
    let world = World {
        abort: Some("maintenance moved".into()),
        ..checked_world(LockState::HeldBy(OTHER_UPGRADE.into()))
    };
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::Failed);
    assert_eq!(decision.progress.reason, "Aborted");
    assert!(
        decision
            .progress
            .message
            .contains("aborted (maintenance moved) before the hub was touched")
    );
}

#[test]
fn an_abort_after_the_hub_was_touched_rolls_back_even_with_a_manual_policy() {
    for phase in [Phase::Migrating, Phase::RollingOut, Phase::Verifying] {
        let world = World {
            abort: Some("alice".into()),
            migration: StepState::Running,
            ..world_with_stopped_hub()
        };
        let decision = decide(
            &manual_plan(),
            &progress_after_migration_started(phase),
            &world,
            after(1),
        );
        assert_eq!(decision.progress.phase, Phase::RollingBack, "{phase}");
        assert_eq!(decision.progress.reason, "Aborted");
        assert_eq!(
            decision.progress.failure.as_deref(),
            Some("aborted (alice)")
        );
        // Already rolling back: it goes on rolling back.
        let again = decide(&manual_plan(), &decision.progress, &world, after(2));
        assert_eq!(again.progress.phase, Phase::RollingBack);
        assert_eq!(again.action, Action::CancelMigration);
    }
}

#[test]
fn preflight_with_lock_held_by_another_upgrade_waits_with_a_message() {
    let world = checked_world(LockState::HeldBy(OTHER_UPGRADE.to_string()));
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Preflight);
    assert_eq!(progress.waiting_for.as_deref(), Some(OTHER_UPGRADE));
    assert!(
        progress.message.contains(OTHER_UPGRADE),
        "{}",
        progress.message
    );
    assert_eq!(timeline(progress), [(Phase::Preflight, None)]);
    assert_eq!(notice_of(&decision), (EventKind::Normal, "WaitingForLock"));
    assert_eq!(decision.requeue_after, Some(SignedDuration::from_secs(5)));
}

#[test]
fn preflight_still_waiting_for_the_same_lock_holder_does_not_notify_again() {
    let world = checked_world(LockState::HeldBy(OTHER_UPGRADE.to_string()));
    let first = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    let second = decide(&plan(), &first.progress, &world, after(6));
    assert_eq!(second.action, Action::Wait);
    assert_eq!(second.progress, first.progress);
    assert_eq!(second.notice, None);
}

#[test]
fn preflight_waiting_for_a_new_lock_holder_notifies_again() {
    let progress = Progress {
        waiting_for: Some(OTHER_UPGRADE.to_string()),
        ..progress_in(Phase::Preflight)
    };
    let world = checked_world(LockState::HeldBy("jhub/yet-another".to_string()));
    let decision = decide(&plan(), &progress, &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(
        decision.progress.waiting_for.as_deref(),
        Some("jhub/yet-another")
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "WaitingForLock"));
}

#[test]
fn preflight_with_free_lock_acquires_it_and_stays_in_preflight() {
    let progress = progress_in(Phase::Preflight);
    let decision = decide(
        &plan(),
        &progress,
        &checked_world(LockState::Free),
        after(1),
    );
    assert_eq!(decision.action, Action::AcquireLock);
    assert_eq!(decision.progress, progress);
}

#[test]
fn preflight_with_own_lock_and_rehearsal_enters_rehearsal() {
    let plan = Plan {
        rehearse: true,
        ..drain_plan(0, OnDrainTimeout::Proceed)
    };
    let progress = Progress {
        waiting_for: Some(OTHER_UPGRADE.to_string()),
        ..progress_in(Phase::Preflight)
    };
    let decision = decide(
        &plan,
        &progress,
        &checked_world(LockState::HeldBySelf),
        after(30),
    );
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Rehearsal);
    assert_eq!(progress.phase_started_at, Some(after(30)));
    assert_eq!(progress.waiting_for, None);
    assert_eq!(
        timeline(progress),
        [
            (Phase::Preflight, Some(Outcome::Succeeded)),
            (Phase::Rehearsal, None)
        ]
    );
    assert_eq!(progress.steps[0].finished_at, Some(after(30)));
    assert_eq!(notice_of(&decision), (EventKind::Normal, "Rehearsal"));
}

#[test]
fn preflight_without_rehearsal_but_with_drain_records_rehearsal_skipped_and_enters_draining() {
    let decision = decide(
        &drain_plan(0, OnDrainTimeout::Proceed),
        &progress_in(Phase::Preflight),
        &checked_world(LockState::HeldBySelf),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Draining);
    assert_eq!(
        timeline(progress),
        [
            (Phase::Preflight, Some(Outcome::Succeeded)),
            (Phase::Rehearsal, Some(Outcome::Skipped)),
            (Phase::Draining, None)
        ]
    );
    assert_eq!(
        step_message(progress, Phase::Rehearsal),
        "rehearsal disabled"
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "Draining"));
}

#[test]
fn preflight_without_rehearsal_or_drain_skips_both_and_enters_scaling_down() {
    let decision = decide(
        &plan(),
        &progress_in(Phase::Preflight),
        &checked_world(LockState::HeldBySelf),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::ScalingDown);
    assert_eq!(
        timeline(progress),
        [
            (Phase::Preflight, Some(Outcome::Succeeded)),
            (Phase::Rehearsal, Some(Outcome::Skipped)),
            (Phase::Draining, Some(Outcome::Skipped)),
            (Phase::ScalingDown, None)
        ]
    );
    assert_eq!(
        step_message(progress, Phase::Rehearsal),
        "rehearsal disabled"
    );
    assert_eq!(step_message(progress, Phase::Draining), "draining disabled");
    // Nothing about the hub is recorded yet: that is ScalingDown's first decision.
    assert_eq!(progress.from, None);
    assert_eq!(notice_of(&decision), (EventKind::Normal, "ScalingDown"));
}

// ---------------------------------------------------------------------------------------------
// Rehearsal
// ---------------------------------------------------------------------------------------------

fn rehearsing_plan() -> Plan {
    Plan {
        rehearse: true,
        ..plan()
    }
}

#[test]
fn rehearsal_not_started_starts_it() {
    let progress = progress_in(Phase::Rehearsal);
    let decision = decide(&rehearsing_plan(), &progress, &world(), after(1));
    assert_eq!(decision.action, Action::StartRehearsal);
    assert_eq!(decision.progress, progress);
}

#[test]
fn rehearsal_running_waits_until_its_timeout() {
    let progress = progress_in(Phase::Rehearsal);
    let world = World {
        rehearsal: StepState::Running,
        ..world()
    };
    // The timeout is exceeded only strictly after it.
    let limit = rehearsing_plan().timeouts.rehearsal;
    let decision = decide(&rehearsing_plan(), &progress, &world, start() + limit);
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress, progress);
}

#[test]
fn rehearsal_failure_fails_untouched_and_releases_the_lock() {
    let world = World {
        rehearsal: StepState::Failed("alembic: Can't locate revision".into()),
        ..world()
    };
    let decision = decide(
        &rehearsing_plan(),
        &progress_in(Phase::Rehearsal),
        &world,
        after(60),
    );
    assert_records_then_releases_the_lock(&rehearsing_plan(), &decision, &world);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Failed);
    let failure = progress.failure.as_deref().unwrap();
    assert!(failure.contains("Can't locate revision"), "{failure}");
    assert!(failure.contains("the hub was not touched"), "{failure}");
    assert_eq!(
        timeline(progress),
        [
            (Phase::Rehearsal, Some(Outcome::Failed)),
            (Phase::Failed, Some(Outcome::Failed))
        ]
    );
    assert_eq!(
        notice_of(&decision),
        (EventKind::Warning, "RehearsalFailed")
    );
}

#[test]
fn rehearsal_timeout_fails_untouched_and_releases_the_lock() {
    let plan = rehearsing_plan();
    let world = World {
        rehearsal: StepState::Running,
        ..world()
    };
    let decision = decide(
        &plan,
        &progress_in(Phase::Rehearsal),
        &world,
        past(plan.timeouts.rehearsal),
    );
    assert_records_then_releases_the_lock(&plan, &decision, &world);
    assert_eq!(decision.progress.phase, Phase::Failed);
    let failure = decision.progress.failure.as_deref().unwrap();
    assert!(failure.contains("did not finish within 30m"), "{failure}");
    assert_eq!(
        notice_of(&decision),
        (EventKind::Warning, "RehearsalFailed")
    );
}

#[test]
fn rehearsal_success_with_drain_enters_draining() {
    let plan = Plan {
        rehearse: true,
        ..drain_plan(0, OnDrainTimeout::Proceed)
    };
    let world = World {
        rehearsal: StepState::Succeeded(()),
        ..world()
    };
    let decision = decide(&plan, &progress_in(Phase::Rehearsal), &world, after(60));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::Draining);
    assert_eq!(
        timeline(&decision.progress),
        [
            (Phase::Rehearsal, Some(Outcome::Succeeded)),
            (Phase::Draining, None)
        ]
    );
}

#[test]
fn rehearsal_success_without_drain_skips_draining_and_enters_scaling_down() {
    let world = World {
        rehearsal: StepState::Succeeded(()),
        ..world()
    };
    let decision = decide(
        &rehearsing_plan(),
        &progress_in(Phase::Rehearsal),
        &world,
        after(60),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
    assert_eq!(
        timeline(&decision.progress),
        [
            (Phase::Rehearsal, Some(Outcome::Succeeded)),
            (Phase::Draining, Some(Outcome::Skipped)),
            (Phase::ScalingDown, None)
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Scheduled: approval and the maintenance window
// ---------------------------------------------------------------------------------------------

fn rehearsed_world(approved: Option<&str>) -> World {
    World {
        rehearsal: StepState::Succeeded(()),
        approved: approved.map(str::to_string),
        ..world()
    }
}

fn gated_plan(approval_required: bool, window: Window) -> Plan {
    Plan {
        approval_required,
        window,
        ..rehearsing_plan()
    }
}

#[test]
fn a_manual_approval_waits_after_the_rehearsal_with_nothing_changed_for_users() {
    let plan = gated_plan(true, Window::default());
    let decision = decide(
        &plan,
        &progress_in(Phase::Rehearsal),
        &rehearsed_world(None),
        after(60),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::Scheduled);
    assert!(
        decision.progress.message.contains("waiting for approval")
            && decision.progress.message.contains("hubgrade.io/approved"),
        "{}",
        decision.progress.message
    );
    assert_eq!(
        notice_of(&decision),
        (EventKind::Normal, "AwaitingApproval")
    );
    assert_eq!(
        decision.progress.from, None,
        "the hub was recorded: it is about to be touched"
    );

    // Still waiting: no new Event, no action.
    let again = decide(
        &plan,
        &decision.progress,
        &rehearsed_world(None),
        after(3600),
    );
    assert_eq!(again.action, Action::Wait);
    assert_eq!(again.progress.phase, Phase::Scheduled);
    assert!(again.notice.is_none());

    // Approved: who approved recorded and announced, then on to the downtime.
    let approved = decide(
        &plan,
        &again.progress,
        &rehearsed_world(Some("alice")),
        after(3601),
    );
    assert_eq!(approved.progress.phase, Phase::Scheduled);
    assert_eq!(approved.progress.approved_by.as_deref(), Some("alice"));
    assert_eq!(notice_of(&approved), (EventKind::Normal, "Approved"));
    let approved = decide(
        &plan,
        &approved.progress,
        &rehearsed_world(Some("alice")),
        after(3602),
    );
    assert_eq!(approved.progress.phase, Phase::ScalingDown);
    assert!(timeline(&approved.progress).contains(&(Phase::Scheduled, Some(Outcome::Succeeded))));
}

#[test]
fn the_hub_is_not_stopped_before_the_window_opens() {
    let plan = gated_plan(
        false,
        Window {
            not_before: Some(after(600)),
            not_after: None,
        },
    );
    let decision = decide(
        &plan,
        &progress_in(Phase::Rehearsal),
        &rehearsed_world(None),
        after(60),
    );
    assert_eq!(decision.progress.phase, Phase::Scheduled);
    assert!(
        decision
            .progress
            .message
            .contains("waiting for the maintenance window")
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "Scheduled"));
    let opened = decide(
        &plan,
        &decision.progress,
        &rehearsed_world(None),
        after(601),
    );
    assert_eq!(opened.progress.phase, Phase::ScalingDown);
}

#[test]
fn a_window_that_closes_before_the_hub_is_stopped_ends_the_upgrade_untouched() {
    let window = Window {
        not_before: None,
        not_after: Some(after(600)),
    };
    // Never approved in time.
    let plan = gated_plan(true, window.clone());
    let waiting = decide(
        &plan,
        &progress_in(Phase::Rehearsal),
        &rehearsed_world(None),
        after(60),
    );
    assert_eq!(waiting.progress.phase, Phase::Scheduled);
    let closed = decide(&plan, &waiting.progress, &rehearsed_world(None), after(601));
    assert_eq!(closed.action, Action::Wait);
    assert_eq!(closed.progress.phase, Phase::Failed);
    assert_eq!(closed.progress.reason, "WindowClosed");
    assert!(closed.progress.message.contains("nothing was changed"));
    assert!(!closed.progress.keeps_lock);
    // Draining past the window's end: the same.
    let draining = Plan {
        window,
        ..drain_plan(0, OnDrainTimeout::Proceed)
    };
    let world = World {
        active_servers: Some(Vec::new()),
        ..world()
    };
    let late = decide(&draining, &progress_in(Phase::Draining), &world, after(601));
    assert_eq!(late.progress.phase, Phase::Failed);
    assert_eq!(late.progress.reason, "WindowClosed");
}

// ---------------------------------------------------------------------------------------------
// Draining
// ---------------------------------------------------------------------------------------------

fn world_with_active_servers(active: Option<&[&str]>) -> World {
    World {
        active_servers: active.map(|names| names.iter().map(|n| n.to_string()).collect()),
        ..world()
    }
}

const THREE: Option<&[&str]> = Some(&["alice", "bob", "carol/gpu"]);

#[test]
fn draining_without_a_drain_plan_moves_on_to_scaling_down() {
    let decision = decide(
        &plan(),
        &progress_in(Phase::Draining),
        &world_with_active_servers(THREE),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
    assert_eq!(
        timeline(&decision.progress),
        [
            (Phase::Draining, Some(Outcome::Succeeded)),
            (Phase::ScalingDown, None)
        ]
    );
}

#[test]
fn draining_with_few_enough_servers_moves_on_to_scaling_down() {
    let decision = decide(
        &drain_plan(3, OnDrainTimeout::StopServers),
        &progress_in(Phase::Draining),
        &world_with_active_servers(THREE),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
    assert_eq!(decision.progress.phase_started_at, Some(after(1)));
    assert_eq!(notice_of(&decision), (EventKind::Normal, "ScalingDown"));
    assert_eq!(decision.progress.active_servers, Some(3));
    let drained = &decision.progress.steps[decision.progress.steps.len() - 2];
    assert_eq!(drained.message, "3 user servers active, at most 3 allowed");
}

#[test]
fn draining_with_too_many_servers_waits_and_says_who_whatever_the_timeout_policy() {
    for on_timeout in [
        OnDrainTimeout::Proceed,
        OnDrainTimeout::Abort,
        OnDrainTimeout::StopServers,
    ] {
        let decision = decide(
            &drain_plan(1, on_timeout),
            &progress_in(Phase::Draining),
            &world_with_active_servers(THREE),
            after(1),
        );
        assert_eq!(decision.action, Action::Wait, "{on_timeout}");
        assert_eq!(decision.progress.phase, Phase::Draining);
        assert_eq!(decision.progress.active_servers, Some(3));
        assert_eq!(
            decision.progress.message,
            format!(
                "waiting for users' servers to stop: 3 user servers (alice, bob, carol/gpu), \
                 at most 1 allowed; after 15m: {on_timeout}"
            )
        );
        assert!(decision.progress.stopped_servers.is_empty());
    }
}

#[test]
fn draining_while_the_hub_api_is_silent_waits_and_says_why() {
    let world = World {
        hub_api_problem: Some("/hub/api/users answered 403".into()),
        ..world_with_active_servers(None)
    };
    let decision = decide(
        &drain_plan(5, OnDrainTimeout::StopServers),
        &progress_in(Phase::Draining),
        &world,
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::Draining);
    assert_eq!(
        decision.progress.message,
        "waiting for the hub's API to report its active servers: /hub/api/users answered 403"
    );
}

#[test]
fn a_drain_that_times_out_with_proceed_stops_the_hub_and_leaves_the_servers_running() {
    let plan = drain_plan(0, OnDrainTimeout::Proceed);
    let decision = decide(
        &plan,
        &progress_in(Phase::Draining),
        &world_with_active_servers(THREE),
        past(plan.timeouts.drain),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
    assert!(decision.progress.stopped_servers.is_empty());
    let drained = &decision.progress.steps[decision.progress.steps.len() - 2];
    assert_eq!(drained.outcome, Some(Outcome::Succeeded));
    assert!(
        drained
            .message
            .contains("3 user servers still active (alice, bob, carol/gpu)"),
        "{}",
        drained.message
    );
    assert!(
        drained.message.contains("proceeding"),
        "{}",
        drained.message
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "DrainProceeding"));
}

#[test]
fn a_drain_that_times_out_with_abort_ends_untouched_and_releases_the_lock() {
    let plan = drain_plan(0, OnDrainTimeout::Abort);
    let decision = decide(
        &plan,
        &progress_in(Phase::Draining),
        &world_with_active_servers(THREE),
        past(plan.timeouts.drain),
    );
    assert_records_then_releases_the_lock(&plan, &decision, &world_with_active_servers(THREE));
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Failed);
    assert_eq!(progress.reason, "DrainTimedOut");
    let failure = progress.failure.as_deref().unwrap();
    assert!(failure.contains("within 15m"), "{failure}");
    assert!(failure.contains("3 user servers still active"), "{failure}");
    assert!(failure.contains("the hub was not touched"), "{failure}");
    assert_eq!(progress.from, None);
    assert_eq!(
        timeline(progress),
        [
            (Phase::Draining, Some(Outcome::Failed)),
            (Phase::Failed, Some(Outcome::Failed))
        ]
    );
    assert_eq!(notice_of(&decision), (EventKind::Warning, "DrainTimedOut"));
}

#[test]
fn a_drain_that_times_out_with_stop_servers_stops_them_waits_for_them_then_stops_the_hub() {
    let plan = drain_plan(0, OnDrainTimeout::StopServers);
    let limit = plan.timeouts.drain;
    let stop = decide(
        &plan,
        &progress_in(Phase::Draining),
        &world_with_active_servers(THREE),
        past(limit),
    );
    let names: Vec<String> = ["alice", "bob", "carol/gpu"].map(String::from).to_vec();
    assert_eq!(
        stop.action,
        Action::StopServers {
            servers: names.clone()
        }
    );
    assert_eq!(stop.progress.phase, Phase::Draining);
    assert_eq!(stop.progress.stopped_servers, names);
    assert_eq!(notice_of(&stop), (EventKind::Normal, "StoppingServers"));
    // Asked once: then waited for.
    let stopping = decide(
        &plan,
        &stop.progress,
        &world_with_active_servers(Some(&["bob"])),
        past(limit),
    );
    assert_eq!(stopping.action, Action::Wait);
    assert!(
        stopping
            .progress
            .message
            .contains("1 user server still active (bob)"),
        "{}",
        stopping.progress.message
    );
    let stopped = decide(
        &plan,
        &stopping.progress,
        &world_with_active_servers(Some(&[])),
        past(limit),
    );
    assert_eq!(stopped.progress.phase, Phase::ScalingDown);
    // Servers that do not stop in time: the upgrade ends, the hub untouched.
    let stuck = decide(
        &plan,
        &stopping.progress,
        &world_with_active_servers(Some(&["bob"])),
        past(limit + plan.timeouts.scale_down),
    );
    assert_eq!(stuck.progress.phase, Phase::Failed);
    assert_eq!(stuck.progress.reason, "DrainTimedOut");
}

#[test]
fn a_drain_that_times_out_with_a_silent_hub_api_cannot_stop_anything_and_says_so() {
    for on_timeout in [OnDrainTimeout::StopServers, OnDrainTimeout::Abort] {
        let plan = drain_plan(0, on_timeout);
        let decision = decide(
            &plan,
            &progress_in(Phase::Draining),
            &world_with_active_servers(None),
            past(plan.timeouts.drain),
        );
        assert_eq!(decision.progress.phase, Phase::Failed, "{on_timeout}");
        let failure = decision.progress.failure.as_deref().unwrap();
        assert!(
            failure.contains("the hub's API did not report its active servers"),
            "{failure}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// ScalingDown
// ---------------------------------------------------------------------------------------------

#[test]
fn scaling_down_first_records_the_original_hub_without_touching_it() {
    let decision = decide(
        &plan(),
        &progress_in(Phase::ScalingDown),
        &world(),
        after(1),
    );
    // The record must be persisted before the hub is touched, so this decision only waits.
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
    assert_eq!(decision.progress.from, Some(original()));
}

/// ScalingDown's progress once the hub is recorded and its configuration copied.
fn hub_recorded() -> Progress {
    Progress {
        from: Some(original()),
        config_backed_up: true,
        ..progress_in(Phase::ScalingDown)
    }
}

#[test]
fn scaling_down_copies_the_configuration_before_the_hub_is_touched() {
    let progress = Progress {
        from: Some(original()),
        ..progress_in(Phase::ScalingDown)
    };
    let decision = decide(&plan(), &progress, &world(), after(1));
    assert_eq!(decision.action, Action::BackUpConfig);
    // Recorded with the copy: a crash before the record copies again (the copy is one Secret).
    assert!(decision.progress.config_backed_up);
    assert_eq!(decision.progress.hub_scaled_down_at, None);
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
}

#[test]
fn a_configuration_that_cannot_be_copied_ends_the_upgrade_with_the_hub_running() {
    let progress = Progress {
        from: Some(original()),
        ..progress_in(Phase::ScalingDown)
    };
    let plan = plan();
    let decision = decide(&plan, &progress, &world(), past(plan.timeouts.scale_down));
    assert_records_then_releases_the_lock(&plan, &decision, &world());
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Failed);
    assert_eq!(progress.reason, "ConfigurationNotCopied");
    let failure = progress.failure.as_deref().unwrap();
    assert!(failure.contains("the hub was not stopped"), "{failure}");
    assert!(!progress.config_backed_up);
    assert_eq!(progress.hub_scaled_down_at, None);
    assert_eq!(
        notice_of(&decision),
        (EventKind::Warning, "ConfigurationNotCopied")
    );
}

#[test]
fn a_backup_made_before_a_crash_is_not_started_again_when_backing_up_is_entered() {
    let world = World {
        backup: StepState::Running,
        ..world_with_stopped_hub()
    };
    let decision = decide(&plan(), &hub_recorded(), &world, after(40));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::BackingUp);
}

#[test]
fn scaling_down_with_the_hub_recorded_scales_it_to_zero() {
    let progress = hub_recorded();
    let decision = decide(&plan(), &progress, &world(), after(1));
    assert_eq!(decision.action, Action::ScaleHub { replicas: 0 });
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
    assert_eq!(decision.progress.from, Some(original()));
}

#[test]
fn downtime_counts_from_the_scale_to_zero_not_from_the_last_pod_gone() {
    // Users lose the hub when it is scaled to zero; its pods take seconds more to stop.
    let progress = hub_recorded();
    let scaled = decide(&plan(), &progress, &world(), after(1)).progress;
    assert_eq!(scaled.hub_scaled_down_at, Some(after(1)));
    let stopped = decide(&plan(), &scaled, &world_with_stopped_hub(), after(7)).progress;
    assert_eq!(stopped.hub_scaled_down_at, Some(after(1)));
    assert_eq!(stopped.hub_stopped_at, Some(after(7)));
    let ready = Progress {
        hub_ready_at: Some(after(31)),
        ..stopped
    };
    assert_eq!(ready.downtime_seconds(), Some(30));
    let ready_later = Progress {
        hub_ready_at: Some(after(31) + jiff::SignedDuration::from_millis(600)),
        ..ready
    };
    assert_eq!(
        ready_later.downtime_seconds(),
        Some(31),
        "rounded to the nearest second"
    );
}

#[test]
fn scaling_down_keeps_the_first_record_of_the_hub() {
    // After a crash the hub is already at zero; the record from before must not be replaced.
    let progress = hub_recorded();
    let decision = decide(
        &plan(),
        &progress,
        &World {
            hub: Some(hub(ORIGINAL_IMAGE, 0, 1, false)),
            ..world()
        },
        after(1),
    );
    assert_eq!(decision.progress.from, Some(original()));
}

#[test]
fn scaling_down_waits_for_the_hub_pods_to_stop() {
    let progress = hub_recorded();
    let world = World {
        hub: Some(hub(ORIGINAL_IMAGE, 0, 2, false)),
        ..world()
    };
    let decision = decide(&plan(), &progress, &world, after(30));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::ScalingDown);
    assert_eq!(decision.progress.message, "waiting for 2 hub pods to stop");
    assert_eq!(decision.progress.hub_stopped_at, None);
}

#[test]
fn scaling_down_with_no_pods_left_records_the_stop_enters_backing_up_and_starts_the_backup() {
    let progress = hub_recorded();
    let decision = decide(&plan(), &progress, &world_with_stopped_hub(), after(40));
    // The downtime has begun: the backup starts in the same decision.
    assert_eq!(decision.action, Action::StartBackup);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::BackingUp);
    assert_eq!(progress.hub_stopped_at, Some(after(40)));
    assert_eq!(
        timeline(progress),
        [
            (Phase::ScalingDown, Some(Outcome::Succeeded)),
            (Phase::BackingUp, None)
        ]
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "BackingUp"));
}

#[test]
fn scaling_down_a_hub_that_was_already_at_zero_goes_straight_to_backing_up() {
    let world = world_with_stopped_hub();
    let recorded = decide(&plan(), &progress_in(Phase::ScalingDown), &world, after(1));
    assert_eq!(
        recorded.progress.from,
        Some(Original {
            image: ORIGINAL_IMAGE.into(),
            replicas: 0
        })
    );
    let copied = decide(&plan(), &recorded.progress, &world, after(3));
    assert_eq!(copied.action, Action::BackUpConfig);
    let decision = decide(&plan(), &copied.progress, &world, after(6));
    assert_eq!(decision.action, Action::StartBackup);
    assert_eq!(decision.progress.phase, Phase::BackingUp);
}

#[test]
fn scaling_down_timeout_with_pods_left_rolls_back() {
    let progress = hub_recorded();
    let world = World {
        hub: Some(hub(ORIGINAL_IMAGE, 0, 2, false)),
        ..world()
    };
    let plan = plan();
    let decision = decide(&plan, &progress, &world, past(plan.timeouts.scale_down));
    assert_rolling_back(&decision, Phase::ScalingDown, "2 hub pods still ran");
    assert!(!decision.progress.migration_started);
}

#[test]
fn scaling_down_timeout_with_manual_policy_fails_and_leaves_the_hub_stopped() {
    let progress = hub_recorded();
    let world = World {
        hub: Some(hub(ORIGINAL_IMAGE, 0, 1, false)),
        ..world()
    };
    let plan = manual_plan();
    let decision = decide(&plan, &progress, &world, past(plan.timeouts.scale_down));
    // Already at zero replicas: nothing to do but stop.
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(
        &decision,
        Phase::ScalingDown,
        "the roll back policy is Manual, so the hub is left stopped",
    );
}

#[test]
fn scaling_down_with_the_hub_gone_fails() {
    let world = World {
        hub: None,
        ..world()
    };
    let decision = decide(&plan(), &progress_in(Phase::ScalingDown), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(&decision, Phase::ScalingDown, "disappeared");
}

// ---------------------------------------------------------------------------------------------
// BackingUp
// ---------------------------------------------------------------------------------------------

fn backing_up_progress(config_backed_up: bool) -> Progress {
    Progress {
        from: Some(original()),
        hub_stopped_at: Some(start()),
        config_backed_up,
        ..progress_in(Phase::BackingUp)
    }
}

fn world_with_backup(backup: StepState<hubgrade::machine::BackupRecord>) -> World {
    World {
        backup,
        ..world_with_stopped_hub()
    }
}

#[test]
fn backing_up_copies_the_configuration_first_if_scaling_down_did_not() {
    // An upgrade an older hubgrade stopped the hub for before copying the configuration.
    let progress = backing_up_progress(false);
    let decision = decide(&plan(), &progress, &world_with_stopped_hub(), after(1));
    assert_eq!(decision.action, Action::BackUpConfig);
    assert!(decision.progress.config_backed_up);
    assert_eq!(decision.progress.phase, Phase::BackingUp);
}

#[test]
fn backing_up_starts_the_database_backup_after_the_configuration() {
    let decision = decide(
        &plan(),
        &backing_up_progress(true),
        &world_with_backup(StepState::NotStarted),
        after(1),
    );
    assert_eq!(decision.action, Action::StartBackup);
    assert_eq!(decision.progress.phase, Phase::BackingUp);
}

#[test]
fn backing_up_waits_for_a_running_backup() {
    let progress = backing_up_progress(true);
    let decision = decide(
        &plan(),
        &progress,
        &world_with_backup(StepState::Running),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress, progress);
}

#[test]
fn backing_up_failed_backup_rolls_back() {
    let decision = decide(
        &plan(),
        &backing_up_progress(true),
        &world_with_backup(StepState::Failed("no space left on device".into())),
        after(60),
    );
    assert_rolling_back(
        &decision,
        Phase::BackingUp,
        "the database backup failed: no space left on device",
    );
    assert_eq!(decision.progress.backup, None);
    assert!(!decision.progress.migration_started);
}

#[test]
fn backing_up_unverified_backup_rolls_back_without_recording_it() {
    let decision = decide(
        &plan(),
        &backing_up_progress(true),
        &world_with_backup(StepState::Succeeded(backup_report(false))),
        after(60),
    );
    assert_rolling_back(&decision, Phase::BackingUp, "could not be verified");
    assert_eq!(decision.progress.backup, None);
    assert!(!decision.progress.migration_started);
}

#[test]
fn backing_up_verified_backup_is_recorded_and_the_migration_phase_begins() {
    let decision = decide(
        &plan(),
        &backing_up_progress(true),
        &world_with_backup(StepState::Succeeded(backup_report(true))),
        after(60),
    );
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Migrating);
    assert_eq!(progress.backup, Some(verified_backup()));
    // Entering Migrating does not yet mean the migration started.
    assert!(!progress.migration_started);
    assert_eq!(
        timeline(progress),
        [
            (Phase::BackingUp, Some(Outcome::Succeeded)),
            (Phase::Migrating, None)
        ]
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "Migrating"));
}

#[test]
fn backing_up_timeout_rolls_back() {
    let plan = plan();
    let decision = decide(
        &plan,
        &backing_up_progress(true),
        &world_with_backup(StepState::Running),
        past(plan.timeouts.backup),
    );
    assert_rolling_back(&decision, Phase::BackingUp, "did not finish within 30m");
}

#[test]
fn backing_up_failure_with_manual_policy_fails_and_leaves_the_hub_stopped() {
    let decision = decide(
        &manual_plan(),
        &backing_up_progress(true),
        &world_with_backup(StepState::Failed("timeout".into())),
        after(60),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(&decision, Phase::BackingUp, "the hub is left stopped");
}

// ---------------------------------------------------------------------------------------------
// Migrating
// ---------------------------------------------------------------------------------------------

/// Progress just after entering Migrating with a verified backup, before the start is recorded.
fn migrating_progress() -> Progress {
    Progress {
        migration_started: false,
        ..progress_after_migration_started(Phase::Migrating)
    }
}

fn world_with_migration(migration: StepState<()>) -> World {
    World {
        migration,
        ..world_with_backup(StepState::Succeeded(backup_report(true)))
    }
}

#[test]
fn migrating_first_records_that_the_migration_starts() {
    let decision = decide(
        &plan(),
        &migrating_progress(),
        &world_with_migration(StepState::NotStarted),
        after(1),
    );
    // Persisted before the Job exists, so a roll back after a crash still restores.
    assert_eq!(decision.action, Action::Wait);
    assert!(decision.progress.migration_started);
    assert_eq!(decision.progress.phase, Phase::Migrating);
}

#[test]
fn migrating_without_a_recorded_backup_rolls_back_without_starting() {
    let progress = Progress {
        backup: None,
        ..migrating_progress()
    };
    let decision = decide(
        &plan(),
        &progress,
        &world_with_migration(StepState::NotStarted),
        after(1),
    );
    assert_rolling_back(
        &decision,
        Phase::Migrating,
        "no verified backup is recorded",
    );
    assert!(!decision.progress.migration_started);
}

#[test]
fn migrating_with_an_unverified_backup_record_rolls_back_without_starting() {
    let mut progress = migrating_progress();
    progress.backup.as_mut().unwrap().verified = false;
    let decision = decide(
        &plan(),
        &progress,
        &world_with_migration(StepState::NotStarted),
        after(1),
    );
    assert_rolling_back(
        &decision,
        Phase::Migrating,
        "no verified backup is recorded",
    );
    assert!(!decision.progress.migration_started);
}

#[test]
fn migrating_starts_the_job_once_its_start_is_recorded() {
    let progress = progress_after_migration_started(Phase::Migrating);
    let decision = decide(
        &plan(),
        &progress,
        &world_with_migration(StepState::NotStarted),
        after(1),
    );
    assert_eq!(decision.action, Action::StartMigration);
    assert_eq!(decision.progress, progress);
}

#[test]
fn migrating_waits_for_a_running_migration() {
    let progress = progress_after_migration_started(Phase::Migrating);
    let decision = decide(
        &plan(),
        &progress,
        &world_with_migration(StepState::Running),
        after(60),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress, progress);
}

#[test]
fn migrating_failure_rolls_back_with_the_migration_marked_started() {
    let decision = decide(
        &plan(),
        &progress_after_migration_started(Phase::Migrating),
        &world_with_migration(StepState::Failed("exit code 1".into())),
        after(60),
    );
    assert_rolling_back(
        &decision,
        Phase::Migrating,
        "the migration failed: exit code 1",
    );
    assert!(decision.progress.migration_started);
    assert!(!decision.progress.migration_succeeded);
    assert_eq!(decision.progress.backup, Some(verified_backup()));
}

#[test]
fn migrating_failure_with_manual_policy_fails_naming_the_backup() {
    let decision = decide(
        &manual_plan(),
        &progress_after_migration_started(Phase::Migrating),
        &world_with_migration(StepState::Failed("exit code 1".into())),
        after(60),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(
        &decision,
        Phase::Migrating,
        "the migration failed: exit code 1",
    );
    let message = &decision.progress.message;
    assert!(message.contains("the hub is left stopped"), "{message}");
    assert!(
        message.contains(
            "the database backup is /srv/jupyterhub/jupyterhub.sqlite.hubgrade-backup (File)"
        ),
        "{message}"
    );
}

#[test]
fn migrating_timeout_rolls_back() {
    let plan = plan();
    let decision = decide(
        &plan,
        &progress_after_migration_started(Phase::Migrating),
        &world_with_migration(StepState::Running),
        past(plan.timeouts.migration),
    );
    assert_rolling_back(&decision, Phase::Migrating, "did not finish within 30m");
    assert!(decision.progress.migration_started);
}

#[test]
fn migrating_success_with_operator_image_management_enters_rolling_out() {
    let decision = decide(
        &plan(),
        &progress_after_migration_started(Phase::Migrating),
        &world_with_migration(StepState::Succeeded(())),
        after(60),
    );
    assert_eq!(decision.action, Action::Wait);
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::RollingOut);
    assert!(progress.migration_succeeded);
    assert_eq!(
        progress.message,
        format!("setting the hub image to {TARGET_IMAGE}")
    );
    assert_eq!(
        timeline(progress),
        [
            (Phase::Migrating, Some(Outcome::Succeeded)),
            (Phase::RollingOut, None)
        ]
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "RollingOut"));
}

#[test]
fn migrating_success_with_external_image_management_asks_for_the_image_change() {
    let decision = decide(
        &external_plan(),
        &progress_after_migration_started(Phase::Migrating),
        &world_with_migration(StepState::Succeeded(())),
        after(60),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::RollingOut);
    assert!(
        decision
            .progress
            .message
            .contains("waiting for the tool that manages the hub Deployment"),
        "{}",
        decision.progress.message
    );
}

// ---------------------------------------------------------------------------------------------
// RollingOut
// ---------------------------------------------------------------------------------------------

fn rolling_out_progress() -> Progress {
    Progress {
        migration_succeeded: true,
        ..progress_after_migration_started(Phase::RollingOut)
    }
}

fn world_with_hub(hub: hubgrade::machine::HubObservation) -> World {
    World {
        hub: Some(hub),
        ..world_with_migration(StepState::Succeeded(()))
    }
}

#[test]
fn rolling_out_with_operator_image_management_sets_the_target_image() {
    let progress = rolling_out_progress();
    let decision = decide(
        &plan(),
        &progress,
        &world_with_hub(stopped_hub(ORIGINAL_IMAGE)),
        after(1),
    );
    assert_eq!(
        decision.action,
        Action::SetHubImage {
            image: TARGET_IMAGE.into()
        }
    );
    assert_eq!(decision.progress, progress);
}

#[test]
fn rolling_out_with_external_image_management_waits_for_the_tool() {
    let progress = rolling_out_progress();
    let decision = decide(
        &external_plan(),
        &progress,
        &world_with_hub(stopped_hub(ORIGINAL_IMAGE)),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress, progress);
}

#[test]
fn rolling_out_restores_the_original_replicas_once_the_image_is_set() {
    for plan in [plan(), external_plan()] {
        let decision = decide(
            &plan,
            &rolling_out_progress(),
            &world_with_hub(stopped_hub(TARGET_IMAGE)),
            after(1),
        );
        assert_eq!(
            decision.action,
            Action::ScaleHub {
                replicas: ORIGINAL_REPLICAS
            }
        );
        assert_eq!(decision.progress.phase, Phase::RollingOut);
    }
}

#[test]
fn rolling_out_when_the_replicas_never_come_back_rolls_back() {
    let plan = plan();
    let decision = decide(
        &plan,
        &rolling_out_progress(),
        &world_with_hub(stopped_hub(TARGET_IMAGE)),
        past(plan.timeouts.rollout),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::RollingBack);
    assert!(
        decision
            .progress
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("replicas were not set back")),
        "{:?}",
        decision.progress.failure
    );
}

#[test]
fn rolling_out_with_image_and_replicas_in_place_enters_verifying() {
    let decision = decide(
        &plan(),
        &rolling_out_progress(),
        &world_with_hub(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 0, false)),
        after(5),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::Verifying);
    assert_eq!(
        timeline(&decision.progress),
        [
            (Phase::RollingOut, Some(Outcome::Succeeded)),
            (Phase::Verifying, None)
        ]
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "Verifying"));
}

#[test]
fn rolling_out_when_the_external_tool_never_sets_the_image_rolls_back() {
    let plan = external_plan();
    let decision = decide(
        &plan,
        &rolling_out_progress(),
        &world_with_hub(stopped_hub(ORIGINAL_IMAGE)),
        past(plan.timeouts.rollout),
    );
    assert_rolling_back(
        &decision,
        Phase::RollingOut,
        &format!("the hub image was not set to {TARGET_IMAGE} within 10m"),
    );
}

#[test]
fn rolling_out_when_the_image_does_not_stick_rolls_back_in_operator_mode_too() {
    let plan = plan();
    let decision = decide(
        &plan,
        &rolling_out_progress(),
        &world_with_hub(stopped_hub(ORIGINAL_IMAGE)),
        past(plan.timeouts.rollout),
    );
    assert_rolling_back(&decision, Phase::RollingOut, "was not set to");
}

#[test]
fn rolling_out_without_the_original_hub_recorded_fails() {
    let progress = Progress {
        from: None,
        ..rolling_out_progress()
    };
    let decision = decide(
        &plan(),
        &progress,
        &world_with_hub(stopped_hub(ORIGINAL_IMAGE)),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(
        &decision,
        Phase::RollingOut,
        "the original image and replicas were not recorded",
    );
}

#[test]
fn rolling_out_with_the_hub_gone_fails() {
    let world = World {
        hub: None,
        ..world_with_migration(StepState::Succeeded(()))
    };
    let decision = decide(&plan(), &rolling_out_progress(), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(&decision, Phase::RollingOut, "disappeared");
}

// ---------------------------------------------------------------------------------------------
// Verifying
// ---------------------------------------------------------------------------------------------

fn verifying_progress() -> Progress {
    Progress {
        migration_succeeded: true,
        ..progress_after_migration_started(Phase::Verifying)
    }
}

#[test]
fn verifying_a_ready_hub_succeeds_and_releases_the_lock() {
    let decision = decide(
        &plan(),
        &verifying_progress(),
        &world_with_hub(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, true)),
        after(90),
    );
    assert_records_then_releases_the_lock(
        &plan(),
        &decision,
        &world_with_hub(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, true)),
    );
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::Succeeded);
    assert_eq!(progress.hub_ready_at, Some(after(90)));
    assert_eq!(progress.downtime_seconds(), Some(90));
    assert_eq!(progress.failure, None);
    assert_eq!(progress.message, format!("the hub runs {TARGET_IMAGE}"));
    assert_eq!(
        timeline(progress),
        [
            (Phase::Verifying, Some(Outcome::Succeeded)),
            (Phase::Succeeded, Some(Outcome::Succeeded))
        ]
    );
    assert_eq!(notice_of(&decision), (EventKind::Normal, "Succeeded"));
    assert_eq!(decision.requeue_after, None);
}

const HEAD_5: &str = "4621fec11365";

fn api_plan() -> Plan {
    Plan {
        verify_hub_api: true,
        ..plan()
    }
}

fn release(releases: &str, head: &str) -> Release {
    Release {
        releases: releases.into(),
        head: head.into(),
    }
}

/// The Ready target hub, whose API answers `health` and `version` (JupyterHub 5 or 4).
fn answering(health: Result<(), String>, version: &str) -> World {
    let five = release("5.0 – 5.5", HEAD_5);
    let version_release = match version.split('.').next() {
        Some("5") => Some(five.clone()),
        Some("4") => Some(release("4.x", "0eee8c825d24")),
        _ => None,
    };
    World {
        hub_api: Some(HubApiAnswers {
            health,
            version: Ok(version.to_string()),
            version_release,
            image_release: Some(five),
        }),
        ..world_with_hub(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, true))
    }
}

fn migrated_to(revision: &str) -> Progress {
    Progress {
        to: Some(Target {
            image: TARGET_IMAGE.into(),
            revision: Some(revision.into()),
        }),
        ..verifying_progress()
    }
}

#[test]
fn verifying_through_the_api_records_health_version_and_revision() {
    let decision = decide(
        &api_plan(),
        &migrated_to(HEAD_5),
        &answering(Ok(()), "5.5.0"),
        after(90),
    );
    assert_eq!(decision.progress.phase, Phase::Succeeded);
    assert_eq!(
        decision.progress.checks_of(Phase::Verifying),
        [
            ("HubHealth", Outcome::Succeeded),
            ("HubVersion", Outcome::Succeeded),
            ("DatabaseRevision", Outcome::Succeeded)
        ]
    );
    let verified = &decision.progress.steps[0];
    assert!(verified.checks[1].message.contains("JupyterHub 5.5.0"));
}

#[test]
fn a_ready_hub_at_the_wrong_version_or_revision_is_a_failed_upgrade() {
    // Its image ships JupyterHub 5, it reports 4.
    let wrong_version = decide(
        &api_plan(),
        &migrated_to(HEAD_5),
        &answering(Ok(()), "4.1.6"),
        after(90),
    );
    assert_eq!(wrong_version.progress.phase, Phase::RollingBack);
    let failure = wrong_version.progress.failure.as_deref().unwrap();
    assert!(failure.contains("reports JupyterHub 4.1.6"), "{failure}");
    assert_eq!(wrong_version.progress.hub_ready_at, None);
    // The database reached another revision than the release the hub reports.
    let wrong_revision = decide(
        &api_plan(),
        &migrated_to("0eee8c825d24"),
        &answering(Ok(()), "5.5.0"),
        after(90),
    );
    assert_eq!(wrong_revision.progress.phase, Phase::RollingBack);
    let failure = wrong_revision.progress.failure.as_deref().unwrap();
    assert!(failure.contains("migrated to 0eee8c825d24"), "{failure}");
}

#[test]
fn a_ready_hub_whose_api_does_not_answer_is_waited_for_then_rolled_back() {
    let silent = answering(Err("cannot connect".into()), "5.5.0");
    let waiting = decide(&api_plan(), &migrated_to(HEAD_5), &silent, after(90));
    assert_eq!(waiting.action, Action::Wait);
    assert_eq!(waiting.progress.phase, Phase::Verifying);
    assert!(
        waiting
            .progress
            .message
            .contains("/hub/health: cannot connect")
    );
    let plan = api_plan();
    let given_up = decide(
        &plan,
        &waiting.progress,
        &silent,
        past(plan.timeouts.verify),
    );
    assert_eq!(given_up.progress.phase, Phase::RollingBack);
    assert!(
        given_up
            .progress
            .failure
            .as_deref()
            .unwrap()
            .contains("not verified within")
    );
}

#[test]
fn verifying_waits_while_the_hub_is_not_rolled_out() {
    let progress = verifying_progress();
    let decision = decide(
        &plan(),
        &progress,
        &world_with_hub(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, false)),
        after(90),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress, progress);
}

#[test]
fn verifying_does_not_accept_a_hub_with_other_replicas_or_image() {
    for observed in [
        hub(TARGET_IMAGE, 1, 1, true),
        hub(ORIGINAL_IMAGE, ORIGINAL_REPLICAS, 2, true),
    ] {
        let decision = decide(
            &plan(),
            &verifying_progress(),
            &world_with_hub(observed.clone()),
            after(90),
        );
        assert_eq!(decision.action, Action::Wait, "{observed:?}");
        assert_eq!(decision.progress.phase, Phase::Verifying, "{observed:?}");
    }
}

#[test]
fn verifying_timeout_rolls_back() {
    let plan = plan();
    let decision = decide(
        &plan,
        &verifying_progress(),
        &world_with_hub(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, false)),
        past(plan.timeouts.verify),
    );
    assert_rolling_back(
        &decision,
        Phase::Verifying,
        &format!("the hub did not become Ready on {TARGET_IMAGE} within 10m"),
    );
}

#[test]
fn verifying_timeout_with_manual_policy_stops_the_hub_and_fails() {
    let plan = manual_plan();
    let decision = decide(
        &plan,
        &verifying_progress(),
        &world_with_hub(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, false)),
        past(plan.timeouts.verify),
    );
    assert_eq!(decision.action, Action::ScaleHub { replicas: 0 });
    assert_failed_touched(&decision, Phase::Verifying, "the hub is left stopped");
}

#[test]
fn verifying_with_the_hub_gone_fails() {
    let world = World {
        hub: None,
        ..world_with_migration(StepState::Succeeded(()))
    };
    let decision = decide(&plan(), &verifying_progress(), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(&decision, Phase::Verifying, "disappeared");
}

// ---------------------------------------------------------------------------------------------
// RollingBack
// ---------------------------------------------------------------------------------------------

/// Rolling back before the migration started: the database is the original one.
fn rolling_back_before_migration() -> Progress {
    Progress {
        from: Some(original()),
        hub_stopped_at: Some(start()),
        failure: Some("the database backup failed: disk full".into()),
        ..progress_in(Phase::RollingBack)
    }
}

/// Rolling back after the migration started: the database must be restored first.
fn rolling_back_after_migration() -> Progress {
    Progress {
        failure: Some("the migration failed: exit code 1".into()),
        ..progress_after_migration_started(Phase::RollingBack)
    }
}

fn rolling_back_world(hub: hubgrade::machine::HubObservation) -> World {
    World {
        hub: Some(hub),
        migration: StepState::Failed("exit code 1".into()),
        ..world_with_backup(StepState::Succeeded(backup_report(true)))
    }
}

#[test]
fn rolling_back_before_the_migration_restores_replicas_without_a_restore() {
    let decision = decide(
        &plan(),
        &rolling_back_before_migration(),
        &rolling_back_world(stopped_hub(ORIGINAL_IMAGE)),
        after(1),
    );
    assert_eq!(
        decision.action,
        Action::ScaleHub {
            replicas: ORIGINAL_REPLICAS
        }
    );
    assert_eq!(decision.progress.phase, Phase::RollingBack);
    assert!(!decision.progress.database_restored);
}

#[test]
fn rolling_back_waits_for_the_original_hub_to_become_ready() {
    let progress = rolling_back_before_migration();
    let decision = decide(
        &plan(),
        &progress,
        &rolling_back_world(hub(ORIGINAL_IMAGE, ORIGINAL_REPLICAS, 1, false)),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::RollingBack);
    assert_eq!(
        decision.progress.message,
        format!("waiting for the hub to become Ready on {ORIGINAL_IMAGE}")
    );
}

#[test]
fn rolling_back_without_a_restore_ends_rolled_back_and_releases_the_lock() {
    let decision = decide(
        &plan(),
        &rolling_back_before_migration(),
        &rolling_back_world(running_hub()),
        after(120),
    );
    assert_records_then_releases_the_lock(&plan(), &decision, &rolling_back_world(running_hub()));
    let progress = &decision.progress;
    assert_eq!(progress.phase, Phase::RolledBack);
    assert_eq!(progress.hub_ready_at, Some(after(120)));
    assert!(!progress.database_restored);
    assert_eq!(
        progress.failure.as_deref(),
        Some("the database backup failed: disk full")
    );
    assert_eq!(
        progress.message,
        format!("rolled back to {ORIGINAL_IMAGE}: the database backup failed: disk full")
    );
    assert_eq!(
        timeline(progress),
        [
            (Phase::RollingBack, Some(Outcome::Succeeded)),
            (Phase::RolledBack, Some(Outcome::Failed))
        ]
    );
    assert_eq!(notice_of(&decision), (EventKind::Warning, "RolledBack"));
    assert_eq!(decision.requeue_after, None);
}

#[test]
fn rolling_back_after_the_migration_stops_a_running_hub_first() {
    let decision = decide(
        &plan(),
        &rolling_back_after_migration(),
        &rolling_back_world(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, false)),
        after(1),
    );
    assert_eq!(decision.action, Action::ScaleHub { replicas: 0 });
    assert_eq!(decision.progress.phase, Phase::RollingBack);
}

#[test]
fn rolling_back_after_the_migration_waits_for_the_hub_pods_to_stop() {
    let decision = decide(
        &plan(),
        &rolling_back_after_migration(),
        &rolling_back_world(hub(TARGET_IMAGE, 0, 1, false)),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.message, "waiting for 1 hub pod to stop");
}

#[test]
fn rolling_back_cancels_a_running_migration_before_restoring() {
    let world = World {
        migration: StepState::Running,
        ..rolling_back_world(stopped_hub(ORIGINAL_IMAGE))
    };
    let decision = decide(&plan(), &rolling_back_after_migration(), &world, after(1));
    assert_eq!(decision.action, Action::CancelMigration);
    assert_eq!(decision.progress.phase, Phase::RollingBack);
}

#[test]
fn rolling_back_after_the_migration_starts_the_restore() {
    for migration in [
        StepState::NotStarted,
        StepState::Failed("exit code 1".into()),
        StepState::Succeeded(()),
    ] {
        let world = World {
            migration: migration.clone(),
            ..rolling_back_world(stopped_hub(TARGET_IMAGE))
        };
        let progress = rolling_back_after_migration();
        let decision = decide(&plan(), &progress, &world, after(1));
        assert_eq!(decision.action, Action::StartRestore, "{migration:?}");
        assert_eq!(decision.progress, progress, "{migration:?}");
    }
}

#[test]
fn rolling_back_waits_for_a_running_restore() {
    let world = World {
        restore: StepState::Running,
        ..rolling_back_world(stopped_hub(ORIGINAL_IMAGE))
    };
    let progress = rolling_back_after_migration();
    let decision = decide(&plan(), &progress, &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress, progress);
}

#[test]
fn rolling_back_records_the_restored_database() {
    let world = World {
        restore: StepState::Succeeded(()),
        ..rolling_back_world(stopped_hub(TARGET_IMAGE))
    };
    let decision = decide(&plan(), &rolling_back_after_migration(), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert!(decision.progress.database_restored);
    assert_eq!(decision.progress.phase, Phase::RollingBack);
    assert!(
        decision
            .progress
            .message
            .contains(&format!("setting the image back to {ORIGINAL_IMAGE}"))
    );
}

#[test]
fn rolling_back_when_the_restore_fails_fails_and_keeps_the_lock() {
    let world = World {
        restore: StepState::Failed("checksum mismatch".into()),
        ..rolling_back_world(stopped_hub(ORIGINAL_IMAGE))
    };
    let decision = decide(&plan(), &rolling_back_after_migration(), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(
        &decision,
        Phase::RollingBack,
        "restoring the database failed: checksum mismatch",
    );
    assert!(!decision.progress.database_restored);
    assert!(
        decision
            .progress
            .message
            .contains("the database backup is /srv/jupyterhub/jupyterhub.sqlite.hubgrade-backup")
    );
}

#[test]
fn rolling_back_after_the_restore_sets_the_original_image() {
    let progress = Progress {
        database_restored: true,
        ..rolling_back_after_migration()
    };
    let world = World {
        restore: StepState::Succeeded(()),
        ..rolling_back_world(stopped_hub(TARGET_IMAGE))
    };
    let decision = decide(&plan(), &progress, &world, after(1));
    assert_eq!(
        decision.action,
        Action::SetHubImage {
            image: ORIGINAL_IMAGE.into()
        }
    );
    assert_eq!(decision.progress.phase, Phase::RollingBack);
}

#[test]
fn rolling_back_after_the_restore_restores_the_original_replicas() {
    let progress = Progress {
        database_restored: true,
        ..rolling_back_after_migration()
    };
    let world = World {
        restore: StepState::Succeeded(()),
        ..rolling_back_world(stopped_hub(ORIGINAL_IMAGE))
    };
    let decision = decide(&plan(), &progress, &world, after(1));
    assert_eq!(
        decision.action,
        Action::ScaleHub {
            replicas: ORIGINAL_REPLICAS
        }
    );
}

#[test]
fn rolling_back_after_the_restore_ends_rolled_back_with_the_database_restored() {
    let progress = Progress {
        database_restored: true,
        ..rolling_back_after_migration()
    };
    let world = World {
        restore: StepState::Succeeded(()),
        ..rolling_back_world(running_hub())
    };
    let decision = decide(&plan(), &progress, &world, after(200));
    assert_records_then_releases_the_lock(&plan(), &decision, &world);
    assert_eq!(decision.progress.phase, Phase::RolledBack);
    assert!(decision.progress.database_restored);
    assert!(decision.progress.migration_started);
    assert_eq!(decision.progress.downtime_seconds(), Some(200));
}

#[test]
fn rolling_back_timeout_before_the_restore_stops_the_hub_and_fails() {
    let plan = plan();
    let decision = decide(
        &plan,
        &rolling_back_after_migration(),
        &rolling_back_world(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, false)),
        past(plan.timeouts.rollback),
    );
    // The database may be migrated: the hub must not stay up on it with the wrong image.
    assert_eq!(decision.action, Action::ScaleHub { replicas: 0 });
    assert_failed_touched(
        &decision,
        Phase::RollingBack,
        "the roll back did not finish within 30m",
    );
}

#[test]
fn rolling_back_timeout_with_the_hub_stopped_fails_without_acting() {
    let plan = plan();
    let world = World {
        restore: StepState::Running,
        ..rolling_back_world(stopped_hub(ORIGINAL_IMAGE))
    };
    let decision = decide(
        &plan,
        &rolling_back_after_migration(),
        &world,
        past(plan.timeouts.rollback),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(&decision, Phase::RollingBack, "did not finish within 30m");
}

#[test]
fn rolling_back_timeout_after_the_restore_fails_leaving_the_hub_as_it_is() {
    let plan = plan();
    let progress = Progress {
        database_restored: true,
        ..rolling_back_after_migration()
    };
    let decision = decide(
        &plan,
        &progress,
        &rolling_back_world(hub(ORIGINAL_IMAGE, ORIGINAL_REPLICAS, 2, false)),
        past(plan.timeouts.rollback),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(&decision, Phase::RollingBack, "did not finish within 30m");
}

#[test]
fn rolling_back_without_the_original_hub_recorded_fails() {
    let progress = Progress {
        from: None,
        ..rolling_back_after_migration()
    };
    let decision = decide(
        &plan(),
        &progress,
        &rolling_back_world(stopped_hub(ORIGINAL_IMAGE)),
        after(1),
    );
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(
        &decision,
        Phase::RollingBack,
        "the original image and replicas were not recorded",
    );
}

#[test]
fn rolling_back_with_the_hub_gone_fails() {
    let world = World {
        hub: None,
        ..rolling_back_world(stopped_hub(ORIGINAL_IMAGE))
    };
    let decision = decide(&plan(), &rolling_back_after_migration(), &world, after(1));
    assert_eq!(decision.action, Action::Wait);
    assert_failed_touched(&decision, Phase::RollingBack, "disappeared");
}

// ---------------------------------------------------------------------------------------------
// Across phases
// ---------------------------------------------------------------------------------------------

#[test]
fn every_non_terminal_decision_asks_to_look_again_soon() {
    for phase in Phase::ALL.into_iter().filter(|p| !p.is_terminal()) {
        let decision = decide(
            &drain_plan(0, OnDrainTimeout::Proceed),
            &progress_in(phase),
            &checked_world(LockState::HeldBy(OTHER_UPGRADE.to_string())),
            after(1),
        );
        if decision.progress.phase.is_terminal() {
            assert_eq!(decision.requeue_after, None, "{phase}");
        } else {
            assert_eq!(
                decision.requeue_after,
                Some(SignedDuration::from_secs(5)),
                "{phase}"
            );
        }
    }
}

#[test]
fn timeouts_are_reported_the_way_a_person_writes_them() {
    let plan = Plan {
        rehearse: true,
        timeouts: hubgrade::machine::Timeouts {
            rehearsal: SignedDuration::from_secs(3600 + 30 * 60 + 5),
            ..Default::default()
        },
        ..plan()
    };
    let world = World {
        rehearsal: StepState::Running,
        ..world()
    };
    let decision = decide(
        &plan,
        &progress_in(Phase::Rehearsal),
        &world,
        past(plan.timeouts.rehearsal),
    );
    let failure = decision.progress.failure.unwrap();
    assert!(failure.contains("within 1h30m5s"), "{failure}");
}

#[test]
fn a_hub_deployment_deleted_mid_upgrade_fails_instead_of_retaking_the_lock() {
    let world = World {
        hub: None,
        lock: LockState::Free,
        ..world_with_stopped_hub()
    };
    let progress = progress_after_migration_started(Phase::Migrating);
    let decision = decide(&plan(), &progress, &world, after(5));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::Failed);
    assert!(decision.progress.message.contains("disappeared"));
}

fn fresh_plan() -> Plan {
    Plan {
        on_migration_failure: MigrationFailure::FreshDatabase,
        ..plan()
    }
}

/// `migration.onFailure: FreshDatabase`: a failed migration moves the database aside first.
#[test]
fn a_failed_migration_with_fresh_database_moves_the_database_aside() {
    let progress = progress_after_migration_started(Phase::Migrating);
    let decision = decide(
        &fresh_plan(),
        &progress,
        &world_with_migration(StepState::Failed("exit code 1".into())),
        after(60),
    );
    assert_eq!(decision.action, Action::StartFreshDatabase);
    assert_eq!(decision.progress.phase, Phase::Migrating);
}

/// Moved aside: the hub rolls out on the target image; the status and a Warning Event say
/// why, where the old database is and which backup is kept; the migration step failed.
#[test]
fn once_moved_aside_the_hub_rolls_out_on_a_fresh_database() {
    let progress = progress_after_migration_started(Phase::Migrating);
    let world = World {
        fresh_database: StepState::Succeeded(()),
        moved_aside: Some("the failed database /srv/a.sqlite was moved to /srv/b.sqlite".into()),
        ..world_with_migration(StepState::Failed("exit code 1".into()))
    };
    let decision = decide(&fresh_plan(), &progress, &world, after(60));
    assert_eq!(decision.action, Action::Wait);
    assert_eq!(decision.progress.phase, Phase::RollingOut);
    let said = decision.progress.fresh_database.clone().expect("recorded");
    for words in [
        "exit code 1",
        "moved to /srv/b.sqlite",
        "new, empty database",
    ] {
        assert!(said.contains(words), "{said}");
    }
    let backup = progress.backup.as_ref().expect("backup").reference.clone();
    assert!(said.contains(&backup), "{said}");
    let notice = decision.notice.expect("an Event");
    assert_eq!(
        (notice.kind, notice.reason.as_str()),
        (EventKind::Warning, "FreshDatabase")
    );
    let migrating = decision
        .progress
        .steps
        .iter()
        .find(|s| s.name == Phase::Migrating)
        .expect("the migration step");
    assert_eq!(migrating.outcome, Some(Outcome::Failed));
    assert_eq!(
        decision.progress.to.as_ref().map(|t| t.image.as_str()),
        Some(TARGET_IMAGE)
    );
}

/// Moving aside failed: the upgrade rolls back as it would have without FreshDatabase.
#[test]
fn a_database_that_cannot_be_moved_aside_is_rolled_back() {
    let world = World {
        fresh_database: StepState::Failed("permission denied".into()),
        ..world_with_migration(StepState::Failed("exit code 1".into()))
    };
    let decision = decide(
        &fresh_plan(),
        &progress_after_migration_started(Phase::Migrating),
        &world,
        after(60),
    );
    assert_rolling_back(
        &decision,
        Phase::Migrating,
        "moving the database aside for a fresh one failed too: permission denied",
    );
}

/// The default, RollBack, never moves the database aside.
#[test]
fn the_default_rolls_a_failed_migration_back() {
    let decision = decide(
        &plan(),
        &progress_after_migration_started(Phase::Migrating),
        &world_with_migration(StepState::Failed("exit code 1".into())),
        after(60),
    );
    assert_ne!(decision.action, Action::StartFreshDatabase);
    assert_eq!(decision.progress.fresh_database, None);
}
