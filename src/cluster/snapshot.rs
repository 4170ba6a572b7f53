//! CSI VolumeSnapshot backups of the hub's volume (`snapshot.storage.k8s.io/v1`).
//!
//! Backup: a VolumeSnapshot of the (stopped) hub's claim, waited on until `readyToUse`; its
//! `status.error` is reported as it appears. Restore: the claim is deleted and made again under
//! the same name, with the same labels and annotations (Helm's ownership metadata included),
//! from the snapshot (`dataSource`), while the hub is stopped. Both wait by watching the object
//! (`kube::runtime::wait::await_condition`) under a deadline.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, TypedLocalObjectReference,
};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::runtime::wait::{self, await_condition, conditions};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::machine::{BackupMethod, BackupRecord};

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{what} {namespace}/{name}: {source}")]
    Kube {
        what: &'static str,
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("watching {what} {namespace}/{name}: {source}")]
    Watch {
        what: &'static str,
        namespace: String,
        name: String,
        source: wait::Error,
    },
    #[error("the VolumeSnapshot {namespace}/{name} failed: {message}")]
    Failed {
        namespace: String,
        name: String,
        message: String,
    },
    #[error("the VolumeSnapshot {namespace}/{name} was not ready within {seconds}s")]
    TimedOut {
        namespace: String,
        name: String,
        seconds: u64,
    },
    #[error("the PersistentVolumeClaim {namespace}/{name} does not exist")]
    MissingClaim { namespace: String, name: String },
    #[error("the VolumeSnapshot {namespace}/{name} does not exist or is not ready to use")]
    NotReady { namespace: String, name: String },
}

type Result<T> = std::result::Result<T, SnapshotError>;

fn snapshots(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("snapshot.storage.k8s.io", "v1", "VolumeSnapshot");
    Api::namespaced_with(
        client.clone(),
        namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "volumesnapshots"),
    )
}

/// Annotations Kubernetes sets on a claim while binding it; a new claim must not inherit them.
const BINDING_ANNOTATIONS: [&str; 5] = [
    "pv.kubernetes.io/bind-completed",
    "pv.kubernetes.io/bound-by-controller",
    "volume.beta.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/storage-provisioner",
    "volume.kubernetes.io/selected-node",
];

/// The annotation on a VolumeSnapshot made by hubgrade holding the claim it was taken of (its
/// metadata and spec, as a restore makes it again), so that a restore interrupted after
/// deleting the claim can still make it.
pub const CLAIM_ANNOTATION: &str = "hubgrade.io/claim";

/// Snapshots `claim` as `snapshot` (reusing one made by an earlier attempt) and waits until
/// the snapshot is ready to use.
pub async fn snapshot_claim(
    client: &Client,
    namespace: &str,
    claim: &str,
    snapshot: &str,
    class: Option<&str>,
    timeout: Duration,
) -> Result<BackupRecord> {
    let api = snapshots(client, namespace);
    create_snapshot(client, namespace, claim, snapshot, class).await?;
    let settled =
        |s: Option<&DynamicObject>| s.is_some_and(|s| !matches!(snapshot_state(s), Ok(None)));
    let current = match tokio::time::timeout(timeout, await_condition(api, snapshot, settled)).await
    {
        Err(_) => {
            return Err(SnapshotError::TimedOut {
                namespace: namespace.into(),
                name: snapshot.into(),
                seconds: timeout.as_secs(),
            });
        }
        Ok(Err(source)) => {
            return Err(SnapshotError::Watch {
                what: "the VolumeSnapshot",
                namespace: namespace.into(),
                name: snapshot.into(),
                source,
            });
        }
        Ok(Ok(current)) => current,
    };
    let not_ready = || SnapshotError::NotReady {
        namespace: namespace.into(),
        name: snapshot.into(),
    };
    // The condition holds only for an existing, settled snapshot.
    match current.as_ref().map(snapshot_state) {
        Some(Ok(Some(record))) => Ok(record),
        Some(Err(message)) => Err(SnapshotError::Failed {
            namespace: namespace.into(),
            name: snapshot.into(),
            message,
        }),
        _ => Err(not_ready()),
    }
}

/// Makes the VolumeSnapshot `snapshot` of `claim` (nothing if an earlier attempt made it),
/// without waiting for it; the claim's replacement is kept in its [`CLAIM_ANNOTATION`].
pub async fn create_snapshot(
    client: &Client,
    namespace: &str,
    claim: &str,
    snapshot: &str,
    class: Option<&str>,
) -> Result<()> {
    let kube_error = |what, name: &str| kube_error(what, namespace, name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let Some(old) = claims
        .get_opt(claim)
        .await
        .map_err(kube_error("reading the claim", claim))?
    else {
        return Err(SnapshotError::MissingClaim {
            namespace: namespace.into(),
            name: claim.into(),
        });
    };
    let replacement = replacement_claim(&old, namespace, claim, snapshot);
    let api = snapshots(client, namespace);
    let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {
            "name": snapshot,
            "labels": {"app.kubernetes.io/managed-by": "hubgrade"},
            "annotations": {
                CLAIM_ANNOTATION: serde_json::to_string(&replacement).unwrap_or_default()
            },
        },
        "spec": spec,
    }))
    .map_err(|e| SnapshotError::Failed {
        namespace: namespace.into(),
        name: snapshot.into(),
        message: e.to_string(),
    })?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(kube_error("creating the VolumeSnapshot", snapshot)(source)),
    }
}

/// Reads the VolumeSnapshot `snapshot`; `None` when it does not exist.
pub async fn get_snapshot(
    client: &Client,
    namespace: &str,
    snapshot: &str,
) -> std::result::Result<Option<DynamicObject>, kube::Error> {
    snapshots(client, namespace).get_opt(snapshot).await
}

/// Where a VolumeSnapshot is (pure): `Err(message)` once it failed, `Ok(None)` while it is
/// not ready, `Ok(Some(record))` once it is ready to use.
pub fn snapshot_state(
    snapshot: &DynamicObject,
) -> std::result::Result<Option<BackupRecord>, String> {
    if let Some(message) = snapshot
        .data
        .pointer("/status/error/message")
        .and_then(Value::as_str)
    {
        return Err(message.to_string());
    }
    if snapshot.data.pointer("/status/readyToUse") != Some(&json!(true)) {
        return Ok(None);
    }
    let size = snapshot
        .data
        .pointer("/status/restoreSize")
        .and_then(Value::as_str)
        .map(quantity_bytes)
        .unwrap_or(0);
    Ok(Some(BackupRecord {
        method: BackupMethod::VolumeSnapshot,
        reference: snapshot.name_any(),
        size_bytes: Some(size),
        checksum: None,
        verified: true,
        pruned: Vec::new(),
    }))
}

/// The claim made from `snapshot` in place of `old`: same name, labels, annotations (but the
/// binding ones) and owners; the snapshot as its data source.
fn replacement_claim(
    old: &PersistentVolumeClaim,
    namespace: &str,
    claim: &str,
    snapshot: &str,
) -> PersistentVolumeClaim {
    let mut annotations: BTreeMap<String, String> = old.annotations().clone();
    for key in BINDING_ANNOTATIONS {
        annotations.remove(key);
    }
    let spec = old.spec.clone().unwrap_or_default();
    PersistentVolumeClaim {
        metadata: kube::api::ObjectMeta {
            name: Some(claim.to_string()),
            namespace: Some(namespace.to_string()),
            labels: old.metadata.labels.clone(),
            annotations: Some(annotations),
            owner_references: old.metadata.owner_references.clone(),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: spec.access_modes,
            resources: spec.resources,
            storage_class_name: spec.storage_class_name,
            volume_mode: spec.volume_mode,
            selector: None,
            volume_name: None,
            data_source: Some(TypedLocalObjectReference {
                api_group: Some("snapshot.storage.k8s.io".into()),
                kind: "VolumeSnapshot".into(),
                name: snapshot.to_string(),
            }),
            data_source_ref: None,
            volume_attributes_class_name: spec.volume_attributes_class_name,
        }),
        status: None,
    }
}

/// Why VolumeSnapshots cannot be made in `namespace`, if they cannot: the cluster does not
/// serve the API (no external-snapshotter CRDs) or the operator may not use it.
pub async fn api_problem(client: &Client, namespace: &str) -> Option<String> {
    let listed = snapshots(client, namespace)
        .list(&kube::api::ListParams::default().limit(1))
        .await;
    match listed {
        Ok(_) => None,
        Err(kube::Error::Api(s)) if s.code == 404 => Some(
            "backup.method VolumeSnapshot: this cluster does not serve snapshot.storage.k8s.io/v1 \
             VolumeSnapshots (install the external-snapshotter's CRDs and controller and a CSI \
             driver that takes snapshots), or use backup.method File"
                .into(),
        ),
        Err(kube::Error::Api(s)) if s.code == 403 => Some(format!(
            "backup.method VolumeSnapshot: the operator may not list VolumeSnapshots in {namespace} \
             ({}); the chart grants it with volumeSnapshots.enabled=true",
            s.message
        )),
        Err(error) => Some(format!(
            "backup.method VolumeSnapshot: could not check the VolumeSnapshot API: {error}"
        )),
    }
}

/// Checks the snapshot exists and is ready to use.
pub async fn verify(client: &Client, namespace: &str, snapshot: &str) -> Result<()> {
    let api = snapshots(client, namespace);
    let found = api.get_opt(snapshot).await.map_err(kube_error(
        "reading the VolumeSnapshot",
        namespace,
        snapshot,
    ))?;
    let ready = found
        .and_then(|s| {
            s.data
                .pointer("/status/readyToUse")
                .and_then(|r| r.as_bool())
        })
        .unwrap_or(false);
    if !ready {
        return Err(SnapshotError::NotReady {
            namespace: namespace.into(),
            name: snapshot.into(),
        });
    }
    Ok(())
}

/// Replaces `claim` by a claim of the same name, labels and annotations made from `snapshot`.
/// The hub must be stopped: a claim in use is not released by Kubernetes. When the claim is
/// already gone (a restore interrupted after deleting it), the replacement kept on the
/// snapshot ([`CLAIM_ANNOTATION`]) is made.
pub async fn restore_claim(
    client: &Client,
    namespace: &str,
    claim: &str,
    snapshot: &str,
    timeout: Duration,
) -> Result<()> {
    verify(client, namespace, snapshot).await?;
    let kube_error = |what| kube_error(what, namespace, claim);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let old = claims
        .get_opt(claim)
        .await
        .map_err(kube_error("reading the claim"))?;
    let replacement = match &old {
        Some(old) if restored_from(old) == Some(snapshot) => return Ok(()),
        Some(old) => replacement_claim(old, namespace, claim, snapshot),
        None => kept_claim(client, namespace, claim, snapshot).await?,
    };
    if let Some(old) = old {
        claims
            .delete(claim, &DeleteParams::default())
            .await
            .map_err(kube_error("deleting the claim"))?;
        // Objects read from the API server always carry a uid.
        let uid = old.uid().unwrap_or_default();
        let gone = await_condition(claims.clone(), claim, conditions::is_deleted(&uid));
        match tokio::time::timeout(timeout, gone).await {
            Err(_) => {
                return Err(SnapshotError::Failed {
                    namespace: namespace.into(),
                    name: snapshot.into(),
                    message: format!(
                        "the old claim {claim} was not released within {}s (is the hub stopped?)",
                        timeout.as_secs()
                    ),
                });
            }
            Ok(Err(source)) => {
                return Err(SnapshotError::Watch {
                    what: "the claim",
                    namespace: namespace.into(),
                    name: claim.into(),
                    source,
                });
            }
            Ok(Ok(_)) => {}
        }
    }
    claims
        .create(&PostParams::default(), &replacement)
        .await
        .map_err(kube_error("creating the restored claim"))?;
    Ok(())
}

/// The VolumeSnapshot a claim was made from, if any.
pub fn restored_from(claim: &PersistentVolumeClaim) -> Option<&str> {
    claim
        .spec
        .as_ref()?
        .data_source
        .as_ref()
        .filter(|d| d.kind == "VolumeSnapshot")
        .map(|d| d.name.as_str())
}

/// The replacement claim kept on the snapshot when it was made.
async fn kept_claim(
    client: &Client,
    namespace: &str,
    claim: &str,
    snapshot: &str,
) -> Result<PersistentVolumeClaim> {
    let missing = || SnapshotError::MissingClaim {
        namespace: namespace.into(),
        name: claim.into(),
    };
    let found = snapshots(client, namespace)
        .get_opt(snapshot)
        .await
        .map_err(kube_error(
            "reading the VolumeSnapshot",
            namespace,
            snapshot,
        ))?
        .ok_or_else(missing)?;
    found
        .annotations()
        .get(CLAIM_ANNOTATION)
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or_else(missing)
}

/// Bytes in a Kubernetes quantity such as `1Gi`, `500M` or `1048576`.
/// Wraps a failed API call on `namespace/name` with what was being done.
fn kube_error(
    what: &'static str,
    namespace: &str,
    name: &str,
) -> impl FnOnce(kube::Error) -> SnapshotError + use<> {
    let (namespace, name) = (namespace.to_string(), name.to_string());
    move |source| SnapshotError::Kube {
        what,
        namespace,
        name,
        source,
    }
}

fn quantity_bytes(text: &str) -> u64 {
    let units: [(&str, u64); 8] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
    ];
    for (suffix, factor) in units {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<u64>().map(|n| n * factor).unwrap_or(0);
        }
    }
    text.parse().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn quantities_read_as_bytes() {
        assert_eq!(super::quantity_bytes("1Gi"), 1 << 30);
        assert_eq!(super::quantity_bytes("500M"), 500_000_000);
        assert_eq!(super::quantity_bytes("4096"), 4096);
    }
}
