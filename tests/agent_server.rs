//! `hubgrade agent server-backup | server-revision | server-restore`, what the operator's Jobs
//! run for a hub on PostgreSQL or MariaDB, against real servers and databases made by a real
//! JupyterHub release, the URL read as a Job reads it: from the hub Secret's files as z2jh
//! mounts them (`values.yaml` with `hub.db.type` and `hub.db.url`, and `hub.db.password`), or
//! from `HUBGRADE_DB_URL`. The password never appears in what the agent prints.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use hubgrade::agent::AgentReport;
use support::jupyterhub::{NEW, OLD, make_database, open_and_dump, upgrade_db};
use support::mariadb::MariaDbServer;
use support::postgres::PgServer;
use support::server_db::TestServer;
use support::stderr;

/// `url` without the password in its credentials (z2jh keeps it in `hub.db.password`).
fn without_password(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (credentials, host) = rest.split_once('@').expect("credentials");
    let user = credentials.split(':').next().unwrap_or(credentials);
    format!("{scheme}://{user}@{host}")
}

/// The hub Secret as z2jh mounts it: its keys as files in a folder.
fn hub_secret(dir: &Path, db_type: &str, url: &str, password: Option<&str>) {
    let values = format!(
        "hub:\n  cookieSecret: abc\n  db:\n    type: {db_type}\n    url: {url}\nproxy:\n  secretToken: x\n"
    );
    std::fs::write(dir.join("values.yaml"), values).expect("values.yaml");
    if let Some(password) = password {
        std::fs::write(dir.join("hub.db.password"), password).expect("hub.db.password");
    }
}

fn agent(args: &[&str], env_url: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hubgrade"));
    command
        .arg("agent")
        .args(args)
        .env_remove("HUBGRADE_DB_URL");
    if let Some(url) = env_url {
        command.env("HUBGRADE_DB_URL", url);
    }
    command.output().expect("running hubgrade agent")
}

/// The agent's report, after checking the password is nowhere in its output.
fn report(output: &Output, password: &str) -> AgentReport {
    let out = String::from_utf8_lossy(&output.stdout).to_string();
    let err = stderr(output);
    for (name, text) in [("stdout", &out), ("stderr", &err)] {
        assert!(
            !text.contains(password),
            "the password is in the agent's {name}: {text}"
        );
    }
    AgentReport::parse(&out).unwrap_or_else(|| panic!("no report in {out:?}; stderr: {err}"))
}

fn round_trip<S: TestServer>(db_type: &str) {
    let server = S::start();
    let work = tempfile::tempdir().expect("temp dir");
    let secret = tempfile::tempdir().expect("temp dir");
    server.create_hub_database();
    let url = server.url("jupyterhub");
    make_database(OLD, &url);
    let before = open_and_dump(OLD, &url).expect("JupyterHub 4.1 opens its own database");
    hub_secret(
        secret.path(),
        db_type,
        &without_password(&url),
        Some(S::PASSWORD),
    );
    let values = secret.path().to_str().expect("path");

    let backup = agent(
        &[
            "server-backup",
            "--values",
            values,
            "--suffix",
            "hubgrade_0f1e2d3c_db",
        ],
        None,
    );
    let made = report(&backup, S::PASSWORD);
    assert!(made.ok, "server-backup: {made:?}");
    let record = made.backup.expect("the backup in the report");
    assert_eq!(record.reference, "jupyterhub_hubgrade_0f1e2d3c_db");
    assert!(record.verified);

    let revision = |env: Option<&str>| {
        let args: &[&str] = match env {
            None => &["server-revision", "--values", values],
            Some(_) => &["server-revision"],
        };
        let said = report(&agent(args, env), S::PASSWORD);
        assert!(said.ok, "server-revision: {said:?}");
        said.revision.expect("a revision")
    };
    let old_revision = revision(None);
    let upgraded = upgrade_db(NEW, &url, work.path());
    assert!(
        upgraded.status.success(),
        "jupyterhub {NEW} upgrade-db: {}",
        stderr(&upgraded)
    );
    let new_revision = revision(Some(&url));
    assert_ne!(old_revision, new_revision, "the migration changed nothing");
    assert!(open_and_dump(OLD, &url).is_err(), "4.1 opened a 6.x schema");

    let restore = agent(
        &[
            "server-restore",
            "--values",
            values,
            "--from",
            &record.reference,
        ],
        None,
    );
    let restored = report(&restore, S::PASSWORD);
    assert!(restored.ok, "server-restore: {restored:?}");
    let message = restored.message.expect("what the restore did");
    assert!(message.contains("jupyterhub_failed_"), "{message}");
    assert_eq!(revision(None), old_revision);
    assert_eq!(
        open_and_dump(OLD, &url).expect("4.1 opens the restored database"),
        before
    );
    // The failed database is kept, at the new revision, under the name the report gives.
    let kept = message
        .split_whitespace()
        .find(|w| w.starts_with("jupyterhub_failed_"))
        .expect("the kept name")
        .trim_end_matches([',', ';', '.']);
    let (scheme_host, _) = url.rsplit_once('/').expect("a database in the URL");
    assert_eq!(
        revision(Some(&format!("{scheme_host}/{kept}"))),
        new_revision
    );
}

#[test]
fn a_postgres_hub_is_backed_up_and_restored_from_its_secret() {
    round_trip::<PgServer>("postgres");
}

#[test]
fn a_mariadb_hub_is_backed_up_and_restored_from_its_secret() {
    round_trip::<MariaDbServer>("mysql");
}

/// A Secret without `hub.db.url`, and a URL naming a file, fail with a report saying so.
#[test]
fn a_secret_without_a_server_url_is_refused_clearly() {
    let secret = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        secret.path().join("values.yaml"),
        "hub:\n  db:\n    type: postgres\n",
    )
    .expect("values.yaml");
    let values = secret.path().to_str().expect("path");
    let output = agent(&["server-revision", "--values", values], None);
    assert!(!output.status.success());
    let said = report(&output, "no password here");
    assert!(!said.ok);
    assert!(
        said.error
            .as_deref()
            .unwrap_or("")
            .contains("hub.db.url is not set"),
        "{said:?}"
    );
    let file = agent(
        &["server-revision"],
        Some("sqlite:////srv/jupyterhub/jupyterhub.sqlite"),
    );
    let said = report(&file, "no password here");
    assert!(
        said.error
            .as_deref()
            .unwrap_or("")
            .contains("not a database server"),
        "{said:?}"
    );
}

/// z2jh's `hub.existingSecret`: its keys are read before the hub Secret's and its
/// `values.yaml` merged over the hub Secret's, as z2jh's `z2jh.py` does.
#[test]
fn the_existing_secret_is_read_first() {
    let server = PgServer::start();
    server.create_hub_database();
    let url = server.url("jupyterhub");
    make_database(OLD, &url);
    let (chart, existing) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    // The chart's Secret: another database, and a stale password.
    hub_secret(
        chart.path(),
        "postgres",
        &without_password(&server.url("elsewhere")),
        Some("stale"),
    );
    // The user's Secret: the hub's database and its password.
    std::fs::write(
        existing.path().join("values.yaml"),
        format!("hub:\n  db:\n    url: {}\n", without_password(&url)),
    )
    .expect("values.yaml");
    std::fs::write(
        existing.path().join("hub.db.password"),
        <PgServer as TestServer>::PASSWORD,
    )
    .expect("hub.db.password");
    let said = report(
        &agent(
            &[
                "server-revision",
                "--values",
                chart.path().to_str().expect("path"),
                "--existing",
                existing.path().to_str().expect("path"),
            ],
            None,
        ),
        <PgServer as TestServer>::PASSWORD,
    );
    assert!(said.ok, "{said:?}");
    assert!(said.revision.is_some_and(|r| !r.is_empty()));
}
