//! The phases of an upgrade.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where an upgrade is. `Succeeded`, `RolledBack` and `Failed` are terminal.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    /// Accepted, nothing done yet.
    #[default]
    Pending,
    /// Read-only checks; then the hub lock is taken.
    Preflight,
    /// The new image's migration runs against a copy of the database.
    Rehearsal,
    /// Waiting for users' servers to stop (or stopping them).
    Draining,
    /// The original image and replicas are recorded, then the hub is scaled to zero.
    ScalingDown,
    /// The configuration and the stopped hub's database are backed up.
    BackingUp,
    /// `jupyterhub upgrade-db` runs with the target image.
    Migrating,
    /// The target image is set and the original replicas restored.
    RollingOut,
    /// Waiting for the upgraded hub to become Ready.
    Verifying,
    /// The hub runs the target image. Terminal.
    Succeeded,
    /// Undoing a failed upgrade: hub stopped, database restored, original image and replicas.
    RollingBack,
    /// The hub runs the original image on the original database. Terminal.
    RolledBack,
    /// The upgrade stopped and could not (or may not) undo itself. Terminal.
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 13] = [
        Phase::Pending,
        Phase::Preflight,
        Phase::Rehearsal,
        Phase::Draining,
        Phase::ScalingDown,
        Phase::BackingUp,
        Phase::Migrating,
        Phase::RollingOut,
        Phase::Verifying,
        Phase::Succeeded,
        Phase::RollingBack,
        Phase::RolledBack,
        Phase::Failed,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Preflight => "Preflight",
            Phase::Rehearsal => "Rehearsal",
            Phase::Draining => "Draining",
            Phase::ScalingDown => "ScalingDown",
            Phase::BackingUp => "BackingUp",
            Phase::Migrating => "Migrating",
            Phase::RollingOut => "RollingOut",
            Phase::Verifying => "Verifying",
            Phase::Succeeded => "Succeeded",
            Phase::RollingBack => "RollingBack",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
