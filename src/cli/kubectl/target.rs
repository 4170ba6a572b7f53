//! What `upgrade --to` means: a bare chart version is a tag of the hub's own image repository
//! (z2jh's k8s-hub images are tagged with the chart's version), anything else is an image.
//! Also the default name of a HubUpgrade. Pure: the caller read the Deployment.

/// Longest name made by [`default_name`]: a DNS label, so it fits wherever the operator puts
/// the name (labels, derived object names).
const MAX_NAME: usize = 63;

/// Whether `text` is a bare version such as `4.4.0` or `4.4.0-beta.1`
/// (`^\d+\.\d+\.\d+([-+][0-9A-Za-z.+-]+)?$`).
pub fn is_chart_version(text: &str) -> bool {
    let (core, suffix) = match text.find(['-', '+']) {
        Some(at) => (&text[..at], Some(&text[at + 1..])),
        None => (text, None),
    };
    let numbers: Vec<&str> = core.split('.').collect();
    let core_ok = numbers.len() == 3
        && numbers
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    let suffix_ok = suffix.is_none_or(|s| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
    });
    core_ok && suffix_ok
}

/// The image's repository: the reference without its tag and digest
/// (`quay.io/jupyterhub/k8s-hub:4.1.0@sha256:...` -> `quay.io/jupyterhub/k8s-hub`).
pub fn repository(image: &str) -> &str {
    let without_digest = image.split('@').next().unwrap_or(image);
    match (without_digest.rfind(':'), without_digest.rfind('/')) {
        // A colon after the last slash starts the tag; one before it is a registry's port.
        (Some(colon), slash) if slash.is_none_or(|slash| colon > slash) => &without_digest[..colon],
        _ => without_digest,
    }
}

/// The tag of an image reference, if it has one.
pub fn tag(image: &str) -> Option<&str> {
    let repository = repository(image);
    let rest = image[repository.len()..].split('@').next().unwrap_or("");
    rest.strip_prefix(':').filter(|t| !t.is_empty())
}

/// `<hub>-to-<tag>` with dots as dashes, lowercased, made a valid DNS label of at most 63
/// characters. An image with a digest and no tag is named by the digest's first 12 digits.
pub fn default_name(hub: &str, image: &str) -> String {
    let version = match tag(image) {
        Some(tag) => tag.to_string(),
        None => image
            .split_once("@sha256:")
            .map(|(_, digest)| digest.chars().take(12).collect())
            .unwrap_or_else(|| "latest".to_string()),
    };
    let name: String = format!("{hub}-to-{version}")
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(MAX_NAME)
        .collect();
    name.trim_matches('-').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_versions_are_three_numbers_with_an_optional_suffix() {
        for version in [
            "4.4.0",
            "10.0.12",
            "4.4.0-beta.1",
            "4.4.0+build.7",
            "4.0.0-0.dev.git.6",
        ] {
            assert!(is_chart_version(version), "{version}");
        }
        for other in [
            "4.4",
            "4.4.0.1",
            "v4.4.0",
            "4.4.0-",
            "4.a.0",
            "quay.io/jupyterhub/k8s-hub:4.4.0",
            "k8s-hub:4.4.0",
            "4.4.0-beta_1",
            "",
        ] {
            assert!(!is_chart_version(other), "{other}");
        }
    }

    #[test]
    fn the_repository_drops_tag_and_digest_but_keeps_a_registry_port() {
        let digest = format!("@sha256:{}", "a".repeat(64));
        for (image, expected) in [
            (
                "quay.io/jupyterhub/k8s-hub:4.1.0",
                "quay.io/jupyterhub/k8s-hub",
            ),
            ("quay.io/jupyterhub/k8s-hub", "quay.io/jupyterhub/k8s-hub"),
            ("localhost:5000/k8s-hub:4.1.0", "localhost:5000/k8s-hub"),
            ("localhost:5000/k8s-hub", "localhost:5000/k8s-hub"),
            ("k8s-hub:4.1.0", "k8s-hub"),
            (
                &format!("quay.io/jupyterhub/k8s-hub:4.1.0{digest}"),
                "quay.io/jupyterhub/k8s-hub",
            ),
            (
                &format!("localhost:5000/k8s-hub{digest}"),
                "localhost:5000/k8s-hub",
            ),
        ] {
            assert_eq!(repository(image), expected, "{image}");
        }
        assert_eq!(tag("localhost:5000/k8s-hub:4.1.0"), Some("4.1.0"));
        assert_eq!(tag("localhost:5000/k8s-hub"), None);
        assert_eq!(tag(&format!("k8s-hub:4.1.0{digest}")), Some("4.1.0"));
    }

    #[test]
    fn default_names_are_dns_labels() {
        assert_eq!(
            default_name("hub", "quay.io/jupyterhub/k8s-hub:4.4.0"),
            "hub-to-4-4-0"
        );
        assert_eq!(
            default_name("Hub", "registry:5000/k8s-hub:4.4.0-Beta.1+build_7"),
            "hub-to-4-4-0-beta-1-build-7"
        );
        let digest = format!("k8s-hub@sha256:{}", "ab".repeat(32));
        assert_eq!(default_name("hub", &digest), "hub-to-abababababab");
        let long = default_name(&"h".repeat(70), "k8s-hub:4.4.0");
        assert_eq!(long.len(), 63);
        assert!(!default_name(&"h".repeat(59), "k8s-hub:4.4.0").ends_with('-'));
    }
}
