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
    let kube_error = |what, name: &str| kube_error(what, namespace, name);
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    if claims
        .get_opt(claim)
        .await
        .map_err(kube_error("reading the claim", claim))?
        .is_none()
    {
        return Err(SnapshotError::MissingClaim {
            namespace: namespace.into(),
            name: claim.into(),
        });
    }
    let api = snapshots(client, namespace);
    let mut spec = json!({"source": {"persistentVolumeClaimName": claim}});
    if let Some(class) = class {
        spec["volumeSnapshotClassName"] = json!(class);
    }
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshot",
        "metadata": {"name": snapshot, "labels": {"app.kubernetes.io/managed-by": "hubgrade"}},
        "spec": spec,
    }))
    .map_err(|e| SnapshotError::Failed {
        namespace: namespace.into(),
        name: snapshot.into(),
        message: e.to_string(),
    })?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(source) => return Err(kube_error("creating the VolumeSnapshot", snapshot)(source)),
    }
    let error_message = |s: &DynamicObject| {
        s.data
            .pointer("/status/error/message")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let ready = |s: &DynamicObject| s.data.pointer("/status/readyToUse") == Some(&json!(true));
    let settled =
        move |s: Option<&DynamicObject>| s.is_some_and(|s| error_message(s).is_some() || ready(s));
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
    // The condition holds only for an existing snapshot: None cannot come back.
    let Some(current) = current else {
        return Err(SnapshotError::NotReady {
            namespace: namespace.into(),
            name: snapshot.into(),
        });
    };
    if let Some(message) = error_message(&current) {
        return Err(SnapshotError::Failed {
            namespace: namespace.into(),
            name: snapshot.into(),
            message,
        });
    }
    let size = current
        .data
        .pointer("/status/restoreSize")
        .and_then(Value::as_str)
        .map(quantity_bytes)
        .unwrap_or(0);
    Ok(BackupRecord {
        method: BackupMethod::VolumeSnapshot,
        reference: snapshot.to_string(),
        size_bytes: Some(size),
        checksum: None,
        verified: true,
        pruned: Vec::new(),
    })
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
/// The hub must be stopped: a claim in use is not released by Kubernetes.
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
    let Some(old) = old else {
        return Err(SnapshotError::MissingClaim {
            namespace: namespace.into(),
            name: claim.into(),
        });
    };
    let already_restored = old
        .spec
        .as_ref()
        .and_then(|s| s.data_source.as_ref())
        .is_some_and(|d| d.name == snapshot);
    if !already_restored {
        let mut annotations: BTreeMap<String, String> = old.annotations().clone();
        for key in BINDING_ANNOTATIONS {
            annotations.remove(key);
        }
        let spec = old.spec.clone().unwrap_or_default();
        let replacement = PersistentVolumeClaim {
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
        };
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
        claims
            .create(&PostParams::default(), &replacement)
            .await
            .map_err(kube_error("creating the restored claim"))?;
    }
    Ok(())
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
