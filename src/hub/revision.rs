//! JupyterHub's database schema revisions (alembic), per release: to name a database's
//! release, to predict and verify a migration, and to refuse a schema downgrade, the one
//! downgrade guard of `hubgrade db revision` ([`check_upgrade`]) and of Preflight
//! ([`check_image_upgrade`], built on it).

/// A series of JupyterHub releases sharing one alembic head revision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Release {
    /// e.g. "5.0 – 5.5".
    pub releases: &'static str,
    /// The alembic head revision those releases expect.
    pub head: &'static str,
    /// What an upgrade to this series means for users.
    pub note: Option<&'static str>,
}

/// Oldest first: the order of the alembic chain.
pub const RELEASES: [Release; 6] = [
    Release {
        releases: "1.0 – 1.5",
        head: "4dc2d5a8c53c",
        note: None,
    },
    Release {
        releases: "2.x",
        head: "833da8570507",
        note: Some("drops the API and OAuth token tables: users must issue their tokens again"),
    },
    Release {
        releases: "3.x",
        head: "651f5419b74d",
        note: None,
    },
    Release {
        releases: "4.x",
        head: "0eee8c825d24",
        note: None,
    },
    Release {
        releases: "5.0 – 5.5",
        head: "4621fec11365",
        note: None,
    },
    Release {
        releases: "6.0 – 6.1",
        head: "f460b0348206",
        note: None,
    },
];

/// The release series whose head is `revision`.
pub fn release_of(revision: &str) -> Option<&'static Release> {
    RELEASES.iter().find(|r| r.head == revision)
}

/// The release series of a JupyterHub version such as "5.3.0" or "4.1.6".
pub fn release_for_version(version: &str) -> Option<&'static Release> {
    let mut parts = version.trim_start_matches('v').split('.');
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    let index = match (major, minor) {
        (1, 0..=5) => 0,
        (2, _) => 1,
        (3, _) => 2,
        (4, _) => 3,
        (5, 0..=5) => 4,
        (6, 0..=1) => 5,
        _ => return None,
    };
    Some(&RELEASES[index])
}

/// The release series a z2jh hub image (`<registry>/jupyterhub/k8s-hub:<chart version>`) runs.
/// Each z2jh major ships one JupyterHub major: z2jh 3.3.8 has JupyterHub 4.1.6, 4.4.0 has 5.5.0.
pub fn release_of_image(image: &str) -> Option<&'static Release> {
    let (repository, tag) = repository_and_tag(image)?;
    if !repository.ends_with("jupyterhub/k8s-hub") {
        return None;
    }
    let chart_major: u32 = tag.split(['.', '-']).next()?.parse().ok()?;
    let jupyterhub = match chart_major {
        1 => "1.5",
        2 => "3.0",
        3 => "4.0",
        4 => "5.0",
        _ => return None,
    };
    release_for_version(jupyterhub)
}

/// `repository:tag` of an image reference (a digest after the tag is dropped).
fn repository_and_tag(image: &str) -> Option<(&str, &str)> {
    let image = image.split('@').next()?;
    image.rsplit_once(':').filter(|(_, tag)| !tag.contains('/'))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevisionError {
    #[error(
        "the database is at revision {database} (JupyterHub {database_releases}), newer than revision {target} that the target (JupyterHub {target_releases}) expects; a schema cannot be downgraded, restore a backup made before the upgrade instead"
    )]
    Downgrade {
        database: String,
        database_releases: &'static str,
        target: String,
        target_releases: &'static str,
    },
    #[error(
        "the database is at revision {0}, which is not the head of any JupyterHub release hubgrade knows; refusing to guess (allow unknown revisions to proceed anyway)"
    )]
    UnknownDatabase(String),
    #[error("the target revision {0} is not the head of any JupyterHub release hubgrade knows")]
    UnknownTarget(String),
    #[error(
        "targetImage {target} runs JupyterHub {target_releases}, whose database schema is older than that of the hub's {current} (JupyterHub {current_releases}); hubgrade does not downgrade, because the database schema cannot go back"
    )]
    OlderSchema {
        current: String,
        current_releases: &'static str,
        target: String,
        target_releases: &'static str,
    },
    #[error(
        "targetImage {target} is older than the hub's {current}; hubgrade does not downgrade, because the database schema cannot go back"
    )]
    OlderImage { current: String, target: String },
}

/// Whether migrating a database at `database` to `target` is an upgrade (or no change).
pub fn check_upgrade(
    database: &str,
    target: &str,
    allow_unknown: bool,
) -> Result<(), RevisionError> {
    let position = |revision: &str| RELEASES.iter().position(|r| r.head == revision);
    match (position(database), position(target)) {
        (Some(from), Some(to)) if from > to => Err(RevisionError::Downgrade {
            database: database.to_string(),
            database_releases: RELEASES[from].releases,
            target: target.to_string(),
            target_releases: RELEASES[to].releases,
        }),
        (Some(_), Some(_)) => Ok(()),
        _ if allow_unknown => Ok(()),
        (None, _) => Err(RevisionError::UnknownDatabase(database.to_string())),
        (_, None) => Err(RevisionError::UnknownTarget(target.to_string())),
    }
}

/// Whether moving the hub from the `current` image to the `target` one is an upgrade (or no
/// change): Preflight's downgrade guard. Images of known JupyterHub releases are compared by the
/// schema revision each expects ([`check_upgrade`]); two version tags of one image are refused
/// when the target's is older, whatever runs in them. Other images pass.
pub fn check_image_upgrade(current: &str, target: &str) -> Result<(), RevisionError> {
    if let (Some(from), Some(to)) = (release_of_image(current), release_of_image(target))
        && let Err(RevisionError::Downgrade { .. }) = check_upgrade(from.head, to.head, false)
    {
        return Err(RevisionError::OlderSchema {
            current: current.to_string(),
            current_releases: from.releases,
            target: target.to_string(),
            target_releases: to.releases,
        });
    }
    let version = |image| -> Option<(&str, Vec<u64>)> {
        let (repository, tag) = repository_and_tag(image)?;
        let version: Option<Vec<u64>> = tag
            .trim_start_matches('v')
            .split('.')
            .map(|part| part.parse().ok())
            .collect();
        Some((repository, version?))
    };
    match (version(current), version(target)) {
        (Some((current_repository, from)), Some((target_repository, to)))
            if current_repository == target_repository && to < from =>
        {
            Err(RevisionError::OlderImage {
                current: current.to_string(),
                target: target.to_string(),
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_map_to_their_heads() {
        assert_eq!(
            release_for_version("4.1.6").map(|r| r.head),
            Some("0eee8c825d24")
        );
        assert_eq!(
            release_for_version("5.3.0").map(|r| r.head),
            Some("4621fec11365")
        );
        assert_eq!(
            release_for_version("6.1.1").map(|r| r.head),
            Some("f460b0348206")
        );
        assert_eq!(
            release_for_version("1.5.0").map(|r| r.head),
            Some("4dc2d5a8c53c")
        );
        assert_eq!(release_for_version("7.0.0"), None);
        assert_eq!(release_of("651f5419b74d").map(|r| r.releases), Some("3.x"));
    }

    #[test]
    fn upgrades_pass_and_downgrades_are_refused() {
        assert_eq!(check_upgrade("4621fec11365", "f460b0348206", false), Ok(()));
        assert_eq!(check_upgrade("4621fec11365", "4621fec11365", false), Ok(()));
        let error = check_upgrade("f460b0348206", "4621fec11365", false).expect_err("downgrade");
        assert!(matches!(error, RevisionError::Downgrade { .. }));
        assert!(error.to_string().contains("cannot be downgraded"));
    }

    #[test]
    fn unknown_revisions_are_refused_unless_allowed() {
        let error = check_upgrade("abcdef123456", "f460b0348206", false).expect_err("unknown");
        assert!(error.to_string().contains("abcdef123456"));
        assert_eq!(check_upgrade("abcdef123456", "f460b0348206", true), Ok(()));
    }

    #[test]
    fn an_older_tag_of_the_same_image_is_a_downgrade() {
        let hub = "quay.io/jupyterhub/k8s-hub";
        let refused = |current: &str, target: &str| check_image_upgrade(current, target).is_err();
        assert!(refused(&format!("{hub}:4.2.0"), &format!("{hub}:4.1.0")));
        assert!(!refused(&format!("{hub}:4.1.0"), &format!("{hub}:4.2.0")));
        assert!(!refused(&format!("{hub}:4.2.0"), "example.org/hub:1.0"));
        assert!(!refused(&format!("{hub}:latest"), &format!("{hub}:1.0.0")));
        assert!(refused("example.org/hub:v2.1", "example.org/hub:v2.0"));
    }

    #[test]
    fn a_z2jh_image_with_an_older_schema_is_a_downgrade_from_any_registry() {
        // A mirror is another repository: only the schema each release expects tells.
        let error = check_image_upgrade(
            "quay.io/jupyterhub/k8s-hub:4.4.0",
            "registry.example.org/jupyterhub/k8s-hub:3.3.8",
        )
        .expect_err("JupyterHub 5 to 4");
        assert!(matches!(error, RevisionError::OlderSchema { .. }));
        assert!(error.to_string().contains("JupyterHub 4.x"), "{error}");
        assert_eq!(
            check_image_upgrade(
                "registry.example.org/jupyterhub/k8s-hub:3.3.8",
                "quay.io/jupyterhub/k8s-hub:4.4.0@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
            Ok(())
        );
    }

    #[test]
    fn z2jh_images_name_the_jupyterhub_they_run() {
        let head = |image| release_of_image(image).map(|r| r.head);
        assert_eq!(
            head("quay.io/jupyterhub/k8s-hub:3.3.8"),
            Some("0eee8c825d24")
        );
        assert_eq!(
            head("quay.io/jupyterhub/k8s-hub:4.4.0"),
            Some("4621fec11365")
        );
        assert_eq!(head("jupyterhub/k8s-hub:2.0.0"), Some("651f5419b74d"));
        assert_eq!(
            head("quay.io/jupyterhub/k8s-hub:4.0.0-0.dev.git.6987.h7e0a2d1e"),
            Some("4621fec11365")
        );
        assert_eq!(head("quay.io/jupyterhub/k8s-hub:9.0.0"), None);
        assert_eq!(head("example.org/hub:4.4.0"), None);
    }
}
