//! Carrying out the state machine's actions. Each is idempotent: run twice (after a crash, or
//! a stale read), it finds its earlier work and changes nothing more.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::interpret::Snapshot;
use super::lock::{LOCKED_BY, LOCKED_BY_UID};
use super::objects::{self, owned_metadata};
use super::target::{Owner, Target};
use crate::hub::HubLayout;
use crate::machine::{Action, Progress};

/// Why an action could not be carried out.
#[derive(Debug, thiserror::Error)]
pub enum EffectError {
    #[error("{action} on {object}: {source}")]
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

pub async fn carry_out(action: &Action, inputs: &EffectInputs<'_>) -> Result<(), EffectError> {
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
        Action::Wait => Ok(()),
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
                .map(drop)
                .map_err(kube_error("acquire the hub lock", hub_name.clone()))
        }
        Action::ReleaseLock => release_lock(&client, &target.owner, &target.hub).await,
        Action::ScaleHub { replicas } => {
            let patch = json!({"spec": {"replicas": replicas}});
            deployments
                .patch(&hub_name, &patch_params(), &Patch::Merge(&patch))
                .await
                .map(drop)
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
                .map(drop)
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
            Ok(())
        }
        Action::BackUpConfig => back_up_config(inputs).await,
        Action::StartRehearsal => {
            let job_inputs = job_inputs(inputs, "start the rehearsal")?;
            let job = objects::rehearsal_job(&job_inputs, inputs.snapshot.hub_node());
            create_job(&client, namespace, job).await
        }
        Action::StartBackup => {
            let job_inputs = job_inputs(inputs, "start the backup")?;
            create_job(&client, namespace, objects::backup_job(&job_inputs)).await
        }
        Action::StartMigration => {
            let job_inputs = job_inputs(inputs, "start the migration")?;
            create_job(&client, namespace, objects::migration_job(&job_inputs)).await
        }
        Action::CancelMigration => {
            let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
            let name = objects::owned_name(&target.owner, objects::JobStep::Migration.as_str());
            let params = DeleteParams {
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..Default::default()
            };
            match jobs.delete(&name, &params).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
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
            let checksum = need(
                backup.checksum.as_deref(),
                "start the restore",
                "the backup has no checksum",
            )?;
            let job = objects::restore_job(&job_inputs, &backup.reference, checksum);
            create_job(&client, namespace, job).await
        }
        Action::StopServers => Err(EffectError::Impossible {
            action: "stop users' servers",
            problem: "stopping servers through the hub's API is not supported by this version"
                .into(),
        }),
    }
}

/// Removes the lock annotations from the Deployment `hub` if (and only if) they name `owner`.
pub async fn release_lock(client: &Client, owner: &Owner, hub: &str) -> Result<(), EffectError> {
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
        return Ok(());
    };
    let holds = super::lock::holder(&deployment).is_some_and(|(_, uid)| uid == owner.uid);
    if !holds {
        return Ok(());
    }
    let patch = json!({"metadata": {
        "resourceVersion": deployment.resource_version(),
        "annotations": {LOCKED_BY: null, LOCKED_BY_UID: null}
    }});
    deployments
        .patch(hub, &patch_params(), &Patch::Merge(&patch))
        .await
        .map(drop)
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
    let selector = format!("{}={}", objects::UPGRADE_UID_LABEL, owner.uid);
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

async fn create_job(client: &Client, namespace: &str, job: Job) -> Result<(), EffectError> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let name = job.name_any();
    match jobs.create(&PostParams::default(), &job).await {
        Ok(_) => Ok(()),
        // Made by an earlier attempt that crashed before recording it: that Job is the one.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(EffectError::Kube {
            action: "create Job",
            object: name,
            source,
        }),
    }
}

/// Copies every key of the hub's ConfigMaps and Secrets (jupyterhub_config.py, values.yaml, ...)
/// into one Secret owned by the upgrade: Secret, because z2jh's values.yaml holds passwords.
async fn back_up_config(inputs: &EffectInputs<'_>) -> Result<(), EffectError> {
    let layout = need(
        inputs.layout(),
        "back up the configuration",
        "the hub's layout is unknown",
    )?;
    let namespace = inputs.target.owner.namespace.as_str();
    let maps: Api<ConfigMap> = Api::namespaced(inputs.client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(inputs.client.clone(), namespace);
    let read_error = |object: String| {
        move |source| EffectError::Kube {
            action: "back up the configuration",
            object,
            source,
        }
    };
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    for name in &layout.config_maps {
        if let Some(map) = maps
            .get_opt(name)
            .await
            .map_err(read_error(format!("ConfigMap {name}")))?
        {
            for (key, value) in map.data.unwrap_or_default() {
                data.insert(
                    format!("configmap.{name}.{key}"),
                    ByteString(value.into_bytes()),
                );
            }
            for (key, value) in map.binary_data.unwrap_or_default() {
                data.insert(format!("configmap.{name}.{key}"), value);
            }
        }
    }
    for name in &layout.secrets {
        if let Some(secret) = secrets
            .get_opt(name)
            .await
            .map_err(read_error(format!("Secret {name}")))?
        {
            for (key, value) in secret.data.unwrap_or_default() {
                data.insert(format!("secret.{name}.{key}"), value);
            }
        }
    }
    let mut metadata = owned_metadata(&inputs.target.owner, "config");
    let sources = layout
        .config_maps
        .iter()
        .map(|n| format!("ConfigMap/{n}"))
        .chain(layout.secrets.iter().map(|n| format!("Secret/{n}")))
        .collect::<Vec<_>>()
        .join(",");
    metadata.annotations = Some(BTreeMap::from([(
        "hubgrade.io/copied-from".to_string(),
        sources,
    )]));
    let backup = Secret {
        metadata,
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &backup).await {
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
mod tests {
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
            carry_out(&action, &inputs).await
        })
        .await
    }

    /// `action` on the hub as `hub()` has it, with nothing recorded yet.
    async fn act(action: Action, exchanges: Vec<Exchange>) -> Result<(), EffectError> {
        act_with(action, snapshot_of(hub()), Progress::default(), exchanges).await
    }

    fn pod(name: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "jhub"}}))
            .expect("a pod")
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
        let create = Exchange::post(JOBS_PATH).fail(403, "Forbidden");
        let result = act(Action::StartBackup, vec![create]).await;
        let error = result.expect_err("refused");
        assert!(!error.is_conflict());
        assert!(
            error.to_string().contains("hubgrade-0f1e2d3c-backup"),
            "{error}"
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
            }),
            ..Progress::default()
        };
        let create = Exchange::post(JOBS_PATH)
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
            Exchange::post("/api/v1/namespaces/jhub/secrets").body_contains(json!({
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
}
