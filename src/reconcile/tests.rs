use serde_json::{Value, json};

use super::*;
use crate::cluster::testing::{
    AGENT_IMAGE, APPLY_PATCH, Exchange, HUB_PATH, JOBS_PATH, MERGE_PATCH, UID, UPGRADE_PATH, hub,
    hub_configuration, hub_values, job_lookups, locked_hub, scenario, upgrade,
};

const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/jhub/events";

fn context(client: Client) -> Context {
    Context {
        client,
        reporter: reporter(None),
        metrics: Arc::default(),
        agent_image: AGENT_IMAGE.into(),
        agent_pull_secrets: Vec::new(),
        ledger: None,
        image_policy: Default::default(),
        notifier: None,
        cache: Default::default(),
    }
}

fn upgrade_in(status: Value) -> HubUpgrade {
    let mut upgrade = upgrade();
    upgrade.status = Some(serde_json::from_value(status).expect("a status"));
    upgrade
}

/// What `observe` reads of a free, healthy hub in Pending or (with the configuration's size)
/// Preflight.
fn observation_of_a_free_hub(preflight: bool) -> Vec<Exchange> {
    let mut reads = vec![
        Exchange::get(HUB_PATH).reply(hub()),
        hub_values(),
        Exchange::get("/api/v1/namespaces/jhub/pods")
            .query("labelSelector", "component=hub")
            .empty_list("PodList"),
        Exchange::get("/api/v1/namespaces/jhub/persistentvolumeclaims/hub-db-dir").reply(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "hub-db-dir"}, "status": {"phase": "Bound"}
        })),
    ];
    if preflight {
        reads.extend(hub_configuration());
    }
    reads.extend(job_lookups(|_| None));
    reads
}

/// Releasing the lock of this test's upgrade: read the hub, remove the annotations.
fn lock_released() -> Vec<Exchange> {
    vec![
        Exchange::get(HUB_PATH).reply(locked_hub(("to-4-2", UID))),
        Exchange::patch(HUB_PATH, MERGE_PATCH)
            .query("fieldManager", "hubgrade")
            .body_contains(json!({"metadata": {"annotations": {
                "hubgrade.io/locked-by": null, "hubgrade.io/locked-by-uid": null
            }}}))
            .reply(hub()),
    ]
}

async fn advanced(exchanges: Vec<Exchange>) -> Result<Requeue, Error> {
    scenario(exchanges, |client| async move {
        advance(&upgrade(), &context(client)).await
    })
    .await
}

#[tokio::test]
async fn a_new_phase_is_applied_to_the_status_as_hubgrade_and_announced() {
    let mut exchanges = vec![Exchange::get(UPGRADE_PATH).reply(upgrade())];
    exchanges.extend(observation_of_a_free_hub(false));
    exchanges.push(
        Exchange::patch(&format!("{UPGRADE_PATH}/status"), APPLY_PATCH)
            .query("fieldManager", "hubgrade")
            .query("force", "true")
            .body_contains(json!({
                "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
                // Based on the version read: a stale write fails instead of overwriting.
                "metadata": {"name": "to-4-2", "resourceVersion": "7"},
                "status": {"phase": "Preflight", "observedGeneration": 1}
            }))
            .body_check(|patch| {
                let conditions = patch["status"]["conditions"]
                    .as_array()
                    .expect("conditions");
                let progressing = conditions
                    .iter()
                    .find(|c| c["type"] == "Progressing")
                    .expect("Progressing");
                assert_eq!(progressing["status"], "True");
                assert_eq!(progressing["reason"], "Preflight");
            })
            .reply(upgrade()),
    );
    exchanges.push(Exchange::post(EVENTS).body_contains(json!({
        "type": "Normal", "reason": "Preflight", "action": "Upgrade",
        "note": "checking the hub, its database and the target",
        "reportingController": "hubgrade",
        "regarding": {"kind": "HubUpgrade", "namespace": "jhub", "name": "to-4-2", "uid": UID}
    })));
    let requeue = advanced(exchanges).await.expect("advanced");
    assert_eq!(requeue, Requeue::requeue(Duration::from_millis(200)));
}

#[tokio::test]
async fn a_spec_that_cannot_be_planned_ends_failed_without_reading_the_hub() {
    let mut invalid = upgrade();
    invalid.spec.migration.timeout = "soon".into();
    let exchanges = vec![
        Exchange::get(UPGRADE_PATH).reply(invalid.clone()),
        Exchange::patch(&format!("{UPGRADE_PATH}/status"), APPLY_PATCH)
            .query("fieldManager", "hubgrade")
            .query("force", "true")
            .body_contains(json!({"status": {"phase": "Failed"}}))
            .body_check(|patch| {
                let message = patch["status"]["message"].as_str().expect("message");
                assert!(message.starts_with("the spec cannot be run"), "{message}");
            })
            .reply(invalid),
        Exchange::post(EVENTS).body_contains(json!({"type": "Warning", "reason": "InvalidSpec"})),
    ];
    let requeue = advanced(exchanges).await.expect("advanced");
    assert_eq!(requeue, Requeue::await_change());
}

#[tokio::test]
async fn a_conflicting_action_is_retried_with_nothing_recorded() {
    let preflight = json!({"phase": "Preflight", "phaseStartedAt": "2026-01-01T00:00:00Z"});
    let mut exchanges = vec![Exchange::get(UPGRADE_PATH).reply(upgrade_in(preflight))];
    exchanges.extend(observation_of_a_free_hub(true));
    // The lock is free and the checks pass: take the lock, which someone changed meanwhile.
    exchanges.push(Exchange::patch(HUB_PATH, MERGE_PATCH).fail(409, "Conflict"));
    let requeue = advanced(exchanges).await.expect("a conflict is no error");
    assert_eq!(requeue, Requeue::requeue(Duration::from_millis(500)));
}

#[tokio::test]
async fn a_failed_action_is_announced_and_nothing_is_recorded() {
    let preflight = json!({"phase": "Preflight", "phaseStartedAt": "2026-01-01T00:00:00Z"});
    let mut exchanges = vec![Exchange::get(UPGRADE_PATH).reply(upgrade_in(preflight))];
    exchanges.extend(observation_of_a_free_hub(true));
    exchanges.push(Exchange::patch(HUB_PATH, MERGE_PATCH).fail(403, "Forbidden"));
    exchanges.push(
        Exchange::post(EVENTS)
            .body_contains(json!({"type": "Warning", "reason": "ActionFailed"}))
            .body_check(|event| {
                let note = event["note"].as_str().expect("note");
                assert!(note.starts_with("acquire the hub lock on hub: "), "{note}");
            }),
    );
    let result = advanced(exchanges).await;
    assert!(matches!(result, Err(Error::Effect { .. })), "{result:?}");
}

#[tokio::test]
async fn a_live_upgrade_gets_the_finalizer_before_anything_else() {
    let mut new = upgrade();
    new.metadata.finalizers = None;
    let exchanges = vec![
        Exchange::patch(UPGRADE_PATH, MERGE_PATCH)
            .body_is(json!({"metadata": {
                "resourceVersion": "7", "finalizers": ["hubgrade.io/hub-lock"]
            }}))
            .reply(upgrade()),
    ];
    let requeue = scenario(exchanges, |client| async move {
        reconcile(Arc::new(new), Arc::new(context(client))).await
    })
    .await
    .expect("finalizer added");
    assert_eq!(requeue, Requeue::requeue(Duration::from_millis(100)));
}

#[tokio::test]
async fn a_deleted_upgrade_that_ended_releases_the_lock_and_its_finalizer() {
    let mut deleted = upgrade_in(json!({"phase": "Succeeded"}));
    deleted.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    let mut exchanges = lock_released();
    exchanges.extend([
        Exchange::get(JOBS_PATH)
            .query("labelSelector", &format!("hubgrade.io/upgrade-uid={UID}"))
            .empty_list("JobList"),
        Exchange::patch(UPGRADE_PATH, MERGE_PATCH)
            .body_is(json!({"metadata": {"resourceVersion": "7", "finalizers": []}}))
            .reply(upgrade()),
    ]);
    let requeue = scenario(exchanges, |client| async move {
        reconcile(Arc::new(deleted), Arc::new(context(client))).await
    })
    .await
    .expect("let go");
    assert_eq!(requeue, Requeue::await_change());
}

#[tokio::test]
async fn an_ended_upgrade_reads_only_its_hub_and_releases_the_lock() {
    let ended = upgrade_in(json!({"phase": "Succeeded"}));
    // No values, pods, claim or Jobs read: an ended upgrade can only release its lock.
    let mut exchanges = vec![
        Exchange::get(UPGRADE_PATH).reply(ended.clone()),
        Exchange::get(HUB_PATH).reply(locked_hub(("to-4-2", UID))),
    ];
    exchanges.extend(lock_released());
    let requeue = scenario(exchanges, |client| async move {
        advance(&ended, &context(client)).await
    })
    .await
    .expect("released");
    // Soon again, to see the lock gone.
    assert_eq!(requeue, Requeue::requeue(Duration::from_millis(200)));
}

#[tokio::test]
async fn a_reason_said_twice_is_two_events_each_with_its_own_message() {
    // kube's Recorder, kept for the process, would patch the first Event into a series and
    // keep its note: the second message would never be seen.
    let first = "the hub Deployment was scaled up to 1 (by argocd-controller) during BackingUp";
    let second = "the hub Deployment was scaled up to 2 (by kubectl-scale) during Migrating";
    let exchanges = vec![
        Exchange::post(EVENTS).body_contains(json!({"reason": "HubRestarted", "note": first})),
        Exchange::post(EVENTS).body_contains(json!({"reason": "HubRestarted", "note": second})),
    ];
    scenario(exchanges, |client| async move {
        let context = context(client);
        for message in [first, second] {
            publish(
                &context,
                &upgrade(),
                EventKind::Warning,
                "HubRestarted",
                message,
            )
            .await;
        }
    })
    .await;
}
