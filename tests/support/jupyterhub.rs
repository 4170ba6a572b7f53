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

/// `hubgrade db revision` of an SQLite file: the revision and the release it belongs to.
pub fn revision_of_file(path: &Path) -> String {
    let output = hubgrade(&[
        "db",
        "revision",
        "--url",
        &format!("sqlite:///{}", path.display()),
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    stdout(&output)
}

/// Runs the hubgrade binary.
pub fn hubgrade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(args)
        .output()
        .expect("running hubgrade")
}

/// Starts a real hub of `version` on the database at `url` (with configurable-http-proxy from
/// tests/jupyterhub/venvs.sh) and asks it `GET /hub/api/`. `Ok(version the hub reports)`, or
/// `Err(its log)` when it does not come up, as when it refuses the database's schema.
pub fn start_hub(version: &str, url: &str) -> Result<String, String> {
    use std::os::unix::process::CommandExt;
    let venv = venv(version);
    let cache = venv
        .parent()
        .and_then(|p| p.parent())
        .expect("cache directory")
        .to_path_buf();
    let chp_version = std::fs::read_to_string(repo().join("tests/jupyterhub/versions.env"))
        .expect("versions.env")
        .lines()
        .find_map(|l| l.strip_prefix("CHP_VERSION=").map(str::to_string))
        .expect("CHP_VERSION");
    let chp = cache.join(format!("chp-{chp_version}/node_modules/.bin"));
    let path = format!(
        "{}:{}:{}",
        venv.join("bin").display(),
        chp.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let port = super::free_port();
    let log_path = dir.path().join("hub.log");
    let log = std::fs::File::create(&log_path).expect("hub log");
    let mut hub = Command::new(venv.join("bin/jupyterhub"))
        .arg(format!("--db={url}"))
        .args(["--ip=127.0.0.1", &format!("--port={port}")])
        .arg(format!("--JupyterHub.hub_port={}", super::free_port()))
        .arg(format!(
            "--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{}",
            super::free_port()
        ))
        .current_dir(dir.path())
        .env("PATH", path)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .process_group(0)
        .spawn()
        .expect("starting jupyterhub");
    let start = std::time::Instant::now();
    let mut answer = None;
    while start.elapsed() < std::time::Duration::from_secs(40) {
        if hub.try_wait().ok().flatten().is_some() {
            break;
        }
        if let Some(body) = http_get(port, "/hub/api/") {
            answer = Some(body);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // The hub and its proxy share the process group.
    // SAFETY: signalling the process group of our own child.
    unsafe { libc::kill(-(hub.id() as i32), libc::SIGTERM) };
    let _ = hub.wait();
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    match answer.and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok()) {
        Some(json) => Ok(json["version"].as_str().unwrap_or_default().to_string()),
        None => Err(log),
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}
