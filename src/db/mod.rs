//! Hub databases: reading their revision, backing them up, checking and restoring the backups:
//! SQLite files, PostgreSQL and MySQL/MariaDB clones and dumps. (Snapshots of claims are
//! Kubernetes objects: `cluster::snapshot`.)

pub mod backend;
pub mod mysql;
pub mod postgres;
pub mod revision;
pub mod server;
pub mod sqlite;
pub mod url;

/// Bytes available to an unprivileged writer in the file system holding `dir`.
pub(crate) fn available_space(dir: &std::path::Path) -> std::io::Result<u64> {
    let stats = rustix::fs::statvfs(dir)?;
    Ok(stats.f_bavail.saturating_mul(stats.f_frsize))
}
