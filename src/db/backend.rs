//! One interface over every way hubgrade backs up a hub database: prepare (check it can work),
//! back up, verify, restore, discard. [`Backend`] picks the implementation from the database URL
//! and the method.

use std::path::{Path, PathBuf};

use super::url::{DatabaseUrl, ServerUrl};
use super::{mysql, postgres, sqlite};
use crate::machine::{BackupMethod, BackupRecord};

/// A way to back up and restore a hub database. Every step may be repeated safely.
#[allow(async_fn_in_trait)] // Used with concrete types only; no Send bound is needed.
pub trait DatabaseBackend {
    /// Checks, changing nothing, that a backup can be made: the database is there and idle, and
    /// the destination has room.
    async fn prepare(&self) -> Result<(), BackupError>;
    /// Makes the backup and checks it.
    async fn back_up(&self) -> Result<BackupRecord, BackupError>;
    /// Checks an existing backup is still intact, before anything relies on it.
    async fn verify(&self, backup: &BackupRecord) -> Result<(), BackupError>;
    /// Puts the backup in place of the database. Returns what became of the replaced database.
    async fn restore(&self, backup: &BackupRecord) -> Result<String, BackupError>;
    /// Deletes a backup that is no longer needed.
    async fn discard(&self, backup: &BackupRecord) -> Result<(), BackupError>;
}

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Sqlite(#[from] sqlite::SqliteBackupError),
    #[error(transparent)]
    Server(#[from] super::server::ServerBackupError),
    #[error("{0}")]
    Unsupported(String),
    #[error("the backup reference has no checksum; it cannot be checked before a restore")]
    NoChecksum,
}

/// The backend for a database and a method, with where its backups go.
#[derive(Clone, Debug)]
pub enum Backend {
    SqliteFile {
        database: PathBuf,
        destination: PathBuf,
    },
    PostgresClone {
        server: ServerUrl,
        backup: String,
    },
    PostgresDump {
        server: ServerUrl,
        file: PathBuf,
    },
    MysqlClone {
        server: ServerUrl,
        backup: String,
    },
    MysqlDump {
        server: ServerUrl,
        file: PathBuf,
    },
}

impl Backend {
    /// `destination`: a file path (file and dump backups) or a database name (clones). `Auto`
    /// is File for SQLite, Clone for PostgreSQL and MySQL, as in the spec.
    pub fn new(
        url: &DatabaseUrl,
        method: BackupMethod,
        destination: &str,
    ) -> Result<Backend, BackupError> {
        let file = PathBuf::from(destination);
        let name = destination.to_string();
        let method = match (url, method) {
            (DatabaseUrl::Sqlite { .. }, BackupMethod::Auto) => BackupMethod::File,
            (_, BackupMethod::Auto) => BackupMethod::Clone,
            (_, method) => method,
        };
        Ok(match (url, method) {
            (DatabaseUrl::Sqlite { path }, BackupMethod::File) => Backend::SqliteFile {
                database: path.clone(),
                destination: file,
            },
            (DatabaseUrl::Postgres(server), BackupMethod::Clone) => Backend::PostgresClone {
                server: server.clone(),
                backup: name,
            },
            (DatabaseUrl::Postgres(server), BackupMethod::Dump) => Backend::PostgresDump {
                server: server.clone(),
                file,
            },
            (DatabaseUrl::Mysql(server), BackupMethod::Clone) => Backend::MysqlClone {
                server: server.clone(),
                backup: name,
            },
            (DatabaseUrl::Mysql(server), BackupMethod::Dump) => Backend::MysqlDump {
                server: server.clone(),
                file,
            },
            (_, BackupMethod::VolumeSnapshot | BackupMethod::Auto) => {
                return Err(BackupError::Unsupported(
                    "a VolumeSnapshot is a Kubernetes object: the operator makes and restores it"
                        .into(),
                ));
            }
            (DatabaseUrl::Sqlite { .. }, _) => {
                return Err(BackupError::Unsupported(
                    "an SQLite database is backed up with the file method".into(),
                ));
            }
            (_, BackupMethod::File) => {
                return Err(BackupError::Unsupported(
                    "PostgreSQL and MySQL databases are backed up with the clone or dump method"
                        .into(),
                ));
            }
        })
    }

    /// The backend that restores `backup` into the database at `url`.
    pub fn for_reference(url: &DatabaseUrl, backup: &BackupRecord) -> Result<Backend, BackupError> {
        Backend::new(url, backup.method, &backup.reference)
    }
}

fn checksum(backup: &BackupRecord) -> Result<&str, BackupError> {
    backup.checksum.as_deref().ok_or(BackupError::NoChecksum)
}

/// What a restore on a database server reports.
fn restored_on_server(database: &str, kind: &str, reference: &str, kept: &str) -> String {
    format!(
        "restored {database} from the {kind} {reference}; the replaced database is kept as {kept}"
    )
}

/// A suffix for the name the replaced database is kept under.
fn stamp() -> String {
    jiff::Timestamp::now().strftime("%Y%m%d%H%M%S").to_string()
}

impl DatabaseBackend for Backend {
    async fn prepare(&self) -> Result<(), BackupError> {
        match self {
            Backend::SqliteFile {
                database,
                destination,
            } => Ok(sqlite::prepare(database, destination)?),
            Backend::PostgresClone { server, .. } => Ok(postgres::prepare(server, None).await?),
            Backend::PostgresDump { server, file } => {
                Ok(postgres::prepare(server, Some(file)).await?)
            }
            Backend::MysqlClone { server, .. } => Ok(mysql::prepare(server, None).await?),
            Backend::MysqlDump { server, file } => Ok(mysql::prepare(server, Some(file)).await?),
        }
    }

    async fn back_up(&self) -> Result<BackupRecord, BackupError> {
        match self {
            Backend::SqliteFile {
                database,
                destination,
            } => Ok(sqlite::back_up(database, destination).await?),
            Backend::PostgresClone { server, backup } => {
                Ok(postgres::clone_database(server, backup).await?)
            }
            Backend::PostgresDump { server, file } => Ok(postgres::dump(server, file).await?),
            Backend::MysqlClone { server, backup } => {
                Ok(mysql::clone_database(server, backup).await?)
            }
            Backend::MysqlDump { server, file } => Ok(mysql::dump(server, file).await?),
        }
    }

    async fn verify(&self, backup: &BackupRecord) -> Result<(), BackupError> {
        let reference = backup.reference.as_str();
        match self {
            Backend::SqliteFile { .. } => {
                Ok(sqlite::verify(Path::new(reference), checksum(backup)?).await?)
            }
            Backend::PostgresClone { server, .. } => {
                Ok(postgres::verify_clone(server, reference).await?)
            }
            Backend::PostgresDump { server, .. } => {
                Ok(postgres::verify_dump(server, Path::new(reference), checksum(backup)?).await?)
            }
            Backend::MysqlClone { server, .. } => Ok(mysql::verify_clone(server, reference).await?),
            Backend::MysqlDump { .. } => {
                Ok(mysql::verify_dump(Path::new(reference), checksum(backup)?)?)
            }
        }
    }

    async fn restore(&self, backup: &BackupRecord) -> Result<String, BackupError> {
        // Each restore below checks its backup (checksum, or the clone's existence) before it
        // replaces anything, so a separate verify here would read the backup twice.
        let reference = backup.reference.as_str();
        match self {
            Backend::SqliteFile { database, .. } => {
                let restored =
                    sqlite::restore(Path::new(reference), database, checksum(backup)?).await?;
                let mut report = format!("restored {} from {reference}", database.display());
                if !restored.removed_to_make_room.is_empty() {
                    let removed: Vec<String> = restored
                        .removed_to_make_room
                        .iter()
                        .map(|path| path.display().to_string())
                        .collect();
                    report.push_str(&format!("; removed to make room: {}", removed.join(", ")));
                }
                Ok(report)
            }
            Backend::PostgresClone { server, .. } => {
                let kept = postgres::restore_clone(server, reference, &stamp()).await?;
                Ok(restored_on_server(
                    &server.database,
                    "clone",
                    reference,
                    &kept,
                ))
            }
            Backend::PostgresDump { server, .. } => {
                let file = Path::new(reference);
                let kept =
                    postgres::restore_dump(server, file, checksum(backup)?, &stamp()).await?;
                Ok(restored_on_server(
                    &server.database,
                    "dump",
                    reference,
                    &kept,
                ))
            }
            Backend::MysqlClone { server, .. } => {
                let kept = mysql::restore_clone(server, reference, &stamp()).await?;
                Ok(restored_on_server(
                    &server.database,
                    "clone",
                    reference,
                    &kept,
                ))
            }
            Backend::MysqlDump { server, .. } => {
                let file = Path::new(reference);
                let kept = mysql::restore_dump(server, file, checksum(backup)?, &stamp()).await?;
                Ok(restored_on_server(
                    &server.database,
                    "dump",
                    reference,
                    &kept,
                ))
            }
        }
    }

    async fn discard(&self, backup: &BackupRecord) -> Result<(), BackupError> {
        let reference = backup.reference.as_str();
        let remove = |path: &str| match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(BackupError::Unsupported(format!("deleting {path}: {e}")))
            }
            _ => Ok(()),
        };
        match self {
            Backend::SqliteFile { .. }
            | Backend::PostgresDump { .. }
            | Backend::MysqlDump { .. } => remove(reference),
            Backend::PostgresClone { server, .. } => {
                Ok(postgres::discard(server, reference).await?)
            }
            Backend::MysqlClone { server, .. } => Ok(mysql::discard(server, reference).await?),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Backend, BackupMethod, DatabaseUrl};

    fn backend(url: &str, method: BackupMethod) -> Result<Backend, String> {
        let url = DatabaseUrl::parse(url).expect("url");
        Backend::new(&url, method, "/backups/x").map_err(|e| e.to_string())
    }

    #[test]
    fn auto_is_the_method_the_spec_promises_and_the_others_must_fit_the_database() {
        let sqlite = "sqlite:////srv/jupyterhub/jupyterhub.sqlite";
        let postgres = "postgresql://hub@db/hub";
        assert!(matches!(
            backend(sqlite, BackupMethod::Auto),
            Ok(Backend::SqliteFile { .. })
        ));
        assert!(matches!(
            backend(postgres, BackupMethod::Auto),
            Ok(Backend::PostgresClone { .. })
        ));
        assert!(matches!(
            backend(postgres, BackupMethod::Dump),
            Ok(Backend::PostgresDump { .. })
        ));
        assert!(backend(sqlite, BackupMethod::Clone).is_err());
        assert!(backend(postgres, BackupMethod::File).is_err());
        let snapshot = backend(sqlite, BackupMethod::VolumeSnapshot).expect_err("a snapshot");
        assert!(snapshot.contains("Kubernetes object"), "{snapshot}");
    }
}
