//! The spec of a `HubUpgrade`. Doc comments here become the CRD's descriptions, which
//! `kubectl explain hubupgrade.spec` shows; CEL rules (`x_kube(validation)`) become
//! `x-kubernetes-validations`, enforced by the API server.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::HubUpgradeStatus;
use crate::machine::{BackupMethod, MigrationFailure, OnDrainTimeout, RollbackPolicy};

/// Upgrades one JupyterHub deployment to a new hub image: checks first, rehearses the database migration on a copy, stops the hub, backs up its database, runs `jupyterhub upgrade-db`, brings the hub back on the new image and verifies it, and rolls back when anything fails. A HubUpgrade acts once; a new upgrade is a new HubUpgrade.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "hubgrade.io",
    version = "v1alpha1",
    kind = "HubUpgrade",
    plural = "hubupgrades",
    namespaced,
    status = "HubUpgradeStatus",
    shortname = "hubup",
    category = "jupyterhub",
    doc = "A one-shot, crash-safe upgrade of a JupyterHub deployment to a new hub image, with a database backup and an automatic roll back.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Where the upgrade is"),
    printcolumn(name = "Hub", type_ = "string", json_path = ".spec.hub.deployment", description = "The hub Deployment"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.targetImage", description = "The image the hub is upgraded to"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", description = "What is happening, or why the upgrade stopped"),
    validation = Rule::new(
        "!has(oldSelf.status) || !has(oldSelf.status.phase) || oldSelf.status.phase == 'Pending' || self.spec == oldSelf.spec"
    ).message("spec cannot change once the upgrade has started; create a new HubUpgrade instead"),
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name must be at most 63 characters: hubgrade labels the Jobs it makes with it")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.backup.method != 'File' || self.database.type in ['Auto', 'SQLite']"
).message("backup.method File copies an SQLite database file; it needs database.type SQLite or Auto"))]
#[x_kube(validation = Rule::new(
    "self.backup.method != 'VolumeSnapshot' || self.database.type in ['Auto', 'SQLite']"
).message("backup.method VolumeSnapshot snapshots the hub's SQLite volume; it needs database.type SQLite or Auto"))]
#[x_kube(validation = Rule::new(
    "!(self.backup.method in ['Clone', 'Dump']) || self.database.type != 'SQLite'"
).message("backup.method Clone and Dump are for PostgreSQL and MySQL; use File or VolumeSnapshot for SQLite"))]
#[x_kube(validation = Rule::new(
    "self.migration.onFailure != 'FreshDatabase' || self.database.type in ['Auto', 'SQLite']"
).message("migration.onFailure FreshDatabase is for SQLite databases: a PostgreSQL or MySQL hub is rolled back"))]
pub struct HubUpgradeSpec {
    /// The hub to upgrade: its Deployment in this namespace.
    pub hub: HubRef,

    /// The hub image to upgrade to, with a tag or a digest, e.g. quay.io/jupyterhub/k8s-hub:4.2.0. Its JupyterHub release must not be older than the hub's database schema.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new(
        "self.matches('^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$')"
    ).message("targetImage must be an image reference such as quay.io/jupyterhub/k8s-hub:4.2.0"))]
    #[x_kube(validation = Rule::new(
        "self.matches('(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[a-f0-9]{64})$')"
    ).message("targetImage must name a tag or a digest (quay.io/jupyterhub/k8s-hub:4.2.0); an untagged image is ambiguous"))]
    pub target_image: String,

    /// The hub's database. Omitted: detected from the hub's pod template and its z2jh configuration.
    #[serde(default)]
    pub database: DatabaseSpec,

    /// How the database is backed up before the migration.
    #[serde(default)]
    pub backup: BackupSpec,

    /// The `jupyterhub upgrade-db` run.
    #[serde(default)]
    pub migration: MigrationSpec,

    /// Wait for users' servers to stop before the hub goes down, through the hub's REST API. Omitted: no draining.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain: Option<DrainSpec>,

    /// How the hub is verified after the roll-out and after a roll back.
    #[serde(default)]
    pub verify: VerifySpec,

    /// A webhook told about the upgrade, besides Events.
    #[serde(default)]
    pub notifications: NotificationsSpec,

    /// How the new image reaches the hub Deployment.
    #[serde(default)]
    pub rollout: RolloutSpec,

    /// What happens when the upgrade fails after the hub was stopped.
    #[serde(default)]
    pub rollback: RollbackSpec,

    /// When the hub may go down. Omitted: as soon as the checks and the rehearsal are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,

    /// Automatic (default): the hub goes down once the checks and the rehearsal passed (and the window is open). Manual: the upgrade then waits in phase Scheduled, with nothing changed for users, until the HubUpgrade is annotated hubgrade.io/approved (`kubectl hubgrade approve NAME`).
    #[serde(default)]
    pub approval: Approval,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Approval {
    #[default]
    Automatic,
    Manual,
}

/// The maintenance window: when the hub may be stopped.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.notBefore) || !has(self.notAfter) || timestamp(self.notBefore) < timestamp(self.notAfter)"
).message("schedule.notBefore must be before schedule.notAfter"))]
pub struct ScheduleSpec {
    /// The hub is not stopped before this time (RFC 3339, e.g. 2026-12-01T02:00:00Z); the checks and the rehearsal run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(RFC3339_RULE).message("schedule.notBefore must be an RFC 3339 time such as 2026-12-01T02:00:00Z"))]
    pub not_before: Option<String>,
    /// The hub is not stopped after this time: an upgrade that has not stopped it by then ends Failed with nothing changed (reason WindowClosed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(RFC3339_RULE).message("schedule.notAfter must be an RFC 3339 time such as 2026-12-01T06:00:00Z"))]
    pub not_after: Option<String>,
}

const RFC3339_RULE: &str = "self.matches('^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\\\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2})$')";

/// The hub Deployment and its hub container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HubRef {
    /// Name of the hub Deployment in the HubUpgrade's namespace (z2jh: `hub`).
    #[schemars(length(min = 1, max = 253))]
    pub deployment: String,
    /// Name of the hub container. Omitted: `hub`, or the only container of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DatabaseType {
    /// Detected from the hub's pod template and z2jh configuration.
    #[default]
    Auto,
    #[serde(rename = "SQLite")]
    Sqlite,
    #[serde(rename = "PostgreSQL")]
    Postgresql,
    #[serde(rename = "MySQL")]
    Mysql,
}

/// The hub's database.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!(has(self.sqlitePath) || has(self.volumeClaim)) || self.type in ['Auto', 'SQLite']"
).message("database.sqlitePath and database.volumeClaim are for SQLite databases only"))]
#[x_kube(validation = Rule::new(
    "!has(self.urlSecret) || self.type != 'SQLite'"
).message("database.urlSecret is for PostgreSQL and MySQL; an SQLite database is found by sqlitePath"))]
#[x_kube(validation = Rule::new(
    "!has(self.urlSecret) || self.type != 'Auto'"
).message("database.urlSecret needs database.type PostgreSQL or MySQL: with Auto the URL would be detected from the hub and the Secret ignored"))]
pub struct DatabaseSpec {
    /// Auto (default), SQLite, PostgreSQL or MySQL.
    #[serde(default, rename = "type")]
    pub kind: DatabaseType,
    /// SQLite: path of the database file in the hub container. Omitted: detected (z2jh: /srv/jupyterhub/jupyterhub.sqlite).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 1024))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("database.sqlitePath must be an absolute path"))]
    #[x_kube(validation = Rule::new("!self.split('/').exists(part, part == '..' || part == '.')")
        .message("database.sqlitePath must not contain . or .. segments: name the file's own path, e.g. /srv/jupyterhub/jupyterhub.sqlite"))]
    #[x_kube(validation = Rule::new("!self.endsWith('/') && !self.matches('[\\x00-\\x1f]')")
        .message("database.sqlitePath must name a file (no trailing /, no control characters)"))]
    pub sqlite_path: Option<String>,
    /// SQLite: the PersistentVolumeClaim holding the file. Omitted: the claim mounted at the file's directory (z2jh: hub-db-dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub volume_claim: Option<String>,
    /// PostgreSQL or MySQL: a key of a Secret in this namespace holding the hub's SQLAlchemy database URL, password included. Omitted: read from the hub's z2jh configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret: Option<SecretKeyRef>,
}

/// A key of a Secret in the HubUpgrade's namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// How the database is backed up.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!has(self.volumeSnapshotClass) || self.method == 'VolumeSnapshot'"
).message("backup.volumeSnapshotClass applies only to backup.method VolumeSnapshot"))]
#[x_kube(validation = Rule::new(
    "!has(self.dumpClaim) || self.method == 'Dump'"
).message("backup.dumpClaim applies only to backup.method Dump"))]
pub struct BackupSpec {
    /// Auto (default), File, VolumeSnapshot, Clone or Dump.
    #[serde(default)]
    pub method: BackupMethod,
    /// How many of this hub's backups to keep; older ones are deleted after a successful upgrade.
    #[serde(default = "default_retain")]
    #[schemars(range(min = 1, max = 100))]
    pub retain: u32,
    /// VolumeSnapshot: the VolumeSnapshotClass. Omitted: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub volume_snapshot_class: Option<String>,
    /// Dump: the PersistentVolumeClaim in this namespace the dump file is written to. Omitted: the operator makes one, hubgrade-<uid>-dump, twice the database's size (at least 1Gi) in the default StorageClass, owned by this HubUpgrade (deleted with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub dump_claim: Option<String>,
    /// How long making and verifying the backup may take.
    #[serde(default = "default_backup_timeout")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: String,
}

impl Default for BackupSpec {
    fn default() -> Self {
        BackupSpec {
            method: BackupMethod::Auto,
            retain: default_retain(),
            volume_snapshot_class: None,
            dump_claim: None,
            timeout: default_backup_timeout(),
        }
    }
}

/// The database migration.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    /// How long `jupyterhub upgrade-db` may run (and its rehearsal).
    #[serde(default = "default_migration_timeout")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: String,
    /// Run the migration on a copy of the database before the hub is stopped, to prove it works and measure it without downtime.
    #[serde(default = "default_true")]
    pub rehearse: bool,
    /// RollBack (default): a failed migration restores the backup and the original image. FreshDatabase (SQLite only): keep the verified backup, move the failed database aside and let the new hub start on a new, empty database (users and tokens are lost; said in the status and a Warning Event), as JupyterHub's upgrade notes allow when upgrade-db cannot migrate an SQLite file.
    #[serde(default)]
    pub on_failure: MigrationFailure,
}

impl Default for MigrationSpec {
    fn default() -> Self {
        MigrationSpec {
            timeout: default_migration_timeout(),
            rehearse: true,
            on_failure: MigrationFailure::RollBack,
        }
    }
}

/// Waiting for users' servers before the hub goes down, through the hub's REST API.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DrainSpec {
    /// The key of a Secret in this namespace holding a JupyterHub API token with the scopes list:users and read:servers, or list:users and servers to stop them with onTimeout StopServers (servers includes read:servers). With z2jh: a service hub.services.hubgrade and its role in hub.loadRoles; z2jh puts the token in the hub Secret under the key hub.services.hubgrade.apiToken.
    pub token_secret: SecretKeyRef,
    /// The hub goes down once at most this many user servers are active.
    #[serde(default)]
    #[schemars(range(max = 100000))]
    pub max_active_servers: u32,
    /// How long to wait for the servers to stop.
    #[serde(default = "default_drain_timeout")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: String,
    /// What happens when more servers are still active after the timeout. Proceed (default): the hub goes down anyway; running servers keep running and serving through the proxy, they only cannot reach the hub meanwhile. Abort: the upgrade ends Failed with nothing changed. StopServers: the remaining servers are stopped through the hub's API (named in an Event), then the hub goes down.
    #[serde(default)]
    pub on_timeout: OnDrainTimeout,
}

/// How the upgraded (or rolled back) hub is verified.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerifySpec {
    /// Check through the hub's REST API that /hub/health answers and /hub/api reports the JupyterHub release the database was migrated for (default). The operator reaches the Ready hub pod's IP on the hub container's port named http (z2jh: 8081); a NetworkPolicy that keeps the operator out (z2jh's hub.networkPolicy) needs an ingress rule for it. false: a Ready Deployment at the target image is enough.
    #[serde(default = "default_true")]
    pub hub_api: bool,
}

impl Default for VerifySpec {
    fn default() -> Self {
        VerifySpec { hub_api: true }
    }
}

/// Where the upgrade tells people how it goes, besides Events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsSpec {
    /// A webhook that receives a JSON message when the window opens, before the hub goes down and when the upgrade ends. Delivery is retried with backoff and never delays or fails the upgrade.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The key of a Secret in this namespace holding the webhook's URL (http or https; it often carries a token, so it is never shown).
    pub url_secret: SecretKeyRef,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ImageManagementMode {
    /// External when Helm, Argo CD or Flux manages the hub Deployment (its labels and annotations say so), else Operator.
    #[default]
    Auto,
    /// hubgrade sets the target image on the hub Deployment. On a hub that Helm, Argo CD or Flux manages this needs rollout.acceptImageDrift.
    Operator,
    /// Helm, Argo CD or Flux sets it; hubgrade migrates the database, then waits for the Deployment to show the target image.
    External,
}

/// How the target image reaches the hub.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Auto (default), Operator or External.
    #[serde(default)]
    pub image_management: ImageManagementMode,
    /// With imageManagement Operator on a hub that Helm, Argo CD or Flux manages: hubgrade sets the image behind that tool's back, and the tool's next sync or `helm upgrade` puts the old image back onto the migrated database, where the old hub will not start. true says you accept that and will change the image in the tool yourself, before its next sync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub accept_image_drift: bool,
    /// How long the new hub may take to become Ready (External: also how long to wait for the image change).
    #[serde(default = "default_rollout_timeout")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: String,
    /// How long ScalingDown may take: copying the hub's configuration while it runs (past it the
    /// upgrade ends Failed, the hub still running), and the hub's pods stopping once it is scaled
    /// to zero (past it the upgrade rolls back).
    #[serde(default = "default_stop_timeout")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub stop_timeout: String,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        RolloutSpec {
            image_management: ImageManagementMode::Auto,
            accept_image_drift: false,
            timeout: default_rollout_timeout(),
            stop_timeout: default_stop_timeout(),
        }
    }
}

/// What happens when the upgrade fails after the hub was stopped.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackSpec {
    /// Automatic (default) or Manual.
    #[serde(default)]
    pub policy: RollbackPolicy,
    /// How long the whole roll back (database restore included) may take; then the upgrade is Failed with the hub stopped and the backup named.
    #[serde(default = "default_rollback_timeout")]
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = Rule::new(DURATION_RULE).message(DURATION_MESSAGE))]
    pub timeout: String,
}

impl Default for RollbackSpec {
    fn default() -> Self {
        RollbackSpec {
            policy: RollbackPolicy::Automatic,
            timeout: default_rollback_timeout(),
        }
    }
}

/// Largest unit first, each unit once, a fraction only on the last (what `parse_duration`
/// reads), and more than zero.
const DURATION_RULE: &str = "self != '' \
    && self.matches('^([0-9]+(\\\\.[0-9]+)?h)?([0-9]+(\\\\.[0-9]+)?m)?([0-9]+(\\\\.[0-9]+)?s)?([0-9]+(\\\\.[0-9]+)?ms)?$') \
    && !self.matches('\\\\.[0-9]+[a-z]+[0-9]') \
    && duration(self) > duration('0s')";
const DURATION_MESSAGE: &str =
    "must be a positive duration such as 30m, 90s or 1h30m (largest unit first, each unit once)";

fn default_retain() -> u32 {
    5
}
fn default_true() -> bool {
    true
}
fn default_backup_timeout() -> String {
    "30m".into()
}
fn default_migration_timeout() -> String {
    "30m".into()
}
fn default_drain_timeout() -> String {
    "15m".into()
}
fn default_rollout_timeout() -> String {
    "10m".into()
}
fn default_stop_timeout() -> String {
    "5m".into()
}
fn default_rollback_timeout() -> String {
    "30m".into()
}
