//! The operator's ledger on the local cluster (KWOK): an upgrade's record outlives its
//! HubUpgrade and an operator restart, and a ledger outage mid-upgrade stops nothing.

mod support;

use std::process::Command;
use std::time::Duration;

use hubgrade::ledger::{BackupEntry, UpgradeEntry};
use hubgrade::machine::Phase;
use serde_json::json;
use support::e2e::{Hub, assert_phase, with_template_annotations};
use support::postgres::{PASSWORD, PgServer};
use support::{try_http_get, wait_until};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const LIMIT: Duration = Duration::from_secs(120);

/// `hubgrade <command> -o json` on the hub's ledger.
fn read_ledger<T: serde::de::DeserializeOwned>(hub: &Hub, command: &str) -> T {
    let mut run = Command::new(env!("CARGO_BIN_EXE_hubgrade"));
    if let Some(password) = &hub.ledger_password {
        run.env("HUBGRADE_LEDGER_PASSWORD", password);
    }
    let output = run
        .args([command, "-o", "json", "-n", hub.ns()])
        .args(["--ledger-url", &hub.ledger_url])
        .output()
        .expect("hubgrade");
    assert!(
        output.status.success(),
        "hubgrade {command}: {}",
        support::stderr(&output)
    );
    serde_json::from_str(&support::stdout(&output)).expect("JSON")
}

fn print_tables(hub: &Hub) {
    for command in ["history", "backups"] {
        let output = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
            .args([command, "-n", hub.ns(), "--ledger-url", &hub.ledger_url])
            .output()
            .expect("hubgrade");
        println!("$ hubgrade {command}\n{}", support::stdout(&output));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrades_record_outlives_its_hub_upgrade_and_an_operator_restart() {
    let mut hub = Hub::new("ledger-keeps", |yaml| yaml).await;
    // Made with kubectl, as a person would.
    let manifest = format!(
        "apiVersion: hubgrade.io/v1alpha1\nkind: HubUpgrade\nmetadata:\n  name: to-4-2-0\n\
         spec:\n  hub:\n    deployment: hub\n  targetImage: {TARGET}\n"
    );
    let applied = support::kubectl_with_input(&["apply", "-n", hub.ns(), "-f", "-"], &manifest);
    assert!(applied.status.success(), "{}", support::stderr(&applied));
    let done = hub
        .wait_for(
            "to-4-2-0",
            &[Phase::Succeeded, Phase::RolledBack, Phase::Failed],
            LIMIT,
        )
        .await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::Succeeded);
    let uid = hub
        .upgrades()
        .get("to-4-2-0")
        .await
        .expect("the upgrade")
        .metadata
        .uid
        .expect("uid");

    // What an admin alerts on, scraped from the operator.
    let metrics = try_http_get(hub.metrics_port, "/metrics")
        .await
        .expect("metrics");
    for line in [
        "hubgrade_upgrades_total{outcome=\"Succeeded\",reason=\"\"} 1",
        "hubgrade_phase_duration_seconds_count{phase=\"Migrating\"} 1",
        "hubgrade_phase_duration_seconds_count{phase=\"BackingUp\"} 1",
        "hubgrade_downtime_seconds_count 1",
        "hubgrade_backup_size_bytes_count 1",
        "hubgrade_upgrades_in_progress 0",
        "hubgrade_upgrades_stalled 0",
        "hubgrade_build_info{version=",
    ] {
        assert!(metrics.contains(line), "no {line} in\n{metrics}");
    }

    // Pruned as a GitOps tool would, then the operator restarts.
    hub.delete_upgrade("to-4-2-0").await;
    hub.kill_operator();
    hub.start_operator();
    wait_until(
        Duration::from_secs(30),
        "the restarted operator to lead",
        || async {
            try_http_get(hub.metrics_port, "/metrics")
                .await
                .is_some_and(|m| m.contains("hubgrade_leader 1"))
        },
    )
    .await;

    let history: Vec<UpgradeEntry> = read_ledger(&hub, "history");
    print_tables(&hub);
    let entry = history
        .iter()
        .find(|u| u.uid == uid)
        .unwrap_or_else(|| panic!("the upgrade is not in the ledger: {history:#?}"));
    assert_eq!(entry.name, "to-4-2-0");
    assert_eq!(entry.phase, "Succeeded");
    assert_eq!(entry.created_by, "kubectl");
    assert_eq!(entry.database_type, "SQLite");
    assert_eq!(entry.to_image, TARGET);
    assert_eq!(
        entry.from_image.as_deref(),
        Some(support::e2e::ORIGINAL_IMAGE)
    );
    assert_eq!(entry.downtime_seconds, status.downtime_seconds);
    assert!(entry.deleted_at.is_some(), "the deletion is not recorded");
    assert_eq!(
        entry.steps.len(),
        status.progress.steps.len(),
        "{:#?}",
        entry.steps
    );
    assert!(entry.steps.iter().any(|s| s.name == "Migrating"));
    let backups: Vec<BackupEntry> = read_ledger(&hub, "backups");
    let backup = backups
        .iter()
        .find(|b| b.upgrade_uid == uid)
        .expect("the backup in the ledger");
    let recorded = status.progress.backup.expect("a backup in the status");
    assert_eq!(backup.location, recorded.reference);
    assert_eq!(backup.checksum, recorded.checksum);
    assert_eq!(backup.state, "retained");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ledger_outage_mid_upgrade_stops_nothing_and_the_record_is_written_when_it_is_back() {
    let server = PgServer::start();
    server.sql("CREATE DATABASE ledger");
    // Each Job takes 4 s: time to stop the ledger while the hub migrates.
    let mut hub = Hub::new(
        "ledger-outage",
        with_template_annotations("kwok.hubgrade.io/delay: 4s"),
    )
    .await;
    hub.ledger_url = server.plain_url("ledger");
    hub.ledger_password = Some(PASSWORD.into());
    hub.kill_operator();
    hub.start_operator();

    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    hub.wait_for("to-4-2-0", &[Phase::Migrating], LIMIT).await;
    server.stop();
    let done = hub
        .wait_for(
            "to-4-2-0",
            &[Phase::Succeeded, Phase::RolledBack, Phase::Failed],
            LIMIT,
        )
        .await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::Succeeded);
    // The writer gives up on the ledger within seconds, and says so.
    wait_until(
        Duration::from_secs(30),
        "a LedgerUnavailable Event and hubgrade_ledger_up 0",
        || async {
            let warned = hub
                .event_reasons("to-4-2-0")
                .await
                .iter()
                .any(|(_, reason, _)| reason == "LedgerUnavailable");
            let down = try_http_get(hub.metrics_port, "/metrics")
                .await
                .is_some_and(|m| m.contains("hubgrade_ledger_up 0"));
            warned && down
        },
    )
    .await;
    // Nothing of it reached the ledger yet: the test would pass without the outage otherwise.
    assert_eq!(hub.phase("to-4-2-0").await, Some(Phase::Succeeded));

    server.resume();
    wait_until(
        Duration::from_secs(60),
        "the finished upgrade to reach the ledger",
        || async {
            let history: Vec<UpgradeEntry> = read_ledger(&hub, "history");
            history
                .iter()
                .any(|u| u.name == "to-4-2-0" && u.phase == "Succeeded" && u.backup.is_some())
        },
    )
    .await;
    let metrics = try_http_get(hub.metrics_port, "/metrics")
        .await
        .expect("metrics");
    assert!(metrics.contains("hubgrade_ledger_up 1"), "{metrics}");
    assert!(
        !hub.operator_log().contains(PASSWORD),
        "the password was logged"
    );
}

/// Two replicas on one PostgreSQL ledger: only the leader writes (the standby opens the ledger
/// only once it leads), and a hand-over mid-upgrade leaves one record with one row per step.
#[tokio::test(flavor = "multi_thread")]
async fn two_replicas_on_a_postgresql_ledger_write_one_record_through_a_hand_over() {
    let server = PgServer::start();
    server.sql("CREATE DATABASE ledger");
    let mut hub = Hub::new(
        "ledger-replicas",
        with_template_annotations("kwok.hubgrade.io/delay: 4s"),
    )
    .await;
    hub.ledger_url = server.plain_url("ledger");
    hub.ledger_password = Some(PASSWORD.into());
    hub.restart_operator_with_lease(3);
    let leads = |port: u16| async move {
        try_http_get(port, "/metrics")
            .await
            .is_some_and(|m| m.contains("hubgrade_leader 1"))
    };
    wait_until(Duration::from_secs(30), "the first replica to lead", || {
        leads(hub.metrics_port)
    })
    .await;
    let second_port = support::free_port();
    let mut second = hub.spawn_operator(second_port, "operator-2.log", 3);

    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    hub.wait_for("to-4-2-0", &[Phase::Migrating], LIMIT).await;
    let standby_log = std::fs::read_to_string(hub.dir.join("operator-2.log")).unwrap_or_default();
    assert!(
        !standby_log.contains("the ledger"),
        "the standby touched the ledger:\n{standby_log}"
    );
    hub.kill_operator();
    wait_until(Duration::from_secs(30), "the standby to take over", || {
        leads(second_port)
    })
    .await;
    let done = hub
        .wait_for(
            "to-4-2-0",
            &[Phase::Succeeded, Phase::RolledBack, Phase::Failed],
            LIMIT,
        )
        .await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::Succeeded);
    let expected: Vec<String> = status
        .progress
        .steps
        .iter()
        .map(|s| s.name.as_str().to_string())
        .collect();
    wait_until(
        Duration::from_secs(30),
        "the finished upgrade in the ledger",
        || async {
            let history: Vec<UpgradeEntry> = read_ledger(&hub, "history");
            history.len() == 1
                && history[0].phase == "Succeeded"
                && history[0]
                    .steps
                    .iter()
                    .map(|s| s.name.clone())
                    .collect::<Vec<_>>()
                    == expected
        },
    )
    .await;
    let backups: Vec<BackupEntry> = read_ledger(&hub, "backups");
    assert_eq!(backups.len(), 1, "{backups:#?}");
    let _ = second.kill();
    let _ = second.wait();
}

/// Every object in the namespace that `hubgrade plan` could have touched, with its
/// resourceVersion.
fn versions_in(namespace: &str) -> Vec<String> {
    let output = support::kubectl(&[
        "get",
        "deployments,replicasets,pods,pvc,secrets,configmaps,jobs,leases,hubupgrades",
        "-n",
        namespace,
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion}{\"\\n\"}{end}",
    ])
    .output()
    .expect("kubectl");
    assert!(output.status.success(), "{}", support::stderr(&output));
    // The running operator renews its leader Lease on its own: that Lease's version is not
    // plan's doing (a Lease plan made would still show).
    let mut lines: Vec<String> = support::stdout(&output)
        .lines()
        .map(|line| match line.split_once('@') {
            Some((lease, _)) if lease.starts_with("Lease/hubgrade-leader") => lease.to_string(),
            _ => line.to_string(),
        })
        .collect();
    lines.sort();
    lines
}

fn plan(hub: &Hub, name: &str, target: &str) -> (serde_json::Value, i32) {
    hub.plan(name, target)
}

#[tokio::test(flavor = "multi_thread")]
async fn plan_changes_nothing_and_predicts_the_downtime_from_the_ledger() {
    let hub = Hub::new("ledger-plan", |yaml| yaml).await;
    let before = versions_in(hub.ns());
    let (report, code) = plan(&hub, "to-4-2-0", TARGET);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["wouldProceed"], true, "{report}");
    assert_eq!(report["layout"]["claim"], "hub-db-dir", "{report}");
    assert_eq!(report["layout"]["container"], "hub", "{report}");
    assert_eq!(
        report["versions"]["currentImage"],
        support::e2e::ORIGINAL_IMAGE
    );
    assert!(
        report["checks"]
            .as_array()
            .expect("checks")
            .iter()
            .all(|c| c["passed"] == true),
        "{report}"
    );
    assert!(report["downtime"]["seconds"].is_null(), "{report}");
    assert!(
        report["downtime"]["basis"]
            .as_str()
            .unwrap()
            .contains("no finished upgrade yet"),
        "{report}"
    );
    assert_eq!(
        versions_in(hub.ns()),
        before,
        "hubgrade plan changed the cluster"
    );

    // An older target: the plan says no (exit code 2), still changing nothing.
    let (refused, code) = plan(&hub, "back", "quay.io/jupyterhub/k8s-hub:4.0.0");
    assert_eq!(code, 2, "{refused}");
    assert_eq!(refused["wouldProceed"], false);
    assert!(
        refused["verdict"]
            .as_str()
            .unwrap()
            .contains("PreflightFailed"),
        "{refused}"
    );
    assert_eq!(
        versions_in(hub.ns()),
        before,
        "hubgrade plan changed the cluster"
    );

    // After one upgrade the ledger predicts the next from it; the next is measured against it.
    let first = hub
        .run_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            LIMIT,
        )
        .await;
    assert_phase(&first, Phase::Succeeded);
    let measured = first.downtime_seconds.expect("a measured downtime");
    let next_target = "quay.io/jupyterhub/k8s-hub:4.3.0";
    // The operator writes the ledger a moment after the status: look until it is there.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let predicted = loop {
        let (report, _) = plan(&hub, "to-4-3-0", next_target);
        if !report["downtime"]["seconds"].is_null() {
            break report["downtime"]["seconds"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no prediction from the ledger: {report}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(
        predicted, measured,
        "the prediction is not the one past downtime"
    );
    // The first HubUpgrade is pruned (as a GitOps tool would); its backup still counts.
    hub.delete_upgrade("to-4-2-0").await;
    // This one keeps only its own backup: the first one's is deleted, and the ledger says so.
    let second = hub
        .run_upgrade(
            "to-4-3-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": next_target,
                   "backup": {"retain": 1}}),
            LIMIT,
        )
        .await;
    assert_phase(&second, Phase::Succeeded);
    let measured_now = second.downtime_seconds.expect("measured");
    println!("predicted downtime {predicted}s, measured {measured_now}s");
    let first_backup = first.progress.backup.expect("the first backup").reference;
    assert_eq!(
        second.progress.backup.expect("the second backup").pruned,
        vec![first_backup.clone()]
    );
    wait_until(
        Duration::from_secs(30),
        "the ledger to hold the second upgrade, predicted and measured",
        || async {
            let history: Vec<UpgradeEntry> = read_ledger(&hub, "history");
            history.iter().any(|u| {
                u.name == "to-4-3-0"
                    && u.downtime_seconds == Some(measured_now)
                    && u.predicted_downtime_seconds == Some(measured)
            })
        },
    )
    .await;
    let backups: Vec<BackupEntry> = read_ledger(&hub, "backups");
    print_tables(&hub);
    let pruned = backups
        .iter()
        .find(|b| b.location == first_backup)
        .expect("the first backup in the ledger");
    assert_eq!(pruned.state, "deleted", "{backups:#?}");
    assert_eq!(
        pruned.deleted_by.as_deref(),
        Some("backup.retain 1 (upgrade to-4-3-0)")
    );
    assert!(
        !hub.volume
            .join("hubgrade-backups")
            .join(
                std::path::Path::new(&first_backup)
                    .file_name()
                    .expect("a file name")
            )
            .exists(),
        "the first backup is still on the volume"
    );
}
