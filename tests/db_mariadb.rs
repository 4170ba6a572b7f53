//! MariaDB (MySQL) hub databases made by real JupyterHub releases, on a private server (the tests
//! themselves are in tests/support/server_db.rs, shared with the other database server).

mod support;

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
