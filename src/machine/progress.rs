//! What the machine records about an upgrade (the machine's part of the resource's status).
//! All state lives here, so a restarted operator continues where the last one stopped.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{BackupRecord, ImageManagement, Phase};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// Where the upgrade is.
    #[serde(default)]
    pub phase: Phase,
    /// When the current phase began; phase timeouts count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub phase_started_at: Option<Timestamp>,
    /// One line on what is happening or why the upgrade stopped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// Why the upgrade ended as it did, as one word, when the phase alone does not say it:
    /// AlreadyAtTarget, Aborted, Deleted, ManagedHub, PreflightFailed, RehearsalFailed, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// How the target image reaches the hub, settled in Preflight: Operator (hubgrade sets it)
    /// or External (Helm, Argo CD or Flux sets it; hubgrade never writes the image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_management: Option<ImageManagement>,
    /// The hub as it was before it was touched: recorded before it is scaled down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Original>,
    /// The hub after the migration: the target image and the revision the database reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Target>,
    /// The finished, verified database backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRecord>,
    /// The configuration (ConfigMaps and Secrets) was copied.
    #[serde(default, skip_serializing_if = "is_false")]
    pub config_backed_up: bool,
    /// Recorded before the migration starts: from here on the database may differ from the backup.
    #[serde(default, skip_serializing_if = "is_false")]
    pub migration_started: bool,
    /// The migration finished successfully.
    #[serde(default, skip_serializing_if = "is_false")]
    pub migration_succeeded: bool,
    /// `migration.onFailure: FreshDatabase` was applied: why, and where the failed database is.
    /// The hub then starts on a new, empty database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_database: Option<String>,
    /// The database was restored from the backup during a roll back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub database_restored: bool,
    /// The upgrade failed after touching the hub: the hub lock stays, so no other upgrade acts
    /// on the hub until a person has looked at it (deleting this HubUpgrade releases it).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keeps_lock: bool,
    /// Why the upgrade is rolling back or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// The operator scaled the hub to zero at this time: users lose the hub from here on,
    /// while its pods still stop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub hub_scaled_down_at: Option<Timestamp>,
    /// The last hub pod of the original deployment was gone at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub hub_stopped_at: Option<Timestamp>,
    /// The hub was Ready again at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub hub_ready_at: Option<Timestamp>,
    /// Who approved the upgrade (`approval: Manual`), from the `hubgrade.io/approved` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// User servers the hub's API reported active, as they fall while Draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_servers: Option<u32>,
    /// The users' servers the drain stopped through the hub's API (`drain.onTimeout:
    /// StopServers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopped_servers: Vec<String>,
    /// Another HubUpgrade holds the hub lock; this one waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// The timeline: one entry per phase entered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepRecord>,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The hub before the upgrade touched it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Original {
    /// Image of the hub container.
    pub image: String,
    /// Replicas of the hub Deployment.
    pub replicas: i32,
}

/// The hub the upgrade moved to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The target image.
    pub image: String,
    /// The alembic revision the migrated database reached, read from it after the migration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Outcome {
    Succeeded,
    Failed,
    Skipped,
}

/// One phase in the timeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepRecord {
    pub name: Phase,
    #[schemars(with = "String")]
    pub started_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The checks made in this phase (Verifying, RollingBack: the hub's health, the release
    /// it reports, the database revision).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

/// One check of a phase, e.g. `HubHealth`, `HubVersion` or `DatabaseRevision`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

impl Progress {
    /// The checks recorded in `phase`'s last step, by name and outcome.
    pub fn checks_of(&self, phase: Phase) -> Vec<(&str, Outcome)> {
        self.steps
            .iter()
            .rev()
            .find(|s| s.name == phase)
            .map(|s| {
                s.checks
                    .iter()
                    .map(|c| (c.name.as_str(), c.outcome))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Seconds between the hub going down (scaled to zero, else its pods gone) and the hub
    /// being Ready again.
    pub fn downtime_seconds(&self) -> Option<i64> {
        let stopped = self.hub_stopped_at?;
        let down = self.hub_scaled_down_at.map_or(stopped, |s| s.min(stopped));
        let ready = self.hub_ready_at?;
        // Rounded, not truncated: the status says what a user saw to the nearest second.
        Some((down.duration_until(ready).as_secs_f64().round() as i64).max(0))
    }
}
