//! The protocol between the operator and its Jobs: what a Job is asked to do
//! ([`AgentCommand`], `hubgrade agent ...`) and what it reports back ([`AgentReport`], JSON in
//! the container's termination message). The builders write arguments with
//! [`AgentCommand::to_args`], the CLI parses them with the same type, and the operator reads
//! reports with [`AgentReport::parse`], so the two sides cannot drift apart.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use serde::{Deserialize, Serialize};

use crate::db::sqlite;
use crate::machine::BackupRecord;

#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum AgentCommand {
    /// Copy an SQLite database (consistently, verified) and report size and checksum. The copy
    /// named `hubgrade-<id>-db.sqlite` (the backup before the migration) skips SQLite's
    /// integrity check when this upgrade's rehearsal copy next to it shows the rehearsal ran
    /// it; every other copy runs it. The rehearsal's copy (`hubgrade-<id>-rehearsal.sqlite`)
    /// also leaves the backup's seed (`hubgrade-<id>-db.sqlite.seed`), which the backup brings
    /// up to date instead of copying every byte (see `db::sqlite::back_up_for`).
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
        /// The backup's recorded checksum (`blake3:<hex>`, or `sha256:<hex>` from earlier
        /// releases); a mismatch overwrites nothing.
        #[arg(long)]
        checksum: String,
    },
    /// Move a (failed) SQLite database and its journal files aside, so that JupyterHub makes a
    /// new one at its path. Nothing is deleted.
    SqliteMoveAside {
        /// The database file.
        #[arg(long)]
        database: PathBuf,
        /// Where it goes.
        #[arg(long)]
        to: PathBuf,
    },
    /// Report the alembic revision of an SQLite database.
    SqliteRevision {
        /// The database file.
        #[arg(long)]
        database: PathBuf,
    },
    /// Back up a stopped hub's PostgreSQL or MySQL database: a clone on the same server named
    /// `<database>_<suffix>`, checked to hold the same revision and row counts; or, with
    /// `--dump-to`, a dump file (pg_dump / mysqldump) with its checksum.
    ServerBackup {
        #[command(flatten)]
        database: ServerSource,
        /// The clone is named after the database, then `_<suffix>`.
        #[arg(long)]
        suffix: String,
        /// Dump to this file instead of cloning.
        #[arg(long)]
        dump_to: Option<PathBuf>,
    },
    /// Put a clone or a dump back in place of the hub's PostgreSQL or MySQL database; the
    /// replaced database is kept as `<database>_failed_<time>`.
    ServerRestore {
        #[command(flatten)]
        database: ServerSource,
        /// The clone (a database name) or the dump file to restore from.
        #[arg(long)]
        from: String,
        /// A dump's recorded checksum (`blake3:<hex>`, or `sha256:<hex>` from earlier
        /// releases); given: `from` is a dump file, checked before anything is replaced.
        #[arg(long)]
        checksum: Option<String>,
    },
    /// Report the alembic revision of the hub's PostgreSQL or MySQL database.
    ServerRevision {
        #[command(flatten)]
        database: ServerSource,
    },
    /// Write a JupyterHub configuration file that loads the hub's own configuration and then
    /// sets the database `jupyterhub upgrade-db` acts on. A `db_url` in the hub's configuration
    /// wins over `--db`, so the database is pinned in a configuration file instead; the file
    /// also refuses to run when the hub's configuration names another database than `expect`.
    PinDatabase {
        /// The hub's configuration file (its `--config`); omitted: `jupyterhub_config.py` in
        /// the working directory, if it exists, as JupyterHub itself does.
        #[arg(long)]
        hub_config: Option<String>,
        /// The database URL to migrate (SQLAlchemy URL, e.g. sqlite:////srv/jupyterhub/copy.sqlite).
        #[arg(long)]
        database_url: String,
        /// The database URL the hub's configuration must name (the one hubgrade backed up).
        #[arg(long)]
        expect_url: String,
        /// Where the configuration file is written.
        #[arg(long)]
        to: PathBuf,
    },
}

/// Where an agent finds a server database's URL, password included. Never on the command
/// line: in the hub's z2jh values (the hub Secret, mounted), else in the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct ServerSource {
    /// The folder where the hub Secret is mounted (z2jh: `values.yaml` with `hub.db.url`, and
    /// `hub.db.password`). Omitted: the URL is in the environment variable HUBGRADE_DB_URL.
    #[arg(long)]
    pub values: Option<PathBuf>,
    /// The folder where the user's `hub.existingSecret` is mounted: its `values.yaml` is merged
    /// over the hub Secret's, and its keys are read first, as z2jh's configuration does.
    #[arg(long, requires = "values")]
    pub existing: Option<PathBuf>,
}

/// The environment variable holding a database URL, password included (also `hubgrade db`'s).
pub const DATABASE_URL_ENV: &str = "HUBGRADE_DB_URL";

impl ServerSource {
    fn flags(&self, flag: &mut impl FnMut(&str, String)) {
        if let Some(values) = &self.values {
            flag("values", values.display().to_string());
        }
        if let Some(existing) = &self.existing {
            flag("existing", existing.display().to_string());
        }
    }

    fn moved(&self, moved: impl Fn(&PathBuf) -> PathBuf) -> ServerSource {
        ServerSource {
            values: self.values.as_ref().map(&moved),
            existing: self.existing.as_ref().map(&moved),
        }
    }

    /// The database URL (holds the password: never print it).
    pub fn url(&self) -> Result<crate::db::url::DatabaseUrl, String> {
        use crate::db::url::DatabaseUrl;
        let text = match &self.values {
            Some(folder) => {
                // The user's Secret first, then the hub's.
                let readers: Vec<_> = self
                    .existing
                    .iter()
                    .chain([folder])
                    .map(|dir| move |key: &str| std::fs::read_to_string(dir.join(key)).ok())
                    .collect();
                let readers: Vec<crate::hub::SecretKeys<'_>> = readers
                    .iter()
                    .map(|r| r as crate::hub::SecretKeys<'_>)
                    .collect();
                crate::hub::chart_url_from_secrets(&readers).ok_or_else(|| {
                    let file = folder.join(crate::hub::VALUES_KEY);
                    format!("reading {}: no such file", file.display())
                })??
            }
            None => std::env::var(DATABASE_URL_ENV)
                .map_err(|_| format!("no database URL: {DATABASE_URL_ENV} is not set"))?,
        };
        match DatabaseUrl::parse(&text).map_err(|e| e.to_string())? {
            DatabaseUrl::Sqlite { .. } => {
                Err("the database URL names an SQLite file, not a database server".into())
            }
            server => Ok(server),
        }
    }
}

/// The name of a server clone: the database's, then `_<suffix>`, within the 63 characters
/// PostgreSQL allows (MySQL allows 64).
pub fn clone_name(database: &str, suffix: &str) -> String {
    let room = 63usize.saturating_sub(suffix.len() + 1);
    let head: String = database.chars().take(room).collect();
    format!("{head}_{suffix}")
}

/// The JSON an agent command reports.
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AgentReport {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupRecord>,
    /// The database's alembic revision (`sqlite-revision`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What a restore did, in words (a server restore: where the replaced database is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Files a restore removed to make room for itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_to_make_room: Vec<String>,
}

impl AgentReport {
    /// Reads a report back from a termination message.
    pub fn parse(message: &str) -> Option<AgentReport> {
        serde_json::from_str(message.trim()).ok()
    }

    fn failed(error: impl ToString) -> AgentReport {
        AgentReport {
            ok: false,
            error: Some(error.to_string()),
            ..Default::default()
        }
    }
}

impl AgentCommand {
    /// The arguments after `hubgrade agent` that parse back into this command.
    pub fn to_args(&self) -> Vec<String> {
        let path = |p: &PathBuf| p.display().to_string();
        let mut args: Vec<String> = Vec::new();
        let mut flag = |name: &str, value: String| {
            args.push(format!("--{name}"));
            args.push(value);
        };
        let verb = match self {
            AgentCommand::SqliteBackup {
                database,
                to,
                retain,
            } => {
                flag("database", path(database));
                flag("to", path(to));
                if let Some(keep) = retain {
                    flag("retain", keep.to_string());
                }
                "sqlite-backup"
            }
            AgentCommand::SqliteRestore { from, to, checksum } => {
                flag("from", path(from));
                flag("to", path(to));
                flag("checksum", checksum.clone());
                "sqlite-restore"
            }
            AgentCommand::SqliteRevision { database } => {
                flag("database", path(database));
                "sqlite-revision"
            }
            AgentCommand::SqliteMoveAside { database, to } => {
                flag("database", path(database));
                flag("to", path(to));
                "sqlite-move-aside"
            }
            AgentCommand::ServerBackup {
                database,
                suffix,
                dump_to,
            } => {
                database.flags(&mut flag);
                flag("suffix", suffix.clone());
                if let Some(file) = dump_to {
                    flag("dump-to", path(file));
                }
                "server-backup"
            }
            AgentCommand::ServerRestore {
                database,
                from,
                checksum,
            } => {
                database.flags(&mut flag);
                flag("from", from.clone());
                if let Some(checksum) = checksum {
                    flag("checksum", checksum.clone());
                }
                "server-restore"
            }
            AgentCommand::ServerRevision { database } => {
                database.flags(&mut flag);
                "server-revision"
            }
            AgentCommand::PinDatabase {
                hub_config,
                database_url,
                expect_url,
                to,
            } => {
                if let Some(config) = hub_config {
                    flag("hub-config", config.clone());
                }
                flag("database-url", database_url.clone());
                flag("expect-url", expect_url.clone());
                flag("to", path(to));
                "pin-database"
            }
        };
        std::iter::once(verb.to_string()).chain(args).collect()
    }

    /// Runs the command against local paths (in a Job: the mounted hub volume).
    pub async fn execute(&self) -> AgentReport {
        let backup = |outcome: Result<BackupRecord, sqlite::SqliteBackupError>| match outcome {
            Ok(backup) => AgentReport {
                ok: true,
                backup: Some(backup),
                ..Default::default()
            },
            Err(error) => AgentReport::failed(error),
        };
        match self {
            AgentCommand::SqliteBackup {
                database,
                to,
                retain,
            } => {
                // The copy's name says what follows it (a rehearsal copy, or the backup before
                // a migration and maybe a restore), and so how much room it needs.
                let plan = sqlite::SpacePlan::for_destination(to);
                let mut made = sqlite::back_up_for(database, to, plan).await;
                if let (Ok(record), Some(keep)) = (&mut made, retain) {
                    // Pruning is housekeeping: a failure to delete an old copy does not undo
                    // the backup just made.
                    match sqlite::prune_backups(database, to, *keep) {
                        // hubgrade's own earlier backups, which the ledger lists.
                        Ok(deleted) => {
                            record.pruned = deleted
                                .iter()
                                .filter(|p| sqlite::is_hubgrade_backup(p))
                                .map(|p| p.display().to_string())
                                .collect()
                        }
                        Err(error) => {
                            eprintln!("hubgrade agent: could not prune old backups: {error}")
                        }
                    }
                }
                backup(made)
            }
            AgentCommand::SqliteRestore { from, to, checksum } => {
                match sqlite::restore(from, to, checksum).await {
                    Ok(restored) => AgentReport {
                        removed_to_make_room: restored
                            .removed_to_make_room
                            .iter()
                            .map(|p| p.display().to_string())
                            .collect(),
                        // Said in the DatabaseRestored Event: why nothing needed copying.
                        message: restored.already_in_place.then(|| {
                            format!(
                                "{} already held the backup's bytes (the migration changed \
                                 nothing): nothing was copied",
                                to.display()
                            )
                        }),
                        ..backup(Ok(restored.backup))
                    },
                    Err(error) => AgentReport::failed(error),
                }
            }
            AgentCommand::SqliteMoveAside { database, to } => match move_aside(database, to) {
                Ok(message) => AgentReport {
                    ok: true,
                    message: Some(message),
                    ..Default::default()
                },
                Err(error) => AgentReport::failed(error),
            },
            AgentCommand::SqliteRevision { database } => {
                let url = crate::db::url::DatabaseUrl::Sqlite {
                    path: database.clone(),
                };
                match crate::db::revision::read_revision(&url).await {
                    Ok(revision) => AgentReport {
                        ok: true,
                        revision,
                        ..Default::default()
                    },
                    Err(error) => AgentReport::failed(error),
                }
            }
            AgentCommand::ServerBackup {
                database,
                suffix,
                dump_to,
            } => match server_backup(database, suffix, dump_to.as_deref()).await {
                Ok(record) => backup(Ok(record)),
                Err(error) => AgentReport::failed(error),
            },
            AgentCommand::ServerRestore {
                database,
                from,
                checksum,
            } => match server_restore(database, from, checksum.as_deref()).await {
                Ok(message) => AgentReport {
                    ok: true,
                    message: Some(message),
                    ..Default::default()
                },
                Err(error) => AgentReport::failed(error),
            },
            AgentCommand::ServerRevision { database } => match database.url() {
                Err(error) => AgentReport::failed(error),
                Ok(url) => match crate::db::revision::read_revision(&url).await {
                    Ok(revision) => AgentReport {
                        ok: true,
                        revision,
                        ..Default::default()
                    },
                    Err(error) => AgentReport::failed(error),
                },
            },
            AgentCommand::PinDatabase {
                hub_config,
                database_url,
                expect_url,
                to,
            } => {
                let text = crate::hub::pinned_database_config(
                    hub_config.as_deref(),
                    database_url,
                    expect_url,
                );
                let written = to
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(to, text));
                match written {
                    Ok(()) => AgentReport {
                        ok: true,
                        ..Default::default()
                    },
                    Err(error) => AgentReport::failed(format!("writing {}: {error}", to.display())),
                }
            }
        }
    }

    /// The same command with every path under `from` moved under `to` (used where the volume
    /// is reached at another path than in the pod).
    pub fn with_paths_moved(&self, from: &Path, to: &Path) -> AgentCommand {
        let moved = |path: &PathBuf| match path.strip_prefix(from) {
            Ok(rest) => to.join(rest),
            Err(_) => path.clone(),
        };
        let moved_url = |url: &String| match url.strip_prefix("sqlite:///") {
            Some(path) if path.starts_with('/') => {
                format!("sqlite:///{}", moved(&PathBuf::from(path)).display())
            }
            _ => url.clone(),
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
            AgentCommand::SqliteRevision { database } => AgentCommand::SqliteRevision {
                database: moved(database),
            },
            AgentCommand::SqliteMoveAside { database, to: dest } => AgentCommand::SqliteMoveAside {
                database: moved(database),
                to: moved(dest),
            },
            AgentCommand::ServerBackup {
                database,
                suffix,
                dump_to,
            } => AgentCommand::ServerBackup {
                database: database.moved(moved),
                suffix: suffix.clone(),
                dump_to: dump_to.as_ref().map(moved),
            },
            AgentCommand::ServerRestore {
                database,
                from: source,
                checksum,
            } => AgentCommand::ServerRestore {
                database: database.moved(moved),
                // A dump is a file on a mounted volume; a clone's name stays as it is.
                from: match checksum {
                    Some(_) => moved(&PathBuf::from(source)).display().to_string(),
                    None => source.clone(),
                },
                checksum: checksum.clone(),
            },
            AgentCommand::ServerRevision { database } => AgentCommand::ServerRevision {
                database: database.moved(moved),
            },
            AgentCommand::PinDatabase {
                hub_config,
                database_url,
                expect_url,
                to: dest,
            } => AgentCommand::PinDatabase {
                hub_config: hub_config.clone(),
                database_url: moved_url(database_url),
                expect_url: moved_url(expect_url),
                to: moved(dest),
            },
        }
    }
}

/// Moves `database` (and its `-journal`, `-wal`, `-shm` files) to `to`. Done already (the
/// database gone, `to` there) counts as done: a Job may run twice.
fn move_aside(database: &Path, to: &Path) -> Result<String, String> {
    let said = format!(
        "the failed database {} was moved to {}",
        database.display(),
        to.display()
    );
    if !database.exists() {
        return match to.exists() {
            true => Ok(said),
            false => Err(format!("{} does not exist", database.display())),
        };
    }
    if let Some(folder) = to.parent() {
        std::fs::create_dir_all(folder).map_err(|e| format!("{}: {e}", folder.display()))?;
    }
    for suffix in ["-journal", "-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", database.display()));
        if side.exists() {
            let dest = PathBuf::from(format!("{}{suffix}", to.display()));
            std::fs::rename(&side, &dest).map_err(|e| format!("moving {}: {e}", side.display()))?;
        }
    }
    std::fs::rename(database, to).map_err(|e| format!("moving {}: {e}", database.display()))?;
    Ok(said)
}

/// The clone backup of a server database (PostgreSQL refuses it while anything is connected),
/// or its dump to `dump_to`.
async fn server_backup(
    database: &ServerSource,
    suffix: &str,
    dump_to: Option<&Path>,
) -> Result<BackupRecord, String> {
    use crate::db::backend::{Backend, DatabaseBackend};
    use crate::machine::BackupMethod;
    let url = database.url()?;
    let (method, destination) = match (&url, dump_to) {
        (_, Some(file)) => (BackupMethod::Dump, file.display().to_string()),
        (
            crate::db::url::DatabaseUrl::Postgres(s) | crate::db::url::DatabaseUrl::Mysql(s),
            None,
        ) => (BackupMethod::Clone, clone_name(&s.database, suffix)),
        (crate::db::url::DatabaseUrl::Sqlite { .. }, None) => unreachable!("ServerSource::url"),
    };
    let backend = Backend::new(&url, method, &destination).map_err(|e| e.to_string())?;
    backend.back_up().await.map_err(|e| e.to_string())
}

/// Restores the clone or dump `from` over the hub's server database; says where the replaced
/// one is.
async fn server_restore(
    database: &ServerSource,
    from: &str,
    checksum: Option<&str>,
) -> Result<String, String> {
    use crate::db::backend::{Backend, DatabaseBackend};
    use crate::machine::BackupMethod;
    let url = database.url()?;
    let backup = BackupRecord {
        method: match checksum {
            Some(_) => BackupMethod::Dump,
            None => BackupMethod::Clone,
        },
        reference: from.to_string(),
        size_bytes: None,
        checksum: checksum.map(str::to_string),
        verified: true,
        pruned: Vec::new(),
    };
    let backend = Backend::for_reference(&url, &backup).map_err(|e| e.to_string())?;
    backend.restore(&backup).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Line {
        #[command(subcommand)]
        command: AgentCommand,
    }

    #[test]
    fn every_command_parses_back_from_its_arguments() {
        let commands = [
            AgentCommand::SqliteBackup {
                database: "/srv/jupyterhub/jupyterhub.sqlite".into(),
                to: "/srv/jupyterhub/hubgrade-backups/x.sqlite".into(),
                retain: Some(3),
            },
            AgentCommand::SqliteBackup {
                database: "/a.sqlite".into(),
                to: "/b.sqlite".into(),
                retain: None,
            },
            AgentCommand::SqliteRestore {
                from: "/b.sqlite".into(),
                to: "/a.sqlite".into(),
                checksum: "sha256:00".into(),
            },
            AgentCommand::SqliteRevision {
                database: "/a.sqlite".into(),
            },
            AgentCommand::SqliteMoveAside {
                database: "/a.sqlite".into(),
                to: "/backups/a-failed.sqlite".into(),
            },
            AgentCommand::ServerBackup {
                database: ServerSource {
                    values: Some("/usr/local/etc/jupyterhub/secret".into()),
                    existing: Some("/usr/local/etc/jupyterhub/existing-secret".into()),
                },
                suffix: "hubgrade_0123abcd".into(),
                dump_to: None,
            },
            AgentCommand::ServerBackup {
                database: ServerSource::default(),
                suffix: "hubgrade_0123abcd".into(),
                dump_to: Some("/hubgrade-dump/hubgrade-0123abcd-db.dump".into()),
            },
            AgentCommand::ServerRestore {
                database: ServerSource::default(),
                from: "jhub_hubgrade_0123abcd".into(),
                checksum: None,
            },
            AgentCommand::ServerRestore {
                database: ServerSource::default(),
                from: "/hubgrade-dump/hubgrade-0123abcd-db.dump".into(),
                checksum: Some("sha256:00".into()),
            },
            AgentCommand::ServerRevision {
                database: ServerSource {
                    values: Some("/v".into()),
                    existing: None,
                },
            },
            AgentCommand::PinDatabase {
                hub_config: Some("/usr/local/etc/jupyterhub/jupyterhub_config.py".into()),
                database_url: "sqlite:////srv/jupyterhub/copy.sqlite".into(),
                expect_url: "sqlite:////srv/jupyterhub/jupyterhub.sqlite".into(),
                to: "/hubgrade/jupyterhub_config.py".into(),
            },
        ];
        for command in commands {
            let words = std::iter::once("agent".to_string()).chain(command.to_args());
            let parsed = Line::try_parse_from(words).expect("parses").command;
            assert_eq!(parsed, command);
        }
    }

    #[test]
    fn a_backup_report_reads_back_as_the_record_the_status_keeps() {
        // Exactly what an agent of an earlier build writes, so reports survive an operator update.
        let message = r#"{"ok":true,"backup":{"method":"File","reference":"/srv/jupyterhub/hubgrade-backups/x.sqlite","sizeBytes":81920,"checksum":"sha256:00","verified":true}}"#;
        let report = AgentReport::parse(message).expect("a report");
        let backup = BackupRecord {
            method: crate::machine::BackupMethod::File,
            reference: "/srv/jupyterhub/hubgrade-backups/x.sqlite".into(),
            size_bytes: Some(81920),
            checksum: Some("sha256:00".into()),
            verified: true,
            pruned: Vec::new(),
        };
        assert_eq!(report.backup.as_ref(), Some(&backup));
        assert_eq!(serde_json::to_string(&report).expect("json"), message);
    }

    #[test]
    fn moved_paths_reach_database_urls_too() {
        let command = AgentCommand::PinDatabase {
            hub_config: None,
            database_url: "sqlite:////srv/jupyterhub/copy.sqlite".into(),
            expect_url: "postgresql://hub@db/hub".into(),
            to: "/srv/jupyterhub/x.py".into(),
        };
        let moved = command.with_paths_moved(Path::new("/srv/jupyterhub"), Path::new("/tmp/v"));
        assert_eq!(
            moved,
            AgentCommand::PinDatabase {
                hub_config: None,
                database_url: "sqlite:////tmp/v/copy.sqlite".into(),
                expect_url: "postgresql://hub@db/hub".into(),
                to: "/tmp/v/x.py".into(),
            }
        );
    }
}
