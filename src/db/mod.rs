//! Hub databases: reading their revision, backing them up, checking and restoring the backups:
//! SQLite files, PostgreSQL and MySQL/MariaDB clones and dumps. (Snapshots of claims are
//! Kubernetes objects: `cluster::snapshot`.)

pub mod backend;
pub mod mysql;
pub mod postgres;
pub mod revision;
pub mod server;
pub mod sqlite;
pub mod url;

use serde::{Deserialize, Serialize};

/// What a backup reports when it is done; the operator records it in the upgrade's status.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackupReference {
    /// File, VolumeSnapshot, Clone or Dump.
    pub method: String,
    /// Where the backup is (for File: its path as the hub container sees it).
    pub reference: String,
    pub size_bytes: u64,
    /// `sha256:<hex>` of the backup file (file and dump backups).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The copy was read back: checksum recomputed and `PRAGMA integrity_check` passed.
    pub verified: bool,
}

/// Bytes available to an unprivileged writer in the file system holding `dir`.
pub(crate) fn available_space(dir: &std::path::Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}
