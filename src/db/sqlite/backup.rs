//! Making an SQLite backup and checking one: a consistent copy under SQLite's write lock (or
//! `VACUUM INTO` for a WAL database), its integrity check and checksum.

use std::fs;
use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

use super::copies::remove_rehearsal_copies;
use super::space::{SpacePlan, check_space};
use super::{Result, SqliteBackupError, copy_synced, ensure_checksum, io_error, with_suffix};
use crate::db::file::{folder_of, size_and_checksum, sync_dir};
use crate::machine::{BackupMethod, BackupRecord};

/// Copies `database` to `destination` (same bytes), verifies the copy, and reports it. Only
/// the copy's room is checked: see [`back_up_for`] when more is to follow.
pub async fn back_up(database: &Path, destination: &Path) -> Result<BackupRecord> {
    back_up_for(database, destination, SpacePlan::CopyOnly).await
}

/// Like [`back_up`], after checking there is room for everything `plan` says will follow.
pub async fn back_up_for(
    database: &Path,
    destination: &Path,
    plan: SpacePlan,
) -> Result<BackupRecord> {
    let dir = folder_of(destination);
    if plan == SpacePlan::BackupBeforeMigration && dir.is_dir() {
        remove_rehearsal_copies(dir)?;
    }
    prepare_for(database, destination, plan)?;
    let temporary = with_suffix(destination, ".partial");
    {
        let mut connection = open(database, false).await?;
        let sqlite_error = |source| SqliteBackupError::Sqlite {
            path: database.to_path_buf(),
            source,
        };
        let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
            .fetch_one(&mut connection)
            .await
            .map_err(sqlite_error)?;
        if mode.eq_ignore_ascii_case("wal") {
            // In WAL mode recent commits live in the -wal file, not the main file: let SQLite
            // write a consistent snapshot instead (same data, not the same bytes).
            let _ = fs::remove_file(&temporary);
            sqlx::query("VACUUM INTO ?")
                .bind(temporary.display().to_string())
                .execute(&mut connection)
                .await
                .map_err(sqlite_error)?;
        } else {
            // RESERVED lock: no other connection can write while the bytes are copied, and a
            // hot journal left by a crashed writer has been rolled back by SQLite first.
            connection
                .execute("BEGIN IMMEDIATE")
                .await
                .map_err(sqlite_error)?;
            let copied = copy_synced(database, &temporary);
            let _ = connection.execute("ROLLBACK").await;
            copied?;
        }
    }
    check_integrity(&temporary).await?;
    let (size_bytes, checksum) = size_and_checksum(&temporary).map_err(io_error(&temporary))?;
    fs::rename(&temporary, destination).map_err(io_error(destination))?;
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
    let size = fs::metadata(database).map_err(io_error(database))?.len();
    check_space(plan.needs(size, folder_of(database), dir))
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
}
