//! SQLite hub databases made by real JupyterHub releases: backup, real `jupyterhub upgrade-db`,
//! restore; revisions; the downgrade guard; corrupted backups and full disks.

mod support;

use std::path::Path;

use support::jupyterhub::{
    MIDDLE, NEW, OLD, hubgrade, make_database, open_and_dump, start_hub, upgrade_db,
};
use support::{stderr, stdout};

fn checksum(path: &Path) -> String {
    hubgrade::backup::sqlite::size_and_checksum(path)
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

/// A 64 KiB tmpfs stands for a nearly full backup volume (the tests run as root, as CI does).
struct TinyDisk(std::path::PathBuf);

impl TinyDisk {
    fn mount(dir: &Path) -> TinyDisk {
        let point = dir.join("tiny");
        std::fs::create_dir_all(&point).expect("mount point");
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
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
