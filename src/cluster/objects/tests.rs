use super::*;
use crate::api::HubUpgrade;
use crate::cluster::owned::owner_reference;
use k8s_openapi::api::core::v1::LocalObjectReference;
use kube::Resource;
use serde_json::json;

fn upgrade() -> HubUpgrade {
    serde_json::from_value(json!({
        "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
        "metadata": {"name": "to-4-2", "namespace": "jhub", "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000000"},
        "spec": {"hub": {"deployment": "hub"}, "targetImage": "quay.io/jupyterhub/k8s-hub:4.2.0"}
    }))
    .expect("upgrade")
}

fn hub() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "hub", "namespace": "jhub"},
        "spec": {
            "selector": {"matchLabels": {"component": "hub"}},
            "template": {
                "metadata": {"labels": {"component": "hub"}, "annotations": {"checksum/config": "abc"}},
                "spec": {
                    "serviceAccountName": "hub",
                    "securityContext": {"fsGroup": 1000},
                    "containers": [{
                        "name": "hub",
                        "image": "quay.io/jupyterhub/k8s-hub:4.1.0",
                        "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py", "--upgrade-db"],
                        "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                        "workingDir": "/srv/jupyterhub",
                        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
                        "readinessProbe": {"httpGet": {"path": "/hub/health", "port": 8081}},
                        "volumeMounts": [{"name": "pvc", "mountPath": "/srv/jupyterhub"}]
                    }],
                    "volumes": [{"name": "pvc", "persistentVolumeClaim": {"claimName": "hub-db-dir"}}]
                }
            }
        }
    }))
    .expect("deployment")
}

fn target() -> Target {
    Target::resolve(&upgrade(), "hubgrade:0.1.0").expect("target")
}

fn layout() -> HubLayout {
    target().layout(&hub()).expect("layout")
}

fn inputs<'a>(target: &'a Target, hub: &'a Deployment, layout: &'a HubLayout) -> JobInputs<'a> {
    JobInputs {
        target,
        hub,
        layout,
    }
}

#[test]
fn names_derive_from_the_uid() {
    let owner = Owner::of(&upgrade());
    assert_eq!(owned_name(&owner, "backup"), "hubgrade-0f1e2d3c-backup");
    assert_eq!(
        sqlite_backup_path(&owner, layout().sqlite().expect("SQLite")),
        "/srv/jupyterhub/hubgrade-backups/hubgrade-0f1e2d3c-db.sqlite"
    );
}

#[test]
fn the_owner_reference_is_the_upgrades_controller_reference() {
    let upgrade = upgrade();
    assert_eq!(
        Some(owner_reference(&Owner::of(&upgrade))),
        upgrade.controller_owner_ref(&())
    );
    let mut deleting = upgrade.clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    assert_eq!(
        owned_metadata(&Owner::of(&deleting), "restore").owner_references,
        None,
        "what is made during a deletion is left unowned"
    );
}

#[test]
fn a_jobs_deadline_and_retention_come_from_the_plan() {
    let mut target = target();
    target.plan.timeouts.backup = SignedDuration::from_secs(420);
    target.backup_retain = 7;
    let (hub, layout) = (hub(), layout());
    let job = backup_job(&inputs(&target, &hub, &layout));
    let spec = job.spec.expect("spec");
    assert_eq!(spec.active_deadline_seconds, Some(420));
    let args = spec.template.spec.expect("pod").containers[0]
        .args
        .clone()
        .expect("args");
    let retain = args.iter().position(|a| a == "--retain").expect("--retain");
    assert_eq!(args[retain + 1], "7");
}

#[test]
fn the_migration_job_is_the_hub_pod_with_the_target_image() {
    let (target, hub, layout) = (target(), hub(), layout());
    let job = migration_job(&inputs(&target, &hub, &layout));
    assert_eq!(
        job.metadata.name.as_deref(),
        Some("hubgrade-0f1e2d3c-migration")
    );
    assert_eq!(
        job.metadata
            .owner_references
            .as_ref()
            .map(|o| o[0].kind.as_str()),
        Some("HubUpgrade")
    );
    let spec = job.spec.expect("spec");
    assert_eq!(spec.backoff_limit, Some(0));
    let template = spec.template;
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .expect("labels");
    assert!(
        !labels.contains_key("component"),
        "the hub Service must not select the Job's pod"
    );
    let pod = template.spec.expect("pod");
    assert_eq!(pod.service_account_name.as_deref(), Some("hub"));
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let init = pod.init_containers.clone().unwrap_or_default();
    let container = init
        .iter()
        .find(|c| c.name == "upgrade-db")
        .expect("the upgrade-db container");
    assert_eq!(
        container.image.as_deref(),
        Some("quay.io/jupyterhub/k8s-hub:4.2.0")
    );
    assert_eq!(
        container.command.as_deref(),
        Some(&["jupyterhub".to_string()][..])
    );
    assert_eq!(
        container.args.as_deref(),
        Some(
            &[
                "upgrade-db".to_string(),
                "--config=/hubgrade-run/jupyterhub_config.py".to_string()
            ][..]
        )
    );
    assert_eq!(container.working_dir.as_deref(), Some("/srv/jupyterhub"));
    assert!(container.readiness_probe.is_none());
    let security = container
        .security_context
        .as_ref()
        .expect("security context");
    assert_eq!(security.run_as_user, Some(1000), "the hub's user is kept");
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        security.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    assert_eq!(
        security.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );
}

#[test]
fn a_hub_running_as_root_is_not_forced_to_non_root() {
    let mut deployment = hub();
    let pod = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("pod");
    pod.containers[0].security_context = Some(SecurityContext {
        run_as_user: Some(0),
        ..Default::default()
    });
    let (target, layout) = (target(), layout());
    let job = migration_job(&inputs(&target, &deployment, &layout));
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    let init = pod.init_containers.unwrap_or_default();
    assert_eq!(
        init.iter()
            .find(|c| c.name == "upgrade-db")
            .expect("upgrade-db")
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        None
    );
}

#[test]
fn the_backup_job_runs_the_agent_on_the_hub_volume() {
    let (target, hub, layout) = (target(), hub(), layout());
    let job = backup_job(&inputs(&target, &hub, &layout));
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some("hubgrade:0.1.0"));
    let args = container.args.clone().expect("args");
    assert_eq!(args[0], "sqlite-backup");
    assert!(args.contains(&"/srv/jupyterhub/jupyterhub.sqlite".to_string()));
    let claim = pod
        .volumes
        .as_ref()
        .and_then(|v| v[0].persistent_volume_claim.as_ref())
        .expect("pvc");
    assert_eq!(claim.claim_name, "hub-db-dir");
    assert_eq!(pod.automount_service_account_token, Some(false));
}

/// The agent containers run the operator's image: its pull secrets reach every Job, beside the
/// hub pod's own (for the target image) in the Jobs built from the hub's pod.
#[test]
fn the_operators_image_pull_secrets_reach_every_job() {
    let with_secrets = Target {
        agent_pull_secrets: vec!["operator-registry".into()],
        ..target()
    };
    let mut hub = hub();
    hub.spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("pod")
        .image_pull_secrets = Some(vec![LocalObjectReference {
        name: "hub-registry".into(),
    }]);
    let layout = layout();
    let inputs = inputs(&with_secrets, &hub, &layout);
    let names = |job: Job| -> Vec<String> {
        job.spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.image_pull_secrets)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect()
    };
    assert_eq!(names(backup_job(&inputs)), ["operator-registry"]);
    assert_eq!(
        names(restore_job(&inputs, "/srv/b", Some("sha256:00"))),
        ["operator-registry"]
    );
    assert_eq!(
        names(migration_job(&inputs)),
        ["hub-registry", "operator-registry"]
    );
    assert_eq!(
        names(rehearsal_job(&inputs, None).expect("SQLite")),
        ["hub-registry", "operator-registry"]
    );
    // None configured: no empty list written.
    let plain = target();
    let inputs = super::JobInputs {
        target: &plain,
        hub: &hub,
        layout: &layout,
    };
    assert_eq!(names(backup_job(&inputs)), Vec::<String>::new());
}

/// #15 point 2: every agent container runs under the restricted profile with a read-only root
/// (SQLite's temporary files in the Job's scratch folder), with resources, as the hub's user.
#[test]
fn agent_containers_have_a_read_only_root_resources_and_the_hubs_user() {
    let (target, deployment, layout) = (target(), hub(), layout());
    let inputs = inputs(&target, &deployment, &layout);
    let jobs = [
        backup_job(&inputs),
        restore_job(&inputs, "/srv/jupyterhub/b.sqlite", Some("sha256:00")),
        migration_job(&inputs),
        rehearsal_job(&inputs, Some("node-1")).expect("SQLite"),
    ];
    let mut agents = 0;
    for job in &jobs {
        let pod = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .expect("pod");
        let containers = pod
            .init_containers
            .iter()
            .flatten()
            .chain(&pod.containers)
            .filter(|c| c.image.as_deref() == Some("hubgrade:0.1.0"));
        for container in containers {
            agents += 1;
            let security = container.security_context.as_ref().expect("security");
            assert_eq!(
                security.read_only_root_filesystem,
                Some(true),
                "{}",
                container.name
            );
            assert_eq!(security.run_as_user, Some(1000), "{}", container.name);
            assert_eq!(security.allow_privilege_escalation, Some(false));
            let resources = container.resources.as_ref().expect("resources");
            assert!(
                resources
                    .limits
                    .as_ref()
                    .is_some_and(|l| l.contains_key("memory"))
            );
            let tmp = container
                .env
                .iter()
                .flatten()
                .find(|e| e.name == "SQLITE_TMPDIR")
                .and_then(|e| e.value.clone());
            assert_eq!(tmp.as_deref(), Some(RUN_DIR));
            assert!(
                container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.mount_path == RUN_DIR && m.read_only != Some(true)),
                "{} cannot write its scratch folder",
                container.name
            );
        }
    }
    assert_eq!(agents, 7, "backup, restore, 2 × (pin, report), copy");
}

/// No fsGroup is forced onto the hub's volume: an agent pod has the hub pod's, or none.
#[test]
fn agent_pods_take_the_hubs_fs_group_or_none() {
    let agent_pod = |deployment: &Deployment| {
        let (target, layout) = (target(), target().layout(deployment).expect("layout"));
        let job = backup_job(&inputs(&target, deployment, &layout));
        job.spec
            .and_then(|s| s.template.spec)
            .and_then(|p| p.security_context)
            .expect("a pod security context")
    };
    assert_eq!(agent_pod(&hub()).fs_group, Some(1000));
    let mut bare = hub();
    let pod = bare
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("pod");
    pod.security_context = None;
    pod.containers[0].security_context = None;
    let security = agent_pod(&bare);
    assert_eq!(
        security.fs_group, None,
        "an fsGroup was forced on the volume"
    );
    // No user anywhere: z2jh's image user, so the hub's files stay writable.
    assert_eq!(security.run_as_user, Some(1000));
    let mut own_user = bare.clone();
    own_user
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .expect("pod")
        .containers[0]
        .security_context = Some(SecurityContext {
        run_as_user: Some(1234),
        ..Default::default()
    });
    assert_eq!(
        agent_pod(&own_user).run_as_user,
        None,
        "the container's user decides"
    );
}

/// A z2jh hub on PostgreSQL (hub.db.type: postgres): no claim; the hub Secret holds
/// values.yaml and hub.db.password, mounted where z2jh mounts it.
fn postgres_hub() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "hub", "namespace": "jhub"},
        "spec": {
            "selector": {"matchLabels": {"component": "hub"}},
            "template": {
                "metadata": {"labels": {"component": "hub"}},
                "spec": {
                    "containers": [{
                        "name": "hub",
                        "image": "quay.io/jupyterhub/k8s-hub:4.1.0",
                        "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"],
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/usr/local/etc/jupyterhub/jupyterhub_config.py", "subPath": "jupyterhub_config.py"},
                            {"name": "secret", "mountPath": "/usr/local/etc/jupyterhub/secret/"}
                        ]
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "hub"}},
                        {"name": "secret", "secret": {"secretName": "hub"}}
                    ]
                }
            }
        }
    }))
    .expect("deployment")
}

fn server_layout(target: &Target, hub: &Deployment) -> HubLayout {
    let hints = crate::hub::LayoutHints {
        chart: Some(crate::hub::ChartDatabase::Postgres),
        ..target.layout_hints.clone()
    };
    crate::hub::detect_layout(hub, hints).expect("layout")
}

fn agent_args(job: &Job, container: &str) -> Vec<String> {
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod");
    pod.init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
        .find(|c| c.name == container)
        .and_then(|c| c.args.clone())
        .unwrap_or_else(|| panic!("no container {container}"))
}

/// #11: a PostgreSQL hub's Jobs mount the hub Secret read-only where z2jh does, and no claim;
/// the agent reads the URL and the password there, never from its arguments. The migration
/// runs the hub's own configuration, unpinned (it names the server database); no rehearsal.
#[test]
fn a_server_database_is_reached_through_the_hub_secret() {
    let (target, hub) = (target(), postgres_hub());
    let layout = server_layout(&target, &hub);
    let inputs = inputs(&target, &hub, &layout);
    let backup = backup_job(&inputs);
    let pod = backup
        .spec
        .clone()
        .and_then(|s| s.template.spec)
        .expect("pod");
    let volumes = pod.volumes.clone().unwrap_or_default();
    assert!(volumes.iter().all(|v| v.persistent_volume_claim.is_none()));
    let secret = volumes.iter().find(|v| v.name == "secret").expect("secret");
    assert_eq!(
        secret
            .secret
            .as_ref()
            .and_then(|s| s.secret_name.as_deref()),
        Some("hub")
    );
    let mount = pod.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.name == "secret")
        .expect("the Secret mounted");
    assert_eq!(
        (mount.mount_path.as_str(), mount.read_only),
        ("/usr/local/etc/jupyterhub/secret", Some(true))
    );
    assert_eq!(
        agent_args(&backup, "agent"),
        [
            "server-backup",
            "--values",
            "/usr/local/etc/jupyterhub/secret",
            "--suffix",
            "hubgrade_0f1e2d3c_db"
        ]
    );
    let restore = restore_job(&inputs, "jhub_hubgrade_0f1e2d3c_db", None);
    assert_eq!(
        agent_args(&restore, "agent"),
        [
            "server-restore",
            "--values",
            "/usr/local/etc/jupyterhub/secret",
            "--from",
            "jhub_hubgrade_0f1e2d3c_db"
        ]
    );
    let migration = migration_job(&inputs);
    assert_eq!(
        agent_args(&migration, "upgrade-db"),
        [
            "upgrade-db",
            "--config=/usr/local/etc/jupyterhub/jupyterhub_config.py"
        ]
    );
    assert_eq!(
        agent_args(&migration, "report-revision"),
        [
            "server-revision",
            "--values",
            "/usr/local/etc/jupyterhub/secret"
        ]
    );
    let init: Vec<String> = migration
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.init_containers.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(init, ["upgrade-db"], "no SQLite file to pin");
    assert!(rehearsal_job(&inputs, None).is_none());
}

/// With spec.database.urlSecret, the URL reaches the agent through the environment, from the
/// Secret by reference: the Job's spec holds its name and key, never its value.
#[test]
fn a_url_secret_reaches_the_agent_by_reference() {
    let mut upgrade = upgrade();
    upgrade.spec.database = serde_json::from_value(json!({
        "type": "PostgreSQL", "urlSecret": {"name": "hub-db-url", "key": "url"}
    }))
    .expect("database");
    let target = Target::resolve(&upgrade, "hubgrade:0.1.0").expect("target");
    let hub = postgres_hub();
    let layout = target.layout(&hub).expect("layout");
    let inputs = inputs(&target, &hub, &layout);
    let backup = backup_job(&inputs);
    assert_eq!(
        agent_args(&backup, "agent"),
        ["server-backup", "--suffix", "hubgrade_0f1e2d3c_db"]
    );
    let pod = backup.spec.and_then(|s| s.template.spec).expect("pod");
    let env = pod.containers[0].env.clone().unwrap_or_default();
    let url = env
        .iter()
        .find(|e| e.name == "HUBGRADE_DB_URL")
        .expect("the URL variable");
    assert_eq!(url.value, None);
    let reference = url
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("a Secret reference");
    assert_eq!(
        (reference.name.as_str(), reference.key.as_str()),
        ("hub-db-url", "url")
    );
}
