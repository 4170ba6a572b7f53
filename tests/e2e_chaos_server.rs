//! #15 point 4, chaos with the hub's database server: a hub on PostgreSQL and one on MariaDB
//! (z2jh `hub.db.type: postgres` and `mysql`) have their server stopped as the hub goes down,
//! so the backup meets it stopped; the server comes back some seconds later. The upgrade rolls
//! back: the migration never ran, so the old image comes back on the untouched database, whose
//! rows (users, groups, API tokens) are all there and which a real JupyterHub 4.1.6 opens and
//! serves once the server is back. The status and a Warning Event say the server was
//! unreachable, naming it without its password.
//!
//! The cheapest setup that backs up against a really stopped server: the hub on KWOK, a real
//! local PostgreSQL or MariaDB, and the agent stand-in running hubgrade's own backup code (the
//! Job's `hubgrade agent server-backup`) as a local process against it. On KWOK the hub pod's
//! readiness does not depend on its database; the real 4.1.6 hub started on the database after
//! the outage stands for the hub coming back healthy.

mod support;

use std::time::{Duration, Instant};

use hubgrade::db::backend::{Backend, DatabaseBackend};
use hubgrade::db::url::DatabaseUrl;
use hubgrade::machine::{BackupMethod, Outcome, Phase};
use serde_json::json;
use sqlx::Connection;
use support::e2e::{Hub, ORIGINAL_IMAGE, assert_phase, on_server};
use support::jupyterhub::{OLD, make_database, open_and_dump, start_hub};
use support::mariadb::MariaDbServer;
use support::postgres::PgServer;

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const LIMIT: Duration = Duration::from_secs(180);
/// The phases after Preflight in which the backup has not met the server yet: skipped
/// (Rehearsal, for a database server; Draining), the hub stopping, the backup starting.
const BEFORE_THE_BACKUP: [Phase; 4] = [
    Phase::Rehearsal,
    Phase::Draining,
    Phase::ScalingDown,
    Phase::BackingUp,
];
/// What an error says about a stopped server (a refused connection), in plain words.
const UNREACHABLE: &str = "the server does not answer (Connection refused";
/// How long the server stays down after the backup met it stopped.
const OUTAGE_AFTER_BACKUP: Duration = Duration::from_secs(5);

/// A local database server that can be stopped and started again on the same port and data.
trait StoppableServer: Sized {
    /// z2jh's `hub.db.type`.
    const CHART_TYPE: &'static str;
    fn start() -> Self;
    fn port(&self) -> u16;
    /// Creates the empty hub database `jupyterhub`.
    fn create_hub_database(&self);
    /// JupyterHub's (SQLAlchemy) URL of `jupyterhub`, with the password.
    fn hub_url(&self) -> String;
    /// The hub Secret's values for the database, as z2jh users write them: `hub.db.url`, and
    /// the key `hub.db.password` when the URL holds no password.
    fn chart_values(&self) -> (String, Option<&'static str>);
    fn stop(&mut self);
    fn resume(&mut self);
    /// The server's databases (schemas), sorted.
    async fn databases(&self) -> Vec<String>;
}

impl StoppableServer for PgServer {
    const CHART_TYPE: &'static str = "postgres";
    fn start() -> Self {
        PgServer::start()
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn create_hub_database(&self) {
        self.sql("CREATE DATABASE jupyterhub");
    }
    fn hub_url(&self) -> String {
        self.url("jupyterhub")
    }
    fn chart_values(&self) -> (String, Option<&'static str>) {
        // z2jh hands `hub.db.password` to psycopg2 through PGPASSWORD.
        (
            self.plain_url("jupyterhub"),
            Some(support::postgres::PASSWORD),
        )
    }
    fn stop(&mut self) {
        PgServer::stop(self)
    }
    fn resume(&mut self) {
        PgServer::resume(self)
    }
    async fn databases(&self) -> Vec<String> {
        let mut db = sqlx::PgConnection::connect(&self.sqlx_url("postgres"))
            .await
            .expect("connecting to PostgreSQL");
        let names: Vec<(String,)> =
            sqlx::query_as("SELECT datname::text FROM pg_database ORDER BY 1")
                .fetch_all(&mut db)
                .await
                .expect("listing databases");
        db.close().await.expect("closing");
        names.into_iter().map(|(n,)| n).collect()
    }
}

impl StoppableServer for MariaDbServer {
    const CHART_TYPE: &'static str = "mysql";
    fn start() -> Self {
        MariaDbServer::start()
    }
    fn port(&self) -> u16 {
        self.port
    }
    fn create_hub_database(&self) {
        self.sql("CREATE DATABASE jupyterhub CHARACTER SET utf8mb4");
    }
    fn hub_url(&self) -> String {
        self.url("jupyterhub")
    }
    fn chart_values(&self) -> (String, Option<&'static str>) {
        // z2jh MySQL hubs keep the password in the URL: PyMySQL does not read MYSQL_PWD.
        (self.url("jupyterhub"), None)
    }
    fn stop(&mut self) {
        MariaDbServer::stop(self)
    }
    fn resume(&mut self) {
        MariaDbServer::resume(self)
    }
    async fn databases(&self) -> Vec<String> {
        let mut db = sqlx::MySqlConnection::connect(&self.sqlx_url("mysql"))
            .await
            .expect("connecting to MariaDB");
        let names: Vec<(String,)> = sqlx::query_as(
            "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata ORDER BY 1",
        )
        .fetch_all(&mut db)
        .await
        .expect("listing databases");
        db.close().await.expect("closing");
        names.into_iter().map(|(n,)| n).collect()
    }
}

/// The scenario, for either server: stopped right after Preflight, as the hub goes down, kept
/// down until the backup met it, started again some seconds later; the upgrade must end
/// `RolledBack` with the database as it was.
async fn the_server_stopped_for_the_backup_rolls_back<S: StoppableServer>(prefix: &str) {
    let mut server = S::start();
    server.create_hub_database();
    let url = server.hub_url();
    make_database(OLD, &url);
    let before = open_and_dump(OLD, &url).expect("JupyterHub 4.1.6 opens its own database");
    let databases_before = server.databases().await;
    let hub = Hub::new(prefix, on_server(S::CHART_TYPE, server.chart_values())).await;

    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    // Preflight asked the server (it must answer then). Stopped as soon as Preflight is over:
    // the hub goes down next, and the backup Job (seconds later) meets the server stopped.
    let started = Instant::now();
    let stopped_in = loop {
        match hub.phase("to-4-2-0").await {
            Some(phase) if BEFORE_THE_BACKUP.contains(&phase) => break phase,
            Some(phase) if phase != Phase::Pending && phase != Phase::Preflight => panic!(
                "the upgrade reached {phase} before the server could be stopped:\n{}",
                hub.operator_log()
            ),
            _ => {}
        }
        assert!(started.elapsed() < LIMIT, "Preflight did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.stop();
    eprintln!(
        "{prefix}: the {} server is stopped in {stopped_in}",
        S::CHART_TYPE
    );
    // Down until the backup has met it: the upgrade leaves BackingUp one way or the other.
    let mut seen = vec![stopped_in];
    loop {
        let phase = hub.phase("to-4-2-0").await.expect("a phase");
        if !seen.contains(&phase) {
            eprintln!("{prefix}: {phase} after {:?}", started.elapsed());
            seen.push(phase);
        }
        if !BEFORE_THE_BACKUP.contains(&phase) {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the upgrade stayed in {phase} with the server stopped:\n{}",
            hub.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(OUTAGE_AFTER_BACKUP).await;
    server.resume();
    eprintln!(
        "{prefix}: the server is back after {:?} ({seen:?})",
        started.elapsed()
    );

    let done = hub
        .wait_for(
            "to-4-2-0",
            &[Phase::Succeeded, Phase::RolledBack, Phase::Failed],
            LIMIT,
        )
        .await;
    eprintln!("{prefix}: ended after {:?}", started.elapsed());
    let status = done.status.expect("a status");
    eprintln!(
        "{prefix}: {}: {}",
        status.progress.phase, status.progress.message
    );
    assert_phase(&status, Phase::RolledBack);
    assert!(!seen.contains(&Phase::Migrating), "{seen:?}");
    // The hub was really stopped, and it was the backup that failed.
    assert!(
        status.progress.hub_stopped_at.is_some(),
        "the hub never stopped"
    );
    let backing_up = status
        .progress
        .steps
        .iter()
        .find(|s| s.name == Phase::BackingUp)
        .expect("the BackingUp step");
    assert_eq!(backing_up.outcome, Some(Outcome::Failed), "{backing_up:?}");
    // The failure says what failed and why: the backup, on a server that did not answer,
    // named by its address (the password hidden).
    let address = format!("127.0.0.1:{}", server.port());
    let failure = status.progress.failure.clone().unwrap_or_default();
    for said in ["the database backup failed", &address, UNREACHABLE] {
        assert!(failure.contains(said), "no {said:?} in {failure:?}");
    }
    let events = hub.event_reasons("to-4-2-0").await;
    assert!(
        events.iter().any(|(kind, reason, note)| kind == "Warning"
            && reason == "RollingBack"
            && note.contains(&address)
            && note.contains(UNREACHABLE)),
        "{events:?}"
    );
    // No backup was recorded and the migration never started: nothing to restore.
    assert_eq!(status.progress.backup, None);
    assert!(!status.progress.migration_started);
    assert_eq!(hub.jobs_for("backup").await.len(), 1);
    for step in ["migration", "restore"] {
        assert!(hub.jobs_for(step).await.is_empty(), "a {step} Job ran");
    }
    // The old image is back and the hub available.
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(hub.hub_available().await, "the hub is not available");
    // No data lost: every table's columns and rows as before, no database added or gone.
    assert_eq!(
        open_and_dump(OLD, &url).as_deref(),
        Ok(before.as_str()),
        "the hub's database changed"
    );
    assert!(before.contains("alice") && before.contains("api_tokens"));
    assert_eq!(server.databases().await, databases_before);
    // And the old hub really starts on it and answers its API, now the server is back.
    assert_eq!(
        start_hub(OLD, &url).as_deref(),
        Ok(OLD),
        "JupyterHub 4.1.6 does not start on the database after the outage"
    );
    // The agent's error reached the pod's termination message: no password there either (the
    // Events, the HubUpgrade and the operator's log are checked when `hub` is dropped).
    let pods = support::kubectl(&["get", "pods,jobs", "-n", hub.ns(), "-o", "json"])
        .output()
        .expect("kubectl get");
    let pods = support::stdout(&pods);
    assert!(pods.contains(&address), "the Job's error is not in its pod");
    for secret in [
        support::postgres::PASSWORD,
        support::postgres::PASSWORD_IN_URL,
        support::mariadb::PASSWORD,
        support::mariadb::PASSWORD_IN_URL,
    ] {
        assert!(!pods.contains(secret), "a password is in a pod or Job");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_server_stopped_for_the_backup_rolls_back_with_nothing_lost() {
    the_server_stopped_for_the_backup_rolls_back::<PgServer>("chaos-pg-down").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_server_stopped_for_the_backup_rolls_back_with_nothing_lost() {
    the_server_stopped_for_the_backup_rolls_back::<MariaDbServer>("chaos-my-down").await;
}

/// A roll back's restore that meets the server stopped (the operator's restore Job runs this
/// code): it fails saying the server does not answer, not that the backup is missing, and
/// changes nothing; once the server is back the same restore puts the backup in place.
async fn a_restore_meeting_the_server_stopped_changes_nothing<S: StoppableServer>() {
    let mut server = S::start();
    server.create_hub_database();
    let url = server.hub_url();
    make_database(OLD, &url);
    let before = open_and_dump(OLD, &url).expect("JupyterHub 4.1.6 opens its own database");
    let parsed = DatabaseUrl::parse(&url).expect("the URL");
    let backend = Backend::new(&parsed, BackupMethod::Clone, "jupyterhub_hubgrade_chaos_db")
        .expect("a clone backend");
    let backup = backend.back_up().await.expect("the clone");
    let databases = server.databases().await;

    server.stop();
    let error = backend
        .restore(&backup)
        .await
        .expect_err("a restore on a stopped server")
        .to_string();
    server.resume();
    let address = format!("127.0.0.1:{}", server.port());
    for said in [UNREACHABLE, &address] {
        assert!(error.contains(said), "no {said:?} in {error:?}");
    }
    assert!(!error.contains("does not exist"), "{error}");
    for secret in [
        support::postgres::PASSWORD,
        support::postgres::PASSWORD_IN_URL,
        support::mariadb::PASSWORD,
        support::mariadb::PASSWORD_IN_URL,
    ] {
        assert!(!error.contains(secret), "a password is in {error:?}");
    }
    assert_eq!(server.databases().await, databases, "a database was moved");
    assert_eq!(
        open_and_dump(OLD, &url).as_deref(),
        Ok(before.as_str()),
        "the hub's database changed"
    );

    let said = backend
        .restore(&backup)
        .await
        .expect("the restore once the server is back");
    assert!(said.contains("kept as jupyterhub_failed_"), "{said}");
    assert_eq!(
        open_and_dump(OLD, &url).as_deref(),
        Ok(before.as_str()),
        "the restored database differs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_restore_meeting_the_server_stopped_changes_nothing() {
    a_restore_meeting_the_server_stopped_changes_nothing::<PgServer>().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mariadb_restore_meeting_the_server_stopped_changes_nothing() {
    a_restore_meeting_the_server_stopped_changes_nothing::<MariaDbServer>().await;
}
