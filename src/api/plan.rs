//! Turning a validated spec into the state machine's [`Plan`].

use jiff::Timestamp;

use super::{
    DurationError, HubUpgradeSpec, ImageManagementMode, RollbackPolicyMode, parse_duration,
};
use crate::machine::{DrainPlan, ImageManagement, Plan, RollbackPolicy, Timeouts};

/// A spec the API server accepted but hubgrade cannot run (only possible when the CRD's
/// validation was bypassed, e.g. an older CRD is installed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("spec.{field}: {source}")]
    Duration {
        field: &'static str,
        source: DurationError,
    },
    #[error("spec.drain.notBefore: {0:?} is not an RFC 3339 time such as 2026-12-01T02:00:00Z")]
    NotBefore(String),
}

impl HubUpgradeSpec {
    /// The plan the state machine follows for this spec.
    pub fn plan(&self) -> Result<Plan, SpecError> {
        let duration = |field: &'static str, text: &str| {
            parse_duration(text).map_err(|source| SpecError::Duration { field, source })
        };
        let defaults = Timeouts::default();
        let migration = duration("migration.timeout", &self.migration.timeout)?;
        let rollout = duration("rollout.timeout", &self.rollout.timeout)?;
        let mut timeouts = Timeouts {
            rehearsal: migration,
            backup: duration("backup.timeout", &self.backup.timeout)?,
            migration,
            rollout,
            verify: rollout,
            scale_down: duration("rollout.stopTimeout", &self.rollout.stop_timeout)?,
            rollback: duration("rollback.timeout", &self.rollback.timeout)?,
            ..defaults
        };
        let drain = match &self.drain {
            None => None,
            Some(drain) => {
                timeouts.drain = duration("drain.timeout", &drain.timeout)?;
                let not_before = match &drain.not_before {
                    None => None,
                    Some(text) => Some(
                        text.parse::<Timestamp>()
                            .map_err(|_| SpecError::NotBefore(text.clone()))?,
                    ),
                };
                Some(DrainPlan {
                    not_before,
                    max_active_servers: drain.max_active_servers,
                    stop_servers: drain.stop_servers,
                })
            }
        };
        Ok(Plan {
            target_image: self.target_image.clone(),
            rehearse: self.migration.rehearse,
            drain,
            image_management: match self.rollout.image_management {
                ImageManagementMode::Operator => ImageManagement::Operator,
                ImageManagementMode::External => ImageManagement::External,
            },
            rollback: match self.rollback.policy {
                RollbackPolicyMode::Automatic => RollbackPolicy::Automatic,
                RollbackPolicyMode::Manual => RollbackPolicy::Manual,
            },
            timeouts,
        })
    }
}
