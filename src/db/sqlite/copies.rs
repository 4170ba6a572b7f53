//! The copies on the hub's volume: hubgrade's backups, rehearsal copies and the seeds the
//! rehearsal leaves for the backup, JupyterHub's own timestamped copies, told apart by name;
//! pruning keeps the newest.

use std::fs;
use std::path::{Path, PathBuf};

use super::{Result, io_error, with_suffix};
use crate::db::file::folder_of;

/// Keeps the `keep` newest hubgrade database backups (`hubgrade-*-db.sqlite`) in the folder of
/// `newest` (which is always kept) and deletes the older ones, every rehearsal copy
/// (`hubgrade-*-rehearsal.sqlite`, JupyterHub's copies of it, and the seed of a backup never
/// made, `hubgrade-*-db.sqlite.seed`), and all but the `keep`
/// newest of JupyterHub's own copies of `database` (`<name>.YYYY-MM-DD-HHMMSS`, which
/// `jupyterhub upgrade-db` makes and never removes) next to it and in the backups' folder.
/// Returns what was deleted.
pub fn prune_backups(database: &Path, newest: &Path, keep: usize) -> Result<Vec<PathBuf>> {
    let dir = folder_of(newest);
    let mut deleted = remove_rehearsal_copies(dir)?;
    let mut backups = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let path = entry.path();
        if is_hubgrade_backup(&path) && path != newest {
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

/// A database backup hubgrade made (`hubgrade-<upgrade>-db.sqlite`), by its name.
pub fn is_hubgrade_backup(path: &Path) -> bool {
    path.file_name()
        .map(|n| n.to_string_lossy())
        .is_some_and(|n| n.starts_with("hubgrade-") && n.ends_with("-db.sqlite"))
}

fn modified(path: &Path) -> Result<std::time::SystemTime> {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .map_err(io_error(path))
}

/// Removes the rehearsal's copies in `dir`, seeds included; returns them.
pub(super) fn remove_rehearsal_copies(dir: &Path) -> Result<Vec<PathBuf>> {
    let copies = rehearsal_copies(dir)?;
    for path in &copies {
        fs::remove_file(path).map_err(io_error(path))?;
    }
    Ok(copies)
}

/// The rehearsal's scratch copies in `dir`, JupyterHub's timestamped copies of them, and the
/// seeds the rehearsal leaves for the backup: all redundant once the backup is made, or once
/// the upgrade ended without one.
pub(super) fn rehearsal_copies(dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(file_names(dir)?
        .into_iter()
        .filter(|name| {
            is_rehearsal_copy(name)
                || is_seed(name)
                || name
                    .rsplit_once("-rehearsal.sqlite.")
                    .map(|(stem, _)| format!("{stem}-rehearsal.sqlite"))
                    .is_some_and(|copy| is_rehearsal_copy(&copy) && is_jupyterhub_copy(name, &copy))
        })
        .map(|name| dir.join(name))
        .collect())
}

/// JupyterHub's timestamped copies of `database`, next to it and in `other_dir`.
pub(super) fn jupyterhub_copies(database: &Path, other_dir: &Path) -> Result<Vec<PathBuf>> {
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

/// The rehearsal copy the upgrade that makes the backup `backup` (`hubgrade-<id>-db.sqlite`)
/// made next to it (`hubgrade-<id>-rehearsal.sqlite`); `None` for a backup of another name.
pub(super) fn rehearsal_copy_of(backup: &Path) -> Option<PathBuf> {
    let name = file_name(backup);
    let id = name.strip_prefix("hubgrade-")?.strip_suffix("-db.sqlite")?;
    Some(backup.with_file_name(format!("hubgrade-{id}-rehearsal.sqlite")))
}

/// Where the rehearsal leaves the seed of the backup `backup`: `<backup>.seed`, next to it.
/// The backup in the downtime brings the seed up to date instead of copying every byte (see
/// `backup::back_up_for`). Not a backup's name, so never pruned or listed as one; removed with
/// the rehearsal's copies.
pub(super) fn seed_of(backup: &Path) -> PathBuf {
    with_suffix(backup, ".seed")
}

/// The seed the rehearsal whose copy is `rehearsal_copy` (`hubgrade-<id>-rehearsal.sqlite`)
/// leaves for its upgrade's backup (`hubgrade-<id>-db.sqlite.seed`); `None` for a copy of
/// another name.
pub(super) fn seed_for_rehearsal(rehearsal_copy: &Path) -> Option<PathBuf> {
    let name = file_name(rehearsal_copy);
    let id = name
        .strip_prefix("hubgrade-")?
        .strip_suffix("-rehearsal.sqlite")?;
    Some(seed_of(
        &rehearsal_copy.with_file_name(format!("hubgrade-{id}-db.sqlite")),
    ))
}

/// Removes the seeds in `dir`; returns them.
pub(super) fn remove_seeds(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for name in file_names(dir)? {
        if is_seed(&name) {
            let path = dir.join(name);
            fs::remove_file(&path).map_err(io_error(&path))?;
            removed.push(path);
        }
    }
    Ok(removed)
}

fn is_seed(name: &str) -> bool {
    name.starts_with("hubgrade-") && name.ends_with("-db.sqlite.seed")
}

pub(super) fn is_rehearsal_copy(name: &str) -> bool {
    name.starts_with("hubgrade-") && name.ends_with("-rehearsal.sqlite")
}

pub(super) fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if entry.file_type().map_err(io_error(dir))?.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    Ok(names)
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

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
        // The seed an upgrade that ended before its backup left.
        fs::write(path("hubgrade-dddd-db.sqlite.seed"), b"seed").expect("write");
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
        assert_eq!(deleted.len(), 5, "{deleted:?}");
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
            "hubgrade-0123abcd-db.sqlite.seed",
            "hubgrade-0123abcd-db.sqlite.seed.old",
            "my-db.sqlite.seed",
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
                "hubgrade-0123abcd-db.sqlite.seed",
                "hubgrade-0123abcd-rehearsal.sqlite",
                "hubgrade-0123abcd-rehearsal.sqlite.2026-11-26-093000"
            ]
        );
    }

    #[test]
    fn the_seed_is_named_after_the_backup_of_the_same_upgrade() {
        let dir = Path::new("/hub/hubgrade-backups");
        let seed = dir.join("hubgrade-0123abcd-db.sqlite.seed");
        assert_eq!(
            seed_for_rehearsal(&dir.join("hubgrade-0123abcd-rehearsal.sqlite")),
            Some(seed.clone())
        );
        assert_eq!(seed_of(&dir.join("hubgrade-0123abcd-db.sqlite")), seed);
        assert!(!is_hubgrade_backup(&seed));
        assert_eq!(seed_for_rehearsal(&dir.join("my-copy.sqlite")), None);
    }
}
