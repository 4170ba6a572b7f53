//! What the operator observed before calling the machine. The shell fills it from the cluster
//! (and the database); the machine trusts it and never looks anywhere else.

use super::BackupRecord;

/// A snapshot of the world for one decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct World {
    /// The hub Deployment; `None` when it does not exist.
    pub hub: Option<HubObservation>,
    /// Who holds the hub lock (an annotation on the Deployment).
    pub lock: LockState,
    /// Results of the read-only checks; gathered only while in Preflight.
    pub preflight: Option<Preflight>,
    /// The users' servers the hub's API reports active (`user`, or `user/server` for a named
    /// server), when it answered; observed while Draining.
    pub active_servers: Option<Vec<String>>,
    /// Why the hub's API did not report them.
    pub hub_api_problem: Option<String>,
    /// What the Ready hub's REST API answered; observed while Verifying and Rolling back, once
    /// the hub rolled out and `verify.hubApi` asks for it.
    pub hub_api: Option<HubApiAnswers>,
    pub rehearsal: StepState<()>,
    /// The backup Job finished: the backup it reported.
    pub backup: StepState<BackupRecord>,
    pub migration: StepState<()>,
    /// The alembic revision the migrated database reached, as the migration Job reported it.
    pub migrated_revision: Option<String>,
    pub restore: StepState<()>,
    /// What a finished restore said it did (a server database: the name the failed database is
    /// kept under), for the Event that announces it.
    pub restored: Option<String>,
    /// Moving the failed database aside (`migration.onFailure: FreshDatabase`).
    pub fresh_database: StepState<()>,
    /// What the move said it did (where the failed database now is).
    pub moved_aside: Option<String>,
    /// Why the rehearsal cannot run (say, the hub's claim is ReadWriteOncePod and in use);
    /// `None`: it can.
    pub rehearsal_blocked: Option<String>,
    /// The HubUpgrade is being deleted: it ends as soon as that is safe for the hub (rolled
    /// back, or finished when the migration is done) before it lets go.
    pub deleting: bool,
    /// Someone asked the upgrade to stop now (the `hubgrade.io/abort` annotation): who and why.
    pub abort: Option<String>,
    /// Someone approved the upgrade (the `hubgrade.io/approved` annotation): who.
    pub approved: Option<String>,
}

/// What the hub's REST API answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubApiAnswers {
    /// `/hub/health` answered; `Err`: why it did not, as a person can act on it.
    pub health: Result<(), String>,
    /// The JupyterHub version `/hub/api` reports, or why it could not be read.
    pub version: Result<String, String>,
    /// The release series of that version, from hubgrade's release table; `None`: unknown.
    pub version_release: Option<Release>,
    /// The release series the hub's image ships (a z2jh hub image names it); `None`: unknown.
    pub image_release: Option<Release>,
}

/// A JupyterHub release series as the machine compares it: its name and the alembic head
/// revision of its database schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Release {
    /// e.g. "5.0 – 5.5".
    pub releases: String,
    pub head: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct HubObservation {
    /// Image of the hub container in the Deployment's pod template.
    pub image: String,
    /// `spec.replicas` of the Deployment.
    pub replicas: i32,
    /// Hub pods that exist and have not finished (terminating ones included; evicted or
    /// completed ones are not).
    pub pods: u32,
    /// The Deployment has rolled out its current template: every wanted replica is updated,
    /// Ready and available, and no pod of an older template is left.
    pub rolled_out: bool,
    /// Why a hub pod cannot start (image pull, configuration, scheduling), once that has
    /// lasted long enough not to be a passing state.
    pub stuck: Option<String>,
    /// Who last set the Deployment's replicas (its field manager), when that was not hubgrade.
    pub scaled_by: Option<String>,
    /// The tool that manages the Deployment (Helm, Argo CD, Flux), from its labels and
    /// annotations, e.g. "Helm (release jhub)"; `None`: nothing says so.
    pub managed_by: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LockState {
    #[default]
    Free,
    HeldBySelf,
    /// Held by another HubUpgrade, named `namespace/name`.
    HeldBy(String),
}

/// Outcome of the read-only checks (database reachable, target not a schema downgrade, backup
/// destination usable, ...). Each problem is a sentence a person can act on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preflight {
    pub problems: Vec<String>,
}

/// The state of a piece of work the operator started (a Job, a snapshot, ...), found by its
/// deterministic name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StepState<T> {
    #[default]
    NotStarted,
    Running,
    Succeeded(T),
    Failed(String),
}

impl<T> StepState<T> {
    pub fn is_started(&self) -> bool {
        !matches!(self, StepState::NotStarted)
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> StepState<U> {
        match self {
            StepState::NotStarted => StepState::NotStarted,
            StepState::Running => StepState::Running,
            StepState::Succeeded(value) => StepState::Succeeded(f(value)),
            StepState::Failed(why) => StepState::Failed(why),
        }
    }
}
