//! The database backup, the one record of it every layer shares: the backends return it, the
//! agent reports it, the machine records it in the status, `hubgrade db` prints it. It lives in
//! the machine, the lowest layer, so that `api/`, `db/` and the agent can all use it.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How a database backup is made: the spec's `backup.method`, `hubgrade db backup --method`,
/// and the method a backup was made with.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema, clap::ValueEnum,
)]
pub enum BackupMethod {
    /// File for SQLite, Clone for PostgreSQL and MySQL.
    #[default]
    #[value(skip)]
    Auto,
    /// SQLite: a consistent copy of the database file next to it, with its SHA-256.
    File,
    /// SQLite: a CSI VolumeSnapshot of the hub's volume.
    #[value(skip)] // A Kubernetes object: the operator makes it, `hubgrade db` cannot.
    VolumeSnapshot,
    /// PostgreSQL and MySQL: a copy of the database on the same server.
    Clone,
    /// PostgreSQL and MySQL: pg_dump or mysqldump to a file.
    Dump,
}

impl BackupMethod {
    /// The name in the spec and the status.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupMethod::Auto => "Auto",
            BackupMethod::File => "File",
            BackupMethod::VolumeSnapshot => "VolumeSnapshot",
            BackupMethod::Clone => "Clone",
            BackupMethod::Dump => "Dump",
        }
    }
}

impl fmt::Display for BackupMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database backup the upgrade can restore from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// How it was made: File, VolumeSnapshot, Clone or Dump.
    #[schemars(with = "String")]
    pub method: BackupMethod,
    /// Where it is: a path on the hub volume, a VolumeSnapshot, a database name, a dump file.
    pub reference: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// `blake3:<hex>` of the backup (`sha256:<hex>` from earlier releases), where the method
    /// has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// The backup was read back and checked after it was made.
    // (File: checksum and integrity check; Clone: the copy is there; VolumeSnapshot: ready.)
    pub verified: bool,
    /// Older backups of this hub that `backup.retain` deleted once this one was made (hubgrade's
    /// earlier backups on the volume); the ledger marks them deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::{BackupMethod, BackupRecord};

    #[test]
    fn a_method_is_written_as_the_spec_names_it() {
        for method in [
            BackupMethod::Auto,
            BackupMethod::File,
            BackupMethod::VolumeSnapshot,
            BackupMethod::Clone,
            BackupMethod::Dump,
        ] {
            let json = serde_json::to_value(method).expect("method");
            assert_eq!(json, serde_json::json!(method.to_string()));
        }
    }

    #[test]
    fn a_record_reads_back_what_it_wrote() {
        let record = BackupRecord {
            method: BackupMethod::Dump,
            reference: "/backups/jupyterhub.dump".into(),
            size_bytes: Some(4096),
            checksum: Some("sha256:00".into()),
            verified: true,
            pruned: Vec::new(),
        };
        let json = serde_json::to_value(&record).expect("record");
        assert_eq!(json["method"], "Dump");
        assert_eq!(json["sizeBytes"], 4096);
        let back: BackupRecord = serde_json::from_value(json).expect("read back");
        assert_eq!(back, record);
    }
}
