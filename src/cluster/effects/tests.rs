use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::*;
use crate::cluster::testing::{
    Exchange, HUB_PATH, JOBS_PATH, MERGE_PATCH, STRATEGIC_PATCH, TARGET_IMAGE, UID, hub,
    locked_hub, scenario, snapshot_of, target,
};
use crate::machine::BackupRecord;

async fn act_with(
    action: Action,
    snapshot: Snapshot,
    progress: Progress,
    exchanges: Vec<Exchange>,
) -> Result<(), EffectError> {
    let target = target();
    scenario(exchanges, |client| async move {
        let inputs = EffectInputs {
            client: &client,
            target: &target,
            progress: &progress,
            snapshot: &snapshot,
        };
        carry_out(&action, &inputs).await.map(drop)
    })
    .await
}

/// `action` on the hub as `hub()` has it, with nothing recorded yet.
async fn act(action: Action, exchanges: Vec<Exchange>) -> Result<(), EffectError> {
    act_with(action, snapshot_of(hub()), Progress::default(), exchanges).await
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": name, "namespace": "jhub"}})).expect("a pod")
}

/// The containers of a Job's pod template, by name.
fn container<'a>(job: &'a Value, list: &str, name: &str) -> &'a Value {
    job["spec"]["template"]["spec"][list]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no {list} {name} in {job:#}"))
}

#[tokio::test]
async fn the_lock_is_taken_by_a_compare_and_swap_under_hubgrades_name() {
    let lock = Exchange::patch(HUB_PATH, MERGE_PATCH)
        .query("fieldManager", "hubgrade")
        .body_is(json!({"metadata": {
            "resourceVersion": "41",
            "annotations": {"hubgrade.io/locked-by": "to-4-2", "hubgrade.io/locked-by-uid": UID}
        }}))
        .reply(locked_hub(("to-4-2", UID)));
    let result = act(Action::AcquireLock, vec![lock]).await;
    result.expect("the lock is taken");
}

#[tokio::test]
async fn a_hub_changed_since_it_was_read_is_a_conflict_to_retry() {
    let lock = Exchange::patch(HUB_PATH, MERGE_PATCH).fail(409, "Conflict");
    let result = act(Action::AcquireLock, vec![lock]).await;
    assert!(result.expect_err("refused").is_conflict());
}

#[tokio::test]
async fn scaling_the_hub_writes_only_its_replicas() {
    let scale = Exchange::patch(HUB_PATH, MERGE_PATCH)
        .query("fieldManager", "hubgrade")
        .body_is(json!({"spec": {"replicas": 0}}))
        .reply(hub());
    let snapshot = snapshot_of(locked_hub(("to-4-2", UID)));
    let action = Action::ScaleHub { replicas: 0 };
    let result = act_with(action, snapshot, Progress::default(), vec![scale]).await;
    result.expect("scaled");
}

#[tokio::test]
async fn the_new_image_is_set_on_the_hub_container_only() {
    let image = Exchange::patch(HUB_PATH, STRATEGIC_PATCH)
        .query("fieldManager", "hubgrade")
        .body_is(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "hub", "image": TARGET_IMAGE}
        ]}}}}))
        .reply(hub());
    let action = Action::SetHubImage {
        image: TARGET_IMAGE.into(),
    };
    let result = act(action, vec![image]).await;
    result.expect("image set");
}

#[tokio::test]
async fn hub_pods_that_came_back_are_deleted_without_grace() {
    let mut snapshot = snapshot_of(hub());
    snapshot.hub_pods = vec![pod("hub-1"), pod("hub-2")];
    let delete = |name: &str| {
        Exchange::delete(&format!("/api/v1/namespaces/jhub/pods/{name}"))
            .body_contains(json!({"gracePeriodSeconds": 0}))
    };
    let exchanges = vec![
        delete("hub-1").reply(pod("hub-1")),
        // Gone already: that is what was asked.
        delete("hub-2").not_found(),
    ];
    let result = act_with(
        Action::DeleteHubPods,
        snapshot,
        Progress::default(),
        exchanges,
    )
    .await;
    result.expect("pods deleted");
}

#[tokio::test]
async fn the_migration_job_is_the_builders_and_an_existing_one_counts_as_made() {
    let create = Exchange::post(JOBS_PATH)
        .query("fieldManager", "hubgrade")
        .body_contains(json!({"metadata": {
            "name": "hubgrade-0f1e2d3c-migration",
            "namespace": "jhub",
            "labels": {"hubgrade.io/upgrade-uid": UID, "hubgrade.io/step": "migration"},
            "ownerReferences": [{"kind": "HubUpgrade", "name": "to-4-2", "uid": UID, "controller": true}]
        }, "spec": {"backoffLimit": 0, "activeDeadlineSeconds": 1800}}))
        .body_check(|job| {
            let upgrade_db = container(job, "initContainers", "upgrade-db");
            assert_eq!(upgrade_db["image"], TARGET_IMAGE);
            let report = container(job, "containers", "report-revision");
            assert_eq!(report["image"], "ghcr.io/hubgrade/hubgrade:test");
        })
        // Made by an earlier attempt that crashed before recording it.
        .fail(409, "AlreadyExists");
    let snapshot = snapshot_of(locked_hub(("to-4-2", UID)));
    let result = act_with(
        Action::StartMigration,
        snapshot,
        Progress::default(),
        vec![create],
    )
    .await;
    result.expect("an existing Job is the one");
}

#[tokio::test]
async fn a_job_that_cannot_be_created_is_an_error_naming_it() {
    let create = Exchange::post(JOBS_PATH)
        .query("fieldManager", "hubgrade")
        .fail(403, "Forbidden");
    let result = act(Action::StartBackup, vec![create]).await;
    let error = result.expect_err("refused");
    assert!(!error.is_conflict());
    // Said as the API server said it (this goes into an Event), not as a debug dump.
    assert_eq!(
        error.to_string(),
        "create Job on hubgrade-0f1e2d3c-backup: Forbidden (mocked) (403 Forbidden)"
    );
}

#[tokio::test]
async fn the_restore_job_puts_back_the_recorded_backup() {
    let progress = Progress {
        backup: Some(BackupRecord {
            method: crate::machine::BackupMethod::File,
            reference: "/srv/jupyterhub/hubgrade-backups/hubgrade-0f1e2d3c-db.sqlite".into(),
            size_bytes: Some(4096),
            checksum: Some("sha256:abc".into()),
            verified: true,
            pruned: Vec::new(),
        }),
        ..Progress::default()
    };
    let create = Exchange::post(JOBS_PATH)
        .query("fieldManager", "hubgrade")
        .body_contains(json!({
            "metadata": {"name": "hubgrade-0f1e2d3c-restore"},
            "spec": {"activeDeadlineSeconds": 1800}
        }))
        .body_check(|job| {
            let agent = container(job, "containers", "agent");
            let args: Vec<&str> = agent["args"]
                .as_array()
                .expect("args")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(args[0], "sqlite-restore");
            for pair in [
                [
                    "--from",
                    "/srv/jupyterhub/hubgrade-backups/hubgrade-0f1e2d3c-db.sqlite",
                ],
                ["--checksum", "sha256:abc"],
            ] {
                assert!(
                    args.windows(2).any(|w| w == pair),
                    "{args:?} lacks {pair:?}"
                );
            }
        });
    let snapshot = snapshot_of(hub());
    let result = act_with(Action::StartRestore, snapshot, progress, vec![create]).await;
    result.expect("restore started");
}

#[tokio::test]
async fn a_restore_without_a_recorded_backup_asks_nothing() {
    let result = act(Action::StartRestore, vec![]).await;
    assert!(matches!(
        result,
        Err(EffectError::Impossible { problem, .. }) if problem == "no backup is recorded"
    ));
}

#[tokio::test]
async fn a_running_migration_is_cancelled_with_its_pods() {
    let cancel = Exchange::delete(&format!("{JOBS_PATH}/hubgrade-0f1e2d3c-migration"))
        .body_contains(json!({"propagationPolicy": "Foreground"}))
        .not_found();
    let result = act(Action::CancelMigration, vec![cancel]).await;
    result.expect("a migration already gone is cancelled");
}

#[tokio::test]
async fn releasing_the_lock_removes_only_hubgrades_annotations_of_the_version_read() {
    let mut held = locked_hub(("to-4-2", UID));
    held.metadata.resource_version = Some("57".into());
    let exchanges = vec![
        Exchange::get(HUB_PATH).reply(held),
        Exchange::patch(HUB_PATH, MERGE_PATCH)
            .query("fieldManager", "hubgrade")
            .body_is(json!({"metadata": {
                "resourceVersion": "57",
                "annotations": {"hubgrade.io/locked-by": null, "hubgrade.io/locked-by-uid": null}
            }}))
            .reply(hub()),
    ];
    let result = act(Action::ReleaseLock, exchanges).await;
    result.expect("released");
}

#[tokio::test]
async fn another_upgrades_lock_is_not_released() {
    let other = locked_hub(("to-4-3", "99999999-aaaa-bbbb-cccc-000000000000"));
    let exchanges = vec![Exchange::get(HUB_PATH).reply(other)];
    let result = act(Action::ReleaseLock, exchanges).await;
    result.expect("nothing to release");
}

#[tokio::test]
async fn the_configuration_is_copied_into_one_secret_owned_by_the_upgrade() {
    let exchanges = vec![
        Exchange::get("/api/v1/namespaces/jhub/configmaps/hub").reply(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "hub"},
            "data": {"values.yaml": "hub: {}"}
        })),
        Exchange::get("/api/v1/namespaces/jhub/secrets/hub").reply(json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hub"},
            "data": {"hub.config.CryptKeeper.keys": "c2VjcmV0"}
        })),
        Exchange::post("/api/v1/namespaces/jhub/secrets")
            .query("fieldManager", "hubgrade")
            .body_contains(json!({
                "metadata": {
                    "name": "hubgrade-0f1e2d3c-config",
                    "annotations": {"hubgrade.io/copied-from": "ConfigMap/hub,Secret/hub"},
                    "ownerReferences": [{"uid": UID}]
                },
                "type": "Opaque",
                "data": {
                    // base64 of "hub: {}", and the Secret's value as it was.
                    "configmap.hub.values.yaml": "aHViOiB7fQ==",
                    "secret.hub.hub.config.CryptKeeper.keys": "c2VjcmV0"
                }
            })),
    ];
    let result = act(Action::BackUpConfig, exchanges).await;
    result.expect("configuration copied");
}

#[tokio::test]
async fn jobs_made_during_a_deletion_are_found_by_uid_and_deleted() {
    let exchanges = vec![
        Exchange::get(JOBS_PATH)
            .query("labelSelector", &format!("hubgrade.io/upgrade-uid={UID}"))
            .reply(json!({
                "apiVersion": "batch/v1", "kind": "JobList", "metadata": {},
                "items": [{"metadata": {"name": "hubgrade-0f1e2d3c-restore", "namespace": "jhub"}}]
            })),
        Exchange::delete(&format!("{JOBS_PATH}/hubgrade-0f1e2d3c-restore"))
            .body_contains(json!({"propagationPolicy": "Background"})),
    ];
    let owner = target().owner;
    let result = scenario(exchanges, |client| async move {
        delete_unowned(&client, &owner).await
    })
    .await;
    result.expect("deleted");
}
