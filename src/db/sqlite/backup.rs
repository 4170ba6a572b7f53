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
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{Connection, Executor};

use super::copies::{
    rehearsal_copies, rehearsal_copy_of, remove_rehearsal_copies, remove_seeds, seed_for_rehearsal,
    seed_of,
};
use super::space::{SpacePlan, check_space, check_space_freeing, copy_size};
use super::{Result, SqliteBackupError, ensure_checksum, io_error, out_of_space, with_suffix};
use crate::db::checked_copy::{CheckedCopy, copy_checked, update_checked};
use crate::db::file::{available_space, folder_of, size_and_checksum, sync_dir};
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
///
/// The rehearsal ([`SpacePlan::RehearsalCopy`]) of a rollback-journal database also leaves a
/// seed for its upgrade's backup: a durable copy of the checked copy, made before
/// `jupyterhub upgrade-db` migrates that one. The backup before the migration then brings the
/// seed up to date in place, writing only the pages the hub changed since, instead of writing
/// every byte inside the downtime; it is read back and checked against the database's checksum
/// all the same. A seed in any doubt is dropped for a full copy.
pub async fn back_up_for(
    database: &Path,
    destination: &Path,
    plan: SpacePlan,
) -> Result<BackupRecord> {
    back_up_writing(database, destination, plan)
        .await
        .map(|(record, _)| record)
}

/// [`back_up_for`], also returning how many bytes were written into the copy: fewer than its
/// size when a seed was brought up to date, which the tests check.
async fn back_up_writing(
    database: &Path,
    destination: &Path,
    plan: SpacePlan,
) -> Result<(BackupRecord, u64)> {
    let dir = folder_of(destination);
    let checked_by_rehearsal = integrity_checked_by_rehearsal(destination, plan);
    let temporary = with_suffix(destination, ".partial");
    // Taken before the rehearsal's copies, the seeds among them, are removed.
    let seed_room = match plan {
        SpacePlan::BackupBeforeMigration => take_seed(database, destination, &temporary)?,
        _ => 0,
    };
    let made = make_copy(
        database,
        destination,
        &temporary,
        plan,
        seed_room,
        checked_by_rehearsal,
    );
    let written = match made.await {
        Ok(written) => written,
        Err(error) => {
            // A partial or unchecked copy must not stay: it holds the room the next try
            // needs, and nothing in it can be trusted. A seed taken for it goes with it.
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
    if plan == SpacePlan::RehearsalCopy && written.byte_for_byte {
        leave_seed(destination)?;
    }
    let record = BackupRecord {
        method: BackupMethod::File,
        reference: destination.display().to_string(),
        size_bytes: Some(written.size),
        checksum: Some(written.checksum),
        verified: true,
        pruned: Vec::new(),
    };
    Ok((record, written.written))
}

/// A copy written, checked and durable, not yet in place.
struct Written {
    size: u64,
    checksum: String,
    /// A rollback-journal database, copied byte for byte; a WAL one is rewritten by SQLite.
    byte_for_byte: bool,
    /// Bytes written into the copy: all of them, unless a seed was brought up to date.
    written: u64,
}

/// Clears the way for the copy, checks its room and writes it to `temporary` (see
/// [`back_up_for`]). On an error the caller removes `temporary`.
async fn make_copy(
    database: &Path,
    destination: &Path,
    temporary: &Path,
    plan: SpacePlan,
    seed_room: u64,
    checked_by_rehearsal: bool,
) -> Result<Written> {
    let dir = folder_of(destination);
    if plan == SpacePlan::BackupBeforeMigration && seed_room > 0 {
        return update_seed_while_removing_copies(
            database,
            destination,
            temporary,
            seed_room,
            checked_by_rehearsal,
        )
        .await;
    }
    if dir.is_dir() {
        match plan {
            SpacePlan::BackupBeforeMigration => {
                remove_rehearsal_copies(dir)?;
            }
            // A seed is the rehearsal's to make: any other is left by an upgrade that ended
            // before its backup (one upgrade at a time holds the hub's lock), and a retried
            // rehearsal makes its own again.
            SpacePlan::RehearsalCopy => {
                remove_seeds(dir)?;
            }
            SpacePlan::CopyOnly => {}
        }
    }
    prepare_seeded(database, destination, plan, seed_room, None)?;
    write_copy(database, temporary, !checked_by_rehearsal, seed_room > 0).await
}

/// The backup in the downtime with its seed in `temporary`: removing the rehearsal's copies
/// (each as large as the database; unlinking a GiB takes a few tenths of a second) runs on a
/// second thread while the seed is brought up to date, which writes little. Their room counts
/// as free in the space check, as it is before anything after the backup writes; when the
/// volume's free room alone could not take the seed's growth, they are removed first.
async fn update_seed_while_removing_copies(
    database: &Path,
    destination: &Path,
    temporary: &Path,
    seed_room: u64,
    checked_by_rehearsal: bool,
) -> Result<Written> {
    let dir = folder_of(destination);
    let copies = rehearsal_copies(dir)?;
    let mut freeing = 0;
    for copy in &copies {
        freeing += fs::symlink_metadata(copy).map_or(0, |m| m.blocks() * 512);
    }
    let plan = SpacePlan::BackupBeforeMigration;
    let size = match prepare_seeded(database, destination, plan, seed_room, Some((dir, freeing))) {
        Ok(size) => size,
        Err(error) => {
            // As without a seed: the rehearsal is over, its copies go either way.
            remove_rehearsal_copies(dir)?;
            return Err(error);
        }
    };
    let growth = size.saturating_sub(seed_room);
    let free_now = available_space(dir).map_err(io_error(dir))?;
    if free_now < growth.saturating_add(growth / 10) {
        remove_rehearsal_copies(dir)?;
        return write_copy(database, temporary, !checked_by_rehearsal, true).await;
    }
    let removing = std::thread::spawn(move || -> Result<()> {
        for copy in copies {
            fs::remove_file(&copy).map_err(io_error(&copy))?;
        }
        Ok(())
    });
    let written = write_copy(database, temporary, !checked_by_rehearsal, true).await;
    let removed = removing.join().unwrap_or_else(|_| {
        Err(SqliteBackupError::Io {
            path: dir.to_path_buf(),
            source: io::Error::other("removing the rehearsal's copies panicked"),
        })
    });
    let written = written?;
    removed?;
    Ok(written)
}

/// Writes the copy of `database` to `temporary` (see [`back_up_for`]), over the seed there
/// when `seeded`, and, when `integrity_check` says, runs `PRAGMA integrity_check` on it.
/// On an error the caller removes `temporary`.
async fn write_copy(
    database: &Path,
    temporary: &Path,
    integrity_check: bool,
    seeded: bool,
) -> Result<Written> {
    let mut connection = open(database, false).await?;
    let sqlite_error = |source| SqliteBackupError::Sqlite {
        path: database.to_path_buf(),
        source,
    };
    let (mode,): (String,) = sqlx::query_as("PRAGMA journal_mode")
        .fetch_one(&mut connection)
        .await
        .map_err(sqlite_error)?;
    let byte_for_byte = !mode.eq_ignore_ascii_case("wal");
    let (size, checksum, written) = if !byte_for_byte {
        // In WAL mode recent commits live in the -wal file, not the main file: let SQLite
        // write a consistent snapshot instead (same data, not the same bytes), then make
        // it durable and checksum it. A seed is of no use to it.
        let _ = fs::remove_file(temporary);
        sqlx::query("VACUUM INTO ?")
            .bind(temporary.display().to_string())
            .execute(&mut connection)
            .await
            .map_err(sqlite_error)?;
        File::open(temporary)
            .and_then(|copy| copy.sync_all())
            .map_err(io_error(temporary))?;
        let (size, checksum) = size_and_checksum(temporary).map_err(io_error(temporary))?;
        (size, checksum, size)
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
                copy_over_seed(&mut source, temporary, seeded).map_err(io_error(temporary))
            });
        let _ = connection.execute("ROLLBACK").await;
        let copied = copied?;
        (copied.size, copied.checksum, copied.written)
    };
    drop(connection);
    if integrity_check {
        check_integrity(temporary).await?;
    }
    Ok(Written {
        size,
        checksum,
        byte_for_byte,
        written,
    })
}

/// Brings the seed in `temporary` up to date with `source` when `seeded`; copies `source` in
/// full into a new file there when not, or when the update fails: any doubt about the seed
/// costs a full copy, never a wrong backup. The full copy is a new file, so that nothing the
/// seed's file was linked to is written.
fn copy_over_seed(source: &mut File, temporary: &Path, seeded: bool) -> io::Result<CheckedCopy> {
    if seeded {
        match update_checked(source, temporary) {
            Ok(updated) => return Ok(updated),
            Err(error) => {
                tracing::warn!(
                    seed = %temporary.display(),
                    %error,
                    "the backup's seed could not be brought up to date; copying in full"
                );
                source.seek(SeekFrom::Start(0))?;
                fs::remove_file(temporary)?;
            }
        }
    }
    copy_checked(source, temporary)
}

/// Moves the seed the rehearsal left for `destination` to `temporary`, where the backup brings
/// it up to date; returns the room it holds on the volume, 0 when there is no seed to use. Only
/// a plain file of its own (the update writes in place: a link would change another name's
/// bytes) between half and twice the database's size is used, as a seed further off would
/// mostly be rewritten; any other is removed.
fn take_seed(database: &Path, destination: &Path, temporary: &Path) -> Result<u64> {
    let seed = seed_of(destination);
    let metadata = match fs::symlink_metadata(&seed) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(error) => return Err(io_error(&seed)(error)),
    };
    // A missing database is reported by the space check, with the seed removed.
    let size = fs::metadata(database).map_or(0, |m| m.len());
    let usable = metadata.is_file()
        && metadata.nlink() == 1
        && size > 0
        && (size / 2..=size.saturating_mul(2)).contains(&metadata.len());
    if !usable {
        fs::remove_file(&seed).map_err(io_error(&seed))?;
        return Ok(0);
    }
    fs::rename(&seed, temporary).map_err(io_error(temporary))?;
    Ok(metadata.blocks() * 512)
}

/// Leaves the seed of this upgrade's backup next to the rehearsal copy just made
/// (`rehearsal_copy`, not yet migrated), as a durable copy of it checked by reading it back.
/// Its room was checked with the rehearsal copy's. A seed that cannot be written fails the
/// rehearsal, with the seed removed: the backup would not fit either.
fn leave_seed(rehearsal_copy: &Path) -> Result<()> {
    let Some(seed) = seed_for_rehearsal(rehearsal_copy) else {
        return Ok(());
    };
    let made = File::open(rehearsal_copy)
        .map_err(io_error(rehearsal_copy))
        .and_then(|mut copy| copy_checked(&mut copy, &seed).map_err(io_error(&seed)));
    if let Err(error) = made {
        let _ = fs::remove_file(&seed);
        let needed = copy_size(rehearsal_copy).unwrap_or(0);
        return Err(out_of_space(error, &seed, needed, || {
            "the partial seed was removed; the hub's database was left as it was".to_string()
        }));
    }
    let dir = folder_of(&seed);
    sync_dir(dir).map_err(io_error(dir))
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
    prepare_seeded(database, destination, plan, 0, None).map(|_| ())
}

/// Like [`prepare_for`], for a copy written over a seed holding `seed_room` bytes, counting
/// the `(folder, bytes)` that are `freeing` (being removed meanwhile) as free. Returns the
/// copy's size.
fn prepare_seeded(
    database: &Path,
    destination: &Path,
    plan: SpacePlan,
    seed_room: u64,
    freeing: Option<(&Path, u64)>,
) -> Result<u64> {
    if !database.is_file() {
        return Err(SqliteBackupError::Missing(database.to_path_buf()));
    }
    let dir = folder_of(destination);
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let size = copy_size(database)?;
    check_space_freeing(
        plan.needs_seeded(size, seed_room, folder_of(database), dir),
        freeing,
    )?;
    if plan == SpacePlan::RehearsalCopy {
        // The rehearsal's copies are gone before the backup in the downtime, which needs more
        // (its seed stays, holding the backup's room): a volume without room for it is found
        // now, while the hub still runs, instead of after the hub was stopped.
        check_space(SpacePlan::BackupBeforeMigration.needs(size, folder_of(database), dir))?;
    }
    Ok(size)
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
        made_with(
            path,
            "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT);
             CREATE INDEX users_by_name ON users (name);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO users (name) SELECT hex(randomblob(40)) FROM n;",
        )
        .await;
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
        assert!(!seed_of(&copy).exists(), "the seed was left");
    }

    /// A rollback-journal database of about 8 MiB (8,000 sessions of a page each).
    async fn sessions_database(path: &Path) {
        made_with(
            path,
            "CREATE TABLE sessions (id INTEGER PRIMARY KEY, state BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 8000)
             INSERT INTO sessions (state) SELECT randomblob(900) FROM n;",
        )
        .await;
    }

    /// A new rollback-journal database at `path`, made by `sql`.
    async fn made_with(path: &Path, sql: &'static str) {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        let mut db = SqliteConnection::connect_with(&options)
            .await
            .expect("database");
        db.execute(sql).await.expect("rows");
        db.close().await.expect("close");
    }

    /// Runs `sql` on the database, as the running hub does between the rehearsal and the
    /// downtime.
    async fn change(path: &Path, sql: &'static str) {
        let mut db = open(path, false).await.expect("open");
        db.execute(sql).await.expect("a change");
        db.close().await.expect("close");
    }

    /// The rehearsal (which leaves the seed), `sql` by the running hub, then the backup in
    /// the downtime: it must be the database byte for byte, verified by its checksum. Returns
    /// the bytes the backup wrote.
    async fn seeded_backup_after(dir: &Path, sql: &'static str) -> u64 {
        let source = dir.join("hub.sqlite");
        let backups = dir.join("hubgrade-backups");
        let rehearsal = backups.join("hubgrade-0123abcd-rehearsal.sqlite");
        let copy = backups.join("hubgrade-0123abcd-db.sqlite");
        back_up_for(&source, &rehearsal, SpacePlan::RehearsalCopy)
            .await
            .expect("rehearsal copy");
        assert_eq!(
            fs::read(seed_of(&copy)).expect("the rehearsal's seed"),
            fs::read(&rehearsal).expect("the rehearsal copy")
        );
        change(&source, sql).await;
        let (record, written) = back_up_writing(&source, &copy, SpacePlan::BackupBeforeMigration)
            .await
            .expect("backup");
        assert_eq!(
            fs::read(&copy).expect("copy"),
            fs::read(&source).expect("db"),
            "after {sql}"
        );
        let (size, checksum) = size_and_checksum(&source).expect("checksum");
        assert_eq!(
            (record.size_bytes, record.checksum.as_deref()),
            (Some(size), Some(checksum.as_str()))
        );
        verify(&copy, &checksum).await.expect("the backup verifies");
        assert!(!seed_of(&copy).exists(), "the seed was left");
        assert!(!with_suffix(&copy, ".partial").exists());
        fs::remove_file(&copy).expect("removing the backup");
        written
    }

    #[tokio::test]
    async fn a_seeded_backup_is_the_database_byte_for_byte_after_the_hub_changed_it() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        sessions_database(&source).await;
        let size = || fs::metadata(&source).expect("db").len();

        // Two rows changed: only their pages and the header's page are written.
        let before = size();
        let written = seeded_backup_after(
            dir.path(),
            "UPDATE sessions SET state = randomblob(900) WHERE id IN (7, 1500)",
        )
        .await;
        assert!(
            (1..=3 * 4096).contains(&written),
            "{written} bytes written of {before}"
        );

        // Grown by a third.
        let written = seeded_backup_after(
            dir.path(),
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2700)
             INSERT INTO sessions (state) SELECT randomblob(900) FROM n",
        )
        .await;
        assert!(written < size(), "{written} of {}", size());

        // Shrunk by a fifth: VACUUM rewrites the file, the seed's tail is cut.
        let before = size();
        seeded_backup_after(dir.path(), "DELETE FROM sessions WHERE id % 5 = 0; VACUUM").await;
        assert!(size() < before);

        // Unchanged: nothing written at all.
        assert_eq!(seeded_backup_after(dir.path(), "SELECT 1").await, 0);
    }

    #[tokio::test]
    async fn a_corrupted_seed_is_rewritten_where_it_differs() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        sessions_database(&source).await;
        let backups = dir.path().join("hubgrade-backups");
        rehearse(&source, &backups).await;
        let copy = backups.join("hubgrade-0123abcd-db.sqlite");
        let seed = seed_of(&copy);
        let mut bytes = fs::read(&seed).expect("seed");
        bytes[3 * 4096..5 * 4096].fill(0x5a);
        fs::write(&seed, bytes).expect("corrupting the seed");
        let (record, written) = back_up_writing(&source, &copy, SpacePlan::BackupBeforeMigration)
            .await
            .expect("backup");
        assert_eq!(
            fs::read(&copy).expect("copy"),
            fs::read(&source).expect("db")
        );
        // The corrupted pages, and only them.
        assert_eq!(written, 2 * 4096);
        ensure_checksum(&copy, &record.checksum.expect("checksum")).expect("checksum");
    }

    #[tokio::test]
    async fn a_seed_in_doubt_is_dropped_for_a_full_copy() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        sessions_database(&source).await;
        let size = fs::metadata(&source).expect("db").len();
        let backups = dir.path().join("hubgrade-backups");
        fs::create_dir_all(&backups).expect("dir");
        let copy = backups.join("hubgrade-0123abcd-db.sqlite");
        let seed = seed_of(&copy);
        let full_copy = || async {
            let (record, written) =
                back_up_writing(&source, &copy, SpacePlan::BackupBeforeMigration)
                    .await
                    .expect("backup");
            assert_eq!(
                fs::read(&copy).expect("copy"),
                fs::read(&source).expect("db")
            );
            assert_eq!(record.size_bytes, Some(size));
            assert_eq!(written, size, "not a full copy");
            assert!(fs::symlink_metadata(&seed).is_err(), "the seed was left");
            fs::remove_file(&copy).expect("removing the backup");
        };

        // No seed: the full copy as before.
        full_copy().await;
        // A seed far smaller than the database (a write cut short).
        fs::write(&seed, b"SQLite format 3\0").expect("seed");
        full_copy().await;
        // A link: updating it in place would change the file it leads to.
        let elsewhere = dir.path().join("someone-elses.sqlite");
        fs::copy(&source, &elsewhere).expect("copy");
        let theirs = fs::read(&elsewhere).expect("theirs");
        change(
            &source,
            "UPDATE sessions SET state = randomblob(900) WHERE id = 3",
        )
        .await;
        std::os::unix::fs::symlink(&elsewhere, &seed).expect("link");
        full_copy().await;
        fs::hard_link(&elsewhere, &seed).expect("hard link");
        full_copy().await;
        assert_eq!(fs::read(&elsewhere).expect("theirs"), theirs);
    }

    #[tokio::test]
    async fn seeds_of_upgrades_that_ended_before_their_backup_are_removed() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        sessions_database(&source).await;
        let backups = dir.path().join("hubgrade-backups");
        fs::create_dir_all(&backups).expect("dir");
        // Failed or aborted after their rehearsal: never backed up.
        let stale = backups.join("hubgrade-99999999-db.sqlite.seed");
        fs::copy(&source, &stale).expect("stale seed");

        // The next upgrade's rehearsal removes it, and leaves its own.
        let rehearsal = backups.join("hubgrade-0123abcd-rehearsal.sqlite");
        back_up_for(&source, &rehearsal, SpacePlan::RehearsalCopy)
            .await
            .expect("rehearsal copy");
        assert!(!stale.exists(), "another upgrade's seed was left");
        let own = backups.join("hubgrade-0123abcd-db.sqlite.seed");
        assert!(own.is_file(), "no seed");

        // That upgrade ends too before its backup; a third one makes a backup without a
        // rehearsal: the seed goes with the rehearsal's copies, and is not its backup.
        fs::copy(&source, &stale).expect("stale seed");
        let other = backups.join("hubgrade-77777777-db.sqlite");
        let (_, written) = back_up_writing(&source, &other, SpacePlan::BackupBeforeMigration)
            .await
            .expect("backup");
        assert_eq!(written, fs::metadata(&source).expect("db").len());
        assert_eq!(file_names_in(&backups), ["hubgrade-77777777-db.sqlite"]);
    }

    #[tokio::test]
    async fn a_wal_database_gets_no_seed() {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("hub.sqlite");
        database(&source, true).await;
        let backups = dir.path().join("hubgrade-backups");
        rehearse(&source, &backups).await;
        assert_eq!(
            file_names_in(&backups),
            ["hubgrade-0123abcd-rehearsal.sqlite"]
        );
    }

    /// The rehearsal's copy of `source` in `backups` (`hubgrade-0123abcd-rehearsal.sqlite`),
    /// with the seed it leaves for that upgrade's backup.
    async fn rehearse(source: &Path, backups: &Path) {
        back_up_for(
            source,
            &backups.join("hubgrade-0123abcd-rehearsal.sqlite"),
            SpacePlan::RehearsalCopy,
        )
        .await
        .expect("rehearsal copy");
    }

    fn file_names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
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
