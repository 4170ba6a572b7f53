//! Finding the hub container, its SQLite database and its configuration in a Deployment's pod
//! template. Pure: the caller fetched the Deployment.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::{DEFAULT_CONTAINER, Z2JH_SQLITE_PATH};
use crate::api::{DatabaseSpec, DatabaseType, HubUpgradeSpec};

/// What the user said about where to look (`spec.hub.container`, `spec.database`): the only
/// parts of a HubUpgrade that layout detection reads.
#[derive(Clone, Debug, PartialEq)]
pub struct LayoutHints {
    pub container: Option<String>,
    pub database: DatabaseSpec,
}

impl From<&HubUpgradeSpec> for LayoutHints {
    fn from(spec: &HubUpgradeSpec) -> LayoutHints {
        LayoutHints {
            container: spec.hub.container.clone(),
            database: spec.database.clone(),
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
    /// Path of the SQLite database file in the hub container.
    pub sqlite_path: String,
    /// The PersistentVolumeClaim holding the database file.
    pub volume_claim: String,
    /// Name of the pod volume of that claim, and where the hub container mounts it.
    pub volume_name: String,
    pub mount_path: String,
    /// The mount's `subPath` (z2jh's `hub.db.pvc.subPath`): the folder of the claim that the
    /// hub sees at `mount_path`. Every pod hubgrade mounts the claim in uses the same.
    pub sub_path: Option<String>,
    /// ConfigMaps and Secrets the hub mounts (its configuration), to be backed up.
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
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
        "database.type {0} is not supported by this version of hubgrade yet; only SQLite hubs can be upgraded"
    )]
    UnsupportedDatabase(&'static str),
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
    match spec.database.kind {
        DatabaseType::Auto | DatabaseType::Sqlite => {}
        DatabaseType::Postgresql => return Err(LayoutError::UnsupportedDatabase("PostgreSQL")),
        DatabaseType::Mysql => return Err(LayoutError::UnsupportedDatabase("MySQL")),
    }
    let sqlite_path = spec
        .database
        .sqlite_path
        .clone()
        .unwrap_or_else(|| Z2JH_SQLITE_PATH.to_string());
    let directory = sqlite_path
        .rsplit_once('/')
        .map(|(d, _)| if d.is_empty() { "/" } else { d })
        .unwrap_or("/");

    // The mount covering the database's directory most closely, backed by a claim.
    let mut best: Option<(String, String, String, Option<String>)> = None;
    for mount in container.volume_mounts.iter().flatten() {
        let covers = directory == mount.mount_path
            || directory.starts_with(&format!("{}/", mount.mount_path.trim_end_matches('/')));
        if !covers {
            continue;
        }
        let claim = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
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
                return Err(LayoutError::NoDatabaseVolume {
                    path: sqlite_path,
                    container: container.name.clone(),
                });
            }
        };

    let mut config_maps = Vec::new();
    let mut secrets = Vec::new();
    for volume in pod.volumes.iter().flatten() {
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
        sqlite_path,
        volume_claim,
        volume_name,
        mount_path,
        sub_path,
        config_maps,
        secrets,
    })
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
        assert_eq!(layout.sqlite_path, "/srv/jupyterhub/jupyterhub.sqlite");
        assert_eq!(layout.volume_claim, "hub-db-dir");
        assert_eq!(layout.mount_path, "/srv/jupyterhub");
        assert_eq!(layout.config_maps, ["hub"]);
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
