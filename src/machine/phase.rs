//! The phases of an upgrade.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use strum::{EnumCount, VariantArray};

/// Where an upgrade is. `Succeeded`, `RolledBack` and `Failed` are terminal.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    strum::IntoStaticStr,
    strum::Display,
    strum::EnumCount,
    strum::VariantArray,
)]
pub enum Phase {
    /// Accepted, nothing done yet.
    #[default]
    Pending,
    /// Read-only checks; then the hub lock is taken.
    Preflight,
    /// The new image's migration runs against a copy of the database.
    Rehearsal,
    /// Checked and rehearsed, nothing changed for users: waiting for approval
    /// (`approval: Manual`) or for the maintenance window to open.
    Scheduled,
    /// Waiting for users' servers to stop (or stopping them).
    Draining,
    /// The original image and replicas are recorded, the configuration is copied, then the hub
    /// is scaled to zero.
    ScalingDown,
    /// The stopped hub's database is backed up.
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
    /// Every phase, in the order declared above.
    pub const ALL: [Phase; Phase::COUNT] = match Phase::VARIANTS.first_chunk() {
        Some(all) => *all,
        None => unreachable!(),
    };

    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::RolledBack | Phase::Failed)
    }

    /// The phase's name, as serde writes it in the status and Display prints it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_as_str_are_the_names_serde_writes() {
        for phase in Phase::ALL {
            let json = serde_json::to_value(phase).expect("serialize");
            assert_eq!(json, serde_json::Value::from(phase.as_str()));
            assert_eq!(phase.to_string(), phase.as_str());
        }
        assert_eq!(Phase::ScalingDown.as_str(), "ScalingDown");
        assert_eq!(Phase::ALL.len(), 14);
        assert_eq!(Phase::ALL[0], Phase::Pending);
    }
}
