//! Layout detection on hubs shaped exactly as the Zero to JupyterHub chart renders them.
//!
//! The fixtures (tests/z2jh/<layout>/hub.yaml, with the hub Secret's values.yaml decoded next to
//! it) are hand-written renderings of z2jh 4.1.0 (one of 3.3.8) for release `jhub` (one
//! `prod`): `templates/hub/deployment.yaml`, `secret.yaml`, `pvc.yaml`, `configmap.yaml` and the
//! names of `templates/_helpers-names.tpl`, as z2jh 3.x/4.x have them (the hub container reads
//! the chart values from the Secret mounted at /usr/local/etc/jupyterhub/secret/, the claim is
//! the volume `pvc` mounted at /srv/jupyterhub only for `hub.db.type: sqlite-pvc`, z2jh >= 4.0.0
//! lists `hub.extraContainers` after the hub container and 3.x before it, ...). Each fixture's
//! header says what it covers.
//!
//! Every test follows what the operator does (`cluster::observe`): the Secret the hub mounts at
//! /usr/local/etc/jupyterhub/secret (`values_secret`), its `values.yaml` (`chart_database`),
//! then `detect_layout` with those chart hints, and checks the Jobs hubgrade would build.
//!
//! Two of these found detection bugs (hub.existingSecret, hub.config's db_url), fixed since.

use std::collections::BTreeMap;

use hubgrade::api::{DatabaseType, HubUpgrade, HubUpgradeSpec};
use hubgrade::cluster::Target;
use hubgrade::cluster::objects::{JobInputs, backup_job, migration_job, rehearsal_job};
use hubgrade::hub::{
    ChartDatabase, HubDatabase, HubLayout, LayoutError, LayoutHints, ServerDatabase, ServerKind,
    SqliteFile, UrlSource, VALUES_KEY, VALUES_MOUNT, chart_database, chart_database_url,
    detect_layout, values_secret,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, PersistentVolumeClaim, PodSpec, Secret, Volume, VolumeMount,
};
use serde_json::{Value, json};

const TARGET_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const UID: &str = "0f1e2d3c-aaaa-bbbb-cccc-000000000000";
/// The Job-owned scratch volume every hubgrade Job adds (`objects.rs`).
const RUN_VOLUME: &str = "hubgrade-run";

// ---------------------------------------------------------------------------------------------
// The fixtures

/// One rendered layout: the hub Deployment and the objects next to it, by name.
struct Rendered {
    deployment: Deployment,
    secrets: BTreeMap<String, Secret>,
    config_maps: BTreeMap<String, ConfigMap>,
    claims: BTreeMap<String, PersistentVolumeClaim>,
    /// tests/z2jh/<layout>/values.yaml: the chart Secret's values.yaml, decoded.
    values_file: String,
}

fn fixture_path(layout: &str, file: &str) -> String {
    format!("{}/tests/z2jh/{layout}/{file}", env!("CARGO_MANIFEST_DIR"))
}

fn parse<T: serde::de::DeserializeOwned>(document: Value, what: &str) -> T {
    serde_json::from_value(document).unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn rendered(layout: &str) -> Rendered {
    let path = fixture_path(layout, "hub.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"));
    let mut deployment = None;
    let (mut secrets, mut config_maps, mut claims) =
        (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
    for document in documents.into_iter().filter(|d| !d.is_null()) {
        let name = document["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{path}: an object without a name"))
            .to_string();
        let kind = document["kind"].as_str().unwrap_or_default().to_string();
        let what = format!("{path}: {kind} {name}");
        match kind.as_str() {
            "Deployment" => {
                assert!(deployment.is_none(), "{path}: one Deployment only");
                deployment = Some(parse(document, &what));
            }
            "Secret" => {
                secrets.insert(name, parse(document, &what));
            }
            "ConfigMap" => {
                config_maps.insert(name, parse(document, &what));
            }
            "PersistentVolumeClaim" => {
                claims.insert(name, parse(document, &what));
            }
            other => panic!("{path}: unexpected kind {other}"),
        }
    }
    let values_path = fixture_path(layout, "values.yaml");
    Rendered {
        deployment: deployment.unwrap_or_else(|| panic!("{path}: no Deployment")),
        secrets,
        config_maps,
        claims,
        values_file: std::fs::read_to_string(&values_path)
            .unwrap_or_else(|e| panic!("reading {values_path}: {e}")),
    }
}

impl Rendered {
    fn name(&self) -> &str {
        self.deployment.metadata.name.as_deref().unwrap_or_default()
    }

    fn namespace(&self) -> &str {
        self.deployment
            .metadata
            .namespace
            .as_deref()
            .unwrap_or_default()
    }

    fn pod(&self) -> &PodSpec {
        self.deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("a pod template")
    }

    fn container(&self, name: &str) -> &Container {
        self.pod()
            .containers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// A key of a Secret of the fixture, decoded.
    fn secret_key(&self, secret: &str, key: &str) -> Option<String> {
        let secret = self.secrets.get(secret)?;
        let bytes = secret.data.as_ref()?.get(key)?;
        Some(String::from_utf8(bytes.0.clone()).expect("UTF-8"))
    }

    /// The values.yaml of the hub Secret, as the operator finds it: the Secret mounted at
    /// /usr/local/etc/jupyterhub/secret in the hub container.
    fn chart_values(&self, container: Option<&str>) -> Option<String> {
        let name = values_secret(&self.deployment, container)?;
        self.secret_key(&name, VALUES_KEY)
    }
}

/// Every layout folder of tests/z2jh/.
const LAYOUTS: &[&str] = &[
    "defaults",
    "release-prefixed",
    "pvc-subpath",
    "extra-container",
    "extra-container-3x",
    "postgres",
    "mysql",
    "sqlite-memory",
    "other-sqlite",
    "other-sqlite-extra-volume",
    "other-postgresql",
    "existing-secret-postgres",
    "db-url-in-hub-config",
];

// ---------------------------------------------------------------------------------------------
// The operator's steps

fn spec_json(deployment: &str, extra: Value) -> Value {
    let mut spec = json!({"hub": {"deployment": deployment}, "targetImage": TARGET_IMAGE});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    spec
}

fn spec(deployment: &str, extra: Value) -> HubUpgradeSpec {
    serde_json::from_value(spec_json(deployment, extra)).expect("a HubUpgrade spec")
}

/// What the operator does (`observe::chart_values`, then `Target::layout_with_chart`): the
/// chart values are read only when the spec leaves the database to detection.
fn detect_with(r: &Rendered, spec: &HubUpgradeSpec) -> Result<HubLayout, LayoutError> {
    let hints = LayoutHints::from(spec);
    let chart = if hints.database.kind == DatabaseType::Auto {
        r.chart_values(hints.container.as_deref())
            .as_deref()
            .and_then(chart_database)
    } else {
        None
    };
    detect_layout(&r.deployment, LayoutHints { chart, ..hints })
}

fn detect(r: &Rendered) -> Result<HubLayout, LayoutError> {
    detect_with(r, &spec(r.name(), json!({})))
}

fn target(r: &Rendered, extra: Value) -> Target {
    let upgrade: HubUpgrade = serde_json::from_value(json!({
        "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
        "metadata": {"name": "to-4-2", "namespace": r.namespace(), "uid": UID},
        "spec": spec_json(r.name(), extra),
    }))
    .expect("a HubUpgrade");
    Target::resolve(&upgrade, "hubgrade:0.1.0").expect("a target")
}

struct Jobs {
    backup: PodSpec,
    migration: PodSpec,
    rehearsal: Option<PodSpec>,
}

fn pod_of(job: Job) -> PodSpec {
    job.spec
        .and_then(|s| s.template.spec)
        .expect("a Job with a pod template")
}

fn jobs(r: &Rendered, target: &Target, layout: &HubLayout) -> Jobs {
    let inputs = JobInputs {
        target,
        hub: &r.deployment,
        layout,
    };
    Jobs {
        backup: pod_of(backup_job(&inputs)),
        migration: pod_of(migration_job(&inputs)),
        rehearsal: rehearsal_job(&inputs, Some("node-1")).map(pod_of),
    }
}

fn all_containers(pod: &PodSpec) -> Vec<&Container> {
    pod.init_containers
        .iter()
        .flatten()
        .chain(pod.containers.iter())
        .collect()
}

fn names(pod: &PodSpec) -> Vec<&str> {
    all_containers(pod)
        .iter()
        .map(|c| c.name.as_str())
        .collect()
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    all_containers(pod)
        .into_iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no container {name} in {:?}", names(pod)))
}

fn mounts(container: &Container) -> Vec<VolumeMount> {
    container.volume_mounts.clone().unwrap_or_default()
}

fn volume<'a>(pod: &'a PodSpec, name: &str) -> &'a Volume {
    pod.volumes
        .iter()
        .flatten()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no volume {name}"))
}

fn claim_of(volume: &Volume) -> Option<&str> {
    volume
        .persistent_volume_claim
        .as_ref()
        .map(|c| c.claim_name.as_str())
}

fn secret_of(volume: &Volume) -> Option<&str> {
    volume
        .secret
        .as_ref()
        .and_then(|s| s.secret_name.as_deref())
}

fn args(container: &Container) -> Vec<String> {
    container.args.clone().unwrap_or_default()
}

/// The value after `--flag` in a container's arguments.
fn flag(container: &Container, name: &str) -> Option<String> {
    let args = args(container);
    let at = args.iter().position(|a| a == &format!("--{name}"))?;
    args.get(at + 1).cloned()
}

fn sqlite(path: &str, claim: &str, volume: &str, sub_path: Option<&str>) -> HubDatabase {
    HubDatabase::Sqlite(SqliteFile {
        path: path.into(),
        volume_claim: claim.into(),
        volume_name: volume.into(),
        mount_path: "/srv/jupyterhub".into(),
        sub_path: sub_path.map(str::to_string),
    })
}

fn from_chart_values(kind: ServerKind, secret: &str) -> HubDatabase {
    HubDatabase::Server(ServerDatabase {
        kind,
        url: UrlSource::ChartValues {
            secret: secret.into(),
            volume: "secret".into(),
            existing: None,
        },
    })
}

/// The hub container's own mounts, plus hubgrade's read-only scratch folder: what the
/// migration's `upgrade-db` container must mount.
fn hub_mounts_and_run(hub: &Container) -> Vec<VolumeMount> {
    let mut expected = mounts(hub);
    expected.push(VolumeMount {
        name: RUN_VOLUME.into(),
        mount_path: "/hubgrade-run".into(),
        read_only: Some(true),
        ..Default::default()
    });
    expected
}

// ---------------------------------------------------------------------------------------------
// The fixtures are what the chart renders

/// Each fixture holds together as a z2jh rendering: the Secret's values.yaml is the decoded
/// file next to it, the ConfigMap and Secret are named as the Deployment (all three are
/// `jupyterhub.hub.fullname`), every ConfigMap, Secret and claim the pod mounts is in the
/// fixture, and the values' own names agree with z2jh's name templates in the ConfigMap.
#[test]
fn every_fixture_holds_together_as_a_z2jh_rendering() {
    for layout in LAYOUTS {
        let r = rendered(layout);
        let hub = r.name().to_string();
        assert_eq!(
            r.secret_key(&hub, VALUES_KEY).as_deref(),
            Some(r.values_file.as_str()),
            "{layout}: the Secret's values.yaml is values.yaml"
        );
        assert!(
            r.config_maps.contains_key(&hub),
            "{layout}: ConfigMap {hub}"
        );
        let names = r.config_maps[&hub].data.as_ref().expect("ConfigMap data");
        assert_eq!(
            names.get("hub").map(String::as_str),
            Some(hub.as_str()),
            "{layout}"
        );
        for volume in r.pod().volumes.iter().flatten() {
            if let Some(map) = &volume.config_map {
                assert!(
                    r.config_maps.contains_key(&map.name),
                    "{layout}: {}",
                    map.name
                );
            }
            if let Some(secret) = secret_of(volume) {
                assert!(r.secrets.contains_key(secret), "{layout}: Secret {secret}");
            }
            if let Some(claim) = claim_of(volume) {
                assert!(r.claims.contains_key(claim), "{layout}: claim {claim}");
            }
        }
        // jupyterhub.fullname: fullnameOverride if it is a string, else <release>-<nameOverride
        // or the chart's name>, or just <release> when that contains the name.
        let values: Value = serde_saphyr::from_str(&r.values_file).expect("values.yaml");
        let release = values["Release"]["Name"].as_str().expect("Release.Name");
        let name = values["nameOverride"].as_str().unwrap_or("jupyterhub");
        let fullname = match values["fullnameOverride"].as_str() {
            Some(fullname) => fullname.to_string(),
            None if release.contains(name) => release.to_string(),
            None => format!("{release}-{name}"),
        };
        let expected = match fullname.as_str() {
            "" => "hub".to_string(),
            prefix => format!("{prefix}-hub"),
        };
        assert_eq!(hub, expected, "{layout}: jupyterhub.hub.fullname");
        // The chart's claim exists exactly for sqlite-pvc, and is the name template hub-pvc.
        let db_type = values["hub"]["db"]["type"].as_str().expect("hub.db.type");
        let chart_claim = names.get("hub-pvc").expect("hub-pvc").clone();
        assert_eq!(
            r.claims.contains_key(&chart_claim),
            db_type == "sqlite-pvc",
            "{layout}: the claim {chart_claim} is rendered for sqlite-pvc only"
        );
        assert_eq!(
            r.pod().volumes.iter().flatten().any(|v| v.name == "pvc"),
            db_type == "sqlite-pvc",
            "{layout}: the volume pvc is rendered for sqlite-pvc only"
        );
        let upgrade_db = args(r.container("hub")).contains(&"--upgrade-db".to_string());
        assert_eq!(
            upgrade_db,
            db_type == "sqlite-pvc",
            "{layout}: --upgrade-db"
        );
        assert_eq!(
            values["Release"]["Namespace"].as_str(),
            Some(r.namespace()),
            "{layout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// SQLite on the chart's claim

/// Layout 1, z2jh's defaults (fullnameOverride ""): Deployment, ConfigMap and Secret `hub`,
/// the claim `hub-db-dir` mounted as the volume `pvc` at /srv/jupyterhub.
#[test]
fn defaults_keep_the_database_on_hub_db_dir() {
    let r = rendered("defaults");
    assert_eq!(r.name(), "hub");
    assert_eq!(values_secret(&r.deployment, None).as_deref(), Some("hub"));
    assert_eq!(
        r.chart_values(None).as_deref().and_then(chart_database),
        Some(ChartDatabase::SqlitePvc)
    );
    let layout = detect(&r).expect("a layout");
    assert_eq!(layout.container, "hub");
    assert_eq!(layout.image, "quay.io/jupyterhub/k8s-hub:4.1.0");
    assert_eq!(
        layout.database,
        sqlite(
            "/srv/jupyterhub/jupyterhub.sqlite",
            "hub-db-dir",
            "pvc",
            None
        )
    );
    assert_eq!(layout.config_maps, ["hub"]);
    assert_eq!(layout.secrets, ["hub"]);

    let target = target(&r, json!({}));
    let jobs = jobs(&r, &target, &layout);
    assert_eq!(claim_of(volume(&jobs.backup, "pvc")), Some("hub-db-dir"));
    let agent = container(&jobs.backup, "agent");
    let database_mount = mounts(agent).into_iter().find(|m| m.name == "pvc");
    assert_eq!(
        database_mount.map(|m| (m.mount_path, m.sub_path)),
        Some(("/srv/jupyterhub".to_string(), None))
    );
    assert_eq!(
        flag(agent, "database").as_deref(),
        Some("/srv/jupyterhub/jupyterhub.sqlite")
    );
    assert_eq!(
        flag(agent, "to").as_deref(),
        Some("/srv/jupyterhub/hubgrade-backups/hubgrade-0f1e2d3c-db.sqlite")
    );
    // The migration runs in a pod of the hub's template: its volumes and mounts.
    let upgrade_db = container(&jobs.migration, "upgrade-db");
    assert_eq!(mounts(upgrade_db), hub_mounts_and_run(r.container("hub")));
    assert_eq!(upgrade_db.image.as_deref(), Some(TARGET_IMAGE));
    for hub_volume in r.pod().volumes.iter().flatten() {
        assert_eq!(volume(&jobs.migration, &hub_volume.name), hub_volume);
    }
    let pin = container(&jobs.migration, "pin-database");
    assert_eq!(
        flag(pin, "hub-config").as_deref(),
        Some("/usr/local/etc/jupyterhub/jupyterhub_config.py")
    );
    assert_eq!(
        flag(pin, "expect-url").as_deref(),
        Some("sqlite:////srv/jupyterhub/jupyterhub.sqlite")
    );
    assert!(jobs.rehearsal.is_some(), "an SQLite hub is rehearsed");
}

/// Layout 2, fullnameOverride null, release prod: every name is prefixed `prod-jupyterhub-`
/// (_helpers-names.tpl); the pod's volume names do not change.
#[test]
fn release_prefixed_names_are_found_where_the_chart_puts_them() {
    let r = rendered("release-prefixed");
    assert_eq!(r.name(), "prod-jupyterhub-hub");
    assert_eq!(r.namespace(), "prod");
    assert_eq!(
        values_secret(&r.deployment, None).as_deref(),
        Some("prod-jupyterhub-hub")
    );
    assert!(r.claims.contains_key("prod-jupyterhub-hub-db-dir"));
    let layout = detect(&r).expect("a layout");
    assert_eq!(layout.container, "hub");
    assert_eq!(
        layout.database,
        sqlite(
            "/srv/jupyterhub/jupyterhub.sqlite",
            "prod-jupyterhub-hub-db-dir",
            "pvc",
            None
        )
    );
    assert_eq!(layout.config_maps, ["prod-jupyterhub-hub"]);
    assert_eq!(layout.secrets, ["prod-jupyterhub-hub"]);

    let target = target(&r, json!({}));
    let jobs = jobs(&r, &target, &layout);
    assert_eq!(
        claim_of(volume(&jobs.backup, "pvc")),
        Some("prod-jupyterhub-hub-db-dir")
    );
    assert_eq!(
        jobs.migration.service_account_name.as_deref(),
        Some("prod-jupyterhub-hub")
    );
    assert_eq!(
        secret_of(volume(&jobs.migration, "secret")),
        Some("prod-jupyterhub-hub")
    );
    assert_eq!(
        volume(&jobs.migration, "config")
            .config_map
            .as_ref()
            .map(|m| m.name.as_str()),
        Some("prod-jupyterhub-hub")
    );
}

/// Layout 3, hub.db.pvc.subPath "hubdb": the hub sees the claim's folder hubdb at
/// /srv/jupyterhub; every container hubgrade mounts the claim in sees the same.
#[test]
fn a_pvc_sub_path_is_kept_by_every_job() {
    let r = rendered("pvc-subpath");
    let hub_mount = mounts(r.container("hub"))
        .into_iter()
        .find(|m| m.name == "pvc")
        .expect("the hub mounts pvc");
    assert_eq!(hub_mount.sub_path.as_deref(), Some("hubdb"));
    let layout = detect(&r).expect("a layout");
    assert_eq!(
        layout.database,
        sqlite(
            "/srv/jupyterhub/jupyterhub.sqlite",
            "hub-db-dir",
            "pvc",
            Some("hubdb")
        )
    );

    let target = target(&r, json!({}));
    let jobs = jobs(&r, &target, &layout);
    let rehearsal = jobs.rehearsal.as_ref().expect("a rehearsal");
    for (pod, name) in [
        (&jobs.backup, "agent"),
        (&jobs.migration, "pin-database"),
        (&jobs.migration, "upgrade-db"),
        (&jobs.migration, "report-revision"),
        (rehearsal, "copy-database"),
        (rehearsal, "upgrade-db"),
    ] {
        let mount = mounts(container(pod, name))
            .into_iter()
            .find(|m| m.name == "pvc")
            .unwrap_or_else(|| panic!("{name} mounts the claim"));
        assert_eq!(
            (mount.mount_path.as_str(), mount.sub_path.as_deref()),
            ("/srv/jupyterhub", Some("hubdb")),
            "{name}"
        );
        assert_eq!(claim_of(volume(pod, "pvc")), Some("hub-db-dir"), "{name}");
    }
}

/// Layout 4, hub.extraContainers: z2jh 4.x lists the sidecar after the hub container, 3.x
/// before it (PR #3546). Either way the hub container is `hub`, the sidecar's own claim mount
/// does not count, nor does its Secret (`litestream-config`, which only the sidecar mounts:
/// not the hub's configuration, so not in its backup), and hubgrade's Jobs run only hubgrade's
/// containers and the hub-derived upgrade-db.
#[test]
fn a_sidecar_is_neither_the_hub_nor_run_by_the_jobs() {
    for (layout, order, image) in [
        (
            "extra-container",
            ["hub", "litestream"],
            "quay.io/jupyterhub/k8s-hub:4.1.0",
        ),
        (
            "extra-container-3x",
            ["litestream", "hub"],
            "quay.io/jupyterhub/k8s-hub:3.3.8",
        ),
    ] {
        let r = rendered(layout);
        let containers: Vec<&str> = r.pod().containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(containers, order, "{layout}: the chart's container order");
        assert_eq!(values_secret(&r.deployment, None).as_deref(), Some("hub"));
        let layout_found = detect(&r).unwrap_or_else(|e| panic!("{layout}: {e}"));
        assert_eq!(layout_found.container, "hub", "{layout}");
        assert_eq!(layout_found.image, image, "{layout}");
        assert_eq!(
            layout_found.database,
            sqlite(
                "/srv/jupyterhub/jupyterhub.sqlite",
                "hub-db-dir",
                "pvc",
                None
            ),
            "{layout}"
        );
        assert_eq!(layout_found.secrets, ["hub"], "{layout}");

        let target = target(&r, json!({}));
        let jobs = jobs(&r, &target, &layout_found);
        let rehearsal = jobs.rehearsal.as_ref().expect("a rehearsal");
        assert_eq!(names(&jobs.backup), ["agent"], "{layout}");
        assert_eq!(
            names(&jobs.migration),
            ["pin-database", "upgrade-db", "report-revision"],
            "{layout}"
        );
        assert_eq!(
            names(rehearsal),
            [
                "copy-database",
                "pin-database",
                "upgrade-db",
                "report-revision"
            ],
            "{layout}"
        );
        for pod in [&jobs.backup, &jobs.migration, rehearsal] {
            for c in all_containers(pod) {
                let image = c.image.as_deref().unwrap_or_default();
                assert!(
                    image == TARGET_IMAGE || image == "hubgrade:0.1.0",
                    "{layout}: {} runs {image}",
                    c.name
                );
            }
        }
        // upgrade-db is the hub container's copy, not the sidecar's.
        let upgrade_db = container(&jobs.migration, "upgrade-db");
        assert_eq!(
            mounts(upgrade_db),
            hub_mounts_and_run(r.container("hub")),
            "{layout}"
        );
        assert_eq!(
            upgrade_db.args.as_deref(),
            Some(
                &[
                    "upgrade-db".to_string(),
                    "--config=/hubgrade-run/jupyterhub_config.py".to_string()
                ][..]
            ),
            "{layout}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Server databases

/// The Jobs of a hub whose database URL is in the chart values: the backup mounts the hub
/// Secret `secret_name` read-only at /usr/local/etc/jupyterhub/secret and no claim, the agent is
/// pointed there; no rehearsal; the migration runs the hub's own configuration, unpinned.
fn assert_server_jobs(r: &Rendered, layout: &HubLayout, secret_name: &str) {
    let target = target(r, json!({}));
    let jobs = jobs(r, &target, layout);
    let volumes = jobs.backup.volumes.clone().unwrap_or_default();
    assert!(
        volumes.iter().all(|v| v.persistent_volume_claim.is_none()),
        "no claim"
    );
    assert_eq!(
        volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["secret", RUN_VOLUME]
    );
    assert_eq!(secret_of(&volumes[0]), Some(secret_name));
    let agent = container(&jobs.backup, "agent");
    assert!(
        mounts(agent).contains(&VolumeMount {
            name: "secret".into(),
            mount_path: VALUES_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        }),
        "{:?}",
        mounts(agent)
    );
    assert_eq!(
        args(agent).first().map(String::as_str),
        Some("server-backup")
    );
    assert_eq!(flag(agent, "values").as_deref(), Some(VALUES_MOUNT));
    assert!(
        jobs.rehearsal.is_none(),
        "a server database is not rehearsed"
    );
    assert_eq!(names(&jobs.migration), ["upgrade-db", "report-revision"]);
    let upgrade_db = container(&jobs.migration, "upgrade-db");
    assert_eq!(
        upgrade_db.args.as_deref(),
        Some(
            &[
                "upgrade-db".to_string(),
                "--config=/usr/local/etc/jupyterhub/jupyterhub_config.py".to_string()
            ][..]
        )
    );
    assert_eq!(mounts(upgrade_db), hub_mounts_and_run(r.container("hub")));
    let report = container(&jobs.migration, "report-revision");
    assert_eq!(flag(report, "values").as_deref(), Some(VALUES_MOUNT));
}

/// Layout 5, hub.db.type postgres: no claim; the URL is hub.db.url, the password the Secret
/// key hub.db.password (PGPASSWORD for the hub), both read from the hub Secret.
#[test]
fn postgres_is_reached_through_the_hub_secret() {
    let r = rendered("postgres");
    assert!(r.claims.is_empty());
    let values = r.chart_values(None).expect("values.yaml");
    assert_eq!(chart_database(&values), Some(ChartDatabase::Postgres));
    let layout = detect(&r).expect("a layout");
    assert_eq!(
        layout.database,
        from_chart_values(ServerKind::Postgres, "hub")
    );
    assert_eq!(layout.secrets, ["hub"]);
    // What the agent reads in the mounted Secret: values.yaml and hub.db.password.
    let password = r.secret_key("hub", "hub.db.password");
    assert_eq!(password.as_deref(), Some("s3cr3t/p@ss:w0rd"));
    assert_eq!(
        chart_database_url(&values, password.as_deref()).as_deref(),
        Ok(
            "postgresql://jupyterhub:s3cr3t%2Fp%40ss%3Aw0rd@postgres.databases.svc.cluster.local:5432/jupyterhub"
        )
    );
    assert_server_jobs(&r, &layout, "hub");
}

/// Layout 6, hub.db.type mysql, the URL as z2jh documents it (password in the URL, no
/// hub.db.password): the URL is used as is.
#[test]
fn mysql_is_reached_through_the_hub_secret() {
    let r = rendered("mysql");
    let values = r.chart_values(None).expect("values.yaml");
    assert_eq!(chart_database(&values), Some(ChartDatabase::Mysql));
    let layout = detect(&r).expect("a layout");
    assert_eq!(layout.database, from_chart_values(ServerKind::Mysql, "hub"));
    let password = r.secret_key("hub", "hub.db.password");
    assert_eq!(password, None);
    assert_eq!(
        chart_database_url(&values, password.as_deref()).as_deref(),
        Ok("mysql+pymysql://jupyterhub:hub-pw-1@mysql.databases.svc.cluster.local:3306/jupyterhub")
    );
    assert_server_jobs(&r, &layout, "hub");
}

/// Layout 8c, hub.db.type other with a postgresql+psycopg2 URL: PostgreSQL, URL as is (z2jh
/// ignores hub.db.password for type other).
#[test]
fn other_with_a_postgresql_url_is_postgres() {
    let r = rendered("other-postgresql");
    let values = r.chart_values(None).expect("values.yaml");
    assert_eq!(
        chart_database(&values),
        Some(ChartDatabase::Other {
            scheme: Some("postgresql+psycopg2".into())
        })
    );
    let layout = detect(&r).expect("a layout");
    assert_eq!(
        layout.database,
        from_chart_values(ServerKind::Postgres, "hub")
    );
    assert_eq!(
        chart_database_url(&values, Some("ignored for type other")).as_deref(),
        Ok(
            "postgresql+psycopg2://jupyterhub:hub-pw-2@postgres.databases.svc.cluster.local:5432/jupyterhub"
        )
    );
    assert_server_jobs(&r, &layout, "hub");
}

// ---------------------------------------------------------------------------------------------
// Refusals

/// Layout 7, hub.db.type sqlite-memory: nothing to back up, refused naming the values.
#[test]
fn sqlite_memory_is_refused() {
    let r = rendered("sqlite-memory");
    assert!(r.claims.is_empty());
    assert_eq!(
        detect(&r),
        Err(LayoutError::InMemory(
            "hub.db.type: sqlite-memory in the hub Secret's values.yaml".into()
        ))
    );
}

/// Layout 8a, hub.db.type other with sqlite:////srv/jupyterhub/custom.sqlite and nothing else:
/// the chart mounts nothing at /srv/jupyterhub (the file is on the container's own file system,
/// gone with the pod), so there is no claim to keep it on: refused, with or without the path
/// said in the spec.
#[test]
fn other_with_an_sqlite_file_off_any_claim_is_refused() {
    let r = rendered("other-sqlite");
    assert!(r.claims.is_empty());
    assert!(
        mounts(r.container("hub"))
            .iter()
            .all(|m| !m.mount_path.starts_with("/srv/jupyterhub")),
        "z2jh mounts nothing at /srv/jupyterhub for type other"
    );
    let values = r.chart_values(None).expect("values.yaml");
    assert_eq!(
        chart_database(&values),
        Some(ChartDatabase::Other {
            scheme: Some("sqlite".into())
        })
    );
    assert_eq!(
        detect(&r),
        Err(LayoutError::NoDatabaseVolume {
            path: "the file of hub.db.url (hub.db.type: other and hub.db.url sqlite://... in the \
                   hub Secret's values.yaml)"
                .into(),
            container: "hub".into(),
        })
    );
    let said = spec(
        "hub",
        json!({"database": {"sqlitePath": "/srv/jupyterhub/custom.sqlite"}}),
    );
    assert_eq!(
        detect_with(&r, &said),
        Err(LayoutError::NoDatabaseVolume {
            path: "/srv/jupyterhub/custom.sqlite".into(),
            container: "hub".into(),
        })
    );
}

/// Layout 8b, hub.db.type other with an SQLite URL, on the user's claim (hub.extraVolumes):
/// hubgrade does not take the file's path out of hub.db.url, so it asks for
/// spec.database.sqlitePath; given it, the file is on the user's claim, and the Jobs mount that
/// claim.
#[test]
fn other_with_an_sqlite_file_on_a_users_claim_needs_the_path_said() {
    let r = rendered("other-sqlite-extra-volume");
    let error = detect(&r).expect_err("the path is not taken from hub.db.url");
    assert!(
        matches!(&error, LayoutError::NoDatabaseVolume { path, .. }
            if path.starts_with("the file of hub.db.url")),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("set spec.database.sqlitePath"),
        "{error}"
    );
    let said = spec(
        "hub",
        json!({"database": {"sqlitePath": "/srv/jupyterhub/custom.sqlite"}}),
    );
    let layout = detect_with(&r, &said).expect("a layout");
    assert_eq!(
        layout.database,
        sqlite(
            "/srv/jupyterhub/custom.sqlite",
            "hub-db-custom",
            "hub-db",
            None
        )
    );
    let target = target(
        &r,
        json!({"database": {"sqlitePath": "/srv/jupyterhub/custom.sqlite"}}),
    );
    let jobs = jobs(&r, &target, &layout);
    assert_eq!(
        claim_of(volume(&jobs.backup, "hub-db")),
        Some("hub-db-custom")
    );
    assert_eq!(
        flag(container(&jobs.backup, "agent"), "database").as_deref(),
        Some("/srv/jupyterhub/custom.sqlite")
    );
    // The hub's configuration names that file: the pin's check is the URL of hub.db.url.
    let values: Value = serde_saphyr::from_str(&r.values_file).expect("values.yaml");
    assert_eq!(
        flag(container(&jobs.migration, "pin-database"), "expect-url").as_deref(),
        values["hub"]["db"]["url"].as_str()
    );
}

// ---------------------------------------------------------------------------------------------
// z2jh layouts hubgrade once got wrong

/// hub.existingSecret with a PostgreSQL hub: what hubgrade gets right today.
#[test]
fn existing_secret_postgres_is_detected_as_postgres() {
    let r = rendered("existing-secret-postgres");
    let layout = detect(&r).expect("a layout");
    assert_eq!(
        layout.database,
        HubDatabase::Server(ServerDatabase {
            kind: ServerKind::Postgres,
            url: UrlSource::ChartValues {
                secret: "hub".into(),
                volume: "secret".into(),
                existing: Some(("hub-db-credentials".into(), "existing-secret".into())),
            },
        })
    );
    assert_eq!(layout.secrets, ["hub", "hub-db-credentials"]);
    // The password is only in the user's Secret, which the hub mounts at existing-secret/.
    assert_eq!(r.secret_key("hub", "hub.db.password"), None);
    assert_eq!(
        r.secret_key("hub-db-credentials", "hub.db.password")
            .as_deref(),
        Some("from-existing-secret")
    );
    assert!(mounts(r.container("hub")).iter().any(|m| {
        m.name == "existing-secret" && m.mount_path == "/usr/local/etc/jupyterhub/existing-secret/"
    }));
}

/// With hub.existingSecret, z2jh's z2jh.py reads `hub.db.password` from
/// /usr/local/etc/jupyterhub/existing-secret/ first and merges that Secret's values.yaml over
/// the chart's (jupyterhub/files/hub/z2jh.py: get_secret_value, _load_config), so the hub
/// connects with the user's Secret's password: the Jobs that read the URL see the user's Secret
/// where the hub does, and the agent reads it first. (Found by this test: the Jobs mounted only
/// the chart's Secret.)
#[test]
fn existing_secret_is_read_where_the_hub_reads_it() {
    let r = rendered("existing-secret-postgres");
    let layout = detect(&r).expect("a layout");
    let target = target(&r, json!({}));
    let jobs = jobs(&r, &target, &layout);
    let agent = container(&jobs.backup, "agent");
    let mount = mounts(agent)
        .into_iter()
        .find(|m| m.mount_path.trim_end_matches('/') == "/usr/local/etc/jupyterhub/existing-secret")
        .expect("the backup Job mounts the hub's existing-secret where the hub does");
    assert_eq!(
        secret_of(volume(&jobs.backup, &mount.name)),
        Some("hub-db-credentials")
    );
}

/// db_url set through hub.config (hub.db.type left at sqlite-pvc): the chart still renders the
/// claim, but the values name the database the hub's configuration really connects to.
#[test]
fn db_url_in_hub_config_is_rendered_as_sqlite_pvc() {
    let r = rendered("db-url-in-hub-config");
    let values = r.chart_values(None).expect("values.yaml");
    assert_eq!(
        chart_database(&values),
        Some(ChartDatabase::Other {
            scheme: Some("postgresql".into())
        })
    );
    let parsed: Value = serde_saphyr::from_str(&values).expect("values.yaml");
    assert!(
        parsed["hub"]["config"]["JupyterHub"]["db_url"]
            .as_str()
            .is_some_and(|url| url.starts_with("postgresql://"))
    );
    assert!(r.claims.contains_key("hub-db-dir"));
}

/// z2jh's jupyterhub_config.py sets c.JupyterHub.db_url from hub.db.type first, then applies
/// hub.config (`c[app].update(cfg)`), so hub.config.JupyterHub.db_url wins: this hub uses
/// PostgreSQL, not the SQLite file on hub-db-dir that the chart still mounts. (Found by this
/// test: hubgrade read only hub.db.type and took the hub for SQLite.)
#[test]
fn db_url_in_hub_config_is_the_database_the_hub_uses() {
    let r = rendered("db-url-in-hub-config");
    let layout = detect(&r).expect("a layout");
    assert_eq!(
        layout.server().map(|s| s.kind),
        Some(ServerKind::Postgres),
        "the hub uses {:?}",
        layout.database
    );
}
