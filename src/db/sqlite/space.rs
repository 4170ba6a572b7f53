//! How much room a copy and everything after it need, checked before the copy is made.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::copies::{file_name, is_rehearsal_copy};
use super::{Result, SqliteBackupError, io_error, with_suffix};
use crate::db::file::available_space;

const MIB: u64 = 1024 * 1024;

/// What is still to be written on the volume after a copy. The free-space check asks for all
/// of it before the copy: a volume that fills up half way through an upgrade leaves the hub
/// stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpacePlan {
    /// A copy and nothing after it (`hubgrade db backup` by hand).
    CopyOnly,
    /// The rehearsal's scratch copy, which `jupyterhub upgrade-db` then copies once more, next
    /// to it, before migrating it; and the seed of the backup, a second copy next to it that
    /// stays until the backup in the downtime takes it over.
    RehearsalCopy,
    /// The backup before the migration. Then `jupyterhub upgrade-db` copies the database next
    /// to itself and may grow it, and a roll back writes a temporary copy of the backup next to
    /// the database. The hub is stopped and the rehearsal over, so the rehearsal's copies in the
    /// backup's folder are removed before the check and their room counts. A seed the rehearsal
    /// left becomes the backup: the room it holds is the backup's (see [`SpacePlan::needs_seeded`]).
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
        self.needs_seeded(size, 0, database_dir, destination_dir)
    }

    /// Like [`SpacePlan::needs`], for a backup before the migration written over its seed, which
    /// holds `seed_room` bytes on the volume already: the backup needs only what the database
    /// outgrew its seed by. Only that backup has a seed; the other plans ignore `seed_room`.
    pub(super) fn needs_seeded(
        self,
        size: u64,
        seed_room: u64,
        database_dir: &Path,
        destination_dir: &Path,
    ) -> Vec<SpaceNeed> {
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
                need(
                    "for the seed of the backup in the downtime",
                    destination_dir,
                    size,
                ),
                need("to keep free", destination_dir, margin),
            ],
            SpacePlan::BackupBeforeMigration => vec![
                match seed_room {
                    0 => need("for the backup", destination_dir, size),
                    room => need(
                        "for the backup, beyond the room its seed holds",
                        destination_dir,
                        size.saturating_sub(room),
                    ),
                },
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

/// The most bytes a copy of `database` may take: the file, and its `-wal` file, whose
/// commits a copy of a WAL database holds too.
pub(super) fn copy_size(database: &Path) -> Result<u64> {
    let size = fs::metadata(database).map_err(io_error(database))?.len();
    let wal = with_suffix(database, "-wal");
    Ok(size + fs::metadata(&wal).map_or(0, |m| m.len()))
}

/// "not enough space in DIR: needs 4.0 MiB for the backup, ...: 9.0 MiB in all, 8.0 MiB
/// available in DIR".
pub(super) fn describe_shortfall(dir: &Path, needs: &[SpaceNeed], available: u64) -> String {
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
pub(super) fn check_space(needs: Vec<SpaceNeed>) -> Result<()> {
    check_space_freeing(needs, None)
}

/// [`check_space`], counting as free the bytes `freeing` says are being freed in its folder
/// (files being removed while the copy is made).
pub(super) fn check_space_freeing(
    needs: Vec<SpaceNeed>,
    freeing: Option<(&Path, u64)>,
) -> Result<()> {
    let freed_device = match freeing {
        Some((dir, bytes)) => Some((fs::metadata(dir).map_err(io_error(dir))?.dev(), bytes)),
        None => None,
    };
    let mut by_file_system: Vec<(u64, Vec<SpaceNeed>)> = Vec::new();
    for need in needs {
        let device = fs::metadata(&need.dir).map_err(io_error(&need.dir))?.dev();
        match by_file_system.iter_mut().find(|(d, _)| *d == device) {
            Some((_, group)) => group.push(need),
            None => by_file_system.push((device, vec![need])),
        }
    }
    for (device, needs) in by_file_system {
        let dir = needs[0].dir.clone();
        let mut available = available_space(&dir).map_err(io_error(&dir))?;
        if let Some((freed_on, bytes)) = freed_device
            && freed_on == device
        {
            available = available.saturating_add(bytes);
        }
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

/// "4.0 MiB": sizes as a person reads them in an error message.
pub(super) fn human(bytes: u64) -> String {
    match bytes {
        b if b >= 1024 * MIB => format!("{:.1} GiB", b as f64 / (1024 * MIB) as f64),
        b if b >= MIB => format!("{:.1} MiB", b as f64 / MIB as f64),
        b if b >= 1024 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_plan_asks_for_every_copy_still_to_come() {
        let size = 100 * MIB;
        let (db, dest) = (Path::new("/hub"), Path::new("/hub/hubgrade-backups"));
        let total =
            |plan: SpacePlan| -> u64 { plan.needs(size, db, dest).iter().map(|n| n.bytes).sum() };
        let margin = size / 10 + MIB;
        assert_eq!(total(SpacePlan::CopyOnly), size + margin);
        assert_eq!(total(SpacePlan::RehearsalCopy), 3 * size + margin);
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
    fn a_seeded_backup_needs_only_what_the_database_outgrew_its_seed_by() {
        let size = 100 * MIB;
        let (db, dest) = (Path::new("/hub"), Path::new("/hub/hubgrade-backups"));
        let plan = SpacePlan::BackupBeforeMigration;
        let unseeded = plan.needs(size, db, dest);
        let seeded = plan.needs_seeded(size, size - 3 * MIB, db, dest);
        assert_eq!(seeded[0].bytes, 3 * MIB);
        assert_eq!(
            seeded[0].purpose,
            "for the backup, beyond the room its seed holds"
        );
        // What follows the backup needs the same room, seed or not.
        assert_eq!(seeded[1..], unseeded[1..]);
        // A seed larger than the database: no room for the backup itself.
        assert_eq!(plan.needs_seeded(size, 2 * size, db, dest)[0].bytes, 0);
        // In the downtime, the seed's room plus the seeded backup's needs are what the
        // rehearsal asked the backup in the downtime to find: the seed is the backup's room.
        let total = |needs: &[SpaceNeed]| -> u64 { needs.iter().map(|n| n.bytes).sum() };
        assert_eq!(total(&seeded) + (size - 3 * MIB), total(&unseeded));
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
}
