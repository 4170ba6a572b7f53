//! What PostgreSQL and MySQL backups share: their errors, waiting for the hub's connections to
//! go, comparing a copy with its original, running the client tools, and the checks made before
//! a dump is written or restored.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::file::{size_and_checksum, size_and_checksum_like};
use super::revision::{read_revision, scrubbed};
use super::url::{DatabaseUrl, ServerUrl};
use crate::machine::{BackupMethod, BackupRecord};

type Result<T> = std::result::Result<T, ServerBackupError>;

/// A client connected to a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    /// Its IP address; `None`: a local socket.
    pub address: Option<String>,
    /// The name it gave (PostgreSQL's `application_name`), if any.
    pub application: String,
}

/// The size in bytes of the database `url` names.
pub async fn size(url: &DatabaseUrl) -> Result<u64> {
    match url {
        DatabaseUrl::Postgres(server) => super::postgres::size(server).await,
        DatabaseUrl::Mysql(server) => super::mysql::size(server).await,
        DatabaseUrl::Sqlite { path } => Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)),
    }
}

/// The clients connected to the database `url` names (this connection aside).
pub async fn clients(url: &DatabaseUrl) -> Result<Vec<Client>> {
    match url {
        DatabaseUrl::Postgres(server) => super::postgres::clients(server).await,
        DatabaseUrl::Mysql(server) => super::mysql::clients(server).await,
        DatabaseUrl::Sqlite { .. } => Ok(Vec::new()),
    }
}

/// Why a backup or restore on a database server failed. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum ServerBackupError {
    #[error("{what} on {url}: {message}")]
    Database {
        what: &'static str,
        url: String,
        message: String,
    },
    #[error(
        "{count} connections to database {database} remain (is the hub still running?); stop them before the backup or restore"
    )]
    InUse { database: String, count: i64 },
    #[error("the backup database {0} does not exist")]
    MissingBackup(String),
    #[error("the copy {copy} does not match {database}: {detail}")]
    NotVerified {
        copy: String,
        database: String,
        detail: String,
    },
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error(
        "the database URL's {part} holds a line break or a NUL character, which the MySQL client's options file cannot carry; nothing was run"
    )]
    UnsafeOption { part: &'static str },
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("not enough space for the dump in {dir}: {needed} bytes needed, {available} available")]
    NoSpace {
        dir: String,
        needed: u64,
        available: u64,
    },
    #[error(
        "the dump {path} has checksum {actual}, not the recorded {expected}; nothing was changed"
    )]
    ChecksumMismatch {
        path: String,
        expected: String,
        actual: String,
    },
}

/// Refuses a dump whose checksum is not the recorded one, before anything relies on it.
pub(crate) fn check_dump_checksum(file: &Path, expected: &str) -> Result<()> {
    let (_, actual) = size_and_checksum_like(file, expected).map_err(file_error(file))?;
    if actual != expected {
        return Err(ServerBackupError::ChecksumMismatch {
            path: file.display().to_string(),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(())
}

/// Makes `file`'s folder and checks `needed` bytes fit in it.
pub(crate) fn check_room(file: &Path, needed: u64) -> Result<()> {
    let dir = super::file::folder_of(file);
    std::fs::create_dir_all(dir).map_err(file_error(dir))?;
    let available = super::file::available_space(dir).map_err(file_error(dir))?;
    if available < needed {
        return Err(ServerBackupError::NoSpace {
            dir: dir.display().to_string(),
            needed,
            available,
        });
    }
    Ok(())
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> ServerBackupError {
    let path = path.display().to_string();
    move |e| ServerBackupError::File {
        path,
        message: e.to_string(),
    }
}

/// A failed query on `url`, its password scrubbed from the message. A connection refused,
/// reset or timed out says so in plain words: the server is stopped or out of reach.
pub(crate) fn database_error(
    what: &'static str,
    url: DatabaseUrl,
) -> impl Fn(sqlx::Error) -> ServerBackupError {
    move |e| ServerBackupError::Database {
        what,
        url: url.to_string(),
        message: match &e {
            sqlx::Error::Io(io) => format!("the server does not answer ({io})"),
            _ => scrubbed(&e, &url),
        },
    }
}

/// Waits up to 5 s for `count` (the other clients of `database`) to reach zero: a client that
/// just disconnected can linger for a moment, a running hub stays.
pub(crate) async fn refuse_if_in_use(
    database: &str,
    mut count: impl AsyncFnMut() -> Result<i64>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let clients = count().await?;
        if clients == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ServerBackupError::InUse {
                database: database.to_string(),
                count: clients,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a copy must share with its original: the schema revision, and every table's rows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub revision: Option<String>,
    pub row_counts: Vec<(String, i64)>,
}

/// The alembic revision of the database at `url`.
pub(crate) async fn revision(url: &DatabaseUrl) -> Result<Option<String>> {
    read_revision(url)
        .await
        .map_err(|e| ServerBackupError::Database {
            what: "reading the revision",
            url: url.to_string(),
            message: e.to_string(),
        })
}

/// The record of the clone `backup` of the hub's database, once it is checked to match it.
pub(crate) async fn verified_clone(
    server: &ServerUrl,
    backup: &str,
    size: i64,
    fingerprint: impl AsyncFn(&ServerUrl) -> Result<Fingerprint>,
) -> Result<BackupRecord> {
    check_same(server, &server.with_database(backup), fingerprint).await?;
    Ok(BackupRecord {
        method: BackupMethod::Clone,
        reference: backup.to_string(),
        size_bytes: Some(size.max(0) as u64),
        checksum: None,
        verified: true,
        pruned: Vec::new(),
    })
}

/// Refuses a copy whose fingerprint (the revision and every table's row count, read by the
/// backend's `fingerprint`) differs from its original's.
pub(crate) async fn check_same(
    original: &ServerUrl,
    copy: &ServerUrl,
    fingerprint: impl AsyncFn(&ServerUrl) -> Result<Fingerprint>,
) -> Result<()> {
    let (of_original, of_copy) = (fingerprint(original).await?, fingerprint(copy).await?);
    if of_original != of_copy {
        return Err(ServerBackupError::NotVerified {
            copy: copy.database.to_string(),
            database: original.database.to_string(),
            detail: format!(
                "revision and row counts {:?} differ from {:?}",
                (of_copy.revision, of_copy.row_counts),
                (of_original.revision, of_original.row_counts)
            ),
        });
    }
    Ok(())
}

/// Runs a client tool (pg_dump, mysql, ...) to its end; a failure reports its error output,
/// with the password hidden should the tool repeat it.
pub(crate) async fn run_tool(
    tool: &'static str,
    mut command: tokio::process::Command,
    password: Option<&str>,
) -> Result<()> {
    let tool_error = |e: std::io::Error| ServerBackupError::Tool {
        tool,
        message: e.to_string(),
    };
    command.stderr(Stdio::piped());
    // spawn, not output(): output() would replace a stdout file with a pipe.
    let output = command
        .spawn()
        .map_err(tool_error)?
        .wait_with_output()
        .await
        .map_err(tool_error)?;
    if !output.status.success() {
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if let Some(password) = password.filter(|p| !p.is_empty()) {
            message = message.replace(password, "***");
        }
        return Err(ServerBackupError::Tool { tool, message });
    }
    Ok(())
}

/// Puts a finished dump written to `partial` in place at `file` and records it.
pub(crate) fn finish_dump(partial: &Path, file: &Path) -> Result<BackupRecord> {
    std::fs::rename(partial, file).map_err(file_error(file))?;
    let (size_bytes, checksum) = size_and_checksum(file).map_err(file_error(file))?;
    Ok(BackupRecord {
        method: BackupMethod::Dump,
        reference: file.display().to_string(),
        size_bytes: Some(size_bytes),
        checksum: Some(checksum),
        verified: true,
        pruned: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_that_does_not_answer_is_named_without_its_password() {
        let url =
            DatabaseUrl::parse("postgresql://hub:hunter2@db.example:5433/jupyterhub").expect("url");
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = database_error("connecting", url)(sqlx::Error::Io(refused));
        let message = error.to_string();
        assert!(
            message.starts_with("connecting on postgresql://hub:***@db.example:5433/jupyterhub: the server does not answer ("),
            "{message}"
        );
        assert!(!message.contains("hunter2"), "{message}");
    }
}
