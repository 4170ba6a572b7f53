//! `hubgrade db ...`: the database operations the operator uses, for people doing them by hand.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::db::backend::{Backend, DatabaseBackend};
use crate::db::revision::read_revision;
use crate::db::url::DatabaseUrl;
use crate::hub::revision::{check_upgrade, release_for_version, release_of};
use crate::machine::{BackupMethod, BackupRecord};

#[derive(Debug, Clone, Subcommand)]
pub enum DbCommand {
    /// Print the database's alembic revision and the JupyterHub release it belongs to.
    Revision {
        /// JupyterHub's database URL (sqlite:///..., postgresql://..., mysql://...).
        #[arg(long, env = "HUBGRADE_DB_URL", hide_env_values = true)]
        url: String,
        /// Also check that upgrading to this JupyterHub version is not a schema downgrade.
        #[arg(long)]
        target_version: Option<String>,
        /// Accept a revision hubgrade does not know.
        #[arg(long)]
        allow_unknown: bool,
    },
    /// Back the database up and print a JSON reference to the backup.
    Backup {
        #[arg(long, env = "HUBGRADE_DB_URL", hide_env_values = true)]
        url: String,
        #[arg(long, value_enum, default_value_t = BackupMethod::File)]
        method: BackupMethod,
        /// Where the backup goes. File and dump: a file path, or a directory that the backup file
        /// is made in (named after the database and the time); an existing file is never
        /// overwritten. Clone: the name of the copy database.
        #[arg(long)]
        to: PathBuf,
    },
    /// Restore the database from a backup reference (the JSON `db backup` printed, or a file holding it).
    Restore {
        #[arg(long, env = "HUBGRADE_DB_URL", hide_env_values = true)]
        url: String,
        #[arg(long)]
        from: String,
    },
}

pub async fn run(command: DbCommand) -> ExitCode {
    match execute(command).await {
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("hubgrade: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: DbCommand) -> Result<String, String> {
    match command {
        DbCommand::Revision {
            url,
            target_version,
            allow_unknown,
        } => {
            let url = DatabaseUrl::parse(&url).map_err(|e| e.to_string())?;
            let revision = read_revision(&url)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| {
                    format!("{url} has no alembic revision: it is not a JupyterHub database")
                })?;
            let release = release_of(&revision)
                .map(|r| r.releases)
                .unwrap_or("unknown");
            let mut out = format!("{revision} (JupyterHub {release})");
            if let Some(version) = target_version {
                let target = release_for_version(&version).ok_or_else(|| {
                    format!("JupyterHub {version} is not a release hubgrade knows")
                })?;
                check_upgrade(&revision, target.head, allow_unknown).map_err(|e| e.to_string())?;
                out.push_str(&format!(
                    "\nupgrading to JupyterHub {version} migrates it to {}",
                    target.head
                ));
                if let Some(note) = target.note.filter(|_| revision != target.head) {
                    out.push_str(&format!(" ({note})"));
                }
            }
            Ok(out)
        }
        DbCommand::Backup { url, method, to } => {
            let url = DatabaseUrl::parse(&url).map_err(|e| e.to_string())?;
            let to = destination(&url, method, &to, jiff::Timestamp::now())?;
            let backend = Backend::new(&url, method, &to).map_err(|e| e.to_string())?;
            backend.prepare().await.map_err(|e| e.to_string())?;
            let reference = backend.back_up().await.map_err(|e| e.to_string())?;
            serde_json::to_string_pretty(&reference).map_err(|e| e.to_string())
        }
        DbCommand::Restore { url, from } => {
            let url = DatabaseUrl::parse(&url).map_err(|e| e.to_string())?;
            let text = if from.trim_start().starts_with('{') {
                from
            } else {
                std::fs::read_to_string(&from).map_err(|e| format!("reading {from}: {e}"))?
            };
            let reference: BackupRecord = serde_json::from_str(&text)
                .map_err(|e| format!("the backup reference is not valid: {e}"))?;
            let backend = Backend::for_reference(&url, &reference).map_err(|e| e.to_string())?;
            backend.restore(&reference).await.map_err(|e| e.to_string())
        }
    }
}

/// Where `hubgrade db backup --to` puts the backup. A file backup (SQLite file, or a dump) into
/// an existing directory, or a path ending in `/`, is a file there named after the database and
/// the time; an existing file is refused, never overwritten. A clone's `--to` is a database
/// name, taken as it is. Each refusal is a sentence naming the path and what to do.
fn destination(
    url: &DatabaseUrl,
    method: BackupMethod,
    to: &Path,
    now: jiff::Timestamp,
) -> Result<String, String> {
    let (stem, extension) = match (url, method) {
        (DatabaseUrl::Sqlite { path }, BackupMethod::File | BackupMethod::Auto) => (
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "jupyterhub".into()),
            "sqlite",
        ),
        (DatabaseUrl::Postgres(server), BackupMethod::Dump) => (server.database.clone(), "dump"),
        (DatabaseUrl::Mysql(server), BackupMethod::Dump) => (server.database.clone(), "sql"),
        _ => return Ok(to.to_string_lossy().into_owned()),
    };
    let shown = to.display();
    let as_directory = to.is_dir() || to.as_os_str().to_string_lossy().ends_with('/');
    let file = if as_directory {
        let name = format!("{stem}-{}.{extension}", now.strftime("%Y%m%dT%H%M%SZ"));
        to.join(name)
    } else {
        to.to_path_buf()
    };
    // The nearest part of the path that exists must be a directory (the rest is created).
    if let Some(blocking) = file
        .ancestors()
        .skip(1)
        .find(|a| !a.as_os_str().is_empty() && a.exists())
        .filter(|a| !a.is_dir())
    {
        return Err(format!(
            "--to {shown}: {} is a file, not a directory; the backup cannot go under it",
            blocking.display()
        ));
    }
    match std::fs::symlink_metadata(&file) {
        Ok(_) => Err(format!(
            "{} already exists; hubgrade never overwrites a file with a backup: choose another --to (a directory makes a new file in it)",
            file.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(file.to_string_lossy().into_owned())
        }
        Err(e) => Err(format!(
            "--to {shown}: cannot look at {} ({}); choose a path you can write",
            file.display(),
            e.kind()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite() -> DatabaseUrl {
        DatabaseUrl::parse("sqlite:////srv/jupyterhub/jupyterhub.sqlite").expect("url")
    }

    fn now() -> jiff::Timestamp {
        "2026-11-26T15:04:05Z".parse().expect("time")
    }

    #[test]
    fn a_directory_gets_a_new_file_named_after_the_database_and_the_time() {
        let dir = tempfile::tempdir().expect("dir");
        let to = destination(&sqlite(), BackupMethod::File, dir.path(), now()).expect("to");
        assert_eq!(
            to,
            dir.path()
                .join("jupyterhub-20261126T150405Z.sqlite")
                .to_string_lossy()
        );
        // Not there yet: a path ending in / is a directory to be.
        let later = dir.path().join("backups/");
        let to = destination(&sqlite(), BackupMethod::File, &later, now()).expect("to");
        assert!(
            to.ends_with("backups/jupyterhub-20261126T150405Z.sqlite"),
            "{to}"
        );
        let pg = DatabaseUrl::parse("postgresql://hub@db/jhub").expect("url");
        let to = destination(&pg, BackupMethod::Dump, dir.path(), now()).expect("to");
        assert!(to.ends_with("jhub-20261126T150405Z.dump"), "{to}");
        // A clone's --to is the copy's database name.
        let to = destination(&pg, BackupMethod::Clone, Path::new("jhub_copy"), now()).expect("to");
        assert_eq!(to, "jhub_copy");
    }

    #[test]
    fn a_bad_path_is_a_sentence_not_an_os_error() {
        let dir = tempfile::tempdir().expect("dir");
        let existing = dir.path().join("old.sqlite");
        std::fs::write(&existing, "x").expect("write");
        let error =
            destination(&sqlite(), BackupMethod::File, &existing, now()).expect_err("exists");
        assert!(
            error.contains("already exists") && error.contains("never overwrites"),
            "{error}"
        );
        let under_a_file = existing.join("b.sqlite");
        let error =
            destination(&sqlite(), BackupMethod::File, &under_a_file, now()).expect_err("file");
        assert!(error.contains("is a file, not a directory"), "{error}");
        assert!(!error.contains("os error"), "{error}");
        assert_eq!(std::fs::read_to_string(&existing).expect("read"), "x");
    }
}
