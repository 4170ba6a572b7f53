//! Reaching the hub's REST API from the operator: the Ready hub pod's address (its IP and the
//! hub container's `http` port, under z2jh's base URL), the drain token from the Secret the
//! spec names, and what the API answers, in the machine's terms.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Client;
use kube::api::Api;
use url::Url;

use crate::api::SecretKeyRef;
use crate::hub::api::HubApi;
use crate::hub::revision::{release_for_version, release_of_image};
use crate::hub::{HubLayout, find_container};
use crate::machine::{HubApiAnswers, Release};

/// z2jh's hub port (`hub_bind_url` `http://:8081`), when the container names none.
const HUB_PORT: i32 = 8081;

/// Where the Ready hub pod running the Deployment's current template serves: `None` while no
/// such pod is Ready.
pub fn api_root(
    deployment: &Deployment,
    pods: &[Pod],
    layout: &HubLayout,
    base_url: &str,
) -> Option<Url> {
    let template = deployment.spec.as_ref()?.template.spec.as_ref()?;
    let wanted = find_container(template, Some(&layout.container)).ok()?;
    let port = wanted
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .or_else(|| wanted.ports.iter().flatten().next())
        .map_or(HUB_PORT, |p| p.container_port);
    let pod = pods.iter().find(|pod| {
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let current = pod
            .spec
            .as_ref()
            .and_then(|spec| find_container(spec, Some(&layout.container)).ok())
            .is_some_and(|c| c.image == wanted.image);
        ready && current && pod.metadata.deletion_timestamp.is_none()
    })?;
    let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
    // An IPv6 address is bracketed in a URL.
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_string()
    };
    format!("http://{host}:{port}{base_url}").parse().ok()
}

/// The value of a Secret's key, `None` when the Secret or the key is missing.
pub async fn secret_value(
    client: &Client,
    namespace: &str,
    key: &SecretKeyRef,
) -> Result<Option<String>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    Ok(secrets
        .get_opt(&key.name)
        .await?
        .and_then(|s| s.data)
        .and_then(|mut data| data.remove(&key.key))
        .and_then(|bytes| String::from_utf8(bytes.0).ok())
        .map(|value| value.trim().to_string()))
}

/// The sentence for a token Secret or key that is missing.
pub fn missing_token(namespace: &str, key: &SecretKeyRef) -> String {
    format!(
        "spec.drain.tokenSecret: the Secret {namespace}/{} has no key {} (with z2jh, add a service \
         hub.services.hubgrade and its role in hub.loadRoles: the chart puts its token in the hub \
         Secret under hub.services.hubgrade.apiToken)",
        key.name, key.key
    )
}

/// What the hub at `api` answers about its health and version, for a hub running `image`.
pub async fn answers(api: &HubApi, image: &str) -> HubApiAnswers {
    let health = api.health().await;
    let version = match &health {
        Ok(()) => api.version().await,
        Err(_) => Err("not asked: the hub is not healthy".into()),
    };
    let release = |r: &crate::hub::revision::Release| Release {
        releases: r.releases.to_string(),
        head: r.head.to_string(),
    };
    HubApiAnswers {
        version_release: version
            .as_deref()
            .ok()
            .and_then(release_for_version)
            .map(release),
        image_release: release_of_image(image).map(release),
        health,
        version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::hub;
    use crate::hub::{LayoutHints, detect_layout};
    use serde_json::json;

    fn pod(ready: bool, image: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "hub-1"},
            "spec": {"containers": [{"name": "hub", "image": image}]},
            "status": {
                "podIP": "10.244.0.9",
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            },
        }))
        .expect("pod")
    }

    #[test]
    fn the_api_is_the_ready_current_hub_pods_under_the_base_url() {
        let deployment = hub();
        let hints = LayoutHints {
            container: None,
            database: Default::default(),
            chart: None,
        };
        let layout = detect_layout(&deployment, hints).expect("layout");
        let image = layout.image.clone();
        let root = api_root(&deployment, &[pod(true, &image)], &layout, "/jupyter/");
        assert_eq!(
            root.map(String::from),
            Some("http://10.244.0.9:8081/jupyter/".to_string())
        );
        // Not Ready, or still the old template's: not the hub to ask.
        assert_eq!(
            api_root(&deployment, &[pod(false, &image)], &layout, "/"),
            None
        );
        assert_eq!(
            api_root(&deployment, &[pod(true, "old:1")], &layout, "/"),
            None
        );
    }
}
