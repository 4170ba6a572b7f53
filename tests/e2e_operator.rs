//! The operator end to end on the local cluster: a z2jh-style SQLite hub upgraded, rolled back
//! when the migration fails or the new hub never becomes Ready, surviving SIGKILL in every
//! phase, serialising two upgrades of one hub, and refusing bad upgrades without touching it.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use hubgrade::machine::Phase;
use serde_json::json;
use support::e2e::{Hub, ORIGINAL_IMAGE, assert_phase, checksum, with_template_annotations};
use support::{free_port, try_http_get};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const LIMIT: Duration = Duration::from_secs(120);
const TERMINAL: [Phase; 3] = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];

fn job_complete(job: &k8s_openapi::api::batch::v1::Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_example_hub_is_upgraded() {
    let hub = Hub::new("e2e-ok", |yaml| yaml).await;
    let original = checksum(&hub.database());
    // Six backups of earlier upgrades: with the default backup.retain of 5, the two oldest go.
    let backups = hub.volume.join("hubgrade-backups");
    std::fs::create_dir_all(&backups).expect("backups folder");
    for i in 0..6u64 {
        let old = backups.join(format!("hubgrade-0ld0000{i}-db.sqlite"));
        std::fs::write(&old, b"an earlier backup").expect("old backup");
        let time = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + i);
        let file = std::fs::File::options()
            .write(true)
            .open(&old)
            .expect("old backup");
        file.set_modified(time).expect("mtime");
    }
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    let done = hub.wait_for("to-4-2-0", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{}",
        status.progress.message
    );

    // The hub runs the target image with its original replicas.
    assert_eq!(hub.hub_image().await, TARGET);
    assert_eq!(hub.hub().await.spec.and_then(|s| s.replicas), Some(1));
    assert!(hub.hub_available().await);
    let from = status.progress.from.clone().expect("original recorded");
    assert_eq!((from.image.as_str(), from.replicas), (ORIGINAL_IMAGE, 1));

    // Each Job ran once and completed (the operator goes on when the Job's pod Succeeded; the
    // Job controller marks the Job Complete moments later).
    for step in ["rehearsal", "backup", "migration"] {
        let jobs = hub.jobs_for(step).await;
        assert_eq!(jobs.len(), 1, "{step} Jobs");
        support::wait_until(
            Duration::from_secs(30),
            &format!("the {step} Job to complete"),
            || async { hub.jobs_for(step).await.first().is_some_and(job_complete) },
        )
        .await;
    }
    assert!(hub.jobs_for("restore").await.is_empty());

    // The backup is recorded with its size and checksum, and is the database's exact copy.
    let backup = status.progress.backup.clone().expect("backup recorded");
    assert!(backup.verified);
    let file_name = backup.reference.rsplit('/').next().expect("file name");
    assert!(
        backup
            .reference
            .starts_with("/srv/jupyterhub/hubgrade-backups/"),
        "{}",
        backup.reference
    );
    let copy = hub.volume.join("hubgrade-backups").join(file_name);
    assert_eq!(backup.checksum.as_deref(), Some(checksum(&copy).as_str()));
    assert_eq!(backup.checksum.as_deref(), Some(original.as_str()));
    assert_eq!(
        backup.size_bytes,
        Some(std::fs::metadata(&copy).expect("backup file").len())
    );

    let mut kept: Vec<String> = std::fs::read_dir(&backups)
        .expect("backups folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept.len(), 5, "backups kept: {kept:?}");
    assert!(
        kept.contains(&file_name.to_string()),
        "the new backup was pruned: {kept:?}"
    );
    assert!(
        !kept.contains(&"hubgrade-0ld00000-db.sqlite".to_string()),
        "{kept:?}"
    );

    // The configuration was copied into a Secret owned by the upgrade.
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(hub.client.clone(), hub.ns());
    let config = secrets
        .list(&kube::api::ListParams::default().labels("hubgrade.io/step=config"))
        .await
        .expect("secrets");
    let data = config
        .items
        .first()
        .and_then(|s| s.data.clone())
        .expect("config backup");
    assert!(data.contains_key("configmap.hub.jupyterhub_config.py"));
    assert!(data.contains_key("secret.hub.values.yaml"));

    // Downtime, the lock released, an Event for every step.
    assert!(status.downtime_seconds.is_some());
    // The lock goes once the terminal phase is recorded.
    support::wait_until(
        Duration::from_secs(10),
        "the hub lock to be released",
        || async {
            let annotations = hub.hub().await.metadata.annotations.unwrap_or_default();
            !annotations.contains_key("hubgrade.io/locked-by")
        },
    )
    .await;
    let reasons: BTreeSet<String> = hub
        .event_reasons("to-4-2-0")
        .await
        .into_iter()
        .map(|(_, r, _)| r)
        .collect();
    for step in [
        "Preflight",
        "Rehearsal",
        "ScalingDown",
        "BackingUp",
        "Migrating",
        "RollingOut",
        "Verifying",
        "Succeeded",
    ] {
        assert!(reasons.contains(step), "no {step} Event; got {reasons:?}");
    }
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    assert_eq!(ready.status, "True");

    // The metrics endpoint answers and counts what happened.
    let metrics = http_get(hub.metrics_port, "/metrics").await;
    assert!(metrics.contains("hubgrade_leader 1"), "{metrics}");
    assert!(
        metrics.contains("hubgrade_actions_total{action=\"start_migration\"} 1"),
        "{metrics}"
    );
    assert!(
        http_get(hub.metrics_port, "/healthz")
            .await
            .ends_with("ok\n")
    );
}

/// Marks the hub's pod template so that pods of Jobs copied from it fail (KWOK marker).
fn failing_jobs(yaml: String) -> String {
    with_template_annotations(
        "kwok.hubgrade.io/fail: job, kwok.hubgrade.io/exit-code: \"3\", kwok.hubgrade.io/message: \"alembic: duplicate column\", kwok.hubgrade.io/delay: 2s",
    )(yaml)
}

/// Writes into the database while the migration Job runs, as a migration dying half-way would.
async fn damage_database_during_migration(hub: &Hub) {
    support::wait_until(LIMIT, "the migration Job", || async {
        !hub.jobs_for("migration").await.is_empty()
    })
    .await;
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(hub.database());
    let mut db = <sqlx::SqliteConnection as sqlx::Connection>::connect_with(&options)
        .await
        .expect("database");
    sqlx::query("ALTER TABLE users ADD COLUMN half_migrated TEXT")
        .execute(&mut db)
        .await
        .expect("damage");
    sqlx::query("UPDATE alembic_version SET version_num = 'half-way'")
        .execute(&mut db)
        .await
        .expect("damage");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_migration_is_rolled_back() {
    let hub = Hub::new("e2e-migfail", failing_jobs).await;
    let original = checksum(&hub.database());
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET, "migration": {"rehearse": false}}),
    )
    .await;
    damage_database_during_migration(&hub).await;
    let done = hub.wait_for("to-4-2-0", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::RolledBack,
        "{}",
        status.progress.message
    );

    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert_eq!(hub.hub().await.spec.and_then(|s| s.replicas), Some(1));
    assert!(
        hub.hub_available().await,
        "the hub is not available right after the roll back; Deployment status {:?}, generation {:?}",
        hub.hub().await.status,
        hub.hub().await.metadata.generation
    );
    // The database is the backup again, byte for byte.
    assert_eq!(checksum(&hub.database()), original);
    assert!(status.progress.database_restored);

    let migration = hub.jobs_for("migration").await;
    let restore = hub.jobs_for("restore").await;
    assert_eq!((migration.len(), restore.len()), (1, 1));
    support::wait_until(
        Duration::from_secs(30),
        "the restore Job to complete",
        || async {
            hub.jobs_for("restore")
                .await
                .first()
                .is_some_and(job_complete)
        },
    )
    .await;
    let failed_at = migration[0]
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Failed"))
        .and_then(|c| c.last_transition_time.clone())
        .expect("migration failed");
    let restore_created = restore[0]
        .metadata
        .creation_timestamp
        .clone()
        .expect("created");
    assert!(
        restore_created.0 >= failed_at.0,
        "the restore started before the migration had failed"
    );

    let events = hub.event_reasons("to-4-2-0").await;
    let warning = events
        .iter()
        .find(|(kind, reason, _)| kind == "Warning" && reason == "RollingBack")
        .expect("a RollingBack Warning");
    assert!(
        warning.2.contains("exit code 3") && warning.2.contains("alembic: duplicate column"),
        "{}",
        warning.2
    );
    let degraded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Degraded")
        .expect("Degraded");
    assert_eq!(degraded.status, "True");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_that_never_becomes_ready_is_rolled_back() {
    let hub = Hub::new("e2e-notready", |yaml| yaml).await;
    let original = checksum(&hub.database());
    // KWOK never readies a non-Job pod whose image mentions never-ready.
    let target = "quay.io/jupyterhub/k8s-hub:4.2.0-never-ready";
    hub.apply_upgrade(
        "to-broken",
        json!({"hub": {"deployment": "hub"}, "targetImage": target, "rollout": {"timeout": "8s"}}),
    )
    .await;
    let done = hub.wait_for("to-broken", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::RolledBack,
        "{}",
        status.progress.message
    );
    assert!(
        status
            .progress
            .failure
            .as_deref()
            .unwrap_or_default()
            .contains("did not become Ready")
    );
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(
        hub.hub_available().await,
        "the hub is not available right after the roll back; Deployment status {:?}, generation {:?}",
        hub.hub().await.status,
        hub.hub().await.metadata.generation
    );
    assert_eq!(hub.jobs_for("restore").await.len(), 1);
    assert_eq!(checksum(&hub.database()), original);
    // The migration had really changed the database (upgrade-db leaves its timestamped copy):
    // the equality above is the restore's work.
    let migrated = std::fs::read_dir(&hub.volume)
        .expect("volume")
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("jupyterhub.sqlite.20")
        });
    assert!(
        migrated,
        "the migration left no trace: the roll back proved nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_in_every_phase_still_finishes_each_step_once() {
    // Each Job takes a second, so the kills surely land while the Jobs run.
    let mut hub = Hub::with_slow_agents(
        "e2e-kill",
        with_template_annotations("kwok.hubgrade.io/delay: 1s"),
        "1s",
    )
    .await;
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    hub.ends_through_kills(
        "to-4-2-0",
        Phase::Succeeded,
        &["Rehearsal", "BackingUp", "Migrating"],
    )
    .await;
    assert_eq!(hub.hub_image().await, TARGET);
    for step in ["rehearsal", "backup", "migration"] {
        assert_eq!(hub.jobs_for(step).await.len(), 1, "{step} Jobs");
    }
    let upgrade = hub.upgrades().get("to-4-2-0").await.expect("upgrade");
    let steps: Vec<String> = upgrade
        .status
        .expect("status")
        .progress
        .steps
        .iter()
        .map(|s| s.name.to_string())
        .collect();
    let unique: BTreeSet<&String> = steps.iter().collect();
    assert_eq!(
        unique.len(),
        steps.len(),
        "a phase was entered twice: {steps:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_killed_in_every_phase_still_rolls_back_once() {
    // The backup and the restore take a second (the migration two), so the kills surely land
    // while they run.
    let mut hub = Hub::with_slow_agents("e2e-killfail", failing_jobs, "1s").await;
    let original = checksum(&hub.database());
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET, "migration": {"rehearse": false}}),
    )
    .await;
    hub.ends_through_kills(
        "to-4-2-0",
        Phase::RolledBack,
        &["BackingUp", "Migrating", "RollingBack"],
    )
    .await;
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert_eq!(checksum(&hub.database()), original);
    for step in ["backup", "migration", "restore"] {
        assert_eq!(hub.jobs_for(step).await.len(), 1, "{step} Jobs");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_upgrade_of_the_same_hub_waits_for_the_first() {
    let hub = Hub::new("e2e-two", |yaml| yaml).await;
    hub.apply_upgrade(
        "first",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    hub.wait_for(
        "first",
        &[
            Phase::Rehearsal,
            Phase::ScalingDown,
            Phase::BackingUp,
            Phase::Migrating,
            Phase::Succeeded,
        ],
        LIMIT,
    )
    .await;
    hub.apply_upgrade(
        "second",
        json!({"hub": {"deployment": "hub"}, "targetImage": "quay.io/jupyterhub/k8s-hub:4.3.0"}),
    )
    .await;

    let mut saw_waiting = false;
    let start = std::time::Instant::now();
    while hub.phase("first").await != Some(Phase::Succeeded) {
        if let Ok(second) = hub.upgrades().get("second").await
            && let Some(status) = second.status
        {
            let waiting = status.conditions.iter().any(|c| {
                c.type_ == "Progressing"
                    && c.reason == "WaitingForLock"
                    && c.message.contains("first")
            });
            saw_waiting |= waiting;
            assert!(
                matches!(status.progress.phase, Phase::Pending | Phase::Preflight),
                "the second upgrade acted while the first held the lock: {:?}",
                status.progress.phase
            );
        }
        assert!(start.elapsed() < LIMIT, "the first upgrade did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let second = hub.wait_for("second", &TERMINAL, LIMIT).await;
    assert!(
        saw_waiting,
        "the second upgrade never showed that it waits for the first"
    );
    assert_eq!(
        second.status.expect("status").progress.phase,
        Phase::Succeeded
    );
    assert_eq!(hub.hub_image().await, "quay.io/jupyterhub/k8s-hub:4.3.0");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_upgrade_fails_in_preflight_without_touching_the_hub() {
    let hub = Hub::new("e2e-preflight", |yaml| yaml).await;
    let version = hub.hub().await.metadata.resource_version;

    hub.apply_upgrade(
        "no-such-hub",
        json!({"hub": {"deployment": "hubb"}, "targetImage": TARGET}),
    )
    .await;
    for (name, expected) in [("no-such-hub", "does not exist")] {
        let done = hub.wait_for(name, &TERMINAL, LIMIT).await;
        let status = done.status.expect("status");
        assert_eq!(status.progress.phase, Phase::Failed);
        assert!(
            status.progress.message.contains(expected),
            "{name}: {}",
            status.progress.message
        );
        let steps: Vec<Phase> = status.progress.steps.iter().map(|s| s.name).collect();
        assert_eq!(steps, [Phase::Preflight, Phase::Failed], "{name}");
        let events = hub.event_reasons(name).await;
        assert!(
            events
                .iter()
                .any(|(kind, reason, _)| kind == "Warning" && reason == "PreflightFailed"),
            "{events:?}"
        );
    }
    assert_eq!(
        hub.hub().await.metadata.resource_version,
        version,
        "the hub Deployment changed"
    );
    assert!(
        hub.jobs()
            .list(&Default::default())
            .await
            .expect("jobs")
            .items
            .is_empty()
    );
}

/// GitOps re-applies what is in Git: an upgrade whose hub already runs its target (pruned and
/// applied again, restored from a backup of the cluster) ends Succeeded, AlreadyAtTarget, and
/// touches nothing, where it used to end Failed ("nothing to upgrade") and stay red.
#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_applied_again_after_a_prune_ends_already_at_target_touching_nothing() {
    let hub = Hub::new("e2e-reapply", |yaml| yaml).await;
    let spec = json!({"hub": {"deployment": "hub"}, "targetImage": TARGET});
    let status = hub.run_upgrade("to-target", spec.clone(), LIMIT).await;
    assert_phase(&status, Phase::Succeeded);
    assert_eq!(hub.hub_image().await, TARGET);
    // Argo CD prunes it (or Flux, or a person), then Git brings it back.
    hub.upgrades()
        .delete("to-target", &Default::default())
        .await
        .expect("delete");
    support::wait_until(LIMIT, "the pruned upgrade to go", || async {
        hub.upgrades()
            .get_opt("to-target")
            .await
            .expect("get")
            .is_none()
    })
    .await;
    support::wait_until(LIMIT, "the hub to be available", || hub.hub_available()).await;
    let version = hub.hub().await.metadata.resource_version;
    let jobs_before = hub
        .jobs()
        .list(&Default::default())
        .await
        .expect("jobs")
        .items
        .len();

    let status = hub.run_upgrade("to-target", spec, LIMIT).await;
    assert_phase(&status, Phase::Succeeded);
    assert_eq!(status.progress.reason, "AlreadyAtTarget");
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "AlreadyAtTarget")
    );
    let events = hub.event_reasons("to-target").await;
    assert!(
        events
            .iter()
            .any(|(kind, reason, _)| kind == "Normal" && reason == "AlreadyAtTarget"),
        "{events:?}"
    );
    assert_eq!(
        hub.hub().await.metadata.resource_version,
        version,
        "the hub Deployment changed (not even the lock annotation may be written)"
    );
    assert_eq!(
        hub.jobs()
            .list(&Default::default())
            .await
            .expect("jobs")
            .items
            .len(),
        jobs_before,
        "a Job was started"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_lease_holder_acts_and_a_clean_shutdown_hands_over_at_once() {
    let mut hub = Hub::new("e2e-leader", |yaml| yaml).await;
    // A long lease, so that a hand-over faster than its expiry can only come from the release.
    hub.restart_operator_with_lease(12);
    support::wait_until(
        Duration::from_secs(40),
        "the first operator to lead",
        || async {
            try_http_get(hub.metrics_port, "/metrics")
                .await
                .is_some_and(|m| m.contains("hubgrade_leader 1"))
        },
    )
    .await;
    let second_port = free_port();
    let mut second = hub.spawn_operator(second_port, "operator-2.log", 12);
    support::wait_until(
        Duration::from_secs(30),
        "the second operator to serve metrics",
        || async { try_http_get(second_port, "/metrics").await.is_some() },
    )
    .await;

    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    let done = hub.wait_for("to-4-2-0", &TERMINAL, LIMIT).await;
    assert_eq!(
        done.status.expect("status").progress.phase,
        Phase::Succeeded
    );
    let standby = http_get(second_port, "/metrics").await;
    assert!(standby.contains("hubgrade_leader 0"), "{standby}");
    assert!(
        !standby.contains("hubgrade_actions_total{"),
        "the standby replica acted:\n{standby}"
    );

    // SIGTERM: the leader stops, gives the lease back, and the standby takes over well before
    // the lease would have expired on its own.
    let exit = hub.terminate_operator();
    assert!(exit.success(), "the operator exited with {exit} on SIGTERM");
    let started = std::time::Instant::now();
    support::wait_until(
        Duration::from_secs(10),
        "the standby to take the lease",
        || async {
            try_http_get(second_port, "/metrics")
                .await
                .is_some_and(|m| m.contains("hubgrade_leader 1"))
        },
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the hand-over waited for the lease to expire"
    );
    let _ = second.kill();
    let _ = second.wait();
}

async fn http_get(port: u16, path: &str) -> String {
    try_http_get(port, path)
        .await
        .expect("an answer from the operator")
}

/// A z2jh hub on PostgreSQL (`hub.db.type: postgres` in the hub Secret's values.yaml, as z2jh
/// renders it) whose server does not answer is refused in Preflight naming PostgreSQL, not with
/// a message about a missing SQLite file; nothing is touched. (Nothing listens on port 1.)
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_hub_whose_server_does_not_answer_is_refused_naming_its_database() {
    let hub = Hub::new("e2e-postgres", |yaml| {
        yaml.replace(
            "        type: sqlite-pvc",
            "        type: postgres\n        url: postgresql://hub@127.0.0.1:1/jupyterhub",
        )
    })
    .await;
    let version = hub.hub().await.metadata.resource_version;
    let spec = json!({"hub": {"deployment": "hub"}, "targetImage": TARGET});
    let status = hub.run_upgrade("on-postgres", spec, LIMIT).await;
    assert_phase(&status, Phase::Failed);
    let message = &status.progress.message;
    assert!(
        message.contains("the hub's PostgreSQL database does not answer"),
        "{message}"
    );
    assert!(!message.contains("SQLite database"), "{message}");
    assert_eq!(hub.hub().await.metadata.resource_version, version);
}
