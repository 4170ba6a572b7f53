//! The upgrade ledger on SQLite and on a real PostgreSQL server: its migrations, a newer
//! schema refused untouched, records written twice without duplicates, and what `hubgrade
//! history` and `hubgrade backups` print.

mod support;

use std::process::Command;

use hubgrade::ledger::{BackupEntry, Filter, Ledger, LedgerError, StepEntry, UpgradeEntry};
use support::postgres::{PASSWORD, PgServer};

fn entry(uid: &str, name: &str, phase: &str, steps: usize) -> UpgradeEntry {
    UpgradeEntry {
        uid: uid.into(),
        namespace: "jhub".into(),
        name: name.into(),
        hub: "hub".into(),
        created_by: "kubectl hubgrade".into(),
        created_at: "2026-11-26T10:00:00Z".into(),
        database_type: "SQLite".into(),
        from_image: Some("quay.io/jupyterhub/k8s-hub:3.3.8".into()),
        to_image: "quay.io/jupyterhub/k8s-hub:4.1.0".into(),
        from_release: Some("4.x".into()),
        to_release: Some("5.0 – 5.5".into()),
        to_revision: Some("4621fec11365".into()),
        phase: phase.into(),
        reason: String::new(),
        message: "the hub runs the target image".into(),
        downtime_seconds: Some(41),
        predicted_downtime_seconds: None,
        prediction_basis: None,
        finished_at: None,
        deleted_at: None,
        steps: (0..steps)
            .map(|i| StepEntry {
                name: ["Preflight", "Rehearsal", "ScalingDown", "BackingUp"][i % 4].into(),
                started_at: format!("2026-11-26T10:01:0{i}Z"),
                finished_at: Some(format!("2026-11-26T10:01:0{}Z", i + 1)),
                outcome: Some("Succeeded".into()),
                message: String::new(),
            })
            .collect(),
        backup: Some(BackupEntry {
            upgrade_uid: uid.into(),
            namespace: "jhub".into(),
            hub: "hub".into(),
            upgrade: name.into(),
            kind: "File".into(),
            location: format!("/srv/jupyterhub/jupyterhub.sqlite.hubgrade-{name}"),
            size_bytes: Some(131_072),
            checksum: Some("sha256:00ff".into()),
            verified: true,
            created_at: "2026-11-26T10:01:04Z".into(),
            state: "retained".into(),
            deleted_at: None,
            deleted_by: None,
        }),
        pruned_backups: Vec::new(),
        retain: 0,
    }
}

/// The newest schema version this hubgrade knows.
fn known() -> i64 {
    hubgrade::ledger::MIGRATIONS
        .iter()
        .map(|m| m.version)
        .max()
        .expect("migrations")
}

/// The record as written, without what the ledger adds (its prediction).
fn as_written(mut entry: UpgradeEntry) -> UpgradeEntry {
    entry.predicted_downtime_seconds = None;
    entry.prediction_basis = None;
    entry
}

/// Everything a ledger must do, on any database.
async fn a_ledger_records_and_keeps(url: &str, password: Option<&str>) {
    let ledger = Ledger::open(url, password).await.expect("an empty ledger");
    assert_eq!(ledger.schema_version().await.unwrap(), Some(known()));
    let all = Filter::default();
    assert!(ledger.history(&all).await.unwrap().is_empty());

    // Written while it runs, again as it ends, and once more unchanged: one upgrade, its steps.
    ledger
        .write(&entry("u-1", "to-4", "Migrating", 2))
        .await
        .unwrap();
    let mut done = entry("u-1", "to-4", "Succeeded", 4);
    ledger.write(&done).await.unwrap();
    ledger.write(&done).await.unwrap();
    done.deleted_at = Some("2026-11-26T11:00:00Z".into());
    ledger.write(&done).await.unwrap();
    // An older view written late (a replica that lost the lease) changes nothing.
    ledger
        .write(&entry("u-1", "to-4", "Migrating", 2))
        .await
        .unwrap();
    // A later record without the deletion (an old status seen late) does not undelete it.
    let mut late = done.clone();
    late.deleted_at = None;
    ledger.write(&late).await.unwrap();
    ledger
        .write(&entry("u-2", "to-5", "RollingBack", 1))
        .await
        .unwrap();
    // A third upgrade whose backup.retain deleted the first one's backup.
    let mut third = entry("u-3", "to-6", "Succeeded", 4);
    third.pruned_backups = vec!["/srv/jupyterhub/jupyterhub.sqlite.hubgrade-to-4".into()];
    third.retain = 2;
    ledger.write(&third).await.unwrap();
    ledger.close().await;

    // Opened again (an operator restart): the migrations change nothing, the rows are there.
    let again = Ledger::open(url, password).await.expect("the same ledger");
    let history = again.history(&all).await.unwrap();
    assert_eq!(history.len(), 3, "{history:#?}");
    let first = history.iter().find(|u| u.uid == "u-1").expect("u-1");
    // (Its backup is compared below: a later upgrade's retention deleted it.)
    let mut got = as_written(first.clone());
    got.backup = done.backup.clone();
    assert_eq!(got, done);
    assert_eq!(first.steps.len(), 4);
    // The first had nothing to be predicted from; the later ones were predicted from it.
    assert_eq!(first.predicted_downtime_seconds, None);
    assert!(
        first
            .prediction_basis
            .as_deref()
            .unwrap()
            .starts_with("no prediction")
    );
    let second = history.iter().find(|u| u.uid == "u-2").expect("u-2");
    assert_eq!(second.predicted_downtime_seconds, Some(41));
    assert!(
        second
            .prediction_basis
            .as_deref()
            .unwrap()
            .contains("this hub")
    );
    let backups = again.backups(&all).await.unwrap();
    assert_eq!(backups.len(), 3);
    let pruned = backups
        .iter()
        .find(|b| b.upgrade == "to-4")
        .expect("to-4's backup");
    assert_eq!(pruned.state, "deleted");
    assert_eq!(
        pruned.deleted_by.as_deref(),
        Some("backup.retain 2 (upgrade to-6)")
    );
    assert!(
        backups
            .iter()
            .filter(|b| b.upgrade != "to-4")
            .all(|b| b.state == "retained")
    );
    let other_hub = Filter {
        namespace: Some("jhub".into()),
        hub: Some("other".into()),
    };
    assert!(again.history(&other_hub).await.unwrap().is_empty());
    again.close().await;
}

#[tokio::test]
async fn an_sqlite_ledger_is_made_migrated_and_keeps_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("ledger.sqlite").display());
    a_ledger_records_and_keeps(&url, None).await;
}

#[tokio::test]
async fn a_postgresql_ledger_is_migrated_and_keeps_its_records() {
    let server = PgServer::start();
    server.sql("CREATE DATABASE ledger");
    a_ledger_records_and_keeps(&server.plain_url("ledger"), Some(PASSWORD)).await;
    // A wrong password is an error that does not show it.
    let refused = Ledger::open(&server.plain_url("ledger"), Some("not-the-password"))
        .await
        .err()
        .expect("refused");
    assert!(
        !refused.to_string().contains("not-the-password"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_ledger_from_a_newer_hubgrade_is_refused_and_left_as_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.sqlite");
    let url = format!("sqlite://{}", file.display());
    let ledger = Ledger::open(&url, None).await.unwrap();
    ledger
        .write(&entry("u-1", "to-4", "Succeeded", 2))
        .await
        .unwrap();
    ledger.close().await;
    // A newer hubgrade added migration 2.
    let sql = |statement: &str| {
        let output = Command::new("sqlite3")
            .arg(&file)
            .arg(statement)
            .output()
            .expect("sqlite3");
        assert!(output.status.success(), "{}", support::stderr(&output));
        support::stdout(&output)
    };
    let newer = known() + 1;
    sql(&format!(
        "CREATE TABLE notifications (upgrade_uid TEXT); \
         INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, \
         execution_time) VALUES ({newer}, 'notifications', CURRENT_TIMESTAMP, 1, X'00', 1)"
    ));
    let before = std::fs::read(&file).unwrap();

    for refused in [
        Ledger::open(&url, None).await.err(),
        Ledger::open_to_read(&url, None).await.err(),
    ] {
        match refused {
            Some(LedgerError::Newer {
                found, known: k, ..
            }) if found == newer && k == known() => {}
            other => panic!("a newer ledger was not refused as newer: {other:?}"),
        }
    }
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "the ledger was changed"
    );
    let message = Ledger::open(&url, None).await.err().unwrap().to_string();
    assert!(
        message.contains(&format!("schema version {newer}, newer")),
        "{message}"
    );

    // The operator does not start on it.
    let output = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(["history", "--ledger-url", &url])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(support::stderr(&output).contains("newer than this hubgrade knows"));
}

#[tokio::test]
async fn history_and_backups_print_what_the_ledger_holds_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ledger.sqlite");
    let url = format!("sqlite://{}", file.display());

    // Reading a ledger that is not there does not make one.
    let missing = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(["history", "--ledger-url", &url])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(!file.exists(), "reading made a ledger");

    let ledger = Ledger::open(&url, None).await.unwrap();
    let mut done = entry("u-1", "to-4", "Succeeded", 4);
    done.deleted_at = Some("2026-11-26T11:00:00Z".into());
    ledger.write(&done).await.unwrap();
    ledger.close().await;
    let before = std::fs::read(&file).unwrap();

    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
            .args(args)
            .args(["--ledger-url", &url])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", support::stderr(&output));
        support::stdout(&output)
    };
    let table = run(&["history"]);
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAMESPACE"), "{table}");
    assert!(
        lines[1].contains("to-4") && lines[1].contains("Succeeded"),
        "{table}"
    );
    assert!(
        lines[1].contains("3.3.8") && lines[1].contains("4.1.0"),
        "{table}"
    );
    assert!(
        lines[1].contains("41s") && lines[1].contains("2026-11-26T11:00:00Z"),
        "{table}"
    );
    assert!(lines[1].ends_with("kubectl hubgrade"), "{table}");

    let json: Vec<UpgradeEntry> =
        serde_json::from_str(&run(&["history", "-o", "json", "--hub", "hub"])).unwrap();
    assert_eq!(
        json.into_iter().map(as_written).collect::<Vec<_>>(),
        vec![done.clone()]
    );
    let none: Vec<UpgradeEntry> =
        serde_json::from_str(&run(&["history", "-o", "json", "-n", "elsewhere"])).unwrap();
    assert!(none.is_empty());

    let backups = run(&["backups"]);
    println!("{backups}");
    assert!(
        backups.contains("128.0 KiB") && backups.contains("retained"),
        "{backups}"
    );
    let yaml = run(&["backups", "-o", "yaml"]);
    assert!(yaml.contains("checksum: sha256:00ff"), "{yaml}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        before,
        "reading changed the ledger"
    );

    // The ledger backed up as the README says, and the copy read back.
    let copies = dir.path().join("backups");
    std::fs::create_dir(&copies).unwrap();
    let backup = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args([
            "db",
            "backup",
            "--url",
            &format!("sqlite:///{}", file.display()),
        ])
        .arg("--to")
        .arg(&copies)
        .output()
        .unwrap();
    assert!(backup.status.success(), "{}", support::stderr(&backup));
    let reference: serde_json::Value = serde_json::from_str(&support::stdout(&backup)).unwrap();
    let copy = reference["reference"].as_str().expect("the copy's path");
    assert!(copy.starts_with(copies.to_str().unwrap()), "{copy}");
    let output = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args([
            "history",
            "-o",
            "json",
            "--ledger-url",
            &format!("sqlite://{copy}"),
        ])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", support::stderr(&output));
    let copied: Vec<UpgradeEntry> = serde_json::from_str(&support::stdout(&output)).unwrap();
    assert_eq!(
        copied.into_iter().map(as_written).collect::<Vec<_>>(),
        vec![done]
    );
}
