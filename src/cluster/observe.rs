//! Reading the cluster into a [`Snapshot`] (reads only); [`super::interpret`] turns it into
//! the state machine's world.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::interpret::Snapshot;
use super::lock;
use super::objects::{JobStep, owned_name};
use crate::api::{BackupMethod, HubUpgrade};
use crate::hub::revision::check_image_upgrade;
use crate::hub::{HubLayout, LayoutError, detect_layout};
use crate::machine::{LockState, Phase, Preflight};

/// What one reconcile saw: the snapshot, and the Preflight checks while in Preflight.
pub struct Observation {
    pub snapshot: Snapshot,
    pub preflight: Option<Preflight>,
}

pub async fn observe(
    client: &Client,
    upgrade: &HubUpgrade,
    phase: Phase,
) -> Result<Observation, kube::Error> {
    let namespace = upgrade.namespace().unwrap_or_default();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let deployment = deployments.get_opt(&upgrade.spec.hub.deployment).await?;
    let layout = deployment.as_ref().map(|d| detect_layout(d, &upgrade.spec));
    let mut snapshot = Snapshot {
        deleting: upgrade.metadata.deletion_timestamp.is_some(),
        ..Snapshot::default()
    };
    if let Some(deployment) = &deployment {
        snapshot.hub_pods = hub_pods(&pods, deployment).await?;
        snapshot.lock = observe_lock(client, &namespace, upgrade, deployment).await?;
    }
    if matches!(phase, Phase::Pending | Phase::Preflight | Phase::Rehearsal)
        && let Some(Ok(layout)) = &layout
    {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &namespace);
        snapshot.claim = claims.get_opt(&layout.volume_claim).await?;
    }
    let preflight = matches!(phase, Phase::Pending | Phase::Preflight).then(|| {
        preflight(
            &namespace,
            upgrade,
            deployment.as_ref(),
            layout.as_ref(),
            snapshot.claim.as_ref(),
        )
    });
    let jobs: Api<Job> = Api::namespaced(client.clone(), &namespace);
    let mut jobs_found = BTreeMap::new();
    for step in JobStep::ALL {
        let name = owned_name(upgrade, step.as_str());
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
        let events: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let warnings = ListParams::default().fields("type=Warning,involvedObject.kind=Pod");
        snapshot.pod_events = events.list(&warnings).await?.items;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    snapshot.config_backed_up = secrets
        .get_opt(&owned_name(upgrade, "config"))
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

/// The read-only checks, on what was read (pure).
fn preflight(
    namespace: &str,
    upgrade: &HubUpgrade,
    deployment: Option<&Deployment>,
    layout: Option<&Result<HubLayout, LayoutError>>,
    claim: Option<&PersistentVolumeClaim>,
) -> Preflight {
    let mut problems = Vec::new();
    let hub = &upgrade.spec.hub.deployment;
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
            if let Err(problem) = check_image_upgrade(&layout.image, &upgrade.spec.target_image) {
                problems.push(problem.to_string());
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
    Preflight { problems }
}
