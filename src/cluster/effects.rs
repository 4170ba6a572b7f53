//! Carrying out the state machine's actions. Each is idempotent: run twice (after a crash, or
//! a stale read), it finds its earlier work and changes nothing more.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use serde_json::json;
use tracing::info;

use super::configuration;
use super::interpret::Snapshot;
use super::lock::{LOCKED_BY, LOCKED_BY_UID};
use super::objects;
use super::owned::{self, JobStep, owned_metadata};
use super::snapshot;
use super::target::{Owner, Target};
use crate::hub::HubLayout;
use crate::machine::{Action, BackupMethod, Progress};

/// Why an action could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    #[error("{action} on {object}: {}", said(source))]
    Kube {
        action: &'static str,
        object: String,
        source: kube::Error,
    },
    #[error("{action}: {problem}")]
    Impossible {
        action: &'static str,
        problem: String,
    },
}

/// What the API server said, in its own words (`kube::Error`'s Display of a refusal is a debug
/// dump of the whole Status, which reads badly in an Event).
fn said(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) => {
            format!("{} ({} {})", status.message, status.code, status.reason)
        }
        other => other.to_string(),
    }
}

impl EffectError {
    /// A write refused because the object changed since it was read: retry after a fresh read.
    pub fn is_conflict(&self) -> bool {
        matches!(self, EffectError::Kube { source: kube::Error::Api(s), .. } if s.code == 409)
    }
}

/// Everything an action may need: the resolved upgrade, its recorded progress and what this
/// reconcile read.
pub struct EffectInputs<'a> {
    pub client: &'a Client,
    pub target: &'a Target,
    pub progress: &'a Progress,
    pub snapshot: &'a Snapshot,
}

impl<'a> EffectInputs<'a> {
    fn deployment(&self) -> Option<&'a Deployment> {
        self.snapshot.deployment.as_ref()
    }

    fn layout(&self) -> Option<&'a HubLayout> {
        self.snapshot.layout.as_ref().and_then(|l| l.as_ref().ok())
    }
}

/// Carries out `action`. Returns the resourceVersion its write left when it wrote one object
/// whose copy the operator watches (the hub Deployment patched, a Job created): a copy at that
/// version or later shows the write ([`super::cache::Cache::wrote_at`]). `None` when it wrote
/// nothing watched, several objects or a deletion, or found the object made already.
pub async fn carry_out(
    action: &Action,
    inputs: &EffectInputs<'_>,
) -> Result<Option<String>, EffectError> {
    let target = inputs.target;
    let namespace = target.owner.namespace.as_str();
    let client = inputs.client.clone();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let hub_name = target.hub.clone();
    let kube_error = |action: &'static str, object: String| {
        move |source| EffectError::Kube {
            action,
            object,
            source,
        }
    };
    match action {
        Action::Wait => Ok(None),
        Action::AcquireLock => {
            let deployment = need(
                inputs.deployment(),
                "acquire the hub lock",
                "the hub Deployment is gone",
            )?;
            // The resourceVersion makes this a compare-and-swap: two upgrades racing for the lock
            // cannot both win.
            let patch = json!({"metadata": {
                "resourceVersion": deployment.resource_version(),
                "annotations": {
                    LOCKED_BY: target.owner.name,
                    LOCKED_BY_UID: target.owner.uid,
                }
            }});
            deployments
                .patch(&hub_name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map(|hub| hub.metadata.resource_version)
                .map_err(kube_error("acquire the hub lock", hub_name.clone()))
        }
        Action::ReleaseLock => release_lock(&client, &target.owner, &target.hub).await,
        Action::ScaleHub { replicas } => {
            let patch = json!({"spec": {"replicas": replicas}});
            deployments
                .patch(&hub_name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map(|hub| hub.metadata.resource_version)
                .map_err(kube_error("scale the hub", hub_name.clone()))
        }
        Action::SetHubImage { image } => {
            let layout = need(
                inputs.layout(),
                "set the hub image",
                "the hub container is unknown",
            )?;
            let patch = json!({"spec": {"template": {"spec": {"containers": [
                {"name": layout.container, "image": image}
            ]}}}});
            deployments
                .patch(&hub_name, &patch_params(), &Patch::Strategic(&patch))
                .await
                .map(|hub| hub.metadata.resource_version)
                .map_err(kube_error("set the hub image", hub_name.clone()))
        }
        Action::DeleteHubPods => {
            let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
            let now = DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            };
            for pod in &inputs.snapshot.hub_pods {
                let name = pod.name_any();
                match pods.delete(&name, &now).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(source) => {
                        return Err(EffectError::Kube {
                            action: "stop a hub pod that came back",
                            object: name,
                            source,
                        });
                    }
                }
            }
            Ok(None)
        }
        Action::BackUpConfig => {
            back_up_config(inputs).await?;
            prepare_dump_claim(inputs).await;
            Ok(None)
        }
        Action::StartRehearsal => {
            let job_inputs = job_inputs(inputs, "start the rehearsal")?;
            let job = objects::rehearsal_job(&job_inputs, inputs.snapshot.hub_node()).ok_or_else(
                || EffectError::Impossible {
                    action: "start the rehearsal",
                    problem: "a server database is not copied while the hub uses it".into(),
                },
            )?;
            create_job(&client, namespace, job).await
        }
        Action::StartBackup => {
            let job_inputs = job_inputs(inputs, "start the backup")?;
            if let (BackupMethod::VolumeSnapshot, Some(file)) =
                (target.backup_method, job_inputs.layout.sqlite())
            {
                let name = owned::owned_name(&target.owner, "db");
                let class = target.volume_snapshot_class.as_deref();
                return snapshot::create_snapshot(
                    &client,
                    namespace,
                    &file.volume_claim,
                    &name,
                    class,
                )
                .await
                .map(|()| None)
                .map_err(|e| EffectError::Impossible {
                    action: "snapshot the hub's volume",
                    problem: e.to_string(),
                });
            }
            if let (BackupMethod::Dump, Some(server), None) = (
                target.backup_method,
                job_inputs.layout.server(),
                target.dump_claim.as_ref(),
            ) {
                make_dump_claim(&client, target, server).await?;
            }
            create_job(&client, namespace, objects::backup_job(&job_inputs)).await
        }
        Action::StartMigration => {
            let job_inputs = job_inputs(inputs, "start the migration")?;
            create_job(&client, namespace, objects::migration_job(&job_inputs)).await
        }
        Action::CancelMigration => {
            let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
            let name = owned::owned_name(&target.owner, JobStep::Migration.as_str());
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..Default::default()
            };
            match jobs.delete(&name, &params).await {
                Ok(_) => Ok(None),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
                Err(source) => Err(EffectError::Kube {
                    action: "stop the migration",
                    object: name,
                    source,
                }),
            }
        }
        Action::StartRestore => {
            let job_inputs = job_inputs(inputs, "start the restore")?;
            let backup = need(
                inputs.progress.backup.as_ref(),
                "start the restore",
                "no backup is recorded",
            )?;
            if let (BackupMethod::VolumeSnapshot, Some(file)) =
                (backup.method, job_inputs.layout.sqlite())
            {
                // Every pod that mounts the claim holds it, finished or not (Kubernetes' PVC
                // protection): this upgrade's Job pods go first (their Jobs, and what the
                // status says of them, stay). The hub is stopped: the claim is then released
                // within seconds.
                delete_job_pods(&client, &target.owner).await?;
                let release = std::time::Duration::from_secs(60);
                return snapshot::restore_claim(
                    &client,
                    namespace,
                    &file.volume_claim,
                    &backup.reference,
                    release,
                )
                .await
                .map(|()| None)
                .map_err(|e| EffectError::Impossible {
                    action: "restore the hub's volume from its snapshot",
                    problem: e.to_string(),
                });
            }
            // A file is checked against its checksum before it replaces anything; a server
            // clone is checked against its original's row counts when it was made.
            let checksum = match (job_inputs.layout.sqlite(), backup.method) {
                (Some(_), _) | (None, BackupMethod::Dump) => Some(need(
                    backup.checksum.as_deref(),
                    "start the restore",
                    "the backup has no checksum",
                )?),
                (None, _) => None,
            };
            let job = objects::restore_job(&job_inputs, &backup.reference, checksum);
            create_job(&client, namespace, job).await
        }
        Action::StartFreshDatabase => {
            let job_inputs = job_inputs(inputs, "move the failed database aside")?;
            let job = objects::fresh_database_job(&job_inputs).ok_or_else(|| {
                EffectError::Impossible {
                    action: "move the failed database aside",
                    problem: "migration.onFailure FreshDatabase is for SQLite databases".into(),
                }
            })?;
            create_job(&client, namespace, job).await
        }
        Action::StopServers { servers } => stop_servers(inputs, servers).await.map(|()| None),
    }
}

/// Asks the hub's API to stop each of `servers`; every one is asked even when one fails.
async fn stop_servers(inputs: &EffectInputs<'_>, servers: &[String]) -> Result<(), EffectError> {
    const ACTION: &str = "stop users' servers through the hub's API";
    let impossible = |problem: String| EffectError::Impossible {
        action: ACTION,
        problem,
    };
    let root = inputs
        .snapshot
        .hub_api_root
        .clone()
        .ok_or_else(|| impossible("no hub pod is Ready".into()))?;
    let namespace = &inputs.target.owner.namespace;
    let key = inputs
        .target
        .drain_token
        .as_ref()
        .ok_or_else(|| impossible("spec.drain.tokenSecret is not set".into()))?;
    let token = super::hub_api::secret_value(inputs.client, namespace, key)
        .await
        .map_err(|source| EffectError::Kube {
            action: ACTION,
            object: format!("Secret {}", key.name),
            source,
        })?
        .ok_or_else(|| impossible(super::hub_api::missing_token(namespace, key)))?;
    let api = crate::hub::api::HubApi::new(root, Some(token));
    let mut failed = Vec::new();
    for server in servers {
        if let Err(why) = api.stop_server(server).await {
            failed.push(format!("{server}: {why}"));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(impossible(failed.join("; ")))
    }
}

/// Removes the lock annotations from the Deployment `hub` if (and only if) they name `owner`.
/// Returns the resourceVersion the removal left, `None` when there was nothing to remove.
pub async fn release_lock(
    client: &Client,
    owner: &Owner,
    hub: &str,
) -> Result<Option<String>, EffectError> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &owner.namespace);
    let deployment = deployments
        .get_opt(hub)
        .await
        .map_err(|source| EffectError::Kube {
            action: "release the hub lock",
            object: hub.to_string(),
            source,
        })?;
    let Some(deployment) = deployment else {
        return Ok(None);
    };
    let holds = super::lock::holder(&deployment.metadata).is_some_and(|(_, uid)| uid == owner.uid);
    if !holds {
        return Ok(None);
    }
    let patch = json!({"metadata": {
        "resourceVersion": deployment.resource_version(),
        "annotations": {LOCKED_BY: null, LOCKED_BY_UID: null}
    }});
    deployments
        .patch(hub, &patch_params(), &Patch::Merge(&patch))
        .await
        .map(|hub| hub.metadata.resource_version)
        .map_err(|source| EffectError::Kube {
            action: "release the hub lock",
            object: hub.to_string(),
            source,
        })
}

/// Every write names hubgrade as its field manager, so the Deployment's managed fields tell
/// hubgrade's writes from others' (who scaled the hub back up).
fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(super::MANAGER.to_string()),
        ..Default::default()
    }
}

/// Deletes the Jobs of `owner` that were made without an owner reference while it was being
/// deleted (see `objects::owned_metadata`): only roll back Jobs are made then.
pub async fn delete_unowned(client: &Client, owner: &Owner) -> Result<(), EffectError> {
    let selector = format!("{}={}", owned::UPGRADE_UID_LABEL, owner.uid);
    let kube_error = |object: String| {
        move |source| EffectError::Kube {
            action: "delete the Jobs of a deleted upgrade",
            object,
            source,
        }
    };
    let jobs: Api<Job> = Api::namespaced(client.clone(), &owner.namespace);
    let listed = jobs
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(kube_error(selector.clone()))?;
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    for job in listed.items {
        let name = job.name_any();
        match jobs.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => return Err(kube_error(name)(source)),
        }
    }
    Ok(())
}

/// With the configuration, before the hub stops: makes the claim a dump goes to, if the
/// operator makes one (`backup.method: Dump`, no `dumpClaim`). The cluster then knows the claim,
/// usually bound, by the time the backup's pod comes: a pod created in the same instant as its
/// claim can meet a scheduler that has not seen the claim yet, and on the real node one such pod
/// was left unscheduled for five minutes with the hub down. Not made now (the server did not
/// answer, say): the backup makes it, and says why it cannot.
async fn prepare_dump_claim(inputs: &EffectInputs<'_>) {
    let target = inputs.target;
    if target.backup_method != BackupMethod::Dump || target.dump_claim.is_some() {
        return;
    }
    let Some(server) = inputs.layout().and_then(HubLayout::server) else {
        return;
    };
    match make_dump_claim(inputs.client, target, server).await {
        Ok(()) => info!(claim = %target.dump_claim(), "made the claim for the dump"),
        Err(error) => info!(
            claim = %target.dump_claim(),
            %error,
            "the claim for the dump is left to the backup"
        ),
    }
}

/// Makes the claim a dump goes to (`hubgrade-<uid>-dump`), owned by the upgrade: twice the
/// database's size (read from the server now, most often while the hub still runs), at least
/// 1Gi, in the default StorageClass. Already made (a repeated action): nothing changes.
async fn make_dump_claim(
    client: &Client,
    target: &Target,
    server: &crate::hub::ServerDatabase,
) -> Result<(), EffectError> {
    const ACTION: &str = "make the claim for the dump";
    let namespace = target.owner.namespace.as_str();
    let claims: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), namespace);
    let name = target.dump_claim();
    let kube_error = |source| EffectError::Kube {
        action: ACTION,
        object: name.clone(),
        source,
    };
    if claims.get_opt(&name).await.map_err(kube_error)?.is_some() {
        return Ok(());
    }
    let impossible = |problem: String| EffectError::Impossible {
        action: ACTION,
        problem,
    };
    let url = match super::observe::server_url(client, namespace, server)
        .await
        .map_err(kube_error)?
    {
        None => return Err(impossible("the database URL's Secret is gone".into())),
        Some(Err(problem)) => return Err(impossible(problem)),
        Some(Ok(url)) => url,
    };
    let size = crate::db::server::size(&url)
        .await
        .map_err(|e| impossible(e.to_string()))?;
    const GIB: u64 = 1 << 30;
    let bytes = (2 * size).max(GIB);
    let claim: k8s_openapi::api::core::v1::PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": owned_metadata(&target.owner, "dump"),
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": format!("{}Mi", bytes.div_ceil(1 << 20))}},
        }
    }))
    .map_err(|e| impossible(e.to_string()))?;
    match claims.create(&created(), &claim).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(kube_error(source)),
    }
}

/// Deletes the pods of `owner`'s Jobs (a finished Job makes no new ones).
async fn delete_job_pods(client: &Client, owner: &Owner) -> Result<(), EffectError> {
    let selector = format!("{}={}", owned::UPGRADE_UID_LABEL, owner.uid);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &owner.namespace);
    let listed = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|source| EffectError::Kube {
            action: "list the Job pods that hold the hub's claim",
            object: selector.clone(),
            source,
        })?;
    for pod in listed.items {
        let name = pod.name_any();
        match pods.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(EffectError::Kube {
                    action: "delete a Job pod that holds the hub's claim",
                    object: name,
                    source,
                });
            }
        }
    }
    Ok(())
}

fn need<'a, T: ?Sized>(
    value: Option<&'a T>,
    action: &'static str,
    problem: &str,
) -> Result<&'a T, EffectError> {
    value.ok_or_else(|| EffectError::Impossible {
        action,
        problem: problem.to_string(),
    })
}

fn job_inputs<'a>(
    inputs: &EffectInputs<'a>,
    action: &'static str,
) -> Result<objects::JobInputs<'a>, EffectError> {
    Ok(objects::JobInputs {
        target: inputs.target,
        hub: need(inputs.deployment(), action, "the hub Deployment is gone")?,
        layout: need(inputs.layout(), action, "the hub's layout is unknown")?,
    })
}

/// Creates as hubgrade's field manager, like every other write.
fn created() -> PostParams {
    PostParams {
        field_manager: Some(super::MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// Creates `job`; returns its resourceVersion, `None` when an earlier attempt made it.
async fn create_job(
    client: &Client,
    namespace: &str,
    job: Job,
) -> Result<Option<String>, EffectError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let name = job.name_any();
    match jobs.create(&created(), &job).await {
        Ok(job) => Ok(job.metadata.resource_version),
        // Made by an earlier attempt that crashed before recording it: that Job is the one.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
        Err(source) => Err(EffectError::Kube {
            action: "create Job",
            object: name,
            source,
        }),
    }
}

/// Copies the hub's configuration (what and why: [`configuration`]) into one Secret owned by
/// the upgrade: a Secret, because z2jh's values.yaml holds passwords.
async fn back_up_config(inputs: &EffectInputs<'_>) -> Result<(), EffectError> {
    let layout = need(
        inputs.layout(),
        "back up the configuration",
        "the hub's layout is unknown",
    )?;
    let namespace = inputs.target.owner.namespace.as_str();
    let secrets: Api<Secret> = Api::namespaced(inputs.client.clone(), namespace);
    let configuration = configuration::read(inputs.client, namespace, layout)
        .await
        .map_err(|(object, source)| EffectError::Kube {
            action: "back up the configuration",
            object,
            source,
        })?;
    let mut metadata = owned_metadata(&inputs.target.owner, "config");
    let sources = configuration
        .sources
        .iter()
        .map(|(object, _)| object.as_str())
        .collect::<Vec<_>>()
        .join(",");
    metadata.annotations = Some(BTreeMap::from([(
        "hubgrade.io/copied-from".to_string(),
        sources,
    )]));
    let backup = Secret {
        metadata,
        data: Some(configuration.data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    match secrets.create(&created(), &backup).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(EffectError::Kube {
            action: "back up the configuration",
            object: backup.name_any(),
            source,
        }),
    }
}

/// Each action against a mocked API server: the exact request it makes.
#[cfg(test)]
mod tests;
