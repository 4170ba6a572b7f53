//! PostgreSQL hub databases made by real JupyterHub releases, on a private server (the tests
//! themselves are in tests/support/server_db.rs, shared with the other database server).

mod support;

use std::process::Command;

use support::postgres::PgServer;
use support::server_db;

#[test]
fn a_clone_survives_real_upgrades_and_restores_the_old_hub_exactly() {
    server_db::round_trip::<PgServer>("clone", "jupyterhub_backup");
}

#[test]
fn a_dump_survives_real_upgrades_and_restores_the_old_hub_exactly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("jupyterhub.dump");
    server_db::round_trip::<PgServer>("dump", file.to_str().expect("path"));
}

#[test]
fn a_clone_is_refused_while_the_hub_is_connected() {
    server_db::a_clone_is_refused_while_the_hub_is_connected::<PgServer>();
}

#[test]
fn a_wrong_password_fails_clearly_without_showing_it() {
    server_db::a_wrong_password_fails_clearly_without_showing_it::<PgServer>();
}

#[test]
fn a_corrupted_dump_is_refused_before_the_database_is_touched() {
    server_db::a_corrupted_dump_is_refused_before_the_database_is_touched::<PgServer>();
}

/// TLS as the URL says, to a server that accepts TLS only: `sslmode=require` connects (sqlx
/// over rustls, and pg_dump for a dump), `verify-full` checks the certificate against
/// `sslrootcert`, a wrong CA is refused, and `sslmode=disable` is turned away by the server.
#[test]
fn connections_use_tls_as_the_url_says() {
    let server = PgServer::start_tls();
    server.sql("CREATE DATABASE jupyterhub");
    let dir = tempfile::tempdir().expect("temp dir");
    let other_ca = support::another_ca(dir.path());
    let url = |params: &str| {
        format!(
            "postgresql://hubgrade:{}@127.0.0.1:{}/jupyterhub?{params}",
            support::postgres::PASSWORD_IN_URL,
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
    let ca = format!("sslmode=verify-full&sslrootcert={}", server.ca().display());
    for (method, params, to) in [
        ("clone", "sslmode=require", "jupyterhub_tls_clone"),
        ("clone", ca.as_str(), "jupyterhub_verified_clone"),
        ("dump", ca.as_str(), dir.path().to_str().expect("path")),
    ] {
        let made = backup(method, params, to);
        assert!(
            made.status.success(),
            "{method} with {params}: {}",
            support::stderr(&made)
        );
    }
    let wrong_ca = format!("sslmode=verify-full&sslrootcert={}", other_ca.display());
    for (params, says) in [
        (wrong_ca.as_str(), "certificate"),
        ("sslmode=disable", "pg_hba.conf"),
    ] {
        let refused = backup("clone", params, "jupyterhub_never");
        assert!(!refused.status.success(), "{params} connected");
        let message = support::stderr(&refused);
        assert!(message.contains(says), "{params}: {message}");
        assert!(!message.contains(support::postgres::PASSWORD), "{message}");
    }
}
