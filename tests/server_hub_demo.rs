//! examples/server-hub/demo.sh, the README's demo of a hub on PostgreSQL and on MariaDB, runs
//! to the end: the upgrade Succeeded, its clone is on the server, no password in the logs (the
//! script checks both and exits non-zero otherwise).

mod support;

use std::process::Command;

fn demo(kind: &str) {
    let output = Command::new(support::repo().join("examples/server-hub/demo.sh"))
        .arg(kind)
        .output()
        .expect("running examples/server-hub/demo.sh");
    let out = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "demo.sh {kind} failed:\n{out}\n{}",
        support::stderr(&output)
    );
    assert!(out.contains("phase:     Succeeded"), "{out}");
    assert!(
        out.contains("backup:    Clone jupyterhub_hubgrade_"),
        "{out}"
    );
}

#[test]
fn the_postgres_demo_upgrades_its_hub() {
    demo("postgres");
}

#[test]
fn the_mysql_demo_upgrades_its_hub() {
    demo("mysql");
}
