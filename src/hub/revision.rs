//! JupyterHub's database schema revisions (alembic), per release: to name a database's
//! release, to predict and verify a migration, and to refuse a schema downgrade.

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
}
