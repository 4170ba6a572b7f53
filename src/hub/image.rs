//! Which images a hub may be moved to, and what a hub looks like: the operator's guard against a
//! HubUpgrade that would run any image with the hub's ServiceAccount, Secrets and volume (the
//! rehearsal runs the target before the hub is touched), or act on a Deployment that is no hub.

use k8s_openapi::api::apps::v1::Deployment;

/// The annotation that marks a Deployment as a hub when it lacks z2jh's labels.
pub const HUB_ANNOTATION: &str = "hubgrade.io/hub";

/// The repositories a target image may come from, set by whoever runs the operator (never by a
/// HubUpgrade's author): always the hub's own repository, and those listed. An entry is a
/// repository (`ghcr.io/org/k8s-hub`), or a prefix ending in `/` (`registry.example.com/jupyter/`)
/// for every repository under it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImagePolicy {
    pub allowed: Vec<String>,
}

impl ImagePolicy {
    pub fn new(allowed: &[String]) -> ImagePolicy {
        ImagePolicy {
            allowed: allowed
                .iter()
                .map(|a| a.trim())
                .filter(|a| !a.is_empty())
                .map(|a| {
                    // A prefix keeps its slash; a repository is normalized like an image's.
                    match a.strip_suffix('/') {
                        Some(prefix) => format!("{}/", repository(prefix)),
                        None => repository(a),
                    }
                })
                .collect(),
        }
    }

    /// Whether the hub now running `current` may be moved to `target`; the error says why not
    /// and how the operator's administrator allows it.
    pub fn check(&self, current: &str, target: &str) -> Result<(), String> {
        let (from, to) = (repository(current), repository(target));
        let allowed = from == to
            || self
                .allowed
                .iter()
                .any(|a| *a == to || (a.ends_with('/') && to.starts_with(a.as_str())));
        if allowed {
            return Ok(());
        }
        Err(format!(
            "targetImage {target} is from the repository {to}, not the hub's ({from}); the \
             operator moves a hub only to images of its own repository{}. Its administrator \
             allows others with `hubgrade run --allow-image-repository` (the chart's \
             imagePolicy.allowedRepositories)",
            if self.allowed.is_empty() {
                String::new()
            } else {
                format!(" or of {}", self.allowed.join(", "))
            }
        ))
    }
}

/// An image's repository, as a registry resolves it: no tag, no digest, Docker Hub's implicit
/// `docker.io/` and `library/` written out (`jupyterhub/k8s-hub:4.1.0` is
/// `docker.io/jupyterhub/k8s-hub`).
pub fn repository(image: &str) -> String {
    let name = image.split('@').next().unwrap_or(image);
    let name = match name.rsplit_once(':') {
        Some((before, tag)) if !tag.contains('/') => before,
        _ => name,
    };
    let first = name.split('/').next().unwrap_or(name);
    let has_registry =
        name.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    let name = name.to_ascii_lowercase();
    match (has_registry, name.contains('/')) {
        (true, _) => name,
        (false, true) => format!("docker.io/{name}"),
        (false, false) => format!("docker.io/library/{name}"),
    }
}

/// Whether a Deployment is recognisably a JupyterHub hub: z2jh's `component: hub` label (or
/// its `app.kubernetes.io/component: hub`), or the opt-in annotation `hubgrade.io/hub: "true"`.
pub fn looks_like_a_hub(deployment: &Deployment) -> bool {
    let labels = deployment.metadata.labels.clone().unwrap_or_default();
    let annotations = deployment.metadata.annotations.clone().unwrap_or_default();
    labels.get("component").map(String::as_str) == Some("hub")
        || labels
            .get("app.kubernetes.io/component")
            .map(String::as_str)
            == Some("hub")
        || annotations.get(HUB_ANNOTATION).map(String::as_str) == Some("true")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_are_compared_as_registries_resolve_them() {
        assert_eq!(
            repository("quay.io/jupyterhub/k8s-hub:4.1.0"),
            "quay.io/jupyterhub/k8s-hub"
        );
        assert_eq!(
            repository("jupyterhub/k8s-hub:4.1.0"),
            "docker.io/jupyterhub/k8s-hub"
        );
        assert_eq!(repository("busybox"), "docker.io/library/busybox");
        assert_eq!(
            repository("registry:5000/hub@sha256:00ff"),
            "registry:5000/hub"
        );
        assert_eq!(repository("localhost/hub:1"), "localhost/hub");
    }

    #[test]
    fn only_the_hubs_repository_and_those_the_operator_allows() {
        let current = "quay.io/jupyterhub/k8s-hub:4.1.0";
        let none = ImagePolicy::default();
        assert!(
            none.check(current, "quay.io/jupyterhub/k8s-hub:4.4.0")
                .is_ok()
        );
        let refused = none
            .check(current, "evil.example.com/miner:1.0")
            .expect_err("another repository");
        assert!(
            refused.contains("evil.example.com/miner")
                && refused.contains("--allow-image-repository")
        );
        let policy = ImagePolicy::new(&[
            "ghcr.io/hubgrade/test-k8s-hub".into(),
            "registry.example.com/jupyter/".into(),
        ]);
        assert!(
            policy
                .check(current, "ghcr.io/hubgrade/test-k8s-hub:4.4.0-x")
                .is_ok()
        );
        assert!(
            policy
                .check(current, "registry.example.com/jupyter/hub:5")
                .is_ok()
        );
        assert!(
            policy
                .check(current, "registry.example.com/jupyterx/hub:5")
                .is_err()
        );
        assert!(
            policy
                .check(current, "ghcr.io/hubgrade/test-k8s-hub-evil:1")
                .is_err()
        );
    }
}
