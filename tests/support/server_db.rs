//! The database-server tests, written once for PostgreSQL and MariaDB: clone and dump backups
//! of databases made by real JupyterHub releases survive real `jupyterhub upgrade-db` runs and
//! restore the old hub exactly; clones are refused under a running hub; a wrong password fails
//! clearly without showing it; a corrupted dump is refused before anything changes.

use std::process::Child;

use super::jupyterhub::{
    MIDDLE, NEW, OLD, hubgrade, make_database, open_and_dump, start_hub, upgrade_db,
};
use super::{stderr, stdout};

/// A private database server the tests start.
pub trait TestServer {
    /// The hub user's password (it needs URL encoding).
    const PASSWORD: &'static str;
    /// What the server says to a wrong password.
    const AUTHENTICATION_FAILED: &'static str;
    fn start() -> Self;
    /// JupyterHub's (SQLAlchemy) URL of `database` on this server.
    fn url(&self, database: &str) -> String;
    /// A URL of the server's maintenance database with another password.
    fn url_with_password(&self, password: &str) -> String;
    /// Creates the empty `jupyterhub` database.
    fn create_hub_database(&self);
    /// A client connected to `jupyterhub`, idle for 30 seconds, as a running hub would be.
    fn hub_session(&self) -> Child;
}

fn revision(url: &str) -> String {
    let output = hubgrade(&["db", "revision", "--url", url]);
    assert!(
        output.status.success(),
        "hubgrade db revision: {}",
        stderr(&output)
    );
    stdout(&output)
}

pub fn round_trip<S: TestServer>(method: &str, backup_to: &str) {
    let server = S::start();
    let dir = tempfile::tempdir().expect("temp dir");
    server.create_hub_database();
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
    assert!(!reference.contains(S::PASSWORD) && !stderr(&output).contains(S::PASSWORD));

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

pub fn a_clone_is_refused_while_the_hub_is_connected<S: TestServer>() {
    let server = S::start();
    server.create_hub_database();
    let url = server.url("jupyterhub");
    make_database(OLD, &url);
    // A client session on the hub's database stands for a hub that is still running.
    let mut hub = server.hub_session();
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

pub fn a_wrong_password_fails_clearly_without_showing_it<S: TestServer>() {
    let server = S::start();
    let url = server.url_with_password("Wr0ngPassw0rd");
    let output = hubgrade(&["db", "revision", "--url", &url]);
    assert!(!output.status.success());
    let message = stderr(&output);
    assert!(message.contains(S::AUTHENTICATION_FAILED), "{message}");
    assert!(message.contains("hubgrade:***@"), "{message}");
    assert!(
        !message.contains("Wr0ngPassw0rd"),
        "the password leaked: {message}"
    );
}

pub fn a_corrupted_dump_is_refused_before_the_database_is_touched<S: TestServer>() {
    let server = S::start();
    server.create_hub_database();
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
