//! End-to-end harness: a z2jh-style hub (examples/z2jh-hub/hub.yaml) in its own namespace, the
//! operator as a separate process running with the token of a ServiceAccount bound to exactly
//! the chart's RBAC, and the KWOK agent stand-in playing the agent Jobs on a local directory
//! that stands for the hub's volume.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, ListParams, PostParams};
use sqlx::Connection;

use super::{
    TestNamespace, client, cluster_bin, install_crd, kubectl, kubectl_with_input, repo, stderr,
    stdout, wait_until,
};
use hubgrade::api::HubUpgrade;
use hubgrade::machine::Phase;

pub const ORIGINAL_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:4.1.0";

/// The pod template's labels line in examples/z2jh-hub/hub.yaml.
const HUB_POD_LABELS: &str = "labels: {app: jupyterhub, component: hub, release: jhub, hub.jupyter.org/network-access-proxy-api: \"true\"}";

/// An edit for [`Hub::new`]: puts `annotations` (YAML flow entries) on the hub's pod template;
/// KWOK markers there reach the pods of the Jobs hubgrade copies from it.
pub fn with_template_annotations(annotations: &str) -> impl FnOnce(String) -> String + '_ {
    move |yaml: String| {
        yaml.replace(
            HUB_POD_LABELS,
            &format!("{HUB_POD_LABELS}\n      annotations: {{{annotations}}}"),
        )
    }
}

pub struct Hub {
    pub client: Client,
    pub namespace: TestNamespace,
    /// The local directory standing for the PVC hub-db-dir.
    pub volume: PathBuf,
    pub dir: PathBuf,
    pub metrics_port: u16,
    /// The operator's ledger (`--ledger-url`): an SQLite file in `dir` unless a test says.
    pub ledger_url: String,
    /// $HUBGRADE_LEDGER_PASSWORD for a server ledger.
    pub ledger_password: Option<String>,
    /// More arguments for `hubgrade run` (the operator's own configuration).
    pub operator_args: Vec<String>,
    operator: Option<Child>,
    standin: Child,
    /// kwok-snapshot-standin, once [`Hub::start_snapshot_standin`] started it.
    snapshot_standin: Option<Child>,
    operator_kubeconfig: PathBuf,
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            let _ = operator.kill();
            let _ = operator.wait();
        }
        let _ = self.standin.kill();
        let _ = self.standin.wait();
        if let Some(mut standin) = self.snapshot_standin.take() {
            let _ = standin.kill();
            let _ = standin.wait();
        }
        if std::thread::panicking() {
            return;
        }
        let ledger_password = self.ledger_password.clone().unwrap_or_default();
        super::assert_no_secret_in_records(self.ns(), &[&ledger_password]);
        // A passed test's namespace goes (a failed one stays for a look): its pods would
        // otherwise fill the KWOK node's 110 pods over repeated runs. Not waited for.
        let _ = kubectl(&["delete", "namespace", self.ns(), "--wait=false"]).output();
        super::assert_clean_operator_log(&self.operator_log(), &[&ledger_password]);
    }
}

/// `hub.yaml` rewritten for `namespace`, with `edit` applied to the text.
fn hub_manifest(namespace: &str, edit: impl FnOnce(String) -> String) -> String {
    let text = std::fs::read_to_string(repo().join("examples/z2jh-hub/hub.yaml"))
        .expect("examples/z2jh-hub/hub.yaml");
    edit(
        text.replace("namespace: jhub", &format!("namespace: {namespace}"))
            .replace("jhub-hub-db-dir", &format!("{namespace}-hub-db-dir")),
    )
}

impl Hub {
    /// A running example hub; `edit` may change hub.yaml's text first (e.g. add test markers).
    pub async fn new(prefix: &str, edit: impl FnOnce(String) -> String) -> Hub {
        Hub::build(prefix, edit, None).await
    }

    /// [`Hub::new`] whose agent pods (backup, restore) each run `delay` before their work, as on
    /// a slow volume: long enough for a test to act while one runs.
    pub async fn with_slow_agents(
        prefix: &str,
        edit: impl FnOnce(String) -> String,
        delay: &str,
    ) -> Hub {
        Hub::build(prefix, edit, Some(delay)).await
    }

    async fn build(
        prefix: &str,
        edit: impl FnOnce(String) -> String,
        agent_delay: Option<&str>,
    ) -> Hub {
        let client = client().await;
        install_crd(&client).await;
        let namespace = TestNamespace::new(&client, prefix).await;
        let ns = namespace.name.clone();
        let dir = repo().join("target/e2e").join(&ns);
        let volume = repo()
            .join("target/e2e/volumes")
            .join(&ns)
            .join("hub-db-dir");
        std::fs::create_dir_all(&volume).expect("volume directory");
        make_hub_database(&volume.join("jupyterhub.sqlite")).await;

        // The operator's RBAC, exactly as the chart renders it for a one-namespace install.
        let rendered = Command::new(cluster_bin().join("helm"))
            .args([
                "template",
                "hubgrade",
                repo().join("charts/hubgrade").to_str().expect("path"),
            ])
            .args([
                "--namespace",
                &ns,
                "--set",
                &format!("watchNamespace={ns}"),
                "--show-only",
                "templates/rbac.yaml",
            ])
            .output()
            .expect("helm template");
        assert!(
            rendered.status.success(),
            "helm template: {}",
            stderr(&rendered)
        );
        let applied = kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], &stdout(&rendered));
        assert!(
            applied.status.success(),
            "applying the chart's RBAC: {}",
            stderr(&applied)
        );
        let token = kubectl(&["create", "token", "hubgrade", "-n", &ns, "--duration=2h"])
            .output()
            .expect("kubectl");
        assert!(
            token.status.success(),
            "kubectl create token: {}",
            stderr(&token)
        );
        let operator_kubeconfig = dir.join("operator.kubeconfig");
        write_token_kubeconfig(&operator_kubeconfig, stdout(&token).trim());

        let applied =
            kubectl_with_input(&["apply", "-n", &ns, "-f", "-"], &hub_manifest(&ns, edit));
        assert!(
            applied.status.success(),
            "applying the example hub: {}",
            stderr(&applied)
        );
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        wait_until(
            Duration::from_secs(60),
            "the example hub to become Available",
            || async { hub_available(&deployments).await },
        )
        .await;

        let standin = Command::new(super::standin("kwok-agent-standin"))
            .args([
                "--namespace",
                &ns,
                "--volumes",
                repo().join("target/e2e/volumes").to_str().expect("path"),
            ])
            .args(agent_delay.map(|delay| format!("--agent-delay={delay}")))
            .env("KUBECONFIG", super::kubeconfig())
            .stdout(Stdio::null())
            .stderr(log_file(&dir, "standin.log"))
            .spawn()
            .expect("starting kwok-agent-standin");
        // The stand-in plays the hub's REST API at the hub pod's address (KWOK gives it a
        // loopback one): the operator's Preflight asks it, so wait until it answers.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        wait_until(
            Duration::from_secs(30),
            "the stand-in to serve the hub's REST API",
            || async {
                let listed = pods
                    .list(&ListParams::default().labels("component=hub"))
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default();
                let ips: Vec<String> = listed
                    .iter()
                    .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
                    .collect();
                !ips.is_empty()
                    && ips.iter().all(|ip| {
                        std::net::TcpStream::connect_timeout(
                            &format!("{ip}:8081").parse().expect("an address"),
                            Duration::from_millis(200),
                        )
                        .is_ok()
                    })
            },
        )
        .await;
        let ledger_url = format!("sqlite://{}", dir.join("ledger.sqlite").display());
        let mut hub = Hub {
            client,
            namespace,
            volume,
            dir,
            metrics_port: super::free_port(),
            ledger_url,
            ledger_password: None,
            operator_args: Vec::new(),
            operator: None,
            standin,
            snapshot_standin: None,
            operator_kubeconfig,
        };
        hub.start_operator();
        hub
    }

    pub fn ns(&self) -> &str {
        &self.namespace.name
    }

    /// Starts kwok-snapshot-standin for the hub's namespace, on the folders standing for its
    /// volumes: VolumeSnapshots of the hub's claim become ready, and a claim made from one is
    /// filled from it.
    pub fn start_snapshot_standin(&mut self) {
        self.snapshot_standin_after(None);
    }

    /// [`Hub::start_snapshot_standin`] taking each snapshot only `delay` after it is asked
    /// for, as a slow snapshotter: long enough for a test to act while a backup runs.
    pub fn start_slow_snapshot_standin(&mut self, delay: &str) {
        self.snapshot_standin_after(Some(delay));
    }

    fn snapshot_standin_after(&mut self, delay: Option<&str>) {
        let mut standin = Command::new(super::standin("kwok-snapshot-standin"))
            .args([
                "--namespace",
                self.ns(),
                "--volumes",
                repo().join("target/e2e/volumes").to_str().expect("path"),
            ])
            .args(delay.map(|delay| format!("--ready-after={delay}")))
            .env("KUBECONFIG", super::kubeconfig())
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, "snapshot-standin.log"))
            .spawn()
            .expect("starting kwok-snapshot-standin");
        // Refused arguments end it at once; a test waiting for its snapshots would only time out.
        std::thread::sleep(Duration::from_millis(300));
        if let Ok(Some(status)) = standin.try_wait() {
            panic!(
                "kwok-snapshot-standin exited ({status}): {}",
                std::fs::read_to_string(self.dir.join("snapshot-standin.log")).unwrap_or_default()
            );
        }
        self.snapshot_standin = Some(standin);
    }

    pub fn start_operator(&mut self) {
        self.operator = Some(self.spawn_operator(self.metrics_port, "operator.log", 3));
    }

    /// Another replica of the operator, as a second pod of its Deployment would be.
    pub fn spawn_operator(&self, metrics_port: u16, log: &str, lease_seconds: u32) -> Child {
        self.spawn_operator_with_kubeconfig(
            &self.operator_kubeconfig,
            metrics_port,
            log,
            lease_seconds,
        )
    }

    /// The kubeconfig the operator runs with: the API server of the cluster, the token of the
    /// ServiceAccount bound to the chart's RBAC (JSON, as [`write_token_kubeconfig`] writes it).
    pub fn operator_kubeconfig(&self) -> &std::path::Path {
        &self.operator_kubeconfig
    }

    /// [`Hub::spawn_operator`] with another kubeconfig: one that reaches the API server through
    /// a proxy, say.
    pub fn spawn_operator_with_kubeconfig(
        &self,
        kubeconfig: &std::path::Path,
        metrics_port: u16,
        log: &str,
        lease_seconds: u32,
    ) -> Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hubgrade"));
        if let Some(password) = &self.ledger_password {
            command.env("HUBGRADE_LEDGER_PASSWORD", password);
        }
        command
            .args(["run", "--namespace", &self.namespace.name])
            .args(["--ledger-url", &self.ledger_url])
            .args(&self.operator_args)
            .args(["--lease-seconds", &lease_seconds.to_string()])
            .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
            .args(["--agent-image", "ghcr.io/hubgrade/hubgrade:test"])
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, log))
            .spawn()
            .expect("starting hubgrade run")
    }

    /// Replaces the running operator with one started with `lease_seconds`.
    pub fn restart_operator_with_lease(&mut self, lease_seconds: u32) {
        self.kill_operator();
        self.operator = Some(self.spawn_operator(self.metrics_port, "operator.log", lease_seconds));
    }

    /// SIGTERM, as Kubernetes stops a pod; returns how the operator exited.
    pub fn terminate_operator(&mut self) -> std::process::ExitStatus {
        let mut operator = self.operator.take().expect("a running operator");
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(operator.id() as i32, libc::SIGTERM) };
        operator.wait().expect("waiting for the operator")
    }

    /// Starts the operator again if it exited (as the kubelet restarts a pod's container: the
    /// operator exits when it cannot renew its lease in time); returns whether it had.
    pub fn restart_operator_if_exited(&mut self) -> bool {
        let exited = self
            .operator
            .as_mut()
            .is_none_or(|operator| operator.try_wait().ok().flatten().is_some());
        if exited {
            self.start_operator();
        }
        exited
    }

    /// SIGKILL: no clean shutdown, no lease release.
    pub fn kill_operator(&mut self) {
        if let Some(mut operator) = self.operator.take() {
            let _ = operator.kill();
            let _ = operator.wait();
        }
    }

    pub fn operator_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("operator.log")).unwrap_or_default()
    }

    pub fn upgrades(&self) -> Api<HubUpgrade> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub fn deployments(&self) -> Api<Deployment> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    pub fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), self.ns())
    }

    /// Creates a HubUpgrade named `name` for the hub with `spec` (JSON).
    pub async fn apply_upgrade(&self, name: &str, spec: serde_json::Value) -> HubUpgrade {
        let upgrade: HubUpgrade = serde_json::from_value(serde_json::json!({
            "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
            "metadata": {"name": name}, "spec": spec
        }))
        .expect("a HubUpgrade");
        self.upgrades()
            .create(&PostParams::default(), &upgrade)
            .await
            .expect("creating the HubUpgrade")
    }

    /// Creates the upgrade and waits (up to `limit`) until it ends; returns its status.
    pub async fn run_upgrade(
        &self,
        name: &str,
        spec: serde_json::Value,
        limit: Duration,
    ) -> hubgrade::api::HubUpgradeStatus {
        self.apply_upgrade(name, spec).await;
        let terminal = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];
        let done = self.wait_for(name, &terminal, limit).await;
        done.status.expect("the status of an ended upgrade")
    }

    /// Deletes the HubUpgrade `name` (as a GitOps tool prunes it) and waits until it is gone.
    pub async fn delete_upgrade(&self, name: &str) {
        self.upgrades()
            .delete(name, &kube::api::DeleteParams::default())
            .await
            .expect("deleting the HubUpgrade");
        wait_until(
            Duration::from_secs(120),
            "the HubUpgrade to be gone",
            || async { self.upgrades().get_opt(name).await.ok().flatten().is_none() },
        )
        .await;
    }

    /// Kills the operator (SIGKILL) once in every phase upgrade `name` enters, restarting it
    /// each time. Returns the terminal phase and the phases a kill hit.
    pub async fn kill_in_every_phase(&mut self, name: &str) -> (Phase, BTreeSet<String>) {
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let start = std::time::Instant::now();
        loop {
            let phase = self.phase(name).await;
            if let Some(phase) = phase {
                if phase.is_terminal() {
                    return (phase, seen);
                }
                if seen.insert(phase.to_string()) {
                    self.kill_operator();
                    self.start_operator();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(240),
                "no end after kills in {seen:?}:\n{}",
                self.operator_log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `hubgrade plan -f` on a HubUpgrade `name` to `target`: the JSON report and the exit code.
    pub fn plan(&self, name: &str, target: &str) -> (serde_json::Value, i32) {
        let file = self.dir.join(format!("{name}.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: hubgrade.io/v1alpha1\nkind: HubUpgrade\nmetadata:\n  name: {name}\n\
                 spec:\n  hub:\n    deployment: hub\n  targetImage: {target}\n"
            ),
        )
        .expect("writing the manifest");
        let output = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
            .args(["plan", "-o", "json", "-n", self.ns(), "-f"])
            .arg(&file)
            .args(["--ledger-url", &self.ledger_url])
            .env("KUBECONFIG", super::kubeconfig())
            .output()
            .expect("hubgrade plan");
        let report = serde_json::from_str(&stdout(&output)).unwrap_or_else(|e| {
            panic!(
                "hubgrade plan printed no report ({e}): {}{}",
                stdout(&output),
                stderr(&output)
            )
        });
        (report, output.status.code().unwrap_or(-1))
    }

    /// [`Hub::kill_in_every_phase`], asserting that upgrade `name` ends in `end` and that a kill
    /// hit each of `phases`.
    pub async fn ends_through_kills(&mut self, name: &str, end: Phase, phases: &[&str]) {
        let (ended, killed_in) = self.kill_in_every_phase(name).await;
        assert_eq!(ended, end, "{}", self.operator_log());
        for phase in phases {
            assert!(
                killed_in.contains(*phase),
                "no kill during {phase}: {killed_in:?}"
            );
        }
    }

    pub async fn phase(&self, name: &str) -> Option<Phase> {
        let upgrade = self.upgrades().get_opt(name).await.ok().flatten()?;
        upgrade.status.map(|s| s.progress.phase)
    }

    /// Waits for one of `phases`; on timeout, fails with the operator's log.
    pub async fn wait_for(&self, name: &str, phases: &[Phase], limit: Duration) -> HubUpgrade {
        let start = std::time::Instant::now();
        loop {
            if let Some(phase) = self.phase(name).await
                && phases.contains(&phase)
            {
                return self.upgrades().get(name).await.expect("the HubUpgrade");
            }
            if start.elapsed() > limit {
                let upgrade = self.upgrades().get_opt(name).await.ok().flatten();
                let status = upgrade
                    .and_then(|u| u.status)
                    .map(|s| serde_json::to_string_pretty(&s).unwrap_or_default());
                let log = self.operator_log();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "{name} did not reach {phases:?} within {limit:?}; status: {}\noperator log (last lines, newest first):\n{}",
                    status.unwrap_or_default(),
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn hub(&self) -> Deployment {
        self.deployments()
            .get("hub")
            .await
            .expect("the hub Deployment")
    }

    pub async fn hub_image(&self) -> String {
        let hub = self.hub().await;
        hub.spec
            .and_then(|s| s.template.spec)
            .map(|p| p.containers[0].image.clone().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Whether the hub Deployment is rolled out and available, as its controller sees it.
    /// On a Deployment even an annotation bumps `metadata.generation` (the hub lock is one), so
    /// right after the lock is taken or released `observedGeneration` lags for a moment: the
    /// answer waits (up to 5 s) until the controller has observed the current generation. A
    /// failed read is asked again; one that keeps failing fails the test with the API's error.
    pub async fn hub_available(&self) -> bool {
        let deployments = self.deployments();
        let start = std::time::Instant::now();
        let mut errors = 0;
        loop {
            match deployments.get("hub").await {
                Ok(hub) => {
                    let observed = hub.status.as_ref().and_then(|s| s.observed_generation)
                        >= hub.metadata.generation;
                    if observed || start.elapsed() > Duration::from_secs(5) {
                        return deployment_available(&hub);
                    }
                }
                Err(error) => {
                    errors += 1;
                    assert!(
                        errors < 5,
                        "reading the hub Deployment kept failing: {error}"
                    );
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Jobs of this namespace made for `step` (backup, migration, restore, rehearsal).
    pub async fn jobs_for(&self, step: &str) -> Vec<Job> {
        self.jobs()
            .list(&ListParams::default().labels(&format!("hubgrade.io/step={step}")))
            .await
            .expect("listing Jobs")
            .items
    }

    pub fn database(&self) -> PathBuf {
        self.volume.join("jupyterhub.sqlite")
    }

    /// Reasons of the Events about HubUpgrade `name`, oldest first.
    pub async fn event_reasons(&self, name: &str) -> Vec<(String, String, String)> {
        let events: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.client.clone(), self.ns());
        let mut listed = events
            .list(&ListParams::default())
            .await
            .expect("events")
            .items;
        listed.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        listed
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.type_.unwrap_or_default(),
                    e.reason.unwrap_or_default(),
                    e.note.unwrap_or_default(),
                )
            })
            .collect()
    }
}

async fn hub_available(deployments: &Api<Deployment>) -> bool {
    match deployments.get("hub").await {
        Ok(d) => deployment_available(&d),
        Err(_) => false,
    }
}

pub fn deployment_available(d: &Deployment) -> bool {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let current = d.status.as_ref().and_then(|s| s.observed_generation) >= d.metadata.generation;
    let status = d.status.clone().unwrap_or_default();
    current
        && status.available_replicas.unwrap_or(0) == wanted
        && status.updated_replicas.unwrap_or(0) == wanted
        && status.replicas.unwrap_or(0) == wanted
}

pub fn log_file(dir: &std::path::Path, name: &str) -> std::fs::File {
    std::fs::create_dir_all(dir).expect("log directory");
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(name))
        .expect("log file")
}

/// A kubeconfig for the local cluster that authenticates with `token` only.
pub fn write_token_kubeconfig(path: &std::path::Path, token: &str) {
    let admin = kube::config::Kubeconfig::read_from(super::kubeconfig()).expect("admin kubeconfig");
    let cluster = admin
        .clusters
        .first()
        .and_then(|c| c.cluster.clone())
        .expect("a cluster");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {
            "server": cluster.server, "certificate-authority": cluster.certificate_authority
        }}],
        "users": [{"name": "hubgrade", "user": {"token": token}}],
        "contexts": [{"name": "hubgrade", "context": {"cluster": "local", "user": "hubgrade"}}],
        "current-context": "hubgrade"
    });
    std::fs::create_dir_all(path.parent().expect("parent")).expect("directory");
    std::fs::write(path, config.to_string()).expect("writing the operator's kubeconfig");
}

/// A small database shaped like a hub's: alembic's revision table and some users.
pub async fn make_hub_database(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true);
    let mut db = sqlx::SqliteConnection::connect_with(&options)
        .await
        .expect("creating the database");
    for statement in [
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)",
        "INSERT INTO alembic_version VALUES ('0eee8c825d24')",
        "CREATE TABLE users (id INTEGER PRIMARY KEY, name VARCHAR(255) UNIQUE, admin BOOLEAN)",
        "INSERT INTO users (name, admin) VALUES ('alice', 1), ('bob', 0), ('carol', 0)",
    ] {
        sqlx::query(statement)
            .execute(&mut db)
            .await
            .expect("filling the database");
    }
    db.close().await.expect("closing the database");
}

pub fn checksum(path: &std::path::Path) -> String {
    hubgrade::db::file::size_and_checksum(path)
        .expect("checksum")
        .1
}

/// Asserts that `status` is in `phase`, showing its message when it is not.
pub fn assert_phase(status: &hubgrade::api::HubUpgradeStatus, phase: Phase) {
    assert_eq!(
        status.progress.phase, phase,
        "{} ({:?})",
        status.progress.message, status.progress.failure
    );
}

/// examples/z2jh-hub/hub.yaml as z2jh renders it for a database server (`chart_type`): the
/// values name the server, no claim is mounted, the hub is not started with --upgrade-db.
pub fn on_server(
    chart_type: &'static str,
    (url, password): (String, Option<&'static str>),
) -> impl FnOnce(String) -> String {
    move |yaml: String| {
        let password_line = password
            .map(|p| format!("  hub.db.password: \"{p}\"\n"))
            .unwrap_or_default();
        let edits = [
            (
                "    hub:\n      db:\n        type: sqlite-pvc\n",
                format!(
                    "    hub:\n      db:\n        type: {chart_type}\n        url: {url}\n{password_line}"
                ),
            ),
            (
                "        - name: pvc\n          persistentVolumeClaim: {claimName: hub-db-dir}\n",
                String::new(),
            ),
            (
                "            - {name: pvc, mountPath: /srv/jupyterhub}\n",
                String::new(),
            ),
            (
                "/usr/local/etc/jupyterhub/jupyterhub_config.py, --upgrade-db]",
                "/usr/local/etc/jupyterhub/jupyterhub_config.py]".to_string(),
            ),
        ];
        let mut yaml = yaml;
        for (from, to) in edits {
            assert!(yaml.contains(from), "hub.yaml has no {from:?}");
            yaml = yaml.replace(from, &to);
        }
        yaml
    }
}
