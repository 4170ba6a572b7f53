//! The downtime benchmark on the local cluster's real node (issue #15, Speed): the operator's own
//! share of an upgrade's downtime, that is the downtime minus the migration Job's run time minus
//! the new hub's start to Ready (target ≤ 1 s). `make bench` runs it and writes
//! docs/BENCHMARKS-downtime.md (rewritten after each run, so an interrupted bench still leaves
//! what it measured).
//!
//! Each of `HUBGRADE_DOWNTIME_RUNS` (default 3) runs makes a fresh real hub
//! (tests/support/real_hub.rs: z2jh's k8s-hub 3.3.8 in real containers, 210 users made through
//! its REST API, the operator as a host process: the release build under `cargo bench`) and
//! upgrades it to k8s-hub 4.4.0 with the default spec. Seconds-precision Kubernetes timestamps
//! cannot resolve a 1 s target, so the bench watches from outside, each observation stamped with
//! this machine's clock (the operator's clock too):
//! - /hub/health through proxy-public, polled every 50 ms: the downtime a user saw;
//! - watches of the namespace's pods and Jobs: when each was seen created, Ready, deleted,
//!   complete (an event arrives within milliseconds of the API server storing the change);
//! - the real node's containerd events (`ctr events`, nanoseconds): when each container really
//!   started and exited, matched to pods through their `containerID`;
//! - the HubUpgrade's status (`hubScaledDownAt`, `hubStoppedAt`, `hubReadyAt` and the steps'
//!   times, sub-second, written by the operator).
//!
//! `cargo test --all-targets` builds and runs this target too: it measures only when
//! `cargo bench` runs it, which passes `--bench`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::error::Error;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use hubgrade::api::HubUpgrade;
use hubgrade::machine::Phase;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

use support::bench::Machine;
use support::real_hub::{NEW_IMAGE, OLD_IMAGE, Operator, RealHub, http_status};

type BenchResult<T> = Result<T, Box<dyn Error>>;

const REPORT: &str = "docs/BENCHMARKS-downtime.md";
/// Issue #15: the operator's own share of the downtime.
const TARGET_SHARE_SECONDS: f64 = 1.0;
/// As tests/e2e_real.rs populates its hub.
const USERS: usize = 210;
const UPGRADE_LIMIT: Duration = Duration::from_secs(900);
const TERMINAL: &[Phase] = &[Phase::Succeeded, Phase::RolledBack, Phase::Failed];
const HEALTH_POLL: Duration = Duration::from_millis(50);
/// The real node's containerd (tests/cluster/: its own socket, never the system's).
const CONTAINERD: &str = "/run/hubgrade-node/containerd/containerd.sock";
const STEP_LABEL: &str = "hubgrade.io/step";

#[tokio::main]
async fn main() -> BenchResult<()> {
    if !std::env::args().any(|arg| arg == "--bench") {
        eprintln!("benches/downtime.rs measures only under `cargo bench` (make bench)");
        return Ok(());
    }
    let runs: usize = match std::env::var("HUBGRADE_DOWNTIME_RUNS") {
        Ok(value) => value
            .parse()
            .map_err(|e| format!("HUBGRADE_DOWNTIME_RUNS: {e}"))?,
        Err(_) => 3,
    };
    let started = Instant::now();
    let client = support::client().await;
    let machine = Machine::describe(&client).await?;
    let mut results = Vec::new();
    for run in 1..=runs {
        eprintln!("downtime bench: run {run} of {runs}");
        let result = measure_run().await?;
        eprintln!("downtime bench: run {run}: {}", result.summary());
        results.push(result);
        write_report(&machine, runs, &results, started.elapsed())?;
    }
    eprintln!(
        "wrote {REPORT} after {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// One run

async fn measure_run() -> BenchResult<RunResult> {
    let setup_started = Instant::now();
    let hub = RealHub::new("bench-downtime", None, Operator::HostProcess).await;
    let population = hub.populate(USERS);
    let recorder = Recorder::start(&hub).await?;
    let setup = setup_started.elapsed();

    let upgrade_started = Instant::now();
    hub.apply_upgrade("to-5", NEW_IMAGE, json!({})).await;
    let upgrade = hub.wait_for("to-5", TERMINAL, UPGRADE_LIMIT).await;
    let phase = upgrade.status.as_ref().map(|s| s.progress.phase);
    if phase != Some(Phase::Succeeded) {
        return Err(format!(
            "the upgrade ended {phase:?}, not Succeeded; operator log:\n{}",
            hub.operator_log()
        )
        .into());
    }
    // The hub answers through the proxy again, seen by the poller for a second.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !recorder.health_back() {
        if Instant::now() > deadline {
            return Err("/hub/health did not answer 200 within 120 s of Succeeded".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let upgrade_wall = upgrade_started.elapsed();
    let timeline = recorder.stop();
    hub.assert_population(&population);
    let result = analyze(&timeline, &upgrade, setup, upgrade_wall);
    hub.delete_namespace().await;
    drop(hub);
    result
}

// ---------------------------------------------------------------------------------------------
// Recording

/// One GET /hub/health through proxy-public.
#[derive(Clone, Copy)]
struct HealthSample {
    sent: SystemTime,
    ok: bool,
}

/// A watch event as it arrived: (arrival, deleted, object).
type Seen<K> = Vec<(SystemTime, bool, K)>;

/// A containerd event of the real node: its time, topic and container.
struct RuntimeEvent {
    time: SystemTime,
    topic: String,
    container: String,
    /// The pod uid a sandbox's labels name (`/containers/update` of a pod's sandbox).
    sandbox_of: Option<String>,
}

/// What the recorder saw, all stamped with this machine's clock.
#[derive(Default)]
struct Timeline {
    health: Vec<HealthSample>,
    pods: Seen<Pod>,
    jobs: Seen<Job>,
    runtime: Vec<RuntimeEvent>,
}

/// The pollers and watches of one run.
struct Recorder {
    stop: Arc<AtomicBool>,
    health: Arc<Mutex<Vec<HealthSample>>>,
    health_thread: Option<std::thread::JoinHandle<()>>,
    pods: Arc<Mutex<Seen<Pod>>>,
    jobs: Arc<Mutex<Seen<Job>>>,
    watches: Vec<tokio::task::JoinHandle<()>>,
    ctr: Child,
    runtime: Arc<Mutex<Vec<RuntimeEvent>>>,
    runtime_thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    /// Starts every recorder; returns once the watches listed what exists and the poller saw
    /// the hub answer.
    async fn start(hub: &RealHub) -> BenchResult<Recorder> {
        let stop = Arc::new(AtomicBool::new(false));
        let health = Arc::new(Mutex::new(Vec::new()));
        let health_thread = {
            let (stop, health, ip) = (stop.clone(), health.clone(), hub.proxy_ip.clone());
            std::thread::spawn(move || {
                // A request of its own every 50 ms: a failing one may take its 1 s timeout, and
                // must not hide what the next ones see.
                while !stop.load(Ordering::Relaxed) {
                    let (health, ip) = (health.clone(), ip.clone());
                    std::thread::spawn(move || {
                        let sent = SystemTime::now();
                        let ok = http_status(&ip, "/hub/health") == Some(200);
                        lock(&health).push(HealthSample { sent, ok });
                    });
                    std::thread::sleep(HEALTH_POLL);
                }
            })
        };

        let (mut ctr, runtime, runtime_thread) = watch_containerd()?;
        let pods = Arc::new(Mutex::new(Vec::new()));
        let jobs = Arc::new(Mutex::new(Vec::new()));
        let listed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let watches = vec![
            record_watch(hub.pods(), pods.clone(), listed.clone()),
            record_watch(hub.jobs(), jobs.clone(), listed.clone()),
        ];
        let deadline = Instant::now() + Duration::from_secs(30);
        while listed.load(Ordering::SeqCst) < 2 || !lock(&health).iter().any(|s| s.ok) {
            if Instant::now() > deadline {
                let _ = ctr.kill();
                return Err("the watches or the health poller did not start within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Recorder {
            stop,
            health,
            health_thread: Some(health_thread),
            pods,
            jobs,
            watches,
            ctr,
            runtime,
            runtime_thread: Some(runtime_thread),
        })
    }

    /// Whether the poller saw an outage and then the hub answering again.
    fn health_back(&self) -> bool {
        let mut samples = lock(&self.health).clone();
        samples.sort_by_key(|s| s.sent);
        outage(&samples).is_some() && samples.last().is_some_and(|s| s.ok)
    }

    fn stop(mut self) -> Timeline {
        self.stop.store(true, Ordering::Relaxed);
        for watch in &self.watches {
            watch.abort();
        }
        let _ = self.ctr.kill();
        let _ = self.ctr.wait();
        if let Some(thread) = self.health_thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.runtime_thread.take() {
            let _ = thread.join();
        }
        // Let the last requests answer (each times out within 2 s).
        std::thread::sleep(Duration::from_secs(2));
        let mut health = std::mem::take(&mut *lock(&self.health));
        health.sort_by_key(|s| s.sent);
        Timeline {
            health,
            pods: std::mem::take(&mut *lock(&self.pods)),
            jobs: std::mem::take(&mut *lock(&self.jobs)),
            runtime: std::mem::take(&mut *lock(&self.runtime)),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for watch in &self.watches {
            watch.abort();
        }
        let _ = self.ctr.kill();
        let _ = self.ctr.wait();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// Records every event of a watch of `api` with its arrival time; counts `listed` up once the
/// initial list is in.
fn record_watch<K>(
    api: Api<K>,
    seen: Arc<Mutex<Seen<K>>>,
    listed: Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
        while let Some(event) = events.next().await {
            let now = SystemTime::now();
            match event {
                Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                    lock(&seen).push((now, false, o));
                }
                Ok(watcher::Event::Delete(o)) => lock(&seen).push((now, true, o)),
                Ok(watcher::Event::InitDone) => {
                    listed.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
        }
    })
}

/// `ctr events` on the real node's containerd: task starts and exits with their nanosecond
/// times, and the pod each sandbox belongs to.
#[allow(clippy::type_complexity)]
fn watch_containerd() -> BenchResult<(
    Child,
    Arc<Mutex<Vec<RuntimeEvent>>>,
    std::thread::JoinHandle<()>,
)> {
    let mut child = Command::new("ctr")
        .args(["-a", CONTAINERD, "events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("ctr events (containerd's client, `make deps`): {e}"))?;
    let stdout = child.stdout.take().ok_or("ctr's stdout")?;
    let events = Arc::new(Mutex::new(Vec::new()));
    let recorded = events.clone();
    let thread = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(event) = parse_runtime_event(&line) {
                lock(&recorded).push(event);
            }
        }
    });
    Ok((child, events, thread))
}

/// A line of `ctr events`: `2026-11-27 14:20:47.612301911 +0000 UTC k8s.io /tasks/start {...}`.
fn parse_runtime_event(line: &str) -> Option<RuntimeEvent> {
    let mut fields = line.splitn(7, ' ');
    let (date, time, zone) = (fields.next()?, fields.next()?, fields.next()?);
    let (_utc, _namespace, topic, payload) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    if !matches!(topic, "/tasks/start" | "/tasks/exit" | "/containers/update") {
        return None;
    }
    let stamp =
        jiff::Timestamp::strptime("%Y-%m-%d %H:%M:%S%.f %z", format!("{date} {time} {zone}"))
            .ok()?;
    let payload: Value = serde_json::from_str(payload).ok()?;
    let container = payload["container_id"]
        .as_str()
        .or(payload["id"].as_str())?
        .to_string();
    let labels = &payload["labels"];
    let sandbox_of = (labels["io.cri-containerd.kind"] == "sandbox")
        .then(|| labels["io.kubernetes.pod.uid"].as_str().map(str::to_string))
        .flatten();
    if topic == "/containers/update" && sandbox_of.is_none() {
        return None;
    }
    Some(RuntimeEvent {
        time: SystemTime::from(stamp),
        topic: topic.to_string(),
        container,
        sandbox_of,
    })
}

// ---------------------------------------------------------------------------------------------
// Analysis

/// The longest run of failed answers that a good one ended: (the last good answer before it,
/// the first failed one, the last failed one, the first good one after it).
fn outage(samples: &[HealthSample]) -> Option<[HealthSample; 4]> {
    let length = |o: &[HealthSample; 4]| o[3].sent.duration_since(o[0].sent).unwrap_or_default();
    let mut longest: Option<[HealthSample; 4]> = None;
    let mut run: Option<(HealthSample, HealthSample, HealthSample)> = None;
    let mut last_good: Option<HealthSample> = None;
    for &sample in samples {
        match (sample.ok, run) {
            (false, None) => {
                if let Some(good) = last_good {
                    run = Some((good, sample, sample));
                }
            }
            (false, Some((good, first, _))) => run = Some((good, first, sample)),
            (true, Some((good, first, last))) => {
                let candidate = [good, first, last, sample];
                if longest.is_none_or(|l| length(&l) < length(&candidate)) {
                    longest = Some(candidate);
                }
                run = None;
            }
            (true, None) => {}
        }
        if sample.ok {
            last_good = Some(sample);
        }
    }
    longest
}

/// What the watches and containerd saw of one pod.
#[derive(Default, Clone)]
struct PodTimes {
    name: String,
    created: Option<SystemTime>,
    ready: Option<SystemTime>,
    deleting: Option<SystemTime>,
    deleted: Option<SystemTime>,
    /// Seen in phase Succeeded.
    succeeded: Option<SystemTime>,
    /// Seen with every container (after the init containers) exited 0, or Succeeded: the
    /// operator goes on from a Job's pod at this point.
    ended: Option<SystemTime>,
    sandbox_started: Option<SystemTime>,
    /// (name, containerd start, containerd exit, the API's startedAt, the API's finishedAt).
    containers: Vec<ContainerTimes>,
}

#[derive(Default, Clone)]
struct ContainerTimes {
    name: String,
    id: String,
    started: Option<SystemTime>,
    exited: Option<SystemTime>,
    api_started: Option<SystemTime>,
    api_finished: Option<SystemTime>,
}

impl PodTimes {
    fn first_start(&self) -> Option<SystemTime> {
        self.containers.iter().filter_map(|c| c.started).min()
    }

    fn last_exit(&self) -> Option<SystemTime> {
        if self.containers.iter().any(|c| c.exited.is_none()) {
            return None;
        }
        self.containers.iter().filter_map(|c| c.exited).max()
    }
}

fn pod_times(timeline: &Timeline, uid: &str) -> PodTimes {
    let mut times = PodTimes::default();
    for (at, deleted, pod) in timeline
        .pods
        .iter()
        .filter(|(_, _, p)| p.uid().as_deref() == Some(uid))
    {
        times.name = pod.name_any();
        times.created.get_or_insert(*at);
        if *deleted {
            times.deleted.get_or_insert(*at);
        }
        if pod.metadata.deletion_timestamp.is_some() {
            times.deleting.get_or_insert(*at);
        }
        let status = pod.status.clone().unwrap_or_default();
        if status.phase.as_deref() == Some("Succeeded") {
            times.succeeded.get_or_insert(*at);
        }
        if hubgrade::cluster::interpret::ran_to_end(pod) {
            times.ended.get_or_insert(*at);
        }
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            times.ready.get_or_insert(*at);
        }
        let statuses = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten());
        for container in statuses {
            let Some(id) = container.container_id.as_deref() else {
                continue;
            };
            let id = id.trim_start_matches("containerd://").to_string();
            let state = container.state.clone().unwrap_or_default();
            let api_started = state
                .running
                .and_then(|r| r.started_at)
                .or(state.terminated.as_ref().and_then(|t| t.started_at.clone()))
                .map(|t| SystemTime::from(t.0));
            let api_finished = state
                .terminated
                .and_then(|t| t.finished_at)
                .map(|t| SystemTime::from(t.0));
            let entry = match times.containers.iter_mut().position(|c| c.id == id) {
                Some(i) => &mut times.containers[i],
                None => {
                    times.containers.push(ContainerTimes {
                        name: container.name.clone(),
                        id: id.clone(),
                        ..ContainerTimes::default()
                    });
                    times.containers.last_mut().expect("just pushed")
                }
            };
            entry.api_started = entry.api_started.or(api_started);
            entry.api_finished = entry.api_finished.or(api_finished);
        }
    }
    for event in &timeline.runtime {
        if event.sandbox_of.as_deref() == Some(uid) {
            times.sandbox_started.get_or_insert(event.time);
        }
        for container in times
            .containers
            .iter_mut()
            .filter(|c| c.id == event.container)
        {
            match event.topic.as_str() {
                "/tasks/start" => {
                    container.started.get_or_insert(event.time);
                }
                "/tasks/exit" => {
                    container.exited.get_or_insert(event.time);
                }
                _ => {}
            }
        }
    }
    times
}

/// When the Job of `step` was seen created and seen Complete.
fn job_times(timeline: &Timeline, step: &str) -> (Option<SystemTime>, Option<SystemTime>) {
    let mut created = None;
    let mut complete = None;
    for (at, _, job) in timeline
        .jobs
        .iter()
        .filter(|(_, _, j)| j.labels().get(STEP_LABEL).map(String::as_str) == Some(step))
    {
        created.get_or_insert(*at);
        let done = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "Complete" && c.status == "True")
            });
        if done {
            complete.get_or_insert(*at);
        }
    }
    (created, complete)
}

/// The uids of the pods labelled `key: value` (for the hub's, those its ReplicaSet owns), in
/// the order first seen.
fn pods_of(timeline: &Timeline, key: &str, value: &str) -> Vec<String> {
    let mut uids: Vec<String> = Vec::new();
    for (_, _, pod) in &timeline.pods {
        // The Jobs' pods copy the hub's labels: a hub pod is one its ReplicaSet owns.
        let of_replica_set = pod
            .owner_references()
            .iter()
            .any(|o| o.kind == "ReplicaSet");
        if pod.labels().get(key).map(String::as_str) == Some(value)
            && (key == STEP_LABEL || of_replica_set)
            && let Some(uid) = pod.uid()
            && !uids.contains(&uid)
        {
            uids.push(uid);
        }
    }
    uids
}

/// A piece of the downtime: from one milestone to the next.
#[derive(Clone)]
struct Segment {
    what: &'static str,
    /// Who spends it: the operator's share or not, and a short category.
    kind: Kind,
    seconds: Option<f64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// M: the migration Job's containers running.
    Migration,
    /// H: the new hub pod created to Ready.
    NewHub,
    /// Everything else, which the target counts as the operator's share.
    Rest,
}

struct RunResult {
    setup: Duration,
    upgrade_wall: Duration,
    /// D: the last good /hub/health before the outage to the first good one after it.
    downtime: f64,
    /// The poller's resolution at the outage's two ends (the larger gap between samples).
    resolution: f64,
    /// hubReadyAt − min(hubScaledDownAt, hubStoppedAt), and status.downtimeSeconds.
    status_downtime: Option<f64>,
    status_downtime_seconds: Option<i64>,
    /// M, H (cut at the first good health), H to Ready seen.
    migration: Option<f64>,
    new_hub: Option<f64>,
    new_hub_ready_seen: Option<f64>,
    segments: Vec<Segment>,
    /// (seconds from the outage's start, what), sorted.
    milestones: Vec<(f64, String)>,
    /// The migration container's run from the API's seconds-precision startedAt/finishedAt.
    migration_api: Option<f64>,
    migration_containers: Vec<String>,
}

impl RunResult {
    fn share(&self) -> Option<f64> {
        Some(self.downtime - self.migration? - self.new_hub?)
    }

    /// The pieces between a step's end and the operator's next object (named `operator:`).
    fn operator_pieces(&self) -> Option<f64> {
        self.segments
            .iter()
            .filter(|s| s.what.starts_with("operator:"))
            .map(|s| s.seconds)
            .sum()
    }

    fn summary(&self) -> String {
        format!(
            "D {:.2} s, M {}, H {}, share {} (status {})",
            self.downtime,
            seconds(self.migration),
            seconds(self.new_hub),
            seconds(self.share()),
            seconds(self.status_downtime)
        )
    }
}

fn between(from: Option<SystemTime>, to: Option<SystemTime>) -> Option<f64> {
    let (from, to) = (from?, to?);
    Some(match to.duration_since(from) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    })
}

fn analyze(
    timeline: &Timeline,
    upgrade: &HubUpgrade,
    setup: Duration,
    upgrade_wall: Duration,
) -> BenchResult<RunResult> {
    let [last_good, first_bad, last_bad, first_good] =
        outage(&timeline.health).ok_or("the health poller saw no outage")?;
    let start = last_good.sent;
    let downtime = between(Some(start), Some(first_good.sent)).unwrap_or_default();
    let resolution = between(Some(last_good.sent), Some(first_bad.sent))
        .unwrap_or_default()
        .max(between(Some(last_bad.sent), Some(first_good.sent)).unwrap_or_default());

    let status = upgrade.status.clone().ok_or("no status")?;
    let progress = &status.progress;
    let at = |t: Option<jiff::Timestamp>| t.map(SystemTime::from);
    let scaled_down = at(progress.hub_scaled_down_at);
    let stopped = at(progress.hub_stopped_at);
    let hub_ready = at(progress.hub_ready_at);
    let went_down = match (scaled_down, stopped) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let step = |phase: Phase| {
        progress
            .steps
            .iter()
            .rev()
            .find(|s| s.name == phase)
            .map(|s| SystemTime::from(s.started_at))
    };

    let hubs = pods_of(timeline, "component", "hub");
    let old_hub = hubs.first().map(|uid| pod_times(timeline, uid));
    let new_hub = hubs
        .last()
        .filter(|_| hubs.len() > 1)
        .map(|uid| pod_times(timeline, uid));
    let backup = pods_of(timeline, STEP_LABEL, "backup")
        .last()
        .map(|uid| pod_times(timeline, uid));
    let migration = pods_of(timeline, STEP_LABEL, "migration")
        .last()
        .map(|uid| pod_times(timeline, uid));
    let (backup_job, backup_complete) = job_times(timeline, "backup");
    let (migration_job, migration_complete) = job_times(timeline, "migration");

    let old_stopped = old_hub.as_ref().and_then(PodTimes::last_exit);
    let backup_ended = backup.as_ref().and_then(|p| p.ended);
    let migration_ended = migration.as_ref().and_then(|p| p.ended);
    let backup_start = backup.as_ref().and_then(PodTimes::first_start);
    let backup_exit = backup.as_ref().and_then(PodTimes::last_exit);
    let migration_start = migration.as_ref().and_then(PodTimes::first_start);
    let migration_exit = migration.as_ref().and_then(PodTimes::last_exit);
    let new_created = new_hub.as_ref().and_then(|p| p.created);
    // A Job seen Complete only after the operator went on (it acts on its pod's end) is not on
    // the way: its piece is then 0 and the operator's counts from the pod's end.
    let waited =
        |complete: Option<SystemTime>, finished: Option<SystemTime>, next| match (complete, next) {
            (Some(c), Some(n)) if c <= n => Some(c),
            _ => finished,
        };
    let backup_done = waited(backup_complete, backup_ended, migration_job);
    let migration_done = waited(migration_complete, migration_ended, new_created);
    let new_ready_seen = new_hub.as_ref().and_then(|p| p.ready);
    // The kubelet reports Ready at its next probe (every 2 s): the hub often answers through
    // the proxy first, and what comes after the downtime's end is not in it.
    let new_ready = new_ready_seen.map(|ready| ready.min(first_good.sent));

    // Consecutive milestones: the pieces add up to D.
    let boundaries: [(Option<SystemTime>, &'static str, Kind); 14] = [
        (
            old_stopped,
            "the old hub stopping: last good answer → its container exited (scale to 0, SIGTERM, JupyterHub's shutdown)",
            Kind::Rest,
        ),
        (
            backup_job,
            "operator: old hub exited → backup Job created (the kubelet reporting the pod gone, then one reconcile)",
            Kind::Rest,
        ),
        (
            backup_start,
            "backup Job created → its first container started (pod, scheduling, sandbox, container start)",
            Kind::Rest,
        ),
        (backup_exit, "the backup's containers running", Kind::Rest),
        (
            backup_ended,
            "backup exited → its end seen: its containers exited 0 in the pod's status (the kubelet: relist every 1 s, status update)",
            Kind::Rest,
        ),
        (
            backup_done,
            "backup end seen → Job seen Complete (the Job controller; 0 when the operator went on before it)",
            Kind::Rest,
        ),
        (
            migration_job,
            "operator: backup finished (its end seen, or its Job Complete if that came first) → migration Job created (reads the report, status writes)",
            Kind::Rest,
        ),
        (
            migration_start,
            "migration Job created → its first container started (pod, scheduling, sandbox, container start)",
            Kind::Rest,
        ),
        (
            migration_exit,
            "**M**: the migration's containers running",
            Kind::Migration,
        ),
        (
            migration_ended,
            "migration exited → its end seen: its containers exited 0 in the pod's status (the kubelet: relist every 1 s, status update)",
            Kind::Rest,
        ),
        (
            migration_done,
            "migration end seen → Job seen Complete (the Job controller; 0 when the operator went on before it)",
            Kind::Rest,
        ),
        (
            new_created,
            "operator: migration finished (as for the backup) → new hub pod created (status writes, image set, scale up, Deployment and ReplicaSet controllers)",
            Kind::Rest,
        ),
        (
            new_ready,
            "**H**: new hub pod created → seen Ready or answering, whichever first (scheduling, sandbox, JupyterHub's start)",
            Kind::NewHub,
        ),
        (
            Some(first_good.sent),
            "new hub Ready → first good answer through the proxy (endpoints, kube-proxy, the poller)",
            Kind::Rest,
        ),
    ];
    let mut segments = Vec::new();
    let mut previous = Some(start);
    for (time, what, kind) in boundaries {
        segments.push(Segment {
            what,
            kind,
            seconds: between(previous, time),
        });
        previous = time.or(previous);
    }

    let mut milestones: Vec<(Option<SystemTime>, String)> = vec![
        (Some(last_good.sent), "last good /hub/health".into()),
        (Some(first_bad.sent), "first failed /hub/health".into()),
        (Some(first_good.sent), "first good /hub/health again".into()),
        (scaled_down, "status hubScaledDownAt".into()),
        (stopped, "status hubStoppedAt".into()),
        (hub_ready, "status hubReadyAt".into()),
        (backup_job, "backup Job seen created".into()),
        (backup_complete, "backup Job seen Complete".into()),
        (migration_job, "migration Job seen created".into()),
        (migration_complete, "migration Job seen Complete".into()),
    ];
    for phase in [
        Phase::ScalingDown,
        Phase::BackingUp,
        Phase::Migrating,
        Phase::RollingOut,
        Phase::Verifying,
        Phase::Succeeded,
    ] {
        milestones.push((step(phase), format!("status step {phase} started")));
    }
    for (role, pod) in [
        ("old hub", &old_hub),
        ("backup", &backup),
        ("migration", &migration),
        ("new hub", &new_hub),
    ] {
        let Some(pod) = pod else { continue };
        if role != "old hub" {
            milestones.push((pod.created, format!("{role} pod {} seen created", pod.name)));
            milestones.push((pod.sandbox_started, format!("{role} pod sandbox started")));
        }
        milestones.push((pod.deleting, format!("{role} pod seen terminating")));
        milestones.push((pod.deleted, format!("{role} pod seen deleted")));
        if role == "new hub" {
            milestones.push((pod.ready, format!("{role} pod seen Ready")));
        }
        if role == "backup" || role == "migration" {
            milestones.push((
                pod.ended,
                format!("{role} pod seen with its containers exited 0"),
            ));
        }
        milestones.push((pod.succeeded, format!("{role} pod seen Succeeded")));
        for c in &pod.containers {
            if role != "old hub" {
                milestones.push((c.started, format!("{role} container {} started", c.name)));
            }
            milestones.push((c.exited, format!("{role} container {} exited", c.name)));
        }
    }
    let window_end = first_good.sent + Duration::from_secs(5);
    let mut milestones: Vec<(f64, String)> = milestones
        .into_iter()
        .filter_map(|(t, what)| {
            let t = t?;
            (t + Duration::from_secs(30) >= start && t <= window_end)
                .then(|| (between(Some(start), Some(t)).unwrap_or_default(), what))
        })
        .collect();
    milestones.sort_by(|a, b| a.0.total_cmp(&b.0));

    let migration_api = migration.as_ref().and_then(|p| {
        let started = p.containers.iter().filter_map(|c| c.api_started).min()?;
        let finished = p.containers.iter().filter_map(|c| c.api_finished).max()?;
        between(Some(started), Some(finished))
    });
    let migration_containers = migration
        .as_ref()
        .map(|p| {
            p.containers
                .iter()
                .map(|c| format!("{} {}", c.name, seconds(between(c.started, c.exited))))
                .collect()
        })
        .unwrap_or_default();

    Ok(RunResult {
        setup,
        upgrade_wall,
        downtime,
        resolution,
        status_downtime: between(went_down, hub_ready),
        status_downtime_seconds: status.downtime_seconds,
        migration: between(migration_start, migration_exit),
        new_hub: between(new_created, new_ready),
        new_hub_ready_seen: between(new_created, new_ready_seen),
        segments,
        milestones,
        migration_api,
        migration_containers,
    })
}

// ---------------------------------------------------------------------------------------------
// The report

fn seconds(value: Option<f64>) -> String {
    value.map_or("–".into(), |v| format!("{v:.2} s"))
}

/// The median of the values present.
fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut present: Vec<f64> = values.into_iter().flatten().collect();
    present.sort_by(f64::total_cmp);
    match present.len() {
        0 => None,
        n if n % 2 == 1 => Some(present[n / 2]),
        n => Some((present[n / 2 - 1] + present[n / 2]) / 2.0),
    }
}

fn write_report(
    machine: &Machine,
    runs: usize,
    results: &[RunResult],
    elapsed: Duration,
) -> BenchResult<()> {
    let mut r = String::new();
    writeln!(r, "# Downtime benchmark\n")?;
    writeln!(
        r,
        "Written by `make bench` (benches/downtime.rs, `HUBGRADE_DOWNTIME_RUNS={runs}`, {} of {runs} run(s) done) on {}; the bench took {:.0} s so far.\n",
        results.len(),
        machine.date,
        elapsed.as_secs_f64()
    )?;
    write!(
        r,
        "{}",
        machine.section("the hub on its real node `real-node-0` (containerd 1.6, runc)")
    )?;

    writeln!(r, "## What was measured\n")?;
    writeln!(
        r,
        "Each run makes a fresh real hub on the real node (tests/support/real_hub.rs: examples/z2jh-hub/real/hub.yaml, {OLD_IMAGE}, JupyterHub 4.1.6 on SQLite on its claim, {USERS} users, a group and tokens made through its REST API) with the operator as a host process (`hubgrade run`, the release build, the chart's RBAC), and upgrades it to {NEW_IMAGE} (JupyterHub 5.5.0) with the default spec: rehearsal (before the downtime), scale to zero, backup Job, migration Job, roll out, verification. Every observation is stamped with this machine's clock, which the operator and the node share:\n"
    )?;
    writeln!(
        r,
        "- **D**, the downtime a user saw: GET /hub/health through proxy-public every {} ms; from the last answer 200 before the outage to the first 200 after it (request send times). *Resolution* is the larger gap between samples at the outage's ends.",
        HEALTH_POLL.as_millis()
    )?;
    writeln!(
        r,
        "- **M**, the migration Job's run time: its pod's first container started → last container exited (its init containers `pin-database` and `upgrade-db`, then `report-revision`: the kubelet's one-second relist between one container's exit and the next one's start is inside M), from the real node's containerd events (`ctr events`, nanoseconds), matched to the pod through the `containerID` the pod watch reports. The pod's `state.running.startedAt` / `state.terminated.finishedAt` have one-second precision (Kubernetes serializes `metav1.Time` as RFC 3339 seconds; checked: e.g. `2026-11-27T14:20:47Z`), so they are shown only as a cross-check."
    )?;
    writeln!(
        r,
        "- **H**, the new hub's start to Ready: the new hub pod's first watch event (created) → the first watch event with its `Ready` condition `True`, or the first good /hub/health if that came first (it usually does: the kubelet reports Ready only at its next readiness probe, every 2 s, and what comes after the downtime's end cannot be taken out of it). *Ready seen* is the uncut value."
    )?;
    writeln!(
        r,
        "- **Share** = D − M − H, the target's definition. Everything else inside the downtime counts, including what Kubernetes itself spends: the old pod's shutdown, scheduling and starting the Jobs' pods, the kubelet reporting a finished container (its pod lifecycle relist runs every second), the Job and Deployment controllers. The breakdown below splits D into consecutive pieces at the milestones the watches (arrival times, milliseconds after the API server stored the change) and containerd saw, so it says where the share goes; pieces that are not the operator's code are named so.\n- The status's own record is shown beside: `hubReadyAt − min(hubScaledDownAt, hubStoppedAt)` (sub-second timestamps the operator writes) and `status.downtimeSeconds` (rounded).\n"
    )?;

    writeln!(r, "## Results\n")?;
    writeln!(
        r,
        "| run | D (resolution) | status: hubReadyAt − down (downtimeSeconds) | M | M from the API's seconds | H (Ready seen) | **share D − M − H** | operator's own pieces | upgrade wall time | setup |"
    )?;
    writeln!(r, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for (i, x) in results.iter().enumerate() {
        writeln!(
            r,
            "| {} | {:.2} s (±{:.2}) | {} ({}) | {} | {} | {} ({}) | **{}** | {} | {:.0} s | {:.0} s |",
            i + 1,
            x.downtime,
            x.resolution,
            seconds(x.status_downtime),
            x.status_downtime_seconds
                .map_or("–".into(), |s| format!("{s} s")),
            seconds(x.migration),
            seconds(x.migration_api),
            seconds(x.new_hub),
            seconds(x.new_hub_ready_seen),
            seconds(x.share()),
            seconds(x.operator_pieces()),
            x.upgrade_wall.as_secs_f64(),
            x.setup.as_secs_f64(),
        )?;
    }
    let med = |f: &dyn Fn(&RunResult) -> Option<f64>| median(results.iter().map(f));
    writeln!(
        r,
        "| **median** | {} | {} | {} | {} | {} ({}) | **{}** | {} | | |\n",
        seconds(med(&|x| Some(x.downtime))),
        seconds(med(&|x| x.status_downtime)),
        seconds(med(&|x| x.migration)),
        seconds(med(&|x| x.migration_api)),
        seconds(med(&|x| x.new_hub)),
        seconds(med(&|x| x.new_hub_ready_seen)),
        seconds(med(&|x| x.share())),
        seconds(med(&|x| x.operator_pieces())),
    )?;
    for (i, x) in results.iter().enumerate() {
        writeln!(
            r,
            "- run {}: the migration pod's containers (containerd start → exit): {}",
            i + 1,
            x.migration_containers.join(", ")
        )?;
    }

    writeln!(r, "\n## Against the target\n")?;
    let share = med(&|x| x.share());
    match share {
        Some(share) if share <= TARGET_SHARE_SECONDS => writeln!(
            r,
            "The operator's share (median {share:.2} s) is within the target of {TARGET_SHARE_SECONDS} s: **met**."
        )?,
        Some(share) => {
            let pieces = breakdown_medians(results);
            let mut largest: Vec<&(String, Kind, Option<f64>)> =
                pieces.iter().filter(|p| p.1 == Kind::Rest).collect();
            largest.sort_by(|a, b| b.2.unwrap_or(0.0).total_cmp(&a.2.unwrap_or(0.0)));
            let named: Vec<String> = largest
                .iter()
                .take(3)
                .map(|(what, _, s)| format!("{} ({})", what, seconds(*s)))
                .collect();
            writeln!(
                r,
                "The operator's share (median {share:.2} s) is **not met**: {:.2} s over the target of {TARGET_SHARE_SECONDS} s ({:.1}×). The largest pieces (medians): {}. The pieces where the operator itself reacts (from a step's end as the API shows it to its next object, `operator:` below) add up to {} (median); the rest of the share is Kubernetes around the Jobs: starting their pods, the kubelet reporting their end (its relist every second) and, where the operator waits for it, the Job controller marking them Complete.",
                share - TARGET_SHARE_SECONDS,
                share / TARGET_SHARE_SECONDS,
                named.join("; "),
                seconds(med(&|x| x.operator_pieces()))
            )?;
        }
        None => writeln!(
            r,
            "No run measured M and H both: the share is unknown (see the timelines)."
        )?,
    }

    writeln!(r, "\n## Where the downtime goes\n")?;
    writeln!(
        r,
        "D split at consecutive milestones (seconds; the pieces of a run add up to its D; a missing milestone merges its piece into the next). M and H are the target's exclusions; every other piece is in the share.\n"
    )?;
    let header: Vec<String> = (1..=results.len()).map(|i| format!("run {i}")).collect();
    writeln!(r, "| piece | {} | median |", header.join(" | "))?;
    writeln!(r, "|---|{}---:|", "---:|".repeat(results.len()))?;
    let medians = breakdown_medians(results);
    for (k, (what, _, median)) in medians.iter().enumerate() {
        let cells: Vec<String> = results
            .iter()
            .map(|x| {
                x.segments[k]
                    .seconds
                    .map_or("–".into(), |s| format!("{s:.2}"))
            })
            .collect();
        writeln!(
            r,
            "| {what} | {} | {} |",
            cells.join(" | "),
            median.map_or("–".into(), |s| format!("{s:.2}"))
        )?;
    }

    writeln!(r, "\n## Timelines\n")?;
    writeln!(
        r,
        "Every milestone seen, in seconds from the last good /hub/health (negative: before it); `status …` times are the operator's own records.\n"
    )?;
    for (i, x) in results.iter().enumerate() {
        writeln!(r, "<details><summary>run {}</summary>\n", i + 1)?;
        writeln!(r, "| s | milestone |")?;
        writeln!(r, "|---:|---|")?;
        for (at, what) in &x.milestones {
            writeln!(r, "| {at:.3} | {what} |")?;
        }
        writeln!(r, "\n</details>\n")?;
    }
    let path = support::repo().join(REPORT);
    fs::create_dir_all(path.parent().ok_or("docs")?)?;
    fs::write(path, r)?;
    Ok(())
}

/// Each piece of the breakdown with its median over the runs.
fn breakdown_medians(results: &[RunResult]) -> Vec<(String, Kind, Option<f64>)> {
    let Some(first) = results.first() else {
        return Vec::new();
    };
    first
        .segments
        .iter()
        .enumerate()
        .map(|(k, segment)| {
            (
                segment.what.to_string(),
                segment.kind,
                median(results.iter().map(|x| x.segments[k].seconds)),
            )
        })
        .collect()
}
