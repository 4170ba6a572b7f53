//! `backup.method: VolumeSnapshot` in the operator, on the local cluster with the stand-in
//! snapshotter (kwok-snapshot-standin) and agent: the stopped hub's claim is snapshotted and
//! waited on until ready; a failed migration rolls back by making the claim again from the
//! snapshot, which gives back the database exactly, through kills in every phase.

mod support;

use std::time::Duration;

use hubgrade::machine::Phase;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use serde_json::json;
use support::e2e::{Hub, ORIGINAL_IMAGE, assert_phase, checksum, with_template_annotations};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";

fn snapshots(hub: &Hub) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    Api::namespaced_with(
        hub.client.clone(),
        hub.ns(),
        &ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots"),
    )
}

fn spec() -> serde_json::Value {
    json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
           "backup": {"method": "VolumeSnapshot"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_backs_up_the_stopped_hub_and_the_upgrade_succeeds() {
    let mut hub = Hub::new("e2e-snap", |yaml| yaml).await;
    hub.start_snapshot_standin();
    let original = checksum(&hub.database());
    let status = hub
        .run_upgrade("to-4-2-0", spec(), Duration::from_secs(120))
        .await;
    assert_phase(&status, Phase::Succeeded);
    assert_eq!(hub.hub_image().await, TARGET);
    let backup = status.progress.backup.expect("a backup");
    assert_eq!(backup.method.to_string(), "VolumeSnapshot");
    assert!(backup.verified);
    let snapshot = snapshots(&hub)
        .get(&backup.reference)
        .await
        .expect("the VolumeSnapshot");
    assert_eq!(
        snapshot
            .data
            .pointer("/spec/source/persistentVolumeClaimName"),
        Some(&json!("hub-db-dir"))
    );
    assert_eq!(
        snapshot.data.pointer("/status/readyToUse"),
        Some(&json!(true))
    );
    // Taken while the hub was stopped: it holds the database as it was before the migration.
    let copy = support::repo()
        .join("target/e2e/volumes/.snapshots")
        .join(hub.ns())
        .join(&backup.reference)
        .join("jupyterhub.sqlite");
    assert_eq!(checksum(&copy), original, "{}", copy.display());
    assert_ne!(
        checksum(&hub.database()),
        original,
        "the migration changed nothing"
    );
    assert!(hub.jobs_for("backup").await.is_empty(), "a backup Job ran");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_migration_rolls_back_to_the_snapshot_through_kills_in_every_phase() {
    let mut hub = Hub::new(
        "e2e-snapfail",
        with_template_annotations(
            "kwok.hubgrade.io/delay: 1s, kwok.hubgrade.io/migration: fails-halfway",
        ),
    )
    .await;
    // Each snapshot takes a second, so a kill surely lands while the backup is made.
    hub.start_slow_snapshot_standin("1s");
    let original = checksum(&hub.database());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(hub.client.clone(), hub.ns());
    let before = claims.get("hub-db-dir").await.expect("the claim");
    // The rehearsal would catch this migration first, touching nothing.
    let mut spec = spec();
    spec["migration"] = json!({"rehearse": false});
    hub.apply_upgrade("to-4-2-0", spec).await;
    hub.ends_through_kills(
        "to-4-2-0",
        Phase::RolledBack,
        &["BackingUp", "Migrating", "RollingBack"],
    )
    .await;
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    let after = claims.get("hub-db-dir").await.expect("the claim");
    assert_ne!(
        after.metadata.uid, before.metadata.uid,
        "the claim was not made again"
    );
    assert_eq!(after.metadata.labels, before.metadata.labels);
    let source = after
        .spec
        .and_then(|s| s.data_source)
        .expect("made from the snapshot");
    let upgrade = hub.upgrades().get("to-4-2-0").await.expect("upgrade");
    let backup = upgrade
        .status
        .expect("status")
        .progress
        .backup
        .expect("backup");
    assert_eq!(source.name, backup.reference);
    assert_eq!(
        checksum(&hub.database()),
        original,
        "the database is not the original"
    );
    assert!(
        hub.jobs_for("restore").await.is_empty(),
        "a restore Job ran"
    );
}
