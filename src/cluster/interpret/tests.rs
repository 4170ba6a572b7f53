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
