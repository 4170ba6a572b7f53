//! The upgrade ledger: a record of every upgrade, its steps and its backups, that outlives the
//! HubUpgrade objects (GitOps tools prune them, people delete them). SQLite (a file on the
//! operator's claim) or PostgreSQL (for several replicas), through sqlx, with the schema in
//! `migrations/`. Only the leader writes it ([`writer`]); `hubgrade history` and `hubgrade
//! backups` read it. The ledger is a record, not the source of truth: the HubUpgrade's status
//! is, and the ledger is rebuilt from it.

pub mod entry;
pub mod predict;
pub mod writer;

use std::collections::BTreeMap;
use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::{AnyPool, Row};

pub use entry::{BackupEntry, StepEntry, UpgradeEntry};

use crate::db::url::redact;

/// The schema, compiled in: `migrations/` at the top of the project.
pub static MIGRATIONS: Migrator = sqlx::migrate!("./migrations");

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger URL {0} is neither sqlite:///<path> nor postgres://… (postgresql://…)")]
    Scheme(String),
    #[error("cannot open the ledger {url}: {source}")]
    Connect { url: String, source: sqlx::Error },
    #[error(
        "the ledger {url} has schema version {found}, newer than this hubgrade knows (up to \
         {known}): it was left as it is; run a hubgrade at least as new as the one that wrote it"
    )]
    Newer { url: String, found: i64, known: i64 },
    #[error(
        "the ledger {url} has schema version {found}, older than this hubgrade's ({known}): \
         the operator brings it up to date when it starts"
    )]
    Older { url: String, found: i64, known: i64 },
    #[error("the ledger {0} is empty: no operator has opened it yet")]
    Empty(String),
    #[error("cannot bring the ledger {url} to this hubgrade's schema: {source}")]
    Migrate { url: String, source: MigrateError },
    #[error("the ledger: {0}")]
    Query(#[from] sqlx::Error),
}

/// An open ledger, its schema current.
#[derive(Clone)]
pub struct Ledger {
    pool: AnyPool,
    /// For messages: the URL without its password.
    url: String,
}

/// Which upgrades or backups to read.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub namespace: Option<String>,
    pub hub: Option<String>,
}

impl Ledger {
    /// Opens the ledger at `url` (`sqlite:///path`, made if missing, or `postgres://…`), with
    /// `password` (from a Secret, never on a command line) for a server, and brings its schema
    /// up to date. A ledger written by a newer hubgrade is refused and left untouched.
    pub async fn open(url: &str, password: Option<&str>) -> Result<Ledger, LedgerError> {
        let ledger = Ledger::connect(url, password, false).await?;
        ledger.migrate().await?;
        Ok(ledger)
    }

    /// Opens the ledger to read it (`hubgrade history`, `hubgrade backups`): nothing is made or
    /// changed, and a schema this binary does not know is refused.
    pub async fn open_to_read(url: &str, password: Option<&str>) -> Result<Ledger, LedgerError> {
        let ledger = Ledger::connect(url, password, true).await?;
        let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
        match ledger.schema_version().await? {
            Some(found) if found > known => Err(LedgerError::Newer {
                url: ledger.url.clone(),
                found,
                known,
            }),
            Some(found) if found < known => Err(LedgerError::Older {
                url: ledger.url.clone(),
                found,
                known,
            }),
            Some(_) => Ok(ledger),
            None => Err(LedgerError::Empty(ledger.url.clone())),
        }
    }

    async fn connect(
        url: &str,
        password: Option<&str>,
        read_only: bool,
    ) -> Result<Ledger, LedgerError> {
        sqlx::any::install_default_drivers();
        let shown = redact(url);
        let full = with_password(url, password, read_only)?;
        let options =
            AnyConnectOptions::from_str(&full).map_err(|source| LedgerError::Connect {
                url: shown.clone(),
                source,
            })?;
        let pool = AnyPoolOptions::new()
            // One writer (the leader); SQLite serializes writes anyway.
            .max_connections(2)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|source| LedgerError::Connect {
                url: shown.clone(),
                source,
            })?;
        Ok(Ledger { pool, url: shown })
    }

    /// The URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Applies the migrations this binary has and the ledger lacks; refuses a ledger with a
    /// migration this binary does not know.
    async fn migrate(&self) -> Result<(), LedgerError> {
        let known = MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0);
        if let Some(found) = self.schema_version().await?
            && found > known
        {
            return Err(LedgerError::Newer {
                url: self.url.clone(),
                found,
                known,
            });
        }
        MIGRATIONS
            .run(&self.pool)
            .await
            .map_err(|source| match source {
                MigrateError::VersionMissing(found) => LedgerError::Newer {
                    url: self.url.clone(),
                    found,
                    known,
                },
                source => LedgerError::Migrate {
                    url: self.url.clone(),
                    source,
                },
            })
    }

    /// The newest migration applied, None for an empty ledger.
    pub async fn schema_version(&self) -> Result<Option<i64>, LedgerError> {
        // Absent on an empty database: asking for it fails, which says the same.
        let newest = sqlx::query("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
            .fetch_one(&self.pool)
            .await;
        Ok(match newest {
            Ok(row) => row.try_get::<Option<i64>, _>(0)?,
            Err(_) => None,
        })
    }

    /// Writes `entry` whole: the upgrade, its steps, its backup. Writing the same entry again
    /// changes nothing; a deleted upgrade stays marked deleted, a deleted backup stays deleted.
    pub async fn write(&self, entry: &UpgradeEntry) -> Result<(), LedgerError> {
        let now = entry::ledger_time(jiff::Timestamp::now());
        let mut tx = self.pool.begin().await?;
        let stored = sqlx::query(
            "SELECT u.phase, (SELECT COUNT(*) FROM steps s WHERE s.upgrade_uid = u.uid) AS steps \
             FROM upgrades u WHERE u.uid = $1",
        )
        .bind(&entry.uid)
        .fetch_optional(&mut *tx)
        .await?;
        let known = stored.is_some();
        if let Some(row) = stored {
            let phase: String = row.try_get("phase")?;
            let steps: i64 = row.try_get("steps")?;
            if is_stale(&phase, steps, entry) {
                // An older view of the upgrade (a replica that lost the lease wrote late):
                // the newer record stays.
                return Ok(());
            }
        }
        // A new upgrade gets the downtime predicted from the ones before it, once.
        let prediction = if known {
            None
        } else {
            let rows = sqlx::query(
                "SELECT namespace, hub, phase, downtime_seconds FROM upgrades \
                 WHERE downtime_seconds IS NOT NULL ORDER BY created_at DESC, uid LIMIT 500",
            )
            .fetch_all(&mut *tx)
            .await?;
            let mut samples = Vec::with_capacity(rows.len());
            for row in rows {
                samples.push(predict::Sample {
                    namespace: row.try_get("namespace")?,
                    hub: row.try_get("hub")?,
                    phase: row.try_get("phase")?,
                    downtime_seconds: row.try_get("downtime_seconds")?,
                });
            }
            let hub = Filter {
                namespace: Some(entry.namespace.clone()),
                hub: Some(entry.hub.clone()),
            };
            Some(predict::predict(&Ok(samples), &hub))
        };
        sqlx::query(
            "INSERT INTO upgrades (uid, namespace, name, hub, created_by, created_at, \
             database_type, from_image, to_image, from_release, to_release, to_revision, \
             phase, reason, message, downtime_seconds, finished_at, deleted_at, updated_at, \
             predicted_downtime_seconds, prediction_basis) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
             $17, $18, $19, $20, $21) \
             ON CONFLICT (uid) DO UPDATE SET database_type = excluded.database_type, \
             from_image = excluded.from_image, to_image = excluded.to_image, \
             from_release = excluded.from_release, to_release = excluded.to_release, \
             to_revision = excluded.to_revision, phase = excluded.phase, \
             reason = excluded.reason, message = excluded.message, \
             downtime_seconds = excluded.downtime_seconds, finished_at = excluded.finished_at, \
             deleted_at = COALESCE(upgrades.deleted_at, excluded.deleted_at), \
             updated_at = excluded.updated_at",
        )
        .bind(&entry.uid)
        .bind(&entry.namespace)
        .bind(&entry.name)
        .bind(&entry.hub)
        .bind(&entry.created_by)
        .bind(&entry.created_at)
        .bind(&entry.database_type)
        .bind(&entry.from_image)
        .bind(&entry.to_image)
        .bind(&entry.from_release)
        .bind(&entry.to_release)
        .bind(&entry.to_revision)
        .bind(&entry.phase)
        .bind(&entry.reason)
        .bind(&entry.message)
        .bind(entry.downtime_seconds)
        .bind(&entry.finished_at)
        .bind(&entry.deleted_at)
        .bind(&now)
        .bind(prediction.as_ref().and_then(|p| p.seconds))
        .bind(prediction.map(|p| p.basis))
        .execute(&mut *tx)
        .await?;
        for (position, step) in entry.steps.iter().enumerate() {
            sqlx::query(
                "INSERT INTO steps (upgrade_uid, position, name, started_at, finished_at, \
                 outcome, message) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (upgrade_uid, position) DO UPDATE SET name = excluded.name, \
                 started_at = excluded.started_at, finished_at = excluded.finished_at, \
                 outcome = excluded.outcome, message = excluded.message",
            )
            .bind(&entry.uid)
            .bind(position as i64)
            .bind(&step.name)
            .bind(&step.started_at)
            .bind(&step.finished_at)
            .bind(&step.outcome)
            .bind(&step.message)
            .execute(&mut *tx)
            .await?;
        }
        if let Some(backup) = &entry.backup {
            sqlx::query(
                "INSERT INTO backups (upgrade_uid, namespace, hub, kind, location, size_bytes, \
                 checksum, verified, created_at, state) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'retained') \
                 ON CONFLICT (upgrade_uid) DO UPDATE SET kind = excluded.kind, \
                 location = excluded.location, size_bytes = excluded.size_bytes, \
                 checksum = excluded.checksum, verified = excluded.verified",
            )
            .bind(&backup.upgrade_uid)
            .bind(&backup.namespace)
            .bind(&backup.hub)
            .bind(&backup.kind)
            .bind(&backup.location)
            .bind(backup.size_bytes)
            .bind(&backup.checksum)
            .bind(i64::from(backup.verified))
            .bind(&backup.created_at)
            .execute(&mut *tx)
            .await?;
        }
        // What this upgrade's retention deleted: earlier backups of the same hub.
        let rule = format!("backup.retain {} (upgrade {})", entry.retain, entry.name);
        for location in &entry.pruned_backups {
            sqlx::query(
                "UPDATE backups SET state = 'deleted', deleted_at = $1, deleted_by = $2 \
                 WHERE namespace = $3 AND hub = $4 AND location = $5 AND state = 'retained' \
                 AND upgrade_uid <> $6",
            )
            .bind(&now)
            .bind(&rule)
            .bind(&entry.namespace)
            .bind(&entry.hub)
            .bind(location)
            .bind(&entry.uid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Upgrades, newest first, each with its steps and backup.
    pub async fn history(&self, filter: &Filter) -> Result<Vec<UpgradeEntry>, LedgerError> {
        let rows = sqlx::query(
            "SELECT uid, namespace, name, hub, created_by, created_at, database_type, \
             from_image, to_image, from_release, to_release, to_revision, phase, reason, \
             message, downtime_seconds, predicted_downtime_seconds, prediction_basis, \
             finished_at, deleted_at FROM upgrades \
             WHERE ($1 IS NULL OR namespace = $1) AND ($2 IS NULL OR hub = $2) \
             ORDER BY created_at DESC, uid",
        )
        .bind(&filter.namespace)
        .bind(&filter.hub)
        .fetch_all(&self.pool)
        .await?;
        let mut upgrades = Vec::with_capacity(rows.len());
        for row in rows {
            upgrades.push(UpgradeEntry {
                uid: row.try_get("uid")?,
                namespace: row.try_get("namespace")?,
                name: row.try_get("name")?,
                hub: row.try_get("hub")?,
                created_by: row.try_get("created_by")?,
                created_at: row.try_get("created_at")?,
                database_type: row.try_get("database_type")?,
                from_image: row.try_get("from_image")?,
                to_image: row.try_get("to_image")?,
                from_release: row.try_get("from_release")?,
                to_release: row.try_get("to_release")?,
                to_revision: row.try_get("to_revision")?,
                phase: row.try_get("phase")?,
                reason: row.try_get("reason")?,
                message: row.try_get("message")?,
                downtime_seconds: row.try_get("downtime_seconds")?,
                predicted_downtime_seconds: row.try_get("predicted_downtime_seconds")?,
                prediction_basis: row.try_get("prediction_basis")?,
                finished_at: row.try_get("finished_at")?,
                deleted_at: row.try_get("deleted_at")?,
                steps: Vec::new(),
                backup: None,
                pruned_backups: Vec::new(),
                retain: 0,
            });
        }
        let mut steps = self.steps(filter).await?;
        let mut backups: BTreeMap<String, BackupEntry> = self
            .backups(filter)
            .await?
            .into_iter()
            .map(|b| (b.upgrade_uid.clone(), b))
            .collect();
        for upgrade in &mut upgrades {
            upgrade.steps = steps.remove(&upgrade.uid).unwrap_or_default();
            upgrade.backup = backups.remove(&upgrade.uid);
        }
        Ok(upgrades)
    }

    async fn steps(
        &self,
        filter: &Filter,
    ) -> Result<BTreeMap<String, Vec<StepEntry>>, LedgerError> {
        let rows = sqlx::query(
            "SELECT s.upgrade_uid, s.name, s.started_at, s.finished_at, s.outcome, s.message \
             FROM steps s JOIN upgrades u ON u.uid = s.upgrade_uid \
             WHERE ($1 IS NULL OR u.namespace = $1) AND ($2 IS NULL OR u.hub = $2) \
             ORDER BY s.upgrade_uid, s.position",
        )
        .bind(&filter.namespace)
        .bind(&filter.hub)
        .fetch_all(&self.pool)
        .await?;
        let mut steps: BTreeMap<String, Vec<StepEntry>> = BTreeMap::new();
        for row in rows {
            steps
                .entry(row.try_get("upgrade_uid")?)
                .or_default()
                .push(StepEntry {
                    name: row.try_get("name")?,
                    started_at: row.try_get("started_at")?,
                    finished_at: row.try_get("finished_at")?,
                    outcome: row.try_get("outcome")?,
                    message: row.try_get("message")?,
                });
        }
        Ok(steps)
    }

    /// Backups, newest first.
    pub async fn backups(&self, filter: &Filter) -> Result<Vec<BackupEntry>, LedgerError> {
        let rows = sqlx::query(
            "SELECT b.upgrade_uid, b.namespace, b.hub, u.name, b.kind, b.location, \
             b.size_bytes, b.checksum, b.verified, b.created_at, b.state, b.deleted_at, \
             b.deleted_by FROM backups b JOIN upgrades u ON u.uid = b.upgrade_uid \
             WHERE ($1 IS NULL OR b.namespace = $1) AND ($2 IS NULL OR b.hub = $2) \
             ORDER BY b.created_at DESC, b.upgrade_uid",
        )
        .bind(&filter.namespace)
        .bind(&filter.hub)
        .fetch_all(&self.pool)
        .await?;
        let mut backups = Vec::with_capacity(rows.len());
        for row in rows {
            backups.push(BackupEntry {
                upgrade_uid: row.try_get("upgrade_uid")?,
                namespace: row.try_get("namespace")?,
                hub: row.try_get("hub")?,
                upgrade: row.try_get("name")?,
                kind: row.try_get("kind")?,
                location: row.try_get("location")?,
                size_bytes: row.try_get("size_bytes")?,
                checksum: row.try_get("checksum")?,
                verified: row.try_get::<i64, _>("verified")? != 0,
                created_at: row.try_get("created_at")?,
                state: row.try_get("state")?,
                deleted_at: row.try_get("deleted_at")?,
                deleted_by: row.try_get("deleted_by")?,
            });
        }
        Ok(backups)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Whether `entry` is older than what the ledger holds (`phase` with `steps` steps): the
/// timeline only grows, and an ended upgrade does not start again.
fn is_stale(phase: &str, steps: i64, entry: &UpgradeEntry) -> bool {
    let ended = |phase: &str| matches!(phase, "Succeeded" | "RolledBack" | "Failed");
    let incoming = entry.steps.len() as i64;
    incoming < steps || (incoming == steps && ended(phase) && !ended(&entry.phase))
}

/// `url` with `password` set (percent-encoded) when one is given; an SQLite file is made if
/// missing, or opened read-only.
fn with_password(
    url: &str,
    password: Option<&str>,
    read_only: bool,
) -> Result<String, LedgerError> {
    if let Some(path) = url.strip_prefix("sqlite:") {
        if path.is_empty() || path == "//" {
            return Err(LedgerError::Scheme(redact(url)));
        }
        let mode = if read_only { "ro" } else { "rwc" };
        return Ok(if url.contains("mode=") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&mode={mode}")
        } else {
            format!("{url}?mode={mode}")
        });
    }
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(LedgerError::Scheme(redact(url)));
    }
    let Some(password) = password else {
        return Ok(url.to_string());
    };
    let mut parsed = url::Url::parse(url).map_err(|_| LedgerError::Scheme(redact(url)))?;
    parsed
        .set_password(Some(
            &percent_encoding::utf8_percent_encode(password, percent_encoding::NON_ALPHANUMERIC)
                .to_string(),
        ))
        .map_err(|_| LedgerError::Scheme(redact(url)))?;
    Ok(parsed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_from_a_secret_joins_the_url_encoded_and_never_shows() {
        let url = with_password(
            "postgres://hubgrade@db:5432/ledger",
            Some("p@ss word/#"),
            false,
        )
        .expect("a URL");
        assert_eq!(
            url,
            "postgres://hubgrade:p%40ss%20word%2F%23@db:5432/ledger"
        );
        assert!(!redact(&url).contains("p%40ss"));
        assert_eq!(
            with_password("sqlite:///var/lib/hubgrade/ledger.sqlite", None, false).unwrap(),
            "sqlite:///var/lib/hubgrade/ledger.sqlite?mode=rwc"
        );
        assert!(matches!(
            with_password("mysql://x@db/ledger", None, false),
            Err(LedgerError::Scheme(_))
        ));
    }
}
