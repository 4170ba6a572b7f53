//! `retry`: a HubUpgrade acts once, so running a Failed or RolledBack one again means deleting
//! it (its finalizer releases the hub lock) and creating it anew with the same name, spec,
//! labels and annotations.

use std::time::{Duration, Instant};

use clap::Args;
use kube::api::{DeleteParams, DynamicObject, ObjectMeta, PostParams, Preconditions};
use serde_json::json;

use super::exit::{EXIT_CODES, Exit, PluginError};
use super::output::ObjectFormat;
use super::wait::{ThenWait, Until};
use super::{PLUGIN_EXECUTABLE, Session};
use crate::api::{ABORT_ANNOTATION, HubUpgradeStatus};
use crate::machine::Phase;

/// How long the old object's finalizer may take; releasing the lock of an ended upgrade is
/// quick when the operator runs.
const DELETION_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES)]
pub struct RetryArgs {
    /// The HubUpgrade, Failed or RolledBack.
    pub name: String,
    /// Namespace (default: the kubeconfig context's, or in a pod its own).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub then: ThenWait,
}

pub async fn run(args: RetryArgs, program: &'static str) -> Result<Exit, PluginError> {
    let session = Session::connect(args.namespace, program).await?;
    let name = &args.name;
    let old = session
        .raw_upgrades()
        .get_opt(name)
        .await
        .map_err(|e| session.api_error(format!("reading HubUpgrade {name}"), e))?
        .ok_or_else(|| session.not_found(name))?;
    let status: HubUpgradeStatus = old
        .data
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok())
        .unwrap_or_default();
    let progress = &status.progress;
    match progress.phase {
        Phase::Failed | Phase::RolledBack => {}
        Phase::Succeeded => {
            return Err(PluginError::Refused(format!(
                "HubUpgrade {name} succeeded, so there is nothing to retry; a new upgrade is a new HubUpgrade (`{program} upgrade`)"
            )));
        }
        phase => {
            return Err(PluginError::Refused(format!(
                "HubUpgrade {name} is still running (phase {phase}); only a Failed or RolledBack upgrade can be retried: wait for it, or abort it first (`{program} abort {name}`)"
            )));
        }
    }

    // Said before the old object goes: the record of what happened leaves with it.
    println!(
        "HubUpgrade {name} ended {}: {}",
        progress.phase, progress.message
    );
    if let Some(failure) = progress
        .failure
        .as_ref()
        .filter(|f| **f != progress.message)
    {
        println!("  failure: {failure}");
    }
    if let Some(backup) = &progress.backup {
        println!(
            "  backup:  {} {} (kept; not deleted with the upgrade)",
            backup.method, backup.reference
        );
    }

    let old_uid = old.metadata.uid.clone().unwrap_or_default();
    let again = fresh_copy(&old);
    delete_and_wait(&session, name, &old_uid)
        .await
        .map_err(|e| with_manifest(e, &again))?;
    let created = session
        .raw_upgrades()
        .create(
            &PostParams {
                field_manager: Some(PLUGIN_EXECUTABLE.to_string()),
                ..PostParams::default()
            },
            &again,
        )
        .await
        .map_err(|e| {
            with_manifest(
                session.api_error(format!("creating HubUpgrade {name} again"), e),
                &again,
            )
        })?;
    println!(
        "HubUpgrade {name} created again (uid {}, was {old_uid})",
        created.metadata.uid.as_deref().unwrap_or("?")
    );
    args.then.follow(&session, name, Until::Succeeded).await
}

/// The same upgrade as a new object: name, spec, labels, annotations and owners; no status, no
/// server-set metadata, no finalizer (the operator adds its own), no abort request.
pub fn fresh_copy(old: &DynamicObject) -> DynamicObject {
    let mut annotations = old.metadata.annotations.clone().unwrap_or_default();
    annotations.remove(ABORT_ANNOTATION);
    let metadata = ObjectMeta {
        name: old.metadata.name.clone(),
        namespace: old.metadata.namespace.clone(),
        labels: old.metadata.labels.clone(),
        annotations: (!annotations.is_empty()).then_some(annotations),
        owner_references: old.metadata.owner_references.clone(),
        ..ObjectMeta::default()
    };
    DynamicObject {
        types: old.types.clone(),
        metadata,
        data: json!({"spec": old.data.get("spec").cloned().unwrap_or(json!({}))}),
    }
}

/// Deletes the upgrade `uid` (not a newer one of the same name) and waits until it is gone.
async fn delete_and_wait(session: &Session, name: &str, uid: &str) -> Result<(), PluginError> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match session.raw_upgrades().delete(name, &params).await {
        Ok(_) => {}
        Err(error) if super::exit::is_not_found(&error) => {}
        Err(error) => return Err(session.api_error(format!("deleting HubUpgrade {name}"), error)),
    }
    let start = Instant::now();
    loop {
        let current = session
            .raw_upgrades()
            .get_opt(name)
            .await
            .map_err(|e| session.api_error(format!("reading HubUpgrade {name}"), e))?;
        match current {
            None => return Ok(()),
            Some(other) if other.metadata.uid.as_deref() != Some(uid) => {
                return Err(PluginError::Refused(format!(
                    "HubUpgrade {name} was created again by someone else meanwhile (uid {}); not touching it",
                    other.metadata.uid.as_deref().unwrap_or("?")
                )));
            }
            Some(_) if start.elapsed() > DELETION_LIMIT => {
                return Err(PluginError::Refused(format!(
                    "HubUpgrade {name} is still being deleted after {}s: its finalizer has not run (is the operator running?)",
                    DELETION_LIMIT.as_secs()
                )));
            }
            Some(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// An error after the old object may be gone: the manifest to create it by hand goes with it,
/// so the upgrade's spec is never lost.
fn with_manifest(error: PluginError, again: &DynamicObject) -> PluginError {
    let manifest = ObjectFormat::Yaml.render(again).unwrap_or_default();
    eprintln!("# the HubUpgrade to create again (kubectl create -f -):\n{manifest}");
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_copy_keeps_spec_labels_and_annotations_but_not_what_the_server_or_an_abort_set() {
        let old: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
            "metadata": {
                "name": "hub-to-4-4-0", "namespace": "jhub", "uid": "u-1",
                "resourceVersion": "42", "generation": 1,
                "creationTimestamp": "2026-01-02T03:00:00Z",
                "finalizers": ["hubgrade.io/cleanup"],
                "labels": {"team": "data"},
                "annotations": {ABORT_ANNOTATION: "aborted by alice", "ticket": "OPS-1"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
            },
            "spec": {"hub": {"deployment": "hub"}, "targetImage": "k8s-hub:4.4.0",
                     "futureField": {"kept": true}},
            "status": {"phase": "RolledBack"},
        }))
        .expect("object");
        let copy = fresh_copy(&old);
        let value = serde_json::to_value(&copy).expect("json");
        assert_eq!(value["spec"], old.data["spec"]);
        assert_eq!(value["metadata"]["labels"], json!({"team": "data"}));
        assert_eq!(value["metadata"]["annotations"], json!({"ticket": "OPS-1"}));
        assert_eq!(value["kind"], "HubUpgrade");
        for gone in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "finalizers",
            "managedFields",
        ] {
            assert!(value["metadata"].get(gone).is_none(), "{gone} was copied");
        }
        assert!(value.get("status").is_none());
    }
}
