//! PostgreSQL hub databases made by real JupyterHub releases, on a private server: clone and
//! dump backups survive real `jupyterhub upgrade-db` runs and restore the old hub exactly.

mod support;

use support::jupyterhub::{
    MIDDLE, NEW, OLD, hubgrade, make_database, open_and_dump, start_hub, upgrade_db,
};
use support::postgres::{PASSWORD, PgServer};
use support::{stderr, stdout};

fn revision(url: &str) -> String {
    let output = hubgrade(&["db", "revision", "--url", url]);
    assert!(
        output.status.success(),
        "hubgrade db revision: {}",
        stderr(&output)
    );
    stdout(&output)
}

fn round_trip(method: &str, backup_to: &str) {
    let server = PgServer::start();
    let dir = tempfile::tempdir().expect("temp dir");
    server.sql("CREATE DATABASE jupyterhub");
    let url = server.url("jupyterhub");
    make_database(OLD, &url);
    let before = open_and_dump(OLD, &url).expect("JupyterHub 4.1 opens its own database");

    let output = hubgrade(&[
        "db", "backup", "--url", &url, "--method", method, "--to", backup_to,
    ]);
    assert!(
        output.status.success(),
        "hubgrade db backup --method {method}: {}",
        stderr(&output)
    );
    let reference = stdout(&output);
    assert!(!reference.contains(PASSWORD) && !stderr(&output).contains(PASSWORD));

    for (version, head) in [(MIDDLE, "4621fec11365"), (NEW, "f460b0348206")] {
        let upgraded = upgrade_db(version, &url, dir.path());
        assert!(
            upgraded.status.success(),
            "jupyterhub {version} upgrade-db: {}",
            stderr(&upgraded)
        );
        assert!(
            revision(&url).starts_with(head),
            "after {version}: {}",
            revision(&url)
        );
    }
    assert!(open_and_dump(OLD, &url).is_err(), "4.1 opened a 6.x schema");

    let output = hubgrade(&["db", "restore", "--url", &url, "--from", &reference]);
    assert!(
        output.status.success(),
        "hubgrade db restore ({method}): {}",
        stderr(&output)
    );
    assert!(
        stdout(&output).contains("kept as jupyterhub_failed_"),
        "{}",
        stdout(&output)
    );
    assert!(revision(&url).starts_with("0eee8c825d24 (JupyterHub 4.x)"));
    let after = open_and_dump(OLD, &url).expect("JupyterHub 4.1 opens the restored database");
    assert_eq!(
        after, before,
        "schema or rows differ after restoring the {method} backup"
    );
    assert!(after.contains("alice") && after.contains("researchers"));
    // And a real JupyterHub 4.1 hub starts on it and answers its API.
    assert_eq!(
        start_hub(OLD, &url).as_deref(),
        Ok(OLD),
        "the old hub does not start on the restored database"
    );
}

#[test]
fn a_clone_survives_real_upgrades_and_restores_the_old_hub_exactly() {
    round_trip("clone", "jupyterhub_backup");
}

#[test]
fn a_dump_survives_real_upgrades_and_restores_the_old_hub_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("jupyterhub.dump");
    round_trip("dump", file.to_str().expect("path"));
}

#[test]
fn a_clone_is_refused_while_the_hub_is_connected() {
    let server = PgServer::start();
    server.sql("CREATE DATABASE jupyterhub");
    let url = server.url("jupyterhub");
    make_database(OLD, &url);
    // A psql session stands for a hub that is still running.
    let mut hub = std::process::Command::new("psql")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "hubgrade",
            "-d",
            "jupyterhub",
        ])
        .args(["-c", "SELECT pg_sleep(30)"])
        .env("PGPASSWORD", PASSWORD)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    std::thread::sleep(std::time::Duration::from_millis(800));
    let output = hubgrade(&[
        "db", "backup", "--url", &url, "--method", "clone", "--to", "copy",
    ]);
    let _ = hub.kill();
    let _ = hub.wait();
    assert!(
        !output.status.success(),
        "a clone was made under a running hub"
    );
    assert!(
        stderr(&output).contains("remain (is the hub still running?)"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_wrong_password_fails_clearly_without_showing_it() {
    let server = PgServer::start();
    let url = format!(
        "postgresql://hubgrade:Wr0ngPassw0rd@127.0.0.1:{}/postgres",
        server.port
    );
    let output = hubgrade(&["db", "revision", "--url", &url]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(
        message.contains("password authentication failed"),
        "{message}"
    );
    assert!(message.contains("hubgrade:***@"), "{message}");
    assert!(
        !message.contains("Wr0ngPassw0rd"),
        "the password leaked: {message}"
    );
}

#[test]
fn a_corrupted_dump_is_refused_before_the_database_is_touched() {
    let server = PgServer::start();
    server.sql("CREATE DATABASE jupyterhub");
    let url = server.url("jupyterhub");
    make_database(OLD, &url);
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("hub.dump");
    let output = hubgrade(&[
        "db",
        "backup",
        "--url",
        &url,
        "--method",
        "dump",
        "--to",
        file.to_str().expect("path"),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let reference = stdout(&output);
    let upgraded = upgrade_db(NEW, &url, dir.path());
    assert!(upgraded.status.success(), "{}", stderr(&upgraded));

    let mut bytes = std::fs::read(&file).expect("dump");
    let last = bytes.len() - 10;
    bytes[last] ^= 0xff;
    std::fs::write(&file, bytes).expect("corrupting the dump");
    let output = hubgrade(&["db", "restore", "--url", &url, "--from", &reference]);
    assert!(!output.status.success(), "a corrupted dump was restored");
    assert!(
        stderr(&output).contains("nothing was changed"),
        "{}",
        stderr(&output)
    );
    assert!(
        revision(&url).starts_with("f460b0348206"),
        "the database changed"
    );
}
