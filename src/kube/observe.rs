//! Reading the cluster into the state machine's [`World`]. Reads only.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::lock;
use super::objects::{JobStep, owned_name};
use crate::api::{BackupMethod, HubUpgrade};
use crate::cli::agent::AgentReport;
use crate::hub::{HubLayout, LayoutError, detect_layout};
use crate::machine::{BackupReport, HubObservation, LockState, Phase, Preflight, StepState, World};

/// What one reconcile saw: the machine's world plus the objects the effects need.
pub struct Observation {
    pub world: World,
    pub deployment: Option<Deployment>,
    pub layout: Option<Result<HubLayout, LayoutError>>,
}

pub async fn observe(
    client: &Client,
    upgrade: &HubUpgrade,
    phase: Phase,
) -> Result<Observation, kube::Error> {
    let namespace = upgrade.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let deployment = deployments.get_opt(&upgrade.spec.hub.deployment).await?;
    let layout = deployment.as_ref().map(|d| detect_layout(d, &upgrade.spec));

    let mut world = World::default();
    if let Some(deployment) = &deployment {
        world.hub = Some(observe_hub(client, &namespace, deployment, layout.as_ref()).await?);
        world.lock = observe_lock(client, &namespace, upgrade, deployment).await?;
    }
    if matches!(phase, Phase::Pending | Phase::Preflight) {
        world.preflight = Some(
            preflight(
                client,
                &namespace,
                upgrade,
                deployment.as_ref(),
                layout.as_ref(),
            )
            .await?,
        );
    }
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let job = |step: JobStep, report| job_state(&jobs, &pods, upgrade, step, report);
    world.rehearsal = job(JobStep::Rehearsal, false).await?.map(|_| ());
    world.migration = job(JobStep::Migration, false).await?.map(|_| ());
    world.restore = job(JobStep::Restore, false).await?.map(|_| ());
    world.backup = match job(JobStep::Backup, true).await? {
        StepState::Succeeded(message) => backup_report(&message),
        StepState::NotStarted => StepState::NotStarted,
        StepState::Running => StepState::Running,
        StepState::Failed(why) => StepState::Failed(why),
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    world.config_backed_up = secrets
        .get_opt(&owned_name(upgrade, "config"))
        .await?
        .is_some();
    Ok(Observation {
        world,
        deployment,
        layout,
    })
}

async fn observe_hub(
    client: &Client,
    namespace: &str,
    deployment: &Deployment,
    layout: Option<&Result<HubLayout, LayoutError>>,
) -> Result<HubObservation, kube::Error> {
    let spec = deployment.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1);
    let selector = spec
        .selector
        .match_labels
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let count = if selector.is_empty() {
        0
    } else {
        pods.list(&ListParams::default().labels(&selector))
            .await?
            .items
            .len() as u32
    };
    let status = deployment.status.clone().unwrap_or_default();
    let current =
        status.observed_generation.unwrap_or(0) >= deployment.metadata.generation.unwrap_or(0);
    let all = |n: Option<i32>| n.unwrap_or(0) == replicas;
    let rolled_out = current
        && all(status.updated_replicas)
        && all(status.ready_replicas)
        && all(status.available_replicas)
        && all(status.replicas)
        && count == replicas.max(0) as u32;
    let image = match layout {
        Some(Ok(layout)) => layout.image.clone(),
        _ => String::new(),
    };
    Ok(HubObservation {
        image,
        replicas,
        pods: count,
        rolled_out,
    })
}

async fn observe_lock(
    client: &Client,
    namespace: &str,
    upgrade: &HubUpgrade,
    deployment: &Deployment,
) -> Result<LockState, kube::Error> {
    let Some((name, uid)) = lock::holder(deployment) else {
        return Ok(LockState::Free);
    };
    if Some(uid.as_str()) == upgrade.metadata.uid.as_deref() {
        return Ok(LockState::HeldBySelf);
    }
    // A lock whose holder no longer exists is stale (deleted without its finalizer running).
    let upgrades: Api<HubUpgrade> = Api::namespaced(client.clone(), namespace);
    match upgrades.get_opt(&name).await? {
        Some(holder) if holder.metadata.uid.as_deref() == Some(uid.as_str()) => {
            Ok(LockState::HeldBy(format!("{namespace}/{name}")))
        }
        _ => Ok(LockState::Free),
    }
}

async fn preflight(
    client: &Client,
    namespace: &str,
    upgrade: &HubUpgrade,
    deployment: Option<&Deployment>,
    layout: Option<&Result<HubLayout, LayoutError>>,
) -> Result<Preflight, kube::Error> {
    let mut problems = Vec::new();
    let hub = &upgrade.spec.hub.deployment;
    match (deployment, layout) {
        (None, _) | (_, None) => problems.push(format!(
            "the hub Deployment {namespace}/{hub} does not exist; set spec.hub.deployment to the hub's Deployment"
        )),
        (Some(_), Some(Err(error))) => problems.push(error.to_string()),
        (Some(_), Some(Ok(layout))) => {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
            match claims.get_opt(&layout.volume_claim).await? {
                None => problems.push(format!(
                    "the hub's database volume claim {namespace}/{} does not exist",
                    layout.volume_claim
                )),
                Some(claim) => {
                    let phase = claim.status.and_then(|s| s.phase).unwrap_or_default();
                    if phase != "Bound" {
                        problems.push(format!(
                            "the hub's database volume claim {namespace}/{} is {phase}, not Bound",
                            layout.volume_claim
                        ));
                    }
                }
            }
            if let Some(problem) = downgrade_problem(&layout.image, &upgrade.spec.target_image) {
                problems.push(problem);
            }
        }
    }
    if !matches!(
        upgrade.spec.backup.method,
        BackupMethod::Auto | BackupMethod::File
    ) {
        problems.push(format!(
            "spec.backup.method {:?} is not run by the operator yet (the `hubgrade db` commands and the library have it); use File or Auto for an SQLite hub",
            upgrade.spec.backup.method
        ));
    }
    if upgrade.spec.drain.is_some() {
        problems.push(
            "spec.drain is not supported by this version of hubgrade yet; remove it and drain the hub by hand".into(),
        );
    }
    Ok(Preflight { problems })
}

/// Refuses a target whose tag is an older version of the same image: the database schema
/// cannot go back.
fn downgrade_problem(current: &str, target: &str) -> Option<String> {
    let split = |image: &str| -> Option<(String, Vec<u64>)> {
        let image = image.split('@').next()?;
        let (repository, tag) = image.rsplit_once(':').filter(|(_, t)| !t.contains('/'))?;
        let version: Option<Vec<u64>> = tag
            .trim_start_matches('v')
            .split('.')
            .map(|p| p.parse().ok())
            .collect();
        Some((repository.to_string(), version?))
    };
    let (current_repo, current_version) = split(current)?;
    let (target_repo, target_version) = split(target)?;
    (current_repo == target_repo && target_version < current_version).then(|| {
        format!(
            "targetImage {target} is older than the hub's {current}; hubgrade does not downgrade, because the database schema cannot go back"
        )
    })
}

/// The state of one of this upgrade's Jobs; with `report`, `Succeeded` carries the pod's
/// termination message (the agent's JSON report).
async fn job_state(
    jobs: &Api<Job>,
    pods: &Api<Pod>,
    upgrade: &HubUpgrade,
    step: JobStep,
    report: bool,
) -> Result<StepState<String>, kube::Error> {
    let name = &owned_name(upgrade, step.as_str());
    let Some(job) = jobs.get_opt(name).await? else {
        return Ok(StepState::NotStarted);
    };
    let conditions = job.status.and_then(|s| s.conditions).unwrap_or_default();
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == kind && c.status == "True")
    };
    let complete = holds("Complete").is_some();
    let failed = holds("Failed").map(|c| {
        c.message
            .clone()
            .unwrap_or_else(|| c.reason.clone().unwrap_or_default())
    });
    if !complete && failed.is_none() {
        return Ok(StepState::Running);
    }
    // Only a failure, or a finished step whose report is wanted, needs its pod's message.
    if complete && !report {
        return Ok(StepState::Succeeded(String::new()));
    }
    let job_pods = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await?;
    let terminated = job_pods.items.iter().rev().find_map(|pod| {
        pod.status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find_map(|c| c.state.as_ref()?.terminated.clone())
    });
    if complete {
        return Ok(StepState::Succeeded(
            terminated.and_then(|t| t.message).unwrap_or_default(),
        ));
    }
    let why = match terminated {
        Some(t) => {
            let detail = t
                .message
                .as_deref()
                .map(|m| {
                    AgentReport::parse(m)
                        .and_then(|r| r.error)
                        .unwrap_or_else(|| m.trim().to_string())
                })
                .or(t.reason.clone())
                .unwrap_or_default();
            format!("Job {name} failed with exit code {}: {detail}", t.exit_code)
        }
        None => format!("Job {name} failed: {}", failed.unwrap_or_default()),
    };
    Ok(StepState::Failed(why))
}

fn backup_report(message: &str) -> StepState<BackupReport> {
    match AgentReport::parse(message).and_then(|r| r.backup) {
        Some(backup) => StepState::Succeeded(BackupReport {
            method: backup.method,
            reference: backup.reference,
            size_bytes: Some(backup.size_bytes),
            checksum: backup.checksum,
            verified: backup.verified,
        }),
        None => StepState::Failed("the backup Job finished without reporting its backup".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::downgrade_problem;

    #[test]
    fn an_older_tag_of_the_same_image_is_a_downgrade() {
        let hub = "quay.io/jupyterhub/k8s-hub";
        assert!(downgrade_problem(&format!("{hub}:4.2.0"), &format!("{hub}:4.1.0")).is_some());
        assert!(downgrade_problem(&format!("{hub}:4.1.0"), &format!("{hub}:4.2.0")).is_none());
        assert!(downgrade_problem(&format!("{hub}:4.2.0"), "example.org/hub:1.0").is_none());
        assert!(downgrade_problem(&format!("{hub}:latest"), &format!("{hub}:1.0.0")).is_none());
    }
}
