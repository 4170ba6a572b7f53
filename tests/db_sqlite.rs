//! SQLite hub databases made by real JupyterHub releases: backup, real `jupyterhub upgrade-db`,
//! restore; revisions; the downgrade guard; corrupted backups and full disks.

mod support;

use std::path::Path;

use support::jupyterhub::{
    MIDDLE, NEW, OLD, hubgrade, make_database, open_and_dump, start_hub, upgrade_db,
};
use support::{stderr, stdout};

fn checksum(path: &Path) -> String {
    hubgrade::db::file::size_and_checksum(path)
        .expect("checksum")
        .1
}

fn url_of(path: &Path) -> String {
    format!("sqlite:///{}", path.display())
}

fn revision(url: &str) -> String {
    let output = hubgrade(&["db", "revision", "--url", url]);
    assert!(
        output.status.success(),
        "hubgrade db revision: {}",
        stderr(&output)
    );
    stdout(&output)
}

#[test]
fn a_backup_survives_real_upgrades_and_restores_the_old_hub_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("jupyterhub.sqlite");
    let url = url_of(&database);
    make_database(OLD, &url);
    let before = open_and_dump(OLD, &url).expect("JupyterHub 4.1 opens its own database");
    let original = checksum(&database);

    let backup_path = dir.path().join("backups/jupyterhub.sqlite.bak");
    let output = hubgrade(&[
        "db",
        "backup",
        "--url",
        &url,
        "--method",
        "file",
        "--to",
        backup_path.to_str().expect("path"),
    ]);
    assert!(
        output.status.success(),
        "hubgrade db backup: {}",
        stderr(&output)
    );
    let reference: serde_json::Value =
        serde_json::from_str(&stdout(&output)).expect("a JSON reference");
    assert_eq!(reference["checksum"], original.as_str());
    assert_eq!(
        reference["sizeBytes"],
        std::fs::metadata(&database).expect("db").len()
    );
    assert_eq!(reference["verified"], true);

    for (version, head) in [(MIDDLE, "4621fec11365"), (NEW, "f460b0348206")] {
        let upgraded = upgrade_db(version, &url, dir.path());
        assert!(
            upgraded.status.success(),
            "jupyterhub {version} upgrade-db: {}",
            stderr(&upgraded)
        );
        assert!(
            revision(&url).starts_with(head),
            "after {version}: {}",
            revision(&url)
        );
    }
    // The old release now refuses the upgraded database, as a rolled-back image would.
    let refused = open_and_dump(OLD, &url).expect_err("4.1 refuses a 6.x schema");
    assert!(refused.contains("f460b0348206"), "{refused}");
    let log = start_hub(OLD, &url).expect_err("a 4.1 hub must not start on a 6.x schema");
    assert!(log.contains("upgrade-db"), "{log}");

    let output = hubgrade(&[
        "db",
        "restore",
        "--url",
        &url,
        "--from",
        &reference.to_string(),
    ]);
    assert!(
        output.status.success(),
        "hubgrade db restore: {}",
        stderr(&output)
    );
    assert_eq!(
        checksum(&database),
        original,
        "the restored file is not byte-identical"
    );
    assert!(revision(&url).starts_with("0eee8c825d24 (JupyterHub 4.x)"));
    let after = open_and_dump(OLD, &url).expect("JupyterHub 4.1 opens the restored database");
    assert_eq!(after, before, "schema or rows differ after the restore");
    assert!(after.contains("alice") && after.contains("researchers"));
    // And a real JupyterHub 4.1 hub starts on it and answers its API.
    assert_eq!(
        start_hub(OLD, &url).as_deref(),
        Ok(OLD),
        "the old hub does not start on the restored database"
    );
}

#[test]
fn db_revision_names_the_release_of_each_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (version, expected) in [
        (OLD, "0eee8c825d24 (JupyterHub 4.x)"),
        (MIDDLE, "4621fec11365 (JupyterHub 5.0 – 5.5)"),
        (NEW, "f460b0348206 (JupyterHub 6.0 – 6.1)"),
    ] {
        let url = url_of(&dir.path().join(format!("{version}.sqlite")));
        make_database(version, &url);
        assert_eq!(
            revision(&url).trim(),
            expected,
            "a database made by JupyterHub {version}"
        );
    }
}

#[test]
fn the_downgrade_guard_refuses_older_targets_and_unknown_revisions() {
    let dir = tempfile::tempdir().expect("temp dir");
    let middle = url_of(&dir.path().join("middle.sqlite"));
    let new = url_of(&dir.path().join("new.sqlite"));
    make_database(MIDDLE, &middle);
    make_database(NEW, &new);

    let down = hubgrade(&["db", "revision", "--url", &new, "--target-version", MIDDLE]);
    assert!(!down.status.success(), "6.x → 5.x was accepted");
    assert!(
        stderr(&down).contains("cannot be downgraded"),
        "{}",
        stderr(&down)
    );

    let up = hubgrade(&["db", "revision", "--url", &middle, "--target-version", NEW]);
    assert!(
        up.status.success(),
        "5.x → 6.x was refused: {}",
        stderr(&up)
    );
    assert!(stdout(&up).contains("migrates it to f460b0348206"));

    let odd = dir.path().join("odd.sqlite");
    make_database(MIDDLE, &url_of(&odd));
    let conn = std::process::Command::new(support::jupyterhub::venv(MIDDLE).join("bin/python"))
        .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(\"UPDATE alembic_version SET version_num='deadbeef0000'\"); c.commit()"])
        .arg(&odd)
        .output()
        .expect("python");
    assert!(conn.status.success());
    let unknown = hubgrade(&[
        "db",
        "revision",
        "--url",
        &url_of(&odd),
        "--target-version",
        NEW,
    ]);
    assert!(
        !unknown.status.success(),
        "an unknown revision was accepted"
    );
    assert!(
        stderr(&unknown).contains("deadbeef0000"),
        "{}",
        stderr(&unknown)
    );
    let allowed = hubgrade(&[
        "db",
        "revision",
        "--url",
        &url_of(&odd),
        "--target-version",
        NEW,
        "--allow-unknown",
    ]);
    assert!(allowed.status.success(), "{}", stderr(&allowed));
}

#[test]
fn a_corrupted_backup_is_refused_before_anything_is_overwritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("jupyterhub.sqlite");
    let url = url_of(&database);
    make_database(OLD, &url);
    let backup = dir.path().join("backup.sqlite");
    let output = hubgrade(&[
        "db",
        "backup",
        "--url",
        &url,
        "--to",
        backup.to_str().expect("path"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let reference = stdout(&output);

    let upgraded = upgrade_db(NEW, &url, dir.path());
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));
    let migrated = checksum(&database);

    let mut bytes = std::fs::read(&backup).expect("backup");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&backup, bytes).expect("corrupting the backup");
    let output = hubgrade(&["db", "restore", "--url", &url, "--from", &reference]);
    assert!(!output.status.success(), "a corrupted backup was restored");
    assert!(
        stderr(&output).contains("nothing was overwritten"),
        "{}",
        stderr(&output)
    );
    assert_eq!(checksum(&database), migrated, "the database changed");
}

/// A small tmpfs stands for a nearly full volume (the tests run as root, as CI does).
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    /// 64 KiB: room for no database copy at all.
    fn mount(dir: &Path) -> TinyDisk {
        TinyDisk::mount_sized(dir, 64 * 1024)
    }

    fn mount_sized(dir: &Path, bytes: u64) -> TinyDisk {
        let point = dir.join("tiny");
        std::fs::create_dir_all(&point).expect("mount point");
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&point)
            .output()
            .expect("mount");
        assert!(
            output.status.success(),
            "cannot mount a small tmpfs (tests need root): {}",
            stderr(&output)
        );
        TinyDisk(point)
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_backup_destination_without_room_fails_before_writing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("jupyterhub.sqlite");
    make_database(OLD, &url_of(&database));
    let disk = TinyDisk::mount(dir.path());
    let target = disk.0.join("backup.sqlite");
    let output = hubgrade(&[
        "db",
        "backup",
        "--url",
        &url_of(&database),
        "--to",
        target.to_str().expect("path"),
    ]);
    assert!(
        !output.status.success(),
        "the backup claimed success on a full disk"
    );
    assert!(
        stderr(&output).contains("not enough space"),
        "{}",
        stderr(&output)
    );
    let written: Vec<_> = std::fs::read_dir(&disk.0).expect("tiny disk").collect();
    assert!(written.is_empty(), "something was written: {written:?}");
}

const MIB: u64 = 1024 * 1024;

/// A JupyterHub 4.1 database grown by a table of incompressible rows to about `bytes`, so that
/// its copies, not the fixed margins, decide what fits on a small disk.
fn big_database(path: &Path, bytes: u64) -> u64 {
    make_database(OLD, &url_of(path));
    let rows = bytes / 4096;
    let output = std::process::Command::new(support::jupyterhub::venv(OLD).join("bin/python"))
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute('CREATE TABLE ballast (data BLOB)'); \
             c.executemany('INSERT INTO ballast VALUES (randomblob(4000))', [()] * int(sys.argv[2])); \
             c.commit()",
        ])
        .arg(path)
        .arg(rows.to_string())
        .output()
        .expect("python");
    assert!(output.status.success(), "{}", stderr(&output));
    std::fs::metadata(path).expect("database").len()
}

/// Bytes an unprivileged writer may still write in `dir`'s file system.
fn available(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).expect("path");
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a writable statvfs.
    assert_eq!(unsafe { libc::statvfs(path.as_ptr(), &mut stats) }, 0);
    stats.f_bavail as u64 * stats.f_frsize as u64
}

/// Fills `dir`'s file system until `left` bytes remain (real bytes: tmpfs does not count holes).
fn fill_until(dir: &Path, left: u64) -> std::path::PathBuf {
    use std::io::Write;
    let ballast = dir.join("ballast");
    let mut file = std::fs::File::create(&ballast).expect("ballast");
    let bytes = available(dir)
        .checked_sub(left)
        .expect("already fuller than asked");
    let block = vec![0x55u8; 64 * 1024];
    let mut written = 0;
    while written < bytes {
        let n = block.len().min((bytes - written) as usize);
        file.write_all(&block[..n]).expect("filling the disk");
        written += n as u64;
    }
    file.sync_all().expect("sync");
    ballast
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `hubgrade agent ...` and its JSON report.
fn agent(args: &[&str]) -> (bool, serde_json::Value) {
    let mut all = vec!["agent"];
    all.extend_from_slice(args);
    let output = hubgrade(&all);
    let report: serde_json::Value = serde_json::from_str(stdout(&output).trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}", stderr(&output)));
    assert_eq!(report["ok"], output.status.success(), "{report}");
    (output.status.success(), report)
}

fn agent_backup(database: &Path, to: &Path, retain: &str) -> (bool, serde_json::Value) {
    agent(&[
        "sqlite-backup",
        "--database",
        database.to_str().expect("path"),
        "--to",
        to.to_str().expect("path"),
        "--retain",
        retain,
    ])
}

fn agent_restore(from: &Path, to: &Path, checksum: &str) -> (bool, serde_json::Value) {
    agent(&[
        "sqlite-restore",
        "--from",
        from.to_str().expect("path"),
        "--to",
        to.to_str().expect("path"),
        "--checksum",
        checksum,
    ])
}

/// The SHA-256 checksum an earlier release recorded for a file.
fn sha256_checksum(path: &Path) -> String {
    let output = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    assert!(output.status.success(), "{}", stderr(&output));
    let hex = stdout(&output)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_string();
    format!("sha256:{hex}")
}

#[test]
fn the_rehearsal_checks_the_database_and_the_backup_in_the_downtime_is_its_exact_copy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("jupyterhub.sqlite");
    make_database(OLD, &url_of(&database));
    let backups = dir.path().join("hubgrade-backups");
    let rehearsal = backups.join("hubgrade-0123abcd-rehearsal.sqlite");
    let (ok, report) = agent(&[
        "sqlite-backup",
        "--database",
        database.to_str().expect("path"),
        "--to",
        rehearsal.to_str().expect("path"),
    ]);
    assert!(ok, "{report}");

    let backup = backups.join("hubgrade-0123abcd-db.sqlite");
    let (ok, report) = agent_backup(&database, &backup, "2");
    assert!(ok, "{report}");
    let recorded = report["backup"]["checksum"].as_str().expect("checksum");
    assert!(recorded.starts_with("blake3:"), "{report}");
    assert_eq!(recorded, checksum(&database));
    assert_eq!(
        std::fs::read(&backup).expect("backup"),
        std::fs::read(&database).expect("database"),
        "the backup is not byte-identical"
    );
    assert!(!rehearsal.exists(), "the rehearsal copy was left");

    // A backup recorded by an earlier release (sha256:) still restores; a changed one does not.
    let upgraded = upgrade_db(NEW, &url_of(&database), dir.path());
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));
    let (ok, report) = agent_restore(&backup, &database, &sha256_checksum(&backup));
    assert!(ok, "{report}");
    assert_eq!(
        checksum(&database),
        recorded,
        "the database is not the backup"
    );
    let mut bytes = std::fs::read(&backup).expect("backup");
    bytes[100] ^= 0x01;
    std::fs::write(&backup, bytes).expect("changing the backup");
    let (ok, report) = agent_restore(&backup, &database, recorded);
    assert!(!ok, "a changed backup was restored: {report}");
    assert_eq!(checksum(&database), recorded, "the database changed");
}

#[test]
fn the_rehearsal_refuses_a_corrupt_database_before_the_hub_is_stopped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("jupyterhub.sqlite");
    big_database(&database, MIB);
    // Pages in the middle of the ballast table overwritten: the file opens, its tree is broken.
    let mut bytes = std::fs::read(&database).expect("database");
    let middle = bytes.len() / 2 / 4096 * 4096;
    bytes[middle..middle + 4 * 4096].fill(0x5a);
    std::fs::write(&database, bytes).expect("corrupting the database");
    let rehearsal = dir
        .path()
        .join("hubgrade-backups/hubgrade-0123abcd-rehearsal.sqlite");
    let (ok, report) = agent(&[
        "sqlite-backup",
        "--database",
        database.to_str().expect("path"),
        "--to",
        rehearsal.to_str().expect("path"),
    ]);
    assert!(!ok, "the rehearsal copied a corrupt database: {report}");
    let error = report["error"].as_str().expect("an error");
    assert!(error.contains("failed its integrity check"), "{error}");
    assert!(
        !rehearsal.exists(),
        "an unchecked rehearsal copy is in place"
    );
}

#[test]
fn the_space_check_counts_every_copy_still_to_come() {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = dir.path().join("made.sqlite");
    let size = big_database(&made, 4 * MIB);
    // Room for the database and two more copies: a backup fits, but not the backup, the
    // migration's copy and a restore's copy.
    let disk = TinyDisk::mount_sized(dir.path(), 3 * size + MIB / 4);
    let database = disk.0.join("jupyterhub.sqlite");
    std::fs::copy(&made, &database).expect("database onto the small disk");
    let before = checksum(&database);
    let backups = disk.0.join("hubgrade-backups");

    let (ok, report) = agent_backup(&database, &backups.join("hubgrade-0123abcd-db.sqlite"), "2");
    assert!(!ok, "a backup the migration has no room after was accepted");
    let message = report["error"].as_str().expect("an error");
    for part in [
        "not enough space",
        "for the backup",
        "for JupyterHub's copy during upgrade-db",
        "for a restore",
        "available in",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert_eq!(names_in(&disk.0), ["hubgrade-backups", "jupyterhub.sqlite"]);
    assert!(names_in(&backups).is_empty(), "something was written");
    assert_eq!(checksum(&database), before);

    // The same disk still takes a plain copy made by hand: it needs only the copy's room.
    let by_hand = disk.0.join("by-hand.sqlite");
    let output = hubgrade(&[
        "db",
        "backup",
        "--url",
        &url_of(&database),
        "--to",
        by_hand.to_str().expect("path"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn jupyterhubs_own_timestamped_copies_are_pruned_with_retain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let database = dir.path().join("jupyterhub.sqlite");
    make_database(OLD, &url_of(&database));
    let backups = dir.path().join("hubgrade-backups");
    std::fs::create_dir_all(&backups).expect("backups");
    let stamped = [
        "jupyterhub.sqlite.2026-01-05-101500",
        "jupyterhub.sqlite.2026-03-17-090000",
        "jupyterhub.sqlite.2026-06-30-235959",
        "jupyterhub.sqlite.2026-11-20-080102",
    ];
    let look_alikes = [
        "jupyterhub.sqlite.bak",
        // (Not `jupyterhub.sqlite-journal`: SQLite itself removes a journal it cannot use.)
        "jupyterhub.sqlite.2026-11-20-080102-journal",
        "jupyterhub.sqlite.2026-11-20",
        "jupyterhub.sqlite.2026-11-20-0801",
        "jupyterhub.sqlite.2026-11-20-080102.gz",
        "jupyterhub.sqlite.2026-1l-20-080102",
        "other.sqlite.2026-11-20-080102",
        "notes.txt",
    ];
    for (i, name) in stamped.iter().enumerate() {
        let path = dir.path().join(name);
        std::fs::write(&path, b"JupyterHub's own copy").expect("write");
        let time = std::time::SystemTime::UNIX_EPOCH
            + std::time::Duration::from_secs(1_700_000_000 + i as u64 * 86_400);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(time))
            .expect("mtime");
    }
    for name in look_alikes {
        std::fs::write(dir.path().join(name), b"not JupyterHub's copy").expect("write");
    }
    // A rehearsal copy and JupyterHub's copy of it, made when the rehearsal migrated it.
    std::fs::write(
        backups.join("hubgrade-0123abcd-rehearsal.sqlite"),
        b"scratch",
    )
    .expect("w");
    std::fs::write(
        backups.join("hubgrade-0123abcd-rehearsal.sqlite.2026-11-26-093000"),
        b"scratch's copy",
    )
    .expect("write");

    let (ok, report) = agent_backup(&database, &backups.join("hubgrade-0123abcd-db.sqlite"), "2");
    assert!(ok, "{report}");

    let mut expected: Vec<String> = ["jupyterhub.sqlite", "hubgrade-backups"]
        .into_iter()
        .chain(stamped[2..].iter().copied())
        .chain(look_alikes)
        .map(str::to_string)
        .collect();
    expected.sort();
    assert_eq!(names_in(dir.path()), expected);
    assert_eq!(names_in(&backups), ["hubgrade-0123abcd-db.sqlite"]);
}

#[test]
fn a_restore_on_a_full_volume_makes_room_from_jupyterhubs_copy() {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = dir.path().join("made.sqlite");
    let size = big_database(&made, 2 * MIB);
    let disk = TinyDisk::mount_sized(dir.path(), 8 * size + 2 * MIB);
    let database = disk.0.join("jupyterhub.sqlite");
    std::fs::copy(&made, &database).expect("database onto the small disk");
    let backup = disk.0.join("hubgrade-backups/hubgrade-0123abcd-db.sqlite");
    let (ok, report) = agent_backup(&database, &backup, "2");
    assert!(ok, "{report}");
    let recorded = report["backup"]["checksum"]
        .as_str()
        .expect("checksum")
        .to_string();

    // The real migration leaves JupyterHub's own copy next to the database.
    let upgraded = upgrade_db(NEW, &url_of(&database), dir.path());
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));
    let copies: Vec<String> = names_in(&disk.0)
        .into_iter()
        .filter(|n| n.starts_with("jupyterhub.sqlite."))
        .collect();
    assert_eq!(copies.len(), 1, "JupyterHub's own copy: {copies:?}");
    let jupyterhubs_copy = disk.0.join(&copies[0]);
    assert_eq!(checksum(&jupyterhubs_copy), recorded);
    assert_ne!(checksum(&database), recorded, "upgrade-db changed nothing");

    // Too full for the restore's temporary copy.
    let ballast = fill_until(&disk.0, size / 2);
    let (ok, report) = agent_restore(&backup, &database, &recorded);
    assert!(ok, "the restore did not make room: {report}");
    assert_eq!(
        checksum(&database),
        recorded,
        "the database is not the backup"
    );
    assert!(
        !jupyterhubs_copy.exists(),
        "JupyterHub's copy is still there"
    );
    assert!(backup.exists() && ballast.exists());
    assert!(
        report.to_string().contains(&copies[0]),
        "the report does not say what was removed: {report}"
    );
    assert_eq!(
        open_and_dump(OLD, &url_of(&database)).map(|_| ()),
        Ok(()),
        "JupyterHub 4.1 does not open the restored database"
    );
}

#[test]
fn a_restore_that_cannot_make_room_changes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let made = dir.path().join("made.sqlite");
    let size = big_database(&made, 2 * MIB);
    let disk = TinyDisk::mount_sized(dir.path(), 8 * size + 2 * MIB);
    let database = disk.0.join("jupyterhub.sqlite");
    std::fs::copy(&made, &database).expect("database onto the small disk");
    let backup = disk.0.join("hubgrade-backups/hubgrade-0123abcd-db.sqlite");
    let (ok, report) = agent_backup(&database, &backup, "2");
    assert!(ok, "{report}");
    let recorded = report["backup"]["checksum"]
        .as_str()
        .expect("checksum")
        .to_string();

    // The database moves on; a timestamped copy of ANOTHER state must not be taken for the
    // backup's bytes, and a small rehearsal copy cannot free enough on its own.
    let output = std::process::Command::new(support::jupyterhub::venv(OLD).join("bin/python"))
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
             c.execute('DELETE FROM ballast WHERE rowid % 2 = 0'); c.commit()",
        ])
        .arg(&database)
        .output()
        .expect("python");
    assert!(output.status.success(), "{}", stderr(&output));
    let other_state = disk.0.join("jupyterhub.sqlite.2026-11-26-101500");
    std::fs::copy(&database, &other_state).expect("copy");
    let rehearsal = disk
        .0
        .join("hubgrade-backups/hubgrade-0123abcd-rehearsal.sqlite");
    std::fs::write(&rehearsal, vec![7u8; 64 * 1024]).expect("rehearsal copy");
    let current = checksum(&database);

    fill_until(&disk.0, size / 4);
    let listing = (
        names_in(&disk.0),
        names_in(&disk.0.join("hubgrade-backups")),
    );
    let (ok, report) = agent_restore(&backup, &database, &recorded);
    assert!(!ok, "a restore without room claimed success");
    let message = report["error"].as_str().expect("an error");
    assert!(
        message.contains("not enough space") && message.contains("missing"),
        "{message}"
    );
    assert!(message.contains("nothing was changed"), "{message}");
    assert_eq!(checksum(&database), current, "the database changed");
    assert_eq!(
        (
            names_in(&disk.0),
            names_in(&disk.0.join("hubgrade-backups"))
        ),
        listing,
        "files were removed or left behind"
    );
}
