//! kwok-snapshot-standin: TEST INFRASTRUCTURE ONLY, standing in for a CSI driver and the
//! external-snapshotter on the KWOK-based local cluster, where no storage exists. Volumes are
//! local directories (`<volumes>/<namespace>/<claim>/`, as for kwok-agent-standin).
//!
//! - A new VolumeSnapshot of a claim: the claim's directory is copied to
//!   `<volumes>/.snapshots/<namespace>/<snapshot>/` and the snapshot marked `readyToUse`, or, if
//!   it carries the annotation `snapshot.hubgrade.test/fail: <message>`, given that error.
//! - A new claim whose `dataSource` is a VolumeSnapshot: the snapshot's copy fills the claim's
//!   directory, and a PersistentVolume pre-bound to the claim is created, so it becomes Bound.
//!
//! `--ready-after D` takes each snapshot only D after it is first seen, as a slow snapshotter
//! would: long enough for a test to act while a backup runs.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::json;

#[derive(Debug, Parser)]
#[command(about = "Plays a CSI snapshotter for a KWOK cluster (tests only)")]
struct Args {
    /// The namespace to serve.
    #[arg(long)]
    namespace: String,
    /// Root of the local directories standing for volume claims.
    #[arg(long)]
    volumes: PathBuf,
    /// How long after a snapshot is first seen it is taken (e.g. `2s`): a slow snapshotter.
    #[arg(long, value_parser = hubgrade::api::parse_duration)]
    ready_after: Option<jiff::SignedDuration>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = Client::try_default()
        .await
        .expect("a kubeconfig for the local cluster");
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    let snapshots: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        &args.namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots"),
    );
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &args.namespace);
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let mut filled: HashSet<String> = HashSet::new();
    let ready_after = args
        .ready_after
        .map_or(Duration::ZERO, |d| d.unsigned_abs());
    let mut first_seen: HashMap<String, std::time::Instant> = HashMap::new();
    loop {
        for snapshot in snapshots
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let status = snapshot.data.get("status").cloned().unwrap_or_default();
            if status.get("readyToUse").is_some() || status.get("error").is_some() {
                continue;
            }
            let name = snapshot.name_any();
            let seen = *first_seen
                .entry(snapshot.uid().unwrap_or_default())
                .or_insert_with(std::time::Instant::now);
            if seen.elapsed() < ready_after {
                continue;
            }
            let status = match snapshot.annotations().get("snapshot.hubgrade.test/fail") {
                Some(message) => {
                    json!({"readyToUse": false, "error": {"message": message, "time": now()}})
                }
                None => {
                    let claim = snapshot
                        .data
                        .pointer("/spec/source/persistentVolumeClaimName")
                        .and_then(|c| c.as_str())
                        .unwrap_or_default();
                    let source = args.volumes.join(&args.namespace).join(claim);
                    let copy = args
                        .volumes
                        .join(".snapshots")
                        .join(&args.namespace)
                        .join(&name);
                    copy_dir(&source, &copy).expect("copying the volume into the snapshot");
                    let size = claims
                        .get_opt(claim)
                        .await
                        .ok()
                        .flatten()
                        .and_then(|c| {
                            c.spec?
                                .resources?
                                .requests?
                                .get("storage")
                                .map(|q| q.0.clone())
                        })
                        .unwrap_or_else(|| "1Gi".into());
                    json!({
                        "readyToUse": true,
                        "restoreSize": size,
                        "creationTime": now(),
                        "boundVolumeSnapshotContentName": format!("snapcontent-{}", snapshot.uid().unwrap_or_default()),
                    })
                }
            };
            let _ = snapshots
                .patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"status": status})),
                )
                .await;
            eprintln!(
                "kwok-snapshot-standin: VolumeSnapshot {}/{name} done",
                args.namespace
            );
        }
        for claim in claims
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default()
        {
            let uid = claim.uid().unwrap_or_default();
            let spec = claim.spec.clone().unwrap_or_default();
            let Some(source) = spec
                .data_source
                .as_ref()
                .filter(|d| d.kind == "VolumeSnapshot")
            else {
                continue;
            };
            if spec.volume_name.is_some() || filled.contains(&uid) {
                continue;
            }
            let name = claim.name_any();
            let target = args.volumes.join(&args.namespace).join(&name);
            let copy = args
                .volumes
                .join(".snapshots")
                .join(&args.namespace)
                .join(&source.name);
            let _ = std::fs::remove_dir_all(&target);
            copy_dir(&copy, &target).expect("filling the restored volume");
            let capacity = spec
                .resources
                .as_ref()
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "1Gi".into());
            let volume: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": format!("{}-{name}-{}", args.namespace, &uid[..8.min(uid.len())])},
                "spec": {
                    "capacity": {"storage": capacity},
                    "accessModes": spec.access_modes.clone().unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                    "persistentVolumeReclaimPolicy": "Delete",
                    "storageClassName": spec.storage_class_name.clone().unwrap_or_default(),
                    "hostPath": {"path": target.display().to_string()},
                    "claimRef": {"namespace": args.namespace, "name": name, "uid": uid},
                }
            }))
            .expect("a PersistentVolume");
            if volumes
                .create(&PostParams::default(), &volume)
                .await
                .is_ok()
            {
                filled.insert(uid);
                eprintln!(
                    "kwok-snapshot-standin: claim {}/{name} filled from {}",
                    args.namespace, source.name
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
