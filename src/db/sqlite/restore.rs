//! Restoring an SQLite backup in place of the database, making room for it only from copies
//! that are provably redundant.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::copies::{jupyterhub_copies, rehearsal_copies};
use super::{
    Result, SqliteBackupError, copy_synced, ensure_checksum, human, io_error, out_of_space,
    with_suffix,
};
use crate::db::file::{available_space, folder_of, size_and_checksum_like, sync_dir};
use crate::machine::{BackupMethod, BackupRecord};

/// A restore done, and what was removed to make room for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub backup: BackupRecord,
    pub removed_to_make_room: Vec<PathBuf>,
    /// The database already held the backup's bytes: nothing was copied.
    pub already_in_place: bool,
}

/// Room asked for beyond the temporary copy's whole blocks: a large file needs a few blocks of
/// its own to map them.
const RESTORE_SLACK: u64 = 64 * 1024;

/// Replaces `database` with `backup`, after checking the backup still has `checksum`.
/// The old file is replaced by a rename, so a crash leaves either the old or the new file.
/// When the temporary copy does not fit, JupyterHub's timestamped copies holding exactly the
/// backup's bytes go first, then rehearsal copies; when even that is not enough, nothing is
/// touched. A database that already holds the backup's bytes is left in place (its journals
/// removed), needing no room. A volume that fills up during the copy leaves the database and
/// the backup as they were.
pub async fn restore(backup: &Path, database: &Path, checksum: &str) -> Result<Restored> {
    if !backup.is_file() {
        return Err(SqliteBackupError::Missing(backup.to_path_buf()));
    }
    let size = ensure_checksum(backup, checksum)?;
    let dir = folder_of(database);
    let record = BackupRecord {
        method: BackupMethod::File,
        reference: backup.display().to_string(),
        size_bytes: Some(size),
        checksum: Some(checksum.to_string()),
        verified: true,
        pruned: Vec::new(),
    };
    if holds_the_backup(database, size, checksum)? {
        // A migration that failed before writing (`upgrade-db` copies the database first, which
        // a full volume refuses) left the backup's very bytes: nothing to copy, and so nothing
        // that needs room. Only its journals go, as below.
        remove_journals(database)?;
        sync_dir(dir).map_err(io_error(dir))?;
        return Ok(Restored {
            backup: record,
            removed_to_make_room: Vec::new(),
            already_in_place: true,
        });
    }
    let temporary = with_suffix(database, ".hubgrade-restore");
    let removed_to_make_room = make_room_to_restore(backup, database, checksum, size, &temporary)?;
    if let Err(error) = copy_synced(backup, &temporary) {
        let _ = fs::remove_file(&temporary);
        return Err(out_of_space(error, &temporary, size, || {
            format!(
                "the partial copy was removed, the database {} was not replaced and the backup \
                 {} is intact: make room for {} on the volume (or grow its claim), then restore \
                 again",
                database.display(),
                backup.display(),
                human(size.div_ceil(4096) * 4096 + RESTORE_SLACK)
            )
        }));
    }
    // The synced copy is checked before it replaces anything; the rename keeps its bytes.
    let size_bytes = match ensure_checksum(&temporary, checksum) {
        Ok(size) => size,
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            return Err(error);
        }
    };
    remove_journals(database)?;
    fs::rename(&temporary, database).map_err(io_error(database))?;
    sync_dir(dir).map_err(io_error(dir))?;
    Ok(Restored {
        backup: BackupRecord {
            size_bytes: Some(size_bytes),
            ..record
        },
        removed_to_make_room,
        already_in_place: false,
    })
}

/// Whether `database` is already the backup of `size` bytes and `checksum`, byte for byte.
/// Read only when the sizes match.
fn holds_the_backup(database: &Path, size: u64, checksum: &str) -> Result<bool> {
    match fs::metadata(database) {
        Ok(metadata) if metadata.is_file() && metadata.len() == size => {
            let (_, actual) =
                size_and_checksum_like(database, checksum).map_err(io_error(database))?;
            Ok(actual == checksum)
        }
        _ => Ok(false),
    }
}

/// Removes the journals next to `database`: one left by the failed migration would be replayed
/// onto the restored file.
fn remove_journals(database: &Path) -> Result<()> {
    for suffix in ["-journal", "-wal", "-shm"] {
        let side = with_suffix(database, suffix);
        if side.exists() {
            fs::remove_file(&side).map_err(io_error(&side))?;
        }
    }
    Ok(())
}

/// Removes, when the restore's temporary copy of `size` bytes does not fit next to the
/// database, as few redundant copies as make it fit; returns them. Decides before removing:
/// when all of them would not make room, it fails and removes nothing.
fn make_room_to_restore(
    backup: &Path,
    database: &Path,
    checksum: &str,
    size: u64,
    temporary: &Path,
) -> Result<Vec<PathBuf>> {
    let dir = folder_of(database);
    let needed = size.div_ceil(4096) * 4096 + RESTORE_SLACK;
    // A temporary copy left by an interrupted restore is overwritten, so its room counts.
    let stale = fs::metadata(temporary).map_or(0, |m| m.blocks() * 512);
    let available = available_space(dir).map_err(io_error(dir))? + stale;
    if available >= needed {
        return Ok(Vec::new());
    }
    let candidates = removable_for_restore(backup, database, checksum)?;
    match choose_removals(needed - available, &candidates) {
        Ok(chosen) => {
            for path in &chosen {
                fs::remove_file(path).map_err(io_error(path))?;
            }
            Ok(chosen)
        }
        Err(missing) => Err(SqliteBackupError::NoRoomToRestore {
            dir: dir.to_path_buf(),
            backup: backup.to_path_buf(),
            needed,
            available,
            removable: candidates.iter().map(|(_, bytes)| bytes).sum(),
            missing,
        }),
    }
}

/// The first of `candidates` (path, bytes freed) that together free `short_by` bytes, or how
/// many bytes are still missing after all of them.
fn choose_removals(
    short_by: u64,
    candidates: &[(PathBuf, u64)],
) -> std::result::Result<Vec<PathBuf>, u64> {
    let mut freed = 0;
    let mut chosen = Vec::new();
    for (path, bytes) in candidates {
        if freed >= short_by {
            break;
        }
        freed += bytes;
        chosen.push(path.clone());
    }
    if freed >= short_by {
        Ok(chosen)
    } else {
        Err(short_by - freed)
    }
}

/// What a restore may remove, in the order it would: JupyterHub's timestamped copies of the
/// database whose checksum is the backup's (the same pre-migration bytes), then the rehearsal's
/// copies and seeds next to the backup. Only files on the database's file system, not linked elsewhere
/// and not the backup itself, each with the bytes its removal frees.
fn removable_for_restore(
    backup: &Path,
    database: &Path,
    checksum: &str,
) -> Result<Vec<(PathBuf, u64)>> {
    let database_dir = folder_of(database);
    let device = fs::metadata(database_dir)
        .map_err(io_error(database_dir))?
        .dev();
    let backup_itself = fs::canonicalize(backup).map_err(io_error(backup))?;
    let freed_by_removing = |path: &Path| -> Result<Option<u64>> {
        let metadata = fs::symlink_metadata(path).map_err(io_error(path))?;
        let removable = metadata.is_file()
            && metadata.dev() == device
            && metadata.nlink() == 1
            && fs::canonicalize(path).map_err(io_error(path))? != backup_itself;
        Ok(removable.then(|| metadata.blocks() * 512))
    };
    let mut candidates = Vec::new();
    for path in jupyterhub_copies(database, folder_of(backup))? {
        if let Some(bytes) = freed_by_removing(&path)?
            && size_and_checksum_like(&path, checksum)
                .map_err(io_error(&path))?
                .1
                == checksum
        {
            candidates.push((path, bytes));
        }
    }
    for path in rehearsal_copies(folder_of(backup))? {
        if let Some(bytes) = freed_by_removing(&path)? {
            candidates.push((path, bytes));
        }
    }
    Ok(candidates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_removes_only_what_makes_room_and_nothing_when_that_is_not_enough() {
        let candidates = [
            (PathBuf::from("jupyterhub.sqlite.2026-11-26-101500"), 300),
            (PathBuf::from("hubgrade-a-rehearsal.sqlite"), 300),
            (
                PathBuf::from("hubgrade-a-rehearsal.sqlite.2026-11-26-093000"),
                300,
            ),
        ];
        assert_eq!(
            choose_removals(250, &candidates),
            Ok(vec![candidates[0].0.clone()])
        );
        assert_eq!(
            choose_removals(300, &candidates),
            Ok(vec![candidates[0].0.clone()]),
            "exactly enough is enough"
        );
        assert_eq!(
            choose_removals(301, &candidates),
            Ok(vec![candidates[0].0.clone(), candidates[1].0.clone()])
        );
        assert_eq!(choose_removals(1000, &candidates), Err(100));
        assert_eq!(choose_removals(1, &[]), Err(1));
    }

    /// A database, its backup (same bytes) and the backup's checksum.
    fn database_and_backup(dir: &Path) -> (PathBuf, PathBuf, String) {
        let database = dir.join("jupyterhub.sqlite");
        fs::write(&database, b"before the migration").expect("write");
        let backup = dir.join("hubgrade-0123abcd-db.sqlite");
        fs::copy(&database, &backup).expect("backup");
        let checksum = crate::db::file::size_and_checksum(&backup)
            .expect("checksum")
            .1;
        (database, backup, checksum)
    }

    #[tokio::test]
    async fn a_database_that_already_holds_the_backup_is_left_in_place_without_a_copy() {
        let dir = tempfile::tempdir().expect("dir");
        let (database, backup, checksum) = database_and_backup(dir.path());
        let journal = with_suffix(&database, "-journal");
        fs::write(&journal, b"left by the failed migration").expect("journal");
        // The temporary copy could not be written: only a restore that copies nothing passes.
        let temporary = with_suffix(&database, ".hubgrade-restore");
        std::os::unix::fs::symlink("/dev/full", &temporary).expect("link");
        let restored = restore(&backup, &database, &checksum)
            .await
            .expect("restore");
        assert!(restored.already_in_place);
        assert!(restored.removed_to_make_room.is_empty());
        assert_eq!(fs::read(&database).expect("db"), b"before the migration");
        assert!(!journal.exists(), "the failed migration's journal is left");
    }

    #[tokio::test]
    async fn a_volume_that_fills_up_during_the_restore_leaves_the_database_and_the_backup() {
        let dir = tempfile::tempdir().expect("dir");
        let (database, backup, checksum) = database_and_backup(dir.path());
        fs::write(&database, b"half migrated").expect("write");
        // Every write to /dev/full fails with ENOSPC, as on a volume that filled up after the
        // space check: the temporary copy is opened through this link.
        let temporary = with_suffix(&database, ".hubgrade-restore");
        std::os::unix::fs::symlink("/dev/full", &temporary).expect("link");
        let error = restore(&backup, &database, &checksum)
            .await
            .expect_err("a restore onto a full volume passed");
        let message = error.to_string();
        assert!(
            matches!(error, SqliteBackupError::VolumeFull { .. }),
            "{message}"
        );
        for part in [
            "no space left on the volume holding",
            "jupyterhub.sqlite.hubgrade-restore",
            "was not replaced and the backup",
            "is intact: make room for 68.0 KiB on the volume (or grow its claim), then restore \
             again",
        ] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
        assert!(
            fs::symlink_metadata(&temporary).is_err(),
            "the partial copy is left"
        );
        assert_eq!(fs::read(&database).expect("db"), b"half migrated");
        ensure_checksum(&backup, &checksum).expect("the backup is intact");
    }

    #[tokio::test]
    async fn a_restore_never_removes_the_backup_it_restores_nor_copies_of_other_bytes() {
        let dir = tempfile::tempdir().expect("dir");
        let database = dir.path().join("jupyterhub.sqlite");
        fs::write(&database, b"migrated").expect("write");
        // A backup that itself has JupyterHub's name, a copy of other bytes, a true copy.
        let backup = dir.path().join("jupyterhub.sqlite.2026-11-26-101500");
        fs::write(&backup, b"before").expect("write");
        fs::write(
            dir.path().join("jupyterhub.sqlite.2026-11-26-111500"),
            b"other",
        )
        .expect("w");
        let twin = dir.path().join("jupyterhub.sqlite.2026-11-26-121500");
        fs::write(&twin, b"before").expect("write");
        let checksum = crate::db::file::size_and_checksum(&backup)
            .expect("checksum")
            .1;
        let found: Vec<PathBuf> = removable_for_restore(&backup, &database, &checksum)
            .expect("candidates")
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(found, [twin]);
    }
}
