//! Real JupyterHub releases from PyPI (cached venvs made by tests/jupyterhub/venvs.sh), used to
//! make, migrate and open real hub databases.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use super::{repo, stderr, stdout};

pub const OLD: &str = "4.1.6";
pub const MIDDLE: &str = "5.5.4";
pub const NEW: &str = "6.1.1";

/// The venv of a pinned JupyterHub release (installed on first use).
pub fn venv(version: &str) -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let output = Command::new(repo().join("tests/jupyterhub/venvs.sh"))
            .output()
            .expect("running venvs.sh");
        assert!(
            output.status.success(),
            "installing JupyterHub releases failed:\n{}",
            stderr(&output)
        );
        PathBuf::from(stdout(&output).trim())
    });
    let venv = root.join(format!("jupyterhub-{version}"));
    assert!(
        venv.join(".complete").exists(),
        "JupyterHub {version} is not pinned in tests/jupyterhub/versions.env"
    );
    venv
}

fn python(version: &str, script: &str, url: &str) -> Output {
    Command::new(venv(version).join("bin/python"))
        .arg(repo().join("tests/jupyterhub").join(script))
        .arg(url)
        .output()
        .expect("running a JupyterHub script")
}

/// A database made by `version`'s own ORM: users, a group, API tokens.
pub fn make_database(version: &str, url: &str) {
    let output = python(version, "make_db.py", url);
    assert!(
        output.status.success(),
        "JupyterHub {version} could not make {url}:\n{}",
        stderr(&output)
    );
}

/// `jupyterhub upgrade-db` of `version`, run in `workdir` (it shells out to `alembic`).
pub fn upgrade_db(version: &str, url: &str, workdir: &Path) -> Output {
    let bin = venv(version).join("bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(bin.join("jupyterhub"))
        .args(["upgrade-db", &format!("--db={url}")])
        .current_dir(workdir)
        .env("PATH", path)
        .output()
        .expect("running jupyterhub upgrade-db")
}

/// Every table's columns and rows, read after `version` opened the database as the hub does at
/// start-up; `Err` with the hub's message when that release refuses the schema.
pub fn open_and_dump(version: &str, url: &str) -> Result<String, String> {
    let output = python(version, "dump_db.py", url);
    match output.status.code() {
        Some(0) => Ok(stdout(&output)),
        Some(3) => Err(stderr(&output)),
        _ => panic!("dump_db.py failed on {url}:\n{}", stderr(&output)),
    }
}

/// Runs the hubgrade binary.
pub fn hubgrade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(args)
        .output()
        .expect("running hubgrade")
}
