//! The hub's configuration backup: what it holds and why, read in one place for the backup and
//! for Preflight's check that it fits a Secret.
//!
//! It holds the ConfigMaps and Secrets the hub container mounts ([`HubLayout::config_maps`],
//! [`HubLayout::secrets`]): on z2jh the ConfigMap `hub` (`jupyterhub_config.py`, `z2jh.py`)
//! and the Secret `hub` (`values.yaml`, the generated proxy token, cookie secret and
//! CryptKeeper keys that sessions and encrypted auth state depend on), and
//! `hub.existingSecret`. A roll back puts the old image back; a `helm upgrade` changes these
//! together with the image, and the old image is the hub "exactly as it was" only with the
//! configuration it ran with. Nothing else is copied: not the database (backed up on its own),
//! not what only other containers mount.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

use crate::hub::HubLayout;

/// The most a Secret's data may hold (keys and values): the API server refuses more.
pub const SECRET_LIMIT: usize = 1024 * 1024;

/// The hub's configuration as the backup Secret holds it.
#[derive(Debug, Default)]
pub struct Configuration {
    /// `configmap.<name>.<key>` and `secret.<name>.<key>`.
    pub data: BTreeMap<String, ByteString>,
    /// Each object copied (`ConfigMap/hub`) with the bytes it adds; missing ones are absent.
    pub sources: Vec<(String, usize)>,
}

impl Configuration {
    /// Bytes of data as the API server counts them against [`SECRET_LIMIT`].
    pub fn bytes(&self) -> usize {
        self.data.iter().map(|(k, v)| k.len() + v.0.len()).sum()
    }

    /// Why the backup Secret cannot be made, as a Preflight problem; `None`: it fits.
    pub fn too_large(&self) -> Option<String> {
        let bytes = self.bytes();
        (bytes > SECRET_LIMIT).then(|| {
            let each = self
                .sources
                .iter()
                .map(|(name, bytes)| format!("{name} {}", kib(*bytes)))
                .collect::<Vec<_>>()
                .join(", ");
            format!(
                "the hub's configuration is {bytes} bytes ({each}), more than the {SECRET_LIMIT} bytes a Secret holds: its backup could not be made. Move large files out of the hub's ConfigMaps and Secrets (z2jh: hub.extraFiles, large hub.config values) or into a volume"
            )
        })
    }
}

fn kib(bytes: usize) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

/// Reads the hub's configuration in `namespace`; a ConfigMap or Secret that does not exist is
/// left out (a pod that mounts it as optional runs without it).
pub async fn read(
    client: &Client,
    namespace: &str,
    layout: &HubLayout,
) -> Result<Configuration, (String, kube::Error)> {
    read_with(client, namespace, layout, &BTreeMap::new()).await
}

/// [`read`], with Secrets the caller has just read (by name) taken as they are.
pub async fn read_with(
    client: &Client,
    namespace: &str,
    layout: &HubLayout,
    known: &BTreeMap<String, Secret>,
) -> Result<Configuration, (String, kube::Error)> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut configuration = Configuration::default();
    for name in &layout.config_maps {
        let object = format!("ConfigMap/{name}");
        let Some(map) = maps.get_opt(name).await.map_err(|e| (object.clone(), e))? else {
            continue;
        };
        let mut added = 0;
        let text = map.data.unwrap_or_default().into_iter();
        let binary = map.binary_data.unwrap_or_default().into_iter();
        for (key, value) in text
            .map(|(k, v)| (k, ByteString(v.into_bytes())))
            .chain(binary)
        {
            let key = format!("configmap.{name}.{key}");
            added += key.len() + value.0.len();
            configuration.data.insert(key, value);
        }
        configuration.sources.push((object, added));
    }
    for name in &layout.secrets {
        let object = format!("Secret/{name}");
        let secret = match known.get(name) {
            Some(secret) => Some(secret.clone()),
            None => secrets
                .get_opt(name)
                .await
                .map_err(|e| (object.clone(), e))?,
        };
        let Some(secret) = secret else {
            continue;
        };
        let mut added = 0;
        for (key, value) in secret.data.unwrap_or_default() {
            let key = format!("secret.{name}.{key}");
            added += key.len() + value.0.len();
            configuration.data.insert(key, value);
        }
        configuration.sources.push((object, added));
    }
    Ok(configuration)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(bytes: usize) -> Configuration {
        let key = "secret.hub.values.yaml".to_string();
        let value = ByteString(vec![b'x'; bytes - key.len()]);
        Configuration {
            data: BTreeMap::from([(key, value)]),
            sources: vec![("Secret/hub".into(), bytes)],
        }
    }

    #[test]
    fn a_configuration_that_fits_a_secret_is_no_problem() {
        assert_eq!(with(SECRET_LIMIT).too_large(), None);
    }

    #[test]
    fn a_configuration_over_a_secrets_limit_is_a_problem_naming_each_object() {
        let problem = with(SECRET_LIMIT + 1).too_large().expect("too large");
        assert!(
            problem.contains("is 1048577 bytes (Secret/hub 1024.0 KiB)"),
            "{problem}"
        );
        assert!(
            problem.contains("more than the 1048576 bytes a Secret holds"),
            "{problem}"
        );
    }
}
