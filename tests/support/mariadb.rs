//! A private MariaDB server for one test: Debian's mariadb-server binaries, a temporary data
//! directory owned by the `mysql` system user, a free port on 127.0.0.1, password login.
//! [`MariaDbServer::start_for_pods`] also listens on the real node's bridge address, for pods
//! (MariaDB 10.11 takes a list of addresses in `bind-address`; never 0.0.0.0: nothing guards
//! the machine's other interfaces). [`MariaDbServer::stop`] kills it at once (an outage) and
//! [`MariaDbServer::resume`] starts it again on the same port and data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{NodeNetwork, stderr};

/// A password that needs URL encoding, as real ones do.
pub const PASSWORD: &str = "my s3cr@t";
pub const PASSWORD_IN_URL: &str = "my%20s3cr%40t";

pub struct MariaDbServer {
    dir: tempfile::TempDir,
    /// `mariadbd`'s arguments, to start it again the same way ([`MariaDbServer::resume`]).
    args: Vec<String>,
    /// The running server; `None` while [`MariaDbServer::stop`]ped.
    server: Option<Child>,
    pub port: u16,
    /// Started for the real node's pods (see [`MariaDbServer::start_for_pods`]).
    pods: Option<NodeNetwork>,
}

impl MariaDbServer {
    pub fn start() -> MariaDbServer {
        MariaDbServer::start_with(false, None)
    }

    /// A server the real node's pods reach: it listens on 127.0.0.1 and on the node bridge's
    /// address (`NODE_IP`) only, without reverse DNS lookups of its clients; the user
    /// `hubgrade` logs in with its password from anywhere it can connect from. Fails when the
    /// bridge is missing (no real node running).
    pub fn start_for_pods() -> MariaDbServer {
        MariaDbServer::start_with(false, Some(NodeNetwork::require()))
    }

    /// A server that accepts TCP connections over TLS only (`require_secure_transport`), its
    /// certificate for 127.0.0.1 signed by a CA of its own: [`MariaDbServer::ca`].
    pub fn start_tls() -> MariaDbServer {
        MariaDbServer::start_with(true, None)
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca(&self) -> std::path::PathBuf {
        self.dir.path().join("ca.crt")
    }

    fn start_with(tls: bool, pods: Option<NodeNetwork>) -> MariaDbServer {
        let dir = tempfile::Builder::new()
            .prefix("hubgrade-mariadb-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        // Each server gets its own temporary directory: bootstraps running side by side in /tmp
        // collide on their temporary tables. One bootstrap at a time, for the same reason.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("tmp directory");
        let status = Command::new("chown")
            .args(["-R", "mysql:mysql"])
            .arg(dir.path())
            .status()
            .expect("chown");
        assert!(
            status.success(),
            "cannot give the data directory to the mysql user"
        );
        static BOOTSTRAP: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let bootstrap = BOOTSTRAP.lock().unwrap_or_else(|e| e.into_inner());
        let install = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=mysql",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--tmpdir={}", tmp.display()))
            .output()
            .expect("mariadb-install-db (.ci/run installs mariadb-server)");
        drop(bootstrap);
        assert!(
            install.status.success(),
            "mariadb-install-db failed: {}",
            stderr(&install)
        );
        let (port, bind) = match &pods {
            Some(pods) => (
                super::free_port_on(&["127.0.0.1", &pods.ip]),
                vec![
                    format!("--bind-address=127.0.0.1,{}", pods.ip),
                    "--skip-name-resolve".to_string(),
                ],
            ),
            None => (
                super::free_port(),
                vec!["--bind-address=127.0.0.1".to_string()],
            ),
        };
        let socket = dir.path().join("mysqld.sock");
        let mut tls_args = Vec::new();
        if tls {
            super::make_certificates(dir.path(), "mysql");
            let file = |name: &str| dir.path().join(name).display().to_string();
            tls_args = vec![
                format!("--ssl-cert={}", file("server.crt")),
                format!("--ssl-key={}", file("server.key")),
                format!("--ssl-ca={}", file("ca.crt")),
                "--require-secure-transport=ON".to_string(),
            ];
        }
        let mut args: Vec<String> = vec!["--no-defaults".into(), "--user=mysql".into()];
        args.extend(bind);
        args.push("--skip-log-bin".into());
        args.push("--innodb-flush-log-at-trx-commit=0".into());
        args.push("--innodb-buffer-pool-size=64M".into());
        args.push(format!("--datadir={}", data.display()));
        args.push(format!("--tmpdir={}", tmp.display()));
        args.extend(tls_args);
        args.push(format!("--port={port}"));
        args.push(format!("--socket={}", socket.display()));
        args.push(format!(
            "--pid-file={}",
            dir.path().join("mysqld.pid").display()
        ));
        args.push(format!(
            "--log-error={}",
            dir.path().join("error.log").display()
        ));
        let mut me = MariaDbServer {
            dir,
            args,
            server: None,
            port,
            pods,
        };
        me.resume();
        let create = format!(
            "CREATE USER 'hubgrade'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO 'hubgrade'@'%' WITH GRANT OPTION;"
        );
        let output = me.root(&["-e", &create]).expect("mariadb client");
        assert!(
            output.status.success(),
            "creating the hubgrade user: {}",
            stderr(&output)
        );
        me
    }

    /// Starts the server (again, after [`MariaDbServer::stop`]) on the same port and data, and
    /// waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.server.is_none(), "MariaDB is already running");
        let server = Command::new("mariadbd")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd");
        self.server = Some(server);
        let start = Instant::now();
        while self
            .root(&["-e", "SELECT 1"])
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            let exited = self
                .server
                .as_mut()
                .is_some_and(|s| s.try_wait().ok().flatten().is_some());
            if start.elapsed() > Duration::from_secs(60) || exited {
                let log =
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
                panic!("MariaDB did not start:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server at once (SIGKILL: an outage, a crash; InnoDB recovers on
    /// [`MariaDbServer::resume`]) and waits until it is gone.
    pub fn stop(&mut self) {
        let mut server = self.server.take().expect("MariaDB is running");
        server.kill().expect("killing mariadbd");
        server.wait().expect("waiting for mariadbd");
    }

    fn root(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        Command::new("mariadb")
            .args(["--no-defaults", "-uroot"])
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mysqld.sock").display()
            ))
            .args(args)
            .output()
    }

    /// JupyterHub's (SQLAlchemy) URL of `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql+pymysql://hubgrade:{PASSWORD_IN_URL}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// The (SQLAlchemy) URL of `database` for a hub in a pod: the node bridge's address, the
    /// password in the URL (PyMySQL ignores `MYSQL_PWD`, so z2jh's MySQL users write it there).
    /// Only for a server started by [`MariaDbServer::start_for_pods`].
    pub fn pod_url(&self, database: &str) -> String {
        let pods = self
            .pods
            .as_ref()
            .expect("a server started by MariaDbServer::start_for_pods");
        format!(
            "mysql+pymysql://hubgrade:{PASSWORD_IN_URL}@{}:{}/{database}",
            pods.ip, self.port
        )
    }

    /// An sqlx URL of `database` on 127.0.0.1, with the password.
    pub fn sqlx_url(&self, database: &str) -> String {
        format!(
            "mysql://hubgrade:{PASSWORD_IN_URL}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Runs SQL as the server's root user.
    pub fn sql(&self, sql: &str) {
        let output = self.root(&["-e", sql]).expect("mariadb client");
        assert!(output.status.success(), "{sql}: {}", stderr(&output));
    }

    fn session(&self, sql: &str) -> Child {
        Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "jupyterhub"])
            .arg(format!(
                "--socket={}",
                self.dir.path().join("mysqld.sock").display()
            ))
            .args(["-e", sql])
            .stdout(Stdio::null())
            .spawn()
            .expect("mariadb client")
    }
}

impl Drop for MariaDbServer {
    fn drop(&mut self) {
        let Some(server) = self.server.as_mut() else {
            return;
        };
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while server.try_wait().ok().flatten().is_none()
            && start.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = server.kill();
        let _ = server.wait();
    }
}

impl super::server_db::TestServer for MariaDbServer {
    const PASSWORD: &'static str = PASSWORD;
    const AUTHENTICATION_FAILED: &'static str = "Access denied for user 'hubgrade'";

    fn start() -> Self {
        MariaDbServer::start()
    }

    fn url(&self, database: &str) -> String {
        MariaDbServer::url(self, database)
    }

    fn url_with_password(&self, password: &str) -> String {
        format!("mysql://hubgrade:{password}@127.0.0.1:{}/mysql", self.port)
    }

    fn create_hub_database(&self) {
        self.sql("CREATE DATABASE jupyterhub CHARACTER SET utf8mb4");
    }

    fn hub_session(&self) -> Child {
        self.session("SELECT SLEEP(30)")
    }
}
