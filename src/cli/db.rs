//! `hubgrade db ...`: the database operations the operator uses, for people doing them by hand.

use std::path::PathBuf;
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
        /// Where the backup goes (for file: a path).
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
            let backend =
                Backend::new(&url, method, &to.to_string_lossy()).map_err(|e| e.to_string())?;
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
