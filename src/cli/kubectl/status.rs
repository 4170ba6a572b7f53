//! `status`: a table of the namespace's HubUpgrades, or one upgrade in words (phase, images,
//! backup, downtime, the steps with their durations), or its status as JSON or YAML.

use clap::Args;
use jiff::Timestamp;
use kube::api::ListParams;
use serde_json::{Value, json};

use super::Session;
use super::exit::{EXIT_CODES, Exit, PluginError};
use super::output::{ObjectFormat, age, columns, seconds};
use super::wait::progress_of;
use crate::api::HubUpgrade;
use crate::machine::{Outcome, StepRecord};

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES)]
pub struct StatusArgs {
    /// The HubUpgrade; without it, every HubUpgrade of the namespace.
    pub name: Option<String>,
    /// Namespace (default: the kubeconfig context's, or in a pod its own).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// table (words for one upgrade), or its status as json or yaml.
    #[arg(short, long, value_enum, default_value_t = StatusFormat::Table)]
    pub output: StatusFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    Table,
    Json,
    Yaml,
}

pub async fn run(args: StatusArgs, program: &'static str) -> Result<Exit, PluginError> {
    let session = Session::connect(args.namespace, program).await?;
    let format = match args.output {
        StatusFormat::Table => None,
        StatusFormat::Json => Some(ObjectFormat::Json),
        StatusFormat::Yaml => Some(ObjectFormat::Yaml),
    };
    let now = Timestamp::now();
    let text = match (args.name, format) {
        (Some(name), None) => summary(&session.upgrade(&name).await?, now),
        (Some(name), Some(format)) => {
            // The raw object, so that status fields this binary does not know are shown too.
            let raw = session
                .raw_upgrades()
                .get_opt(&name)
                .await
                .map_err(|e| session.api_error(format!("reading HubUpgrade {name}"), e))?
                .ok_or_else(|| session.not_found(&name))?;
            format.render(&raw.data.get("status").cloned().unwrap_or(json!({})))?
        }
        (None, None) => {
            let upgrades = list(&session).await?;
            if upgrades.is_empty() {
                format!("No HubUpgrades in namespace {}.\n", session.namespace)
            } else {
                table(&upgrades, now)
            }
        }
        (None, Some(format)) => {
            let raw = session
                .raw_upgrades()
                .list(&ListParams::default())
                .await
                .map_err(|e| session.api_error("listing HubUpgrades".into(), e))?;
            let rows: Vec<Value> = raw
                .items
                .iter()
                .map(|u| {
                    json!({
                        "name": u.metadata.name,
                        "hub": u.data.pointer("/spec/hub/deployment"),
                        "targetImage": u.data.pointer("/spec/targetImage"),
                        "status": u.data.get("status").cloned().unwrap_or(json!({})),
                    })
                })
                .collect();
            format.render(&rows)?
        }
    };
    print!("{text}");
    Ok(Exit::Done)
}

async fn list(session: &Session) -> Result<Vec<HubUpgrade>, PluginError> {
    let mut upgrades = session
        .upgrades()
        .list(&ListParams::default())
        .await
        .map_err(|e| session.api_error("listing HubUpgrades".into(), e))?
        .items;
    upgrades.sort_by_key(|u| u.metadata.creation_timestamp.clone());
    Ok(upgrades)
}

/// NAME, HUB, PHASE, TARGET, AGE, MESSAGE: `kubectl get`'s layout.
pub fn table(upgrades: &[HubUpgrade], now: Timestamp) -> String {
    let rows = upgrades.iter().map(|upgrade| {
        let progress = progress_of(upgrade);
        vec![
            upgrade.metadata.name.clone().unwrap_or_default(),
            upgrade.spec.hub.deployment.clone(),
            progress.phase.to_string(),
            upgrade.spec.target_image.clone(),
            upgrade
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| age(t.0, now))
                .unwrap_or_default(),
            progress.message.clone(),
        ]
    });
    columns(&["NAME", "HUB", "PHASE", "TARGET", "AGE", "MESSAGE"], rows)
}

/// One upgrade in words.
pub fn summary(upgrade: &HubUpgrade, now: Timestamp) -> String {
    let progress = progress_of(upgrade);
    let status = upgrade.status.clone().unwrap_or_default();
    let mut fields: Vec<(&str, String)> = vec![
        ("Name", upgrade.metadata.name.clone().unwrap_or_default()),
        (
            "Namespace",
            upgrade.metadata.namespace.clone().unwrap_or_default(),
        ),
        ("Hub", format!("deployment/{}", upgrade.spec.hub.deployment)),
        ("Target", upgrade.spec.target_image.clone()),
        ("Phase", progress.phase.to_string()),
    ];
    if !progress.message.is_empty() {
        fields.push(("Message", progress.message.clone()));
    }
    if let Some(failure) = progress
        .failure
        .as_ref()
        .filter(|f| **f != progress.message)
    {
        fields.push(("Failure", failure.clone()));
    }
    if let Some(other) = &progress.waiting_for {
        fields.push(("Waiting for", other.clone()));
    }
    if let Some(from) = &progress.from {
        let replicas = match from.replicas {
            1 => "1 replica".to_string(),
            n => format!("{n} replicas"),
        };
        fields.push(("From", format!("{}, {replicas}", from.image)));
    }
    if let Some(to) = &progress.to {
        let revision = to
            .revision
            .as_ref()
            .map(|r| format!(", database revision {r}"))
            .unwrap_or_default();
        fields.push(("To", format!("{}{revision}", to.image)));
    }
    if let Some(backup) = &progress.backup {
        let size = backup
            .size_bytes
            .map(|s| format!(", {}", bytes(s)))
            .unwrap_or_default();
        let verified = if backup.verified { ", verified" } else { "" };
        fields.push((
            "Backup",
            format!("{} {}{size}{verified}", backup.method, backup.reference),
        ));
    }
    if let Some(downtime) = status.downtime_seconds {
        fields.push(("Downtime", seconds(downtime)));
    }
    if let Some(created) = &upgrade.metadata.creation_timestamp {
        fields.push(("Age", age(created.0, now)));
    }
    let width = fields.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    let mut text = String::new();
    for (key, value) in &fields {
        text.push_str(&format!("{:<width$} {value}\n", format!("{key}:")));
    }
    if !progress.steps.is_empty() {
        text.push_str("Steps:\n");
        text.push_str(&steps(&progress.steps, now));
    }
    text
}

/// The timeline: each phase entered, when (UTC), how long, how it ended.
fn steps(steps: &[StepRecord], now: Timestamp) -> String {
    let width = steps
        .iter()
        .map(|s| s.name.as_str().len())
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for step in steps {
        let started = step.started_at.strftime("%H:%M:%S");
        let took = match step.finished_at {
            Some(end) => seconds(step.started_at.duration_until(end).as_secs()),
            None => format!(
                "{} so far",
                seconds(step.started_at.duration_until(now).as_secs())
            ),
        };
        let outcome = match step.outcome {
            Some(Outcome::Succeeded) => "Succeeded",
            Some(Outcome::Failed) => "Failed",
            Some(Outcome::Skipped) => "Skipped",
            None if step.finished_at.is_none() => "running",
            None => "",
        };
        let line = format!(
            "  {:<width$}  {started}Z  {took:>12}  {outcome:<9}  {}",
            step.name.as_str(),
            step.message
        );
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn bytes(size: u64) -> String {
    match size {
        0..1024 => format!("{size} B"),
        1024..1_048_576 => format!("{:.1} KiB", size as f64 / 1024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", size as f64 / 1_048_576.0),
        _ => format!("{:.1} GiB", size as f64 / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(status: Value) -> HubUpgrade {
        serde_json::from_value(json!({
            "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
            "metadata": {"name": "hub-to-4-4-0", "namespace": "jhub",
                         "creationTimestamp": "2026-01-02T03:00:00Z"},
            "spec": {"hub": {"deployment": "hub"}, "targetImage": "quay.io/jupyterhub/k8s-hub:4.4.0"},
            "status": status,
        }))
        .expect("a HubUpgrade")
    }

    fn now() -> Timestamp {
        "2026-01-02T03:05:00Z".parse().expect("time")
    }

    #[test]
    fn the_summary_names_images_backup_downtime_and_steps() {
        let done = upgrade(json!({
            "phase": "Succeeded", "message": "the hub runs quay.io/jupyterhub/k8s-hub:4.4.0",
            "from": {"image": "quay.io/jupyterhub/k8s-hub:4.1.0", "replicas": 1},
            "to": {"image": "quay.io/jupyterhub/k8s-hub:4.4.0", "revision": "4621fec11365"},
            "backup": {"method": "File", "reference": "/srv/jupyterhub/hubgrade-backups/x-db.sqlite",
                       "sizeBytes": 20480, "verified": true},
            "downtimeSeconds": 14,
            "steps": [
                {"name": "Preflight", "startedAt": "2026-01-02T03:00:01Z",
                 "finishedAt": "2026-01-02T03:00:03Z", "outcome": "Succeeded"},
                {"name": "Migrating", "startedAt": "2026-01-02T03:00:03Z",
                 "finishedAt": "2026-01-02T03:01:08Z", "outcome": "Succeeded",
                 "message": "upgrade-db done"},
                {"name": "Succeeded", "startedAt": "2026-01-02T03:01:08Z"},
            ],
        }));
        let text = summary(&done, now());
        for expected in [
            "Phase:     Succeeded",
            "From:      quay.io/jupyterhub/k8s-hub:4.1.0, 1 replica",
            "To:        quay.io/jupyterhub/k8s-hub:4.4.0, database revision 4621fec11365",
            "Backup:    File /srv/jupyterhub/hubgrade-backups/x-db.sqlite, 20.0 KiB, verified",
            "Downtime:  14s",
            "  Preflight  03:00:01Z            2s  Succeeded",
            "  Migrating  03:00:03Z         1m05s  Succeeded  upgrade-db done",
            "  Succeeded  03:01:08Z  3m52s so far  running",
        ] {
            assert!(text.contains(expected), "no {expected:?} in:\n{text}");
        }
    }

    #[test]
    fn the_table_lines_up_like_kubectl_get() {
        let running = upgrade(json!({"phase": "Migrating", "message": "running upgrade-db"}));
        let text = table(&[running], now());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME           HUB   PHASE       TARGET"));
        assert!(
            lines[1].starts_with(
                "hub-to-4-4-0   hub   Migrating   quay.io/jupyterhub/k8s-hub:4.4.0   5m"
            )
        );
        assert!(lines[1].ends_with("running upgrade-db"));
    }
}
