//! hubgrade upgrading a real z2jh hub whose database is on a server, on the local cluster's
//! real node: the hub of examples/z2jh-hub/real/ (k8s-hub 3.3.8, JupyterHub 4.1.6) with
//! `hub.db.type: postgres` or `mysql`, its database a fresh one on a PostgreSQL or MariaDB
//! server this machine runs for the node's pods (tests/support/real_hub.rs,
//! `RealHub::new_on_server`), filled through the hub's REST API. One hub per server: a
//! migration that really fails halfway is rolled back onto the cloned database (the failed one
//! kept), then the hub is upgraded to k8s-hub 4.4.0 (JupyterHub 5.5.0). A missing server binary,
//! real node, registry or image fails these tests.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hubgrade::machine::Phase;
use serde_json::json;
use support::real_hub::{
    BROKEN_MIGRATION_IMAGE, NEW_HEAD, NEW_IMAGE, OLD_HEAD, OLD_IMAGE, Operator, RealHub, ServerDb,
};

const USERS: usize = 210;
/// Generous for two busy cores; an upgrade here takes a few minutes at most.
const UPGRADE_LIMIT: Duration = Duration::from_secs(900);
const TERMINAL: &[Phase] = &[Phase::Succeeded, Phase::RolledBack, Phase::Failed];

/// Rolls back a real failing migration, then upgrades for real, on one hub whose database is
/// on `server`.
async fn a_hub_on_a_server_is_rolled_back_then_upgraded(prefix: &str, server: ServerDb) {
    let kind = server.hub_db_type();
    let hub = RealHub::new_on_server(prefix, server, Operator::HostProcess).await;
    let db = hub.server_database();
    eprintln!(
        "{kind}: hub on database {} started after {:?}",
        db.name(),
        hub.started.elapsed()
    );

    // a) A populated hub: every table's row count and the revision, read on the server.
    let populating = Instant::now();
    let population = hub.populate(USERS);
    eprintln!("{kind}: populated in {:?}", populating.elapsed());
    let users = db.user_names().await;
    for user in &population.users {
        assert!(
            users.contains(user),
            "{user} is not in {}'s users table",
            db.name()
        );
    }
    let before: BTreeMap<String, i64> = db.row_counts().await;
    assert!(
        before.get("users").copied().unwrap_or(0) >= USERS as i64,
        "{before:?}"
    );
    let revision = db.revision().await;
    assert_eq!(revision, OLD_HEAD);
    eprintln!("{kind}: {} tables, revision {revision}", before.len());

    // b) A migration that really fails halfway: rolled back onto the backup, the failed
    // database kept. `spec.database` is left to detection (the hub Secret's values.yaml).
    let upgrading = Instant::now();
    hub.apply_upgrade("to-broken", BROKEN_MIGRATION_IMAGE, json!({}))
        .await;
    let upgrade = hub.wait_for("to-broken", TERMINAL, UPGRADE_LIMIT).await;
    let status = upgrade.status.clone().expect("status");
    eprintln!(
        "{kind}: the failing upgrade ended {:?} after {:?}",
        status.progress.phase,
        upgrading.elapsed()
    );
    assert_eq!(
        status.progress.phase,
        Phase::RolledBack,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );
    assert!(status.progress.migration_started && !status.progress.migration_succeeded);
    assert!(status.progress.database_restored, "{status:?}");
    assert_eq!(hub.hub_image().await, OLD_IMAGE);
    hub.wait_for_hub(Duration::from_secs(180)).await;
    assert_eq!(hub.hub_version(), "4.1.6");
    // Counted before any token is used again (using one writes its last activity).
    assert_eq!(
        db.row_counts().await,
        before,
        "the restored database's row counts differ from the populated one's"
    );
    assert_eq!(db.revision().await, OLD_HEAD);
    hub.assert_population(&population);
    let backup = status.progress.backup.clone().expect("a backup in status");
    let databases = db.databases().await;
    assert!(
        databases.contains(&backup.reference),
        "the backup {} is not a database on the server: {databases:?}",
        backup.reference
    );
    let failed = format!("{}_failed_", db.name());
    assert!(
        databases.iter().any(|d| d.starts_with(&failed)),
        "no database {failed}<time> kept from the failed migration: {databases:?}"
    );

    // c) The real upgrade to 5.5.0, on the restored database, backed up this time by a dump
    // (pg_dump / mysqldump in hubgrade's image) on a claim the operator makes.
    let upgrading = Instant::now();
    hub.apply_upgrade("to-5", NEW_IMAGE, json!({"backup": {"method": "Dump"}}))
        .await;
    let upgrade = hub.wait_for("to-5", TERMINAL, UPGRADE_LIMIT).await;
    let status = upgrade.status.clone().expect("status");
    eprintln!(
        "{kind}: the upgrade to 5.5.0 ended {:?} after {:?} (downtime {:?} s)",
        status.progress.phase,
        upgrading.elapsed(),
        status.downtime_seconds
    );
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );
    assert_eq!(hub.hub_image().await, NEW_IMAGE);
    hub.wait_for_hub(Duration::from_secs(120)).await;
    assert_eq!(hub.hub_version(), "5.5.0");
    let revision = db.revision().await;
    assert!(
        revision.starts_with(NEW_HEAD),
        "revision {revision} after the upgrade"
    );
    hub.assert_population(&population);
    // The dump: on the claim the operator made for it, owned by the upgrade, with the
    // recorded checksum.
    let backup = status.progress.backup.clone().expect("the dump");
    assert_eq!(backup.method.to_string(), "Dump");
    assert!(backup.verified && backup.checksum.is_some(), "{backup:?}");
    let uid = upgrade.metadata.uid.clone().expect("uid");
    let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    let name = format!("hubgrade-{short}-dump");
    let claims: kube::Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        kube::Api::namespaced(hub.client.clone(), hub.ns());
    let claim = claims.get(&name).await.expect("the dump's claim");
    let owners = claim.metadata.owner_references.unwrap_or_default();
    assert!(owners.iter().any(|o| o.uid == uid), "{owners:?}");
    // Made with the configuration's copy, before the hub stopped, so that the scheduler knows
    // it when the backup's pod comes (one made in the same instant left that pod unscheduled
    // for five minutes with the hub down).
    let log = hub.operator_log();
    let made = log
        .find(&format!("made the claim for the dump claim={name}"))
        .unwrap_or_else(|| panic!("no claim {name} made before the backup:\n{log}"));
    let scaled = log
        .find(&format!(
            "upgrade={}/to-5 phase=ScalingDown action=ScaleHub {{ replicas: 0 }}",
            hub.ns()
        ))
        .unwrap_or_else(|| panic!("to-5 never scaled the hub to zero:\n{log}"));
    assert!(
        made < scaled,
        "the dump's claim was made after the hub was told to stop:\n{log}"
    );
    let folder = support::real_hub::claim_folder(&hub.client, hub.ns(), &name).await;
    let file = folder.join(backup.reference.trim_start_matches("/hubgrade-dump/"));
    let (size, checksum) = hubgrade::db::file::size_and_checksum(&file)
        .unwrap_or_else(|e| panic!("the dump {}: {e}", file.display()));
    assert_eq!(
        (Some(size), Some(checksum)),
        (backup.size_bytes, backup.checksum)
    );
    eprintln!("{kind}: scenario took {:?}", hub.started.elapsed());
    hub.delete_namespace().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_hub_on_postgresql_is_rolled_back_from_a_failed_migration_then_upgraded_to_5() {
    a_hub_on_a_server_is_rolled_back_then_upgraded("real-pg", ServerDb::postgres()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_hub_on_mariadb_is_rolled_back_from_a_failed_migration_then_upgraded_to_5() {
    a_hub_on_a_server_is_rolled_back_then_upgraded("real-mariadb", ServerDb::mariadb()).await;
}
