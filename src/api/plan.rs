//! Turning a validated spec into the state machine's [`Plan`].

use jiff::Timestamp;

use super::{Approval, DurationError, HubUpgradeSpec, ImageManagementMode, parse_duration};
use crate::machine::{DrainPlan, ImageManagement, Plan, Timeouts, Window};

/// A spec the API server accepted but hubgrade cannot run (only possible when the CRD's
/// validation was bypassed, e.g. an older CRD is installed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SpecError {
    #[error("spec.{field}: {source}")]
    Duration {
        field: &'static str,
        source: DurationError,
    },
    #[error("spec.{field}: {text:?} is not an RFC 3339 time such as 2026-12-01T02:00:00Z")]
    Time { field: &'static str, text: String },
}

impl HubUpgradeSpec {
    /// The plan the state machine follows for this spec.
    pub fn plan(&self) -> Result<Plan, SpecError> {
        let time = |field: &'static str, text: &Option<String>| match text {
            None => Ok(None),
            Some(text) => text
                .parse::<Timestamp>()
                .map(Some)
                .map_err(|_| SpecError::Time {
                    field,
                    text: text.clone(),
                }),
        };
        let schedule = self.schedule.clone().unwrap_or_default();
        let window = Window {
            not_before: time("schedule.notBefore", &schedule.not_before)?,
            not_after: time("schedule.notAfter", &schedule.not_after)?,
        };
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
                Some(DrainPlan {
                    max_active_servers: drain.max_active_servers,
                    on_timeout: drain.on_timeout,
                })
            }
        };
        Ok(Plan {
            target_image: self.target_image.clone(),
            rehearse: self.migration.rehearse,
            drain,
            accept_image_drift: self.rollout.accept_image_drift,
            image_management: match self.rollout.image_management {
                ImageManagementMode::Auto => None,
                ImageManagementMode::Operator => Some(ImageManagement::Operator),
                ImageManagementMode::External => Some(ImageManagement::External),
            },
            rollback: self.rollback.policy,
            on_migration_failure: self.migration.on_failure,
            window,
            approval_required: self.approval == Approval::Manual,
            verify_hub_api: self.verify.hub_api,
            timeouts,
        })
    }
}

#[cfg(test)]
mod tests {
    use jiff::SignedDuration;

    use crate::api::HubUpgradeSpec;

    #[test]
    fn every_timeout_comes_from_the_spec() {
        let spec: HubUpgradeSpec = serde_json::from_value(serde_json::json!({
            "hub": {"deployment": "hub"},
            "targetImage": "quay.io/jupyterhub/k8s-hub:4.4.0",
            "migration": {"timeout": "11m"},
            "backup": {"timeout": "12m"},
            "rollout": {"timeout": "13m", "stopTimeout": "14m"},
            "rollback": {"timeout": "15m"},
            "drain": {"timeout": "16m", "tokenSecret": {"name": "hub", "key": "token"}}
        }))
        .expect("spec");
        let timeouts = spec.plan().expect("plan").timeouts;
        let minutes = |m| SignedDuration::from_mins(m);
        assert_eq!(timeouts.rehearsal, minutes(11));
        assert_eq!(timeouts.migration, minutes(11));
        assert_eq!(timeouts.backup, minutes(12));
        assert_eq!(timeouts.rollout, minutes(13));
        assert_eq!(timeouts.verify, minutes(13));
        assert_eq!(timeouts.scale_down, minutes(14));
        assert_eq!(timeouts.rollback, minutes(15));
        assert_eq!(timeouts.drain, minutes(16));
    }
}
