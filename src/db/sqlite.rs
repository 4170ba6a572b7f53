//! SQLite file backups. The copy is taken under SQLite's own write lock, so it is consistent
//! even if a hub were still writing; restore replaces the file atomically and verifies it.
//! The free-space check asks up front for every copy still to come on the volume, pruning
//! keeps `backup.retain` of hubgrade's and JupyterHub's own copies, and a restore short of room
//! removes only copies that are provably redundant.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

use crate::machine::{BackupMethod, BackupRecord};

const MIB: u64 = 1024 * 1024;

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
         free {}: {} missing; nothing was changed, the database is as it was",
        human(*needed), human(*available), human(*removable), human(*missing)
    )]
    NoRoomToRestore {
        dir: PathBuf,
        backup: PathBuf,
        needed: u64,
        available: u64,
        removable: u64,
        missing: u64,
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

/// What is still to be written on the volume after a copy. The free-space check asks for all
/// of it before the copy: a volume that fills up half way through an upgrade leaves the hub
/// stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpacePlan {
    /// A copy and nothing after it (`hubgrade db backup` by hand).
    CopyOnly,
    /// The rehearsal's scratch copy, which `jupyterhub upgrade-db` then copies once more, next
    /// to it, before migrating it.
    RehearsalCopy,
    /// The backup before the migration. Then `jupyterhub upgrade-db` copies the database next
    /// to itself and may grow it, and a roll back writes a temporary copy of the backup next to
    /// the database. The hub is stopped and the rehearsal over, so the rehearsal's copies in the
    /// backup's folder are removed before the check and their room counts.
    BackupBeforeMigration,
}

/// One part of what a plan needs, and the folder it is written to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpaceNeed {
    /// Says what the bytes are for, e.g. "for the backup".
    pub purpose: &'static str,
    pub dir: PathBuf,
    pub bytes: u64,
}

impl SpacePlan {
    /// The plan the operator's Jobs mean, read from the name they give the copy
    /// (`hubgrade-<id>-rehearsal.sqlite`, `hubgrade-<id>-db.sqlite`, see `kube::objects`);
    /// any other name is a copy by hand.
    pub fn for_destination(destination: &Path) -> SpacePlan {
        let name = file_name(destination);
        if is_rehearsal_copy(&name) {
            SpacePlan::RehearsalCopy
        } else if name.starts_with("hubgrade-") && name.ends_with("-db.sqlite") {
            SpacePlan::BackupBeforeMigration
        } else {
            SpacePlan::CopyOnly
        }
    }

    /// What each part needs for a database of `size` bytes.
    pub fn needs(self, size: u64, database_dir: &Path, destination_dir: &Path) -> Vec<SpaceNeed> {
        let need = |purpose, dir: &Path, bytes| SpaceNeed {
            purpose,
            dir: dir.to_path_buf(),
            bytes,
        };
        // A full volume would stop the hub itself from writing.
        let margin = size / 10 + MIB;
        match self {
            SpacePlan::CopyOnly => vec![
                need("for the copy", destination_dir, size),
                need("to keep free", destination_dir, margin),
            ],
            SpacePlan::RehearsalCopy => vec![
                need("for the rehearsal copy", destination_dir, size),
                need(
                    "for JupyterHub's copy of it during the rehearsal's upgrade-db",
                    destination_dir,
                    size,
                ),
                need("to keep free", destination_dir, margin),
            ],
            SpacePlan::BackupBeforeMigration => vec![
                need("for the backup", destination_dir, size),
                need(
                    "for JupyterHub's copy during upgrade-db",
                    database_dir,
                    size,
                ),
                need(
                    "for the database to grow during upgrade-db",
                    database_dir,
                    size / 10,
                ),
                need("for a restore's temporary copy", database_dir, size),
                need("to keep free", database_dir, margin),
            ],
        }
    }
}

/// "not enough space in DIR: needs 4.0 MiB for the backup, ...: 9.0 MiB in all, 8.0 MiB
/// available in DIR".
fn describe_shortfall(dir: &Path, needs: &[SpaceNeed], available: u64) -> String {
    let parts: Vec<String> = needs
        .iter()
        .map(|need| format!("{} {}", human(need.bytes), need.purpose))
        .collect();
    let total: u64 = needs.iter().map(|need| need.bytes).sum();
    format!(
        "not enough space in {dir}: needs {}: {} in all, {} available in {dir}",
        parts.join(", "),
        human(total),
        human(available),
        dir = dir.display(),
    )
}

/// Checks every file system the needs fall on has room for all of its needs together.
fn check_space(needs: Vec<SpaceNeed>) -> Result<()> {
    let mut by_file_system: Vec<(u64, Vec<SpaceNeed>)> = Vec::new();
    for need in needs {
        let device = fs::metadata(&need.dir).map_err(io_error(&need.dir))?.dev();
        match by_file_system.iter_mut().find(|(d, _)| *d == device) {
            Some((_, group)) => group.push(need),
            None => by_file_system.push((device, vec![need])),
        }
    }
    for (_, needs) in by_file_system {
        let dir = needs[0].dir.clone();
        let available = available_space(&dir)?;
        if available < needs.iter().map(|need| need.bytes).sum::<u64>() {
            return Err(SqliteBackupError::NoSpace {
                dir,
                needs,
                available,
            });
        }
    }
    Ok(())
}

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
    let (size_bytes, checksum) = size_and_checksum(&temporary)?;
    fs::rename(&temporary, destination).map_err(io_error(destination))?;
    sync_dir(dir)?;
    Ok(BackupRecord {
        method: BackupMethod::File,
        reference: destination.display().to_string(),
        size_bytes: Some(size_bytes),
        checksum: Some(checksum),
        verified: true,
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

/// A restore done, and what was removed to make room for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    pub backup: BackupRecord,
    pub removed_to_make_room: Vec<PathBuf>,
}

/// Replaces `database` with `backup`, after checking the backup still has `checksum`.
/// The old file is replaced by a rename, so a crash leaves either the old or the new file.
/// When the temporary copy does not fit, JupyterHub's timestamped copies holding exactly the
/// backup's bytes go first, then rehearsal copies; when even that is not enough, nothing is
/// touched.
pub async fn restore(backup: &Path, database: &Path, checksum: &str) -> Result<Restored> {
    if !backup.is_file() {
        return Err(SqliteBackupError::Missing(backup.to_path_buf()));
    }
    let size = ensure_checksum(backup, checksum)?;
    let dir = folder_of(database);
    let temporary = with_suffix(database, ".hubgrade-restore");
    let removed_to_make_room = make_room_to_restore(backup, database, checksum, size, &temporary)?;
    if let Err(error) = copy_synced(backup, &temporary) {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
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
    Ok(Restored {
        backup: BackupRecord {
            method: BackupMethod::File,
            reference: backup.display().to_string(),
            size_bytes: Some(size_bytes),
            checksum: Some(checksum.to_string()),
            verified: true,
        },
        removed_to_make_room,
    })
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
    // Blocks are allocated whole, and a large file needs a few of its own to map them.
    let needed = size.div_ceil(4096) * 4096 + 64 * 1024;
    // A temporary copy left by an interrupted restore is overwritten, so its room counts.
    let stale = fs::metadata(temporary).map_or(0, |m| m.blocks() * 512);
    let available = available_space(dir)? + stale;
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
/// copies next to the backup. Only files on the database's file system, not linked elsewhere
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
            && size_and_checksum(&path)?.1 == checksum
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

/// Keeps the `keep` newest hubgrade database backups (`hubgrade-*-db.sqlite`) in the folder of
/// `newest` (which is always kept) and deletes the older ones, every rehearsal copy
/// (`hubgrade-*-rehearsal.sqlite`, and JupyterHub's copies of it), and all but the `keep`
/// newest of JupyterHub's own copies of `database` (`<name>.YYYY-MM-DD-HHMMSS`, which
/// `jupyterhub upgrade-db` makes and never removes) next to it and in the backups' folder.
/// Returns what was deleted.
pub fn prune_backups(database: &Path, newest: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let dir = folder_of(newest);
    let mut deleted = remove_rehearsal_copies(dir)?;
    let mut backups = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name.starts_with("hubgrade-") && name.ends_with("-db.sqlite") && path != newest {
            backups.push((modified(&path)?, path));
        }
    }
    // Newest first; the backup just made counts as one of the kept.
    backups.sort_by(|a, b| b.cmp(a));
    for (_, path) in backups.into_iter().skip(keep.saturating_sub(1)) {
        fs::remove_file(&path).map_err(io_error(&path))?;
        deleted.push(path);
    }
    let mut copies = Vec::new();
    for path in jupyterhub_copies(database, dir)? {
        copies.push((modified(&path)?, path));
    }
    copies.sort_by(|a, b| b.cmp(a));
    for (_, path) in copies.into_iter().skip(keep) {
        fs::remove_file(&path).map_err(io_error(&path))?;
        deleted.push(path);
    }
    Ok(deleted)
}

fn modified(path: &Path) -> Result<std::time::SystemTime> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(io_error(path))
}

/// Removes the rehearsal's copies in `dir`; returns them.
fn remove_rehearsal_copies(dir: &Path) -> Result<Vec<PathBuf>> {
    let copies = rehearsal_copies(dir)?;
    for path in &copies {
        fs::remove_file(path).map_err(io_error(path))?;
    }
    Ok(copies)
}

/// The rehearsal's scratch copies in `dir`, and JupyterHub's timestamped copies of them.
fn rehearsal_copies(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(file_names(dir)?
        .into_iter()
        .filter(|name| {
            is_rehearsal_copy(name)
                || name
                    .rsplit_once("-rehearsal.sqlite.")
                    .map(|(stem, _)| format!("{stem}-rehearsal.sqlite"))
                    .is_some_and(|copy| is_rehearsal_copy(&copy) && is_jupyterhub_copy(name, &copy))
        })
        .map(|name| dir.join(name))
        .collect())
}

/// JupyterHub's timestamped copies of `database`, next to it and in `other_dir`.
fn jupyterhub_copies(database: &Path, other_dir: &Path) -> Result<Vec<PathBuf>> {
    let database_name = file_name(database);
    let database_dir = folder_of(database);
    let mut dirs = vec![database_dir];
    let same = |a: &Path, b: &Path| fs::canonicalize(a).ok() == fs::canonicalize(b).ok();
    if other_dir.is_dir() && !same(database_dir, other_dir) {
        dirs.push(other_dir);
    }
    let mut copies = Vec::new();
    for dir in dirs {
        for name in file_names(dir)? {
            if is_jupyterhub_copy(&name, &database_name) {
                copies.push(dir.join(name));
            }
        }
    }
    Ok(copies)
}

/// Whether `name` is `<database_name>.YYYY-MM-DD-HHMMSS`, the copy `jupyterhub upgrade-db`
/// makes of an SQLite database before migrating it, or `<database_name>..YYYY-MM-DD-HHMMSS.N`
/// (N from 1 to 9), its spelling when that second's name is taken (`dbutil.backup_db_file`).
fn is_jupyterhub_copy(name: &str, database_name: &str) -> bool {
    let is_stamp = |stamp: &[u8]| {
        stamp.len() == 17
            && stamp.iter().enumerate().all(|(i, c)| match i {
                4 | 7 | 10 => *c == b'-',
                _ => c.is_ascii_digit(),
            })
    };
    match name.strip_prefix(database_name).map(str::as_bytes) {
        Some([b'.', b'.', stamp @ .., b'.', n]) => is_stamp(stamp) && (b'1'..=b'9').contains(n),
        Some([b'.', stamp @ ..]) => is_stamp(stamp),
        _ => false,
    }
}

fn is_rehearsal_copy(name: &str) -> bool {
    name.starts_with("hubgrade-") && name.ends_with("-rehearsal.sqlite")
}

fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if entry.file_type().map_err(io_error(dir))?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The folder holding `path` ("." for a bare file name).
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// "4.0 MiB": sizes as a person reads them in an error message.
fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * MIB => format!("{:.1} GiB", b as f64 / (1024 * MIB) as f64),
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b if b >= 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
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

    fn write_with_age(path: &Path, bytes: &[u8], seconds: u64) {
        fs::write(path, bytes).expect("write");
        let time = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(seconds);
        File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(time))
            .expect("mtime");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names = file_names(dir).expect("dir");
        names.sort();
        names
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
            write_with_age(&path(name), b"old", 1_000 + i as u64);
        }
        fs::write(path("hubgrade-dddd-rehearsal.sqlite"), b"scratch").expect("write");
        fs::write(
            path("hubgrade-dddd-rehearsal.sqlite.2026-11-26-093000"),
            b"jupyterhub's copy of the scratch",
        )
        .expect("write");
        fs::write(
            path("jupyterhub.sqlite.2026-01-01-000000"),
            b"jupyterhub's own",
        )
        .expect("write");
        let newest = path("hubgrade-eeee-db.sqlite");
        fs::write(&newest, b"new").expect("write");

        let elsewhere = tempfile::tempdir().expect("dir");
        let database = elsewhere.path().join("jupyterhub.sqlite");
        let deleted = prune_backups(&database, &newest, 2).expect("prune");
        assert_eq!(deleted.len(), 4, "{deleted:?}");
        assert_eq!(
            names_in(dir.path()),
            [
                "hubgrade-cccc-db.sqlite",
                "hubgrade-eeee-db.sqlite",
                "jupyterhub.sqlite.2026-01-01-000000"
            ]
        );
    }

    #[test]
    fn pruning_keeps_the_newest_of_jupyterhubs_own_copies_next_to_the_database() {
        let dir = tempfile::tempdir().expect("dir");
        let path = |name: &str| dir.path().join(name);
        let database = path("jupyterhub.sqlite");
        fs::write(&database, b"the database").expect("write");
        let backups = path("hubgrade-backups");
        fs::create_dir(&backups).expect("dir");
        // Named out of order on purpose: age is what counts.
        write_with_age(&path("jupyterhub.sqlite.2026-05-01-000000"), b"a", 1_000);
        write_with_age(&path("jupyterhub.sqlite.2026-04-01-000000"), b"b", 2_000);
        write_with_age(&path("jupyterhub.sqlite..2026-04-01-000000.1"), b"c", 3_000);
        write_with_age(
            &backups.join("jupyterhub.sqlite.2026-03-01-000000"),
            b"d",
            4_000,
        );
        let look_alikes = [
            "jupyterhub.sqlite.bak",
            "jupyterhub.sqlite-journal",
            "jupyterhub.sqlite.2026-05-01",
            "jupyterhub.sqlite.2026-05-01-000000.gz",
        ];
        for name in look_alikes {
            write_with_age(&path(name), b"keep me", 10);
        }
        let newest = backups.join("hubgrade-eeee-db.sqlite");
        fs::write(&newest, b"new").expect("write");

        let deleted = prune_backups(&database, &newest, 2).expect("prune");
        assert_eq!(
            deleted,
            [
                path("jupyterhub.sqlite.2026-04-01-000000"),
                path("jupyterhub.sqlite.2026-05-01-000000"),
            ]
        );
        assert_eq!(
            names_in(&backups),
            [
                "hubgrade-eeee-db.sqlite",
                "jupyterhub.sqlite.2026-03-01-000000"
            ]
        );
        let mut left: Vec<&str> = look_alikes.to_vec();
        left.extend([
            "jupyterhub.sqlite",
            "jupyterhub.sqlite..2026-04-01-000000.1",
        ]);
        left.sort();
        assert_eq!(names_in(dir.path()), left);
    }

    #[test]
    fn only_jupyterhubs_timestamped_names_count_as_its_copies() {
        for (name, copy) in [
            ("jupyterhub.sqlite.2026-11-26-101500", true),
            ("jupyterhub.sqlite..2026-11-26-101500.1", true),
            ("jupyterhub.sqlite..2026-11-26-101500.9", true),
            ("jupyterhub.sqlite..2026-11-26-101500.0", false),
            ("jupyterhub.sqlite..2026-11-26-101500.10", false),
            ("jupyterhub.sqlite..2026-11-26-101500", false),
            ("jupyterhub.sqlite.2026-11-26-101500.1", false),
            ("jupyterhub.sqlite.2026-11-26-101500.gz", false),
            ("jupyterhub.sqlite.2026-11-26-10150", false),
            ("jupyterhub.sqlite.2026-11-26-1015000", false),
            ("jupyterhub.sqlite.2026-11-26", false),
            ("jupyterhub.sqlite.2026_11_26_101500", false),
            ("jupyterhub.sqlite.2026-1l-26-101500", false),
            ("jupyterhub.sqlite.bak", false),
            ("jupyterhub.sqlite-journal", false),
            ("jupyterhub.sqlite", false),
            ("jupyterhub.sqlite2026-11-26-101500", false),
            ("other.sqlite.2026-11-26-101500", false),
            ("xjupyterhub.sqlite.2026-11-26-101500", false),
        ] {
            assert_eq!(
                is_jupyterhub_copy(name, "jupyterhub.sqlite"),
                copy,
                "{name}"
            );
        }
    }

    #[test]
    fn rehearsal_copies_are_the_operators_names_and_jupyterhubs_copies_of_them() {
        let dir = tempfile::tempdir().expect("dir");
        for name in [
            "hubgrade-0123abcd-rehearsal.sqlite",
            "hubgrade-0123abcd-rehearsal.sqlite.2026-11-26-093000",
            "hubgrade-0123abcd-rehearsal.sqlite.old",
            "hubgrade-0123abcd-db.sqlite",
            "my-rehearsal.sqlite",
        ] {
            fs::write(dir.path().join(name), b"x").expect("write");
        }
        let mut found: Vec<String> = rehearsal_copies(dir.path())
            .expect("list")
            .iter()
            .map(|p| file_name(p))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [
                "hubgrade-0123abcd-rehearsal.sqlite",
                "hubgrade-0123abcd-rehearsal.sqlite.2026-11-26-093000"
            ]
        );
    }

    #[test]
    fn each_plan_asks_for_every_copy_still_to_come() {
        let size = 100 * MIB;
        let (db, dest) = (Path::new("/hub"), Path::new("/hub/hubgrade-backups"));
        let total =
            |plan: SpacePlan| -> u64 { plan.needs(size, db, dest).iter().map(|n| n.bytes).sum() };
        let margin = size / 10 + MIB;
        assert_eq!(total(SpacePlan::CopyOnly), size + margin);
        assert_eq!(total(SpacePlan::RehearsalCopy), 2 * size + margin);
        assert_eq!(
            total(SpacePlan::BackupBeforeMigration),
            3 * size + size / 10 + margin
        );
        // The backup goes to its folder; the migration's copy, growth and restore next to the
        // database, which may be another file system.
        let needs = SpacePlan::BackupBeforeMigration.needs(size, db, dest);
        assert_eq!(needs[0].dir, dest);
        assert!(needs[1..].iter().all(|n| n.dir == db), "{needs:?}");
    }

    #[test]
    fn the_plan_follows_the_name_the_operator_gives_the_copy() {
        for (name, plan) in [
            (
                "/hub/hubgrade-backups/hubgrade-0123abcd-db.sqlite",
                SpacePlan::BackupBeforeMigration,
            ),
            (
                "/hub/hubgrade-backups/hubgrade-0123abcd-rehearsal.sqlite",
                SpacePlan::RehearsalCopy,
            ),
            ("/backups/jupyterhub.sqlite.bak", SpacePlan::CopyOnly),
            ("/backups/my-db.sqlite", SpacePlan::CopyOnly),
        ] {
            assert_eq!(SpacePlan::for_destination(Path::new(name)), plan, "{name}");
        }
    }

    #[test]
    fn a_shortfall_says_what_each_copy_needs_and_what_is_available() {
        let dir = Path::new("/hub/hubgrade-backups");
        let needs = SpacePlan::BackupBeforeMigration.needs(4 * MIB, dir, dir);
        let message = SqliteBackupError::NoSpace {
            dir: dir.to_path_buf(),
            needs,
            available: 8 * MIB,
        }
        .to_string();
        assert_eq!(
            message,
            "not enough space in /hub/hubgrade-backups: needs 4.0 MiB for the backup, \
             4.0 MiB for JupyterHub's copy during upgrade-db, 409.6 KiB for the database to \
             grow during upgrade-db, 4.0 MiB for a restore's temporary copy, 1.4 MiB to keep \
             free: 13.8 MiB in all, 8.0 MiB available in /hub/hubgrade-backups"
        );
    }

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
        let checksum = size_and_checksum(&backup).expect("checksum").1;
        let found: Vec<PathBuf> = removable_for_restore(&backup, &database, &checksum)
            .expect("candidates")
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(found, [twin]);
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
