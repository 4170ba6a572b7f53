//! A private PostgreSQL server for one test: Debian's PostgreSQL binaries, a temporary data
//! directory owned by the `postgres` system user, a free port on 127.0.0.1, password login.
//! [`PgServer::start_for_pods`] also listens on the real node's bridge address, for pods.

use std::path::PathBuf;
use std::process::Command;

use super::{NodeNetwork, stderr};

/// A password that needs URL encoding, as real ones do.
pub const PASSWORD: &str = "s3cr@t pw";
pub const PASSWORD_IN_URL: &str = "s3cr%40t%20pw";

pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
    /// Started with TLS only (see [`PgServer::start_tls`]).
    tls: bool,
    /// Started for the real node's pods (see [`PgServer::start_for_pods`]).
    pods: Option<NodeNetwork>,
}

fn postgres_bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is not installed (.ci/run installs the postgresql package)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("postgres").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .expect("no PostgreSQL server binaries under /usr/lib/postgresql")
}

fn as_postgres(bin: &std::path::Path, tool: &str) -> Command {
    let mut command = Command::new("runuser");
    command.args(["-u", "postgres", "--"]).arg(bin.join(tool));
    command
}

impl PgServer {
    pub fn start() -> PgServer {
        PgServer::start_with(false, None)
    }

    /// A server the real node's pods reach: it listens on 127.0.0.1 and on the node bridge's
    /// address (`NODE_IP`), and takes password (scram-sha-256) logins from the pods' addresses
    /// (`NODE_POD_CIDR`) too. Fails when the bridge is missing (no real node running).
    pub fn start_for_pods() -> PgServer {
        PgServer::start_with(false, Some(NodeNetwork::require()))
    }

    /// A server that accepts TCP connections over TLS only (`hostssl`; plain ones are
    /// rejected), its certificate for 127.0.0.1 signed by a CA of its own: `ca.crt` in
    /// [`PgServer::ca`].
    pub fn start_tls() -> PgServer {
        PgServer::start_with(true, None)
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn start_with(tls: bool, pods: Option<NodeNetwork>) -> PgServer {
        let bin = postgres_bin();
        let dir = tempfile::Builder::new()
            .prefix("hubgrade-pg-")
            .tempdir()
            .expect("temp dir");
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(
            chown.success(),
            "cannot give the data directory to the postgres user"
        );
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("password file");
        let _ = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&pwfile)
            .status();
        let data = dir.path().join("data");
        let init = as_postgres(&bin, "initdb")
            .args([
                "-D",
                data.to_str().expect("path"),
                "-U",
                "hubgrade",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb");
        assert!(init.status.success(), "initdb failed: {}", stderr(&init));
        if tls {
            super::make_certificates(dir.path(), "postgres");
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\n\
                 hostssl all all 127.0.0.1/32 scram-sha-256\n\
                 hostnossl all all 0.0.0.0/0 reject\n",
            )
            .expect("pg_hba.conf");
        }
        let port = match &pods {
            Some(pods) => {
                let hba = data.join("pg_hba.conf");
                let mut rules = std::fs::read_to_string(&hba).expect("pg_hba.conf");
                rules.push_str(&format!(
                    "# the real node's pods\nhost all all {} scram-sha-256\n",
                    pods.pod_cidr
                ));
                std::fs::write(&hba, rules).expect("pg_hba.conf");
                super::free_port_on(&["127.0.0.1", &pods.ip])
            }
            None => super::free_port(),
        };
        let server = PgServer {
            dir,
            bin,
            port,
            tls,
            pods,
        };
        server.resume();
        server
    }

    /// Starts the server (again, after [`PgServer::stop`]) on the same port and data.
    pub fn resume(&self) {
        let data = self.dir.path().join("data");
        let listen = match &self.pods {
            Some(pods) => format!("127.0.0.1,{}", pods.ip),
            None => "127.0.0.1".to_string(),
        };
        let mut options = format!(
            "-p {} -k {} -c listen_addresses={listen} -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        );
        if self.tls {
            let dir = self.dir.path().display();
            options.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key"
            ));
        }
        let start = as_postgres(&self.bin, "pg_ctl")
            .args([
                "-D",
                data.to_str().expect("path"),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
            ])
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .arg("start")
            .output()
            .expect("pg_ctl start");
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        assert!(
            start.status.success(),
            "PostgreSQL did not start: {}\n{log}",
            stderr(&start)
        );
    }

    /// Stops the server at once (an outage); [`PgServer::resume`] brings it back.
    pub fn stop(&self) {
        let data = self.dir.path().join("data");
        let stop = as_postgres(&self.bin, "pg_ctl")
            .args([
                "-D",
                data.to_str().expect("path"),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output()
            .expect("pg_ctl stop");
        assert!(stop.status.success(), "pg_ctl stop: {}", stderr(&stop));
    }

    /// A plain (sqlx) URL of `database`, without the password.
    pub fn plain_url(&self, database: &str) -> String {
        format!("postgres://hubgrade@127.0.0.1:{}/{database}", self.port)
    }

    /// JupyterHub's (SQLAlchemy) URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgresql+psycopg2://hubgrade:{PASSWORD_IN_URL}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The (SQLAlchemy) URL of `database` for a hub in a pod, as z2jh users write `hub.db.url`:
    /// the node bridge's address, no password (z2jh hands `hub.db.password` to psycopg2 through
    /// `PGPASSWORD`). Only for a server started by [`PgServer::start_for_pods`].
    pub fn pod_url(&self, database: &str) -> String {
        let pods = self
            .pods
            .as_ref()
            .expect("a server started by PgServer::start_for_pods");
        format!("postgresql://hubgrade@{}:{}/{database}", pods.ip, self.port)
    }

    /// An sqlx URL of `database` on 127.0.0.1, with the password.
    pub fn sqlx_url(&self, database: &str) -> String {
        format!(
            "postgres://hubgrade:{PASSWORD_IN_URL}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// A client of `database` through the server's Unix socket (no address), naming itself
    /// `application`, idle for 60 seconds: someone else's program on the hub's database.
    pub fn socket_session(&self, database: &str, application: &str) -> std::process::Child {
        Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "hubgrade",
                "-d",
                database,
            ])
            .args(["-c", "SELECT pg_sleep(60)"])
            .env("PGPASSWORD", PASSWORD)
            .env("PGAPPNAME", application)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("psql")
    }

    /// Runs SQL in the maintenance database, as the server's superuser.
    pub fn sql(&self, sql: &str) {
        let output = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "hubgrade",
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
            .env("PGPASSWORD", PASSWORD)
            .output()
            .expect("psql");
        assert!(output.status.success(), "{sql}: {}", stderr(&output));
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = as_postgres(&self.bin, "pg_ctl")
            .args([
                "-D",
                data.to_str().unwrap_or_default(),
                "-m",
                "immediate",
                "stop",
            ])
            .output();
    }
}

impl super::server_db::TestServer for PgServer {
    const PASSWORD: &'static str = PASSWORD;
    const AUTHENTICATION_FAILED: &'static str = "password authentication failed";

    fn start() -> Self {
        PgServer::start()
    }

    fn url(&self, database: &str) -> String {
        PgServer::url(self, database)
    }

    fn url_with_password(&self, password: &str) -> String {
        format!(
            "postgresql://hubgrade:{password}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    fn create_hub_database(&self) {
        self.sql("CREATE DATABASE jupyterhub");
    }

    fn hub_session(&self) -> std::process::Child {
        Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "hubgrade",
                "-d",
                "jupyterhub",
            ])
            .args(["-c", "SELECT pg_sleep(30)"])
            .env("PGPASSWORD", PASSWORD)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("psql")
    }
}
