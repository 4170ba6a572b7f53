//! Making an SQLite backup and checking one: a consistent copy under SQLite's write lock (or
//! `VACUUM INTO` for a WAL database), its checksum and its integrity check.
//!
//! The two checks answer different questions. The checksum, computed from the bytes as they
//! are read and compared with the copy read back, says the copy is the database, byte for
//! byte. `PRAGMA integrity_check` on the copy says the database itself is sound; it reads and
//! cross-checks every page, which takes several times as long as the copy. The rehearsal's
//! copy, made before the downtime while the hub still runs, always gets it; the backup inside
//! the downtime then skips it when the rehearsal's checked copy is there to show it passed
//! (see [`back_up_for`]). Without a rehearsal (turned off, or a ReadWriteOncePod claim the
//! running hub holds) the backup inside the downtime is the only check and keeps it.

use std::fs::{self, File};
use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

use super::copies::{rehearsal_copy_of, remove_rehearsal_copies};
use super::space::{SpacePlan, check_space, copy_size};
use super::{Result, SqliteBackupError, ensure_checksum, io_error, out_of_space, with_suffix};
use crate::db::checked_copy::copy_checked;
use crate::db::file::{folder_of, size_and_checksum, sync_dir};
use crate::machine::{BackupMethod, BackupRecord};

/// Copies `database` to `destination` (same bytes), verifies the copy, and reports it. Only
/// the copy's room is checked: see [`back_up_for`] when more is to follow.
pub async fn back_up(database: &Path, destination: &Path) -> Result<BackupRecord> {
    back_up_for(database, destination, SpacePlan::CopyOnly).await
}

/// Like [`back_up`], after checking there is room for everything `plan` says will follow.
///
/// A rollback-journal database is copied with its checksum computed as it is read, and the
/// copy read back and compared (`db::checked_copy`); a WAL database is written by `VACUUM
/// INTO`, then checksummed. Either copy is durable (fsynced, then its folder after the rename)
/// before this returns. `PRAGMA integrity_check` runs on the copy too, except for the backup
/// before the migration ([`SpacePlan::BackupBeforeMigration`]) when this upgrade's rehearsal
/// copy is next to it: that copy is renamed into place only after it passed the same check,
/// so the database was found sound before the downtime, and the backup only has to be that
/// database, which its checksum shows.
pub async fn back_up_for(
    database: &Path,
    destination: &Path,
    plan: SpacePlan,
) -> Result<BackupRecord> {
    let dir = folder_of(destination);
    let checked_by_rehearsal = integrity_checked_by_rehearsal(destination, plan);
    if plan == SpacePlan::BackupBeforeMigration && dir.is_dir() {
        remove_rehearsal_copies(dir)?;
    }
    prepare_for(database, destination, plan)?;
    let temporary = with_suffix(destination, ".partial");
    let (size_bytes, checksum) = match write_copy(database, &temporary, !checked_by_rehearsal).await
    {
        Ok(copied) => copied,
        Err(error) => {
            // A partial or unchecked copy must not stay: it holds the room the next try
            // needs, and nothing in it can be trusted.
            let _ = fs::remove_file(&temporary);
            let needed = copy_size(database).unwrap_or(0);
            return Err(out_of_space(error, &temporary, needed, || {
                format!(
                    "the partial copy was removed; the database {} was left as it was",
                    database.display()
                )
            }));
        }
    };
    if let Err(error) = fs::rename(&temporary, destination) {
        let _ = fs::remove_file(&temporary);
        return Err(io_error(destination)(error));
    }
    sync_dir(dir).map_err(io_error(dir))?;
    Ok(BackupRecord {
        method: BackupMethod::File,
        reference: destination.display().to_string(),
        size_bytes: Some(size_bytes),
        checksum: Some(checksum),
        verified: true,
        pruned: Vec::new(),
    })
}

/// Writes the copy of `database` to `temporary` (see [`back_up_for`]) and, when
/// `integrity_check` says, runs `PRAGMA integrity_check` on it; returns its size and checksum.
/// On an error the caller removes `temporary`.
async fn write_copy(
    database: &Path,
    temporary: &Path,
    integrity_check: bool,
) -> Result<(u64, String)> {
    let mut connection = open(database, false).await?;
    let sqlite_error = |source| SqliteBackupError::Sqlite {
        path: database.to_path_buf(),
        source,
    };
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut connection)
        .await
        .map_err(sqlite_error)?;
    let copied = if mode.eq_ignore_ascii_case("wal") {
        // In WAL mode recent commits live in the -wal file, not the main file: let SQLite
        // write a consistent snapshot instead (same data, not the same bytes), then make
        // it durable and checksum it.
        let _ = fs::remove_file(temporary);
        sqlx::query("VACUUM INTO ?")
            .bind(temporary.display().to_string())
            .execute(&mut connection)
            .await
            .map_err(sqlite_error)?;
        File::open(temporary)
            .and_then(|copy| copy.sync_all())
            .map_err(io_error(temporary))?;
        size_and_checksum(temporary).map_err(io_error(temporary))?
    } else {
        // RESERVED lock: no other connection can write while the bytes are copied, and a
        // hot journal left by a crashed writer has been rolled back by SQLite first.
        connection
            .execute("BEGIN IMMEDIATE")
            .await
            .map_err(sqlite_error)?;
        let copied = File::open(database)
            .map_err(io_error(database))
            .and_then(|mut source| {
                copy_checked(&mut source, temporary).map_err(io_error(temporary))
            });
        let _ = connection.execute("ROLLBACK").await;
        let copied = copied?;
        (copied.size, copied.checksum)
    };
    drop(connection);
    if integrity_check {
        check_integrity(temporary).await?;
    }
    Ok(copied)
}

/// Whether `PRAGMA integrity_check` of the source already passed before the downtime: the
/// backup before the migration, with this upgrade's rehearsal copy (renamed into place only
/// once checked) next to it. Read before the rehearsal's copies are removed; a retried backup
/// that finds them removed checks again, which costs time and never safety.
fn integrity_checked_by_rehearsal(destination: &Path, plan: SpacePlan) -> bool {
    plan == SpacePlan::BackupBeforeMigration
        && rehearsal_copy_of(destination).is_some_and(|copy| copy.is_file())
}

/// Checks, changing nothing but creating the destination's folder, that `database` exists and
/// that its copy fits at `destination`.
pub fn prepare(database: &Path, destination: &Path) -> Result<()> {
    prepare_for(database, destination, SpacePlan::CopyOnly)
}

/// Like [`prepare`], checking the room for everything `plan` says will follow the copy.
pub fn prepare_for(database: &Path, destination: &Path, plan: SpacePlan) -> Result<()> {
    if !database.is_file() {
        return Err(SqliteBackupError::Missing(database.to_path_buf()));
    }
    let dir = folder_of(destination);
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let size = copy_size(database)?;
    check_space(plan.needs(size, folder_of(database), dir))?;
    if plan == SpacePlan::RehearsalCopy {
        // The rehearsal's copies are gone before the backup in the downtime, which needs more:
        // a volume without room for it is found now, while the hub still runs, instead of
        // after the hub was stopped.
        check_space(SpacePlan::BackupBeforeMigration.needs(size, folder_of(database), dir))?;
    }
    Ok(())
}

/// Checks a backup file is still what was recorded: same checksum, and SQLite finds it intact.
pub async fn verify(backup: &Path, checksum: &str) -> Result<()> {
    if !backup.is_file() {
        return Err(SqliteBackupError::Missing(backup.to_path_buf()));
    }
    ensure_checksum(backup, checksum)?;
    check_integrity(backup).await
}

pub(super) async fn open(path: &Path, read_only: bool) -> Result<SqliteConnection> {
    let options = SqliteConnectOptions::new()
        .filename(path)
        .read_only(read_only)
        .create_if_missing(false);
    SqliteConnection::connect_with(&options)
        .await
        .map_err(|source| SqliteBackupError::Sqlite {
            path: path.to_path_buf(),
            source,
        })
}

pub(super) async fn check_integrity(path: &Path) -> Result<()> {
    let mut connection = open(path, true).await?;
    let rows: Vec<(String,)> = sqlx::query_as("PRAGMA integrity_check")
        .fetch_all(&mut connection)
        .await
        .map_err(|source| SqliteBackupError::Corrupt {
            path: path.to_path_buf(),
            detail: source.to_string(),
        })?;
    let _ = connection.close().await;
    match rows.as_slice() {
        [(ok,)] if ok == "ok" => Ok(()),
        _ => Err(SqliteBackupError::Corrupt {
            path: path.to_path_buf(),
            detail: rows
                .into_iter()
                .map(|(r,)| r)
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn database(path: &Path, wal: bool) {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let mut db = SqliteConnection::connect_with(&options)
            .await
            .expect("database");
        if wal {
            db.execute("PRAGMA journal_mode = WAL").await.expect("wal");
        }
        db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
            .await
            .expect("table");
        db.execute("INSERT INTO users (name) VALUES ('alice'), ('bob')")
            .await
            .expect("rows");
        // Left open on purpose in WAL mode: the rows may still sit in the -wal file.
        std::mem::forget(db);
    }

    async fn names(path: &Path) -> Vec<String> {
        let mut db = open(path, true).await.expect("open");
        let rows: Vec<(String,)> = sqlx::query_as("SELECT name FROM users ORDER BY id")
            .fetch_all(&mut db)
            .await
            .expect("rows");
        rows.into_iter().map(|(n,)| n).collect()
    }

    #[tokio::test]
    async fn a_backup_of_a_wal_database_holds_the_commits_still_in_the_wal() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        database(&source, true).await;
        let copy = dir.path().join("backups/hub.sqlite");
        let reference = back_up(&source, &copy).await.expect("backup");
        assert!(reference.verified);
        assert_eq!(names(&copy).await, ["alice", "bob"]);
    }

    #[tokio::test]
    async fn a_backup_of_a_rollback_journal_database_is_byte_identical() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        database(&source, false).await;
        let copy = dir.path().join("hub.sqlite.bak");
        let reference = back_up(&source, &copy).await.expect("backup");
        assert_eq!(
            reference.checksum,
            Some(size_and_checksum(&source).expect("checksum").1)
        );
        assert_eq!(names(&copy).await, ["alice", "bob"]);
    }

    /// A rollback-journal database of a few hundred pages, with an index, whose middle pages
    /// are then overwritten: it opens, but `PRAGMA integrity_check` finds it corrupt.
    async fn corrupt_database(path: &Path) {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let mut db = SqliteConnection::connect_with(&options)
            .await
            .expect("database");
        db.execute(
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
             CREATE INDEX users_by_name ON users (name);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO users (name) SELECT hex(randomblob(40)) FROM n;",
        )
        .await
        .expect("rows");
        db.close().await.expect("close");
        let mut bytes = fs::read(path).expect("database");
        let middle = bytes.len() / 2 / 4096 * 4096;
        bytes[middle..middle + 3 * 4096].fill(0x5a);
        fs::write(path, bytes).expect("corrupting the database");
    }

    fn sha256_of(path: &Path) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(fs::read(path).expect("file"));
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    #[tokio::test]
    async fn the_backup_in_the_downtime_is_byte_identical_and_verifies_by_its_checksum() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        database(&source, false).await;
        let backups = dir.path().join("hubgrade-backups");
        let rehearsal = backups.join("hubgrade-0123abcd-rehearsal.sqlite");
        back_up_for(&source, &rehearsal, SpacePlan::RehearsalCopy)
            .await
            .expect("rehearsal copy");
        let copy = backups.join("hubgrade-0123abcd-db.sqlite");
        let record = back_up_for(&source, &copy, SpacePlan::BackupBeforeMigration)
            .await
            .expect("backup");
        assert_eq!(
            fs::read(&copy).expect("copy"),
            fs::read(&source).expect("db")
        );
        let checksum = record.checksum.expect("a checksum");
        assert!(checksum.starts_with("blake3:"), "{checksum}");
        assert_eq!(
            record.size_bytes,
            Some(fs::metadata(&source).expect("db").len())
        );
        verify(&copy, &checksum).await.expect("the backup verifies");
        assert!(!rehearsal.exists(), "the rehearsal copy was left");
        assert!(!with_suffix(&copy, ".partial").exists());
    }

    #[tokio::test]
    async fn a_backup_changed_after_it_was_made_fails_its_checksum() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        database(&source, false).await;
        let copy = dir.path().join("hubgrade-0123abcd-db.sqlite");
        let record = back_up_for(&source, &copy, SpacePlan::BackupBeforeMigration)
            .await
            .expect("backup");
        let mut bytes = fs::read(&copy).expect("copy");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        fs::write(&copy, bytes).expect("flipping a byte");
        let error = verify(&copy, &record.checksum.expect("checksum"))
            .await
            .expect_err("a changed backup verified");
        assert!(
            matches!(error, SqliteBackupError::ChecksumMismatch { .. }),
            "{error}"
        );
    }

    #[tokio::test]
    async fn backups_recorded_with_sha256_still_verify_and_unknown_hashes_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        database(&source, false).await;
        let copy = dir.path().join("hub.sqlite.bak");
        back_up(&source, &copy).await.expect("backup");
        // What an earlier release recorded for the same bytes.
        let recorded = sha256_of(&copy);
        verify(&copy, &recorded)
            .await
            .expect("a sha256: checksum verifies");
        let wrong = format!("sha256:{}", "0".repeat(64));
        let error = verify(&copy, &wrong)
            .await
            .expect_err("a wrong sha256 verified");
        assert!(
            matches!(error, SqliteBackupError::ChecksumMismatch { .. }),
            "{error}"
        );
        let error = verify(&copy, "md5:00").await.expect_err("md5 verified");
        assert!(
            error.to_string().contains("names no hash hubgrade knows"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_rehearsal_and_a_backup_without_rehearsal_report_a_corrupt_source() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        corrupt_database(&source).await;
        let backups = dir.path().join("hubgrade-backups");
        let rehearsal = backups.join("hubgrade-0123abcd-rehearsal.sqlite");
        let error = back_up_for(&source, &rehearsal, SpacePlan::RehearsalCopy)
            .await
            .expect_err("the rehearsal copied a corrupt database");
        assert!(
            matches!(error, SqliteBackupError::Corrupt { .. }),
            "{error}"
        );
        assert!(
            !rehearsal.exists(),
            "an unchecked rehearsal copy is in place"
        );
        // No rehearsal copy (rehearsal off, or a ReadWriteOncePod claim): the backup in the
        // downtime is the only check, and runs it.
        let copy = backups.join("hubgrade-0123abcd-db.sqlite");
        let error = back_up_for(&source, &copy, SpacePlan::BackupBeforeMigration)
            .await
            .expect_err("the backup copied a corrupt database");
        assert!(
            matches!(error, SqliteBackupError::Corrupt { .. }),
            "{error}"
        );
        assert!(!copy.exists());
        assert!(
            !with_suffix(&copy, ".partial").exists(),
            "the copy that failed its check was left as a .partial"
        );
    }

    #[tokio::test]
    async fn a_volume_that_fills_up_during_the_copy_leaves_no_partial_copy_and_says_so() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        database(&source, false).await;
        let before = size_and_checksum(&source).expect("checksum");
        let backups = dir.path().join("hubgrade-backups");
        fs::create_dir_all(&backups).expect("dir");
        let copy = backups.join("hubgrade-0123abcd-db.sqlite");
        // Every write to /dev/full fails with ENOSPC, as on a volume that filled up after the
        // space check (another writer on the volume): the copy is opened through this link.
        let partial = with_suffix(&copy, ".partial");
        std::os::unix::fs::symlink("/dev/full", &partial).expect("link");
        let error = back_up_for(&source, &copy, SpacePlan::BackupBeforeMigration)
            .await
            .expect_err("a copy onto a full volume passed");
        let message = error.to_string();
        assert!(
            matches!(error, SqliteBackupError::VolumeFull { .. }),
            "{message}"
        );
        for part in [
            "no space left on the volume holding",
            "hubgrade-0123abcd-db.sqlite.partial",
            "is free now",
            "the partial copy was removed",
            "was left as it was",
        ] {
            assert!(message.contains(part), "{part:?} missing from: {message}");
        }
        assert!(
            fs::symlink_metadata(&partial).is_err(),
            "the partial copy is left"
        );
        assert!(!copy.exists());
        assert_eq!(size_and_checksum(&source).expect("checksum"), before);
    }

    #[tokio::test]
    async fn the_backup_in_the_downtime_leaves_the_integrity_check_to_the_rehearsal() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        corrupt_database(&source).await;
        // The rehearsal's checked copy of this upgrade (the database broke after it).
        let backups = dir.path().join("hubgrade-backups");
        fs::create_dir_all(&backups).expect("dir");
        fs::write(
            backups.join("hubgrade-0123abcd-rehearsal.sqlite"),
            b"checked",
        )
        .expect("w");
        // Another upgrade's rehearsal copy proves nothing about this one.
        fs::write(backups.join("hubgrade-99999999-rehearsal.sqlite"), b"other").expect("w");
        let other = backups.join("hubgrade-77777777-db.sqlite");
        let error = back_up_for(&source, &other, SpacePlan::BackupBeforeMigration)
            .await
            .expect_err("another upgrade's rehearsal skipped the check");
        assert!(
            matches!(error, SqliteBackupError::Corrupt { .. }),
            "{error}"
        );

        fs::write(
            backups.join("hubgrade-0123abcd-rehearsal.sqlite"),
            b"checked",
        )
        .expect("w");
        let copy = backups.join("hubgrade-0123abcd-db.sqlite");
        let record = back_up_for(&source, &copy, SpacePlan::BackupBeforeMigration)
            .await
            .expect("the rehearsal's check counts");
        // Byte for byte what the hub had, which a roll back puts back.
        assert_eq!(
            fs::read(&copy).expect("copy"),
            fs::read(&source).expect("db")
        );
        ensure_checksum(&copy, &record.checksum.expect("checksum")).expect("checksum");
    }
}
