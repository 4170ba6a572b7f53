//! What PostgreSQL and MySQL backups share: their errors and the checks made before a dump is
//! written or restored.

use std::path::Path;

/// Why a backup or restore on a database server failed. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum ServerBackupError {
    #[error("{what} on {url}: {message}")]
    Database {
        what: &'static str,
        url: String,
        message: String,
    },
    #[error(
        "{count} connections to database {database} remain (is the hub still running?); stop them before the backup or restore"
    )]
    InUse { database: String, count: i64 },
    #[error("the backup database {0} does not exist")]
    MissingBackup(String),
    #[error("the copy {copy} does not match {database}: {detail}")]
    NotVerified {
        copy: String,
        database: String,
        detail: String,
    },
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("not enough space for the dump in {dir}: {needed} bytes needed, {available} available")]
    NoSpace {
        dir: String,
        needed: u64,
        available: u64,
    },
    #[error(
        "the dump {path} has checksum {actual}, not the recorded {expected}; nothing was changed"
    )]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

/// Refuses a dump whose checksum is not the recorded one, before anything relies on it.
pub(crate) fn check_dump_checksum(file: &Path, expected: &str) -> Result<(), ServerBackupError> {
    let (_, actual) =
        super::file::size_and_checksum(file).map_err(|e| ServerBackupError::File {
            path: file.display().to_string(),
            message: e.to_string(),
        })?;
    if actual != expected {
        return Err(ServerBackupError::ChecksumMismatch {
            path: file.display().to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Makes `file`'s folder and checks `needed` bytes fit in it.
pub(crate) fn check_room(file: &Path, needed: u64) -> Result<(), ServerBackupError> {
    let dir = super::file::folder_of(file);
    let file_error = |e: std::io::Error| ServerBackupError::File {
        path: dir.display().to_string(),
        message: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(file_error)?;
    let available = super::file::available_space(dir).map_err(file_error)?;
    if available < needed {
        return Err(ServerBackupError::NoSpace {
            dir: dir.display().to_string(),
            needed,
            available,
        });
    }
    Ok(())
}
