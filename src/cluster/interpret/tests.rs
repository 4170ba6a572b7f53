use super::*;
use serde_json::json;

fn now() -> Timestamp {
    "2026-11-26T10:00:00Z".parse().expect("time")
}

fn pod(age_seconds: i64, status: serde_json::Value) -> Pod {
    let created = now() - SignedDuration::from_secs(age_seconds);
    serde_json::from_value(json!({
        "metadata": {"name": "p", "uid": "u1", "creationTimestamp": created.to_string()},
        "spec": {"containers": [{"name": "c"}], "nodeName": "node-a"},
        "status": status
    }))
    .expect("pod")
}

fn waiting(reason: &str) -> serde_json::Value {
    json!({"phase": "Pending", "containerStatuses": [
        {"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
         "state": {"waiting": {"reason": reason, "message": "no such image"}}}
    ]})
}

#[test]
fn an_image_that_cannot_be_pulled_is_stuck_after_the_grace() {
    let young = pod(5, waiting("ImagePullBackOff"));
    assert_eq!(stuck_pod(&young, &[], now()), None);
    let old = pod(40, waiting("ImagePullBackOff"));
    let why = stuck_pod(&old, &[], now()).expect("stuck");
    assert!(
        why.contains("ImagePullBackOff") && why.contains("no such image"),
        "{why}"
    );
    let starting = pod(40, waiting("ContainerCreating"));
    assert_eq!(stuck_pod(&starting, &[], now()), None);
}

#[test]
fn an_unschedulable_pod_is_stuck() {
    let p = pod(
        60,
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": "0/3 nodes are available"}]}),
    );
    let why = stuck_pod(&p, &[], now()).expect("stuck");
    assert!(why.contains("0/3 nodes are available"), "{why}");
}

#[test]
fn a_pod_waiting_for_its_claim_to_be_bound_is_stuck_only_after_the_provisioning_grace() {
    let unbound = |age| {
        pod(
            age,
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
                "reason": "Unschedulable", "message": "0/3 nodes are available: pod has unbound immediate PersistentVolumeClaims. not found"}]}),
        )
    };
    assert_eq!(stuck_pod(&unbound(60), &[], now()), None);
    let why = stuck_pod(&unbound(301), &[], now()).expect("stuck");
    assert!(
        why.contains("unbound immediate PersistentVolumeClaims"),
        "{why}"
    );
}

#[test]
fn a_volume_that_cannot_be_attached_is_stuck() {
    let p = pod(60, waiting("ContainerCreating"));
    let event: Event = serde_json::from_value(json!({
        "metadata": {"name": "e"}, "involvedObject": {"kind": "Pod", "name": "p", "uid": "u1"},
        "reason": "FailedAttachVolume", "type": "Warning",
        "message": "Multi-Attach error for volume pvc-1"
    }))
    .expect("event");
    let why = stuck_pod(&p, &[event], now()).expect("stuck");
    assert!(why.contains("Multi-Attach"), "{why}");
}

#[test]
fn a_job_whose_pod_is_refused_is_stuck_after_the_grace() {
    let job = |age: i64| -> Job {
        let created = now() - SignedDuration::from_secs(age);
        serde_json::from_value(json!({
            "metadata": {"name": "j", "uid": "j1", "creationTimestamp": created.to_string()}
        }))
        .expect("job")
    };
    let refused: Event = serde_json::from_value(json!({
        "metadata": {"name": "e"}, "involvedObject": {"kind": "Job", "name": "j", "uid": "j1"},
        "reason": "FailedCreate", "type": "Warning",
        "message": "pods \"j-x\" is forbidden: exceeded quota: pods, requested: pods=1"
    }))
    .expect("event");
    assert_eq!(
        podless_job(&job(5), std::slice::from_ref(&refused), now()),
        None
    );
    let why = podless_job(&job(40), std::slice::from_ref(&refused), now()).expect("stuck");
    assert!(why.contains("exceeded quota"), "{why}");
    // Another Job's Events say nothing about this one.
    let mut other = refused.clone();
    other.involved_object.uid = Some("j2".into());
    assert_eq!(podless_job(&job(40), &[other], now()), None);
}

#[test]
fn evicted_and_completed_hub_pods_are_not_counted() {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "hub", "generation": 2},
        "spec": {"replicas": 0, "selector": {}, "template": {}},
        "status": {"observedGeneration": 2}
    }))
    .expect("deployment");
    let snapshot = Snapshot {
        deployment: Some(deployment),
        hub_pods: vec![
            pod(100, json!({"phase": "Failed", "reason": "Evicted"})),
            pod(100, json!({"phase": "Succeeded"})),
        ],
        ..Snapshot::default()
    };
    let world = snapshot.world(now());
    assert_eq!(world.hub.expect("hub").pods, 0);
}

#[test]
fn the_manager_that_scaled_the_hub_is_named() {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "hub", "managedFields": [
            {"manager": "helm", "operation": "Update", "time": "2026-11-26T09:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "hubgrade", "operation": "Update", "time": "2026-11-26T09:30:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}},
            {"manager": "kubectl", "operation": "Update", "subresource": "scale",
             "time": "2026-11-26T09:50:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        ]},
        "spec": {"selector": {}, "template": {}}
    }))
    .expect("deployment");
    assert_eq!(replicas_manager(&deployment).as_deref(), Some("kubectl"));
}

#[test]
fn a_read_write_once_pod_claim_in_use_blocks_the_rehearsal() {
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "hub-db-dir"},
        "spec": {"accessModes": ["ReadWriteOncePod"]}
    }))
    .expect("claim");
    let running = pod(100, json!({"phase": "Running"}));
    let snapshot = Snapshot {
        claim: Some(claim.clone()),
        hub_pods: vec![running],
        ..Snapshot::default()
    };
    let why = snapshot.world(now()).rehearsal_blocked.expect("blocked");
    assert!(why.contains("ReadWriteOncePod"), "{why}");
    let stopped = Snapshot {
        claim: Some(claim),
        ..Snapshot::default()
    };
    assert_eq!(stopped.world(now()).rehearsal_blocked, None);
}

fn marked(labels: serde_json::Value, annotations: serde_json::Value) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "hub", "labels": labels, "annotations": annotations},
        "spec": {"selector": {}, "template": {}}
    }))
    .expect("deployment")
}

/// The marks each tool leaves, as z2jh's chart and the tools really write them.
#[test]
fn the_tool_that_manages_the_hub_is_recognised() {
    let cases = [
        // z2jh 4.x installed by `helm install`.
        (
            json!({"app": "jupyterhub", "component": "hub", "release": "jhub", "heritage": "Helm",
                   "app.kubernetes.io/managed-by": "Helm", "app.kubernetes.io/instance": "jhub"}),
            json!({"meta.helm.sh/release-name": "jhub", "meta.helm.sh/release-namespace": "jh"}),
            Some("Helm (release jhub)"),
        ),
        // z2jh 3.x rendered by `helm template` (no release annotations).
        (
            json!({"app": "jupyterhub", "component": "hub", "release": "prod", "heritage": "Helm"}),
            json!({}),
            Some("Helm (release prod)"),
        ),
        // Argo CD's annotation tracking (the default since Argo CD 3) over a rendered chart.
        (
            json!({"app": "jupyterhub", "heritage": "Helm", "app.kubernetes.io/managed-by": "Helm"}),
            json!({"argocd.argoproj.io/tracking-id": "hub-prod:apps/Deployment:jh/hub"}),
            Some("Argo CD (application hub-prod)"),
        ),
        // A Flux HelmRelease.
        (
            json!({"heritage": "Helm", "helm.toolkit.fluxcd.io/name": "jupyterhub",
                   "helm.toolkit.fluxcd.io/namespace": "flux-apps"}),
            json!({"meta.helm.sh/release-name": "jh-jupyterhub"}),
            Some("Flux (HelmRelease flux-apps/jupyterhub)"),
        ),
        // A Flux Kustomization of plain manifests.
        (
            json!({"kustomize.toolkit.fluxcd.io/name": "hubs",
                   "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}),
            json!({}),
            Some("Flux (Kustomization flux-system/hubs)"),
        ),
        // Applied by hand: nothing says a tool owns it (z2jh's user pods say "heritage:
        // jupyterhub", which is not Helm).
        (
            json!({"app": "jupyterhub", "component": "hub", "heritage": "jupyterhub"}),
            json!({"kubectl.kubernetes.io/last-applied-configuration": "{}"}),
            None,
        ),
    ];
    for (labels, annotations, expected) in cases {
        let deployment = marked(labels.clone(), annotations);
        assert_eq!(
            managed_by(&deployment.metadata).as_deref(),
            expected,
            "labels {labels}"
        );
    }
}

/// What an agent leaves in its termination message.
const REPORT: &str = r#"{"ok":true,"revision":"4621fec11365"}"#;

/// The state of the `step` Job, not yet marked Complete, whose one pod is `pod`.
fn state_with_pod(step: JobStep, pod: Pod) -> StepState<Option<AgentReport>> {
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": format!("hubgrade-0f1e2d3c-{}", step.as_str()),
                     "creationTimestamp": now().to_string()},
        "status": {"active": 1}
    }))
    .expect("job");
    let snapshot = Snapshot {
        jobs: BTreeMap::from([(step, (job, vec![pod]))]),
        ..Snapshot::default()
    };
    snapshot.job_state(step, now())
}

/// A Job whose pod Succeeded, before the Job controller marked the Job Complete: the step has
/// succeeded, with the report its pod left; a Job whose pod still runs has not.
#[test]
fn a_job_whose_pod_succeeded_has_succeeded_before_it_is_marked_complete() {
    let succeeded = pod(
        5,
        json!({"phase": "Succeeded", "containerStatuses": [
            {"name": "c", "image": "x", "imageID": "", "ready": false, "restartCount": 0,
             "state": {"terminated": {"exitCode": 0, "message": REPORT}}}
        ]}),
    );
    let running = pod(5, json!({"phase": "Running"}));
    assert_eq!(
        state_with_pod(JobStep::Backup, succeeded),
        StepState::Succeeded(AgentReport::parse(REPORT))
    );
    assert_eq!(state_with_pod(JobStep::Backup, running), StepState::Running);
}

/// A pod whose containers all exited 0 has run to its end before the kubelet reports it
/// Succeeded (it first stops the pod's sandbox): the step has succeeded, with the report. One
/// container still running, one that failed, or only the init containers ended: not yet.
#[test]
fn a_job_whose_containers_exited_0_has_succeeded_before_its_pod_is_marked_succeeded() {
    let container = |name: &str, state: serde_json::Value| {
        json!({"name": name, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
               "state": state})
    };
    let ended = |code: i32| json!({"terminated": {"exitCode": code, "message": REPORT}});
    let running = json!({"running": {}});
    let init_done = json!([container("upgrade-db", ended(0))]);
    let state = |containers: serde_json::Value| {
        let pod = pod(
            5,
            json!({"phase": "Running", "initContainerStatuses": init_done,
                   "containerStatuses": containers}),
        );
        state_with_pod(JobStep::Migration, pod)
    };
    assert_eq!(
        state(json!([container("report-revision", ended(0))])),
        StepState::Succeeded(AgentReport::parse(REPORT))
    );
    assert_eq!(
        state(json!([container("report-revision", ended(1))])),
        StepState::Running
    );
    assert_eq!(
        state(json!([container("report-revision", running.clone())])),
        StepState::Running
    );
    assert_eq!(
        state(json!([
            container("report-revision", ended(0)),
            container("other", running)
        ])),
        StepState::Running
    );
    assert_eq!(state(json!([])), StepState::Running);
}
