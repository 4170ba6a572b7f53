//! VolumeSnapshot backups on the local cluster, with the test stand-in snapshotter
//! (kwok-snapshot-standin): a snapshot of the hub's claim, and the claim restored from it under
//! the same name, labels and annotations.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hubgrade::cluster::snapshot::{SnapshotError, restore_claim, snapshot_claim};
use hubgrade::machine::BackupMethod;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};
use serde_json::json;
use support::{TestNamespace, client, kubectl_with_input, repo, stderr, wait_until};

struct Standin(Child);

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn hub_claim(ns: &TestNamespace) -> (std::path::PathBuf, Standin) {
    let root = repo().join("target/e2e/volumes");
    let dir = root.join(&ns.name).join("hub-db-dir");
    std::fs::create_dir_all(&dir).expect("volume directory");
    support::e2e::make_hub_database(&dir.join("jupyterhub.sqlite")).await;
    let manifest = format!(
        r#"
apiVersion: v1
kind: PersistentVolume
metadata: {{name: {ns}-hub-db-dir}}
spec:
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  hostPath: {{path: {dir}}}
  claimRef: {{namespace: {ns}, name: hub-db-dir}}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: hub-db-dir
  namespace: {ns}
  labels: {{app: jupyterhub, component: hub, app.kubernetes.io/managed-by: Helm}}
  annotations: {{meta.helm.sh/release-name: jhub, meta.helm.sh/release-namespace: {ns}, team.example/owner: research}}
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: ""
  volumeName: {ns}-hub-db-dir
  resources: {{requests: {{storage: 1Gi}}}}
"#,
        ns = ns.name,
        dir = dir.display()
    );
    let applied = kubectl_with_input(&["apply", "-f", "-"], &manifest);
    assert!(applied.status.success(), "{}", stderr(&applied));
    let standin = Command::new(support::standin("kwok-snapshot-standin"))
        .args([
            "--namespace",
            &ns.name,
            "--volumes",
            root.to_str().expect("path"),
        ])
        .env("KUBECONFIG", support::kubeconfig())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kwok-snapshot-standin");
    (dir, Standin(standin))
}

async fn bound(claims: &Api<PersistentVolumeClaim>) -> bool {
    claims
        .get("hub-db-dir")
        .await
        .ok()
        .and_then(|c| c.status)
        .and_then(|s| s.phase)
        .as_deref()
        == Some("Bound")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_snapshot_restores_the_hub_volume_under_the_same_claim() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "snapshot").await;
    let (dir, _standin) = hub_claim(&ns).await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    wait_until(Duration::from_secs(30), "the claim to be Bound", || {
        bound(&claims)
    })
    .await;
    let before = claims.get("hub-db-dir").await.expect("claim");
    let database = dir.join("jupyterhub.sqlite");
    let original = support::e2e::checksum(&database);

    let reference = snapshot_claim(
        &client,
        &ns.name,
        "hub-db-dir",
        "hub-db-dir-before-upgrade",
        None,
        Duration::from_secs(60),
    )
    .await
    .expect("the snapshot becomes ready");
    assert_eq!(reference.method, BackupMethod::VolumeSnapshot);
    assert_eq!(reference.size_bytes, Some(1 << 30));
    assert!(reference.verified);

    // The migration changes the database on the volume.
    std::fs::write(&database, b"not the original any more").expect("changing the database");
    assert_ne!(support::e2e::checksum(&database), original);

    restore_claim(
        &client,
        &ns.name,
        "hub-db-dir",
        &reference.reference,
        Duration::from_secs(60),
    )
    .await
    .expect("the claim is restored");
    wait_until(
        Duration::from_secs(60),
        "the restored claim to be Bound",
        || bound(&claims),
    )
    .await;
    let after = claims.get("hub-db-dir").await.expect("claim");
    assert_ne!(
        after.metadata.uid, before.metadata.uid,
        "the claim was not made again"
    );
    assert_eq!(after.metadata.labels, before.metadata.labels);
    let annotations = after.metadata.annotations.clone().unwrap_or_default();
    for (key, value) in [
        ("meta.helm.sh/release-name", "jhub"),
        ("meta.helm.sh/release-namespace", ns.name.as_str()),
        ("team.example/owner", "research"),
    ] {
        assert_eq!(
            annotations.get(key).map(String::as_str),
            Some(value),
            "annotation {key}"
        );
    }
    let source = after.spec.and_then(|s| s.data_source).expect("dataSource");
    assert_eq!(
        (source.kind.as_str(), source.name.as_str()),
        ("VolumeSnapshot", "hub-db-dir-before-upgrade")
    );
    assert_eq!(
        support::e2e::checksum(&database),
        original,
        "the volume does not hold the snapshot's data"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_snapshot_reports_the_snapshotter_error() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "snapfail").await;
    let (_dir, _standin) = hub_claim(&ns).await;
    let snapshot: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
        "metadata": {"name": "doomed", "annotations": {"snapshot.hubgrade.test/fail": "csi: quota exceeded"}},
        "spec": {"source": {"persistentVolumeClaimName": "hub-db-dir"}}
    }))
    .expect("snapshot");
    let gvk = kube::api::GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        &ns.name,
        &kube::api::ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots"),
    );
    api.create(&PostParams::default(), &snapshot)
        .await
        .expect("create");
    let error = snapshot_claim(
        &client,
        &ns.name,
        "hub-db-dir",
        "doomed",
        None,
        Duration::from_secs(60),
    )
    .await
    .expect_err("the snapshot fails");
    assert!(matches!(error, SnapshotError::Failed { .. }), "{error}");
    assert!(error.to_string().contains("csi: quota exceeded"), "{error}");
}
