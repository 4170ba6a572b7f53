//! What a z2jh hub's chart values say about its database. z2jh mounts the hub Secret at
//! `/usr/local/etc/jupyterhub/secret/`; its key `values.yaml` holds the chart's values, and z2jh's
//! `jupyterhub_config.py` reads `hub.db.type` (`sqlite-pvc`, the default; `sqlite-memory`,
//! `mysql`, `postgres`, `other`) and `hub.db.url` from it. Pure: the caller read the Secret.
//! The values hold secrets: only the database's kind and URL scheme leave this module.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, PodSpec};

use super::find_container;

/// Where z2jh mounts the hub Secret in the hub container.
pub const VALUES_MOUNT: &str = "/usr/local/etc/jupyterhub/secret";
/// The key of the chart values in the hub Secret.
pub const VALUES_KEY: &str = "values.yaml";
/// Where z2jh mounts the user's own Secret (`hub.existingSecret`), read before the hub Secret.
pub const EXISTING_SECRET_MOUNT: &str = "/usr/local/etc/jupyterhub/existing-secret";

/// The hub's database as its chart values describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChartDatabase {
    /// `sqlite-pvc`: `sqlite:///jupyterhub.sqlite` in the hub's working directory, on its claim.
    SqlitePvc,
    /// `sqlite-memory`: `sqlite://`, gone with every restart.
    SqliteMemory,
    Mysql,
    Postgres,
    /// `other`: whatever `hub.db.url` names; its scheme (`sqlite`, `postgresql+psycopg2`, ...).
    Other {
        scheme: Option<String>,
    },
}

impl ChartDatabase {
    /// The values' words for it, for messages: `hub.db.type: postgres`.
    pub fn described(&self) -> String {
        let kind = match self {
            ChartDatabase::SqlitePvc => "sqlite-pvc",
            ChartDatabase::SqliteMemory => "sqlite-memory",
            ChartDatabase::Mysql => "mysql",
            ChartDatabase::Postgres => "postgres",
            ChartDatabase::Other { .. } => "other",
        };
        let url = match self {
            ChartDatabase::Other {
                scheme: Some(scheme),
            } => format!(" and hub.db.url {scheme}://..."),
            _ => String::new(),
        };
        format!("hub.db.type: {kind}{url} in the hub Secret's {VALUES_KEY}")
    }
}

/// The database `values.yaml` describes; `None` when it says nothing about one (z2jh's default
/// is then `sqlite-pvc`) or is not YAML.
pub fn chart_database(values_yaml: &str) -> Option<ChartDatabase> {
    let values: serde_json::Value = serde_saphyr::from_str(values_yaml).ok()?;
    // z2jh's configuration applies `hub.config` after `hub.db`: a db_url there wins.
    if let Some(url) = config_db_url(&values) {
        return Some(ChartDatabase::Other {
            scheme: url.split_once("://").map(|(scheme, _)| scheme.to_string()),
        });
    }
    let db = &values["hub"]["db"];
    let kind = db["type"].as_str().unwrap_or("sqlite-pvc");
    Some(match kind {
        "sqlite-pvc" => ChartDatabase::SqlitePvc,
        "sqlite-memory" => ChartDatabase::SqliteMemory,
        "mysql" => ChartDatabase::Mysql,
        "postgres" => ChartDatabase::Postgres,
        _ => ChartDatabase::Other {
            scheme: db["url"]
                .as_str()
                .and_then(|url| url.split_once("://"))
                .map(|(scheme, _)| scheme.to_string()),
        },
    })
}

/// The base URL the hub serves under (`/`, or e.g. `/jupyter/`, always ending in `/`):
/// `hub.config.JupyterHub.base_url` wins over `hub.baseUrl`, as z2jh's configuration applies
/// `hub.config` last.
pub fn chart_base_url(values_yaml: &str) -> String {
    let values: serde_json::Value = serde_saphyr::from_str(values_yaml).unwrap_or_default();
    let configured = values["hub"]["config"]["JupyterHub"]["base_url"].as_str();
    let base = configured
        .or_else(|| values["hub"]["baseUrl"].as_str())
        .unwrap_or("/")
        .trim_matches('/');
    if base.is_empty() {
        "/".into()
    } else {
        format!("/{base}/")
    }
}

/// The Secret the hub container (`container`, or z2jh's `hub`) mounts at [`VALUES_MOUNT`].
pub fn values_secret(deployment: &Deployment, container: Option<&str>) -> Option<String> {
    let pod = deployment.spec.as_ref()?.template.spec.as_ref()?;
    let hub = find_container(pod, container).ok()?;
    values_volume(pod, hub).map(|(secret, _)| secret)
}

/// The Secrets the hub container mounts at [`VALUES_MOUNT`] and [`EXISTING_SECRET_MOUNT`]
/// (`hub.existingSecret`), whose values z2jh's configuration reads.
pub fn values_secrets(deployment: &Deployment, container: Option<&str>) -> Vec<String> {
    let Some(pod) = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
    else {
        return Vec::new();
    };
    let Ok(hub) = find_container(pod, container) else {
        return Vec::new();
    };
    [VALUES_MOUNT, EXISTING_SECRET_MOUNT]
        .into_iter()
        .filter_map(|path| secret_volume_at(pod, hub, path).map(|(secret, _)| secret))
        .collect()
}

/// The Secret `hub` mounts at [`VALUES_MOUNT`], and the pod volume that mounts it.
pub(super) fn values_volume(pod: &PodSpec, hub: &Container) -> Option<(String, String)> {
    secret_volume_at(pod, hub, VALUES_MOUNT)
}

/// The Secret `hub` mounts at `path` (whole, not a subPath), and the pod volume that mounts it.
pub(super) fn secret_volume_at(
    pod: &PodSpec,
    hub: &Container,
    path: &str,
) -> Option<(String, String)> {
    let mount = hub
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == path && m.sub_path.is_none())?;
    let secret = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == mount.name)?
        .secret
        .as_ref()?
        .secret_name
        .clone()?;
    Some((secret, mount.name.clone()))
}

/// z2jh's chart values from several `values.yaml` texts, later ones merged over earlier ones
/// (maps key by key, as z2jh's `z2jh.py` merges the hub Secret's and `hub.existingSecret`'s),
/// as YAML (JSON) text. Texts that are not YAML are skipped.
pub fn merge_values(texts: &[&str]) -> String {
    fn merge(base: &mut serde_json::Value, over: serde_json::Value) {
        match (base, over) {
            (serde_json::Value::Object(base), serde_json::Value::Object(over)) => {
                for (key, value) in over {
                    merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (base, over) => *base = over,
        }
    }
    let mut merged = serde_json::Value::Object(Default::default());
    for text in texts {
        if let Ok(value) = serde_saphyr::from_str::<serde_json::Value>(text) {
            merge(&mut merged, value);
        }
    }
    merged.to_string()
}

/// A reader of one Secret's keys (a mounted folder's files, or a Secret's data).
pub type SecretKeys<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The URL a z2jh hub's configuration connects to, read from its Secrets as z2jh's `z2jh.py`
/// reads them: `secrets` in order of precedence, `hub.existingSecret`'s first and the hub
/// Secret's last; keys from the first that has them, `values.yaml` merged from the last to the
/// first. `None`: the hub Secret has no `values.yaml`. Holds the password: never print it.
pub fn chart_url_from_secrets(secrets: &[SecretKeys<'_>]) -> Option<Result<String, String>> {
    let (hub, _) = secrets.split_last()?;
    hub(VALUES_KEY)?;
    let texts: Vec<String> = secrets
        .iter()
        .rev()
        .filter_map(|read| read(VALUES_KEY))
        .collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let password = secrets.iter().find_map(|read| read("hub.db.password"));
    Some(chart_database_url(
        &merge_values(&texts),
        password.as_deref(),
    ))
}

/// The URL of the database a z2jh hub's configuration connects to, as its
/// `jupyterhub_config.py` sets it: `hub.db.url` from `values.yaml`, with the password the
/// configuration exports for `postgres` (`PGPASSWORD`) and `mysql` (`MYSQL_PWD`) from the
/// Secret key `hub.db.password`, when the URL carries none. Read by the agent, in a Job that
/// mounts the hub Secret; the result holds the password: never print it.
pub fn chart_database_url(values_yaml: &str, password: Option<&str>) -> Result<String, String> {
    let values: serde_json::Value = serde_saphyr::from_str(values_yaml)
        .map_err(|_| format!("the hub Secret's {VALUES_KEY} is not YAML"))?;
    let db = &values["hub"]["db"];
    let kind = db["type"].as_str().unwrap_or("sqlite-pvc");
    let url = config_db_url(&values)
        .or(db["url"].as_str().filter(|u| !u.is_empty()))
        .ok_or_else(|| {
            format!("hub.db.type is {kind} but hub.db.url is not set in {VALUES_KEY}")
        })?;
    let password = password.map(str::trim_end).filter(|p| !p.is_empty());
    match (kind, password) {
        ("postgres" | "mysql", Some(password)) => Ok(with_password(url, password)),
        _ => Ok(url.to_string()),
    }
}

/// `hub.config.JupyterHub.db_url`: z2jh's configuration applies `hub.config` last, so a URL
/// there is the one the hub connects to, whatever `hub.db` says.
fn config_db_url(values: &serde_json::Value) -> Option<&str> {
    values["hub"]["config"]["JupyterHub"]["db_url"]
        .as_str()
        .filter(|u| !u.is_empty())
}

/// `url` with `password` in its credentials, unless it has one already (the driver would use
/// the URL's own).
fn with_password(url: &str, password: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let Some((user, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    if user.contains(':') {
        return url.to_string();
    }
    let encoded =
        percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC);
    format!("{scheme}://{user}:{encoded}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_base_url_is_z2jhs_with_hub_config_winning() {
        assert_eq!(chart_base_url("hub: {}\n"), "/");
        assert_eq!(chart_base_url("hub:\n  baseUrl: /jupyter\n"), "/jupyter/");
        let both = "hub:\n  baseUrl: /a/\n  config:\n    JupyterHub:\n      base_url: /b\n";
        assert_eq!(chart_base_url(both), "/b/");
        assert_eq!(chart_base_url("not: [yaml"), "/");
    }

    #[test]
    fn reads_hub_db_as_z2jh_does() {
        let cases = [
            (
                "hub:\n  db:\n    type: postgres\n    url: postgresql://hub@db/jh\n    password: s3cret\n",
                ChartDatabase::Postgres,
            ),
            ("hub:\n  db:\n    type: mysql\n", ChartDatabase::Mysql),
            (
                "hub:\n  db:\n    type: sqlite-memory\n",
                ChartDatabase::SqliteMemory,
            ),
            (
                "hub:\n  db:\n    type: sqlite-pvc\n    pvc:\n      subPath: hub\n",
                ChartDatabase::SqlitePvc,
            ),
            // z2jh's default when the values say nothing.
            (
                "hub:\n  cookieSecret: x\nproxy: {}\n",
                ChartDatabase::SqlitePvc,
            ),
            (
                "hub:\n  db:\n    type: other\n    url: postgresql+psycopg2://hub:pw@db/jh\n",
                ChartDatabase::Other {
                    scheme: Some("postgresql+psycopg2".into()),
                },
            ),
            (
                "hub:\n  db:\n    type: other\n",
                ChartDatabase::Other { scheme: None },
            ),
        ];
        for (yaml, expected) in cases {
            assert_eq!(chart_database(yaml), Some(expected), "{yaml}");
        }
        assert_eq!(chart_database(": not yaml ["), None);
    }

    #[test]
    fn a_description_never_carries_the_url_past_its_scheme() {
        let db = chart_database("hub:\n  db:\n    type: other\n    url: mysql://hub:pw@db/jh\n")
            .expect("database");
        let text = db.described();
        assert!(text.contains("hub.db.url mysql://..."), "{text}");
        assert!(!text.contains("pw"), "{text}");
    }

    #[test]
    fn the_url_is_the_one_the_hub_configuration_connects_to() {
        let postgres = "hub:\n  db:\n    type: postgres\n    url: postgresql://hub@db:5432/jh\n";
        assert_eq!(
            chart_database_url(postgres, Some("p@ss w/rd\n")).as_deref(),
            Ok("postgresql://hub:p%40ss%20w%2Frd@db:5432/jh")
        );
        assert_eq!(
            chart_database_url(postgres, None).as_deref(),
            Ok("postgresql://hub@db:5432/jh")
        );
        // The URL's own password wins, as it does for the driver.
        let mysql = "hub:\n  db:\n    type: mysql\n    url: mysql+pymysql://hub:inurl@db/jh\n";
        assert_eq!(
            chart_database_url(mysql, Some("other")).as_deref(),
            Ok("mysql+pymysql://hub:inurl@db/jh")
        );
        // z2jh ignores hub.db.password for type other.
        let other = "hub:\n  db:\n    type: other\n    url: postgresql://hub@db/jh\n";
        assert_eq!(
            chart_database_url(other, Some("x")).as_deref(),
            Ok("postgresql://hub@db/jh")
        );
        let missing = chart_database_url("hub:\n  db:\n    type: postgres\n", Some("x"));
        assert!(
            missing
                .expect_err("no url")
                .contains("hub.db.url is not set")
        );
    }
}
