//! Builders shared by the state machine's table and property tests.
//!
//! Each test crate uses a different subset, hence the crate-level `dead_code` allowance at the
//! `mod machine_support;` line of each user.

use hubgrade::machine::{
    BackupMethod, BackupRecord, HubObservation, ImageManagement, LockState, MigrationFailure,
    Original, Phase, Plan, Progress, RollbackPolicy, StepRecord, Timeouts, Window, World,
};
use jiff::{SignedDuration, Timestamp};

/// The image the hub runs before the upgrade.
pub const ORIGINAL_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
/// The image the upgrade moves the hub to.
pub const TARGET_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:4.3.0";
/// Replicas of the hub before the upgrade, in the table tests.
pub const ORIGINAL_REPLICAS: i32 = 2;
/// The name another HubUpgrade holding the lock goes by.
pub const OTHER_UPGRADE: &str = "jhub/upgrade-to-4.2.1";

/// When the current phase of a test upgrade began.
pub fn start() -> Timestamp {
    "2025-06-01T12:00:00Z".parse().unwrap()
}

/// `seconds` after [`start`].
pub fn after(seconds: i64) -> Timestamp {
    start() + SignedDuration::from_secs(seconds)
}

/// Operator-managed image, no rehearsal, no draining, automatic roll back, default timeouts.
pub fn plan() -> Plan {
    Plan {
        target_image: TARGET_IMAGE.to_string(),
        rehearse: false,
        drain: None,
        image_management: Some(ImageManagement::Operator),
        accept_image_drift: false,
        rollback: RollbackPolicy::Automatic,
        on_migration_failure: MigrationFailure::RollBack,
        timeouts: Timeouts::default(),
        window: Window::default(),
        approval_required: false,
        verify_hub_api: false,
    }
}

pub fn hub(image: &str, replicas: i32, pods: u32, rolled_out: bool) -> HubObservation {
    HubObservation {
        image: image.to_string(),
        replicas,
        pods,
        rolled_out,
        stuck: None,
        scaled_by: None,
        managed_by: None,
    }
}

/// The hub as it runs before the upgrade.
pub fn running_hub() -> HubObservation {
    hub(ORIGINAL_IMAGE, ORIGINAL_REPLICAS, 2, true)
}

/// The hub scaled to zero with its pods gone.
pub fn stopped_hub(image: &str) -> HubObservation {
    hub(image, 0, 0, true)
}

/// A world where the hub runs the original image and this upgrade holds the lock.
pub fn world() -> World {
    World {
        hub: Some(running_hub()),
        lock: LockState::HeldBySelf,
        ..World::default()
    }
}

/// A world with the hub stopped (as from ScalingDown on) and this upgrade holding the lock.
pub fn world_with_stopped_hub() -> World {
    World {
        hub: Some(stopped_hub(ORIGINAL_IMAGE)),
        ..world()
    }
}

pub fn original() -> Original {
    Original {
        image: ORIGINAL_IMAGE.to_string(),
        replicas: ORIGINAL_REPLICAS,
    }
}

pub fn backup_report(verified: bool) -> BackupRecord {
    BackupRecord {
        method: BackupMethod::File,
        reference: "/srv/jupyterhub/jupyterhub.sqlite.hubgrade-backup".to_string(),
        size_bytes: Some(81_920),
        checksum: Some("sha256:5d41402abc4b2a76b9719d911017c592".to_string()),
        verified,
        pruned: Vec::new(),
    }
}

/// What the machine records for `backup_report(true)`.
pub fn verified_backup() -> BackupRecord {
    let report = backup_report(true);
    BackupRecord {
        method: report.method,
        reference: report.reference,
        size_bytes: report.size_bytes,
        checksum: report.checksum,
        verified: true,
        pruned: Vec::new(),
    }
}

/// Progress that entered `phase` at [`start`], with that phase's step open and nothing else
/// recorded. Tests add the fields the phase would have gathered so far.
pub fn progress_in(phase: Phase) -> Progress {
    Progress {
        phase,
        phase_started_at: Some(start()),
        message: String::new(),
        steps: vec![StepRecord {
            name: phase,
            started_at: start(),
            finished_at: None,
            outcome: None,
            message: String::new(),
            checks: Vec::new(),
        }],
        ..Progress::default()
    }
}

/// Progress in `phase` after the hub was recorded, backed up and the migration was started:
/// the state of an upgrade from Migrating on.
pub fn progress_after_migration_started(phase: Phase) -> Progress {
    Progress {
        from: Some(original()),
        backup: Some(verified_backup()),
        config_backed_up: true,
        migration_started: true,
        hub_stopped_at: Some(start()),
        ..progress_in(phase)
    }
}
