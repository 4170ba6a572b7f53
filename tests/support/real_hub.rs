//! Real end-to-end harness: the z2jh-shaped hub of examples/z2jh-hub/real/hub.yaml running for
//! real on the local cluster's real node (JupyterHub 4.1.6 from k8s-hub 3.3.8, its proxy, its
//! Services), a database made by that running hub through its REST API, and the operator either
//! as a host process with the chart's RBAC token (as tests/support/e2e.rs runs it) or installed
//! in the cluster by `helm install` from its image. No stand-in plays anything here: a missing
//! real node, registry or image fails the test with a message naming it.
//!
//! The hub's database is SQLite on its claim (z2jh's `hub.db.type: sqlite-pvc`, the default), or
//! a database of its own on a PostgreSQL or MariaDB server this machine runs for the node's pods
//! ([`RealHub::new_on_server`], `hub.db.type: postgres` / `mysql`). [`RealHub::new_prefixed`]
//! lays the same hub out with z2jh's release-prefixed names and a sidecar container.
//!
//! User servers are real too: KubeSpawner starts them in their own pods on the real node,
//! through the hub's REST API ([`RealHub::start_user_server`]), and the proxy routes
//! `/user/<name>/` to them. No singleuser image exists here, so the manifest's
//! `hub.config.KubeSpawner` makes each one a stand-in from the hub's own image: a Python HTTP
//! server on port 8888 answering every GET with 200 and "user server of <name>"
//! ([`user_server_body`]). The hub also has the JupyterHub service [`DRAIN_SERVICE`] with its own
//! token (the Secret key [`DRAIN_TOKEN_KEY`], [`RealHub::drain_token_secret`]) and the least
//! scopes that list the active servers and stop one: `list:users` and `servers` (tried on 4.1.6
//! and 5.5.0: without `list:users` `GET /hub/api/users` is refused, without `servers` or
//! `read:servers` the users come without their `servers`, without `servers` stopping is refused).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    Event, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use sqlx::{AssertSqlSafe, Connection};

use super::e2e::{log_file, write_token_kubeconfig};
use super::mariadb::MariaDbServer;
use super::postgres::PgServer;
use super::{
    TestNamespace, client, cluster_bin, install_crd, kubectl, kubectl_with_input, repo, stderr,
    stdout, wait_until,
};
use hubgrade::api::HubUpgrade;
use hubgrade::machine::Phase;

pub const OLD_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:3.3.8";
pub const NEW_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:4.4.0";
/// k8s-hub:4.4.0 plus a migration after 5.5.0's head that fails halfway (tests/images/).
pub const BROKEN_MIGRATION_IMAGE: &str = "ghcr.io/hubgrade/test-k8s-hub:4.4.0-broken-migration";
/// k8s-hub:4.4.0 whose `upgrade-db` works and whose hub exits at once (tests/images/).
pub const NEVER_READY_IMAGE: &str = "ghcr.io/hubgrade/test-k8s-hub:4.4.0-never-ready";
/// The alembic heads of JupyterHub 4.1.6 and 5.5.0.
pub const OLD_HEAD: &str = "0eee8c825d24";
pub const NEW_HEAD: &str = "4621fec11365";
/// The sidecar container of a hub made by [`RealHub::new_prefixed`] (z2jh's
/// `hub.extraContainers`), and its image: the busybox the real node's registry has.
pub const SIDECAR: &str = "sidecar";
pub const SIDECAR_IMAGE: &str = "docker.io/library/busybox:1.36";

const NODE: &str = "real-node-0";
const MANIFEST: &str = "examples/z2jh-hub/real/hub.yaml";
const IMAGES: &[&str] = &[
    "k8s-hub:3.3.8",
    "k8s-hub:4.4.0",
    "configurable-http-proxy",
    "busybox",
    "hubgrade",
    "test-k8s-hub",
];

/// One real hub at a time: two cores cannot run several hubs and migrations at once and still
/// measure a downtime.
/// The repository of the test-only hub images (tests/images/build.sh), which the operators of
/// these tests allow besides the hub's own.
pub const TEST_HUB_REPOSITORY: &str = "ghcr.io/hubgrade/test-k8s-hub";

/// The JupyterHub service of the manifest that hubgrade's `spec.drain` authenticates as (its
/// role: `list:users` and `servers`).
pub const DRAIN_SERVICE: &str = "hubgrade";
/// The hub Secret's key holding [`DRAIN_SERVICE`]'s token, as z2jh's templates/hub/secret.yaml
/// renders `hub.services.<name>.apiToken`.
pub const DRAIN_TOKEN_KEY: &str = "hub.services.hubgrade.apiToken";
/// How long a user server may take to be ready (KubeSpawner's `start_timeout` in the manifest).
const USER_SERVER_LIMIT: Duration = Duration::from_secs(300);

static ONE_HUB_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How the operator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operator {
    /// `hubgrade run` on this machine with the token of the chart's ServiceAccount.
    HostProcess,
    /// `helm install` of charts/hubgrade, its image from the local registry, on the real node.
    Helm,
}

pub struct RealHub {
    pub client: Client,
    pub namespace: TestNamespace,
    /// Logs and the operator's kubeconfig.
    pub dir: PathBuf,
    /// The folder the hub sees as /srv/jupyterhub (the claim's folder, or its `subPath`); empty
    /// for a hub whose database is on a server (it has no claim).
    pub volume: PathBuf,
    /// proxy-public's ClusterIP, reachable from this machine.
    pub proxy_ip: String,
    /// The hubgrade image the Jobs (and the Helm-installed operator) run, by digest.
    pub agent_image: String,
    /// When this hub's turn came (tests wait for one another).
    pub started: Instant,
    api_token: String,
    /// [`DRAIN_SERVICE`]'s token (the manifest's `@HUBGRADE_API_TOKEN@`).
    drain_token: String,
    operator: Option<Child>,
    operator_mode: Operator,
    operator_kubeconfig: PathBuf,
    /// The host-process operator's `--ledger-url`: an SQLite file in `dir` unless a test says
    /// ([`RealHub::use_ledger`]).
    pub ledger_url: String,
    /// The hub's database on a server ([`RealHub::new_on_server`]); None: SQLite on its claim.
    server_database: Option<ServerDatabase>,
    /// The names of the hub's Deployment and claim: `hub` and `hub-db-dir` but for
    /// [`RealHub::new_prefixed`].
    pub names: HubNames,
    _serial: tokio::sync::MutexGuard<'static, ()>,
}

/// The names z2jh gives a hub's objects. Its prefix (`jupyterhub.fullname`, see z2jh's
/// templates/_helpers-names.tpl) is `fullnameOverride` when that is a string; with
/// `fullnameOverride: null` it is the release name if that contains the chart's name
/// (`jupyterhub`), else `<release>-jupyterhub`. The hub Deployment, its ServiceAccount, Role,
/// RoleBinding, ConfigMap and Secret are all `<prefix>-hub`, its claim `<prefix>-hub-db-dir`.
/// The default is examples/z2jh-hub/real/hub.yaml's (`fullnameOverride: ""`, z2jh's default):
/// `hub` and `hub-db-dir`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubNames {
    /// The hub Deployment (and its ServiceAccount, Role, RoleBinding, ConfigMap and Secret).
    pub deployment: String,
    /// The hub's PersistentVolumeClaim (`hub.db.type: sqlite-pvc`).
    pub claim: String,
}

impl Default for HubNames {
    fn default() -> HubNames {
        HubNames {
            deployment: "hub".into(),
            claim: "hub-db-dir".into(),
        }
    }
}

impl HubNames {
    /// The names z2jh renders for `release` with `fullnameOverride: null`: release `prod`
    /// gives `prod-jupyterhub-hub` and `prod-jupyterhub-hub-db-dir`; release `jupyterhub-prod`
    /// gives `jupyterhub-prod-hub`.
    pub fn for_release(release: &str) -> HubNames {
        let prefix = if release.contains("jupyterhub") {
            release.to_string()
        } else {
            format!("{release}-jupyterhub")
        };
        HubNames {
            deployment: format!("{prefix}-hub"),
            claim: format!("{prefix}-hub-db-dir"),
        }
    }
}

/// A database server this machine runs for the real node's pods, started by
/// [`PgServer::start_for_pods`] or [`MariaDbServer::start_for_pods`].
pub enum ServerDb {
    Postgres(PgServer),
    MariaDb(MariaDbServer),
}

impl ServerDb {
    /// A fresh PostgreSQL server for the node's pods.
    pub fn postgres() -> ServerDb {
        ServerDb::Postgres(PgServer::start_for_pods())
    }

    /// A fresh MariaDB server for the node's pods.
    pub fn mariadb() -> ServerDb {
        ServerDb::MariaDb(MariaDbServer::start_for_pods())
    }

    /// z2jh's `hub.db.type` for a database on this server.
    pub fn hub_db_type(&self) -> &'static str {
        match self {
            ServerDb::Postgres(_) => "postgres",
            ServerDb::MariaDb(_) => "mysql",
        }
    }
}

/// A hub's database on a [`ServerDb`] (the server lives as long as the hub). Every query opens
/// its own connection and closes it before returning: nothing of the test stays connected while
/// the operator clones the database (PostgreSQL refuses `CREATE DATABASE ... TEMPLATE` of a
/// database in use).
pub struct ServerDatabase {
    server: ServerDb,
    name: String,
}

/// A database name of the hub of namespace `ns`, unique per namespace, short enough for the
/// `_failed_<YYYYmmddHHMMSS>` and backup names the operator derives from it (PostgreSQL keeps 63
/// bytes of a name, MySQL 64).
fn server_database_name(ns: &str) -> String {
    let name: Vec<char> = ns
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    // The end of a test namespace's name is what makes it unique.
    let tail: String = name[name.len().saturating_sub(24)..].iter().collect();
    format!("hub_{tail}")
}

impl ServerDatabase {
    /// Creates the hub's empty database.
    fn create(&self) {
        match &self.server {
            ServerDb::Postgres(server) => server.sql(&format!("CREATE DATABASE {}", self.name)),
            ServerDb::MariaDb(server) => server.sql(&format!(
                "CREATE DATABASE {} CHARACTER SET utf8mb4",
                self.name
            )),
        }
    }

    /// The hub's database (a PostgreSQL database, a MySQL schema).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn server(&self) -> &ServerDb {
        &self.server
    }

    /// z2jh's `hub.db.type`: `postgres` or `mysql`.
    pub fn hub_db_type(&self) -> &'static str {
        self.server.hub_db_type()
    }

    /// An sqlx URL (`postgres://` or `mysql://`, on 127.0.0.1, with the password) of `database`
    /// on the server: connect, query and close.
    pub fn sqlx_url(&self, database: &str) -> String {
        match &self.server {
            ServerDb::Postgres(server) => server.sqlx_url(database),
            ServerDb::MariaDb(server) => server.sqlx_url(database),
        }
    }

    /// The first column of `sql`'s rows, as text, run in `database`.
    pub async fn strings_in(&self, database: &str, sql: &str) -> Vec<String> {
        let url = self.sqlx_url(database);
        let rows = match &self.server {
            ServerDb::Postgres(_) => {
                let mut db = sqlx::PgConnection::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {database}: {e}"));
                let rows = sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                    .fetch_all(&mut db)
                    .await;
                db.close().await.expect("closing");
                rows
            }
            ServerDb::MariaDb(_) => {
                let mut db = sqlx::MySqlConnection::connect(&url)
                    .await
                    .unwrap_or_else(|e| panic!("connecting to {database}: {e}"));
                let rows = sqlx::query_scalar(AssertSqlSafe(sql.to_string()))
                    .fetch_all(&mut db)
                    .await;
                db.close().await.expect("closing");
                rows
            }
        };
        rows.unwrap_or_else(|e| panic!("{sql} in {database}: {e}"))
    }

    /// The first column of `sql`'s rows, as text, run in the hub's database.
    pub async fn strings(&self, sql: &str) -> Vec<String> {
        self.strings_in(&self.name, sql).await
    }

    /// Every database (PostgreSQL) or schema (MySQL) on the server, sorted.
    pub async fn databases(&self) -> Vec<String> {
        let (database, sql) = match &self.server {
            ServerDb::Postgres(_) => ("postgres", "SELECT datname::text FROM pg_database"),
            ServerDb::MariaDb(_) => (
                "mysql",
                "SELECT schema_name FROM information_schema.schemata",
            ),
        };
        let mut names = self.strings_in(database, sql).await;
        names.sort();
        names
    }

    /// The hub's tables (PostgreSQL's schema `public`, the MySQL schema), sorted.
    pub async fn tables(&self) -> Vec<String> {
        let sql = match &self.server {
            ServerDb::Postgres(_) => {
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            }
            ServerDb::MariaDb(_) => {
                "SELECT table_name FROM information_schema.tables \
                 WHERE table_schema = DATABASE() AND table_type = 'BASE TABLE' ORDER BY 1"
            }
        };
        self.strings(sql).await
    }

    /// The number of rows of every table of the hub's database.
    pub async fn row_counts(&self) -> BTreeMap<String, i64> {
        let tables = self.tables().await;
        let quoted = |table: &str| match &self.server {
            ServerDb::Postgres(_) => format!("\"{}\"", table.replace('"', "\"\"")),
            ServerDb::MariaDb(_) => format!("`{}`", table.replace('`', "``")),
        };
        let union: Vec<String> = tables
            .iter()
            .map(|t| {
                format!(
                    "SELECT CONCAT('{}', ' ', count(*)) FROM {}",
                    t.replace('\'', "''"),
                    quoted(t)
                )
            })
            .collect();
        if union.is_empty() {
            return BTreeMap::new();
        }
        // One statement: the counts of one moment.
        let counts = self.strings(&union.join(" UNION ALL ")).await;
        let counts: BTreeMap<String, i64> = counts
            .iter()
            .map(|row| {
                let (table, count) = row.rsplit_once(' ').expect("table count");
                (table.to_string(), count.parse().expect("a count"))
            })
            .collect();
        assert_eq!(counts.len(), tables.len(), "a count per table: {counts:?}");
        counts
    }

    /// The hub database's alembic revision (`alembic_version.version_num`).
    pub async fn revision(&self) -> String {
        let revisions = self
            .strings("SELECT version_num FROM alembic_version")
            .await;
        assert_eq!(revisions.len(), 1, "one alembic revision: {revisions:?}");
        revisions.into_iter().next().unwrap_or_default()
    }

    /// The user names in the hub database's `users` table, sorted.
    pub async fn user_names(&self) -> Vec<String> {
        let mut names = self.strings("SELECT name FROM users").await;
        names.sort();
        names
    }
}

impl Drop for RealHub {
    fn drop(&mut self) {
        self.kill_operator();
        super::assert_no_secret_in_records(
            &self.namespace.name,
            &[&self.api_token, &self.drain_token],
        );
        if self.operator_mode == Operator::HostProcess {
            super::assert_clean_operator_log(
                &self.operator_log(),
                &[&self.api_token, &self.drain_token],
            );
        }
    }
}

/// The images (built when missing, cached by content) pushed into the real node's registry;
/// returns the hubgrade image (this build's binary) by digest, so that a node holding an older
/// build under the same tag still runs this one.
pub fn push_images() -> String {
    let port = std::env::var("REGISTRY_PORT").unwrap_or_else(|_| "25000".into());
    let registry = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let output = Command::new(repo().join("tests/images/push.sh"))
        .arg(&registry)
        .args(IMAGES)
        .env("HUBGRADE_BIN", env!("CARGO_BIN_EXE_hubgrade"))
        .output()
        .expect("running tests/images/push.sh");
    assert!(
        output.status.success(),
        "building or pushing the images {IMAGES:?} into the real node's registry {registry} failed \
         (is the registry up? `make cluster-up`; are the image tools installed? `make deps`):\n{}",
        stderr(&output)
    );
    eprintln!("images built and pushed in {:?}", started.elapsed());
    let pushed = stdout(&output);
    let hubgrade = pushed
        .lines()
        .find(|l| l.contains("/ghcr.io/hubgrade/hubgrade:"))
        .unwrap_or_else(|| panic!("push.sh did not push the hubgrade image:\n{pushed}"));
    hubgrade
        .strip_prefix(&format!("{registry}/"))
        .unwrap_or(hubgrade)
        .to_string()
}

pub async fn require_real_node(client: &Client) {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = nodes.get_opt(NODE).await.expect("reading nodes");
    assert!(
        node.is_some(),
        "the real node {NODE} is missing: start the cluster with `make cluster-up` \
         (without HUBGRADE_REAL_NODE=0)"
    );
}

/// 32 random bytes as hex, for the hub's Secret.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The real hub's manifest with fresh secrets (`api_token` for the test's service,
/// `drain_token` for [`DRAIN_SERVICE`]), and the claim mounted at `sub_path` if given (z2jh's
/// `hub.db.pvc.subPath`).
fn manifest(api_token: &str, drain_token: &str, sub_path: Option<&str>) -> String {
    let mut text = std::fs::read_to_string(repo().join(MANIFEST)).expect(MANIFEST);
    for placeholder in ["@PROXY_AUTH_TOKEN@", "@CRYPT_KEY@", "@COOKIE_SECRET@"] {
        text = text.replace(placeholder, &random_hex());
    }
    text = text.replace("@SERVICE_API_TOKEN@", api_token);
    // In values.yaml and as the Secret key DRAIN_TOKEN_KEY.
    assert_eq!(
        text.matches("@HUBGRADE_API_TOKEN@").count(),
        2,
        "{MANIFEST} should have the placeholder @HUBGRADE_API_TOKEN@ twice"
    );
    text = text.replace("@HUBGRADE_API_TOKEN@", drain_token);
    if let Some(sub_path) = sub_path {
        let mount = "- {name: pvc, mountPath: /srv/jupyterhub}";
        assert!(text.contains(mount), "{MANIFEST} has no line {mount}");
        text = text
            .replace(
                mount,
                &format!("- {{name: pvc, mountPath: /srv/jupyterhub, subPath: {sub_path}}}"),
            )
            .replace("pvc: {}", &format!("pvc: {{subPath: {sub_path}}}"));
    }
    text
}

/// `text` (the manifest of [`manifest`]) as z2jh renders it for a hub whose database is `db`
/// on a server: `hub.db.type` and `hub.db.url` in values.yaml; the Secret key `hub.db.password`
/// for PostgreSQL (z2jh's jupyterhub_config.py exports it as `PGPASSWORD`; MySQL users put the
/// password in the URL, PyMySQL ignores `MYSQL_PWD`); no claim `hub-db-dir`, no volume `pvc`
/// and no mount of it (z2jh has them for `sqlite-pvc` only).
fn server_manifest(text: &str, db: &ServerDatabase) -> String {
    fn replace_once(text: &str, from: &str, to: &str) -> String {
        assert_eq!(
            text.matches(from).count(),
            1,
            "{MANIFEST} should have the text {from:?} once"
        );
        text.replace(from, to)
    }
    let (url, password) = match &db.server {
        ServerDb::Postgres(server) => (server.pod_url(&db.name), Some(super::postgres::PASSWORD)),
        ServerDb::MariaDb(server) => (server.pod_url(&db.name), None),
    };
    let mut text = replace_once(
        text,
        "        type: sqlite-pvc\n        pvc: {}\n",
        &format!("        type: {}\n        url: {url}\n", db.hub_db_type()),
    );
    if let Some(password) = password {
        // A JSON string is a YAML double-quoted scalar.
        let key = format!("stringData:\n  hub.db.password: {}\n", json!(password));
        text = replace_once(&text, "stringData:\n", &key);
    }
    text = replace_once(
        &text,
        "        - name: pvc\n          persistentVolumeClaim: {claimName: hub-db-dir}\n",
        "",
    );
    text = replace_once(
        &text,
        "            - {name: pvc, mountPath: /srv/jupyterhub}\n",
        "",
    );
    let documents: Vec<&str> = text.split("\n---\n").collect();
    let kept: Vec<&str> = documents
        .iter()
        .copied()
        .filter(|d| !d.lines().any(|l| l == "kind: PersistentVolumeClaim"))
        .collect();
    assert_eq!(
        kept.len() + 1,
        documents.len(),
        "{MANIFEST} should have one PersistentVolumeClaim"
    );
    let text = kept.join("\n---\n");
    let named: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter(|l| l.contains("hub-db-dir") || l.contains("name: pvc"))
        .collect();
    assert!(
        named.is_empty(),
        "{MANIFEST} still names the claim for a database on a server: {named:?}"
    );
    text
}

/// `text` (the manifest of [`manifest`]) as z2jh renders it for release `release` with
/// `fullnameOverride: null` (`names`, [`HubNames::for_release`]) and one container in
/// `hub.extraContainers`:
/// - the hub Deployment, its ServiceAccount, Role, RoleBinding, ConfigMap and Secret are
///   `names.deployment`, its claim `names.claim`, and so is every reference to them (the pod's
///   `serviceAccountName`, its volumes `config`, `secret` and `pvc`, the RoleBinding's subject
///   and role, the `secretKeyRef`s of the hub's and the proxy's environment);
/// - the `release` labels and selectors, KubeSpawner's `common_labels` and `HELM_RELEASE_NAME`
///   name `release`;
/// - the container [`SIDECAR`] ([`SIDECAR_IMAGE`], a shell sleeping in a loop, the hub's
///   restricted securityContext) comes after the container `hub`, where z2jh 4 puts
///   `hub.extraContainers` (z2jh 3 put them before it: jupyterhub/zero-to-jupyterhub-k8s#3546).
///
/// The Services keep their names (`hub`, `proxy-api`, `proxy-public`): z2jh would prefix them
/// too, but the operator never reads a Service, and the hub and the proxy find one another
/// through the variables the kubelet derives from those names (`$HUB_SERVICE_HOST`,
/// `$PROXY_API_SERVICE_HOST`, `$PROXY_PUBLIC_SERVICE_HOST`; the local cluster has no DNS),
/// which the ConfigMap's jupyterhub_config.py and the proxy's command use as they are.
fn prefixed_manifest(text: &str, release: &str, names: &HubNames) -> String {
    fn replace_n(text: &str, from: &str, to: &str, times: usize) -> String {
        assert_eq!(
            text.matches(from).count(),
            times,
            "{MANIFEST} should have the text {from:?} {times} time(s)"
        );
        text.replace(from, to)
    }
    let (hub, claim) = (names.deployment.as_str(), names.claim.as_str());
    // The objects named `hub` but the Service.
    let kind = |document: &str| -> String {
        document
            .lines()
            .find_map(|l| l.strip_prefix("kind: "))
            .unwrap_or_default()
            .to_string()
    };
    let mut renamed = 0;
    let documents: Vec<String> = text
        .split("\n---\n")
        .map(|document| {
            let metadata = "metadata:\n  name: hub\n";
            if kind(document) != "Service" && document.contains(metadata) {
                renamed += 1;
                document.replacen(metadata, &format!("metadata:\n  name: {hub}\n"), 1)
            } else {
                document.to_string()
            }
        })
        .collect();
    assert_eq!(
        renamed, 6,
        "{MANIFEST} should have six objects named hub besides the Service (ServiceAccount, Role, \
         RoleBinding, ConfigMap, Secret, Deployment)"
    );
    let mut text = documents.join("\n---\n");
    for (from, to, times) in [
        (
            "metadata:\n  name: hub-db-dir\n".to_string(),
            format!("metadata:\n  name: {claim}\n"),
            1,
        ),
        (
            "{kind: ServiceAccount, name: hub}".into(),
            format!("{{kind: ServiceAccount, name: {hub}}}"),
            1,
        ),
        (
            "{apiGroup: rbac.authorization.k8s.io, kind: Role, name: hub}".into(),
            format!("{{apiGroup: rbac.authorization.k8s.io, kind: Role, name: {hub}}}"),
            1,
        ),
        (
            "serviceAccountName: hub\n".into(),
            format!("serviceAccountName: {hub}\n"),
            1,
        ),
        (
            "configMap: {name: hub}".into(),
            format!("configMap: {{name: {hub}}}"),
            1,
        ),
        (
            "secret: {secretName: hub}".into(),
            format!("secret: {{secretName: {hub}}}"),
            1,
        ),
        (
            "persistentVolumeClaim: {claimName: hub-db-dir}".into(),
            format!("persistentVolumeClaim: {{claimName: {claim}}}"),
            1,
        ),
        // Three in the hub's environment, one in the proxy's.
        (
            "secretKeyRef: {name: hub, ".into(),
            format!("secretKeyRef: {{name: {hub}, "),
            4,
        ),
        (
            "\"release\": \"jhub\"".into(),
            format!("\"release\": \"{release}\""),
            1,
        ),
        (
            "{name: HELM_RELEASE_NAME, value: jhub}".into(),
            format!("{{name: HELM_RELEASE_NAME, value: {release}}}"),
            1,
        ),
    ] {
        text = replace_n(&text, &from, &to, times);
    }
    assert!(
        text.contains("release: jhub"),
        "{MANIFEST} has no label release: jhub"
    );
    text = text.replace("release: jhub", &format!("release: {release}"));
    // hub.extraContainers, after the hub container (its last line is its probe's).
    let last = "            failureThreshold: 1000\n";
    let sidecar: String = [
        last,
        &format!("        - name: {SIDECAR}\n"),
        &format!("          image: {SIDECAR_IMAGE}\n"),
        "          command: [sh, -c, \"while true; do sleep 5; done\"]\n",
        "          securityContext:\n",
        "            runAsUser: 1000\n",
        "            runAsGroup: 1000\n",
        "            allowPrivilegeEscalation: false\n",
    ]
    .concat();
    text = replace_n(&text, last, &sidecar, 1);
    // Nothing but the Service `hub`, its port and the container `hub` is still named `hub`.
    let stale: Vec<String> = text
        .split("\n---\n")
        .filter(|document| kind(document) != "Service")
        .flat_map(|document| document.lines().map(str::to_string).collect::<Vec<_>>())
        .filter(|l| !l.trim_start().starts_with('#') && l.trim() != "- name: hub")
        .filter(|l| {
            let l = l.replace("component: hub", "");
            l.contains("jhub")
                || l.contains(": hub,")
                || l.contains(": hub}")
                || l.ends_with(": hub")
                || l.replace(claim, "").contains("hub-db-dir")
        })
        .collect();
    assert!(
        stale.is_empty(),
        "{MANIFEST} still names the hub's objects by z2jh's unprefixed names: {stale:?}"
    );
    text
}

/// The hub image line of examples/z2jh-hub/real/hub.yaml, which the umbrella chart templates.
const HUB_IMAGE_LINE: &str = "image: quay.io/jupyterhub/k8s-hub:3.3.8";

/// Writes the umbrella chart of [`RealHub::new_helm_release`] into `dir`: `manifest` as the
/// `jupyterhub` subchart, the hub image from its values, and hubgrade's hooks.
fn write_umbrella(dir: &Path, manifest: &str) {
    let hooks = "examples/helm/umbrella/templates/hubgrade-hooks.yaml";
    let sub = dir.join("charts/jupyterhub");
    for folder in [dir.join("templates"), sub.join("templates")] {
        std::fs::create_dir_all(folder).expect("chart folders");
    }
    assert_eq!(
        manifest.matches(HUB_IMAGE_LINE).count(),
        1,
        "{MANIFEST} should have one line {HUB_IMAGE_LINE}"
    );
    let templated = manifest.replace(
        HUB_IMAGE_LINE,
        r#"image: "{{ .Values.hub.image.name }}:{{ .Values.hub.image.tag }}""#,
    );
    let files = [
        (
            dir.join("Chart.yaml"),
            "apiVersion: v2\nname: jhub-site\nversion: 1.0.0\n".to_string(),
        ),
        (
            dir.join("values.yaml"),
            std::fs::read_to_string(repo().join("examples/helm/umbrella/values.yaml"))
                .expect("examples/helm/umbrella/values.yaml"),
        ),
        (
            dir.join("templates/hubgrade-hooks.yaml"),
            std::fs::read_to_string(repo().join(hooks)).expect(hooks),
        ),
        (
            sub.join("Chart.yaml"),
            "apiVersion: v2\nname: jupyterhub\nversion: 3.3.8\nappVersion: 4.1.6\n".to_string(),
        ),
        (
            sub.join("values.yaml"),
            "hub:\n  image: {name: quay.io/jupyterhub/k8s-hub, tag: \"3.3.8\"}\n".to_string(),
        ),
        (sub.join("templates/hub.yaml"), templated),
    ];
    for (path, text) in files {
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

/// `helm` of the pinned version on the local cluster, in namespace `ns`.
pub fn helm(ns: &str, args: &[&str]) -> Command {
    let mut command = Command::new(cluster_bin().join("helm"));
    command
        .args(args)
        .args(["--namespace", ns, "--kubeconfig"])
        .arg(super::kubeconfig());
    command
}

/// The umbrella chart's values for a hub on `hub_image`: the hooks run `hook_image` on the real
/// node (what a user's cluster would not need: a node selector and toleration).
pub fn helm_values(hook_image: &str, hub_image: &str) -> Vec<String> {
    let (name, tag) = hub_image.rsplit_once(':').expect("a tagged image");
    [
        format!("hubgrade.image={hook_image}"),
        "hubgrade.timeout=10m".to_string(),
        "hubgrade.nodeSelector.hubgrade\\.io/node=real".to_string(),
        "hubgrade.tolerations[0].key=hubgrade.io/real-node".to_string(),
        "hubgrade.tolerations[0].operator=Exists".to_string(),
        "hubgrade.tolerations[0].effect=NoSchedule".to_string(),
        format!("jupyterhub.hub.image.name={name}"),
        format!("jupyterhub.hub.image.tag={tag}"),
    ]
    .into_iter()
    .flat_map(|value| ["--set".to_string(), value])
    .collect()
}

impl RealHub {
    /// A running real hub (4.1.6) with ≥ 200 users, a group and user tokens made through its
    /// API, and a running operator.
    pub async fn new(prefix: &str, sub_path: Option<&str>, operator: Operator) -> RealHub {
        RealHub::start(prefix, sub_path, operator, None, None, None).await
    }

    /// The same hub (4.1.6, its proxy, a running operator) whose database is a fresh one on
    /// `server`, made for this namespace ([`ServerDatabase::name`]): z2jh's `hub.db.type:
    /// postgres` with `hub.db.url: postgresql://hubgrade@NODE_IP:PORT/<db>` and the Secret key
    /// `hub.db.password`, or `hub.db.type: mysql` with `hub.db.url:
    /// mysql+pymysql://hubgrade:<password>@NODE_IP:PORT/<db>`; no claim. JupyterHub makes its
    /// schema in the empty database as it starts. Query the database with
    /// [`RealHub::server_database`]; [`RealHub::volume`] is empty and [`RealHub::database`]
    /// fails for such a hub.
    pub async fn new_on_server(prefix: &str, server: ServerDb, operator: Operator) -> RealHub {
        RealHub::start(prefix, None, operator, None, Some(server), None).await
    }

    /// The same hub, installed by `helm install RELEASE` of an umbrella chart as z2jh admins
    /// have one: the hub's manifests as its `jupyterhub` subchart (the hub image from
    /// `jupyterhub.hub.image`, as in z2jh) and hubgrade's hooks, the file
    /// examples/helm/umbrella/templates/hubgrade-hooks.yaml as the README tells users to copy it.
    /// The chart is in [`RealHub::umbrella`]; its values are [`RealHub::helm_values`].
    pub async fn new_helm_release(prefix: &str, release: &str, operator: Operator) -> RealHub {
        RealHub::start(prefix, None, operator, Some(release), None, None).await
    }

    /// The same hub (4.1.6 on SQLite on its claim, its proxy, a running operator) laid out as
    /// z2jh renders it for the Helm release `release` with `fullnameOverride: null`: its
    /// Deployment, ServiceAccount, Role, RoleBinding, ConfigMap and Secret named
    /// `<release>-jupyterhub-hub` (`<release>-hub` when the release's name contains
    /// `jupyterhub`), its claim `<that>-db-dir` ([`HubNames::for_release`], in
    /// [`RealHub::names`]), and a sidecar in `hub.extraContainers`: the container [`SIDECAR`]
    /// after the container `hub`. The Services keep their unprefixed names (see
    /// `prefixed_manifest`). [`RealHub::apply_upgrade`], [`RealHub::hub_image`] and
    /// [`RealHub::wait_for_hub`] act on the prefixed Deployment.
    pub async fn new_prefixed(prefix: &str, release: &str, operator: Operator) -> RealHub {
        RealHub::start(prefix, None, operator, None, None, Some(release)).await
    }

    /// `prefixed`: the release of [`RealHub::new_prefixed`].
    async fn start(
        prefix: &str,
        sub_path: Option<&str>,
        operator: Operator,
        helm_release: Option<&str>,
        server: Option<ServerDb>,
        prefixed: Option<&str>,
    ) -> RealHub {
        let names = prefixed.map_or_else(HubNames::default, HubNames::for_release);
        let serial = ONE_HUB_AT_A_TIME.lock().await;
        let turn = Instant::now();
        let client = client().await;
        require_real_node(&client).await;
        let agent_image = push_images();
        install_crd(&client).await;
        let namespace = TestNamespace::new(&client, prefix).await;
        let ns = namespace.name.clone();
        let dir = repo().join("target/e2e-real").join(&ns);
        std::fs::create_dir_all(&dir).expect("log directory");

        let server_database = server.map(|server| {
            let database = ServerDatabase {
                name: server_database_name(&ns),
                server,
            };
            database.create();
            database
        });

        let started = Instant::now();
        let api_token = random_hex();
        let drain_token = random_hex();
        match helm_release {
            None => {
                let mut text = manifest(&api_token, &drain_token, sub_path);
                if let Some(database) = &server_database {
                    text = server_manifest(&text, database);
                }
                if let Some(release) = prefixed {
                    text = prefixed_manifest(&text, release, &names);
                }
                let applied = kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], &text);
                assert!(
                    applied.status.success(),
                    "applying {MANIFEST}: {}",
                    stderr(&applied)
                );
            }
            Some(release) => {
                write_umbrella(
                    &dir.join("umbrella"),
                    &manifest(&api_token, &drain_token, None),
                );
                let installed = helm(&ns, &["install", release])
                    .arg(dir.join("umbrella"))
                    .args(helm_values(&agent_image, OLD_IMAGE))
                    .output()
                    .expect("helm install");
                assert!(
                    installed.status.success(),
                    "helm install of the umbrella chart: {}",
                    stderr(&installed)
                );
            }
        }
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        for name in [names.deployment.as_str(), "proxy"] {
            wait_for_available(&deployments, &ns, name, Duration::from_secs(240)).await;
        }
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let proxy_ip = services
            .get("proxy-public")
            .await
            .expect("Service proxy-public")
            .spec
            .and_then(|s| s.cluster_ip)
            .expect("proxy-public's ClusterIP");
        let volume = match (&server_database, sub_path) {
            (Some(_), _) => PathBuf::new(),
            (None, Some(sub_path)) => claim_folder(&client, &ns, &names.claim)
                .await
                .join(sub_path),
            (None, None) => claim_folder(&client, &ns, &names.claim).await,
        };
        let ledger_url = format!("sqlite://{}", dir.join("ledger.sqlite").display());
        let mut hub = RealHub {
            client,
            namespace,
            dir,
            volume,
            proxy_ip,
            agent_image,
            started: turn,
            api_token,
            drain_token,
            operator: None,
            operator_mode: operator,
            operator_kubeconfig: PathBuf::new(),
            ledger_url,
            server_database,
            names,
            _serial: serial,
        };
        let limit = Duration::from_secs(60);
        let deadline = Instant::now() + limit;
        while hub.health() != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the real hub did not answer /hub/health through proxy-public within {limit:?}:\n{}",
                hub.describe()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("real hub {ns} Ready in {:?}", started.elapsed());
        match &hub.server_database {
            None => assert!(
                hub.database().exists(),
                "the hub made no database at {}",
                hub.database().display()
            ),
            Some(database) => {
                let revision = database.revision().await;
                assert!(
                    revision.starts_with(OLD_HEAD),
                    "the hub made its schema in {} at revision {revision}, not {OLD_HEAD}",
                    database.name()
                );
            }
        }
        match operator {
            Operator::HostProcess => {
                hub.operator_kubeconfig = hub.install_chart_rbac();
                hub.start_operator();
            }
            Operator::Helm => hub.helm_install_operator().await,
        }
        hub
    }

    pub fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// The umbrella chart of a hub made by [`RealHub::new_helm_release`].
    pub fn umbrella(&self) -> PathBuf {
        self.dir.join("umbrella")
    }

    /// The hubgrade image the hook Jobs (and the operator's Jobs) run.
    pub fn agent_image(&self) -> &str {
        &self.agent_image
    }

    /// Deletes the namespace (kept when a test fails, for a look). Its HubUpgrades go first,
    /// while the operator still runs to remove their finalizers; otherwise the namespace would
    /// stay Terminating.
    pub async fn delete_namespace(&self) {
        let upgrades = self.upgrades();
        let _ = upgrades
            .delete_collection(&kube::api::DeleteParams::default(), &ListParams::default())
            .await;
        wait_until(
            Duration::from_secs(60),
            "the operator to let the HubUpgrades go",
            || async {
                upgrades
                    .list(&ListParams::default())
                    .await
                    .is_ok_and(|l| l.items.is_empty())
            },
        )
        .await;
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(self.ns(), &kube::api::DeleteParams::default())
            .await;
    }

    /// The hub's SQLite file (on its claim); fails for a hub whose database is on a server.
    pub fn database(&self) -> PathBuf {
        assert!(
            self.server_database.is_none(),
            "this hub's database is on a server: use RealHub::server_database"
        );
        self.volume.join("jupyterhub.sqlite")
    }

    /// The hub's database on a server; fails for a hub on SQLite.
    pub fn server_database(&self) -> &ServerDatabase {
        self.server_database
            .as_ref()
            .expect("this hub's database is SQLite on its claim: use RealHub::database")
    }

    /// `kubectl describe` of the namespace's pods, for failure messages.
    pub fn describe(&self) -> String {
        let output = kubectl(&["describe", "pods", "-n", self.ns()])
            .output()
            .expect("kubectl");
        let described = stdout(&output);
        let lines: Vec<&str> = described.lines().collect();
        lines[lines.len().saturating_sub(80)..].join("\n")
    }

    /// The chart's RBAC for a one-namespace install and a kubeconfig with its token.
    fn install_chart_rbac(&self) -> PathBuf {
        let ns = self.ns();
        let rendered = Command::new(cluster_bin().join("helm"))
            .args(["template", "hubgrade"])
            .arg(repo().join("charts/hubgrade"))
            .args(["--namespace", ns, "--set", &format!("watchNamespace={ns}")])
            .args(["--show-only", "templates/rbac.yaml"])
            .output()
            .expect("helm template");
        assert!(
            rendered.status.success(),
            "helm template: {}",
            stderr(&rendered)
        );
        let applied = kubectl_with_input(&["apply", "-n", ns, "-f", "-"], &stdout(&rendered));
        assert!(
            applied.status.success(),
            "applying the chart's RBAC: {}",
            stderr(&applied)
        );
        let token = kubectl(&["create", "token", "hubgrade", "-n", ns, "--duration=2h"])
            .output()
            .expect("kubectl");
        assert!(
            token.status.success(),
            "kubectl create token: {}",
            stderr(&token)
        );
        let path = self.dir.join("operator.kubeconfig");
        write_token_kubeconfig(&path, stdout(&token).trim());
        path
    }

    pub fn start_operator(&mut self) {
        assert_eq!(self.operator_mode, Operator::HostProcess);
        let operator = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
            .args(["run", "--namespace", self.ns(), "--lease-seconds", "3"])
            .args(["--ledger-url", &self.ledger_url])
            // The test-only images that fail on purpose come from hubgrade's own repository.
            .args(["--allow-image-repository", TEST_HUB_REPOSITORY])
            .args([
                "--metrics-address",
                &format!("127.0.0.1:{}", super::free_port()),
            ])
            .args(["--agent-image", &self.agent_image])
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "operator.log"))
            .spawn()
            .expect("starting hubgrade run");
        self.operator = Some(operator);
    }

    /// Restarts the host-process operator with another ledger (before any upgrade).
    pub fn use_ledger(&mut self, url: &str) {
        self.kill_operator();
        self.ledger_url = url.to_string();
        self.start_operator();
    }

    /// The ledger's record of the upgrade `name` of this hub (`hubgrade history -o json`).
    pub fn ledger_record(&self, name: &str) -> Option<hubgrade::ledger::UpgradeEntry> {
        let output = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
            .args(["history", "-o", "json", "-n", self.ns()])
            .args(["--ledger-url", &self.ledger_url])
            .output()
            .expect("hubgrade history");
        assert!(
            output.status.success(),
            "hubgrade history: {}",
            stderr(&output)
        );
        let history: Vec<hubgrade::ledger::UpgradeEntry> =
            serde_json::from_str(&stdout(&output)).expect("JSON");
        history.into_iter().find(|u| u.name == name)
    }

    /// SIGKILL: no clean shutdown, no lease release.
    pub fn kill_operator(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            let _ = operator.kill();
            let _ = operator.wait();
        }
    }

    /// `helm install` of charts/hubgrade: the operator from its image, on the real node.
    async fn helm_install_operator(&mut self) {
        let ns = self.ns().to_string();
        let (repository, tag) = self
            .agent_image
            .split_once(':')
            .expect("the hubgrade image has a tag");
        let output = Command::new(cluster_bin().join("helm"))
            .args(["install", "hubgrade"])
            .arg(repo().join("charts/hubgrade"))
            .args(["--namespace", &ns, "--kubeconfig"])
            .arg(super::kubeconfig())
            .args(["--set", &format!("watchNamespace={ns}")])
            .args(["--set", &format!("image.repository={repository}")])
            .args(["--set", &format!("image.tag={tag}")])
            .args([
                "--set",
                &format!("imagePolicy.allowedRepositories[0]={TEST_HUB_REPOSITORY}"),
            ])
            .args(["--set", "nodeSelector.hubgrade\\.io/node=real"])
            .args(["--set", "tolerations[0].key=hubgrade.io/real-node"])
            .args(["--set", "tolerations[0].operator=Exists"])
            .args(["--set", "tolerations[0].effect=NoSchedule"])
            .output()
            .expect("helm install");
        assert!(
            output.status.success(),
            "helm install charts/hubgrade: {}",
            stderr(&output)
        );
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        wait_for_available(&deployments, &ns, "hubgrade", Duration::from_secs(120)).await;
    }

    /// The operator's log: the host process's file, or the Helm-installed pod's.
    /// The verified backup `upgrade` recorded: its file on the hub's volume exists, has the
    /// recorded size and checksum and holds the database as 4.1.6 left it. Returns the file.
    pub fn assert_verified_backup(&self, upgrade: &HubUpgrade) -> PathBuf {
        let status = upgrade.status.clone().expect("status");
        let backup = status.progress.backup.expect("a backup in status");
        assert!(backup.verified, "the backup is not verified: {backup:?}");
        let file = on_volume(&self.volume, &backup.reference);
        assert!(
            file.is_file(),
            "the backup {} is not on the claim {} at {}",
            backup.reference,
            self.names.claim,
            file.display()
        );
        let (size, checksum) = hubgrade::db::file::size_and_checksum(&file).expect("checksum");
        assert_eq!(Some(checksum), backup.checksum, "{}", file.display());
        assert_eq!(Some(size), backup.size_bytes);
        let revision = super::jupyterhub::revision_of_file(&file);
        assert!(
            revision.starts_with(OLD_HEAD),
            "the backup is at {revision}"
        );
        file
    }

    pub fn operator_log(&self) -> String {
        match self.operator_mode {
            Operator::HostProcess => {
                std::fs::read_to_string(self.dir.join("operator.log")).unwrap_or_default()
            }
            Operator::Helm => stdout(
                &kubectl(&["logs", "-n", self.ns(), "deployment/hubgrade", "--tail=60"])
                    .output()
                    .expect("kubectl logs"),
            ),
        }
    }

    /// GET /hub/health through proxy-public: the status code, or None when nothing answers.
    pub fn health(&self) -> Option<u16> {
        http_status(&self.proxy_ip, "/hub/health")
    }

    /// A request to the hub's REST API through proxy-public, authenticated with `token` (the
    /// service's when None). The token goes to curl on its standard input, never on its
    /// command line. Returns the status and the JSON answer (Null when there is none).
    pub fn api(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let token = token.unwrap_or(&self.api_token);
        let url = format!("http://{}/hub/api{path}", self.proxy_ip);
        let mut command = Command::new("curl");
        command
            .args(["-sS", "--max-time", "30", "-X", method, "-K", "-"])
            .args(["-w", "\n%{http_code}"]);
        if let Some(body) = &body {
            command
                .args(["-H", "Content-Type: application/json", "--data-binary"])
                .arg(body.to_string());
        }
        let mut child = command
            .arg(&url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("curl (a Debian package: `make deps`)");
        child
            .stdin
            .take()
            .expect("curl's stdin")
            .write_all(format!("header = \"Authorization: token {token}\"\n").as_bytes())
            .expect("writing curl's configuration");
        let output = child.wait_with_output().expect("waiting for curl");
        assert!(
            output.status.success(),
            "{method} {url}: {}",
            stderr(&output)
        );
        let text = stdout(&output);
        let (answer, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let code = code.trim().parse().unwrap_or(0);
        (code, serde_json::from_str(answer).unwrap_or(Value::Null))
    }

    /// The version `/hub/api` reports.
    pub fn hub_version(&self) -> String {
        let (code, answer) = self.api(None, "GET", "/", None);
        assert_eq!(code, 200, "/hub/api: {answer}");
        answer["version"].as_str().unwrap_or_default().to_string()
    }

    /// Every user name, page by page (5.x pages at 200).
    pub fn user_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        loop {
            let (code, answer) = self.api(
                None,
                "GET",
                &format!("/users?offset={}&limit=200", names.len()),
                None,
            );
            assert_eq!(code, 200, "listing users: {answer}");
            let page: Vec<String> = answer
                .as_array()
                .expect("a list of users")
                .iter()
                .filter_map(|u| u["name"].as_str().map(str::to_string))
                .collect();
            if page.is_empty() {
                break;
            }
            names.extend(page);
        }
        names.sort();
        names
    }

    /// The members of group `name`, sorted.
    pub fn group_members(&self, name: &str) -> Vec<String> {
        let (code, answer) = self.api(None, "GET", &format!("/groups/{name}"), None);
        assert_eq!(code, 200, "group {name}: {answer}");
        let mut members: Vec<String> = answer["users"]
            .as_array()
            .expect("the group's users")
            .iter()
            .filter_map(|u| u.as_str().map(str::to_string))
            .collect();
        members.sort();
        members
    }

    /// Whether `token` authenticates as `user` (GET /hub/api/user).
    pub fn token_authenticates(&self, user: &str, token: &str) -> bool {
        let (code, answer) = self.api(Some(token), "GET", "/user", None);
        code == 200 && answer["name"] == user
    }

    /// Users, a group and user tokens, made by the running hub through its REST API.
    pub fn populate(&self, users: usize) -> Population {
        let started = Instant::now();
        let names: Vec<String> = (0..users).map(|i| format!("user-{i:03}")).collect();
        let (code, answer) = self.api(None, "POST", "/users", Some(json!({"usernames": names})));
        assert_eq!(code, 201, "creating {users} users: {answer}");
        let group = "researchers".to_string();
        let members: Vec<String> = names.iter().step_by(10).cloned().collect();
        let (code, answer) = self.api(
            None,
            "POST",
            &format!("/groups/{group}"),
            Some(json!({"users": members})),
        );
        assert_eq!(code, 201, "creating group {group}: {answer}");
        let tokens: Vec<(String, String)> = names
            .iter()
            .take(5)
            .map(|user| {
                let (code, answer) = self.api(
                    None,
                    "POST",
                    &format!("/users/{user}/tokens"),
                    Some(json!({"note": "made before the upgrade"})),
                );
                assert_eq!(code, 201, "a token for {user}: {answer}");
                let token = answer["token"].as_str().expect("the new token").to_string();
                (user.clone(), token)
            })
            .collect();
        for (user, token) in &tokens {
            assert!(
                self.token_authenticates(user, token),
                "a new token of {user} does not authenticate"
            );
        }
        eprintln!(
            "populated {users} users, a group and {} tokens in {:?}",
            tokens.len(),
            started.elapsed()
        );
        let mut members = members;
        members.sort();
        Population {
            users: names,
            group,
            members,
            tokens,
        }
    }

    /// Checks what `populate` made is all there, through the API; every token authenticates.
    pub fn assert_population(&self, population: &Population) {
        assert_eq!(self.user_names(), population.users, "the hub's users");
        assert_eq!(
            self.group_members(&population.group),
            population.members,
            "group {}",
            population.group
        );
        for (user, token) in &population.tokens {
            assert!(
                self.token_authenticates(user, token),
                "the token {user} had before the upgrade no longer authenticates"
            );
        }
    }

    pub fn upgrades(&self) -> Api<HubUpgrade> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Creates HubUpgrade `name` of the hub Deployment ([`HubNames::deployment`]) to `target`,
    /// with `extra` spec fields.
    pub async fn apply_upgrade(&self, name: &str, target: &str, extra: Value) -> HubUpgrade {
        let deployment = &self.names.deployment;
        let mut spec = json!({"hub": {"deployment": deployment}, "targetImage": target});
        if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        let upgrade: HubUpgrade = serde_json::from_value(json!({
            "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("a HubUpgrade");
        self.upgrades()
            .create(&PostParams::default(), &upgrade)
            .await
            .expect("creating the HubUpgrade")
    }

    pub async fn phase(&self, name: &str) -> Option<Phase> {
        let upgrade = self.upgrades().get_opt(name).await.ok().flatten()?;
        upgrade.status.map(|s| s.progress.phase)
    }

    /// Waits for one of `phases`; on timeout, fails with the status, the operator's log and
    /// the pods.
    pub async fn wait_for(&self, name: &str, phases: &[Phase], limit: Duration) -> HubUpgrade {
        let start = Instant::now();
        loop {
            if let Some(phase) = self.phase(name).await
                && phases.contains(&phase)
            {
                eprintln!("{name} reached {phase:?} after {:?}", start.elapsed());
                return self.upgrades().get(name).await.expect("the HubUpgrade");
            }
            if start.elapsed() > limit {
                let status = self
                    .upgrades()
                    .get_opt(name)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|u| u.status)
                    .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default());
                let log = self.operator_log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "{name} did not reach {phases:?} within {limit:?}; status: {}\noperator log (newest first):\n{}\npods:\n{}",
                    status.unwrap_or_default(),
                    tail.join("\n"),
                    self.describe()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The hub Deployment ([`HubNames::deployment`]).
    pub async fn hub_deployment(&self) -> Deployment {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), self.ns());
        deployments
            .get(&self.names.deployment)
            .await
            .unwrap_or_else(|e| panic!("the hub Deployment {}: {e}", self.names.deployment))
    }

    /// The image of the hub Deployment's container `hub` (its first container when none is
    /// named so).
    pub async fn hub_image(&self) -> String {
        let hub = self.hub_deployment().await;
        hub.spec
            .and_then(|s| s.template.spec)
            .and_then(|p| {
                let hub = p.containers.iter().find(|c| c.name == "hub");
                hub.or(p.containers.first()).and_then(|c| c.image.clone())
            })
            .unwrap_or_default()
    }

    /// Waits until the hub Deployment ([`HubNames::deployment`]) is available and /hub/health
    /// answers 200 again.
    pub async fn wait_for_hub(&self, limit: Duration) {
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), self.ns());
        wait_for_available(&deployments, self.ns(), &self.names.deployment, limit).await;
        wait_until(limit, "/hub/health to answer 200", || async {
            self.health() == Some(200)
        })
        .await;
    }

    /// Jobs of this namespace made for `step` (backup, migration, restore, rehearsal).
    pub async fn jobs_for(&self, step: &str) -> Vec<Job> {
        self.jobs()
            .list(&ListParams::default().labels(&format!("hubgrade.io/step={step}")))
            .await
            .expect("listing Jobs")
            .items
    }

    /// The namespace's Events, oldest first: (time, object kind/name, reason, message).
    pub async fn events(&self) -> Vec<(SystemTime, String, String, String)> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), self.ns());
        let mut listed: Vec<_> = events
            .list(&ListParams::default())
            .await
            .expect("listing Events")
            .items
            .into_iter()
            .map(|e| {
                let time = e
                    .event_time
                    .map(|t| SystemTime::from(t.0))
                    .or(e.last_timestamp.map(|t| SystemTime::from(t.0)))
                    .or(e.first_timestamp.map(|t| SystemTime::from(t.0)))
                    .or(e.metadata.creation_timestamp.map(|t| SystemTime::from(t.0)))
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let object = format!(
                    "{}/{}",
                    e.involved_object.kind.unwrap_or_default(),
                    e.involved_object.name.unwrap_or_default()
                );
                (
                    time,
                    object,
                    e.reason.unwrap_or_default(),
                    e.message.unwrap_or_default(),
                )
            })
            .collect();
        listed.sort_by_key(|e| e.0);
        listed
    }

    /// A pod shaped like a user server KubeSpawner started (its labels), running on the real
    /// node, that the hub knows nothing about (a busybox sleeping); returns its name once it
    /// runs. [`RealHub::start_user_server`] starts a real one through the hub.
    pub async fn start_session_pod(&self, user: &str) -> String {
        let name = format!("jupyter-{user}");
        let busybox = "docker.io/library/busybox:1.36";
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {
                "app": "jupyterhub", "component": "singleuser-server", "release": "jhub",
                "heritage": "jupyterhub", "hub.jupyter.org/servername": "",
                "hub.jupyter.org/username": user, "hub.jupyter.org/network-access-hub": "true"
            }},
            "spec": {
                "nodeSelector": {"hubgrade.io/node": "real"},
                "tolerations": [{"key": "hubgrade.io/real-node", "operator": "Exists", "effect": "NoSchedule"}],
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "notebook", "image": busybox, "command": ["sleep", "3600"]}]
            }
        }))
        .expect("a user server pod");
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .expect("creating a user server pod");
        let pods = self.pods();
        wait_until(
            Duration::from_secs(120),
            &format!("user server {name} to run"),
            || async {
                pods.get(&name)
                    .await
                    .ok()
                    .and_then(|p| p.status?.phase)
                    .as_deref()
                    == Some("Running")
            },
        )
        .await;
        name
    }

    /// (name, uid, restart count) of every running pod that is not the hub's or a Job's.
    pub async fn session_pods(&self) -> Vec<(String, String, i32)> {
        let mut pods: Vec<(String, String, i32)> = self
            .pods()
            .list(&ListParams::default().labels("component in (proxy,singleuser-server)"))
            .await
            .expect("listing pods")
            .items
            .into_iter()
            .map(|p| {
                let restarts = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map(|c| c.iter().map(|c| c.restart_count).sum())
                    .unwrap_or(-1);
                (p.name_any(), p.uid().unwrap_or_default(), restarts)
            })
            .collect();
        pods.sort();
        pods
    }

    /// Starts `user`'s default server through the hub's REST API with the test's service token
    /// (creating the user first if the hub has none of that name): `POST
    /// /hub/api/users/<user>/server`, then waits until the API says it is ready. KubeSpawner
    /// runs it in the pod [`user_pod_name`] on the real node (the stand-in server of the
    /// manifest's `hub.config.KubeSpawner`), and the proxy routes `/user/<user>/` to it. Fails
    /// with what the API says of the user, the pod's Events and the hub's log when the spawn
    /// fails or the server is not ready within KubeSpawner's `start_timeout` (300 s). `user`:
    /// lowercase letters and digits (see [`user_pod_name`]).
    pub async fn start_user_server(&self, user: &str) {
        let pod = user_pod_name(user);
        let started = Instant::now();
        let (code, answer) = self.api(None, "GET", &format!("/users/{user}"), None);
        if code == 404 {
            let (code, answer) = self.api(None, "POST", &format!("/users/{user}"), None);
            assert_eq!(code, 201, "creating user {user}: {answer}");
        } else {
            assert_eq!(code, 200, "GET /hub/api/users/{user}: {answer}");
        }
        let (code, answer) = self.api(None, "POST", &format!("/users/{user}/server"), None);
        // 201: started and ready within the request; 202: still starting.
        assert!(
            code == 201 || code == 202,
            "POST /hub/api/users/{user}/server answered {code}: {answer}"
        );
        loop {
            let (code, answer) = self.api(None, "GET", &format!("/users/{user}"), None);
            assert_eq!(code, 200, "GET /hub/api/users/{user}: {answer}");
            let server = &answer["servers"][""];
            if server["ready"] == true {
                break;
            }
            // A spawn that failed leaves no server (a pending one shows `pending: spawn`).
            let failed = server.is_null();
            if failed || started.elapsed() > USER_SERVER_LIMIT {
                let what = if failed {
                    "failed to start".to_string()
                } else {
                    format!("was not ready within {USER_SERVER_LIMIT:?}")
                };
                panic!(
                    "the user server of {user} (pod {pod}) {what}; the hub's API says of {user}: \
                     {answer}\n{}",
                    self.user_server_trouble(&pod).await
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!(
            "user server of {user} (pod {pod}) ready in {:?}",
            started.elapsed()
        );
    }

    /// For failure messages: the Events of pod `pod` and the end of the hub's log.
    async fn user_server_trouble(&self, pod: &str) -> String {
        let object = format!("Pod/{pod}");
        let events: Vec<String> = self
            .events()
            .await
            .into_iter()
            .filter(|e| e.1 == object)
            .map(|(_, _, reason, message)| format!("  {reason}: {message}"))
            .collect();
        let log = kubectl(&[
            "logs",
            "-n",
            self.ns(),
            &format!("deployment/{}", self.names.deployment),
            "-c",
            "hub",
            "--tail=30",
        ])
        .output()
        .expect("kubectl logs");
        format!(
            "Events of pod {pod}:\n{}\nthe hub's log:\n{}{}",
            if events.is_empty() {
                "  (none)".to_string()
            } else {
                events.join("\n")
            },
            stdout(&log),
            stderr(&log)
        )
    }

    /// Whether `user`'s server answers through the proxy: GET `http://<proxy_ip>/user/<user>/`
    /// returns 200 and the stand-in's body ([`user_server_body`]). A stopped server's route is
    /// gone: the proxy sends the request to the hub, which does not answer so.
    pub fn user_server_answers(&self, user: &str) -> bool {
        http_get(&self.proxy_ip, &format!("/user/{user}/"))
            .is_some_and(|(code, body)| code == 200 && body == user_server_body(user))
    }

    /// The names of the users with a ready server, sorted, as the hub's REST API lists them
    /// (`GET /hub/api/users?state=active`, page by page, with the test's service token).
    pub fn active_servers(&self) -> Vec<String> {
        let (mut names, mut offset) = (Vec::new(), 0);
        loop {
            let (code, answer) = self.api(
                None,
                "GET",
                &format!("/users?state=active&offset={offset}&limit=200"),
                None,
            );
            assert_eq!(code, 200, "listing the active users: {answer}");
            let page = answer.as_array().expect("a list of users");
            if page.is_empty() {
                break;
            }
            offset += page.len();
            names.extend(
                page.iter()
                    .filter(|u| {
                        u["servers"]
                            .as_object()
                            .is_some_and(|s| s.values().any(|s| s["ready"] == true))
                    })
                    .filter_map(|u| u["name"].as_str().map(str::to_string)),
            );
        }
        names.sort();
        names
    }

    /// Whether KubeSpawner's pod of `user`'s server ([`user_pod_name`]) exists (a terminating
    /// pod still does).
    pub async fn user_pod_exists(&self, user: &str) -> bool {
        let name = user_pod_name(user);
        self.pods()
            .get_opt(&name)
            .await
            .unwrap_or_else(|e| panic!("reading pod {name}: {e}"))
            .is_some()
    }

    /// (Secret name, key) of [`DRAIN_SERVICE`]'s token: the hub Secret (`hub`, or
    /// `<release>-jupyterhub-hub` for [`RealHub::new_prefixed`]: [`HubNames::deployment`]) and
    /// [`DRAIN_TOKEN_KEY`], where z2jh keeps `hub.services.hubgrade.apiToken`, for a HubUpgrade's
    /// `spec.drain`.
    pub fn drain_token_secret(&self) -> (String, String) {
        (self.names.deployment.clone(), DRAIN_TOKEN_KEY.to_string())
    }

    /// [`DRAIN_SERVICE`]'s token, for [`RealHub::api`] as that service.
    pub fn drain_token(&self) -> &str {
        &self.drain_token
    }
}

/// KubeSpawner's pod of `user`'s default server: `jupyter-<user>`, the name both KubeSpawner 6.2
/// (k8s-hub 3.3.8) and 7.0 (4.4.0) give it when the user's name is lowercase letters and digits
/// (they escape other characters differently: 6.2 makes `user-001` `user-2d001`); fails for
/// other names.
pub fn user_pod_name(user: &str) -> String {
    assert!(
        !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
        "user server helpers take user names of lowercase letters and digits, not {user:?}"
    );
    format!("jupyter-{user}")
}

/// What the manifest's stand-in user server answers to every GET.
pub fn user_server_body(user: &str) -> String {
    format!("user server of {user}")
}

/// What the running 4.1.6 hub was given before the upgrade.
pub struct Population {
    pub users: Vec<String>,
    pub group: String,
    pub members: Vec<String>,
    /// (user, token) made before the upgrade.
    pub tokens: Vec<(String, String)>,
}

/// GET `path` on port 80 of `ip` with HTTP/1.0: the status code, or None when nothing answers
/// within a second.
pub fn http_status(ip: &str, path: &str) -> Option<u16> {
    let address = format!("{ip}:80").parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// GET `path` on port 80 of `ip` with HTTP/1.0: the status code and the body, or None when
/// nothing answers within two seconds.
pub fn http_get(ip: &str, path: &str) -> Option<(u16, String)> {
    let address = format!("{ip}:80").parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).ok()?;
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let code = head.get(9..12)?.parse().ok()?;
    Some((code, body.to_string()))
}

/// Polls /hub/health through the proxy every 100 ms on a thread until stopped; the outage is
/// the longest run of answers other than 200.
pub struct HealthWatch {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<(SystemTime, bool)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthWatch {
    pub fn start(ip: &str) -> HealthWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (flag, recorded, ip) = (stop.clone(), samples.clone(), ip.to_string());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // The time the request was sent: a failing one may take a second to fail.
                let asked = SystemTime::now();
                let up = http_status(&ip, "/hub/health") == Some(200);
                let mut samples = recorded.lock().unwrap_or_else(|p| p.into_inner());
                samples.push((asked, up));
                drop(samples);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        HealthWatch {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Waits (up to `limit`) until the poller saw the hub answer again after an outage, then
    /// stops it; returns the longest outage seen: (from the first failed answer, to the first
    /// good one after it). Fails with what it saw when there was none.
    pub fn outage(mut self, limit: Duration) -> (SystemTime, SystemTime) {
        let deadline = Instant::now() + limit;
        let longest = loop {
            let samples = self
                .samples
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let longest = longest_outage(&samples);
            if longest.is_some() && samples.last().is_some_and(|s| s.1) {
                break longest;
            }
            if Instant::now() > deadline {
                let down = samples.iter().filter(|s| !s.1).count();
                panic!(
                    "no complete outage of /hub/health within {limit:?} of polling: {} answers, {down} of them not 200, the last {}",
                    samples.len(),
                    if samples.last().is_some_and(|s| s.1) {
                        "200"
                    } else {
                        "not 200"
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the polling thread ended");
        }
        longest.expect("an outage")
    }
}

/// The longest run of failed answers that a good one ended.
fn longest_outage(samples: &[(SystemTime, bool)]) -> Option<(SystemTime, SystemTime)> {
    let length = |o: &(SystemTime, SystemTime)| o.1.duration_since(o.0).unwrap_or_default();
    let mut longest: Option<(SystemTime, SystemTime)> = None;
    let mut down_since = None;
    for &(time, up) in samples {
        match (up, down_since) {
            (false, None) => down_since = Some(time),
            (true, Some(since)) => {
                if longest.is_none_or(|l| length(&l) < length(&(since, time))) {
                    longest = Some((since, time));
                }
                down_since = None;
            }
            _ => {}
        }
    }
    longest
}

/// Waits until Deployment `name` is rolled out and available; fails with its pods described.
async fn wait_for_available(deployments: &Api<Deployment>, ns: &str, name: &str, limit: Duration) {
    let start = Instant::now();
    loop {
        if let Ok(d) = deployments.get(name).await
            && super::e2e::deployment_available(&d)
        {
            return;
        }
        if start.elapsed() > limit {
            let described = stdout(
                &kubectl(&["describe", "pods", "-n", ns])
                    .output()
                    .expect("kubectl"),
            );
            let lines: Vec<&str> = described.lines().collect();
            panic!(
                "Deployment {ns}/{name} did not become available on the real node within {limit:?}:\n{}",
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The folder on this machine behind claim `name` (the default StorageClass's hostPath or
/// local volume), once bound.
pub async fn claim_folder(client: &Client, ns: &str, name: &str) -> PathBuf {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    wait_until(
        Duration::from_secs(60),
        &format!("claim {name} to be bound"),
        || async {
            claims
                .get(name)
                .await
                .ok()
                .and_then(|c| c.status?.phase)
                .as_deref()
                == Some("Bound")
        },
    )
    .await;
    let volume = claims
        .get(name)
        .await
        .expect("the claim")
        .spec
        .and_then(|s| s.volume_name)
        .expect("a bound volume");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    let spec = volumes
        .get(&volume)
        .await
        .expect("the volume")
        .spec
        .expect("the volume's spec");
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .expect("a hostPath or local volume");
    PathBuf::from(path)
}

/// The file behind `reference`, a path in the hub container under /srv/jupyterhub.
pub fn on_volume(volume: &Path, reference: &str) -> PathBuf {
    let relative = reference
        .strip_prefix("/srv/jupyterhub/")
        .unwrap_or_else(|| panic!("{reference} is not under /srv/jupyterhub"));
    volume.join(relative)
}
