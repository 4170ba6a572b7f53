//! Finding the hub container, its SQLite database and its configuration in a Deployment's pod
//! template. Pure: the caller fetched the Deployment.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec, Volume};

use super::values::{secret_volume_at, values_volume};
use super::{
    ChartDatabase, DEFAULT_CONTAINER, EXISTING_SECRET_MOUNT, VALUES_MOUNT, Z2JH_SQLITE_PATH,
};
use crate::api::{DatabaseSpec, DatabaseType, HubUpgradeSpec};

/// What the user said about where to look (`spec.hub.container`, `spec.database`): the only
/// parts of a HubUpgrade that layout detection reads.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutHints {
    pub container: Option<String>,
    pub database: DatabaseSpec,
    /// What the hub's z2jh chart values say about its database (read from the hub Secret when
    /// `database.type` is Auto); `None`: no values found.
    pub chart: Option<ChartDatabase>,
}

impl From<&HubUpgradeSpec> for LayoutHints {
    fn from(spec: &HubUpgradeSpec) -> LayoutHints {
        LayoutHints {
            container: spec.hub.container.clone(),
            database: spec.database.clone(),
            chart: None,
        }
    }
}

/// What hubgrade needs to know about a hub to upgrade it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubLayout {
    /// Name of the hub container.
    pub container: String,
    /// Its image.
    pub image: String,
    /// Where the hub keeps its database.
    pub database: HubDatabase,
    /// ConfigMaps and Secrets the hub container mounts: its configuration, what a roll back to
    /// the old image needs to run exactly as before, and so what the configuration backup
    /// holds (volumes only other containers mount are not the hub's configuration).
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
}

impl HubLayout {
    /// The SQLite file, for a hub on one.
    pub fn sqlite(&self) -> Option<&SqliteFile> {
        match &self.database {
            HubDatabase::Sqlite(file) => Some(file),
            HubDatabase::Server(_) => None,
        }
    }

    /// The database server, for a hub on PostgreSQL or MySQL.
    pub fn server(&self) -> Option<&ServerDatabase> {
        match &self.database {
            HubDatabase::Server(server) => Some(server),
            HubDatabase::Sqlite(_) => None,
        }
    }
}

/// The hub's database: an SQLite file on a claim, or a database on a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HubDatabase {
    Sqlite(SqliteFile),
    Server(ServerDatabase),
}

/// An SQLite database file on a PersistentVolumeClaim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteFile {
    /// Path of the database file in the hub container.
    pub path: String,
    /// The PersistentVolumeClaim holding the database file.
    pub volume_claim: String,
    /// Name of the pod volume of that claim, and where the hub container mounts it.
    pub volume_name: String,
    pub mount_path: String,
    /// The mount's `subPath` (z2jh's `hub.db.pvc.subPath`): the folder of the claim that the
    /// hub sees at `mount_path`. Every pod hubgrade mounts the claim in uses the same.
    pub sub_path: Option<String>,
}

/// A PostgreSQL or MySQL/MariaDB database, and where its URL (password included) is found.
/// The operator never reads the URL itself: the Jobs that need it get it from its Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerDatabase {
    pub kind: ServerKind,
    pub url: UrlSource,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::Display)]
pub enum ServerKind {
    #[strum(to_string = "PostgreSQL")]
    Postgres,
    #[strum(to_string = "MySQL")]
    Mysql,
}

/// Where a server database's URL is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UrlSource {
    /// z2jh: the hub Secret's `values.yaml` (`hub.db.url`) and its key `hub.db.password`; the
    /// hub pod mounts the Secret as its volume `volume`. With `hub.existingSecret`, the user's
    /// Secret (and its pod volume) too, read first as z2jh's `z2jh.py` reads it.
    ChartValues {
        secret: String,
        volume: String,
        existing: Option<(String, String)>,
    },
    /// `spec.database.urlSecret`: a Secret key holding the whole URL.
    Secret { name: String, key: String },
}

impl ServerDatabase {
    /// For messages: `PostgreSQL (URL from hub.db.url in the hub Secret hub)`.
    pub fn described(&self) -> String {
        match &self.url {
            UrlSource::ChartValues { secret, .. } => format!(
                "{} (URL from hub.db.url in the Secret {secret}'s {})",
                self.kind,
                super::VALUES_KEY
            ),
            UrlSource::Secret { name, key } => {
                format!("{} (URL from the Secret {name}, key {key})", self.kind)
            }
        }
    }
}

/// Why the layout could not be found; each says which spec field settles it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("the hub Deployment has no pod spec")]
    NoPodSpec,
    #[error(
        "the hub Deployment has no container named {wanted:?} (it has: {found}); set spec.hub.container"
    )]
    ContainerNotFound { wanted: String, found: String },
    #[error(
        "the hub Deployment has several containers ({found}) and none is named \"hub\"; set spec.hub.container"
    )]
    ContainerAmbiguous { found: String },
    #[error("the hub container has no image")]
    NoImage,
    #[error(
        "the hub's database is {0}, but the hub mounts no z2jh values Secret at {VALUES_MOUNT} to read its URL from; set spec.database.urlSecret to a Secret key holding the URL"
    )]
    NoServerUrl(ServerKind),
    #[error(
        "the hub's database is not one hubgrade knows ({said}); set spec.database.type (SQLite, PostgreSQL or MySQL) and where to find it"
    )]
    DetectedUnsupported { said: String },
    #[error(
        "the hub keeps its database in memory ({0}): it starts empty on every restart, so there is nothing to back up or migrate; change the hub image with your chart (`helm upgrade`)"
    )]
    InMemory(String),
    #[error(
        "the hub's database {path} is on the {kind} volume {volume}, not on a PersistentVolumeClaim: it does not outlive the pod, so hubgrade cannot keep it across the upgrade; move it to a claim (z2jh: hub.db.type sqlite-pvc)"
    )]
    NotOnAClaim {
        path: String,
        volume: String,
        kind: &'static str,
    },
    #[error(
        "could not find the hub's SQLite database: no PersistentVolumeClaim is mounted at the directory of {path} in container {container}; set spec.database.sqlitePath and spec.database.volumeClaim"
    )]
    NoDatabaseVolume { path: String, container: String },
    #[error(
        "spec.database.volumeClaim {claim:?} is not mounted in the hub container at the directory of {path}"
    )]
    ClaimNotMounted { claim: String, path: String },
}

pub fn detect_layout(
    deployment: &Deployment,
    hints: impl Into<LayoutHints>,
) -> Result<HubLayout, LayoutError> {
    let spec = hints.into();
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or(LayoutError::NoPodSpec)?;
    let container = find_container(pod, spec.container.as_deref())?;
    let image = container
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or(LayoutError::NoImage)?;
    let database = find_database(pod, container, &spec)?;
    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    let mounted = |volume: &&Volume| {
        container
            .volume_mounts
            .iter()
            .flatten()
            .any(|mount| mount.name == volume.name)
    };
    for volume in pod.volumes.iter().flatten().filter(mounted) {
        if let Some(map) = &volume.config_map {
            config_maps.push(map.name.clone());
        }
        if let Some(secret) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(secret);
        }
    }
    config_maps.sort();
    config_maps.dedup();
    secrets.sort();
    secrets.dedup();
    Ok(HubLayout {
        container: container.name.clone(),
        image,
        database,
        config_maps,
        secrets,
    })
}

/// The hub's database: what `spec.database` says, else what the hub's chart values say, else
/// an SQLite file at z2jh's path.
fn find_database(
    pod: &PodSpec,
    container: &Container,
    spec: &LayoutHints,
) -> Result<HubDatabase, LayoutError> {
    // A server database's URL: the Secret the spec names, else the hub's chart values.
    let server = |kind: ServerKind| -> Result<HubDatabase, LayoutError> {
        let url = match &spec.database.url_secret {
            Some(secret) => UrlSource::Secret {
                name: secret.name.clone(),
                key: secret.key.clone(),
            },
            None => match values_volume(pod, container) {
                Some((secret, volume)) => UrlSource::ChartValues {
                    secret,
                    volume,
                    existing: secret_volume_at(pod, container, EXISTING_SECRET_MOUNT),
                },
                None => return Err(LayoutError::NoServerUrl(kind)),
            },
        };
        Ok(HubDatabase::Server(ServerDatabase { kind, url }))
    };
    match spec.database.kind {
        DatabaseType::Auto | DatabaseType::Sqlite => {}
        DatabaseType::Postgresql => return server(ServerKind::Postgres),
        DatabaseType::Mysql => return server(ServerKind::Mysql),
    }
    let sqlite_path = spec.database.sqlite_path.clone();
    if spec.database.kind == DatabaseType::Auto
        && let Some(chart) = &spec.chart
    {
        match chart {
            ChartDatabase::SqlitePvc => {}
            ChartDatabase::SqliteMemory => return Err(LayoutError::InMemory(chart.described())),
            ChartDatabase::Postgres => return server(ServerKind::Postgres),
            ChartDatabase::Mysql => return server(ServerKind::Mysql),
            ChartDatabase::Other { scheme } => match scheme.as_deref().map(dialect) {
                Some("sqlite") => {}
                Some("postgresql" | "postgres") => return server(ServerKind::Postgres),
                Some("mysql" | "mariadb") => return server(ServerKind::Mysql),
                _ => {
                    return Err(LayoutError::DetectedUnsupported {
                        said: chart.described(),
                    });
                }
            },
        }
        if matches!(chart, ChartDatabase::Other { .. }) && sqlite_path.is_none() {
            // hub.db.url names the file; hubgrade needs it said in the spec.
            return Err(LayoutError::NoDatabaseVolume {
                path: format!("the file of hub.db.url ({})", chart.described()),
                container: container.name.clone(),
            });
        }
    }
    let sqlite_path = sqlite_path.unwrap_or_else(|| Z2JH_SQLITE_PATH.to_string());
    let directory = sqlite_path
        .rsplit_once('/')
        .map(|(d, _)| if d.is_empty() { "/" } else { d })
        .unwrap_or("/");

    // The mount covering the database's directory most closely, backed by a claim.
    let mut best: Option<(String, String, String, Option<String>)> = None;
    // The mount covering it most closely whatever backs it (an emptyDir, a hostPath, ...).
    let mut closest: Option<(&str, &'static str, usize)> = None;
    for mount in container.volume_mounts.iter().flatten() {
        let covers = directory == mount.mount_path
            || directory.starts_with(&format!("{}/", mount.mount_path.trim_end_matches('/')));
        if !covers {
            continue;
        }
        let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name);
        if closest.is_none_or(|(_, _, length)| mount.mount_path.len() > length) {
            closest = Some((
                &mount.name,
                volume.map_or("missing", volume_kind),
                mount.mount_path.len(),
            ));
        }
        let claim = volume
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        if let Some(claim) = claim
            && best
                .as_ref()
                .is_none_or(|(_, _, path, _)| mount.mount_path.len() > path.len())
        {
            best = Some((
                claim,
                mount.name.clone(),
                mount.mount_path.clone(),
                mount.sub_path.clone().filter(|p| !p.is_empty()),
            ));
        }
    }
    let (volume_claim, volume_name, mount_path, sub_path) =
        match (best, &spec.database.volume_claim) {
            (Some(found), None) => found,
            (Some(found), Some(wanted)) if &found.0 == wanted => found,
            (_, Some(wanted)) => {
                return Err(LayoutError::ClaimNotMounted {
                    claim: wanted.clone(),
                    path: sqlite_path,
                });
            }
            (None, None) => {
                if let Some((volume, kind, _)) = closest.filter(|(_, kind, _)| *kind != "missing") {
                    return Err(LayoutError::NotOnAClaim {
                        path: sqlite_path,
                        volume: volume.to_string(),
                        kind,
                    });
                }
                return Err(LayoutError::NoDatabaseVolume {
                    path: sqlite_path,
                    container: container.name.clone(),
                });
            }
        };
    Ok(HubDatabase::Sqlite(SqliteFile {
        path: sqlite_path,
        volume_claim,
        volume_name,
        mount_path,
        sub_path,
    }))
}

/// The dialect of an SQLAlchemy URL scheme: `postgresql+psycopg2` is `postgresql`.
fn dialect(scheme: &str) -> &str {
    scheme.split('+').next().unwrap_or(scheme)
}

/// What backs a pod volume, in the words of its field.
fn volume_kind(volume: &k8s_openapi::api::core::v1::Volume) -> &'static str {
    if volume.persistent_volume_claim.is_some() {
        "persistentVolumeClaim"
    } else if volume.empty_dir.is_some() {
        "emptyDir"
    } else if volume.host_path.is_some() {
        "hostPath"
    } else if volume.config_map.is_some() {
        "configMap"
    } else if volume.secret.is_some() {
        "secret"
    } else if volume.ephemeral.is_some() {
        "ephemeral"
    } else {
        "other"
    }
}

/// The hub container: the one named `wanted`, else the one named `hub`, else the only one.
pub fn find_container<'a>(
    pod: &'a PodSpec,
    wanted: Option<&str>,
) -> Result<&'a Container, LayoutError> {
    let names = || {
        pod.containers
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(wanted) = wanted {
        return pod
            .containers
            .iter()
            .find(|c| c.name == wanted)
            .ok_or_else(|| LayoutError::ContainerNotFound {
                wanted: wanted.to_string(),
                found: names(),
            });
    }
    if let Some(hub) = pod.containers.iter().find(|c| c.name == DEFAULT_CONTAINER) {
        return Ok(hub);
    }
    match pod.containers.as_slice() {
        [only] => Ok(only),
        _ => Err(LayoutError::ContainerAmbiguous { found: names() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn z2jh_hub() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "hub"},
            "spec": {
                "selector": {"matchLabels": {"component": "hub"}},
                "template": {
                    "metadata": {"labels": {"component": "hub"}},
                    "spec": {
                        "containers": [{
                            "name": "hub",
                            "image": "quay.io/jupyterhub/k8s-hub:4.1.0",
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/usr/local/etc/jupyterhub/jupyterhub_config.py", "subPath": "jupyterhub_config.py"},
                                {"name": "secret", "mountPath": "/usr/local/etc/jupyterhub/secret/"},
                                {"name": "pvc", "mountPath": "/srv/jupyterhub"}
                            ]
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "hub"}},
                            {"name": "secret", "secret": {"secretName": "hub"}},
                            {"name": "pvc", "persistentVolumeClaim": {"claimName": "hub-db-dir"}}
                        ]
                    }
                }
            }
        }))
        .expect("deployment")
    }

    fn pod_of(hub: &mut Deployment) -> &mut PodSpec {
        hub.spec
            .as_mut()
            .and_then(|s| s.template.spec.as_mut())
            .expect("pod")
    }

    fn spec(extra: serde_json::Value) -> HubUpgradeSpec {
        let mut base = json!({"hub": {"deployment": "hub"}, "targetImage": "quay.io/jupyterhub/k8s-hub:4.2.0"});
        if let (Some(base), Some(extra)) = (base.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).expect("spec")
    }

    #[test]
    fn finds_the_z2jh_layout() {
        let layout = detect_layout(&z2jh_hub(), &spec(json!({}))).expect("layout");
        assert_eq!(layout.container, "hub");
        assert_eq!(layout.image, "quay.io/jupyterhub/k8s-hub:4.1.0");
        let file = layout.sqlite().expect("SQLite");
        assert_eq!(file.path, "/srv/jupyterhub/jupyterhub.sqlite");
        assert_eq!(file.volume_claim, "hub-db-dir");
        assert_eq!(file.mount_path, "/srv/jupyterhub");
        assert_eq!(layout.config_maps, ["hub"]);
        assert_eq!(layout.secrets, ["hub"]);
    }

    /// Only what the hub container mounts is its configuration: a sidecar's Secret (say, a TLS
    /// certificate another container serves) is not backed up.
    #[test]
    fn the_configuration_is_what_the_hub_container_mounts() {
        let mut hub = z2jh_hub();
        let pod = pod_of(&mut hub);
        let volumes = pod.volumes.get_or_insert_with(Vec::new);
        volumes.push(
            serde_json::from_value(json!({"name": "certs", "secret": {"secretName": "proxy-tls"}}))
                .expect("volume"),
        );
        volumes.push(
            serde_json::from_value(json!({"name": "extra", "configMap": {"name": "hub-extra"}}))
                .expect("volume"),
        );
        pod.containers.push(
            serde_json::from_value(json!({
                "name": "sidecar",
                "image": "nginx",
                "volumeMounts": [{"name": "certs", "mountPath": "/certs"}]
            }))
            .expect("sidecar"),
        );
        let hub_container = pod
            .containers
            .iter_mut()
            .find(|c| c.name == "hub")
            .expect("hub container");
        hub_container
            .volume_mounts
            .get_or_insert_with(Vec::new)
            .push(
                serde_json::from_value(json!({"name": "extra", "mountPath": "/etc/extra"}))
                    .expect("mount"),
            );
        let layout = detect_layout(&hub, &spec(json!({}))).expect("layout");
        assert_eq!(layout.config_maps, ["hub", "hub-extra"]);
        assert_eq!(layout.secrets, ["hub"]);
    }

    #[test]
    fn a_missing_database_volume_names_the_fields_to_set() {
        let mut hub = z2jh_hub();
        let pod = pod_of(&mut hub);
        pod.containers[0]
            .volume_mounts
            .as_mut()
            .expect("mounts")
            .retain(|m| m.name != "pvc");
        let error = detect_layout(&hub, &spec(json!({}))).expect_err("no volume");
        assert!(
            error
                .to_string()
                .contains("set spec.database.sqlitePath and spec.database.volumeClaim")
        );
    }

    #[test]
    fn several_containers_need_the_container_named() {
        let mut hub = z2jh_hub();
        let pod = pod_of(&mut hub);
        pod.containers[0].name = "jupyterhub".into();
        pod.containers.push(Container {
            name: "sidecar".into(),
            image: Some("x:1".into()),
            ..Default::default()
        });
        let error = detect_layout(&hub, &spec(json!({}))).expect_err("ambiguous");
        assert!(
            error.to_string().contains("set spec.hub.container"),
            "{error}"
        );
        let named = detect_layout(
            &hub,
            &spec(json!({"hub": {"deployment": "hub", "container": "jupyterhub"}})),
        );
        assert_eq!(named.expect("named").container, "jupyterhub");
    }

    fn with_chart(chart: ChartDatabase) -> LayoutHints {
        LayoutHints {
            chart: Some(chart),
            ..LayoutHints::from(&spec(json!({})))
        }
    }

    /// A z2jh hub on PostgreSQL or MySQL mounts no claim: the values say which server database
    /// it uses, and its URL is read from the hub Secret the hub mounts (z2jh's `secret`
    /// volume at /usr/local/etc/jupyterhub/secret/).
    #[test]
    fn the_chart_values_name_the_database_a_hub_really_uses() {
        let mut hub = z2jh_hub();
        pod_of(&mut hub).containers[0]
            .volume_mounts
            .as_mut()
            .expect("mounts")
            .retain(|m| m.name != "pvc");
        let from_values = |kind| {
            HubDatabase::Server(ServerDatabase {
                kind,
                url: UrlSource::ChartValues {
                    secret: "hub".into(),
                    volume: "secret".into(),
                    existing: None,
                },
            })
        };
        for (chart, expected) in [
            (ChartDatabase::Postgres, ServerKind::Postgres),
            (ChartDatabase::Mysql, ServerKind::Mysql),
            (
                ChartDatabase::Other {
                    scheme: Some("postgresql+psycopg2".into()),
                },
                ServerKind::Postgres,
            ),
            (
                ChartDatabase::Other {
                    scheme: Some("mysql+pymysql".into()),
                },
                ServerKind::Mysql,
            ),
        ] {
            let layout = detect_layout(&hub, with_chart(chart)).expect("a server database");
            assert_eq!(layout.database, from_values(expected));
        }
        let memory = detect_layout(&hub, with_chart(ChartDatabase::SqliteMemory));
        let text = memory.expect_err("in memory").to_string();
        assert!(
            text.contains("in memory (hub.db.type: sqlite-memory"),
            "{text}"
        );
        let unknown = ChartDatabase::Other {
            scheme: Some("oracle".into()),
        };
        let text = detect_layout(&hub, with_chart(unknown))
            .expect_err("unknown")
            .to_string();
        assert!(text.contains("hub.db.url oracle://..."), "{text}");
        assert!(text.contains("set spec.database.type"), "{text}");
        // sqlite-pvc: what the values say is what the pod shows.
        let layout = detect_layout(&z2jh_hub(), with_chart(ChartDatabase::SqlitePvc));
        let layout = layout.expect("layout");
        assert_eq!(layout.sqlite().expect("SQLite").volume_claim, "hub-db-dir");
        // An explicit database.type wins over the values.
        let explicit = LayoutHints {
            chart: Some(ChartDatabase::Postgres),
            ..LayoutHints::from(&spec(json!({"database": {"type": "SQLite"}})))
        };
        assert!(detect_layout(&z2jh_hub(), explicit).is_ok());
    }

    /// An explicit server type takes its URL from spec.database.urlSecret, else from the
    /// hub's chart values; a hub with neither is refused naming the field to set.
    #[test]
    fn a_server_database_named_in_the_spec_finds_its_url() {
        let secret = spec(json!({"database": {"type": "PostgreSQL",
            "urlSecret": {"name": "hub-db-url", "key": "url"}}}));
        let layout = detect_layout(&z2jh_hub(), &secret).expect("layout");
        assert_eq!(
            layout.server().map(|s| s.url.clone()),
            Some(UrlSource::Secret {
                name: "hub-db-url".into(),
                key: "url".into()
            })
        );
        let values = spec(json!({"database": {"type": "MySQL"}}));
        let layout = detect_layout(&z2jh_hub(), &values).expect("layout");
        assert_eq!(
            layout.server().map(|s| (s.kind, s.url.clone())),
            Some((
                ServerKind::Mysql,
                UrlSource::ChartValues {
                    secret: "hub".into(),
                    volume: "secret".into(),
                    existing: None,
                }
            ))
        );
        let mut bare = z2jh_hub();
        pod_of(&mut bare).containers[0]
            .volume_mounts
            .as_mut()
            .expect("mounts")
            .retain(|m| m.name != "secret");
        let error = detect_layout(&bare, &values).expect_err("no URL");
        assert_eq!(error, LayoutError::NoServerUrl(ServerKind::Mysql));
        assert!(error.to_string().contains("set spec.database.urlSecret"));
    }

    #[test]
    fn a_database_on_an_empty_dir_is_refused_with_the_reason() {
        let mut hub = z2jh_hub();
        let pod = pod_of(&mut hub);
        for volume in pod.volumes.as_mut().expect("volumes") {
            if volume.name == "pvc" {
                volume.persistent_volume_claim = None;
                volume.empty_dir = Some(Default::default());
            }
        }
        let error = detect_layout(&hub, &spec(json!({}))).expect_err("refused");
        assert_eq!(
            error,
            LayoutError::NotOnAClaim {
                path: "/srv/jupyterhub/jupyterhub.sqlite".into(),
                volume: "pvc".into(),
                kind: "emptyDir",
            }
        );
        assert!(error.to_string().contains("does not outlive the pod"));
    }

    #[test]
    fn an_explicit_claim_must_be_the_mounted_one() {
        let error = detect_layout(
            &z2jh_hub(),
            &spec(json!({"database": {"volumeClaim": "other"}})),
        )
        .expect_err("not mounted");
        assert!(matches!(error, LayoutError::ClaimNotMounted { .. }));
    }
}
