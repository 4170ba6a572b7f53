//! SQLite file backups. The copy is taken under SQLite's own write lock, so it is consistent
//! even if a hub were still writing; restore replaces the file atomically and verifies it.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

use super::BackupReference;

#[derive(Debug, thiserror::Error)]
pub enum SqliteBackupError {
    #[error("the database file {0} does not exist")]
    Missing(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("SQLite refused {path}: {source}")]
    Sqlite { path: PathBuf, source: sqlx::Error },
    #[error(
        "not enough space for the backup in {dir}: {needed} bytes needed, {available} available"
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        available: u64,
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

/// Copies `database` to `destination` (same bytes), verifies the copy, and reports it.
pub async fn back_up(database: &Path, destination: &Path) -> Result<BackupReference> {
    prepare(database, destination)?;
    let dir = destination.parent().unwrap_or(Path::new("."));
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
    let (size_bytes, checksum) = size_and_checksum(&temporary)?;
    fs::rename(&temporary, destination).map_err(io_error(destination))?;
    sync_dir(dir)?;
    Ok(BackupReference {
        method: "File".into(),
        reference: destination.display().to_string(),
        size_bytes,
        checksum: Some(checksum),
        verified: true,
    })
}

/// Checks, changing nothing but creating the destination's folder, that `database` exists and
/// that its copy fits at `destination`.
pub fn prepare(database: &Path, destination: &Path) -> Result<()> {
    if !database.is_file() {
        return Err(SqliteBackupError::Missing(database.to_path_buf()));
    }
    let dir = destination.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let size = fs::metadata(database).map_err(io_error(database))?.len();
    let available = available_space(dir)?;
    // Keep a margin: a full volume would stop the hub itself from writing.
    let needed = size + size / 10 + 1024 * 1024;
    if available < needed {
        return Err(SqliteBackupError::NoSpace {
            dir: dir.to_path_buf(),
            needed,
            available,
        });
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

/// The file's size, if its checksum is `expected`.
fn ensure_checksum(path: &Path, expected: &str) -> Result<u64> {
    let (size, actual) = size_and_checksum(path)?;
    if actual != expected {
        return Err(SqliteBackupError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(size)
}

/// Replaces `database` with `backup`, after checking the backup still has `checksum`.
/// The old file is replaced by a rename, so a crash leaves either the old or the new file.
pub async fn restore(backup: &Path, database: &Path, checksum: &str) -> Result<BackupReference> {
    if !backup.is_file() {
        return Err(SqliteBackupError::Missing(backup.to_path_buf()));
    }
    ensure_checksum(backup, checksum)?;
    let dir = database.parent().unwrap_or(Path::new("."));
    let temporary = with_suffix(database, ".hubgrade-restore");
    copy_synced(backup, &temporary)?;
    // The synced copy is checked before it replaces anything; the rename keeps its bytes.
    let size_bytes = match ensure_checksum(&temporary, checksum) {
        Ok(size) => size,
        Err(error) => {
            let _ = fs::remove_file(&temporary);
            return Err(error);
        }
    };
    // A journal left by the failed migration would be replayed onto the restored file.
    for suffix in ["-journal", "-wal", "-shm"] {
        let side = with_suffix(database, suffix);
        if side.exists() {
            fs::remove_file(&side).map_err(io_error(&side))?;
        }
    }
    fs::rename(&temporary, database).map_err(io_error(database))?;
    sync_dir(dir)?;
    Ok(BackupReference {
        method: "File".into(),
        reference: backup.display().to_string(),
        size_bytes,
        checksum: Some(checksum.to_string()),
        verified: true,
    })
}

/// Keeps the `keep` newest hubgrade database backups (`hubgrade-*-db.sqlite`) in the folder of
/// `newest` (which is always kept) and deletes the older ones and every rehearsal copy
/// (`hubgrade-*-rehearsal.sqlite`). Returns what was deleted.
pub fn prune_backups(newest: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let dir = newest.parent().unwrap_or(Path::new("."));
    let mut backups = Vec::new();
    let mut deleted = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("hubgrade-") {
            continue;
        }
        let path = entry.path();
        if name.ends_with("-rehearsal.sqlite") {
            fs::remove_file(&path).map_err(io_error(&path))?;
            deleted.push(path);
        } else if name.ends_with("-db.sqlite") && path != newest {
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(io_error(&path))?;
            backups.push((modified, path));
        }
    }
    // Newest first; the backup just made counts as one of the kept.
    backups.sort_by_key(|(modified, _)| std::cmp::Reverse(*modified));
    for (_, path) in backups.into_iter().skip(keep.saturating_sub(1)) {
        fs::remove_file(&path).map_err(io_error(&path))?;
        deleted.push(path);
    }
    Ok(deleted)
}

/// Size and `sha256:<hex>` of a file.
pub fn size_and_checksum(path: &Path) -> Result<(u64, String)> {
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        size += n as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((size, format!("sha256:{hex}")))
}

async fn open(path: &Path, read_only: bool) -> Result<SqliteConnection> {
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

async fn check_integrity(path: &Path) -> Result<()> {
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

fn copy_synced(from: &Path, to: &Path) -> Result<()> {
    let mut source = File::open(from).map_err(io_error(from))?;
    let mut target = File::create(to).map_err(io_error(to))?;
    io::copy(&mut source, &mut target).map_err(io_error(to))?;
    target.flush().map_err(io_error(to))?;
    target.sync_all().map_err(io_error(to))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn available_space(dir: &Path) -> Result<u64> {
    super::available_space(dir).map_err(io_error(dir))
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

    #[test]
    fn pruning_keeps_the_newest_backups_and_drops_rehearsal_copies() {
        let dir = tempfile::tempdir().expect("dir");
        let path = |name: &str| dir.path().join(name);
        for (i, name) in [
            "hubgrade-aaaa-db.sqlite",
            "hubgrade-bbbb-db.sqlite",
            "hubgrade-cccc-db.sqlite",
        ]
        .iter()
        .enumerate()
        {
            fs::write(path(name), b"old").expect("write");
            let time = std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::from_secs(1_000 + i as u64);
            File::options()
                .write(true)
                .open(path(name))
                .and_then(|f| f.set_modified(time))
                .expect("mtime");
        }
        fs::write(path("hubgrade-dddd-rehearsal.sqlite"), b"scratch").expect("write");
        fs::write(
            path("jupyterhub.sqlite.2026-01-01-000000"),
            b"jupyterhub's own",
        )
        .expect("write");
        let newest = path("hubgrade-eeee-db.sqlite");
        fs::write(&newest, b"new").expect("write");

        let deleted = prune_backups(&newest, 2).expect("prune");
        assert_eq!(deleted.len(), 3, "{deleted:?}");
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "hubgrade-cccc-db.sqlite",
                "hubgrade-eeee-db.sqlite",
                "jupyterhub.sqlite.2026-01-01-000000"
            ]
        );
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
