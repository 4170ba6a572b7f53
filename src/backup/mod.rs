//! Database backups: making them, checking them, restoring them. Only SQLite files so far.

pub mod revision;
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
    /// `sha256:<hex>`.
    pub checksum: String,
    /// The copy was read back: checksum recomputed and `PRAGMA integrity_check` passed.
    pub verified: bool,
}
