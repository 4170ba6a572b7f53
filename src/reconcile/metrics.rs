//! Prometheus metrics and the health endpoints, served on one port by axum:
//!
//! - `/metrics`: the counters below and `hubgrade_leader`, in the OpenMetrics text format
//!   (prometheus-client).
//! - `/healthz` (liveness): 200 `ok` whenever the process answers. Restarting would not help
//!   with anything else, so nothing else is checked.
//! - `/readyz` (readiness): 200 when this replica does its part: it holds the leader Lease and its
//!   controller runs, or it is a standby because another replica holds the Lease (the body says
//!   which). 503 while the Lease has not yet been read, after a Lease read failed, between taking
//!   the Lease and starting the controller, and after the controller stopped.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::machine::{Action, Phase, Progress};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabel {
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabel {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
    reason: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// An upgrade in progress is stalled when its phase has lasted this long (Scheduled, which
/// waits for an approval or a window, never is).
pub const STALLED_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_mins(15);

/// What the gauges about upgrades are computed from: each upgrade's phase, since when, and
/// whether it keeps the hub lock after failing.
#[derive(Clone, Debug)]
struct Tracked {
    phase: Phase,
    since: Option<jiff::Timestamp>,
    keeps_lock: bool,
}

pub struct Metrics {
    registry: Registry,
    upgrades: Mutex<std::collections::BTreeMap<String, Tracked>>,
    outcomes: Family<OutcomeLabel, Counter>,
    phase_seconds: HistogramFamily<PhaseLabel>,
    downtime_seconds: Histogram,
    backup_bytes: Histogram,
    in_progress: Gauge,
    stalled: Gauge,
    holding: Gauge,
    reconciliations: Counter,
    failures: Counter,
    leader: Gauge,
    actions: Family<ActionLabel, Counter>,
    phases: Family<PhaseLabel, Counter>,
    ledger_up: Gauge,
    ledger_write_errors: Counter,
    ledger_waiting: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let reconciliations = Counter::default();
        let failures = Counter::default();
        let leader = Gauge::default();
        let actions = Family::default();
        let phases = Family::default();
        let ledger_up = Gauge::default();
        let ledger_write_errors = Counter::default();
        let ledger_waiting = Gauge::default();
        let outcomes = Family::default();
        let phase_seconds: HistogramFamily<PhaseLabel> =
            Family::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 13)));
        let downtime_seconds = Histogram::new(exponential_buckets(1.0, 2.0, 13));
        // 64 KiB to 16 GiB.
        let backup_bytes = Histogram::new(exponential_buckets(65_536.0, 4.0, 10));
        let (in_progress, stalled, holding) =
            (Gauge::default(), Gauge::default(), Gauge::default());
        // Counters get their `_total` suffix from prometheus-client.
        let mut registry = Registry::with_prefix("hubgrade");
        registry.register(
            "reconciliations",
            "Reconciliations of HubUpgrades",
            reconciliations.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconciliations that failed and were retried",
            failures.clone(),
        );
        registry.register(
            "leader",
            "Whether this replica holds the leader lease",
            leader.clone(),
        );
        registry.register("actions", "Actions carried out, by action", actions.clone());
        registry.register("phase_entries", "Phases entered, by phase", phases.clone());
        registry.register(
            "ledger_up",
            "Whether the last write to the upgrade ledger succeeded (0 also without a ledger)",
            ledger_up.clone(),
        );
        registry.register(
            "ledger_write_errors",
            "Attempts to open or write the upgrade ledger that failed",
            ledger_write_errors.clone(),
        );
        registry.register(
            "ledger_waiting_records",
            "Upgrades whose newest record waits to be written to the ledger",
            ledger_waiting.clone(),
        );
        registry.register(
            "build",
            "The operator's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register(
            "upgrades",
            "Upgrades that ended, by outcome (Succeeded, RolledBack, Failed) and reason",
            outcomes.clone(),
        );
        registry.register_with_unit(
            "phase_duration",
            "How long each phase of an upgrade lasted",
            prometheus_client::registry::Unit::Seconds,
            phase_seconds.clone(),
        );
        registry.register_with_unit(
            "downtime",
            "Downtime of each upgrade that stopped the hub: scaled down until Ready again",
            prometheus_client::registry::Unit::Seconds,
            downtime_seconds.clone(),
        );
        registry.register_with_unit(
            "backup_size",
            "Size of each database backup made before a migration",
            prometheus_client::registry::Unit::Bytes,
            backup_bytes.clone(),
        );
        registry.register(
            "upgrades_in_progress",
            "Upgrades that have not ended",
            in_progress.clone(),
        );
        registry.register(
            "upgrades_stalled",
            "Upgrades in progress whose phase has lasted over 15 minutes (Scheduled aside)",
            stalled.clone(),
        );
        registry.register(
            "upgrades_failed_holding_hub",
            "Failed upgrades that touched the hub and keep its lock: the hub may be stopped and \
             a person must look (deleting the HubUpgrade releases it)",
            holding.clone(),
        );
        Metrics {
            registry,
            upgrades: Mutex::default(),
            outcomes,
            phase_seconds,
            downtime_seconds,
            backup_bytes,
            in_progress,
            stalled,
            holding,
            reconciliations,
            failures,
            leader,
            actions,
            phases,
            ledger_up,
            ledger_write_errors,
            ledger_waiting,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciliations.inc();
    }
    pub fn failed(&self) {
        self.failures.inc();
    }
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }
    pub fn acted(&self, action: &Action) {
        if *action == Action::Wait {
            return;
        }
        let action: &'static str = action.into();
        self.actions.get_or_create(&ActionLabel { action }).inc();
    }
    pub fn set_ledger_up(&self, up: bool) {
        self.ledger_up.set(i64::from(up));
    }
    pub fn ledger_write_failed(&self) {
        self.ledger_write_errors.inc();
    }
    pub fn set_ledger_waiting(&self, waiting: usize) {
        self.ledger_waiting
            .set(i64::try_from(waiting).unwrap_or(i64::MAX));
    }
    /// An upgrade as it stands (each reconcile): the gauges of upgrades in progress, stalled,
    /// and failed while holding their hub.
    pub fn track(&self, uid: &str, progress: &Progress, now: jiff::Timestamp) {
        let mut upgrades = self.upgrades.lock().expect("metrics lock");
        upgrades.insert(
            uid.to_string(),
            Tracked {
                phase: progress.phase,
                since: progress.phase_started_at,
                keeps_lock: progress.keeps_lock,
            },
        );
        self.count(&upgrades, now);
    }

    /// An upgrade that is gone.
    pub fn forget(&self, uid: &str, now: jiff::Timestamp) {
        let mut upgrades = self.upgrades.lock().expect("metrics lock");
        upgrades.remove(uid);
        self.count(&upgrades, now);
    }

    fn count(&self, upgrades: &std::collections::BTreeMap<String, Tracked>, now: jiff::Timestamp) {
        let running = || upgrades.values().filter(|t| !t.phase.is_terminal());
        let stalled = running()
            .filter(|t| t.phase != Phase::Scheduled)
            .filter(|t| t.since.is_some_and(|since| since + STALLED_AFTER < now))
            .count();
        let holding = upgrades
            .values()
            .filter(|t| t.phase == Phase::Failed && t.keeps_lock)
            .count();
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.in_progress.set(gauge(running().count()));
        self.stalled.set(gauge(stalled));
        self.holding.set(gauge(holding));
    }

    /// A step this operator recorded: the phase it left, how it ended, the downtime, the backup.
    pub fn stepped(&self, before: &Progress, after: &Progress, now: jiff::Timestamp) {
        if after.phase != before.phase
            && let Some(since) = before.phase_started_at
        {
            let phase = before.phase.as_str();
            self.phase_seconds
                .get_or_create(&PhaseLabel { phase })
                .observe(since.duration_until(now).as_secs_f64().max(0.0));
        }
        if after.phase.is_terminal() && !before.phase.is_terminal() {
            self.outcomes
                .get_or_create(&OutcomeLabel {
                    outcome: after.phase.as_str(),
                    reason: after.reason.clone(),
                })
                .inc();
            if let Some(downtime) = after.downtime_seconds() {
                self.downtime_seconds.observe(downtime as f64);
            }
        }
        if before.backup.is_none()
            && let Some(size) = after.backup.as_ref().and_then(|b| b.size_bytes)
        {
            self.backup_bytes.observe(size as f64);
        }
    }

    pub fn entered(&self, phase: Phase) {
        let phase = phase.as_str();
        self.phases.get_or_create(&PhaseLabel { phase }).inc();
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// What this replica is doing, as far as readiness is concerned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Role {
    /// The Lease has not been read yet, or the last attempt failed.
    #[default]
    Unknown,
    /// Another replica holds the Lease; this one waits to take over.
    Standby,
    /// This replica holds the Lease; its controller is not running (yet, or any more).
    Leader,
    /// This replica holds the Lease and runs the controller.
    Running,
}

/// The replica's role, shared by the lease loop, `run` and the `/readyz` handler.
#[derive(Debug, Default)]
pub struct Health {
    role: Mutex<Role>,
}

impl Health {
    pub fn set(&self, role: Role) {
        if let Ok(mut current) = self.role.lock() {
            *current = role;
        }
    }

    pub fn role(&self) -> Role {
        self.role.lock().map(|role| *role).unwrap_or_default()
    }

    fn readiness(&self) -> (StatusCode, &'static str) {
        match self.role() {
            Role::Running => (StatusCode::OK, "ready: leader, controller running\n"),
            Role::Standby => (
                StatusCode::OK,
                "ready: standby, another replica holds the leader lease\n",
            ),
            Role::Leader => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: leader, controller not running\n",
            ),
            Role::Unknown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: the leader lease has not been read\n",
            ),
        }
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// The routes `/metrics`, `/healthz` and `/readyz` (see the module's header).
pub fn router(metrics: Arc<Metrics>, health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Shared { metrics, health })
}

async fn scrape(State(shared): State<Shared>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        shared.metrics.render(),
    )
}

async fn ready(State(shared): State<Shared>) -> impl IntoResponse {
    shared.health.readiness()
}

/// Serves the router until the process ends.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) -> std::io::Result<()> {
    axum::serve(listener, router(metrics, health)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::{Body, to_bytes};
    use axum::http::Request;
    use tower::ServiceExt;

    async fn get(router: &Router, path: &str) -> (StatusCode, String, String) {
        let request = Request::get(path).body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("response");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = to_bytes(response.into_body(), 1 << 20).await.expect("body");
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).expect("utf-8"),
        )
    }

    #[tokio::test]
    async fn metrics_are_served_in_the_text_format_under_the_same_names() {
        let metrics = Arc::new(Metrics::default());
        let router = router(metrics.clone(), Arc::default());
        let (status, content_type, empty) = get(&router, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("application/openmetrics-text"));
        assert!(empty.contains("hubgrade_leader 0\n"), "{empty}");
        assert!(!empty.contains("hubgrade_actions_total{"), "{empty}");

        metrics.reconciled();
        metrics.reconciled();
        metrics.failed();
        metrics.set_leader(true);
        metrics.acted(&Action::StartMigration);
        metrics.acted(&Action::Wait);
        metrics.acted(&Action::ScaleHub { replicas: 0 });
        metrics.entered(Phase::ScalingDown);
        let (_, _, text) = get(&router, "/metrics").await;
        for line in [
            "# HELP hubgrade_reconciliations Reconciliations of HubUpgrades.",
            "# TYPE hubgrade_reconciliations counter",
            "hubgrade_reconciliations_total 2",
            "hubgrade_reconcile_errors_total 1",
            "# TYPE hubgrade_leader gauge",
            "hubgrade_leader 1",
            "hubgrade_actions_total{action=\"start_migration\"} 1",
            "hubgrade_actions_total{action=\"scale_hub\"} 1",
            "hubgrade_phase_entries_total{phase=\"ScalingDown\"} 1",
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(!text.contains("action=\"wait\""), "{text}");
    }

    #[tokio::test]
    async fn healthz_answers_and_readyz_tells_the_role() {
        let health = Arc::new(Health::default());
        let router = router(Arc::default(), health.clone());
        let (status, _, body) = get(&router, "/healthz").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));

        let (status, _, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        health.set(Role::Standby);
        let (status, _, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("standby"), "{body}");
        health.set(Role::Leader);
        let (status, _, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        health.set(Role::Running);
        let (status, _, body) = get(&router, "/readyz").await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("leader"), "{body}");

        let (status, _, _) = get(&router, "/nothing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// The end-to-end tests and simple probes speak HTTP/1.0 without a Host header.
    #[tokio::test]
    async fn answers_a_bare_http_1_0_request_and_closes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(serve(listener, Arc::default(), Arc::default()));
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /healthz HTTP/1.0\r\n\r\n")
            .await
            .expect("request");
        let mut response = String::new();
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            stream.read_to_string(&mut response),
        )
        .await
        .expect("the server closes the connection")
        .expect("response");
        assert!(response.contains(" 200 OK\r\n"), "{response}");
        assert!(response.ends_with("ok\n"), "{response}");
    }

    fn progress(phase: Phase, since: &str) -> Progress {
        Progress {
            phase,
            phase_started_at: Some(since.parse().expect("time")),
            ..Progress::default()
        }
    }

    #[test]
    fn what_an_admin_alerts_on_is_measured() {
        let metrics = Metrics::default();
        let now: jiff::Timestamp = "2026-11-26T10:30:00Z".parse().expect("time");
        // A migration that took 90 s, then a roll back that ended the upgrade.
        let migrating = progress(Phase::Migrating, "2026-11-26T10:00:00Z");
        let mut rolling_back = progress(Phase::RollingBack, "2026-11-26T10:01:30Z");
        rolling_back.backup = Some(crate::machine::BackupRecord {
            size_bytes: Some(200_000),
            ..Default::default()
        });
        metrics.stepped(
            &migrating,
            &rolling_back,
            "2026-11-26T10:01:30Z".parse().unwrap(),
        );
        let mut rolled_back = progress(Phase::RolledBack, "2026-11-26T10:02:00Z");
        rolled_back.reason = "MigrationFailed".into();
        rolled_back.hub_scaled_down_at = Some("2026-11-26T10:00:00Z".parse().unwrap());
        rolled_back.hub_stopped_at = Some("2026-11-26T10:00:02Z".parse().unwrap());
        rolled_back.hub_ready_at = Some("2026-11-26T10:02:00Z".parse().unwrap());
        metrics.stepped(&rolling_back, &rolled_back, now);
        // One upgrade in a phase for 20 minutes, one waiting for its window, one that failed
        // holding its hub.
        metrics.track(
            "a",
            &progress(Phase::BackingUp, "2026-11-26T10:10:00Z"),
            now,
        );
        metrics.track(
            "b",
            &progress(Phase::Scheduled, "2026-11-26T09:00:00Z"),
            now,
        );
        let mut failed = progress(Phase::Failed, "2026-11-26T10:00:00Z");
        failed.keeps_lock = true;
        metrics.track("c", &failed, now);
        let text = metrics.render();
        for line in [
            "hubgrade_build_info{version=\"0.1.0\"} 1",
            "hubgrade_upgrades_total{outcome=\"RolledBack\",reason=\"MigrationFailed\"} 1",
            "hubgrade_phase_duration_seconds_bucket{le=\"128.0\",phase=\"Migrating\"} 1",
            "hubgrade_phase_duration_seconds_bucket{le=\"64.0\",phase=\"Migrating\"} 0",
            "hubgrade_downtime_seconds_sum 120.0",
            "hubgrade_backup_size_bytes_count 1",
            "hubgrade_upgrades_in_progress 2",
            "hubgrade_upgrades_stalled 1",
            "hubgrade_upgrades_failed_holding_hub 1",
        ] {
            assert!(text.contains(line), "no {line} in\n{text}");
        }
        metrics.forget("a", now);
        assert!(metrics.render().contains("hubgrade_upgrades_stalled 0"));
    }
}
