//! The operator on a z2jh hub whose database is PostgreSQL (`hub.db.type: postgres`), on the
//! local cluster: the hub's objects as z2jh renders them for that type (no claim; the hub
//! Secret holds `values.yaml` with `hub.db.url` and the key `hub.db.password`), a real
//! PostgreSQL server with a database made by JupyterHub 4.1.6, and the KWOK stand-in playing
//! the Jobs with hubgrade's own agent code (the migration a stand-in that really changes the
//! database). Both ways, with the operator SIGKILLed once in every phase.

mod support;

use hubgrade::db::url::DatabaseUrl;
use hubgrade::machine::{Outcome, Phase};
use serde_json::json;
use sqlx::Connection;
use support::e2e::{Hub, ORIGINAL_IMAGE, with_template_annotations};
use support::jupyterhub::{OLD, make_database};
use support::postgres::{PASSWORD, PgServer};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
/// The revision the stand-in migration leaves (tests/cluster/agent_standin.rs).
const MIGRATED_REVISION: &str = "4621fec11365";

/// examples/z2jh-hub/hub.yaml as z2jh renders it for `hub.db.type: postgres`: the values name
/// the server, the password is the Secret's key `hub.db.password`, no claim is mounted and
/// the hub is not started with --upgrade-db.
fn on_postgres(url: &str) -> impl FnOnce(String) -> String {
    support::e2e::on_server("postgres", (url.to_string(), Some(PASSWORD)))
}

/// A server with the hub's database `jupyterhub`, made by JupyterHub 4.1.6.
fn server() -> PgServer {
    let server = PgServer::start();
    server.sql("CREATE DATABASE jupyterhub");
    make_database(OLD, &server.url("jupyterhub"));
    server
}

async fn connect(server: &PgServer, database: &str) -> sqlx::PgConnection {
    let DatabaseUrl::Postgres(url) = DatabaseUrl::parse(&server.url(database)).expect("url") else {
        panic!("not a PostgreSQL URL");
    };
    sqlx::PgConnection::connect_with(&url.pg_options().expect("options"))
        .await
        .unwrap_or_else(|e| panic!("connecting to {database}: {e}"))
}

/// Every table's row count, the users table's columns and the revision: what a restore must
/// give back and a migration changes. The connection is closed before returning (a clone
/// needs the database to itself).
async fn contents(server: &PgServer, database: &str) -> Vec<String> {
    let mut db = connect(server, database).await;
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&mut db)
    .await
    .expect("tables");
    let mut found = Vec::new();
    for (table,) in tables {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\""
        )))
        .fetch_one(&mut db)
        .await
        .expect("count");
        found.push(format!("{table}: {count} rows"));
    }
    let columns: Vec<(String,)> = sqlx::query_as(
        "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'users' ORDER BY column_name",
    )
    .fetch_all(&mut db)
    .await
    .expect("columns");
    found.push(format!(
        "users columns: {:?}",
        columns.into_iter().map(|(c,)| c).collect::<Vec<_>>()
    ));
    found.push(format!("revision {}", revision(&mut db).await));
    db.close().await.expect("closing");
    found
}

async fn revision(db: &mut sqlx::PgConnection) -> String {
    let (revision,): (String,) = sqlx::query_as("SELECT version_num FROM alembic_version")
        .fetch_one(db)
        .await
        .expect("revision");
    revision
}

fn databases(server: &PgServer) -> Vec<String> {
    let output = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "hubgrade",
        ])
        .args([
            "-d",
            "postgres",
            "-Atc",
            "SELECT datname FROM pg_database ORDER BY 1",
        ])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .expect("psql");
    assert!(
        output.status.success(),
        "psql: {}",
        support::stderr(&output)
    );
    support::stdout(&output)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_hub_is_upgraded_through_kills_in_every_phase() {
    let server = server();
    let url = server.plain_url("jupyterhub");
    let edit = |yaml: String| {
        with_template_annotations("kwok.hubgrade.io/delay: 1s")(on_postgres(&url)(yaml))
    };
    // The clone takes a second, so a kill surely lands while it runs.
    let mut hub = Hub::with_slow_agents("e2e-pg", edit, "1s").await;
    let before = contents(&server, "jupyterhub").await;
    // `hubgrade plan` says what will happen, without connecting to the server.
    let (report, code) = hub.plan("to-4-2-0", TARGET);
    assert_eq!(code, 0, "{report}");
    let database = report["layout"]["database"].as_str().unwrap_or_default();
    assert!(
        database.starts_with("PostgreSQL (URL from hub.db.url"),
        "{report}"
    );
    assert!(report["layout"]["claim"].is_null(), "{report}");
    assert!(
        report["backup"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Clone of the PostgreSQL"),
        "{report}"
    );
    let upgrade = hub
        .apply_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
        )
        .await;
    hub.ends_through_kills("to-4-2-0", Phase::Succeeded, &["BackingUp", "Migrating"])
        .await;
    assert_eq!(hub.hub_image().await, TARGET);
    let status = hub
        .upgrades()
        .get("to-4-2-0")
        .await
        .expect("upgrade")
        .status
        .expect("status");
    // The backup: a verified clone on the server, named after the database and the upgrade.
    let backup = status.progress.backup.clone().expect("a backup");
    let uid: String = upgrade
        .metadata
        .uid
        .expect("uid")
        .chars()
        .filter(|c| *c != '-')
        .take(8)
        .collect();
    assert_eq!(backup.reference, format!("jupyterhub_hubgrade_{uid}_db"));
    assert_eq!(backup.method.to_string(), "Clone");
    assert!(backup.verified);
    assert!(databases(&server).contains(&backup.reference));
    assert_eq!(contents(&server, &backup.reference).await, before);
    // The migration really ran on the hub's database.
    let after = contents(&server, "jupyterhub").await;
    assert_eq!(after.last(), Some(&format!("revision {MIGRATED_REVISION}")));
    assert!(after.iter().any(|l| l.contains("standin_migrated")));
    // No rehearsal, and the status says why.
    let rehearsal = status
        .progress
        .steps
        .iter()
        .find(|s| s.name == Phase::Rehearsal)
        .expect("the rehearsal step");
    assert_eq!(rehearsal.outcome, Some(Outcome::Skipped));
    assert!(
        rehearsal
            .message
            .contains("PostgreSQL database is copied only once the hub is stopped"),
        "{}",
        rehearsal.message
    );
    assert!(hub.jobs_for("rehearsal").await.is_empty());
    for step in ["backup", "migration"] {
        assert_eq!(hub.jobs_for(step).await.len(), 1, "{step} Jobs");
    }
    // The password reached no Job spec, log, Event or status.
    let jobs = serde_json::to_string(
        &hub.jobs()
            .list(&Default::default())
            .await
            .expect("jobs")
            .items,
    )
    .expect("json");
    let events = format!("{:?}", hub.event_reasons("to-4-2-0").await);
    let status_text = serde_json::to_string(&status).expect("json");
    for (what, text) in [
        ("a Job", jobs),
        ("an Event", events),
        ("the status", status_text),
        ("the operator's log", hub.operator_log()),
    ] {
        assert!(!text.contains(PASSWORD), "the password is in {what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_hub_whose_migration_fails_half_way_is_restored_through_kills() {
    let server = server();
    let url = server.plain_url("jupyterhub");
    let edit = |yaml: String| {
        with_template_annotations(
            "kwok.hubgrade.io/delay: 1s, kwok.hubgrade.io/migration: fails-halfway",
        )(on_postgres(&url)(yaml))
    };
    // The clone and the restore take a second, so the kills surely land while they run.
    let mut hub = Hub::with_slow_agents("e2e-pgfail", edit, "1s").await;
    let before = contents(&server, "jupyterhub").await;
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    hub.ends_through_kills(
        "to-4-2-0",
        Phase::RolledBack,
        &["BackingUp", "Migrating", "RollingBack"],
    )
    .await;
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    // Identical row counts in every table, the old columns and revision.
    assert_eq!(contents(&server, "jupyterhub").await, before);
    // The half-migrated database is kept, named in an Event.
    let kept: Vec<String> = databases(&server)
        .into_iter()
        .filter(|d| d.starts_with("jupyterhub_failed_"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let failed = contents(&server, &kept[0]).await;
    assert!(
        failed.iter().any(|l| l.contains("standin_migrated")),
        "{failed:?}"
    );
    let events = hub.event_reasons("to-4-2-0").await;
    assert!(
        events
            .iter()
            .any(|(_, reason, note)| reason == "DatabaseRestored" && note.contains(&kept[0])),
        "{events:?}"
    );
    for step in ["backup", "migration", "restore"] {
        assert_eq!(hub.jobs_for(step).await.len(), 1, "{step} Jobs");
    }
}

/// Preflight asks the server: another client connected to the hub's database (the clone
/// backup would be refused once the hub is stopped) is named, and the hub is never touched.
#[tokio::test(flavor = "multi_thread")]
async fn another_client_of_the_hubs_database_is_named_in_preflight() {
    let server = server();
    let url = server.plain_url("jupyterhub");
    let hub = Hub::new("e2e-pgbusy", on_postgres(&url)).await;
    // Through the socket: on KWOK the hub's node address is 127.0.0.1, whose clients count as
    // the hub's.
    let mut session = server.socket_session("jupyterhub", "nightly-report");
    support::wait_until(
        std::time::Duration::from_secs(10),
        "the other client to connect",
        || async {
            let mut db = connect(&server, "postgres").await;
            let (count,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'nightly-report'",
            )
            .fetch_one(&mut db)
            .await
            .expect("count");
            db.close().await.expect("close");
            count == 1
        },
    )
    .await;
    let status = hub
        .run_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            std::time::Duration::from_secs(60),
        )
        .await;
    let _ = session.kill();
    let _ = session.wait();
    support::e2e::assert_phase(&status, Phase::Failed);
    assert!(
        status
            .progress
            .message
            .contains("besides the hub, 1 client is connected")
            && status
                .progress
                .message
                .contains("a local socket (nightly-report)"),
        "{}",
        status.progress.message
    );
    assert!(!status.progress.message.contains(PASSWORD));
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(hub.hub_available().await, "the hub was touched");
    assert!(
        hub.jobs()
            .list(&Default::default())
            .await
            .expect("jobs")
            .items
            .is_empty()
    );
}

/// A server that does not answer fails Preflight, saying so, with nothing touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_does_not_answer_fails_preflight() {
    let server = server();
    let url = server.plain_url("jupyterhub");
    let hub = Hub::new("e2e-pgdown", on_postgres(&url)).await;
    server.stop();
    let status = hub
        .run_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            std::time::Duration::from_secs(60),
        )
        .await;
    support::e2e::assert_phase(&status, Phase::Failed);
    assert!(
        status
            .progress
            .message
            .contains("PostgreSQL database does not answer"),
        "{}",
        status.progress.message
    );
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(
        hub.jobs()
            .list(&Default::default())
            .await
            .expect("jobs")
            .items
            .is_empty()
    );
}

/// `backup.method: Dump` to a claim the spec names: pg_dump's file on the claim, with its
/// checksum; a migration that fails half-way is rolled back from it (pg_restore into a new
/// database), the failed database kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_dump_on_a_named_claim_restores_a_failed_migration() {
    let server = server();
    let url = server.plain_url("jupyterhub");
    let edit = |yaml: String| {
        with_template_annotations("kwok.hubgrade.io/migration: fails-halfway")(on_postgres(&url)(
            yaml,
        ))
    };
    let hub = Hub::new("e2e-pgdump", edit).await;
    // The claim for dumps: on KWOK, a static volume whose folder the stand-in uses.
    let ns = hub.ns().to_string();
    let folder = support::repo()
        .join("target/e2e/volumes")
        .join(&ns)
        .join("dumps");
    std::fs::create_dir_all(&folder).expect("dumps folder");
    let claim = format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: {ns}-dumps}}\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  hostPath: {{path: {}}}\n  claimRef: {{namespace: {ns}, name: dumps}}\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: dumps, namespace: {ns}}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: \"\"\n  volumeName: {ns}-dumps\n  resources: {{requests: {{storage: 1Gi}}}}\n",
        folder.display()
    );
    let applied = support::kubectl_with_input(&["apply", "-f", "-"], &claim);
    assert!(applied.status.success(), "{}", support::stderr(&applied));
    let before = contents(&server, "jupyterhub").await;
    let status = hub
        .run_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
                   "backup": {"method": "Dump", "dumpClaim": "dumps"}}),
            std::time::Duration::from_secs(120),
        )
        .await;
    support::e2e::assert_phase(&status, Phase::RolledBack);
    let backup = status.progress.backup.clone().expect("a backup");
    assert_eq!(backup.method.to_string(), "Dump");
    let file = backup
        .reference
        .strip_prefix("/hubgrade-dump/")
        .map(|name| folder.join(name))
        .unwrap_or_else(|| panic!("the dump is not on its claim: {}", backup.reference));
    let (size, checksum) = hubgrade::db::file::size_and_checksum(&file).expect("the dump");
    assert_eq!(
        (Some(size), Some(checksum)),
        (backup.size_bytes, backup.checksum)
    );
    assert_eq!(contents(&server, "jupyterhub").await, before);
    let kept = databases(&server)
        .into_iter()
        .filter(|d| d.starts_with("jupyterhub_failed_"))
        .count();
    assert_eq!(kept, 1);
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
}
