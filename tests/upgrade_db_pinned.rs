//! Issue "Safety", points 1 and 2, with real JupyterHub: the rehearsal and the migration Jobs
//! hubgrade builds act on exactly the database they name, whatever the hub's configuration
//! says. z2jh's `jupyterhub_config.py` sets `c.JupyterHub.db_url` itself
//! (`sqlite:///jupyterhub.sqlite`, relative to the working directory /srv/jupyterhub), and a
//! `db_url` in the configuration wins over `jupyterhub upgrade-db --db`. Each Job's containers
//! run here with their own arguments (tests/support/local_pod.rs): hubgrade's agent, and the
//! real `jupyterhub upgrade-db` of JupyterHub 5.5 standing for the target image.

mod support;

use std::path::Path;

use hubgrade::agent::AgentReport;
use hubgrade::api::HubUpgrade;
use hubgrade::cluster::Target;
use hubgrade::cluster::objects::{JobInputs, migration_job, rehearsal_job};
use hubgrade::hub::{HubLayout, detect_layout};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::json;
use support::jupyterhub::{MIDDLE, OLD, make_database, revision_of_file as revision};
use support::local_pod::{LocalPod, Ran};
use support::{stderr, stdout};

/// JupyterHub 4.x's and 5.x's alembic heads.
const OLD_HEAD: &str = "0eee8c825d24";
const MIDDLE_HEAD: &str = "4621fec11365";

/// A hub laid out as z2jh lays it out: its configuration at /usr/local/etc/jupyterhub, its
/// claim at /srv/jupyterhub, started with `--config` and `--upgrade-db`.
fn z2jh_hub() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "hub", "namespace": "jhub"},
        "spec": {
            "selector": {"matchLabels": {"component": "hub"}},
            "template": {
                "metadata": {"labels": {"component": "hub"}},
                "spec": {
                    "containers": [{
                        "name": "hub",
                        "image": "quay.io/jupyterhub/k8s-hub:3.3.8",
                        "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py", "--upgrade-db"],
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/usr/local/etc/jupyterhub/jupyterhub_config.py", "subPath": "jupyterhub_config.py"},
                            {"name": "pvc", "mountPath": "/srv/jupyterhub"}
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

fn upgrade() -> HubUpgrade {
    serde_json::from_value(json!({
        "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
        "metadata": {"name": "to-4-4-0", "namespace": "jhub", "uid": "0f1e2d3c-aaaa-bbbb-cccc-000000000000"},
        "spec": {"hub": {"deployment": "hub"}, "targetImage": "quay.io/jupyterhub/k8s-hub:4.4.0"}
    }))
    .expect("upgrade")
}

/// A volume with a database made by JupyterHub 4.1, and a hub configuration that sets
/// `db_url` as z2jh's does (`hub_db_url`).
struct Volumes {
    _dir: tempfile::TempDir,
    claim: std::path::PathBuf,
    pod: LocalPod,
}

fn volumes(hub_db_url: &str) -> Volumes {
    let dir = tempfile::tempdir().expect("temp dir");
    let claim = dir.path().join("claim");
    let config = dir.path().join("config");
    let run = dir.path().join("run");
    for folder in [&claim, &config, &run] {
        std::fs::create_dir_all(folder).expect("folder");
    }
    make_database(
        OLD,
        &format!("sqlite:///{}", claim.join("jupyterhub.sqlite").display()),
    );
    std::fs::write(
        config.join("jupyterhub_config.py"),
        format!("# as z2jh's jupyterhub_config.py sets it\nc.JupyterHub.db_url = {hub_db_url:?}\n"),
    )
    .expect("hub configuration");
    let pod = LocalPod {
        paths: vec![
            ("/usr/local/etc/jupyterhub".into(), config),
            ("/srv/jupyterhub".into(), claim.clone()),
            ("/hubgrade-run".into(), run),
        ],
        jupyterhub: MIDDLE,
        image_workdir: "/srv/jupyterhub".into(),
    };
    Volumes {
        _dir: dir,
        claim,
        pod,
    }
}

/// The upgrade resolved as the operator resolves it; its Jobs may run for 10 minutes.
fn target(upgrade: &HubUpgrade) -> Target {
    let mut target = Target::resolve(upgrade, "ghcr.io/hubgrade/hubgrade:test").expect("target");
    target.plan.timeouts.rehearsal = jiff::SignedDuration::from_secs(600);
    target.plan.timeouts.migration = jiff::SignedDuration::from_secs(600);
    target
}

fn inputs<'a>(target: &'a Target, hub: &'a Deployment, layout: &'a HubLayout) -> JobInputs<'a> {
    JobInputs {
        target,
        hub,
        layout,
    }
}

fn checksum(path: &Path) -> String {
    hubgrade::db::file::size_and_checksum(path)
        .expect("checksum")
        .1
}

fn describe(runs: &[Ran]) -> String {
    runs.iter()
        .map(|r| {
            format!(
                "{} ({}):\n{}{}",
                r.container,
                r.output.status,
                stdout(&r.output),
                stderr(&r.output)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn rehearsal_migrates_the_copy_not_the_live_database() {
    let volumes = volumes("sqlite:///jupyterhub.sqlite");
    let live = volumes.claim.join("jupyterhub.sqlite");
    let before = checksum(&live);
    let (upgrade, hub) = (upgrade(), z2jh_hub());
    let layout = detect_layout(&hub, &upgrade.spec).expect("layout");
    let target = target(&upgrade);
    let inputs = inputs(&target, &hub, &layout);
    let rehearsal = rehearsal_job(&inputs, Some("node-a")).expect("an SQLite hub rehearses");
    let runs = volumes.pod.run(&rehearsal);
    assert!(
        runs.iter().all(|r| r.output.status.success()),
        "{}",
        describe(&runs)
    );

    assert_eq!(
        checksum(&live),
        before,
        "the rehearsal changed the live database:\n{}",
        describe(&runs)
    );
    assert!(revision(&live).starts_with(OLD_HEAD));
    let copy = volumes
        .claim
        .join("hubgrade-backups/hubgrade-0f1e2d3c-rehearsal.sqlite");
    assert!(
        revision(&copy).starts_with(MIDDLE_HEAD),
        "the copy was not migrated:\n{}",
        describe(&runs)
    );
    let report = AgentReport::parse(&stdout(&runs.last().expect("a run").output))
        .expect("the last container's report");
    assert_eq!(report.revision.as_deref(), Some(MIDDLE_HEAD));
    // JupyterHub's own copy of the live file would mean upgrade-db touched it.
    let touched: Vec<_> = std::fs::read_dir(&volumes.claim)
        .expect("claim")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("jupyterhub.sqlite."))
        .collect();
    assert!(
        touched.is_empty(),
        "upgrade-db copied the live database: {touched:?}"
    );
}

#[test]
fn migration_acts_only_on_the_database_that_was_backed_up() {
    // The hub's configuration names another file than the one hubgrade found and backed up.
    let volumes = volumes("sqlite:///other.sqlite");
    let backed_up = volumes.claim.join("jupyterhub.sqlite");
    let other = volumes.claim.join("other.sqlite");
    make_database(OLD, &format!("sqlite:///{}", other.display()));
    let (before, other_before) = (checksum(&backed_up), checksum(&other));
    let (upgrade, hub) = (upgrade(), z2jh_hub());
    let layout = detect_layout(&hub, &upgrade.spec).expect("layout");
    let target = target(&upgrade);
    let inputs = inputs(&target, &hub, &layout);
    let runs = volumes.pod.run(&migration_job(&inputs));
    let failed = runs.last().expect("a run");
    assert!(
        !failed.output.status.success(),
        "the migration ran although the hub uses another database:\n{}",
        describe(&runs)
    );
    assert_eq!(failed.container, "upgrade-db");
    assert_eq!(
        failed.output.status.code(),
        Some(hubgrade::hub::WRONG_DATABASE_EXIT_CODE)
    );
    let message = stderr(&failed.output);
    assert!(
        message.contains("other.sqlite") && message.contains("backed up"),
        "{message}"
    );
    assert_eq!(
        checksum(&backed_up),
        before,
        "the backed-up database changed"
    );
    assert_eq!(
        checksum(&other),
        other_before,
        "the hub's configured database changed"
    );
}

#[test]
fn migration_migrates_the_backed_up_database_and_reports_its_revision() {
    let volumes = volumes("sqlite:///jupyterhub.sqlite");
    let database = volumes.claim.join("jupyterhub.sqlite");
    let (upgrade, hub) = (upgrade(), z2jh_hub());
    let layout = detect_layout(&hub, &upgrade.spec).expect("layout");
    let target = target(&upgrade);
    let inputs = inputs(&target, &hub, &layout);
    let runs = volumes.pod.run(&migration_job(&inputs));
    assert!(
        runs.iter().all(|r| r.output.status.success()),
        "{}",
        describe(&runs)
    );
    assert!(revision(&database).starts_with(MIDDLE_HEAD));
    let report = AgentReport::parse(&stdout(&runs.last().expect("a run").output))
        .expect("the revision report");
    assert_eq!(report.revision.as_deref(), Some(MIDDLE_HEAD));
}
