//! Builders of the objects the operator creates (pure): Jobs for backup, migration, restore
//! and rehearsal, and the configuration backup Secret. Every object is owned by its
//! HubUpgrade, named from the upgrade's uid, labelled with what it is, and runs under the
//! restricted Pod Security profile where the hub's own pod allows it. Names, labels and
//! owner references: `owned.rs`.

use jiff::SignedDuration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, LocalObjectReference,
    PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::owned::{BACKUP_DIR, JobStep, Owner, ROLE_LABEL, labels, owned_metadata, owned_name};
use super::target::Target;
use crate::agent::{AgentCommand, DATABASE_URL_ENV, ServerSource};
use crate::hub::{
    EXISTING_SECRET_MOUNT, HubDatabase, HubLayout, SqliteFile, UrlSource, VALUES_MOUNT,
};
use crate::machine::BackupMethod;

/// Where the SQLite backup of this upgrade goes, as the hub container sees the volume.
pub fn sqlite_backup_path(owner: &Owner, file: &SqliteFile) -> String {
    beside_database(owner, file, "db")
}

/// Where the rehearsal's scratch copy goes.
fn rehearsal_copy_path(owner: &Owner, file: &SqliteFile) -> String {
    beside_database(owner, file, "rehearsal")
}

/// Where a dump's claim is mounted in the backup and restore Jobs.
const DUMP_DIR: &str = "/hubgrade-dump";
const DUMP_VOLUME: &str = "hubgrade-dump";

/// This upgrade's dump file, as the Jobs see it.
fn dump_path(owner: &Owner) -> String {
    format!("{DUMP_DIR}/{}.dump", owned_name(owner, "db"))
}

/// `job` with the dump claim mounted at [`DUMP_DIR`] in its agent container.
fn with_dump_claim(mut job: Job, claim: &str) -> Job {
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: DUMP_VOLUME.into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.to_string(),
                read_only: None,
            }),
            ..Default::default()
        });
        for container in &mut pod.containers {
            container
                .volume_mounts
                .get_or_insert_with(Vec::new)
                .push(VolumeMount {
                    name: DUMP_VOLUME.into(),
                    mount_path: DUMP_DIR.into(),
                    ..Default::default()
                });
        }
    }
    job
}

/// The suffix of this upgrade's clone of a server database (`<database>_hubgrade_<uid>_db`).
pub fn server_clone_suffix(owner: &Owner) -> String {
    owned_name(owner, "db").replace('-', "_")
}

/// `<database folder>/hubgrade-backups/hubgrade-<uid>-<what>.sqlite`: on the database's own
/// volume, where the hub container and every Job see it at the same path.
fn beside_database(owner: &Owner, file: &SqliteFile, what: &str) -> String {
    let directory = file.path.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
    format!(
        "{directory}/{BACKUP_DIR}/{}.sqlite",
        owned_name(owner, what)
    )
}

/// The restricted Pod Security profile, without overriding what the hub's own settings say.
fn restricted(hub: Option<&SecurityContext>, pod: Option<&PodSecurityContext>) -> SecurityContext {
    let mut context = hub.cloned().unwrap_or_default();
    let runs_as_root = context.run_as_user == Some(0)
        || (context.run_as_user.is_none() && pod.and_then(|p| p.run_as_user) == Some(0));
    context.allow_privilege_escalation.get_or_insert(false);
    if context.privileged != Some(true) {
        context.capabilities.get_or_insert_with(|| Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Default::default()
        });
    }
    if !runs_as_root {
        context.run_as_non_root.get_or_insert(true);
    }
    context
        .seccomp_profile
        .get_or_insert_with(|| SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..Default::default()
        });
    context
}

/// The pod security context for agent pods: the hub pod's own (same user, group and fsGroup,
/// so files on the volume keep their owner). Nothing is forced on the volume: without an
/// fsGroup of the hub's, none is set (an fsGroup makes the kubelet change the group of every
/// file on the volume). Only the user falls back, when neither the hub pod nor its container
/// names one, to 1000: the user z2jh's hub image runs as (the agent image's own, 65532, could
/// not write the hub's files).
fn agent_pod_security(hub_pod: &PodSpec, hub_container: Option<&Container>) -> PodSecurityContext {
    let mut context = hub_pod.security_context.clone().unwrap_or_default();
    let container_user = hub_container
        .and_then(|c| c.security_context.as_ref())
        .and_then(|s| s.run_as_user);
    if context.run_as_user.is_none() && container_user.is_none() {
        context.run_as_user = Some(JUPYTERHUB_IMAGE_USER);
    }
    context
}

/// The user z2jh's hub image (`jovyan`) runs as.
const JUPYTERHUB_IMAGE_USER: i64 = 1000;

/// What an agent container asks for: it copies and checks an SQLite file page by page, so
/// little memory; the limit keeps a runaway copy from hurting the hub's node.
fn agent_resources() -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(
            [
                ("cpu".to_string(), Quantity("50m".into())),
                ("memory".to_string(), Quantity("64Mi".into())),
            ]
            .into(),
        ),
        limits: Some([("memory".to_string(), Quantity("512Mi".into()))].into()),
        ..Default::default()
    }
}

fn hub_pod(deployment: &Deployment) -> PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default()
}

fn job(owner: &Owner, step: JobStep, template: PodTemplateSpec, deadline: SignedDuration) -> Job {
    Job {
        metadata: owned_metadata(owner, step.as_str()),
        spec: Some(JobSpec {
            // One attempt: a failed step is a decision for the state machine, not a retry loop.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(deadline.as_secs().max(1)),
            ttl_seconds_after_finished: None,
            template,
            ..Default::default()
        }),
        status: None,
    }
}

/// What every Job builder needs: the resolved upgrade (owner, images, plan with its
/// timeouts) and the hub it acts on, as read.
pub struct JobInputs<'a> {
    pub target: &'a Target,
    pub hub: &'a Deployment,
    pub layout: &'a HubLayout,
}

/// The scratch folder of a Job running `jupyterhub upgrade-db` (an emptyDir): the pinned
/// configuration file goes there.
const RUN_VOLUME: &str = "hubgrade-run";
const RUN_DIR: &str = "/hubgrade-run";
const PINNED_CONFIG: &str = "/hubgrade-run/jupyterhub_config.py";

/// A container running `hubgrade agent <command>` with the hub's database volume mounted where
/// the hub mounts it (same claim, same `subPath`), as the hub's user, under the restricted
/// profile.
fn agent_container(name: &str, inputs: &JobInputs<'_>, command: &AgentCommand) -> Container {
    let pod = hub_pod(inputs.hub);
    let hub_container = pod
        .containers
        .iter()
        .find(|c| c.name == inputs.layout.container);
    let mut mounts: Vec<VolumeMount> = database_mounts(inputs.layout);
    mounts.push(VolumeMount {
        name: RUN_VOLUME.into(),
        mount_path: RUN_DIR.into(),
        ..Default::default()
    });
    // Temporary files (SQLite's, the MySQL client's options file) go to the Job's scratch
    // folder: the root is read-only.
    let mut env: Vec<EnvVar> = ["SQLITE_TMPDIR", "TMPDIR"]
        .into_iter()
        .map(|name| EnvVar {
            name: name.into(),
            value: Some(RUN_DIR.into()),
            ..Default::default()
        })
        .collect();
    if let HubDatabase::Server(server) = &inputs.layout.database
        && let UrlSource::Secret { name, key } = &server.url
    {
        // The URL, password included, from its Secret: never in the Job's spec.
        env.push(EnvVar {
            name: DATABASE_URL_ENV.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: name.clone(),
                    key: key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    Container {
        name: name.into(),
        image: Some(inputs.target.agent_image.clone()),
        command: Some(vec!["hubgrade".into(), "agent".into()]),
        args: Some(command.to_args()),
        volume_mounts: Some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        env: Some(env),
        resources: Some(agent_resources()),
        security_context: Some(SecurityContext {
            read_only_root_filesystem: Some(true),
            ..restricted(
                hub_container.and_then(|c| c.security_context.as_ref()),
                pod.security_context.as_ref(),
            )
        }),
        ..Default::default()
    }
}

/// The hub container's mount of the database volume, exactly as the hub has it; for a
/// server database whose URL is in the hub's chart values, the hub Secret (and the user's
/// `hub.existingSecret`), read-only, where z2jh mounts them.
fn database_mounts(layout: &HubLayout) -> Vec<VolumeMount> {
    let secret = |volume: &String, path: &str| VolumeMount {
        name: volume.clone(),
        mount_path: path.into(),
        read_only: Some(true),
        ..Default::default()
    };
    match &layout.database {
        HubDatabase::Sqlite(file) => vec![VolumeMount {
            name: file.volume_name.clone(),
            mount_path: file.mount_path.clone(),
            sub_path: file.sub_path.clone(),
            ..Default::default()
        }],
        HubDatabase::Server(server) => match &server.url {
            UrlSource::ChartValues {
                volume, existing, ..
            } => std::iter::once(secret(volume, VALUES_MOUNT))
                .chain(
                    existing
                        .iter()
                        .map(|(_, volume)| secret(volume, EXISTING_SECRET_MOUNT)),
                )
                .collect(),
            UrlSource::Secret { .. } => Vec::new(),
        },
    }
}

/// The pod volumes behind [`database_mounts`], for pods not built from the hub's template.
fn database_volumes(layout: &HubLayout) -> Vec<Volume> {
    let secret = |name: &String, volume: &String| Volume {
        name: volume.clone(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(name.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    match &layout.database {
        HubDatabase::Sqlite(file) => vec![Volume {
            name: file.volume_name.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: file.volume_claim.clone(),
                read_only: None,
            }),
            ..Default::default()
        }],
        HubDatabase::Server(server) => match &server.url {
            UrlSource::ChartValues {
                secret: name,
                volume,
                existing,
            } => std::iter::once(secret(name, volume))
                .chain(existing.iter().map(|(name, volume)| secret(name, volume)))
                .collect(),
            UrlSource::Secret { .. } => Vec::new(),
        },
    }
}

/// How the agent finds a server database's URL: where [`database_mounts`] puts the values.
fn server_source(layout: &HubLayout) -> ServerSource {
    match layout.server().map(|s| &s.url) {
        Some(UrlSource::ChartValues { existing, .. }) => ServerSource {
            values: Some(VALUES_MOUNT.into()),
            existing: existing.as_ref().map(|_| EXISTING_SECRET_MOUNT.into()),
        },
        _ => ServerSource::default(),
    }
}

fn run_volume() -> Volume {
    Volume {
        name: RUN_VOLUME.into(),
        empty_dir: Some(Default::default()),
        ..Default::default()
    }
}

/// A Job running `hubgrade agent <command>` with the hub's database volume mounted where the
/// hub mounts it.
fn agent_job(
    inputs: &JobInputs<'_>,
    step: JobStep,
    command: &AgentCommand,
    deadline: SignedDuration,
) -> Job {
    let pod = hub_pod(inputs.hub);
    let mut labels = labels(&inputs.target.owner, step.as_str());
    labels.insert(ROLE_LABEL.into(), "agent".into());
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            restart_policy: Some("Never".into()),
            security_context: Some(agent_pod_security(
                &pod,
                pod.containers
                    .iter()
                    .find(|c| c.name == inputs.layout.container),
            )),
            node_selector: pod.node_selector.clone(),
            tolerations: pod.tolerations.clone(),
            affinity: pod.affinity.clone(),
            image_pull_secrets: pull_secrets(&[], &inputs.target.agent_pull_secrets),
            automount_service_account_token: Some(false),
            containers: vec![agent_container("agent", inputs, command)],
            volumes: Some(
                database_volumes(inputs.layout)
                    .into_iter()
                    .chain([run_volume()])
                    .collect(),
            ),
            ..Default::default()
        }),
    };
    job(&inputs.target.owner, step, template, deadline)
}

/// Copies the stopped hub's SQLite file next to it, verified, with its size and checksum.
/// It may take the plan's backup timeout.
/// A server database is cloned on its server.
pub fn backup_job(inputs: &JobInputs<'_>) -> Job {
    let target = inputs.target;
    let command = match &inputs.layout.database {
        HubDatabase::Sqlite(file) => AgentCommand::SqliteBackup {
            database: file.path.clone().into(),
            to: sqlite_backup_path(&target.owner, file).into(),
            retain: Some(target.backup_retain as usize),
        },
        HubDatabase::Server(_) => AgentCommand::ServerBackup {
            database: server_source(inputs.layout),
            suffix: server_clone_suffix(&target.owner),
            dump_to: (target.backup_method == BackupMethod::Dump)
                .then(|| dump_path(&target.owner).into()),
        },
    };
    let dump = matches!(
        command,
        AgentCommand::ServerBackup {
            dump_to: Some(_),
            ..
        }
    );
    let job = agent_job(
        inputs,
        JobStep::Backup,
        &command,
        target.plan.timeouts.backup,
    );
    match dump {
        true => with_dump_claim(job, &target.dump_claim()),
        false => job,
    }
}

/// Moves the failed SQLite database aside, next to the backups, for `migration.onFailure:
/// FreshDatabase`; `None` for a server database (refused in Preflight).
pub fn fresh_database_job(inputs: &JobInputs<'_>) -> Option<Job> {
    let file = inputs.layout.sqlite()?;
    let command = AgentCommand::SqliteMoveAside {
        database: file.path.clone().into(),
        to: beside_database(&inputs.target.owner, file, "failed").into(),
    };
    let deadline = inputs.target.plan.timeouts.rollback;
    Some(agent_job(
        inputs,
        JobStep::FreshDatabase,
        &command,
        deadline,
    ))
}

/// Puts the backup back in place of the database, checking the checksum before and after.
/// Its deadline is the roll back's timeout: the restore never outlives the roll back.
/// A server database is made again from its clone; the failed one is kept.
pub fn restore_job(inputs: &JobInputs<'_>, backup: &str, checksum: Option<&str>) -> Job {
    let command = match (&inputs.layout.database, checksum) {
        // Without a checksum (the effects refuse to start one) no file matches: the agent
        // replaces nothing.
        (HubDatabase::Sqlite(file), checksum) => AgentCommand::SqliteRestore {
            from: backup.into(),
            to: file.path.clone().into(),
            checksum: checksum.unwrap_or_default().into(),
        },
        (HubDatabase::Server(_), checksum) => AgentCommand::ServerRestore {
            database: server_source(inputs.layout),
            from: backup.into(),
            checksum: checksum.map(str::to_string),
        },
    };
    // A server backup with a checksum is a dump, on its claim.
    let dump = matches!(
        command,
        AgentCommand::ServerRestore {
            checksum: Some(_),
            ..
        }
    );
    let deadline = inputs.target.plan.timeouts.rollback;
    let job = agent_job(inputs, JobStep::Restore, &command, deadline);
    match dump {
        true => with_dump_claim(job, &inputs.target.dump_claim()),
        false => job,
    }
}

/// `jupyterhub upgrade-db` in the target image, in a pod built from the hub's own template
/// (same volumes, configuration mounts, environment, service account, working directory and
/// security context), on exactly the database that was backed up: the hub's configuration is
/// loaded, checked to name that database, and the database pinned after it. Then the agent
/// reports the revision the database reached. It may take the plan's migration timeout.
///
/// On a server database the hub's own configuration names the database (z2jh: `hub.db.url`,
/// the password exported from the hub Secret), the same values the backup read.
pub fn migration_job(inputs: &JobInputs<'_>) -> Job {
    let database = inputs.layout.sqlite().map(|file| file.path.clone());
    let deadline = inputs.target.plan.timeouts.migration;
    hub_image_job(
        inputs,
        JobStep::Migration,
        database.as_deref(),
        Vec::new(),
        deadline,
    )
}

/// The migration run against a scratch copy of the database, before the hub is stopped: the
/// agent copies the live file, then the target image migrates the copy (pinned, so the hub's
/// configuration cannot send it to the live file), then the agent reports the copy's revision.
/// `node`: the node the hub pod runs on, where its ReadWriteOnce claim is attached. It may take
/// the plan's rehearsal timeout.
/// Only for SQLite hubs (a server database is not copied while the hub uses it: the machine
/// skips the rehearsal, see `interpret`); `None` for the others.
pub fn rehearsal_job(inputs: &JobInputs<'_>, node: Option<&str>) -> Option<Job> {
    let file = inputs.layout.sqlite()?;
    let copy = rehearsal_copy_path(&inputs.target.owner, file);
    let copy_database = AgentCommand::SqliteBackup {
        database: file.path.clone().into(),
        to: copy.clone().into(),
        retain: None,
    };
    let mut job = hub_image_job(
        inputs,
        JobStep::Rehearsal,
        Some(&copy),
        vec![agent_container("copy-database", inputs, &copy_database)],
        inputs.target.plan.timeouts.rehearsal,
    );
    if let Some(pod) = job.spec.as_mut().and_then(|s| s.template.spec.as_mut()) {
        // Bound to the hub pod's node, past the scheduler: a ReadWriteOnce volume can be used
        // by several pods of one node, never by pods of two.
        pod.node_name = node.map(str::to_string);
    }
    Some(job)
}

/// A pod of the hub's template that runs, in order: `first` (init containers), the pinning of
/// the SQLite file `database`, `jupyterhub upgrade-db` in the target image, and the agent
/// reporting the revision the database reached. `None`: the hub's server database, as the
/// hub's configuration names it.
fn hub_image_job(
    inputs: &JobInputs<'_>,
    step: JobStep,
    database: Option<&str>,
    first: Vec<Container>,
    deadline: SignedDuration,
) -> Job {
    let pod = hub_pod(inputs.hub);
    let template_meta = inputs
        .hub
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.clone())
        .unwrap_or_default();
    let hub = pod
        .containers
        .iter()
        .find(|c| c.name == inputs.layout.container)
        .cloned()
        .unwrap_or_default();
    let hub_config = config_file_argument(&hub);
    // An SQLite file is pinned in a configuration file of its own, after the hub's.
    let pin = match (database, inputs.layout.sqlite()) {
        (Some(database), Some(file)) => Some(AgentCommand::PinDatabase {
            hub_config: hub_config.clone(),
            database_url: sqlite_url(database),
            expect_url: sqlite_url(&file.path),
            to: PINNED_CONFIG.into(),
        }),
        _ => None,
    };
    let config = match (&pin, &hub_config) {
        (Some(_), _) => Some(PINNED_CONFIG.to_string()),
        (None, config) => config.clone(),
    };
    let mut mounts = hub.volume_mounts.clone().unwrap_or_default();
    mounts.push(VolumeMount {
        name: RUN_VOLUME.into(),
        mount_path: RUN_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    let upgrade_db = Container {
        name: "upgrade-db".into(),
        image: Some(inputs.target.plan.target_image.clone()),
        command: Some(vec!["jupyterhub".into()]),
        args: Some(
            std::iter::once("upgrade-db".to_string())
                .chain(config.map(|c| format!("--config={c}")))
                .collect(),
        ),
        env: hub.env.clone(),
        env_from: hub.env_from.clone(),
        volume_mounts: Some(mounts),
        working_dir: hub.working_dir.clone(),
        resources: hub.resources.clone(),
        image_pull_policy: hub.image_pull_policy.clone(),
        security_context: Some(restricted(
            hub.security_context.as_ref(),
            pod.security_context.as_ref(),
        )),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    };
    let mut init_containers = first;
    if let Some(pin) = &pin {
        init_containers.push(agent_container("pin-database", inputs, pin));
    }
    init_containers.push(upgrade_db);
    let revision = match database {
        Some(database) => AgentCommand::SqliteRevision {
            database: database.into(),
        },
        None => AgentCommand::ServerRevision {
            database: server_source(inputs.layout),
        },
    };
    let mut volumes = pod.volumes.clone().unwrap_or_default();
    volumes.push(run_volume());
    let mut labels = labels(&inputs.target.owner, step.as_str());
    labels.insert(ROLE_LABEL.into(), "hub-image".into());
    let template = PodTemplateSpec {
        metadata: Some(ObjectMeta {
            // The hub's labels are left out: its Service and Deployment select on them.
            labels: Some(labels),
            annotations: template_meta.annotations,
            ..Default::default()
        }),
        spec: Some(PodSpec {
            init_containers: Some(init_containers),
            containers: vec![agent_container("report-revision", inputs, &revision)],
            volumes: Some(volumes),
            restart_policy: Some("Never".into()),
            image_pull_secrets: pull_secrets(
                pod.image_pull_secrets.as_deref().unwrap_or_default(),
                &inputs.target.agent_pull_secrets,
            ),
            ..pod
        }),
    };
    job(&inputs.target.owner, step, template, deadline)
}

/// The hub pod's own image pull secrets (for the target image) and the operator's (for its own
/// image, which the agent containers run), each once; `None` when there are none.
fn pull_secrets(
    hub: &[LocalObjectReference],
    agent: &[String],
) -> Option<Vec<LocalObjectReference>> {
    let mut all = hub.to_vec();
    for name in agent {
        if !all.iter().any(|s| &s.name == name) {
            all.push(LocalObjectReference { name: name.clone() });
        }
    }
    (!all.is_empty()).then_some(all)
}

/// The SQLAlchemy URL of an SQLite file (`sqlite:////srv/jupyterhub/jupyterhub.sqlite`).
fn sqlite_url(path: &str) -> String {
    format!("sqlite:///{path}")
}

/// The `--config` / `-f` file the hub is started with (z2jh: jupyterhub_config.py).
fn config_file_argument(hub: &Container) -> Option<String> {
    let words: Vec<&String> = hub
        .command
        .iter()
        .flatten()
        .chain(hub.args.iter().flatten())
        .collect();
    for (i, word) in words.iter().enumerate() {
        if let Some(value) = word
            .strip_prefix("--config=")
            .or_else(|| word.strip_prefix("--JupyterHub.config_file="))
        {
            return Some(value.to_string());
        }
        if (word.as_str() == "--config" || word.as_str() == "-f")
            && let Some(value) = words.get(i + 1)
        {
            return Some(value.to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests;
