//! Turning what was read from the cluster ([`Snapshot`]) into the state machine's [`World`].
//! Pure: no client, the time passed in, so every judgement here is unit-tested.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStatus, Event, PersistentVolumeClaim, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};

use super::MANAGER;
use super::owned::JobStep;
use super::snapshot::{restored_from, snapshot_state};
use crate::agent::AgentReport;
use crate::hub::{HubLayout, LayoutError};
use crate::machine::{HubApiAnswers, HubObservation, LockState, StepState, World};

/// A pod that has not started this long after it was created is stuck, when the reason is one
/// that does not clear by itself (an image that cannot be pulled, a missing Secret, no node).
pub const STUCK_AFTER: SignedDuration = SignedDuration::from_secs(30);
/// How long a pod may wait for a claim to be provisioned and bound before it is judged
/// unable to run: provisioners on clouds take tens of seconds, and the scheduler tries an
/// unschedulable pod again only after a back-off.
const PROVISIONING_GRACE: SignedDuration = SignedDuration::from_secs(300);
/// What the scheduler says of a pod whose Immediate-binding claim is not bound yet.
const UNBOUND_CLAIMS: &str = "unbound immediate PersistentVolumeClaims";

/// Everything one reconcile read.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub deployment: Option<Deployment>,
    pub layout: Option<Result<HubLayout, LayoutError>>,
    pub lock: LockState,
    /// Pods selected by the hub Deployment's selector.
    pub hub_pods: Vec<Pod>,
    /// The claim holding the database (read while the rehearsal may still run).
    pub claim: Option<PersistentVolumeClaim>,
    /// This upgrade's Jobs and their pods.
    pub jobs: BTreeMap<JobStep, (Job, Vec<Pod>)>,
    /// Warning Events about pods that are stuck while being created (attach, mount).
    pub pod_events: Vec<Event>,
    /// Warning Events about this upgrade's Jobs that have no pod (FailedCreate: refused by
    /// admission, a quota, a missing ServiceAccount).
    pub job_events: Vec<Event>,
    /// The name of this upgrade's VolumeSnapshot when the backup is one of the hub's claim
    /// (`backup.method: VolumeSnapshot`): the backup's state is the snapshot's, a restore's is
    /// the claim's.
    pub snapshot_backup: Option<String>,
    /// This upgrade's VolumeSnapshot, as read while backing up.
    pub volume_snapshot: Option<kube::api::DynamicObject>,
    pub deleting: bool,
    /// The abort annotation's value (see [`crate::api::ABORT_ANNOTATION`]).
    pub abort: Option<String>,
    /// The approval annotation's value (see [`crate::api::APPROVED_ANNOTATION`]).
    pub approved: Option<String>,
    /// Where the Ready hub pod serves its REST API (see [`super::hub_api::api_root`]).
    pub hub_api_root: Option<url::Url>,
    /// The active users' servers the hub's API reported (read while Draining), or why it did
    /// not.
    pub active_servers: Option<Result<Vec<String>, String>>,
    /// What the hub's API answered about its health and version (read once the hub is back).
    pub hub_api: Option<HubApiAnswers>,
}

impl Snapshot {
    /// The node the hub's running pod is on.
    pub fn hub_node(&self) -> Option<&str> {
        self.hub_pods
            .iter()
            .filter(|p| !finished(p) && p.metadata.deletion_timestamp.is_none())
            .find_map(|p| p.spec.as_ref()?.node_name.as_deref())
    }

    /// The machine's view of this snapshot.
    pub fn world(&self, now: Timestamp) -> World {
        let mut world = World {
            lock: self.lock.clone(),
            deleting: self.deleting,
            abort: self.abort.clone(),
            approved: self.approved.clone(),
            rehearsal_blocked: self.rehearsal_blocked(),
            active_servers: self.active_servers.clone().and_then(Result::ok),
            hub_api_problem: self.active_servers.clone().and_then(Result::err),
            hub_api: self.hub_api.clone(),
            ..World::default()
        };
        if let Some(deployment) = &self.deployment {
            world.hub = Some(self.hub(deployment, now));
        }
        let job = |step| self.job_state(step, now);
        world.rehearsal = job(JobStep::Rehearsal).map(drop);
        let fresh = job(JobStep::FreshDatabase);
        if let StepState::Succeeded(Some(report)) = &fresh {
            world.moved_aside = report.message.clone();
        }
        world.fresh_database = fresh.map(drop);
        let restore = job(JobStep::Restore);
        if let StepState::Succeeded(Some(report)) = &restore {
            world.restored = report.message.clone();
        }
        world.restore = restore.map(drop);
        let migration = job(JobStep::Migration);
        if let StepState::Succeeded(Some(report)) = &migration {
            world.migrated_revision = report.revision.clone();
        }
        world.migration = migration.map(drop);
        if let Some(name) = &self.snapshot_backup {
            world.backup = match self.volume_snapshot.as_ref().map(snapshot_state) {
                None => StepState::NotStarted,
                Some(Ok(None)) => StepState::Running,
                Some(Ok(Some(record))) => StepState::Succeeded(record),
                Some(Err(message)) => {
                    StepState::Failed(format!("the VolumeSnapshot failed: {message}"))
                }
            };
            // Restored: the hub's claim was made again from the snapshot.
            world.restore = match self.claim.as_ref().and_then(restored_from) {
                Some(source) if source == name => StepState::Succeeded(()),
                _ => StepState::NotStarted,
            };
            return world;
        }
        world.backup = match job(JobStep::Backup) {
            StepState::Succeeded(report) => match report.and_then(|r| r.backup) {
                Some(backup) => StepState::Succeeded(backup),
                None => {
                    StepState::Failed("the backup Job finished without reporting its backup".into())
                }
            },
            StepState::NotStarted => StepState::NotStarted,
            StepState::Running => StepState::Running,
            StepState::Failed(why) => StepState::Failed(why),
        };
        world
    }

    fn hub(&self, deployment: &Deployment, now: Timestamp) -> HubObservation {
        let spec = deployment.spec.clone().unwrap_or_default();
        let replicas = spec.replicas.unwrap_or(1);
        // Evicted and completed pods are history, not hub pods.
        let live: Vec<&Pod> = self.hub_pods.iter().filter(|p| !finished(p)).collect();
        let count = live.len() as u32;
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
        let image = match &self.layout {
            Some(Ok(layout)) => layout.image.clone(),
            _ => String::new(),
        };
        HubObservation {
            image,
            replicas,
            pods: count,
            rolled_out,
            stuck: live
                .iter()
                .find_map(|pod| stuck_pod(pod, &self.pod_events, now)),
            scaled_by: replicas_manager(deployment),
            managed_by: managed_by(&deployment.metadata),
        }
    }

    /// Why the rehearsal cannot run while the hub does: a server database, or a claim the
    /// running hub holds alone.
    fn rehearsal_blocked(&self) -> Option<String> {
        if let Some(Ok(layout)) = &self.layout
            && let Some(server) = layout.server()
        {
            return Some(format!(
                "the hub's {} database is copied only once the hub is stopped (a copy on the \
                 server needs the hub disconnected); that backup is what a roll back restores",
                server.kind
            ));
        }
        let claim = self.claim.as_ref()?;
        let modes = claim
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default();
        let name = claim.metadata.name.clone().unwrap_or_default();
        let in_use = self.hub_pods.iter().any(|p| !finished(p));
        if in_use && modes.iter().any(|m| m == "ReadWriteOncePod") {
            return Some(format!(
                "the hub's claim {name} is ReadWriteOncePod and in use by the running hub, so no \
                 other pod can mount it before the hub is stopped"
            ));
        }
        None
    }

    /// The state of one of this upgrade's Jobs; `Succeeded` carries the agent's report when
    /// its last container left one.
    fn job_state(&self, step: JobStep, now: Timestamp) -> StepState<Option<AgentReport>> {
        let Some((job, pods)) = self.jobs.get(&step) else {
            return StepState::NotStarted;
        };
        let name = job.metadata.name.clone().unwrap_or_default();
        let conditions = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let holds = |kind: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == kind && c.status == "True")
        };
        // A pod that ran to its end is the step's success: the Job controller marks the Job
        // Complete a second later, and in the downtime the hub waits for every second.
        let pod_succeeded = pods.iter().any(ran_to_end);
        if holds("Complete").is_some() || pod_succeeded {
            // The report is the last word: the main container's (init containers report too).
            let report = pods.iter().rev().find_map(|pod| {
                pod.status
                    .as_ref()?
                    .container_statuses
                    .iter()
                    .flatten()
                    .find_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
                    .and_then(|m| AgentReport::parse(&m))
            });
            return StepState::Succeeded(report);
        }
        if let Some(failed) = holds("Failed") {
            let terminated = pods.iter().rev().find_map(|pod| {
                // The container that failed: an init container stops the pod where it fails.
                statuses(pod).find_map(|c| {
                    let t = c.state.as_ref()?.terminated.clone()?;
                    (t.exit_code != 0).then_some((c.name.clone(), t))
                })
            });
            let why = match terminated {
                Some((container, t)) => {
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
                    format!(
                        "Job {name} failed with exit code {} in container {container}: {detail}",
                        t.exit_code
                    )
                }
                None => format!(
                    "Job {name} failed: {}",
                    failed
                        .message
                        .clone()
                        .or(failed.reason.clone())
                        .unwrap_or_default()
                ),
            };
            return StepState::Failed(why);
        }
        if pods.is_empty()
            && let Some(why) = podless_job(job, &self.job_events, now)
        {
            return StepState::Failed(format!("Job {name} cannot run: {why}"));
        }
        match pods
            .iter()
            .find_map(|pod| stuck_pod(pod, &self.pod_events, now))
        {
            Some(why) => StepState::Failed(format!("Job {name} cannot run: {why}")),
            None => StepState::Running,
        }
    }
}

/// The pod's container statuses: init containers first (in the order they run), then the
/// others.
fn statuses(pod: &Pod) -> impl Iterator<Item = &ContainerStatus> {
    let status = pod.status.as_ref();
    status
        .and_then(|s| s.init_container_statuses.as_ref())
        .into_iter()
        .flatten()
        .chain(
            status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten(),
        )
}

/// Whether the pod has ended (all its containers stopped).
pub(super) fn finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether the pod ran to its end: Succeeded, or every one of its containers (after its init
/// containers) exited 0. The kubelet reports the containers' exits at once, but the phase
/// Succeeded only once it has stopped the pod's sandbox, about a second later, and in the
/// downtime the hub waits for every second. A container that exited 0 is not run again, so
/// the pod can only end Succeeded.
pub fn ran_to_end(pod: &Pod) -> bool {
    let Some(status) = pod.status.as_ref() else {
        return false;
    };
    if status.phase.as_deref() == Some("Succeeded") {
        return true;
    }
    let containers = status.container_statuses.as_deref().unwrap_or_default();
    !containers.is_empty()
        && containers.iter().all(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        })
}

/// Waiting reasons that do not clear without someone changing something.
const STUCK_REASONS: [&str; 7] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Why a Job without a pod cannot make one, once it has tried for [`STUCK_AFTER`]: its latest
/// `FailedCreate` Warning (a pod refused by Pod Security admission, a ResourceQuota, a
/// LimitRange, a missing ServiceAccount). The Job controller retries, but none of these mends
/// itself while the hub is down.
pub fn podless_job(job: &Job, events: &[Event], now: Timestamp) -> Option<String> {
    let created: Timestamp = job.metadata.creation_timestamp.as_ref()?.0;
    if created.duration_until(now) < STUCK_AFTER {
        return None;
    }
    let refused = events.iter().rev().find(|e| {
        e.involved_object.uid.is_some()
            && e.involved_object.uid == job.metadata.uid
            && e.reason.as_deref() == Some("FailedCreate")
    })?;
    Some(format!(
        "its pod cannot be created: {}",
        refused.message.clone().unwrap_or_default()
    ))
}

/// Why `pod` cannot start, once it has tried for [`STUCK_AFTER`]: an image that cannot be
/// pulled, a configuration that cannot be made, no node to run on, a volume that cannot be
/// attached or mounted (from `events`).
pub fn stuck_pod(pod: &Pod, events: &[Event], now: Timestamp) -> Option<String> {
    if pod.metadata.deletion_timestamp.is_some() || finished(pod) {
        return None;
    }
    let created: Timestamp = pod.metadata.creation_timestamp.as_ref()?.0;
    if created.duration_until(now) < STUCK_AFTER {
        return None;
    }
    let name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.as_ref()?;
    if let Some(unschedulable) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        // A claim still being provisioned (hubgrade's dump claim, say) is usually bound within
        // seconds, but the scheduler may take a while to try the pod again and clear this
        // condition: only a claim unbound for long is a pod that cannot run.
        let unbound = unschedulable
            .message
            .as_deref()
            .is_some_and(|m| m.contains(UNBOUND_CLAIMS));
        if unbound && created.duration_until(now) < PROVISIONING_GRACE {
            return None;
        }
        return Some(format!(
            "pod {name} cannot be scheduled: {}",
            unschedulable.message.clone().unwrap_or_default()
        ));
    }
    for container in statuses(pod) {
        let Some(waiting) = container.state.as_ref().and_then(|s| s.waiting.as_ref()) else {
            continue;
        };
        let reason = waiting.reason.clone().unwrap_or_default();
        if STUCK_REASONS.contains(&reason.as_str()) {
            return Some(format!(
                "pod {name}, container {}: {reason}: {}",
                container.name,
                waiting.message.clone().unwrap_or_default()
            ));
        }
    }
    let creating = status.phase.as_deref() == Some("Pending");
    let volume_trouble = events.iter().rev().find(|e| {
        e.involved_object.uid.is_some()
            && e.involved_object.uid == pod.metadata.uid
            && matches!(
                e.reason.as_deref(),
                Some("FailedAttachVolume" | "FailedMount")
            )
    });
    match volume_trouble {
        Some(event) if creating => Some(format!(
            "pod {name}: {}: {}",
            event.reason.clone().unwrap_or_default(),
            event.message.clone().unwrap_or_default()
        )),
        _ => None,
    }
}

/// The field manager that last set `spec.replicas` of the Deployment, unless it was hubgrade
/// itself or the API server's defaulting (no manager).
pub(super) fn replicas_manager(deployment: &Deployment) -> Option<String> {
    let fields = deployment.metadata.managed_fields.as_ref()?;
    fields
        .iter()
        .filter(|f| sets_replicas(f))
        .max_by_key(|f| f.time.as_ref().map(|t| t.0))
        .and_then(|f| f.manager.clone())
        .filter(|m| m != MANAGER)
}

/// Whether the field manager's entry holds `spec.replicas`.
pub(super) fn sets_replicas(entry: &ManagedFieldsEntry) -> bool {
    entry
        .fields_v1
        .as_ref()
        .and_then(|v| v.0.get("f:spec"))
        .and_then(|spec| spec.get("f:replicas"))
        .is_some()
}

/// The tool that manages an object (the hub Deployment, a HubUpgrade), from the marks each leaves on what it applies:
/// Flux's `helm.toolkit.fluxcd.io/*` and `kustomize.toolkit.fluxcd.io/*` labels, Argo CD's
/// `argocd.argoproj.io/tracking-id` annotation (or its `argocd.argoproj.io/instance` label),
/// Helm's `meta.helm.sh/release-name` annotation (a release `helm install` made) and the
/// `app.kubernetes.io/managed-by: Helm` or `heritage: Helm` label of charts (z2jh 4 sets both,
/// z2jh 3 only `heritage`; a chart rendered by Argo CD or `helm template` keeps them). The most
/// specific comes first: Flux and Argo CD render Helm charts too.
pub fn managed_by(metadata: &ObjectMeta) -> Option<String> {
    let labels = metadata.labels.clone().unwrap_or_default();
    let annotations = metadata.annotations.clone().unwrap_or_default();
    let label = |key: &str| labels.get(key).filter(|v| !v.is_empty());
    let annotation = |key: &str| annotations.get(key).filter(|v| !v.is_empty());
    for (kind, prefix) in [
        ("HelmRelease", "helm.toolkit.fluxcd.io"),
        ("Kustomization", "kustomize.toolkit.fluxcd.io"),
    ] {
        if let Some(name) = label(&format!("{prefix}/name")) {
            let namespace = label(&format!("{prefix}/namespace"))
                .map(|n| format!("{n}/"))
                .unwrap_or_default();
            return Some(format!("Flux ({kind} {namespace}{name})"));
        }
    }
    if let Some(tracking) = annotation("argocd.argoproj.io/tracking-id") {
        let app = tracking.split(':').next().unwrap_or(tracking);
        return Some(format!("Argo CD (application {app})"));
    }
    if let Some(app) = label("argocd.argoproj.io/instance") {
        return Some(format!("Argo CD (application {app})"));
    }
    if let Some(release) = annotation("meta.helm.sh/release-name") {
        return Some(format!("Helm (release {release})"));
    }
    let helm = |key: &str| label(key).is_some_and(|v| v.eq_ignore_ascii_case("helm"));
    if helm("app.kubernetes.io/managed-by") || helm("heritage") {
        let release = label("release").or_else(|| label("app.kubernetes.io/instance"));
        return Some(match release {
            Some(release) => format!("Helm (release {release})"),
            None => "Helm".to_string(),
        });
    }
    None
}

#[cfg(test)]
mod tests;
