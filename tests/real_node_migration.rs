//! The migration Job exactly as the operator builds it (`kube::objects::migration_job`), run
//! for real on the local cluster's real node: the z2jh hub image of chart 4.4.0 (JupyterHub
//! 5.5.0, built by tests/images/) migrates a database made by JupyterHub 4.1.6 on a claim
//! mounted with z2jh's `hub.db.pvc.subPath`, through the hub's own configuration, which sets
//! `db_url` as z2jh's does; hubgrade's own image (the agent) pins the database and reports the
//! revision it reached. A configuration that names another database is refused by the running
//! container, changing nothing. A missing real node or image fails these tests.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use hubgrade::agent::AgentReport;
use hubgrade::api::HubUpgrade;
use hubgrade::cluster::Target;
use hubgrade::cluster::objects::{JobInputs, migration_job};
use hubgrade::hub::detect_layout;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStateTerminated, PersistentVolume, PersistentVolumeClaim, Pod,
};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use support::jupyterhub::{OLD, make_database, revision_of_file as revision};
use support::{TestNamespace, client, repo, stderr, stdout, wait_until};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.4.0";
const MIDDLE_HEAD: &str = "4621fec11365";
const OLD_HEAD: &str = "0eee8c825d24";

/// Builds (cached by content) and pushes the target hub image and hubgrade's image (this
/// build's binary) into the real node's registry; returns the agent image.
fn push_images() -> String {
    let port = std::env::var("REGISTRY_PORT").unwrap_or_else(|_| "25000".into());
    let output = std::process::Command::new(repo().join("tests/images/push.sh"))
        .args([&format!("127.0.0.1:{port}"), "k8s-hub:4.4.0", "hubgrade"])
        .env("HUBGRADE_BIN", env!("CARGO_BIN_EXE_hubgrade"))
        .output()
        .expect("running tests/images/push.sh");
    assert!(
        output.status.success(),
        "building or pushing the images failed (is the real node's registry up? `make cluster-up`):\n{}",
        stderr(&output)
    );
    format!("ghcr.io/hubgrade/hubgrade:{}", env!("CARGO_PKG_VERSION"))
}

/// A z2jh-shaped hub Deployment (kept at zero replicas: only its template matters here),
/// placed on the real node.
fn hub(namespace: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "hub", "namespace": namespace},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"component": "hub"}},
            "template": {
                "metadata": {"labels": {"component": "hub"}},
                "spec": {
                    "nodeSelector": {"hubgrade.io/node": "real"},
                    "tolerations": [{"key": "hubgrade.io/real-node", "operator": "Exists", "effect": "NoSchedule"}],
                    "securityContext": {"fsGroup": 1000},
                    "containers": [{
                        "name": "hub",
                        "image": "quay.io/jupyterhub/k8s-hub:3.3.8",
                        "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py", "--upgrade-db"],
                        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": false},
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/usr/local/etc/jupyterhub/jupyterhub_config.py", "subPath": "jupyterhub_config.py"},
                            {"name": "pvc", "mountPath": "/srv/jupyterhub", "subPath": "hub-db"}
                        ]
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": "hub"}},
                        {"name": "pvc", "persistentVolumeClaim": {"claimName": "hub-db-dir"}}
                    ]
                }
            }
        }
    }))
    .expect("deployment")
}

fn upgrade(namespace: &str) -> HubUpgrade {
    serde_json::from_value(json!({
        "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
        "metadata": {"name": "to-4-4-0", "namespace": namespace, "uid": "5eed0000-aaaa-bbbb-cccc-000000000000"},
        "spec": {"hub": {"deployment": "hub"}, "targetImage": TARGET}
    }))
    .expect("upgrade")
}

/// A claim of the default StorageClass, bound; returns its folder on this machine.
async fn claim(client: &kube::Client, namespace: &str) -> PathBuf {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "hub-db-dir"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("claim");
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("creating the claim");
    wait_until(Duration::from_secs(60), "the claim to be bound", || async {
        claims
            .get("hub-db-dir")
            .await
            .ok()
            .and_then(|c| c.status?.phase)
            .as_deref()
            == Some("Bound")
    })
    .await;
    let volume = claims
        .get("hub-db-dir")
        .await
        .expect("claim")
        .spec
        .and_then(|s| s.volume_name)
        .expect("bound volume");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let pv = volumes.get(&volume).await.expect("the volume");
    let spec = pv.spec.expect("volume spec");
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .expect("a hostPath or local volume");
    PathBuf::from(path)
}

fn chown_tree(path: &Path) {
    std::os::unix::fs::chown(path, Some(1000), Some(1000)).expect("chown");
    if path.is_dir() {
        for entry in std::fs::read_dir(path).expect("folder") {
            chown_tree(&entry.expect("entry").path());
        }
    }
}

/// Runs the migration Job for a hub whose configuration sets `db_url`; returns how each
/// container of its pod ended (init containers first) and the claim's folder.
async fn run_migration(
    prefix: &str,
    hub_db_url: &str,
) -> (
    TestNamespace,
    PathBuf,
    Vec<(String, ContainerStateTerminated)>,
) {
    let agent_image = push_images();
    let client = client().await;
    let namespace = TestNamespace::new(&client, prefix).await;
    let ns = namespace.name.clone();
    let folder = claim(&client, &ns).await;
    let hub_db = folder.join("hub-db");
    std::fs::create_dir_all(&hub_db).expect("subPath folder");
    for name in ["jupyterhub.sqlite", "other.sqlite"] {
        make_database(OLD, &format!("sqlite:///{}", hub_db.join(name).display()));
    }
    chown_tree(&folder);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let config: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "hub"},
        "data": {"jupyterhub_config.py": format!(
            "# as z2jh's jupyterhub_config.py sets it (hub.db.type sqlite-pvc)\nc.JupyterHub.db_url = {hub_db_url:?}\n"
        )}
    }))
    .expect("config map");
    maps.create(&PostParams::default(), &config)
        .await
        .expect("creating the hub's ConfigMap");

    let (upgrade, hub) = (upgrade(&ns), hub(&ns));
    let layout = detect_layout(&hub, &upgrade.spec).expect("layout");
    assert_eq!(
        layout.sqlite().and_then(|f| f.sub_path.as_deref()),
        Some("hub-db")
    );
    let mut target = Target::resolve(&upgrade, &agent_image).expect("target");
    target.plan.timeouts.migration = jiff::SignedDuration::from_secs(600);
    let inputs = JobInputs {
        target: &target,
        hub: &hub,
        layout: &layout,
    };
    let mut job = migration_job(&inputs);
    // The test's HubUpgrade is not stored: its Job has no owner to point at.
    job.metadata.owner_references = None;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("creating the migration Job");
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let name = job.metadata.name.clone().expect("name");
    let selector = format!("job-name={name}");
    let finished = |pod: &Pod| {
        matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    };
    let start = std::time::Instant::now();
    let pod = loop {
        let listed = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .expect("pods");
        if let Some(pod) = listed.items.into_iter().find(|p| finished(p)) {
            break pod;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the migration pod did not finish on the real node:\n{}",
            stdout(
                &support::kubectl(&["describe", "pods", "-n", &ns, "-l", &selector])
                    .output()
                    .expect("kubectl")
            )
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let status = pod.status.expect("pod status");
    let ended = status
        .init_container_statuses
        .into_iter()
        .flatten()
        .chain(status.container_statuses.into_iter().flatten())
        .filter_map(|c| Some((c.name, c.state?.terminated?)))
        .collect();
    (namespace, hub_db, ended)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_migration_job_migrates_the_pinned_database_on_a_sub_path_claim_on_a_real_node() {
    let (namespace, hub_db, ended) = run_migration("real-mig", "sqlite:///jupyterhub.sqlite").await;
    let names: Vec<&str> = ended.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["pin-database", "upgrade-db", "report-revision"],
        "{ended:?}"
    );
    assert!(ended.iter().all(|(_, t)| t.exit_code == 0), "{ended:?}");
    let report = ended
        .last()
        .and_then(|(_, t)| t.message.as_deref())
        .and_then(AgentReport::parse)
        .expect("the agent's report in the termination message");
    assert_eq!(report.revision.as_deref(), Some(MIDDLE_HEAD));
    assert!(revision(&hub_db.join("jupyterhub.sqlite")).starts_with(MIDDLE_HEAD));
    assert!(revision(&hub_db.join("other.sqlite")).starts_with(OLD_HEAD));
    // upgrade-db's own copy, next to the database it migrated, in the claim's sub-folder.
    let copies = std::fs::read_dir(&hub_db)
        .expect("folder")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("jupyterhub.sqlite.20")
        })
        .count();
    assert_eq!(copies, 1);
    namespace.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_migration_job_refuses_a_hub_configured_for_another_database_on_a_real_node() {
    let (namespace, hub_db, ended) = run_migration("real-refuse", "sqlite:///other.sqlite").await;
    let (container, refused) = ended.last().expect("a container ended");
    assert_eq!(container, "upgrade-db", "{ended:?}");
    assert_eq!(
        refused.exit_code,
        hubgrade::hub::WRONG_DATABASE_EXIT_CODE,
        "{ended:?}"
    );
    let message = refused.message.clone().unwrap_or_default();
    assert!(
        message.contains("other.sqlite") && message.contains("backed up"),
        "{message}"
    );
    assert!(revision(&hub_db.join("jupyterhub.sqlite")).starts_with(OLD_HEAD));
    assert!(revision(&hub_db.join("other.sqlite")).starts_with(OLD_HEAD));
    namespace.delete().await;
}
