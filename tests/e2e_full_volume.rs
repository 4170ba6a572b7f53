//! #15 point 4, chaos on the local cluster (KWOK): the hub's volume full during the backup and
//! during the restore. The folder standing for the hub's claim becomes a small tmpfs (the
//! stand-in runs the agent on it, so the agent meets a real full file system), and a filler
//! file takes its room at a chosen moment. Each upgrade ends `RolledBack` or `Failed` as the
//! README says, and no byte of the database is lost: the live database or the backup is always
//! the original, checksum for checksum.
//!
//! With the hub stopped nothing else writes to its volume, so a volume without room is found by
//! the agent's space checks before a byte is written; a volume that fills up in the middle of a
//! copy (another writer) is covered by the unit tests of `db::sqlite` (`VolumeFull`).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hubgrade::db::file::available_space;
use hubgrade::machine::{Outcome, Phase};
use serde_json::json;
use sqlx::Connection;
use support::e2e::{Hub, ORIGINAL_IMAGE, assert_phase, checksum, with_template_annotations};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const LIMIT: Duration = Duration::from_secs(180);
const TERMINAL: [Phase; 3] = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];
const MIB: u64 = 1024 * 1024;
/// Where hub.yaml mounts the claim in the hub's (and the Jobs') containers.
const MOUNTED_AT: &str = "/srv/jupyterhub";

/// The hub's volume as a tmpfs of a few MiB, mounted over its folder with the files it held;
/// unmounted when dropped (also when the test fails).
struct SmallVolume {
    point: PathBuf,
}

impl SmallVolume {
    fn mount(hub: &Hub, bytes: u64) -> SmallVolume {
        let point = hub.volume.clone();
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&point).expect("the volume's folder") {
            let path = entry.expect("an entry").path();
            assert!(path.is_file(), "{} is not a file", path.display());
            files.push((path.clone(), std::fs::read(&path).expect("a file")));
        }
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&point)
            .output()
            .expect("mount");
        assert!(
            output.status.success(),
            "cannot mount a tmpfs on the hub's volume (the tests need root): {}",
            support::stderr(&output)
        );
        let volume = SmallVolume { point };
        for (path, bytes) in files {
            std::fs::write(&path, bytes).expect("a file back onto the volume");
        }
        volume
    }

    fn free(&self) -> u64 {
        available_space(&self.point).expect("statvfs")
    }

    /// Writes a filler file until only `leave` bytes (rounded down to whole pages) are free.
    fn fill(&self, leave: u64) -> PathBuf {
        let leave = leave / 4096 * 4096;
        let filler = self.point.join("filler");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .expect("the filler");
        let block = vec![0x5au8; MIB as usize];
        loop {
            let extra = self.free().saturating_sub(leave) / 4096 * 4096;
            if extra == 0 {
                break;
            }
            match file.write_all(&block[..extra.min(MIB) as usize]) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::StorageFull => break,
                Err(error) => panic!("filling the volume: {error}"),
            }
        }
        file.sync_all().expect("sync");
        assert!(
            self.free() <= leave,
            "{} free, {leave} asked for",
            self.free()
        );
        filler
    }

    /// The names of the files in `folder` of the volume.
    fn names_in(&self, folder: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.point.join(folder))
            .map(|dir| {
                dir.map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        // Lazily: a stand-in still playing a pod may hold a file open.
        let _ = Command::new("umount").arg("-l").arg(&self.point).status();
    }
}

/// `hubgrade approve NAME`, as an admin opens the window.
fn approve(hub: &Hub, name: &str) {
    let approve = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(["approve", name, "-n", hub.ns()])
        .env("KUBECONFIG", support::kubeconfig())
        .output()
        .expect("hubgrade approve");
    assert!(approve.status.success(), "{}", support::stderr(&approve));
}

/// The backup the status records, as a local path, and its checksum.
fn recorded_backup(hub: &Hub, status: &hubgrade::api::HubUpgradeStatus) -> (PathBuf, String) {
    let backup = status.progress.backup.clone().expect("a recorded backup");
    let within = Path::new(&backup.reference)
        .strip_prefix(MOUNTED_AT)
        .expect("a backup on the hub's volume");
    (
        hub.volume.join(within),
        backup.checksum.expect("a checksum"),
    )
}

/// Grows the hub's database by `bytes` of incompressible rows, so that its copies, not the
/// fixed margins, decide what fits.
async fn grow_database(path: &Path, bytes: u64) {
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let mut db = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("the database");
    sqlx::query("CREATE TABLE ballast (b BLOB)")
        .execute(&mut db)
        .await
        .expect("a table");
    for _ in 0..bytes / 4096 {
        sqlx::query("INSERT INTO ballast VALUES (randomblob(4000))")
            .execute(&mut db)
            .await
            .expect("a row");
    }
    db.close().await.expect("close");
}

/// The volume fills up after the rehearsal, before the window opens: the backup in the
/// downtime finds no room, says how much it needs and has, writes nothing; nothing was
/// migrated, so the hub comes back on its image with its database untouched (`RolledBack`).
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_full_at_the_backup_rolls_back_with_the_database_untouched() {
    let hub = Hub::new("full-backup", |yaml| yaml).await;
    let volume = SmallVolume::mount(&hub, 8 * MIB);
    let original = checksum(&hub.database());
    hub.apply_upgrade(
        "full-at-backup",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET, "approval": "Manual"}),
    )
    .await;
    let waiting = hub
        .wait_for("full-at-backup", &[Phase::Scheduled], LIMIT)
        .await;
    let rehearsal = waiting.status.expect("status").progress.steps;
    let rehearsal = rehearsal.iter().find(|s| s.name == Phase::Rehearsal);
    assert_eq!(
        rehearsal.and_then(|s| s.outcome),
        Some(Outcome::Succeeded),
        "{rehearsal:?}"
    );

    volume.fill(0);
    approve(&hub, "full-at-backup");
    let done = hub.wait_for("full-at-backup", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::RolledBack);
    let message = &status.progress.message;
    for part in [
        "the database backup failed: ",
        "not enough space in",
        "for the backup",
        "for a restore's temporary copy",
        "available in",
        &format!("rolled back to {ORIGINAL_IMAGE}"),
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(hub.hub_available().await, "the hub is not available");
    assert_eq!(checksum(&hub.database()), original, "the database changed");
    // No backup, partial or whole, and nothing migrated.
    assert_eq!(volume.names_in("hubgrade-backups"), Vec::<String>::new());
    assert!(hub.jobs_for("migration").await.is_empty());
    assert!(status.progress.backup.is_none());
}

/// Room for the rehearsal's copies (its copy, JupyterHub's copy of it, the seed of the backup)
/// but not for the downtime's (the backup, JupyterHub's copy during `upgrade-db`, a restore's
/// copy): the rehearsal refuses, the hub is never stopped (`Failed`, reason RehearsalFailed)
/// instead of being stopped and rolled back.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_without_room_for_the_downtime_is_refused_by_the_rehearsal() {
    let hub = Hub::new("full-rehearsal", |yaml| yaml).await;
    grow_database(&hub.database(), MIB).await;
    let volume = SmallVolume::mount(&hub, 8 * MIB);
    let original = checksum(&hub.database());
    let size = std::fs::metadata(hub.database()).expect("database").len();
    // The rehearsal's copy, JupyterHub's copy of it and the seed of the backup, a margin of a
    // tenth and 1 MiB: about 3.1 copies; the downtime's backup (the seed's room), JupyterHub's
    // copy, growth and a restore, and the margin: 3.2. A database of 1 MiB puts 50 KiB between
    // the middle and either edge, whole pages apart.
    volume.fill(size * 315 / 100 + MIB);
    let status = hub
        .run_upgrade(
            "no-room",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            LIMIT,
        )
        .await;
    assert_phase(&status, Phase::Failed);
    assert_eq!(status.progress.reason, "RehearsalFailed");
    let message = &status.progress.message;
    for part in [
        "the rehearsal of the migration failed: ",
        "not enough space in",
        "for the backup",
        "for a restore's temporary copy",
        "the hub was not touched",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    assert!(status.progress.from.is_none(), "the hub was stopped");
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(hub.hub_available().await, "the hub is not available");
    assert_eq!(checksum(&hub.database()), original, "the database changed");
    assert_eq!(volume.names_in("hubgrade-backups"), Vec::<String>::new());
}

/// The migration fails half-way and leaves room for JupyterHub's copy but not for the restore's
/// temporary copy: the restore writes nothing and says how much is missing; the upgrade ends
/// `Failed` with the hub stopped on the half-migrated database (intact, not truncated), the
/// message says what to do, and doing it (room freed, `hubgrade db restore`) brings back the
/// original database from the intact backup.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_full_at_the_restore_fails_with_the_hub_stopped_and_the_backup_intact() {
    let hub = Hub::new(
        "full-restore",
        with_template_annotations(
            "kwok.hubgrade.io/delay: 3s, kwok.hubgrade.io/migration: fails-halfway",
        ),
    )
    .await;
    let volume = SmallVolume::mount(&hub, 8 * MIB);
    let original = checksum(&hub.database());
    let size = std::fs::metadata(hub.database()).expect("database").len();
    hub.apply_upgrade(
        "full-at-restore",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
               "migration": {"rehearse": false}}),
    )
    .await;
    // The backup is recorded; the migration's pod waits its 3 s.
    hub.wait_for("full-at-restore", &[Phase::Migrating], LIMIT)
        .await;
    // Room for JupyterHub's copy and the migration's journal, not for the restore's copy and
    // its 64 KiB of slack, even once JupyterHub's copy (the backup's bytes) is removed.
    let filler = volume.fill(size.div_ceil(4096) * 4096 + 32 * 1024);
    let done = hub.wait_for("full-at-restore", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::Failed);
    let message = &status.progress.message;
    let migration = status
        .progress
        .steps
        .iter()
        .find(|s| s.name == Phase::Migrating)
        .expect("the migration's step");
    assert_eq!(migration.outcome, Some(Outcome::Failed), "{migration:?}");
    for part in [
        "restoring the database failed: ",
        "not enough space in",
        "missing; nothing was changed",
        "the backup is intact: free at least",
        "the hub is left stopped",
        "hubgrade db restore",
        "the database backup is /srv/jupyterhub/hubgrade-backups/",
    ] {
        assert!(message.contains(part), "{part:?} missing from: {message}");
    }
    let hub_spec = hub.hub().await.spec.expect("spec");
    assert_eq!(hub_spec.replicas, Some(0), "the hub is not stopped");
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    let (backup, recorded) = recorded_backup(&hub, &status);
    assert_eq!(recorded, original);
    assert_eq!(checksum(&backup), original, "the backup changed");
    // The half-migrated database, whole: SQLite opens it and finds the migration's column.
    assert!(
        !volume
            .names_in("")
            .iter()
            .any(|n| n.contains("hubgrade-restore")),
        "the restore's temporary copy is left: {:?}",
        volume.names_in("")
    );
    let mut db =
        sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", hub.database().display()))
            .await
            .expect("the database opens");
    let (check,): (String,) = sqlx::query_as("PRAGMA integrity_check")
        .fetch_one(&mut db)
        .await
        .expect("integrity_check");
    assert_eq!(check, "ok");
    sqlx::query("SELECT standin_migrated FROM users")
        .fetch_all(&mut db)
        .await
        .expect("the half-migrated database");
    db.close().await.expect("close");

    // What the message says: make room, restore the recorded backup by hand.
    std::fs::remove_file(filler).expect("freeing the volume");
    let mut record = status.progress.backup.clone().expect("the backup");
    record.reference = backup.display().to_string();
    let restored = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(["db", "restore", "--url"])
        .arg(format!("sqlite:///{}", hub.database().display()))
        .arg("--from")
        .arg(serde_json::to_string(&record).expect("json"))
        .output()
        .expect("hubgrade db restore");
    assert!(restored.status.success(), "{}", support::stderr(&restored));
    assert_eq!(checksum(&hub.database()), original, "no data lost");
}

/// The volume fills up before the migration: `upgrade-db` fails on its own copy of the database
/// and changes nothing. The roll back finds the database already holds the backup's bytes, so
/// it needs no room and copies nothing: `RolledBack`, the hub back on its image, untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_full_before_the_migration_rolls_back_without_a_copy() {
    let hub = Hub::new(
        "full-migration",
        with_template_annotations("kwok.hubgrade.io/delay: 3s"),
    )
    .await;
    let volume = SmallVolume::mount(&hub, 8 * MIB);
    let original = checksum(&hub.database());
    hub.apply_upgrade(
        "full-at-migration",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
               "migration": {"rehearse": false}}),
    )
    .await;
    hub.wait_for("full-at-migration", &[Phase::Migrating], LIMIT)
        .await;
    volume.fill(0);
    let done = hub.wait_for("full-at-migration", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::RolledBack);
    let message = &status.progress.message;
    assert!(
        message.contains("the migration failed") && message.contains("No space left on device"),
        "{message}"
    );
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(hub.hub_available().await, "the hub is not available");
    assert_eq!(checksum(&hub.database()), original, "the database changed");
    let (backup, _) = recorded_backup(&hub, &status);
    assert_eq!(checksum(&backup), original, "the backup changed");
    let events = hub.event_reasons("full-at-migration").await;
    assert!(
        events
            .iter()
            .any(|(_, reason, note)| reason == "DatabaseRestored"
                && note.contains("already held the backup's bytes")),
        "{events:?}"
    );
}
