//! hubgrade upgrading a real JupyterHub for real, on the local cluster's real node: the
//! z2jh-shaped hub of examples/z2jh-hub/real/ (k8s-hub 3.3.8, JupyterHub 4.1.6) with a database
//! its running hub made through its REST API (≥ 200 users, a group, user tokens), upgraded to
//! k8s-hub 4.4.0 (JupyterHub 5.5.0), and the roll backs that test-only images provoke for real
//! (tests/images/: a migration that fails halfway, a hub that never starts). Nothing is played
//! by a stand-in: the Jobs run hubgrade's image and the hub's images in real containers. A
//! missing real node, registry or image fails these tests. They run one at a time.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use hubgrade::api::{HubUpgrade, HubUpgradeStatus};
use hubgrade::machine::Phase;
use serde_json::json;
use sqlx::Connection;
use support::jupyterhub::revision_of_file;
use support::real_hub::{
    BROKEN_MIGRATION_IMAGE, HealthWatch, NEVER_READY_IMAGE, NEW_HEAD, NEW_IMAGE, OLD_HEAD,
    OLD_IMAGE, Operator, RealHub, on_volume,
};

const USERS: usize = 210;
/// Generous for two busy cores; an upgrade here takes a few minutes at most.
const UPGRADE_LIMIT: Duration = Duration::from_secs(900);
const TERMINAL: &[Phase] = &[Phase::Succeeded, Phase::RolledBack, Phase::Failed];

/// The verified backup the upgrade recorded (see [`RealHub::assert_verified_backup`]).
fn assert_verified_backup(hub: &RealHub, upgrade: &HubUpgrade) -> std::path::PathBuf {
    hub.assert_verified_backup(upgrade)
}

/// The schema and the rows of users, groups, memberships and tokens, as text.
async fn contents(path: &Path) -> Vec<String> {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .read_only(true);
    let mut db = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut rows = Vec::new();
    for query in [
        "SELECT type || ' ' || name || ' ' || coalesce(sql, '') FROM sqlite_master ORDER BY name",
        "SELECT 'user ' || id || ' ' || name FROM users ORDER BY id",
        "SELECT 'group ' || id || ' ' || name FROM groups ORDER BY id",
        "SELECT 'member ' || user_id || ' ' || group_id FROM user_group_map ORDER BY 1",
        "SELECT 'token ' || id || ' ' || hashed || ' ' || coalesce(user_id, '-') FROM api_tokens ORDER BY id",
        "SELECT 'revision ' || version_num FROM alembic_version",
    ] {
        let found: Vec<(String,)> = sqlx::query_as(query)
            .fetch_all(&mut db)
            .await
            .unwrap_or_else(|e| panic!("{query} on {}: {e}", path.display()));
        rows.extend(found.into_iter().map(|(row,)| row));
    }
    db.close().await.expect("closing");
    rows
}

/// After a roll back: 4.1.6 answers again, on a database byte-identical to the backup (its
/// schema and rows compared first, for a readable failure), and every user, group and token
/// made before is there.
async fn assert_rolled_back(
    hub: &RealHub,
    upgrade: &HubUpgrade,
    population: &support::real_hub::Population,
) {
    assert_eq!(hub.hub_image().await, OLD_IMAGE);
    hub.wait_for_hub(Duration::from_secs(180)).await;
    let backup = assert_verified_backup(hub, upgrade);
    // Compared before any token is used again (using one writes its last activity).
    assert_eq!(
        contents(&hub.database()).await,
        contents(&backup).await,
        "the restored database differs from the backup"
    );
    // Byte for byte, too: the 4.1.6 hub starting on it writes nothing while nobody uses it.
    let checksum = |p: &Path| {
        hubgrade::db::file::size_and_checksum(p)
            .expect("checksum")
            .1
    };
    assert_eq!(
        checksum(&hub.database()),
        checksum(&backup),
        "the restored database is not byte-identical to the backup"
    );
    assert!(revision_of_file(&hub.database()).starts_with(OLD_HEAD));
    assert_eq!(hub.hub_version(), "4.1.6");
    hub.assert_population(population);
}

fn step_started(upgrade: &HubUpgrade, phase: Phase) -> SystemTime {
    let steps = &upgrade.status.as_ref().expect("status").progress.steps;
    let step = steps
        .iter()
        .find(|s| s.name == phase)
        .unwrap_or_else(|| panic!("no {phase:?} step in {steps:?}"));
    SystemTime::from(step.started_at)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_hub_is_upgraded_from_jupyterhub_4_to_5_with_its_users_tokens_and_sessions() {
    let hub = RealHub::new("real-upgrade", None, Operator::HostProcess).await;
    let population = hub.populate(USERS);
    hub.start_session_pod("user-001").await;
    let sessions = hub.session_pods().await;
    assert_eq!(
        sessions.len(),
        2,
        "the proxy and one user server: {sessions:?}"
    );

    let watch = HealthWatch::start(&hub.proxy_ip);
    hub.apply_upgrade("to-5", NEW_IMAGE, json!({})).await;
    let upgrade = hub.wait_for("to-5", TERMINAL, UPGRADE_LIMIT).await;
    let (down, up) = watch.outage(Duration::from_secs(120));
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );

    // JupyterHub 5.5.0 answers through the proxy, with everything 4.1.6 had.
    hub.wait_for_hub(Duration::from_secs(60)).await;
    assert_eq!(hub.hub_version(), "5.5.0");
    assert!(revision_of_file(&hub.database()).starts_with(NEW_HEAD));
    assert_verified_backup(&hub, &upgrade);
    hub.assert_population(&population);

    // Sessions survive: the proxy and the user server were never restarted or replaced.
    assert_eq!(
        hub.session_pods().await,
        sessions,
        "sessions through the upgrade"
    );

    // Downtime: what the status says is what a user saw, within 2 s.
    let since_scaling_down = |t: SystemTime| {
        t.duration_since(step_started(&upgrade, Phase::ScalingDown))
            .map(|d| d.as_secs_f64())
            .unwrap_or_else(|e| -e.duration().as_secs_f64())
    };
    eprintln!(
        "outage seen from {:.1} s to {:.1} s after ScalingDown began",
        since_scaling_down(down),
        since_scaling_down(up)
    );
    let seen = up.duration_since(down).expect("ordered").as_secs_f64();
    let recorded = status.downtime_seconds.expect("status.downtimeSeconds") as f64;
    eprintln!("downtime: seen {seen:.1} s, recorded {recorded} s");
    assert!(
        (recorded - seen).abs() <= 2.0,
        "status.downtimeSeconds is {recorded}, the outage seen through the proxy lasted {seen:.1} s"
    );

    // Pre-pull: the target image was on the hub's node before the hub went down (the
    // rehearsal ran it there), so the new hub pod did not pull it.
    let scaling_down = step_started(&upgrade, Phase::ScalingDown);
    let events = hub.events().await;
    let pulled: Vec<_> = events
        .iter()
        .filter(|e| e.2 == "Pulled" && e.3.contains(&format!("\"{NEW_IMAGE}\"")))
        .collect();
    let first = pulled
        .first()
        .unwrap_or_else(|| panic!("no Pulled event for {NEW_IMAGE}: {events:#?}"));
    assert!(
        first.0 <= scaling_down && first.1.starts_with("Pod/hubgrade-"),
        "the first Pulled event of {NEW_IMAGE} ({first:?}) is not a Job's before ScalingDown"
    );
    let new_hub_pulls: Vec<_> = events
        .iter()
        .filter(|e| e.1.starts_with("Pod/hub-") && e.3.contains(NEW_IMAGE))
        .filter(|e| e.2 == "Pulling" || (e.2 == "Pulled" && !e.3.contains("already present")))
        .collect();
    assert!(
        new_hub_pulls.is_empty(),
        "the new hub pod pulled the image during the downtime: {new_hub_pulls:?}"
    );
    eprintln!("scenario took {:?}", hub.started.elapsed());

    // The ledger's prediction, checked on the real node: a second hub like the first, upgraded
    // the same way with the same ledger, is predicted from the first's measured downtime.
    let ledger = hub.ledger_url.clone();
    let first = hub
        .ledger_record("to-5")
        .expect("the first upgrade in the ledger");
    assert_eq!(first.downtime_seconds, status.downtime_seconds);
    hub.delete_namespace().await;
    drop(hub);
    let mut second = RealHub::new("real-predicted", None, Operator::HostProcess).await;
    second.use_ledger(&ledger);
    let population = second.populate(USERS);
    second.apply_upgrade("to-5", NEW_IMAGE, json!({})).await;
    let upgrade = second.wait_for("to-5", TERMINAL, UPGRADE_LIMIT).await;
    let measured = upgrade
        .status
        .as_ref()
        .and_then(|s| s.downtime_seconds)
        .unwrap_or_else(|| {
            panic!(
                "no measured downtime; operator log:\n{}",
                second.operator_log()
            )
        });
    second.assert_population(&population);
    let record = second
        .ledger_record("to-5")
        .expect("the second upgrade in the ledger");
    let predicted = record
        .predicted_downtime_seconds
        .unwrap_or_else(|| panic!("no prediction: {:?}", record.prediction_basis));
    assert_eq!(Some(predicted), first.downtime_seconds);
    eprintln!(
        "downtime predicted {predicted} s ({}), measured {measured} s",
        record.prediction_basis.unwrap_or_default()
    );
    assert!(
        (measured - predicted).abs() <= (predicted / 2).max(10),
        "predicted {predicted} s, measured {measured} s"
    );
    second.delete_namespace().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_that_really_fails_is_rolled_back_to_4_on_the_backed_up_database() {
    let hub = RealHub::new("real-badmig", None, Operator::HostProcess).await;
    let population = hub.populate(USERS);
    hub.start_session_pod("user-002").await;
    let sessions = hub.session_pods().await;
    // No rehearsal: it would catch the failing migration before the hub is touched.
    hub.apply_upgrade(
        "to-broken",
        BROKEN_MIGRATION_IMAGE,
        json!({"migration": {"rehearse": false}}),
    )
    .await;
    let upgrade = hub.wait_for("to-broken", TERMINAL, UPGRADE_LIMIT).await;
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::RolledBack,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );
    assert!(status.progress.migration_started && !status.progress.migration_succeeded);
    assert!(status.progress.database_restored, "{status:?}");
    // The migration really ran and really failed in the Job's container.
    let migrations = hub.jobs_for("migration").await;
    assert_eq!(migrations.len(), 1);
    assert!(
        migrations[0]
            .status
            .as_ref()
            .and_then(|s| s.failed)
            .unwrap_or(0)
            > 0,
        "the migration Job did not fail: {:?}",
        migrations[0].status
    );
    assert_rolled_back(&hub, &upgrade, &population).await;
    assert_eq!(
        hub.session_pods().await,
        sessions,
        "sessions through the roll back"
    );
    eprintln!("scenario took {:?}", hub.started.elapsed());
    hub.delete_namespace().await;
}

/// Upgrades to the image whose hub never starts (1 min rollout timeout) and asserts it ended
/// `RolledBack`.
async fn roll_back_a_never_ready_hub(hub: &RealHub) -> (HubUpgrade, HubUpgradeStatus) {
    hub.apply_upgrade(
        "to-never-ready",
        NEVER_READY_IMAGE,
        json!({"rollout": {"timeout": "1m"}}),
    )
    .await;
    let upgrade = hub
        .wait_for("to-never-ready", TERMINAL, UPGRADE_LIMIT)
        .await;
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::RolledBack,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );
    (upgrade, status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_hub_that_never_becomes_ready_is_rolled_back_to_4_on_the_backed_up_database() {
    let hub = RealHub::new("real-noready", None, Operator::HostProcess).await;
    let population = hub.populate(USERS);
    let sessions = hub.session_pods().await;
    let (upgrade, status) = roll_back_a_never_ready_hub(&hub).await;
    // The migration itself worked: only the new hub failed.
    assert!(status.progress.migration_succeeded, "{status:?}");
    assert_eq!(
        status
            .progress
            .to
            .as_ref()
            .and_then(|t| t.revision.as_deref()),
        Some(NEW_HEAD)
    );
    assert_rolled_back(&hub, &upgrade, &population).await;
    assert_eq!(
        hub.session_pods().await,
        sessions,
        "the proxy through the roll back"
    );
    eprintln!("scenario took {:?}", hub.started.elapsed());
    hub.delete_namespace().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_during_the_real_migration_still_succeeds_with_one_migration_job() {
    let mut hub = RealHub::new("real-crash", None, Operator::HostProcess).await;
    let population = hub.populate(USERS);
    hub.apply_upgrade("to-5", NEW_IMAGE, json!({"migration": {"rehearse": false}}))
        .await;
    hub.wait_for("to-5", &[Phase::Migrating], UPGRADE_LIMIT)
        .await;
    // Killed once the migration's pod exists, while `upgrade-db` runs or is about to.
    let pods = hub.pods();
    support::wait_until(
        Duration::from_secs(120),
        "the migration Job's pod",
        || async {
            pods.list(&kube::api::ListParams::default().labels("hubgrade.io/step=migration"))
                .await
                .is_ok_and(|l| !l.items.is_empty())
        },
    )
    .await;
    hub.kill_operator();
    tokio::time::sleep(Duration::from_secs(3)).await;
    hub.start_operator();
    let upgrade = hub.wait_for("to-5", TERMINAL, UPGRADE_LIMIT).await;
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );
    assert_eq!(
        hub.jobs_for("migration").await.len(),
        1,
        "exactly one migration Job"
    );
    hub.wait_for_hub(Duration::from_secs(60)).await;
    assert_eq!(hub.hub_version(), "5.5.0");
    assert!(revision_of_file(&hub.database()).starts_with(NEW_HEAD));
    hub.assert_population(&population);
    eprintln!("scenario took {:?}", hub.started.elapsed());
    hub.delete_namespace().await;
}

/// z2jh's `hub.db.pvc.subPath`: the hub sees a folder of the claim; the Jobs must mount the
/// same folder. The operator is installed by `helm install` from its image.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_on_a_sub_path_claim_is_rolled_back_then_upgraded_by_the_helm_installed_operator() {
    let hub = RealHub::new("real-subpath", Some("hub-db"), Operator::Helm).await;
    assert!(hub.volume.ends_with("hub-db"));
    let population = hub.populate(USERS);

    let (upgrade, _) = roll_back_a_never_ready_hub(&hub).await;
    assert_rolled_back(&hub, &upgrade, &population).await;

    hub.apply_upgrade("to-5", NEW_IMAGE, json!({})).await;
    let upgrade = hub.wait_for("to-5", TERMINAL, UPGRADE_LIMIT).await;
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );
    hub.wait_for_hub(Duration::from_secs(60)).await;
    assert_eq!(hub.hub_version(), "5.5.0");
    assert!(revision_of_file(&hub.database()).starts_with(NEW_HEAD));
    assert_verified_backup(&hub, &upgrade);
    hub.assert_population(&population);
    eprintln!("scenario took {:?}", hub.started.elapsed());
    hub.delete_namespace().await;
}

/// `migration.onFailure: FreshDatabase` on the real node: the migration really fails, the
/// failed file is moved aside next to the verified backup, and the new hub (k8s-hub 4.4.0 with
/// the failing migration) really starts on a new, empty database: it answers as 5.5.0 and knows
/// none of the old users, while the backup still holds them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_migration_with_fresh_database_starts_the_new_hub_on_a_new_database() {
    let hub = RealHub::new("real-fresh", None, Operator::HostProcess).await;
    let population = hub.populate(20);
    hub.apply_upgrade(
        "to-broken",
        BROKEN_MIGRATION_IMAGE,
        json!({"migration": {"rehearse": false, "onFailure": "FreshDatabase"}}),
    )
    .await;
    let upgrade = hub.wait_for("to-broken", TERMINAL, UPGRADE_LIMIT).await;
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );
    let said = status
        .progress
        .fresh_database
        .clone()
        .expect("said in the status");
    assert_eq!(hub.hub_image().await, BROKEN_MIGRATION_IMAGE);
    hub.wait_for_hub(Duration::from_secs(180)).await;
    assert_eq!(hub.hub_version(), "5.5.0");
    let users = hub.user_names();
    assert!(
        population.users.iter().all(|u| !users.contains(u)),
        "the new hub knows old users: {users:?}"
    );
    // The verified backup, as 4.1.6 left it, with every user.
    let backup = assert_verified_backup(&hub, &upgrade);
    let rows = contents(&backup).await;
    for user in &population.users {
        assert!(
            rows.iter().any(|r| r.ends_with(&format!(" {user}"))),
            "{user} not in the backup"
        );
    }
    // The half-migrated database, kept where the status says.
    let moved = said
        .split_whitespace()
        .find(|w| w.ends_with("-failed.sqlite") || w.ends_with("-failed.sqlite;"))
        .map(|w| w.trim_end_matches(';'))
        .unwrap_or_else(|| panic!("no moved file in {said:?}"));
    assert!(
        on_volume(&hub.volume, moved).is_file(),
        "{moved} is not on the volume"
    );
    // The new database is a new file, not the old one.
    assert_ne!(
        hubgrade::db::file::size_and_checksum(&hub.database())
            .expect("the new database")
            .1,
        hubgrade::db::file::size_and_checksum(&backup)
            .expect("the backup")
            .1
    );
    eprintln!("scenario took {:?}", hub.started.elapsed());
    hub.delete_namespace().await;
}
