//! What the machine asks the shell to do.

use jiff::SignedDuration;

use super::Progress;

/// One state-changing step. The shell performs it, then records the decision's progress.
/// Every action is idempotent: repeating it after a crash finds the earlier work. Its name
/// (`Action::Wait` → `wait`, `ScaleHub` → `scale_hub`) labels the operator's metrics.
#[derive(Clone, Debug, PartialEq, Eq, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Action {
    /// Nothing to change on the cluster; only record progress (or keep waiting).
    Wait,
    /// Write the lock annotation naming this upgrade on the hub Deployment.
    AcquireLock,
    /// Remove the lock annotation if it names this upgrade.
    ReleaseLock,
    /// Copy the database and run the target image's migration against the copy.
    StartRehearsal,
    /// Ask the hub, through its REST API, to stop these users' servers (`user` or
    /// `user/server`).
    StopServers { servers: Vec<String> },
    /// Set `spec.replicas` of the hub Deployment.
    ScaleHub { replicas: i32 },
    /// Delete the hub's pods at once (no grace period): they came back while the database
    /// must stay untouched.
    DeleteHubPods,
    /// Copy the hub's ConfigMaps and Secrets into backup objects owned by the upgrade.
    BackUpConfig,
    /// Back up the (stopped) hub's database.
    StartBackup,
    /// Run `jupyterhub upgrade-db` with the target image.
    StartMigration,
    /// Stop a migration that is still running (its Job and pods), before the database is restored.
    CancelMigration,
    /// Set the image of the hub container.
    SetHubImage { image: String },
    /// Restore the database from the recorded backup.
    StartRestore,
    /// Move the failed SQLite database aside, so that the new hub starts on a new one
    /// (`migration.onFailure: FreshDatabase`).
    StartFreshDatabase,
}

impl Action {
    /// Whether the action changes the hub itself (its Deployment's spec or its database).
    pub fn touches_hub(&self) -> bool {
        matches!(
            self,
            Action::StopServers { .. }
                | Action::ScaleHub { .. }
                | Action::DeleteHubPods
                | Action::StartMigration
                | Action::CancelMigration
                | Action::SetHubImage { .. }
                | Action::StartRestore
                | Action::StartFreshDatabase
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// A Kubernetes Event to emit with the decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: EventKind,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub action: Action,
    /// The progress to record once the action is done.
    pub progress: Progress,
    pub notice: Option<Notice>,
    /// Look again after this long even if nothing changes (a wait, a timeout to catch).
    pub requeue_after: Option<SignedDuration>,
}
