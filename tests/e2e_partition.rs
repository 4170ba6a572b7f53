//! Two operators and a network partition (issue #15): the leader A reaches the API server
//! through a proxy the test runs, and mid-migration the proxy becomes a black hole (nothing
//! forwarded either way, nothing refused, every connection held open). A must stop acting
//! before its lease could expire for anyone else, the standby B must take over within a lease
//! and finish the upgrade, every step made once; healed and restarted, A stays a follower.

mod support;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use hubgrade::machine::{Outcome, Phase};
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use serde_json::{Value, json};
use support::e2e::{Hub, with_template_annotations};
use support::{free_port, try_http_get};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const LEASE: Duration = Duration::from_secs(6);
const LIMIT: Duration = Duration::from_secs(120);
const UPGRADE: &str = "across-a-partition";
/// The migration Job's pod runs this long: B takes over while it runs.
const MIGRATION_DELAY: &str = "15s";

/// A TCP proxy to the API server that can be cut: while cut it forwards nothing in either
/// direction and keeps every connection open, and it still accepts new ones and holds them (a
/// black hole: requests hang, nothing is refused). Healed, it forwards again what it held, as
/// TCP retransmits once a real network heals. TLS passes through untouched.
struct Partition {
    port: u16,
    open: watch::Sender<bool>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Partition {
    async fn start(upstream: String) -> Partition {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("its address").port();
        let (open, _) = watch::channel(true);
        let opened = open.clone();
        let accepting = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut open = opened.subscribe();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    // A connection made while cut reaches the server only once healed.
                    if open.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        forward(client_read, server_write, open.clone()),
                        forward(server_read, client_write, open),
                    );
                });
            }
        });
        Partition {
            port,
            open,
            accepting,
        }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn heal(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

/// Copies `from` to `to` while the link is open; cut, it reads and writes nothing (what it had
/// read waits), so the peers' requests and answers hang.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut open: watch::Receiver<bool>,
) {
    let mut buffer = vec![0; 64 * 1024];
    loop {
        if open.wait_for(|open| *open).await.is_err() {
            return;
        }
        let read = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        if open.wait_for(|open| *open).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// An operator process, killed when the test ends (passed or not).
struct Operator {
    child: Child,
    log: std::path::PathBuf,
    metrics_port: u16,
}

impl Operator {
    fn spawn(hub: &Hub, kubeconfig: &Path, log: &str) -> Operator {
        let metrics_port = free_port();
        let seconds = LEASE.as_secs() as u32;
        Operator {
            child: hub.spawn_operator_with_kubeconfig(kubeconfig, metrics_port, log, seconds),
            log: hub.dir.join(log),
            metrics_port,
        }
    }

    fn lines(&self) -> Vec<LogLine> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(LogLine::parse)
            .collect()
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// When it logged `message` first.
    fn logged(&self, message: &str) -> Option<Timestamp> {
        self.lines()
            .into_iter()
            .find(|line| line.message == message)
            .map(|line| line.at)
    }

    async fn metrics(&self) -> Option<String> {
        try_http_get(self.metrics_port, "/metrics").await
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One line of an operator's JSON log (`--log-json`).
#[derive(Debug, Clone)]
struct LogLine {
    at: Timestamp,
    message: String,
    /// The `action` field of a "step" line (`Wait`, `StartMigration`, ...).
    action: Option<String>,
    raw: String,
}

impl LogLine {
    fn parse(raw: &str) -> Option<LogLine> {
        let line: Value = serde_json::from_str(raw).ok()?;
        let fields = &line["fields"];
        Some(LogLine {
            at: line["timestamp"].as_str()?.parse().ok()?,
            message: fields["message"].as_str()?.to_string(),
            action: fields["action"].as_str().map(str::to_string),
            raw: raw.to_string(),
        })
    }

    /// A line that changed something: a step other than waiting, or a phase recorded.
    fn is_action(&self) -> bool {
        (self.message == "step" && self.action.as_deref() != Some("Wait"))
            || self.message == "phase changed"
    }
}

/// A copy of the operator's kubeconfig whose server is `server`.
fn kubeconfig_through(hub: &Hub, server: &str) -> std::path::PathBuf {
    let text = std::fs::read_to_string(hub.operator_kubeconfig()).expect("operator kubeconfig");
    let mut config: Value = serde_json::from_str(&text).expect("a JSON kubeconfig");
    config["clusters"][0]["cluster"]["server"] = json!(server);
    let path = hub.dir.join("operator-through-proxy.kubeconfig");
    std::fs::write(&path, config.to_string()).expect("writing the proxy's kubeconfig");
    path
}

/// host:port of the API server the cluster's kubeconfig names.
fn api_server_address() -> String {
    let config = kube::config::Kubeconfig::read_from(support::kubeconfig()).expect("kubeconfig");
    let server = config
        .clusters
        .first()
        .and_then(|c| c.cluster.as_ref()?.server.clone())
        .expect("a server");
    let url = url::Url::parse(&server).expect("a server URL");
    format!(
        "{}:{}",
        url.host_str().expect("a host"),
        url.port_or_known_default().expect("a port")
    )
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leader_cut_off_from_the_api_server_stops_before_the_standby_takes_over() {
    let started = Instant::now();
    let mut hub = Hub::new(
        "e2e-partition",
        with_template_annotations(&format!("kwok.hubgrade.io/delay: {MIGRATION_DELAY}")),
    )
    .await;
    // The harness's own operator goes (SIGKILL: its short lease expires before A asks): A and
    // B are the only replicas.
    hub.kill_operator();
    hub.operator_args.push("--log-json".into());

    let proxy = Partition::start(api_server_address()).await;
    let through_proxy = kubeconfig_through(&hub, &format!("https://127.0.0.1:{}", proxy.port));
    let mut a = Operator::spawn(&hub, &through_proxy, "operator-a.log");
    support::wait_until(Duration::from_secs(40), "A to lead", || async {
        a.logged("became the leader").is_some()
    })
    .await;
    let mut b = Operator::spawn(&hub, hub.operator_kubeconfig(), "operator-b.log");
    support::wait_until(Duration::from_secs(30), "B to be a standby", || async {
        b.metrics()
            .await
            .is_some_and(|m| m.contains("hubgrade_leader 0"))
            && b.logged("waiting for the leader lease").is_some()
    })
    .await;

    hub.apply_upgrade(
        UPGRADE,
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
               "migration": {"rehearse": false}}),
    )
    .await;
    hub.wait_for(UPGRADE, &[Phase::Migrating], LIMIT).await;
    support::wait_until(
        Duration::from_secs(30),
        "A to start the migration Job",
        || async { !hub.jobs_for("migration").await.is_empty() },
    )
    .await;
    assert_eq!(
        b.logged("became the leader"),
        None,
        "B led before the partition:\n{}",
        b.text()
    );

    proxy.cut();
    let cut_at = Timestamp::now();
    let cut = Instant::now();
    support::wait_until(
        LEASE + Duration::from_secs(10),
        "B to take over",
        || async { b.logged("became the leader").is_some() },
    )
    .await;
    let b_leads_at = b.logged("became the leader").expect("B leads");
    let b_took = cut.elapsed();
    let a_exit = a.exited();
    let a_lines = a.lines();
    let a_lost_at = a_lines
        .iter()
        .find(|l| l.message.starts_with("lost the leader lease"))
        .map(|l| l.at)
        .unwrap_or_else(|| {
            panic!(
                "A never gave up its lease; B leads since {b_leads_at}; A's log:\n{}",
                a.text()
            )
        });
    assert!(
        a_exit.is_some_and(|status| !status.success()),
        "A still runs ({a_exit:?}) while B leads"
    );
    // A stops acting before B starts: its last line of all (the exit) comes before B leads.
    let a_last = a_lines.last().expect("A logged");
    assert!(
        a_lost_at < b_leads_at && a_last.at < b_leads_at,
        "A gave up at {a_lost_at}, last logged {} ({}), B leads since {b_leads_at}",
        a_last.at,
        a_last.raw
    );
    let a_acted_after_cut: Vec<&LogLine> = a_lines
        .iter()
        .filter(|l| l.at > cut_at && l.is_action())
        .collect();
    let a_last_action = a_lines
        .iter()
        .rev()
        .find(|l| l.is_action())
        .expect("A acted");
    assert!(a_last_action.at < b_leads_at);
    // The renewal deadline is two thirds of the lease: A is out within that of the cut.
    assert!(
        seconds(cut_at, a_lost_at) <= LEASE.as_secs_f64() * 2.0 / 3.0 + 1.0,
        "A gave up {} s after the cut",
        seconds(cut_at, a_lost_at)
    );
    assert!(
        b_took < LEASE + Duration::from_secs(4),
        "B took over {b_took:?} after the cut"
    );

    let terminal = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];
    let done = hub.wait_for(UPGRADE, &terminal, LIMIT).await;
    let ended_at = Timestamp::now();
    let status = done.status.expect("status");
    support::e2e::assert_phase(&status, Phase::Succeeded);
    assert_eq!(hub.hub_image().await, TARGET);
    assert!(hub.hub_available().await, "the hub is not available");

    // Every step was made once, by A before the cut or by B after it.
    let b_lines = b.lines();
    let mut actions: Vec<String> = a_lines
        .iter()
        .chain(&b_lines)
        .filter(|l| l.message == "step")
        .filter_map(|l| l.action.clone())
        .filter(|action| action != "Wait")
        .collect();
    let all_actions = actions.clone();
    actions.sort();
    let before = actions.len();
    actions.dedup();
    assert_eq!(
        before,
        actions.len(),
        "an action was made twice: {all_actions:?}"
    );
    for action in ["StartBackup", "StartMigration"] {
        assert!(all_actions.iter().any(|a| a == action), "{all_actions:?}");
    }
    for step in ["backup", "migration"] {
        let jobs = hub.jobs_for(step).await;
        assert_eq!(jobs.len(), 1, "{step} Jobs: {jobs:?}");
    }
    let steps: Vec<Phase> = status.progress.steps.iter().map(|s| s.name).collect();
    let mut unique = steps.clone();
    unique.sort_by_key(|p| p.to_string());
    unique.dedup();
    assert_eq!(unique.len(), steps.len(), "a phase twice: {steps:?}");
    for step in &status.progress.steps {
        assert_ne!(step.outcome, Some(Outcome::Failed), "{steps:?}");
    }
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(hub.client.clone(), hub.ns());
    let events: Vec<_> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(UPGRADE))
        .collect();
    let mut reasons: Vec<String> = events
        .iter()
        .map(|e| e.reason.clone().unwrap_or_default())
        .collect();
    for event in &events {
        assert_eq!(
            event.series.as_ref().map(|s| s.count),
            None,
            "an Event repeated: {event:?}"
        );
        assert_ne!(event.type_.as_deref(), Some("Warning"), "{event:?}");
    }
    let all_reasons = reasons.clone();
    reasons.sort();
    reasons.dedup();
    assert_eq!(reasons.len(), all_reasons.len(), "{all_reasons:?}");
    let b_text = b.text();
    assert!(!b_text.contains("already exists"), "{b_text}");
    assert!(b.exited().is_none(), "B exited:\n{b_text}");

    // Healed, A comes back (as the kubelet restarts its container) and stays a follower.
    proxy.heal();
    drop(a);
    let a_again = Operator::spawn(&hub, &through_proxy, "operator-a-restarted.log");
    support::wait_until(Duration::from_secs(30), "A to be a standby", || async {
        a_again
            .metrics()
            .await
            .is_some_and(|m| m.contains("hubgrade_leader 0"))
    })
    .await;
    tokio::time::sleep(LEASE * 2).await;
    let again = a_again.text();
    assert!(
        a_again
            .lines()
            .iter()
            .all(|l| l.message != "step" && l.message != "became the leader"),
        "A acted after it came back:\n{again}"
    );
    assert!(
        a_again
            .metrics()
            .await
            .is_some_and(|m| m.contains("hubgrade_leader 0")),
        "{again}"
    );
    let leases: Api<Lease> = Api::namespaced(hub.client.clone(), hub.ns());
    let lease = leases.get("hubgrade-leader").await.expect("the lease");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    let b_identity = b_lines
        .iter()
        .find(|l| l.message == "became the leader")
        .and_then(|l| serde_json::from_str::<Value>(&l.raw).ok())
        .and_then(|v| v["fields"]["identity"].as_str().map(str::to_string))
        .expect("B's identity");
    assert_eq!(holder, b_identity, "B no longer holds the lease");
    assert!(b.exited().is_none(), "B exited:\n{}", b.text());
    for operator in [&b, &a_again] {
        support::assert_clean_operator_log(&operator.text(), &[]);
    }

    let upgrade_started = status.progress.steps.first().map(|s| s.started_at);
    eprintln!(
        "partition at {cut_at}: A gave up {:.1} s later (its last action {:.1} s before the \
         cut, {} after it), B led {:.1} s after the cut, the upgrade ended {:.1} s after it \
         ({:.1} s in all); the test ran {:?}",
        seconds(cut_at, a_lost_at),
        seconds(a_last_action.at, cut_at),
        a_acted_after_cut.len(),
        seconds(cut_at, b_leads_at),
        seconds(cut_at, ended_at),
        upgrade_started.map_or(0.0, |s| seconds(s, ended_at)),
        started.elapsed()
    );
    eprintln!("steps: {steps:?}\nactions: {all_actions:?}\nevents: {all_reasons:?}");
}
