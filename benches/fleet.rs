//! The fleet benchmark on the local KWOK cluster (issue #15, point 5): N z2jh-shaped SQLite hubs
//! upgraded at once by one operator process, for each N of `HUBGRADE_FLEET_SIZES` (default
//! 1,50,200,500). `make bench` runs it and writes docs/BENCHMARKS-fleet.md (rewritten after each
//! size, so an interrupted run still leaves what it measured).
//!
//! For each size, in a namespace of its own on a KWOK node of its own (tainted, so no other
//! test's pods land there and the fleet leaves kwok-node-0's 110 pods to them):
//! - the hubs (examples/z2jh-hub/hub.yaml, renamed `hub-<i>`) are made and become Available,
//!   one kwok-agent-standin plays every agent pod of the namespace (each pod in its own task);
//! - the operator (`hubgrade run --namespace`, the release build) starts with the chart's RBAC
//!   for that namespace, and talks to the API server through a counting proxy in this process:
//!   every request it sends is counted by verb and resource. The API server's
//!   `apiserver_request_total` has no user or user-agent label and the cluster is shared with
//!   other runs, so its change counts every client; it is reported beside, as context;
//! - all HubUpgrades are created at once; wall time runs from the first create to the last
//!   terminal phase seen (the bench polls every 250 ms);
//! - then 60 s (`HUBGRADE_FLEET_IDLE_SECONDS`) with nothing to do: the operator's requests per
//!   minute while idle;
//! - peak RSS is the operator's VmHWM over the whole run;
//! - process start to first reconcile: the operator restarted (SIGTERM, then a new process) with
//!   the ended HubUpgrades in place (the stopped one released the lease), timed from spawn to its
//!   first `step` log line; the median of `HUBGRADE_FLEET_STARTS` (default 5) starts.
//!
//! With `HUBGRADE_FLEET_BASELINE` naming another `hubgrade` binary (an earlier build), each size
//! runs again right after with that operator, and the report compares the two side by side.
//!
//! `cargo test --all-targets` builds and runs this target too: it measures only when
//! `cargo bench` runs it, which passes `--bench`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{Method, StatusCode, header};
use axum::response::IntoResponse;
use hubgrade::api::HubUpgrade;
use hubgrade::machine::Phase;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use support::bench::Machine;
use support::e2e::{deployment_available, log_file, make_hub_database, write_token_kubeconfig};
use support::{cluster_bin, kubectl, kubectl_with_input, repo, stderr, stdout, unique};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const ORIGINAL_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:4.1.0";
const TARGET_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const REPORT: &str = "docs/BENCHMARKS-fleet.md";
/// The targets of issue #15, point 5.
const TARGET_RATIO: f64 = 2.0;
const TARGET_RSS_MIB: f64 = 50.0;
const TARGET_REQUESTS_PER_UPGRADE: f64 = 60.0;
const TARGET_START_SECONDS: f64 = 1.0;
/// The label and taint of the bench's own KWOK node.
const NODE_KEY: &str = "hubgrade-bench/fleet";

#[tokio::main]
async fn main() -> BenchResult<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("benches/fleet.rs measures only under `cargo bench` (make bench)");
        return Ok(());
    }
    let settings = Settings::from_env()?;
    let started = Instant::now();
    let client = support::client().await;
    support::install_crd(&client).await;
    let machine = Machine::describe(&client).await?;
    let node = FleetNode::create(&client, &settings).await?;
    let mut results: Vec<SizeResult> = Vec::new();
    let mut baselines: Vec<SizeResult> = Vec::new();
    let this_build = Path::new(env!("CARGO_BIN_EXE_hubgrade"));
    for &size in &settings.sizes {
        eprintln!("fleet bench: {size} hub(s)");
        let result = measure_size(&client, &node, &settings, size, this_build).await?;
        eprintln!("fleet bench: {size} hub(s): {}", result.summary());
        results.push(result);
        if let Some(baseline) = &settings.baseline {
            eprintln!("fleet bench: {size} hub(s), the baseline");
            let result = measure_size(&client, &node, &settings, size, baseline).await?;
            eprintln!(
                "fleet bench: {size} hub(s), the baseline: {}",
                result.summary()
            );
            baselines.push(result);
        }
        write_report(&machine, &settings, &results, &baselines, started.elapsed())?;
    }
    drop(node);
    eprintln!(
        "wrote {REPORT} after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the environment chooses.
struct Settings {
    sizes: Vec<usize>,
    idle: Duration,
    starts: usize,
    /// Another build of the operator, measured after this one at each size.
    baseline: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> BenchResult<Settings> {
        let sizes = std::env::var("HUBGRADE_FLEET_SIZES").unwrap_or_else(|_| "1,50,200,500".into());
        let sizes = sizes
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("HUBGRADE_FLEET_SIZES: {e}"))?;
        let number = |name: &str, default: u64| -> BenchResult<u64> {
            match std::env::var(name) {
                Ok(value) => Ok(value.parse().map_err(|e| format!("{name}: {e}"))?),
                Err(_) => Ok(default),
            }
        };
        let baseline = std::env::var_os("HUBGRADE_FLEET_BASELINE").map(PathBuf::from);
        if let Some(path) = baseline.as_ref().filter(|path| !path.is_file()) {
            return Err(format!(
                "HUBGRADE_FLEET_BASELINE: {} is not a file (it names the hubgrade binary to compare with)",
                path.display()
            )
            .into());
        }
        Ok(Settings {
            baseline,
            sizes,
            idle: Duration::from_secs(number("HUBGRADE_FLEET_IDLE_SECONDS", 60)?),
            starts: number("HUBGRADE_FLEET_STARTS", 5)? as usize,
        })
    }

    fn largest(&self) -> usize {
        self.sizes.iter().copied().max().unwrap_or(1)
    }
}

// ---------------------------------------------------------------------------------------------
// One size

/// What one fleet size measured.
struct SizeResult {
    size: usize,
    setup: Duration,
    wall: Duration,
    /// When each upgrade was seen ending, from the first create, sorted.
    ended: Vec<Duration>,
    /// Upgrades that ended in another phase than Succeeded, with their phase.
    not_succeeded: Vec<(String, Phase)>,
    rss_ready_kib: u64,
    peak_rss_kib: u64,
    requests: Counts,
    idle_requests: Counts,
    /// The requests of the idle period's second half.
    settled_requests: Counts,
    idle: Duration,
    /// The change of the API server's apiserver_request_total over the upgrades (every client).
    apiserver_requests: Option<f64>,
    /// CPU seconds (user + system) the operator and the stand-in used over the upgrades.
    cpu: (f64, f64),
    starts: Vec<Duration>,
}

impl SizeResult {
    fn summary(&self) -> String {
        format!(
            "wall {:.1} s, peak RSS {:.1} MiB, {:.1} requests per upgrade, {:.1} requests/min idle, start {:.2} s",
            self.wall.as_secs_f64(),
            mib(self.peak_rss_kib),
            self.requests_per_upgrade(),
            self.idle_per_minute(),
            median(&self.starts).as_secs_f64()
        )
    }

    fn requests_per_upgrade(&self) -> f64 {
        self.requests.total() as f64 / self.size as f64
    }

    fn idle_per_minute(&self) -> f64 {
        self.idle_requests.total() as f64 * 60.0 / self.idle.as_secs_f64().max(1.0)
    }

    /// Requests per minute in the idle period's second half: all of them, and those for the
    /// leader Lease.
    fn settled_per_minute(&self) -> (f64, f64) {
        let minutes = (self.idle - self.idle / 2).as_secs_f64().max(1.0) / 60.0;
        let leases: u64 = self
            .settled_requests
            .0
            .iter()
            .filter(|((_, resource), _)| resource == "leases")
            .map(|(_, n)| n)
            .sum();
        (
            self.settled_requests.total() as f64 / minutes,
            leases as f64 / minutes,
        )
    }
}

async fn measure_size(
    client: &Client,
    node: &FleetNode,
    settings: &Settings,
    size: usize,
    operator: &Path,
) -> BenchResult<SizeResult> {
    let setup_started = Instant::now();
    let mut fleet = Fleet::create(client, node, size).await?;
    fleet.operator_binary = operator.to_path_buf();
    let proxy = CountingProxy::start(&fleet.dir.join("token.kubeconfig")).await?;
    fleet.write_proxy_kubeconfig(proxy.port)?;
    let operator = fleet.start_operator("operator.log")?;
    wait_for_ready(&operator).await?;
    let rss_ready_kib = operator.memory("VmRSS").unwrap_or(0);
    let setup = setup_started.elapsed();
    fleet.operator = Some(operator);

    let before = proxy.counts();
    let cpu_before = fleet.cpu_seconds();
    let apiserver_before = apiserver_request_total(client).await;
    let started = Instant::now();
    let upgrades: Api<HubUpgrade> = Api::namespaced(client.clone(), &fleet.namespace);
    let creates = (0..size).map(|i| {
        let upgrades = upgrades.clone();
        async move {
            let upgrade: HubUpgrade = serde_json::from_value(serde_json::json!({
                "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
                "metadata": {"name": format!("upgrade-{i}")},
                "spec": {"hub": {"deployment": format!("hub-{i}")}, "targetImage": TARGET_IMAGE}
            }))?;
            upgrades.create(&PostParams::default(), &upgrade).await?;
            BenchResult::Ok(())
        }
    });
    for created in futures::future::join_all(creates).await {
        created?;
    }
    let limit = Duration::from_secs(180 + 3 * size as u64);
    let (ended, not_succeeded) = wait_for_ends(&upgrades, size, started, limit, &fleet).await?;
    let wall = ended.last().copied().unwrap_or_default();
    let requests = proxy.counts().since(&before);
    let cpu_after = fleet.cpu_seconds();
    let cpu = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
    let apiserver_after = apiserver_request_total(client).await;
    let apiserver_requests = apiserver_before
        .zip(apiserver_after)
        .map(|(before, after)| after - before);

    // The second half of the idle period is also counted alone: the first seconds still hold
    // the last steps of upgrades that had just ended (the lock released after Succeeded).
    let idle_from = proxy.counts();
    tokio::time::sleep(settings.idle / 2).await;
    let settled_from = proxy.counts();
    tokio::time::sleep(settings.idle - settings.idle / 2).await;
    let idle_requests = proxy.counts().since(&idle_from);
    let settled_requests = proxy.counts().since(&settled_from);
    let peak_rss_kib = fleet
        .operator
        .as_ref()
        .and_then(|o| o.memory("VmHWM"))
        .unwrap_or(0);

    let mut starts = Vec::new();
    for k in 0..settings.starts {
        fleet.stop_operator();
        let log = format!("operator-start-{k}.log");
        let operator = fleet.start_operator(&log)?;
        starts.push(wait_for_first_reconcile(&operator, &fleet.dir.join(&log)).await?);
        fleet.operator = Some(operator);
    }
    fleet.clean_up();
    Ok(SizeResult {
        size,
        setup,
        wall,
        ended,
        not_succeeded,
        rss_ready_kib,
        peak_rss_kib,
        requests,
        idle_requests,
        settled_requests,
        idle: settings.idle,
        apiserver_requests,
        cpu,
        starts,
    })
}

/// Polls the HubUpgrades until all `size` have ended; returns when each was seen ending (sorted)
/// and those that did not succeed.
async fn wait_for_ends(
    upgrades: &Api<HubUpgrade>,
    size: usize,
    started: Instant,
    limit: Duration,
    fleet: &Fleet,
) -> BenchResult<(Vec<Duration>, Vec<(String, Phase)>)> {
    let mut ended: HashMap<String, (Duration, Phase)> = HashMap::new();
    while ended.len() < size {
        if started.elapsed() > limit {
            return Err(format!(
                "only {} of {size} upgrades ended within {limit:?}; see {}",
                ended.len(),
                fleet.dir.display()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(listed) = upgrades.list(&ListParams::default()).await else {
            continue;
        };
        let seen = started.elapsed();
        for upgrade in listed.items {
            let phase = upgrade.status.as_ref().map(|s| s.progress.phase);
            if let Some(phase) = phase.filter(|p| p.is_terminal()) {
                let name = upgrade.metadata.name.unwrap_or_default();
                ended.entry(name).or_insert((seen, phase));
            }
        }
    }
    let mut times: Vec<Duration> = ended.values().map(|(at, _)| *at).collect();
    times.sort();
    let not_succeeded = ended
        .into_iter()
        .filter(|(_, (_, phase))| *phase != Phase::Succeeded)
        .map(|(name, (_, phase))| (name, phase))
        .collect();
    Ok((times, not_succeeded))
}

async fn wait_for_ready(operator: &Operator) -> BenchResult<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if let Some(answer) = support::try_http_get(operator.metrics_port, "/readyz").await
            && answer.starts_with("HTTP/1.0 200")
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("the operator did not become ready within 60 s".into())
}

/// From the operator's spawn to its first `step` log line: its first reconcile.
async fn wait_for_first_reconcile(operator: &Operator, log: &Path) -> BenchResult<Duration> {
    while operator.spawned.elapsed() < Duration::from_secs(60) {
        let text = fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|line| line.contains(": step ")) {
            return Ok(operator.spawned.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Err(format!("no reconcile within 60 s: see {}", log.display()).into())
}

/// The sum of the API server's apiserver_request_total over every label (every client).
async fn apiserver_request_total(client: &Client) -> Option<f64> {
    let request = http::Request::get("/metrics").body(Vec::new()).ok()?;
    let text = client.request_text(request).await.ok()?;
    Some(
        text.lines()
            .filter(|line| line.starts_with("apiserver_request_total{"))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum(),
    )
}

// ---------------------------------------------------------------------------------------------
// The fleet: a namespace of hubs, the stand-in, the operator

/// The bench's own KWOK node, tainted: only the fleet's pods (and the Jobs copied from their
/// template) go there. Deleted when dropped.
struct FleetNode {
    name: String,
}

impl FleetNode {
    async fn create(client: &Client, settings: &Settings) -> BenchResult<FleetNode> {
        let name = unique("fleet-bench");
        // Room for every hub, its rehearsal and its Jobs, with margin.
        let pods = (settings.largest() * 3 + 110).to_string();
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/os": "linux", "type": "kwok", NODE_KEY: name}
            },
            "spec": {"taints": [{"key": NODE_KEY, "value": name, "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "1000", "memory": "4Ti", "pods": pods},
                       "capacity": {"cpu": "1000", "memory": "4Ti", "pods": pods}}
        }))?;
        let nodes: Api<Node> = Api::all(client.clone());
        nodes.create(&PostParams::default(), &node).await?;
        Ok(FleetNode { name })
    }

    /// hub.yaml's pod template lines that put a hub on this node.
    fn placement(&self) -> String {
        let name = &self.name;
        format!(
            "      nodeSelector: {{{NODE_KEY}: {name}}}\n      tolerations: [{{key: {NODE_KEY}, operator: Equal, value: {name}, effect: NoSchedule}}]\n"
        )
    }
}

impl Drop for FleetNode {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "node", &self.name, "--wait=false"]).output();
    }
}

struct Operator {
    child: Child,
    spawned: Instant,
    metrics_port: u16,
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Operator {
    /// A line of /proc/<pid>/status in KiB (VmRSS, VmHWM).
    fn memory(&self, field: &str) -> Option<u64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{field}:")))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM, as Kubernetes stops a pod: the lease is released.
    fn stop(mut self) {
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Fleet {
    size: usize,
    namespace: String,
    dir: PathBuf,
    volumes: PathBuf,
    standin: Option<Child>,
    operator: Option<Operator>,
    /// The hubgrade binary that runs as the operator.
    operator_binary: PathBuf,
    cleaned: bool,
}

impl Fleet {
    /// The namespace with the operator's RBAC and `size` Available hubs, the stand-in serving
    /// their REST APIs.
    async fn create(client: &Client, node: &FleetNode, size: usize) -> BenchResult<Fleet> {
        let namespace = support::TestNamespace::new(client, &format!("fleet-{size}"))
            .await
            .name;
        let bench = repo().join("target/bench-fleet");
        let dir = bench.join(&namespace);
        let volumes = bench.join("volumes");
        fs::create_dir_all(&dir)?;
        let mut fleet = Fleet {
            size,
            namespace,
            dir,
            volumes,
            standin: None,
            operator: None,
            operator_binary: PathBuf::from(env!("CARGO_BIN_EXE_hubgrade")),
            cleaned: false,
        };
        fleet.apply_rbac()?;
        let mut manifest = String::new();
        for i in 0..size {
            let volume = fleet
                .volumes
                .join(&fleet.namespace)
                .join(format!("hub-db-dir-{i}"));
            fs::create_dir_all(&volume)?;
            make_hub_database(&volume.join("jupyterhub.sqlite")).await;
            manifest.push_str(&hub_manifest(&fleet.namespace, i, node));
            manifest.push_str("\n---\n");
        }
        let created = kubectl_with_input(&["create", "-n", &fleet.namespace, "-f", "-"], &manifest);
        if !created.status.success() {
            return Err(format!("creating the hubs: {}", stderr(&created)).into());
        }
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &fleet.namespace);
        wait_until_count(
            size,
            Duration::from_secs(120 + size as u64),
            "Available hubs",
            || async {
                let listed = deployments.list(&ListParams::default()).await.ok()?;
                Some(
                    listed
                        .items
                        .iter()
                        .filter(|d| deployment_available(d))
                        .count(),
                )
            },
        )
        .await?;
        let standin = Command::new(standin_binary()?)
            .args(["--namespace", &fleet.namespace, "--volumes"])
            .arg(&fleet.volumes)
            .env("KUBECONFIG", support::kubeconfig())
            .stdout(Stdio::null())
            .stderr(log_file(&fleet.dir, "standin.log"))
            .spawn()?;
        fleet.standin = Some(standin);
        // The operator's Preflight asks each hub's REST API: wait until the stand-in serves all.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &fleet.namespace);
        wait_until_count(
            size,
            Duration::from_secs(60 + size as u64),
            "served hub APIs",
            || async {
                let listed = pods
                    .list(&ListParams::default().labels("component=hub"))
                    .await
                    .ok()?;
                let answering = listed
                    .items
                    .iter()
                    .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
                    .filter(|ip| {
                        let Ok(address) = format!("{ip}:8081").parse() else {
                            return false;
                        };
                        std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200))
                            .is_ok()
                    })
                    .count();
                Some(answering)
            },
        )
        .await?;
        Ok(fleet)
    }

    /// The chart's RBAC for a one-namespace install, and a token of its ServiceAccount.
    fn apply_rbac(&self) -> BenchResult<()> {
        let ns = self.namespace.as_str();
        let chart = repo().join("charts/hubgrade");
        let rendered = Command::new(cluster_bin().join("helm"))
            .arg("template")
            .arg("hubgrade")
            .arg(&chart)
            .args(["--namespace", ns, "--set", &format!("watchNamespace={ns}")])
            .args(["--show-only", "templates/rbac.yaml"])
            .output()?;
        if !rendered.status.success() {
            return Err(format!("helm template: {}", stderr(&rendered)).into());
        }
        let applied = kubectl_with_input(&["apply", "-n", ns, "-f", "-"], &stdout(&rendered));
        if !applied.status.success() {
            return Err(format!("applying the chart's RBAC: {}", stderr(&applied)).into());
        }
        let token =
            kubectl(&["create", "token", "hubgrade", "-n", ns, "--duration=3h"]).output()?;
        if !token.status.success() {
            return Err(format!("kubectl create token: {}", stderr(&token)).into());
        }
        write_token_kubeconfig(&self.dir.join("token.kubeconfig"), stdout(&token).trim());
        Ok(())
    }

    /// The operator's kubeconfig: the counting proxy on `port`, which adds the token itself.
    fn write_proxy_kubeconfig(&self, port: u16) -> BenchResult<()> {
        let config = serde_json::json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "proxy", "cluster": {"server": format!("http://127.0.0.1:{port}")}}],
            "users": [{"name": "hubgrade", "user": {}}],
            "contexts": [{"name": "hubgrade", "context": {"cluster": "proxy", "user": "hubgrade"}}],
            "current-context": "hubgrade"
        });
        fs::write(self.dir.join("operator.kubeconfig"), config.to_string())?;
        Ok(())
    }

    fn start_operator(&self, log: &str) -> BenchResult<Operator> {
        let metrics_port = support::free_port();
        let ledger = format!("sqlite://{}", self.dir.join("ledger.sqlite").display());
        let spawned = Instant::now();
        let child = Command::new(&self.operator_binary)
            .args(["run", "--namespace", &self.namespace])
            .args(["--ledger-url", &ledger])
            .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
            .args(["--agent-image", "ghcr.io/hubgrade/hubgrade:test"])
            .env("KUBECONFIG", self.dir.join("operator.kubeconfig"))
            .env("RUST_LOG", "info,kube=warn")
            .stdout(Stdio::null())
            .stderr(log_file(&self.dir, log))
            .spawn()?;
        Ok(Operator {
            child,
            spawned,
            metrics_port,
        })
    }

    /// CPU seconds so far of the operator and of the stand-in.
    fn cpu_seconds(&self) -> (f64, f64) {
        let operator = self.operator.as_ref().map(|o| o.child.id());
        let standin = self.standin.as_ref().map(Child::id);
        (
            operator.and_then(cpu_seconds).unwrap_or(0.0),
            standin.and_then(cpu_seconds).unwrap_or(0.0),
        )
    }

    fn stop_operator(&mut self) {
        if let Some(operator) = self.operator.take() {
            operator.stop();
        }
    }

    /// Deletes the HubUpgrades while an operator runs (it takes their finalizers off), then
    /// stops everything and deletes the namespace and the hubs' volumes.
    fn clean_up(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        let ns = self.namespace.clone();
        let deleted = kubectl(&[
            "delete",
            "hubupgrades",
            "--all",
            "-n",
            &ns,
            "--timeout=300s",
        ])
        .output();
        self.stop_operator();
        if let Some(mut standin) = self.standin.take() {
            let _ = standin.kill();
            let _ = standin.wait();
        }
        if !deleted.is_ok_and(|o| o.status.success()) {
            // Left with a finalizer: nothing will take it off now.
            let names = kubectl(&["get", "hubupgrades", "-n", &ns, "-o", "name"]).output();
            for name in names.map(|o| stdout(&o)).unwrap_or_default().lines() {
                let _ = kubectl(&[
                    "patch",
                    name,
                    "-n",
                    &ns,
                    "--type=merge",
                    "-p",
                    r#"{"metadata":{"finalizers":null}}"#,
                ])
                .output();
            }
        }
        let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]).output();
        let volumes: Vec<String> = (0..self.size)
            .map(|i| format!("{ns}-hub-db-dir-{i}"))
            .collect();
        for chunk in volumes.chunks(100) {
            let mut args = vec!["delete", "pv", "--wait=false", "--ignore-not-found"];
            args.extend(chunk.iter().map(String::as_str));
            let _ = kubectl(&args).output();
        }
        let _ = fs::remove_dir_all(self.volumes.join(&ns));
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.clean_up();
    }
}

/// examples/z2jh-hub/hub.yaml as hub `i` of namespace `ns`: every object named `hub-<i>` (the
/// claim `hub-db-dir-<i>`), release `jhub-<i>` so selectors do not overlap, on the fleet node.
fn hub_manifest(ns: &str, i: usize, node: &FleetNode) -> String {
    let text = fs::read_to_string(repo().join("examples/z2jh-hub/hub.yaml"))
        .expect("examples/z2jh-hub/hub.yaml");
    text.replace("namespace: jhub", &format!("namespace: {ns}"))
        .replace("jhub-hub-db-dir", &format!("{ns}-hub-db-dir-{i}"))
        .replace("name: hub-db-dir}", &format!("name: hub-db-dir-{i}}}"))
        .replace("  name: hub-db-dir\n", &format!("  name: hub-db-dir-{i}\n"))
        .replace(
            "claimName: hub-db-dir}",
            &format!("claimName: hub-db-dir-{i}}}"),
        )
        .replace("  name: hub\n", &format!("  name: hub-{i}\n"))
        .replace(
            "configMap: {name: hub}",
            &format!("configMap: {{name: hub-{i}}}"),
        )
        .replace("secretName: hub}", &format!("secretName: hub-{i}}}"))
        .replace(
            "secretKeyRef: {name: hub,",
            &format!("secretKeyRef: {{name: hub-{i},"),
        )
        .replace("release: jhub}", &format!("release: jhub-{i}}}"))
        .replace("release: jhub,", &format!("release: jhub-{i},"))
        .replace(
            "      serviceAccountName: hub\n",
            &format!("      serviceAccountName: hub-{i}\n{}", node.placement()),
        )
}

/// kwok-agent-standin next to this bench's build (`cargo build --release -p hubgrade-standins`,
/// as `make bench` does), else the debug one `make standins` builds.
fn standin_binary() -> BenchResult<PathBuf> {
    let exe = std::env::current_exe()?;
    let profile = exe
        .parent()
        .and_then(Path::parent)
        .ok_or("the bench runs from <target>/<profile>/deps")?;
    let candidates = [
        profile.join("kwok-agent-standin"),
        profile.join("../debug/kwok-agent-standin"),
    ];
    candidates
        .into_iter()
        .find(|path| path.exists())
        .ok_or_else(|| {
            "kwok-agent-standin is missing: cargo build --release -p hubgrade-standins".into()
        })
}

/// Waits until `count` (None: could not tell) reaches `wanted`.
async fn wait_until_count<F, Fut>(
    wanted: usize,
    limit: Duration,
    what: &str,
    mut count: F,
) -> BenchResult<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<usize>>,
{
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < limit {
        last = count().await;
        if last == Some(wanted) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("{what}: {last:?} of {wanted} after {limit:?}").into())
}

// ---------------------------------------------------------------------------------------------
// The counting proxy

/// Requests by (verb, resource), as the API server's metrics name them.
#[derive(Clone, Default)]
struct Counts(BTreeMap<(String, String), u64>);

impl Counts {
    fn total(&self) -> u64 {
        self.0.values().sum()
    }

    fn since(&self, before: &Counts) -> Counts {
        Counts(
            self.0
                .iter()
                .map(|(key, n)| (key.clone(), n - before.0.get(key).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    /// The largest entries first.
    fn ranked(&self) -> Vec<(&(String, String), u64)> {
        let mut entries: Vec<_> = self.0.iter().map(|(k, n)| (k, *n)).collect();
        entries.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        entries
    }
}

/// A plain-HTTP proxy in front of the API server that counts each request the operator sends,
/// and sends it on with the operator's own token.
#[derive(Clone)]
struct CountingProxy {
    client: Client,
    counts: Arc<Mutex<Counts>>,
    port: u16,
}

impl CountingProxy {
    async fn start(kubeconfig: &Path) -> BenchResult<CountingProxy> {
        let config = Config::from_custom_kubeconfig(
            Kubeconfig::read_from(kubeconfig)?,
            &KubeConfigOptions::default(),
        )
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy = CountingProxy {
            client: Client::try_from(config)?,
            counts: Arc::default(),
            port: listener.local_addr()?.port(),
        };
        let router = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(proxy)
    }

    fn counts(&self) -> Counts {
        self.counts.lock().map(|c| c.clone()).unwrap_or_default()
    }

    fn count(&self, parts: &http::request::Parts) {
        let key = verb_and_resource(parts);
        if let Ok(mut counts) = self.counts.lock() {
            *counts.0.entry(key).or_insert(0) += 1;
        }
    }
}

async fn forward(
    State(proxy): State<CountingProxy>,
    request: axum::extract::Request,
) -> axum::response::Response {
    let (parts, body) = request.into_parts();
    proxy.count(&parts);
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = http::Request::builder()
        .method(parts.method.clone())
        .uri(path);
    let hop = [
        header::HOST,
        header::AUTHORIZATION,
        header::CONTENT_LENGTH,
        header::CONNECTION,
    ];
    for (name, value) in &parts.headers {
        if !hop.contains(name) {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(upstream) = upstream.body(kube::client::Body::from(body.to_vec())) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    match proxy.client.send(upstream).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            parts.headers.remove(header::CONNECTION);
            parts.headers.remove(header::TRANSFER_ENCODING);
            axum::response::Response::from_parts(parts, axum::body::Body::new(body))
        }
        Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
    }
}

/// The verb and resource the API server's `apiserver_request_total` would count a request as.
fn verb_and_resource(parts: &http::request::Parts) -> (String, String) {
    let segments: Vec<&str> = parts
        .uri
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match segments.first() {
        Some(&"api") if segments.len() > 2 => &segments[2..],
        Some(&"apis") if segments.len() > 3 => &segments[3..],
        _ => return (parts.method.to_string(), parts.uri.path().to_string()),
    };
    let rest = match rest {
        ["namespaces", _, resource @ ..] if !resource.is_empty() => resource,
        other => other,
    };
    let (resource, named) = match rest {
        [resource] => (resource.to_string(), false),
        [resource, _] => (resource.to_string(), true),
        [resource, _, sub, ..] => (format!("{resource}/{sub}"), true),
        [] => (String::new(), false),
    };
    let query = parts.uri.query().unwrap_or_default();
    let applies = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("apply-patch"));
    let verb = match (&parts.method, named) {
        (&Method::GET, false)
            if query
                .split('&')
                .any(|q| q == "watch=true" || q == "watch=1") =>
        {
            "WATCH"
        }
        (&Method::GET, false) => "LIST",
        (&Method::GET, true) => "GET",
        (&Method::POST, _) => "POST",
        (&Method::PUT, _) => "PUT",
        (&Method::PATCH, _) if applies => "APPLY",
        (&Method::PATCH, _) => "PATCH",
        (&Method::DELETE, false) => "DELETECOLLECTION",
        (&Method::DELETE, true) => "DELETE",
        (other, _) => other.as_str(),
    };
    (verb.to_string(), resource)
}

// ---------------------------------------------------------------------------------------------
// The report

/// utime + stime of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / per_second)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

/// "met" or "not met", with how far from the target.
fn verdict(value: f64, target: f64) -> String {
    if value <= target {
        "met".into()
    } else {
        format!("**not met** ({:.1}× the target)", value / target)
    }
}

fn write_report(
    machine: &Machine,
    settings: &Settings,
    results: &[SizeResult],
    baselines: &[SizeResult],
    elapsed: Duration,
) -> BenchResult<()> {
    let mut r = String::new();
    let sizes: Vec<String> = settings.sizes.iter().map(usize::to_string).collect();
    writeln!(r, "# Fleet benchmark\n")?;
    writeln!(
        r,
        "Written by `make bench` (benches/fleet.rs, `HUBGRADE_FLEET_SIZES={}`) on {}; the run took {:.0} s so far.\n",
        sizes.join(","),
        machine.date,
        elapsed.as_secs_f64()
    )?;
    write!(
        r,
        "{}",
        machine.section("the hubs on a KWOK node of the bench's own")
    )?;
    writeln!(r, "## What was measured\n")?;
    writeln!(
        r,
        "For each size N, N z2jh-shaped SQLite hubs (examples/z2jh-hub/hub.yaml as `hub-0` … `hub-<N-1>`, k8s-hub {ORIGINAL_IMAGE}) in one namespace, and one operator (`hubgrade run --namespace`, release build, the chart's RBAC, an SQLite ledger) watching it. All N HubUpgrades to {TARGET_IMAGE} (default spec: lock, rehearsal, backup, migration, roll out, verification) are created at once; **wall time** runs from the first create to the last terminal phase the bench saw (polled every 250 ms). One kwok-agent-standin plays every agent pod of the namespace, each pod in its own task, so the pods run side by side. Sizes run one after the other, each in a fresh namespace.\n"
    )?;
    writeln!(
        r,
        "- **Requests** are counted by a proxy in the bench between the operator and the API server (the operator's kubeconfig points at it; it forwards each request with the operator's token): every request the operator sends, by verb and resource as `apiserver_request_total` names them, a watch counted once when opened. The API server's own `apiserver_request_total` has no user or user-agent label, and this cluster is shared with other test runs, so subtracting a baseline would not isolate the operator; its change over the upgrades is shown beside as context (it counts every client: the operator, the stand-in's polling, KWOK, the controllers and scheduler, the bench's own polling, and anyone else using the cluster).\n- **Idle**: the operator's requests during {} s after the last upgrade ended, per minute.\n- **Peak RSS**: the operator's VmHWM (/proc/<pid>/status) at the end of the idle period; \"ready\" is its VmRSS once /readyz answered, before any HubUpgrade existed.\n- **Start to first reconcile**: the operator stopped (SIGTERM) and started again {} times with the ended HubUpgrades in place (the stopped one releases the leader lease, so the new one takes it at once); from spawn to its first `step` log line; the median.\n- **CPU**: user + system seconds of the operator and of the stand-in over the upgrades (/proc/<pid>/stat), to show who was busy on a machine of {} CPUs; **setup**: making the namespace, the hubs (until Available), the stand-in and the operator, not in the wall time.\n",
        settings.idle.as_secs(),
        settings.starts,
        machine.cpus
    )?;
    writeln!(r, "## Results\n")?;
    let one = results.iter().find(|x| x.size == 1).map(|x| x.wall);
    writeln!(
        r,
        "| hubs | wall time | × one | each upgrade ended (median / slowest) | peak RSS (ready) | requests | per upgrade | idle requests/min | apiserver_request_total Δ (all clients) | start → first reconcile (median; min–max) | CPU: operator / stand-in | setup |"
    )?;
    writeln!(
        r,
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for x in results {
        let ratio = one.map_or("–".into(), |one| {
            format!("{:.2}×", x.wall.as_secs_f64() / one.as_secs_f64())
        });
        let mut starts = x.starts.clone();
        starts.sort();
        writeln!(
            r,
            "| {} | {:.1} s | {} | {:.1} s / {:.1} s | {:.1} MiB ({:.1}) | {} | {:.1} | {:.1} | {} | {:.2} s ({:.2}–{:.2}) | {:.1} s / {:.1} s | {:.0} s |",
            x.size,
            x.wall.as_secs_f64(),
            ratio,
            median(&x.ended).as_secs_f64(),
            x.ended.last().copied().unwrap_or_default().as_secs_f64(),
            mib(x.peak_rss_kib),
            mib(x.rss_ready_kib),
            x.requests.total(),
            x.requests_per_upgrade(),
            x.idle_per_minute(),
            x.apiserver_requests
                .map_or("–".into(), |n| format!("{n:.0}")),
            median(&x.starts).as_secs_f64(),
            starts.first().copied().unwrap_or_default().as_secs_f64(),
            starts.last().copied().unwrap_or_default().as_secs_f64(),
            x.cpu.0,
            x.cpu.1,
            x.setup.as_secs_f64(),
        )?;
    }
    writeln!(r)?;
    for x in results.iter().filter(|x| !x.not_succeeded.is_empty()) {
        let named: Vec<String> = x
            .not_succeeded
            .iter()
            .take(5)
            .map(|(name, phase)| format!("{name} ({phase})"))
            .collect();
        writeln!(
            r,
            "- {} hubs: {} upgrade(s) did not succeed: {}",
            x.size,
            x.not_succeeded.len(),
            named.join(", ")
        )?;
    }

    if let Some(baseline) = settings.baseline.as_ref().filter(|_| !baselines.is_empty()) {
        writeln!(r, "## Against the baseline\n")?;
        writeln!(
            r,
            "Each size ran again right after, in a fresh namespace, with the operator `{}` (an earlier build); ratios are this build's over the baseline's.\n",
            baseline.display()
        )?;
        writeln!(
            r,
            "| hubs | peak RSS: this / baseline | ratio | wall time: this / baseline | ratio | requests per upgrade: this / baseline | start → first reconcile: this / baseline |"
        )?;
        writeln!(r, "|---:|---:|---:|---:|---:|---:|---:|")?;
        for (x, b) in results.iter().zip(baselines) {
            writeln!(
                r,
                "| {} | {:.1} / {:.1} MiB | {:.2}× | {:.1} / {:.1} s | {:.2}× | {:.1} / {:.1} | {:.2} / {:.2} s |",
                x.size,
                mib(x.peak_rss_kib),
                mib(b.peak_rss_kib),
                x.peak_rss_kib as f64 / b.peak_rss_kib.max(1) as f64,
                x.wall.as_secs_f64(),
                b.wall.as_secs_f64(),
                x.wall.as_secs_f64() / b.wall.as_secs_f64().max(f64::EPSILON),
                x.requests_per_upgrade(),
                b.requests_per_upgrade(),
                median(&x.starts).as_secs_f64(),
                median(&b.starts).as_secs_f64(),
            )?;
        }
        for b in baselines.iter().filter(|b| !b.not_succeeded.is_empty()) {
            writeln!(
                r,
                "\n- the baseline at {} hubs: {} upgrade(s) did not succeed",
                b.size,
                b.not_succeeded.len()
            )?;
        }
        writeln!(r)?;
    }

    writeln!(r, "\n## Against the targets\n")?;
    let largest = results.iter().max_by_key(|x| x.size);
    if let (Some(one), Some(x)) = (one, largest.filter(|x| x.size > 1)) {
        let ratio = x.wall.as_secs_f64() / one.as_secs_f64();
        writeln!(
            r,
            "- {} at once ≤ {TARGET_RATIO}× one upgrade's wall time (the target is stated for 500): {:.1} s against {:.1} s, **{ratio:.1}×**: {}.",
            x.size,
            x.wall.as_secs_f64(),
            one.as_secs_f64(),
            verdict(ratio, TARGET_RATIO)
        )?;
    }
    for x in results {
        writeln!(
            r,
            "- {} hub(s): peak RSS {:.1} MiB ≤ {TARGET_RSS_MIB} MiB: {}; {:.1} requests per upgrade ≤ {TARGET_REQUESTS_PER_UPGRADE}: {}; idle {:.1} requests/min, {:.1} in its second half of which {:.1} for the leader Lease (target ~0); start to first reconcile {:.2} s ≤ {TARGET_START_SECONDS} s: {}.",
            x.size,
            mib(x.peak_rss_kib),
            verdict(mib(x.peak_rss_kib), TARGET_RSS_MIB),
            x.requests_per_upgrade(),
            verdict(x.requests_per_upgrade(), TARGET_REQUESTS_PER_UPGRADE),
            x.idle_per_minute(),
            x.settled_per_minute().0,
            x.settled_per_minute().1,
            median(&x.starts).as_secs_f64(),
            verdict(median(&x.starts).as_secs_f64(), TARGET_START_SECONDS),
        )?;
    }

    writeln!(r, "\n## Where the requests go\n")?;
    writeln!(
        r,
        "The operator's requests during the upgrades, by verb and resource, per upgrade (the fifteen largest; a subresource is written `resource/subresource`).\n"
    )?;
    let header: Vec<String> = results
        .iter()
        .map(|x| format!("{} hub(s)", x.size))
        .collect();
    writeln!(r, "| verb | resource | {} |", header.join(" | "))?;
    writeln!(r, "|---|---|{}", "---:|".repeat(results.len()))?;
    if let Some(x) = largest {
        for ((verb, resource), _) in x.requests.ranked().into_iter().take(15) {
            let cells: Vec<String> = results
                .iter()
                .map(|y| {
                    let n = y
                        .requests
                        .0
                        .get(&(verb.clone(), resource.clone()))
                        .copied()
                        .unwrap_or(0);
                    format!("{:.1}", n as f64 / y.size as f64)
                })
                .collect();
            writeln!(r, "| {verb} | {resource} | {} |", cells.join(" | "))?;
        }
    }
    writeln!(
        r,
        "\nWhile idle ({} s after the last upgrade ended):\n",
        settings.idle.as_secs()
    )?;
    for x in results {
        let entries: Vec<String> = x
            .idle_requests
            .ranked()
            .into_iter()
            .map(|((verb, resource), n)| format!("{verb} {resource}: {n}"))
            .collect();
        let listed = if entries.is_empty() {
            "none".to_string()
        } else {
            entries.join(", ")
        };
        let (settled, leases) = x.settled_per_minute();
        writeln!(
            r,
            "- {} hub(s): {listed}; in the second half alone {settled:.1} requests/min, {leases:.1} of them for the leader Lease",
            x.size
        )?;
    }
    let path = repo().join(REPORT);
    fs::create_dir_all(path.parent().ok_or("docs")?)?;
    fs::write(path, r)?;
    Ok(())
}
