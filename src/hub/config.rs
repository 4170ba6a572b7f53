//! The JupyterHub configuration file hubgrade runs `jupyterhub upgrade-db` with. A `db_url`
//! set in the hub's configuration wins over `upgrade-db --db` (z2jh's `jupyterhub_config.py`
//! always sets one), so passing `--db` would migrate whatever the hub's configuration names:
//! during a rehearsal, the live database. This file loads the hub's own configuration, checks
//! that it names the database hubgrade backed up, and only then sets the database to act on.

/// Exit code of `jupyterhub upgrade-db` when the hub's configuration names another database.
pub const WRONG_DATABASE_EXIT_CODE: i32 = 3;

/// Python for a JupyterHub configuration file (traitlets' `load_subconfig` is in scope there).
/// `hub_config`: the hub's `--config`, or `None` for JupyterHub's default
/// (`jupyterhub_config.py` in the working directory, if it exists). `database_url`: what
/// upgrade-db migrates. `expect_url`: what the hub's configuration must name. SQLite URLs are
/// compared as real absolute paths (relative ones are relative to the working directory, as
/// for the hub); passwords are never printed.
pub fn pinned_database_config(
    hub_config: Option<&str>,
    database_url: &str,
    expect_url: &str,
) -> String {
    let literal = |text: &str| serde_json::Value::String(text.to_string()).to_string();
    let hub_config = hub_config.map_or("None".to_string(), literal);
    format!(
        r#"# Written by hubgrade (`hubgrade agent pin-database`). The hub's own configuration is loaded
# first; then the database is pinned, because a db_url set there wins over `upgrade-db --db`.
import os as _hubgrade_os
import re as _hubgrade_re
import sys as _hubgrade_sys

_hubgrade_hub_config = {hub_config}
_hubgrade_database_url = {database_url}
_hubgrade_expect_url = {expect_url}


def _hubgrade_resolve(url):
    url = str(url)
    if url.startswith("sqlite:///"):
        path, _, _ = url[len("sqlite:///"):].partition("?")
        if path and path != ":memory:":
            return "sqlite:///" + _hubgrade_os.path.realpath(path)
    return url


def _hubgrade_redact(url):
    return _hubgrade_re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", str(url))


def _hubgrade_refuse(message):
    message = "hubgrade: " + message
    # In a pod the kubelet provides the termination log; elsewhere there is none to write.
    if _hubgrade_os.path.exists("/dev/termination-log"):
        try:
            with open("/dev/termination-log", "w") as log:
                log.write(message)
        except OSError:
            pass
    _hubgrade_sys.stderr.write(message + "\n")
    _hubgrade_sys.stderr.flush()
    _hubgrade_os._exit({exit_code})


if _hubgrade_hub_config is None:
    if _hubgrade_os.path.exists("jupyterhub_config.py"):
        load_subconfig(_hubgrade_os.path.abspath("jupyterhub_config.py"))
else:
    _hubgrade_path = _hubgrade_os.path.abspath(_hubgrade_hub_config)
    if not _hubgrade_os.path.exists(_hubgrade_path):
        _hubgrade_refuse("the hub's configuration file %s does not exist" % _hubgrade_path)
    load_subconfig(_hubgrade_path)

_hubgrade_hub_url = (
    c.JupyterHub.db_url if "db_url" in c.JupyterHub else "sqlite:///jupyterhub.sqlite"
)
if _hubgrade_resolve(_hubgrade_hub_url) != _hubgrade_resolve(_hubgrade_expect_url):
    _hubgrade_refuse(
        "the hub's configuration uses the database %s, but hubgrade backed up %s; "
        "nothing was migrated (set spec.database to the database the hub uses)"
        % (_hubgrade_redact(_hubgrade_resolve(_hubgrade_hub_url)),
           _hubgrade_redact(_hubgrade_resolve(_hubgrade_expect_url)))
    )
c.JupyterHub.db_url = _hubgrade_database_url
"#,
        database_url = literal(database_url),
        expect_url = literal(expect_url),
        exit_code = WRONG_DATABASE_EXIT_CODE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_urls_are_python_string_literals() {
        let text = pinned_database_config(
            Some("/etc/jupyterhub/config \"x\".py"),
            "sqlite:////srv/copy.sqlite",
            "sqlite:////srv/jupyterhub.sqlite",
        );
        assert!(text.contains(r#"_hubgrade_hub_config = "/etc/jupyterhub/config \"x\".py""#));
        assert!(text.contains(r#"_hubgrade_database_url = "sqlite:////srv/copy.sqlite""#));
        assert!(text.ends_with("c.JupyterHub.db_url = _hubgrade_database_url\n"));
        let default = pinned_database_config(None, "a", "b");
        assert!(default.contains("_hubgrade_hub_config = None"));
    }
}
