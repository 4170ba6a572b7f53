//! What the spec asks for, in the form the machine needs (durations parsed, defaults applied).

use jiff::{SignedDuration, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub target_image: String,
    pub rehearse: bool,
    /// `None`: the Draining phase is skipped.
    pub drain: Option<DrainPlan>,
    /// How the target image reaches the hub; `None` (Auto): [`ImageManagement::External`] when
    /// Helm, Argo CD or Flux manages the hub Deployment, else [`ImageManagement::Operator`].
    pub image_management: Option<ImageManagement>,
    /// `Operator` on a hub that Helm, Argo CD or Flux manages was asked for knowingly
    /// (`rollout.acceptImageDrift`).
    pub accept_image_drift: bool,
    pub rollback: RollbackPolicy,
    /// What a failed migration of an SQLite database leads to.
    pub on_migration_failure: MigrationFailure,
    pub timeouts: Timeouts,
    /// When the hub may be stopped.
    pub window: Window,
    /// A person must approve (the `hubgrade.io/approved` annotation) before the hub is stopped.
    pub approval_required: bool,
    /// The upgraded (and the rolled back) hub is verified through its REST API: health, and
    /// the JupyterHub release it reports.
    pub verify_hub_api: bool,
}

/// The annotation on a HubUpgrade with `approval: Manual` that says go (`kubectl hubgrade
/// approve`): its value says who, and is recorded in the status.
pub const APPROVED_ANNOTATION: &str = "hubgrade.io/approved";

/// The maintenance window: the hub is stopped neither before `not_before` nor after `not_after`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Window {
    pub not_before: Option<Timestamp>,
    pub not_after: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DrainPlan {
    /// Draining finishes once at most this many user servers are active.
    pub max_active_servers: u32,
    /// What happens when more are still active once the drain timeout passed.
    pub on_timeout: OnDrainTimeout,
}

/// What a drain that timed out leads to; also the spec's `drain.onTimeout`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display,
)]
pub enum OnDrainTimeout {
    /// The hub goes down anyway; running servers keep running.
    #[default]
    Proceed,
    /// The upgrade ends Failed, nothing changed.
    Abort,
    /// The remaining servers are stopped through the hub's API, then the hub goes down.
    StopServers,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImageManagement {
    /// The operator sets the target image on the hub Deployment.
    Operator,
    /// A GitOps tool or Helm sets it; the operator waits for it.
    External,
}

/// What a failed `jupyterhub upgrade-db` leads to; the spec's `migration.onFailure`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, strum::Display,
)]
pub enum MigrationFailure {
    /// Roll back: the database restored from the backup, the original image.
    #[default]
    RollBack,
    /// SQLite only, as JupyterHub's upgrade notes allow when upgrade-db cannot migrate an
    /// SQLite file: keep the verified backup, move the failed database aside, and let the new
    /// hub start on a new, empty database (users log in again; tokens and server state are
    /// lost). Said in the status and a Warning Event.
    FreshDatabase,
}

/// What a failure after the hub was stopped leads to; also the spec's `rollback.policy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RollbackPolicy {
    /// Restore the database, set the original image and replicas, and wait for the hub.
    #[default]
    Automatic,
    /// Leave the hub stopped for a person to decide; the backup is named in status.
    Manual,
}

/// How long each phase may take before it counts as failed. Preflight has none: it only reads,
/// and waiting for another upgrade's lock may rightly last as long as that upgrade.
#[derive(Clone, Debug, PartialEq)]
pub struct Timeouts {
    pub rehearsal: SignedDuration,
    pub drain: SignedDuration,
    pub scale_down: SignedDuration,
    pub backup: SignedDuration,
    pub migration: SignedDuration,
    /// Setting the image and restoring replicas (External mode: waiting for the image change).
    pub rollout: SignedDuration,
    /// Waiting for the upgraded hub to become Ready.
    pub verify: SignedDuration,
    /// The whole roll back, after which the upgrade is Failed.
    pub rollback: SignedDuration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            rehearsal: SignedDuration::from_mins(30),
            drain: SignedDuration::from_mins(15),
            scale_down: SignedDuration::from_mins(5),
            backup: SignedDuration::from_mins(30),
            migration: SignedDuration::from_mins(30),
            rollout: SignedDuration::from_mins(10),
            verify: SignedDuration::from_mins(10),
            rollback: SignedDuration::from_mins(30),
        }
    }
}
