//! `hubgrade agent ...`: the work the operator's Jobs do inside the cluster, with the hub's
//! volume mounted. Each command prints a JSON report on stdout and into the container's
//! termination message, where the operator reads it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::backup::sqlite;

#[derive(Debug, Clone, Subcommand)]
pub enum AgentCommand {
    /// Copy an SQLite database (consistently, verified) and report size and checksum.
    SqliteBackup {
        /// The database file.
        #[arg(long)]
        database: PathBuf,
        /// Where the copy goes.
        #[arg(long)]
        to: PathBuf,
        /// Afterwards keep only this many hubgrade backups in the copy's folder (newest first)
        /// and of JupyterHub's own timestamped copies of the database, and delete rehearsal
        /// copies.
        #[arg(long)]
        retain: Option<usize>,
    },
    /// Replace an SQLite database with a backup whose checksum is known.
    SqliteRestore {
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
        /// The database file to replace.
        #[arg(long)]
        to: PathBuf,
        /// The backup's recorded checksum (`sha256:<hex>`); a mismatch overwrites nothing.
        #[arg(long)]
        checksum: String,
    },
}

/// The JSON an agent command reports.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<crate::backup::BackupReference>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Files a restore removed to make room for itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_to_make_room: Vec<String>,
}

impl AgentReport {
    /// Reads a report back from a termination message.
    pub fn parse(message: &str) -> Option<AgentReport> {
        serde_json::from_str(message.trim()).ok()
    }
}

impl AgentCommand {
    /// Runs the command against local paths (in a Job: the mounted hub volume).
    pub async fn execute(&self) -> AgentReport {
        let outcome = match self {
            AgentCommand::SqliteBackup {
                database,
                to,
                retain,
            } => {
                let plan = sqlite::SpacePlan::for_destination(to);
                let made = sqlite::back_up_for(database, to, plan).await;
                if let (Ok(_), Some(keep)) = (&made, retain) {
                    // Pruning is housekeeping: a failure to delete an old copy does not undo
                    // the backup just made.
                    if let Err(error) = sqlite::prune_backups(database, to, *keep) {
                        eprintln!("hubgrade agent: could not prune old backups: {error}");
                    }
                }
                made.map(|backup| (backup, Vec::new()))
            }
            AgentCommand::SqliteRestore { from, to, checksum } => {
                sqlite::restore(from, to, checksum)
                    .await
                    .map(|restored| (restored.backup, restored.removed_to_make_room))
            }
        };
        match outcome {
            Ok((backup, removed)) => AgentReport {
                ok: true,
                backup: Some(backup),
                error: None,
                removed_to_make_room: removed.iter().map(|p| p.display().to_string()).collect(),
            },
            Err(error) => AgentReport {
                ok: false,
                backup: None,
                error: Some(error.to_string()),
                removed_to_make_room: Vec::new(),
            },
        }
    }

    /// The same command with every path under `from` moved under `to` (used where the volume
    /// is reached at another path than in the pod).
    pub fn with_paths_moved(&self, from: &Path, to: &Path) -> AgentCommand {
        let moved = |path: &PathBuf| match path.strip_prefix(from) {
            Ok(rest) => to.join(rest),
            Err(_) => path.clone(),
        };
        match self {
            AgentCommand::SqliteBackup {
                database,
                to: dest,
                retain,
            } => AgentCommand::SqliteBackup {
                database: moved(database),
                to: moved(dest),
                retain: *retain,
            },
            AgentCommand::SqliteRestore {
                from: source,
                to: dest,
                checksum,
            } => AgentCommand::SqliteRestore {
                from: moved(source),
                to: moved(dest),
                checksum: checksum.clone(),
            },
        }
    }
}

pub async fn run(command: AgentCommand) -> ExitCode {
    let report = command.execute().await;
    let json = serde_json::to_string(&report).unwrap_or_else(|_| "{\"ok\":false}".to_string());
    println!("{json}");
    // Kubernetes shows the termination message in the pod's status, where the operator reads it.
    let termination_log = Path::new("/dev/termination-log");
    if termination_log.exists() {
        let _ = std::fs::write(termination_log, &json);
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
