//! MariaDB (MySQL) hub databases made by real JupyterHub releases, on a private server (the tests
//! themselves are in tests/support/server_db.rs, shared with the other database server).

mod support;

use std::process::Command;

use support::mariadb::MariaDbServer;
use support::server_db;

#[test]
fn a_clone_survives_real_upgrades_and_restores_the_old_hub_exactly() {
    server_db::round_trip::<MariaDbServer>("clone", "jupyterhub_backup");
}

#[test]
fn a_dump_survives_real_upgrades_and_restores_the_old_hub_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("jupyterhub.dump");
    server_db::round_trip::<MariaDbServer>("dump", file.to_str().expect("path"));
}

#[test]
fn a_clone_is_refused_while_the_hub_is_connected() {
    server_db::a_clone_is_refused_while_the_hub_is_connected::<MariaDbServer>();
}

#[test]
fn a_wrong_password_fails_clearly_without_showing_it() {
    server_db::a_wrong_password_fails_clearly_without_showing_it::<MariaDbServer>();
}

#[test]
fn a_corrupted_dump_is_refused_before_the_database_is_touched() {
    server_db::a_corrupted_dump_is_refused_before_the_database_is_touched::<MariaDbServer>();
}

/// TLS as the URL says, to a server that requires secure transport: `ssl-mode=REQUIRED`
/// connects (sqlx over rustls for a clone, the `mariadb-dump` tool for a dump), `VERIFY_IDENTITY`
/// checks the certificate against `ssl-ca`, a wrong CA is refused, and `DISABLED` is turned
/// away by the server.
#[test]
fn connections_use_tls_as_the_url_says() {
    use support::server_db::TestServer;
    let server = MariaDbServer::start_tls();
    server.create_hub_database();
    let dir = tempfile::tempdir().expect("temp dir");
    let other_ca = support::another_ca(dir.path());
    let url = |params: &str| {
        format!(
            "mysql://hubgrade:{}@127.0.0.1:{}/jupyterhub?{params}",
            support::mariadb::PASSWORD_IN_URL,
            server.port
        )
    };
    let backup = |method: &str, params: &str, to: &str| {
        Command::new(env!("CARGO_BIN_EXE_hubgrade"))
            .args(["db", "backup", "--method", method, "--to", to])
            .env("HUBGRADE_DB_URL", url(params))
            .output()
            .expect("hubgrade db backup")
    };
    let verified = format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", server.ca().display());
    let required_dump = dir.path().join("required");
    std::fs::create_dir(&required_dump).expect("a folder");
    for (method, params, to) in [
        ("clone", "ssl-mode=REQUIRED", "jupyterhub_tls_clone"),
        (
            "dump",
            "ssl-mode=REQUIRED",
            required_dump.to_str().expect("path"),
        ),
        ("clone", verified.as_str(), "jupyterhub_verified_clone"),
        (
            "dump",
            verified.as_str(),
            dir.path().to_str().expect("path"),
        ),
    ] {
        let made = backup(method, params, to);
        assert!(
            made.status.success(),
            "{method} with {params}: {}",
            support::stderr(&made)
        );
    }
    let wrong_ca = format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", other_ca.display());
    for (i, (method, params, says)) in [
        ("clone", wrong_ca.as_str(), "certificate"),
        ("dump", wrong_ca.as_str(), "certificate"),
        ("clone", "ssl-mode=DISABLED", ""),
        ("dump", "ssl-mode=DISABLED", ""),
    ]
    .into_iter()
    .enumerate()
    {
        // A folder of its own each: a refused dump leaves no file to collide with.
        let to = dir.path().join(format!("attempt-{i}"));
        std::fs::create_dir(&to).expect("a folder");
        let refused = backup(method, params, to.to_str().expect("path"));
        assert!(
            !refused.status.success(),
            "{method} with {params} connected"
        );
        let message = support::stderr(&refused);
        println!("{method} with {params}: {message}");
        assert!(message.to_lowercase().contains(says), "{message}");
        assert!(!message.contains("already exists"), "{message}");
        assert!(!message.contains(support::mariadb::PASSWORD), "{message}");
    }
}
