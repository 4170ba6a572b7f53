//! Reading the cluster into a [`Snapshot`] (reads only); [`super::interpret`] turns it into
//! the state machine's world.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams};

use super::interpret::Snapshot;
use super::lock;
use super::objects::{JobStep, owned_name};
use super::target::Target;
use crate::api::{BackupMethod, HubUpgrade};
use crate::hub::{HubLayout, LayoutError};
use crate::machine::{LockState, Phase, Preflight, World};

/// What one reconcile saw: the snapshot, and the Preflight checks while in Preflight.
pub struct Observation {
    pub snapshot: Snapshot,
    pub preflight: Option<Preflight>,
}

impl Observation {
    /// The machine's view: the snapshot interpreted, with the Preflight checks.
    pub fn world(&self, now: Timestamp) -> World {
        World {
            preflight: self.preflight.clone(),
            ..self.snapshot.world(now)
        }
    }
}

pub async fn observe(
    client: &Client,
    target: &Target,
    phase: Phase,
) -> Result<Observation, kube::Error> {
    let namespace = target.owner.namespace.as_str();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments.get_opt(&target.hub).await?;
    let layout = deployment.as_ref().map(|d| target.layout(d));
    let mut snapshot = Snapshot {
        deleting: target.owner.deleting,
        ..Snapshot::default()
    };
    if let Some(deployment) = &deployment {
        snapshot.hub_pods = hub_pods(&pods, deployment).await?;
        snapshot.lock = observe_lock(client, target, deployment).await?;
    }
    if matches!(phase, Phase::Pending | Phase::Preflight | Phase::Rehearsal)
        && let Some(Ok(layout)) = &layout
    {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        snapshot.claim = claims.get_opt(&layout.volume_claim).await?;
    }
    let preflight = matches!(phase, Phase::Pending | Phase::Preflight).then(|| {
        preflight(
            target,
            deployment.as_ref(),
            layout.as_ref(),
            snapshot.claim.as_ref(),
        )
    });
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let mut jobs_found = BTreeMap::new();
    for step in JobStep::ALL {
        let name = owned_name(&target.owner, step.as_str());
        let Some(job) = jobs.get_opt(&name).await? else {
            continue;
        };
        let finished_ok = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            });
        // A finished Job's pods are only read for a report (backup, migration) or a failure.
        let job_pods = if finished_ok && matches!(step, JobStep::Rehearsal | JobStep::Restore) {
            Vec::new()
        } else {
            pods.list(&ListParams::default().labels(&format!("job-name={name}")))
                .await?
                .items
        };
        jobs_found.insert(step, (job, job_pods));
    }
    snapshot.jobs = jobs_found;
    // Volume trouble shows only in Events: read them for pods that are still being created.
    let creating = snapshot
        .hub_pods
        .iter()
        .chain(snapshot.jobs.values().flat_map(|(_, p)| p.iter()))
        .any(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending"));
    if creating {
        let events: Api<Event> = Api::namespaced(client.clone(), namespace);
        let warnings = ListParams::default().fields("type=Warning,involvedObject.kind=Pod");
        snapshot.pod_events = events.list(&warnings).await?.items;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    snapshot.config_backed_up = secrets
        .get_opt(&owned_name(&target.owner, "config"))
        .await?
        .is_some();
    snapshot.deployment = deployment;
    snapshot.layout = layout;
    Ok(Observation {
        snapshot,
        preflight,
    })
}

/// The pods the hub Deployment's selector selects.
async fn hub_pods(pods: &Api<Pod>, deployment: &Deployment) -> Result<Vec<Pod>, kube::Error> {
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

async fn observe_lock(
    client: &Client,
    target: &Target,
    deployment: &Deployment,
) -> Result<LockState, kube::Error> {
    let Some((name, uid)) = lock::holder(deployment) else {
        return Ok(LockState::Free);
    };
    if uid == target.owner.uid {
        return Ok(LockState::HeldBySelf);
    }
    let namespace = target.owner.namespace.as_str();
    // A lock whose holder no longer exists is stale (deleted without its finalizer running).
    let upgrades: Api<HubUpgrade> = Api::namespaced(client.clone(), namespace);
    match upgrades.get_opt(&name).await? {
        Some(holder) if holder.metadata.uid.as_deref() == Some(uid.as_str()) => {
            Ok(LockState::HeldBy(format!("{namespace}/{name}")))
        }
        _ => Ok(LockState::Free),
    }
}

/// The read-only checks, on what was read (pure).
fn preflight(
    target: &Target,
    deployment: Option<&Deployment>,
    layout: Option<&Result<HubLayout, LayoutError>>,
    claim: Option<&PersistentVolumeClaim>,
) -> Preflight {
    let mut problems = Vec::new();
    let (namespace, hub) = (&target.owner.namespace, &target.hub);
    match (deployment, layout) {
        (None, _) | (_, None) => problems.push(format!(
            "the hub Deployment {namespace}/{hub} does not exist; set spec.hub.deployment to the hub's Deployment"
        )),
        (Some(_), Some(Err(error))) => problems.push(error.to_string()),
        (Some(_), Some(Ok(layout))) => {
            match claim {
                None => problems.push(format!(
                    "the hub's database volume claim {namespace}/{} does not exist",
                    layout.volume_claim
                )),
                Some(claim) => {
                    let phase = claim
                        .status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default();
                    if phase != "Bound" {
                        problems.push(format!(
                            "the hub's database volume claim {namespace}/{} is {phase}, not Bound",
                            layout.volume_claim
                        ));
                    }
                }
            }
            if let Some(problem) = downgrade_problem(&layout.image, &target.plan.target_image) {
                problems.push(problem);
            }
        }
    }
    if !matches!(
        target.backup_method,
        BackupMethod::Auto | BackupMethod::File
    ) {
        problems.push(format!(
            "spec.backup.method {:?} is not run by the operator yet (the `hubgrade db` commands and the library have it); use File or Auto for an SQLite hub",
            target.backup_method
        ));
    }
    // The plan drains exactly when the spec asks to.
    if target.plan.drain.is_some() {
        problems.push(
            "spec.drain is not supported by this version of hubgrade yet; remove it and drain the hub by hand".into(),
        );
    }
    Preflight { problems }
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
