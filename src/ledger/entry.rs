//! What the ledger keeps of one HubUpgrade: a projection of the resource (its metadata and
//! status), rebuilt whole each time, so writing it twice changes nothing and a write missed
//! during an outage is made up by the next one.

use jiff::Timestamp;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};

use crate::api::{DatabaseType, HubUpgrade};
use crate::cluster::MANAGER;
use crate::cluster::interpret::managed_by;
use crate::hub::revision::release_of_image;
use crate::machine::{BackupMethod, Outcome, Phase, Progress};

/// One upgrade as the ledger records it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeEntry {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub hub: String,
    pub created_by: String,
    pub created_at: String,
    pub database_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_image: Option<String>,
    pub to_image: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<String>,
    pub phase: String,
    pub reason: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<i64>,
    /// The downtime the ledger predicted when it first recorded the upgrade (read back from
    /// the ledger; never part of what the operator writes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted_downtime_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_basis: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// When the HubUpgrade was deleted; the ledger keeps the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupEntry>,
    /// Earlier backups of the hub that this upgrade's `backup.retain` deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned_backups: Vec<String>,
    /// The spec's `backup.retain`: the rule that deleted them.
    #[serde(default)]
    pub retain: u32,
}

/// One phase of an upgrade's timeline.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepEntry {
    pub name: String,
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Succeeded, Failed or Skipped; none while the step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// The database backup an upgrade made.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupEntry {
    pub upgrade_uid: String,
    pub namespace: String,
    pub hub: String,
    /// The upgrade's name, for people reading `hubgrade backups`.
    #[serde(default)]
    pub upgrade: String,
    pub kind: String,
    pub location: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    pub verified: bool,
    pub created_at: String,
    /// `retained` or `deleted`.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// The retention rule that deleted it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted_by: Option<String>,
}

/// A time as the ledger writes it: UTC, to the second, so that text order is time order.
pub fn ledger_time(time: Timestamp) -> String {
    time.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl UpgradeEntry {
    /// The record of `upgrade` as it stands; `deleted_at` once it is being deleted. None for an
    /// object the API server has not given a uid (never one the operator reconciles).
    pub fn of(upgrade: &HubUpgrade, deleted_at: Option<Timestamp>) -> Option<UpgradeEntry> {
        let uid = upgrade.metadata.uid.clone()?;
        let namespace = upgrade.namespace().unwrap_or_default();
        let progress = upgrade
            .status
            .as_ref()
            .map(|s| s.progress.clone())
            .unwrap_or_default();
        let hub = upgrade.spec.hub.deployment.clone();
        let created_at = upgrade
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| ledger_time(t.0))
            .unwrap_or_else(|| ledger_time(Timestamp::now()));
        let from_image = progress.from.as_ref().map(|f| f.image.clone());
        let to_image = upgrade.spec.target_image.clone();
        let release = |image: &str| release_of_image(image).map(|r| r.releases.to_string());
        let finished_at = progress
            .phase
            .is_terminal()
            .then(|| progress.steps.last())
            .flatten()
            .map(|s| ledger_time(s.finished_at.unwrap_or(s.started_at)));
        let backup = progress.backup.as_ref().map(|b| BackupEntry {
            upgrade_uid: uid.clone(),
            namespace: namespace.clone(),
            hub: hub.clone(),
            upgrade: upgrade.name_any(),
            kind: b.method.to_string(),
            location: b.reference.clone(),
            size_bytes: b.size_bytes.and_then(|s| i64::try_from(s).ok()),
            checksum: b.checksum.clone(),
            verified: b.verified,
            created_at: backup_time(&progress).unwrap_or_else(|| created_at.clone()),
            state: "retained".into(),
            deleted_at: None,
            deleted_by: None,
        });
        Some(UpgradeEntry {
            uid,
            name: upgrade.name_any(),
            created_by: created_by(upgrade),
            database_type: database_type(upgrade, &progress),
            from_release: from_image.as_deref().and_then(release),
            to_release: release(&to_image),
            from_image,
            to_image,
            to_revision: progress.to.as_ref().and_then(|t| t.revision.clone()),
            phase: progress.phase.as_str().to_string(),
            reason: progress.reason.clone(),
            message: progress.message.clone(),
            downtime_seconds: progress.downtime_seconds(),
            predicted_downtime_seconds: None,
            prediction_basis: None,
            finished_at,
            deleted_at: deleted_at.map(ledger_time),
            steps: progress
                .steps
                .iter()
                .map(|s| StepEntry {
                    name: s.name.as_str().to_string(),
                    started_at: ledger_time(s.started_at),
                    finished_at: s.finished_at.map(ledger_time),
                    outcome: s.outcome.map(|o| outcome_name(o).to_string()),
                    message: s.message.clone(),
                })
                .collect(),
            pruned_backups: progress
                .backup
                .as_ref()
                .map(|b| b.pruned.clone())
                .unwrap_or_default(),
            retain: upgrade.spec.backup.retain,
            backup,
            namespace,
            hub,
            created_at,
        })
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Succeeded => "Succeeded",
        Outcome::Failed => "Failed",
        Outcome::Skipped => "Skipped",
    }
}

/// When the backup was finished: the end of the BackingUp step.
fn backup_time(progress: &Progress) -> Option<String> {
    progress
        .steps
        .iter()
        .rfind(|s| s.name == Phase::BackingUp)
        .map(|s| ledger_time(s.finished_at.unwrap_or(s.started_at)))
}

/// The database as the spec names it, or as the backup method shows it was detected.
fn database_type(upgrade: &HubUpgrade, progress: &Progress) -> String {
    let method = progress.backup.as_ref().map(|b| b.method);
    match (upgrade.spec.database.kind, method) {
        (DatabaseType::Sqlite, _) => "SQLite",
        (DatabaseType::Postgresql, _) => "PostgreSQL",
        (DatabaseType::Mysql, _) => "MySQL",
        (DatabaseType::Auto, Some(BackupMethod::File | BackupMethod::VolumeSnapshot)) => "SQLite",
        (DatabaseType::Auto, _) => "Auto",
    }
    .to_string()
}

/// Who made the HubUpgrade: the GitOps tool or Helm from the marks they leave, else the field
/// manager that created it (kubectl, `kubectl hubgrade`, a controller).
pub fn created_by(upgrade: &HubUpgrade) -> String {
    let annotations = upgrade.annotations();
    if annotations.contains_key("helm.sh/hook") {
        let release = upgrade
            .labels()
            .get("app.kubernetes.io/instance")
            .or_else(|| upgrade.labels().get("release"));
        return match release {
            Some(release) => format!("Helm (hook of release {release})"),
            None => "Helm (hook)".into(),
        };
    }
    if let Some(tool) = managed_by(&upgrade.metadata) {
        return tool;
    }
    let first = upgrade
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref().is_some_and(|m| m != MANAGER))
        .filter(|m| m.subresource.as_deref().unwrap_or_default().is_empty())
        .min_by_key(|m| m.time.as_ref().map(|t| t.0));
    match first.and_then(|m| m.manager.as_deref()) {
        Some("kubectl-hubgrade") => "kubectl hubgrade".into(),
        Some(m) if m.starts_with("kubectl") => "kubectl".into(),
        Some("argocd-controller" | "argocd-application-controller") => "Argo CD".into(),
        Some("kustomize-controller" | "helm-controller") => "Flux".into(),
        Some("helm") => "Helm".into(),
        Some(other) => other.to_string(),
        None => "unknown".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};

    fn upgrade(manager: &str) -> HubUpgrade {
        let mut upgrade: HubUpgrade = serde_json::from_value(serde_json::json!({
            "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
            "metadata": {"name": "to-5", "namespace": "jhub", "uid": "u-1",
                         "creationTimestamp": "2026-11-26T10:00:00Z"},
            "spec": {"hub": {"deployment": "hub"},
                     "targetImage": "quay.io/jupyterhub/k8s-hub:4.1.0"},
            "status": {"phase": "Succeeded",
                       "from": {"image": "quay.io/jupyterhub/k8s-hub:3.3.8", "replicas": 1},
                       "to": {"image": "quay.io/jupyterhub/k8s-hub:4.1.0",
                              "revision": "4621fec11365"},
                       "backup": {"method": "File", "reference": "/srv/jupyterhub/b.sqlite",
                                  "sizeBytes": 4096, "checksum": "sha256:ab", "verified": true},
                       "hubScaledDownAt": "2026-11-26T10:01:00Z",
                       "hubStoppedAt": "2026-11-26T10:01:02Z",
                       "hubReadyAt": "2026-11-26T10:01:40Z",
                       "steps": [
                           {"name": "BackingUp", "startedAt": "2026-11-26T10:01:02Z",
                            "finishedAt": "2026-11-26T10:01:05.5Z", "outcome": "Succeeded"},
                           {"name": "Succeeded", "startedAt": "2026-11-26T10:01:41Z"}]}
        }))
        .expect("a HubUpgrade");
        upgrade.metadata.managed_fields = Some(vec![
            ManagedFieldsEntry {
                manager: Some(MANAGER.into()),
                subresource: Some("status".into()),
                time: Some(Time("2026-11-26T10:00:01Z".parse().unwrap())),
                ..Default::default()
            },
            ManagedFieldsEntry {
                manager: Some(manager.into()),
                time: Some(Time("2026-11-26T10:00:00Z".parse().unwrap())),
                ..Default::default()
            },
        ]);
        upgrade
    }

    #[test]
    fn an_upgrade_is_recorded_with_its_versions_downtime_steps_and_backup() {
        let entry = UpgradeEntry::of(&upgrade("kubectl-client-side-apply"), None).unwrap();
        assert_eq!(entry.created_by, "kubectl");
        assert_eq!(entry.database_type, "SQLite");
        assert_eq!(entry.from_release.as_deref(), Some("4.x"));
        assert_eq!(entry.to_release.as_deref(), Some("5.0 – 5.5"));
        assert_eq!(entry.to_revision.as_deref(), Some("4621fec11365"));
        assert_eq!(entry.downtime_seconds, Some(40));
        assert_eq!(entry.finished_at.as_deref(), Some("2026-11-26T10:01:41Z"));
        assert_eq!(entry.steps.len(), 2);
        assert_eq!(
            entry.steps[0].finished_at.as_deref(),
            Some("2026-11-26T10:01:05Z")
        );
        let backup = entry.backup.expect("backup");
        assert_eq!(backup.created_at, "2026-11-26T10:01:05Z");
        assert_eq!(backup.size_bytes, Some(4096));
        assert_eq!(backup.state, "retained");
    }

    #[test]
    fn the_creator_is_the_tool_or_the_field_manager() {
        for (manager, expected) in [
            ("kubectl-hubgrade", "kubectl hubgrade"),
            ("kubectl-create", "kubectl"),
            ("argocd-controller", "Argo CD"),
            ("kustomize-controller", "Flux"),
            ("my-pipeline", "my-pipeline"),
        ] {
            assert_eq!(created_by(&upgrade(manager)), expected, "{manager}");
        }
        let mut flux = upgrade("kubectl");
        flux.metadata.labels = Some(
            [
                (
                    "kustomize.toolkit.fluxcd.io/name".to_string(),
                    "hub".to_string(),
                ),
                (
                    "kustomize.toolkit.fluxcd.io/namespace".to_string(),
                    "flux-system".to_string(),
                ),
            ]
            .into(),
        );
        assert_eq!(created_by(&flux), "Flux (Kustomization flux-system/hub)");
        let mut hook = upgrade("helm");
        hook.metadata.annotations = Some([("helm.sh/hook".into(), "pre-upgrade".into())].into());
        hook.metadata.labels = Some([("app.kubernetes.io/instance".into(), "jhub".into())].into());
        assert_eq!(created_by(&hook), "Helm (hook of release jhub)");
    }
}
