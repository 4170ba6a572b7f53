//! `migration.onFailure: FreshDatabase` on the local cluster (KWOK stand-in agent, the
//! migration a stand-in that fails half-way): the verified backup stays, the half-migrated
//! SQLite file is moved aside, the hub rolls out on the target image to make a new database,
//! and the status and a Warning Event say so. A PostgreSQL hub cannot ask for it.

mod support;

use std::time::Duration;

use hubgrade::machine::Phase;
use serde_json::json;
use sqlx::Connection;
use support::e2e::{Hub, assert_phase, checksum, with_template_annotations};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";

async fn users_columns(path: &std::path::Path) -> Vec<String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut db = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let columns: Vec<(String,)> = sqlx::query_as("SELECT name FROM pragma_table_info('users')")
        .fetch_all(&mut db)
        .await
        .expect("columns");
    db.close().await.expect("close");
    columns.into_iter().map(|(c,)| c).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_migration_moves_the_database_aside_and_the_hub_starts_fresh() {
    let hub = Hub::new(
        "e2e-fresh",
        with_template_annotations("kwok.hubgrade.io/migration: fails-halfway"),
    )
    .await;
    let original = checksum(&hub.database());
    let status = hub
        .run_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
                   "migration": {"rehearse": false, "onFailure": "FreshDatabase"}}),
            Duration::from_secs(120),
        )
        .await;
    assert_phase(&status, Phase::Succeeded);
    assert_eq!(hub.hub_image().await, TARGET);
    assert!(
        status.progress.message.contains("on a fresh database"),
        "{}",
        status.progress.message
    );
    let said = status
        .progress
        .fresh_database
        .clone()
        .expect("said in the status");
    // The verified backup is kept, as it was before the migration.
    let backup = status.progress.backup.clone().expect("a backup");
    assert!(said.contains(&backup.reference), "{said}");
    let backup_file = support::real_hub::on_volume(&hub.volume, &backup.reference);
    assert_eq!(checksum(&backup_file), original);
    // The half-migrated database is kept aside, where the status says.
    let moved = hub.volume.join("hubgrade-backups").join(format!(
        "{}-failed.sqlite",
        backup
            .reference
            .rsplit('/')
            .next()
            .and_then(|name| name.strip_suffix("-db.sqlite"))
            .expect("hubgrade-<uid>-db.sqlite")
    ));
    assert!(
        said.contains(
            &moved
                .display()
                .to_string()
                .replace(&hub.volume.display().to_string(), "/srv/jupyterhub")
        ),
        "{said}"
    );
    assert!(
        users_columns(&moved)
            .await
            .contains(&"standin_migrated".to_string())
    );
    // Nothing is left at the database's path: the new hub makes its database there.
    assert!(
        !hub.database().exists(),
        "the failed database is still in place"
    );
    let events = hub.event_reasons("to-4-2-0").await;
    assert!(
        events.iter().any(|(kind, reason, note)| kind == "Warning"
            && reason == "FreshDatabase"
            && note == &said),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_database_cannot_ask_for_a_fresh_one() {
    let hub = Hub::new("e2e-freshpg", |yaml| yaml).await;
    let upgrade: hubgrade::api::HubUpgrade = serde_json::from_value(json!({
        "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
        "metadata": {"name": "to-4-2-0"},
        "spec": {"hub": {"deployment": "hub"}, "targetImage": TARGET,
                 "database": {"type": "PostgreSQL"},
                 "migration": {"onFailure": "FreshDatabase"}}
    }))
    .expect("a HubUpgrade");
    let refused = hub
        .upgrades()
        .create(&Default::default(), &upgrade)
        .await
        .expect_err("refused by the API server");
    assert!(
        refused
            .to_string()
            .contains("migration.onFailure FreshDatabase is for SQLite databases"),
        "{refused}"
    );
}
