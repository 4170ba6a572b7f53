//! SQLite file backups. The copy is taken under SQLite's own write lock, so it is consistent
//! even if a hub were still writing; restore replaces the file atomically and verifies it.
//! The free-space check asks up front for every copy still to come on the volume, pruning
//! keeps `backup.retain` of hubgrade's and JupyterHub's own copies, and a restore short of room
//! removes only copies that are provably redundant.

mod backup;
mod copies;
mod restore;
mod space;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::db::file::{available_space, folder_of, size_and_checksum_like};
pub use backup::{back_up, back_up_for, prepare, prepare_for, verify};
pub use copies::{is_hubgrade_backup, prune_backups};
pub use restore::{Restored, restore};
pub use space::{SpaceNeed, SpacePlan};
use space::{describe_shortfall, human};

#[derive(Debug, thiserror::Error)]
pub enum SqliteBackupError {
    #[error("the database file {0} does not exist")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("SQLite refused {path}: {source}")]
    Sqlite { path: PathBuf, source: sqlx::Error },
    #[error("{}", describe_shortfall(dir, needs, *available))]
    NoSpace {
        dir: PathBuf,
        needs: Vec<SpaceNeed>,
        available: u64,
    },
    #[error(
        "not enough space in {dir} to restore {backup}: its temporary copy needs {}, {} is \
         available and removing JupyterHub's copies of this backup and rehearsal copies would \
         free {}: {} missing; nothing was changed, the database is as it was and the backup is \
         intact: free at least {} on the volume (or grow its claim), then restore again",
        human(*needed), human(*available), human(*removable), human(*missing), human(*missing)
    )]
    NoRoomToRestore {
        dir: PathBuf,
        backup: PathBuf,
        needed: u64,
        available: u64,
        removable: u64,
        missing: u64,
    },
    #[error(
        "no space left on the volume holding {}: writing {} ({} to write) ran out of room, {} \
         is free now; {outcome}",
        folder_of(path).display(), path.display(), human(*needed), human(*available)
    )]
    VolumeFull {
        /// The file being written when the room ran out (removed since).
        path: PathBuf,
        needed: u64,
        /// Free once the partial file was removed.
        available: u64,
        /// What was left as it was, and what to do.
        outcome: String,
    },
    #[error("the copy {path} failed its integrity check: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "the backup {path} has checksum {actual}, not the recorded {expected}; nothing was overwritten"
    )]
    ChecksumMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

type Result<T> = std::result::Result<T, SqliteBackupError>;

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> SqliteBackupError + '_ {
    move |source| SqliteBackupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `error` is the file system running out of room: ENOSPC or a quota from a write or
/// an fsync, or SQLite's SQLITE_FULL (13) from `VACUUM INTO`.
fn is_out_of_space(error: &SqliteBackupError) -> bool {
    match error {
        SqliteBackupError::Io { source, .. } => matches!(
            source.kind(),
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
        ),
        SqliteBackupError::Sqlite {
            source: sqlx::Error::Database(error),
            ..
        } => error.code().as_deref() == Some("13"),
        _ => false,
    }
}

/// `error` from writing `path` (`needed` bytes), which the caller has removed since, told as
/// a full volume when it is one: the OS's "No space left on device" names neither the volume
/// nor what is left as it was. Any other error is returned as it is.
fn out_of_space(
    error: SqliteBackupError,
    path: &Path,
    needed: u64,
    outcome: impl FnOnce() -> String,
) -> SqliteBackupError {
    if !is_out_of_space(&error) {
        return error;
    }
    SqliteBackupError::VolumeFull {
        path: path.to_path_buf(),
        needed,
        available: available_space(folder_of(path)).unwrap_or(0),
        outcome: outcome(),
    }
}

/// The file's size, if its checksum is `expected` (computed with the hash `expected` names:
/// `blake3:`, or `sha256:` as earlier releases recorded).
fn ensure_checksum(path: &Path, expected: &str) -> Result<u64> {
    let (size, actual) = size_and_checksum_like(path, expected).map_err(io_error(path))?;
    if actual != expected {
        return Err(SqliteBackupError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(size)
}

fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    let mut source = File::open(from).map_err(io_error(from))?;
    let mut target = File::create(to).map_err(io_error(to))?;
    io::copy(&mut source, &mut target).map_err(io_error(to))?;
    target.flush().map_err(io_error(to))?;
    target.sync_all().map_err(io_error(to))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}
