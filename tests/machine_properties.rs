//! Property tests for `hubgrade::machine::decide`, run against a simulated shell and cluster.
//!
//! A run is a random plan and starting situation, then a stretch of "turbulent" turns in which
//! the environment does random things between decisions (time passes, jobs finish well or
//! badly or not at all, pods linger, the external tool sets the image or not, the operator
//! crashes and loses a progress write), then a calm stretch in which every running job succeeds,
//! pods settle and time advances steadily, so the upgrade must end. Each invariant is checked
//! over the recorded trace by its own proptest.

#[allow(dead_code)]
mod machine_support;

use hubgrade::machine::{
    Action, BackupRecord, Decision, DrainPlan, HubObservation, ImageManagement, LockState,
    MigrationFailure, OnDrainTimeout, Original, Phase, Plan, Preflight, Progress, RollbackPolicy,
    StepState, Timeouts, Window, World, decide,
};
use jiff::{SignedDuration, Timestamp};
use machine_support::{ORIGINAL_IMAGE, OTHER_UPGRADE, TARGET_IMAGE, backup_report, start};
use proptest::prelude::*;

/// Every run stops after this many decisions; calm runs end far sooner.
const MAX_DECISIONS: usize = 300;
/// Decisions made after a terminal phase was persisted, to check it sticks.
const DECISIONS_AFTER_THE_END: usize = 6;
/// How far the clock moves per calm turn.
const CALM_TICK: SignedDuration = SignedDuration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// The simulated world
// ---------------------------------------------------------------------------------------------

/// What the hub database holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Database {
    /// The schema the original image expects, never touched.
    Original,
    /// `upgrade-db` is running against it.
    Migrating,
    /// `upgrade-db` finished: the schema the target image expects.
    Migrated,
    /// `upgrade-db` failed or was cancelled half way: neither image may use it.
    FailedMigration,
    /// The backup is being copied back.
    Restoring,
    /// The backup was copied back: the original schema and data again.
    Restored,
    /// Two writers, a failed restore or a restore of a bad backup: lost.
    Broken,
}

impl Database {
    fn holds_the_original(self) -> bool {
        matches!(self, Database::Original | Database::Restored)
    }

    /// Whether a hub running `image` may serve users from this database.
    fn fits(self, image: &str) -> bool {
        if image == TARGET_IMAGE {
            self == Database::Migrated
        } else {
            self.holds_the_original()
        }
    }
}

/// A Job (or snapshot) the operator starts, as the cluster shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    NotStarted,
    Running,
    Succeeded,
    Failed,
}

impl Job {
    fn observed(self) -> StepState<()> {
        match self {
            Job::NotStarted => StepState::NotStarted,
            Job::Running => StepState::Running,
            Job::Succeeded => StepState::Succeeded(()),
            Job::Failed => StepState::Failed("the job's pod exited with code 1".into()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SimHub {
    image: String,
    replicas: i32,
    pods: u32,
    rolled_out: bool,
}

/// What the run starts from and what stays true for the whole run.
#[derive(Clone, Debug)]
struct Scenario {
    original_image: String,
    original_replicas: i32,
    hub_exists: bool,
    preflight_problems: Vec<String>,
    lock_held_by_another_upgrade: bool,
    /// The target image becomes Ready on a migrated database; otherwise it never does.
    target_image_works: bool,
    active_servers: Option<u32>,
}

impl Scenario {
    /// Preflight must refuse this upgrade.
    fn preflight_must_fail(&self) -> bool {
        !self.hub_exists || (!self.preflight_problems.is_empty() && !self.already_at_target())
    }

    /// The hub already has the target image: the run ends without touching it, Succeeded
    /// (AlreadyAtTarget) when that hub is Ready, else Failed.
    fn already_at_target(&self) -> bool {
        self.hub_exists && self.original_image == TARGET_IMAGE
    }
}

/// Something the environment does between two decisions.
#[derive(Clone, Debug)]
enum Event {
    Tick(SignedDuration),
    PreflightChecksFinish,
    OtherUpgradeReleasesTheLock,
    HubApiReports(Option<u32>),
    /// A person approves the upgrade (`approval: Manual`).
    Approve,
    RequestedServersStop,
    RehearsalFinishes {
        ok: bool,
    },
    BackupFinishes {
        ok: bool,
        verified: bool,
    },
    MigrationFinishes {
        ok: bool,
    },
    RestoreFinishes {
        ok: bool,
    },
    /// Terminating pods go away, wanted pods start, Ready if their image fits the database.
    PodsSettle,
    /// External mode: the GitOps tool or Helm sets the target image (and perhaps the replicas).
    ExternalToolSetsImage {
        with_replicas: bool,
    },
}

#[derive(Clone, Debug)]
struct Turn {
    events: Vec<Event>,
    /// The shell performs the action, but the progress write is lost.
    crash: bool,
}

#[derive(Clone, Debug)]
struct Run {
    plan: Plan,
    scenario: Scenario,
    turbulent: Vec<Turn>,
}

/// The state of the simulated cluster that the invariants look at.
#[derive(Clone, Debug, PartialEq)]
struct Snapshot {
    hub: Option<SimHub>,
    database: Database,
    lock: LockState,
    backup: Job,
    backup_verified: bool,
    /// What the database held when the backup was taken.
    backup_holds: Option<Database>,
    migration: Job,
    restore: Job,
    /// The copy of the hub's configuration exists.
    config_copied: bool,
}

/// One decision of a run.
#[derive(Clone, Debug)]
struct Entry {
    /// The persisted progress the decision was made from.
    progress: Progress,
    decision: Decision,
    crashed: bool,
    /// The cluster just before and just after the shell performed the action.
    before: Snapshot,
    after: Snapshot,
}

#[derive(Debug)]
struct Trace {
    scenario: Scenario,
    plan: Plan,
    initial: Snapshot,
    entries: Vec<Entry>,
    /// The cluster and persisted progress when the run stopped.
    last: Snapshot,
    persisted: Progress,
}

impl Trace {
    fn original(&self) -> Original {
        Original {
            image: self.scenario.original_image.clone(),
            replicas: self.scenario.original_replicas,
        }
    }

    /// Every decision with its index. The shell performed every action, crashed or not: a
    /// crash loses only the progress write.
    fn decisions(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.entries.iter().enumerate()
    }
}

/// The shell: performs actions on the simulated cluster and persists progress.
struct Shell {
    plan: Plan,
    scenario: Scenario,
    now: Timestamp,
    cluster: Snapshot,
    preflight_checks_done: bool,
    active_servers: Option<u32>,
    servers_asked_to_stop: bool,
    /// Someone annotated the upgrade as approved.
    approved: bool,
    rehearsal: Job,
    persisted: Progress,
    entries: Vec<Entry>,
}

impl Shell {
    fn new(plan: &Plan, scenario: &Scenario) -> Shell {
        let hub = scenario.hub_exists.then(|| SimHub {
            image: scenario.original_image.clone(),
            replicas: scenario.original_replicas,
            pods: scenario.original_replicas as u32,
            rolled_out: true,
        });
        let lock = if scenario.lock_held_by_another_upgrade {
            LockState::HeldBy(OTHER_UPGRADE.to_string())
        } else {
            LockState::Free
        };
        Shell {
            plan: plan.clone(),
            scenario: scenario.clone(),
            now: start(),
            cluster: Snapshot {
                hub,
                database: Database::Original,
                lock,
                backup: Job::NotStarted,
                backup_verified: false,
                backup_holds: None,
                migration: Job::NotStarted,
                restore: Job::NotStarted,
                config_copied: false,
            },
            preflight_checks_done: false,
            active_servers: scenario.active_servers,
            servers_asked_to_stop: false,
            approved: false,
            rehearsal: Job::NotStarted,
            persisted: Progress::default(),
            entries: Vec::new(),
        }
    }

    /// What the operator observes, as the real shell would gather it.
    fn observe(&self) -> World {
        let cluster = &self.cluster;
        let backup = match cluster.backup {
            Job::NotStarted => StepState::NotStarted,
            Job::Running => StepState::Running,
            Job::Failed => StepState::Failed("pg_dump: connection refused".into()),
            Job::Succeeded => StepState::Succeeded(BackupRecord {
                verified: cluster.backup_verified,
                ..backup_report(true)
            }),
        };
        World {
            hub: cluster.hub.as_ref().map(|hub| HubObservation {
                image: hub.image.clone(),
                replicas: hub.replicas,
                pods: hub.pods,
                rolled_out: hub.rolled_out,
                stuck: None,
                scaled_by: None,
                managed_by: None,
            }),
            lock: cluster.lock.clone(),
            // The checks run only while the persisted phase is Preflight.
            preflight: (self.persisted.phase == Phase::Preflight && self.preflight_checks_done)
                .then(|| Preflight {
                    problems: self.scenario.preflight_problems.clone(),
                }),
            active_servers: self
                .active_servers
                .map(|n| (0..n).map(|i| format!("user{i}")).collect()),
            approved: self.approved.then(|| "alice".to_string()),
            rehearsal: self.rehearsal.observed(),
            backup,
            migration: cluster.migration.observed(),
            restore: cluster.restore.observed(),
            ..World::default()
        }
    }

    /// One decision: observe, decide, perform the action, persist the progress (unless crashed).
    fn step(&mut self, crash: bool) {
        let world = self.observe();
        let decision = decide(&self.plan, &self.persisted, &world, self.now);
        let before = self.cluster.clone();
        self.perform(&decision.action);
        let entry = Entry {
            progress: self.persisted.clone(),
            decision: decision.clone(),
            crashed: crash,
            before,
            after: self.cluster.clone(),
        };
        self.entries.push(entry);
        if !crash {
            self.persisted = decision.progress;
        }
    }

    fn perform(&mut self, action: &Action) {
        let cluster = &mut self.cluster;
        match action {
            Action::Wait => {}
            Action::AcquireLock => {
                if cluster.hub.is_some() && cluster.lock == LockState::Free {
                    cluster.lock = LockState::HeldBySelf;
                }
            }
            Action::ReleaseLock => {
                if cluster.lock == LockState::HeldBySelf {
                    cluster.lock = LockState::Free;
                }
            }
            Action::StartRehearsal => {
                if self.rehearsal == Job::NotStarted {
                    self.rehearsal = Job::Running;
                }
            }
            Action::StopServers { .. } => self.servers_asked_to_stop = true,
            Action::ScaleHub { replicas } => {
                if let Some(hub) = &mut cluster.hub
                    && hub.replicas != *replicas
                {
                    hub.replicas = *replicas;
                    hub.rolled_out = false;
                }
            }
            Action::DeleteHubPods => {
                if let Some(hub) = &mut cluster.hub {
                    hub.pods = 0;
                }
            }
            Action::BackUpConfig => cluster.config_copied = true,
            Action::StartBackup => {
                if cluster.backup == Job::NotStarted {
                    cluster.backup = Job::Running;
                }
            }
            Action::StartMigration => {
                if cluster.migration == Job::NotStarted {
                    cluster.migration = Job::Running;
                    cluster.database = match cluster.database {
                        Database::Original | Database::Restored => Database::Migrating,
                        _ => Database::Broken,
                    };
                }
            }
            Action::CancelMigration => {
                // Deleting the Job makes it disappear; the schema is left half changed.
                if cluster.migration == Job::Running {
                    cluster.migration = Job::NotStarted;
                    if cluster.database == Database::Migrating {
                        cluster.database = Database::FailedMigration;
                    }
                }
            }
            Action::SetHubImage { image } => {
                if let Some(hub) = &mut cluster.hub
                    && hub.image != *image
                {
                    hub.image = image.clone();
                    hub.rolled_out = false;
                }
            }
            Action::StartFreshDatabase => {
                panic!("the model's plans roll a failed migration back, never to a fresh database")
            }
            Action::StartRestore => {
                if cluster.restore == Job::NotStarted {
                    cluster.restore = Job::Running;
                    cluster.database = if cluster.migration == Job::Running {
                        Database::Broken
                    } else {
                        Database::Restoring
                    };
                }
            }
        }
    }

    fn apply(&mut self, event: &Event) {
        let cluster = &mut self.cluster;
        match event {
            Event::Tick(by) => self.now += *by,
            Event::PreflightChecksFinish => self.preflight_checks_done = true,
            Event::OtherUpgradeReleasesTheLock => {
                if matches!(cluster.lock, LockState::HeldBy(_)) {
                    cluster.lock = LockState::Free;
                }
            }
            Event::HubApiReports(active) => self.active_servers = *active,
            Event::Approve => self.approved = true,
            Event::RequestedServersStop => {
                if self.servers_asked_to_stop && self.active_servers.is_some() {
                    self.active_servers = Some(0);
                }
            }
            Event::RehearsalFinishes { ok } => {
                if self.rehearsal == Job::Running {
                    self.rehearsal = if *ok { Job::Succeeded } else { Job::Failed };
                }
            }
            Event::BackupFinishes { ok, verified } => {
                if cluster.backup == Job::Running {
                    cluster.backup = if *ok { Job::Succeeded } else { Job::Failed };
                    cluster.backup_verified = *ok && *verified;
                    cluster.backup_holds = ok.then_some(cluster.database);
                }
            }
            Event::MigrationFinishes { ok } => {
                if cluster.migration == Job::Running {
                    cluster.migration = if *ok { Job::Succeeded } else { Job::Failed };
                    cluster.database = match (cluster.database, ok) {
                        (Database::Migrating, true) => Database::Migrated,
                        (Database::Migrating, false) => Database::FailedMigration,
                        _ => Database::Broken,
                    };
                }
            }
            Event::RestoreFinishes { ok } => {
                if cluster.restore == Job::Running {
                    cluster.restore = if *ok { Job::Succeeded } else { Job::Failed };
                    let good_copy = cluster
                        .backup_holds
                        .is_some_and(Database::holds_the_original);
                    cluster.database = match cluster.database {
                        Database::Restoring if *ok && good_copy => Database::Restored,
                        _ => Database::Broken,
                    };
                }
            }
            Event::PodsSettle => {
                if let Some(hub) = &mut cluster.hub {
                    hub.pods = hub.replicas.max(0) as u32;
                    // A hub that ran the target from the start works on its own database.
                    let as_it_was =
                        self.scenario.already_at_target() && cluster.database == Database::Original;
                    hub.rolled_out = hub.replicas == 0
                        || as_it_was
                        || (cluster.database.fits(&hub.image)
                            && (hub.image != TARGET_IMAGE || self.scenario.target_image_works));
                }
            }
            Event::ExternalToolSetsImage { with_replicas } => {
                // The tool reacts to the operator asking for the image change, in RollingOut,
                // and puts the original image back (helm rollback, a revert in Git) once the
                // upgrade rolls back.
                let external = self.plan.image_management == Some(ImageManagement::External);
                let wanted = match self.persisted.phase {
                    Phase::RollingOut => Some(TARGET_IMAGE),
                    Phase::RollingBack => Some(ORIGINAL_IMAGE),
                    _ => None,
                };
                if let Some(hub) = &mut cluster.hub
                    && external
                    && let Some(wanted) = wanted
                    && hub.image != wanted
                {
                    hub.image = wanted.to_string();
                    if *with_replicas {
                        hub.replicas = self.scenario.original_replicas;
                    }
                    hub.rolled_out = false;
                }
            }
        }
    }

    /// The environment stops injecting failures: everything running succeeds, the external tool
    /// does its part, and pods settle every other turn (so decisions still see pods linger).
    fn calm_events(&self, calm_turn: usize) -> Vec<Event> {
        let mut events = vec![
            Event::Tick(CALM_TICK),
            Event::PreflightChecksFinish,
            Event::OtherUpgradeReleasesTheLock,
            Event::HubApiReports(Some(0)),
            Event::Approve,
            Event::RehearsalFinishes { ok: true },
            Event::BackupFinishes {
                ok: true,
                verified: true,
            },
            Event::MigrationFinishes { ok: true },
            Event::RestoreFinishes { ok: true },
            Event::ExternalToolSetsImage {
                with_replicas: false,
            },
        ];
        if calm_turn % 2 == 1 {
            events.push(Event::PodsSettle);
        }
        events
    }
}

fn simulate(run: &Run) -> Trace {
    let mut shell = Shell::new(&run.plan, &run.scenario);
    let initial = shell.cluster.clone();
    for turn in &run.turbulent {
        for event in &turn.events {
            shell.apply(event);
        }
        shell.step(turn.crash);
    }
    let mut after_the_end = 0;
    let mut calm_turn = 0;
    while shell.entries.len() < MAX_DECISIONS && after_the_end < DECISIONS_AFTER_THE_END {
        if shell.persisted.phase.is_terminal() {
            after_the_end += 1;
        }
        for event in shell.calm_events(calm_turn) {
            shell.apply(&event);
        }
        shell.step(false);
        calm_turn += 1;
    }
    Trace {
        scenario: run.scenario.clone(),
        plan: run.plan.clone(),
        initial,
        entries: shell.entries,
        last: shell.cluster,
        persisted: shell.persisted,
    }
}

// ---------------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------------

fn seconds(range: std::ops::RangeInclusive<i64>) -> impl Strategy<Value = SignedDuration> {
    range.prop_map(SignedDuration::from_secs)
}

fn timeouts() -> impl Strategy<Value = Timeouts> {
    // Short enough that waiting phases time out within a run.
    let short = || seconds(60..=1200);
    (
        (short(), short(), short(), short()),
        (short(), short(), short(), seconds(300..=1800)),
    )
        .prop_map(
            |((rehearsal, drain, scale_down, backup), (migration, rollout, verify, rollback))| {
                Timeouts {
                    rehearsal,
                    drain,
                    scale_down,
                    backup,
                    migration,
                    rollout,
                    verify,
                    rollback,
                }
            },
        )
}

fn drain_plan() -> impl Strategy<Value = Option<DrainPlan>> {
    proptest::option::of(
        (
            0u32..3,
            prop_oneof![
                Just(OnDrainTimeout::Proceed),
                Just(OnDrainTimeout::Abort),
                Just(OnDrainTimeout::StopServers)
            ],
        )
            .prop_map(|(max_active_servers, on_timeout)| DrainPlan {
                max_active_servers,
                on_timeout,
            }),
    )
}

fn plan() -> impl Strategy<Value = Plan> {
    (
        any::<bool>(),
        drain_plan(),
        prop_oneof![
            Just(None),
            Just(Some(ImageManagement::Operator)),
            Just(Some(ImageManagement::External))
        ],
        prop_oneof![
            3 => Just(RollbackPolicy::Automatic),
            1 => Just(RollbackPolicy::Manual)
        ],
        timeouts(),
    )
        .prop_map(
            |(rehearse, drain, image_management, rollback, timeouts)| Plan {
                target_image: TARGET_IMAGE.to_string(),
                rehearse,
                drain,
                image_management,
                accept_image_drift: false,
                rollback,
                // FreshDatabase is covered by tests/machine_transitions.rs.
                on_migration_failure: MigrationFailure::RollBack,
                timeouts,
                window: Window::default(),
                verify_hub_api: false,
                approval_required: false,
            },
        )
        .prop_flat_map(|plan| {
            (Just(plan), gate()).prop_map(|(plan, (approval_required, window))| Plan {
                approval_required,
                window,
                ..plan
            })
        })
}

/// No gate (most runs), an approval, a window that opens later, or one that closes early.
fn gate() -> impl Strategy<Value = (bool, Window)> {
    let later = || seconds(30..=600).prop_map(|offset| Some(start() + offset));
    prop_oneof![
        4 => Just((false, Window::default())),
        1 => Just((true, Window::default())),
        1 => later().prop_map(|not_before| (false, Window { not_before, not_after: None })),
        1 => (any::<bool>(), later()).prop_map(|(approval, not_after)| {
            (approval, Window { not_before: None, not_after })
        }),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![
            29 => Just(ORIGINAL_IMAGE.to_string()),
            1 => Just(TARGET_IMAGE.to_string())
        ],
        prop_oneof![1 => Just(0), 9 => 1i32..=3],
        prop::bool::weighted(0.98),
        prop_oneof![
            15 => Just(Vec::new()),
            1 => Just(vec!["the hub database is not reachable".to_string()])
        ],
        prop::bool::weighted(0.25),
        prop::bool::weighted(0.7),
        proptest::option::of(0u32..5),
    )
        .prop_map(
            |(
                original_image,
                original_replicas,
                hub_exists,
                preflight_problems,
                lock_held_by_another_upgrade,
                target_image_works,
                active_servers,
            )| Scenario {
                original_image,
                original_replicas,
                hub_exists,
                preflight_problems,
                lock_held_by_another_upgrade,
                target_image_works,
                active_servers,
            },
        )
}

fn event() -> impl Strategy<Value = Event> {
    let mostly_ok = || prop::bool::weighted(0.8);
    prop_oneof![
        5 => seconds(1..=180).prop_map(Event::Tick),
        2 => Just(Event::PreflightChecksFinish),
        1 => Just(Event::OtherUpgradeReleasesTheLock),
        1 => proptest::option::of(0u32..5).prop_map(Event::HubApiReports),
        1 => Just(Event::RequestedServersStop),
        1 => Just(Event::Approve),
        2 => mostly_ok().prop_map(|ok| Event::RehearsalFinishes { ok }),
        2 => (mostly_ok(), mostly_ok())
            .prop_map(|(ok, verified)| Event::BackupFinishes { ok, verified }),
        2 => mostly_ok().prop_map(|ok| Event::MigrationFinishes { ok }),
        2 => mostly_ok().prop_map(|ok| Event::RestoreFinishes { ok }),
        4 => Just(Event::PodsSettle),
        2 => any::<bool>().prop_map(|with_replicas| Event::ExternalToolSetsImage { with_replicas }),
    ]
}

fn turn() -> impl Strategy<Value = Turn> {
    (
        prop::collection::vec(event(), 0..4),
        prop::bool::weighted(0.12),
    )
        .prop_map(|(events, crash)| Turn { events, crash })
}

fn run() -> impl Strategy<Value = Run> {
    (plan(), scenario(), prop::collection::vec(turn(), 0..120)).prop_map(
        |(plan, scenario, turbulent)| Run {
            plan,
            scenario,
            turbulent,
        },
    )
}

// ---------------------------------------------------------------------------------------------
// Invariants
// ---------------------------------------------------------------------------------------------

/// Where a failing check points: the decision's index, phase and action.
fn at(index: usize, entry: &Entry) -> String {
    format!(
        "decision #{index} from persisted phase {} returned {:?} -> {} (crashed: {})",
        entry.progress.phase, entry.decision.action, entry.decision.progress.phase, entry.crashed
    )
}

fn hub_state(snapshot: &Snapshot) -> Option<(String, i32)> {
    snapshot
        .hub
        .as_ref()
        .map(|hub| (hub.image.clone(), hub.replicas))
}

/// 1. Nothing touches the hub before Preflight passed; a failed Preflight leaves it as it was.
fn check_nothing_touches_the_hub_before_preflight_passed(trace: &Trace) -> Result<(), String> {
    for (index, entry) in trace.decisions() {
        let before_preflight_passed =
            matches!(entry.progress.phase, Phase::Pending | Phase::Preflight);
        if before_preflight_passed && entry.decision.action.touches_hub() {
            return Err(format!(
                "touched the hub before Preflight passed: {}",
                at(index, entry)
            ));
        }
    }
    if trace.scenario.already_at_target() {
        let ended = (trace.persisted.phase, trace.persisted.reason.as_str());
        if !matches!(
            ended,
            (Phase::Succeeded, "AlreadyAtTarget") | (Phase::Failed, _)
        ) {
            return Err(format!(
                "the hub already ran the target, but the run ended in {ended:?}"
            ));
        }
        if let Some((index, entry)) = trace
            .decisions()
            .find(|(_, entry)| entry.decision.action.touches_hub())
        {
            return Err(format!(
                "the hub already ran the target, yet it was touched: {}",
                at(index, entry)
            ));
        }
        return Ok(());
    }
    let preflight_failed = trace.scenario.preflight_must_fail()
        || trace.entries.iter().any(|entry| {
            entry.progress.phase == Phase::Preflight
                && entry.decision.progress.phase == Phase::Failed
                && !entry.crashed
        });
    if preflight_failed {
        if trace.persisted.phase != Phase::Failed {
            return Err(format!(
                "Preflight had to fail, but the run ended in {}",
                trace.persisted.phase
            ));
        }
        if let Some((index, entry)) = trace
            .decisions()
            .find(|(_, entry)| entry.decision.action.touches_hub())
        {
            return Err(format!(
                "Preflight failed, yet the hub was touched: {}",
                at(index, entry)
            ));
        }
        let untouched = hub_state(&trace.last) == hub_state(&trace.initial)
            && trace.last.database == Database::Original;
        if !untouched {
            return Err(format!(
                "Preflight failed, yet the hub changed from {:?} to {:?}",
                trace.initial, trace.last
            ));
        }
    }
    Ok(())
}

/// 2. The original image and replicas are persisted before the hub is ever scaled.
fn check_original_hub_persisted_before_scaling(trace: &Trace) -> Result<(), String> {
    for (index, entry) in trace.decisions() {
        if matches!(entry.decision.action, Action::ScaleHub { .. })
            && entry.progress.from.as_ref() != Some(&trace.original())
        {
            return Err(format!(
                "scaled the hub while the persisted original was {:?}, not {:?}: {}",
                entry.progress.from,
                trace.original(),
                at(index, entry)
            ));
        }
    }
    Ok(())
}

/// 3. The migration starts only with a verified backup recorded in the persisted progress (and
///    that backup really exists, verified, holding the original database).
fn check_migration_starts_only_after_a_verified_backup(trace: &Trace) -> Result<(), String> {
    for (index, entry) in trace.decisions() {
        if entry.decision.action != Action::StartMigration {
            continue;
        }
        if !entry.progress.backup.as_ref().is_some_and(|b| b.verified) {
            return Err(format!(
                "started the migration with persisted backup {:?}: {}",
                entry.progress.backup,
                at(index, entry)
            ));
        }
        let cluster = &entry.before;
        let real_backup = cluster.backup == Job::Succeeded
            && cluster.backup_verified
            && cluster
                .backup_holds
                .is_some_and(Database::holds_the_original);
        if !real_backup {
            return Err(format!(
                "started the migration without a verified backup of the original database \
                 in the cluster ({:?}): {}",
                cluster,
                at(index, entry)
            ));
        }
    }
    Ok(())
}

/// 4. The hub is never brought up on a database its image cannot use (mid-migration, failed
///    migration, mid-restore, or the other image's schema), and the database is only migrated or
///    restored while the hub is stopped and nothing else writes to it.
fn check_hub_never_runs_on_an_unfit_database(trace: &Trace) -> Result<(), String> {
    for (index, entry) in trace.decisions() {
        let brings_hub_up = match &entry.decision.action {
            Action::ScaleHub { replicas } => *replicas > 0,
            Action::SetHubImage { .. } => entry.before.hub.as_ref().is_some_and(|h| h.replicas > 0),
            _ => false,
        };
        if brings_hub_up {
            let hub = entry.after.hub.as_ref().expect("the hub exists");
            if !entry.after.database.fits(&hub.image) {
                return Err(format!(
                    "brought the hub up with {} on a {:?} database: {}",
                    hub.image,
                    entry.after.database,
                    at(index, entry)
                ));
            }
        }
        // Repeating a start is an idempotent no-op; the other job running is not.
        let other_job = match entry.decision.action {
            Action::StartMigration => Some(entry.before.restore),
            Action::StartRestore => Some(entry.before.migration),
            _ => None,
        };
        if let Some(other_job) = other_job {
            let hub_stopped = entry
                .before
                .hub
                .as_ref()
                .is_some_and(|h| h.replicas == 0 && h.pods == 0);
            if !hub_stopped || other_job == Job::Running {
                return Err(format!(
                    "wrote the database while the hub or another job used it ({:?}): {}",
                    entry.before,
                    at(index, entry)
                ));
            }
        }
    }
    Ok(())
}

/// 5. Every run ends in a terminal phase; RolledBack means the original hub on the original
///    database, Succeeded the target image with the original replicas on the migrated database;
///    either way the hub is Ready and the lock released.
fn check_run_ends_in_a_consistent_terminal_phase(trace: &Trace) -> Result<(), String> {
    let phase = trace.persisted.phase;
    if !phase.is_terminal() {
        return Err(format!(
            "the run did not end after {} decisions: persisted phase {phase}, message {:?}",
            trace.entries.len(),
            trace.persisted.message
        ));
    }
    let original = trace.original();
    let hub = trace.last.hub.as_ref();
    let image_and_replicas = hub.map(|h| (h.image.as_str(), h.replicas));
    let database = trace.last.database;
    let hub_matches_the_ending = match phase {
        // The original hub on the original database.
        Phase::RolledBack => {
            image_and_replicas == Some((original.image.as_str(), original.replicas))
                && database.holds_the_original()
        }
        // The target image with the original replicas on the migrated database.
        Phase::Succeeded if trace.scenario.already_at_target() => {
            image_and_replicas == Some((TARGET_IMAGE, original.replicas))
                && database == Database::Original
        }
        Phase::Succeeded => {
            image_and_replicas == Some((TARGET_IMAGE, original.replicas))
                && database == Database::Migrated
        }
        _ => true,
    };
    if !hub_matches_the_ending {
        return Err(format!(
            "{phase}, but the hub is {hub:?} on a {database:?} database (the original was \
             {original:?}, the target {TARGET_IMAGE})"
        ));
    }
    let serving = matches!(phase, Phase::Succeeded | Phase::RolledBack);
    if serving && !hub.is_some_and(|h| h.rolled_out) {
        return Err(format!("{phase}, but the hub is not Ready: {hub:?}"));
    }
    if serving && trace.last.lock != LockState::Free {
        return Err(format!("{phase}, but the lock is {:?}", trace.last.lock));
    }
    Ok(())
}

/// 7. With External image management the operator never writes the hub image, not even to roll
///    back: the tool that manages the Deployment would revert it.
fn check_external_mode_never_writes_the_image(trace: &Trace) -> Result<(), String> {
    if trace.plan.image_management != Some(ImageManagement::External) {
        return Ok(());
    }
    for (index, entry) in trace.decisions() {
        if matches!(entry.decision.action, Action::SetHubImage { .. }) {
            return Err(format!(
                "wrote the image in External mode: {}",
                at(index, entry)
            ));
        }
    }
    Ok(())
}

/// 6. A persisted terminal phase never changes and nothing touches the hub afterwards.
fn check_terminal_phases_stick(trace: &Trace) -> Result<(), String> {
    for (index, entry) in trace.decisions() {
        let phase = entry.progress.phase;
        if !phase.is_terminal() {
            continue;
        }
        if entry.decision.progress.phase != phase {
            return Err(format!("left the terminal phase: {}", at(index, entry)));
        }
        if entry.decision.action.touches_hub() {
            return Err(format!(
                "touched the hub after the end: {}",
                at(index, entry)
            ));
        }
    }
    Ok(())
}

/// 8. The hub's configuration is copied before the upgrade stops the hub and before the migration.
fn check_configuration_copied_before_the_hub_stops(trace: &Trace) -> Result<(), String> {
    for (index, entry) in trace.decisions() {
        let stops = entry.progress.phase == Phase::ScalingDown
            && entry.decision.action == Action::ScaleHub { replicas: 0 };
        let migrates = entry.decision.action == Action::StartMigration;
        if (stops || migrates) && !entry.before.config_copied {
            return Err(format!(
                "no copy of the configuration yet: {}",
                at(index, entry)
            ));
        }
    }
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Runs `check` on `trace`, with the plan and the last decisions in the failure message.
fn verify(trace: &Trace, check: fn(&Trace) -> Result<(), String>) -> Result<(), TestCaseError> {
    check(trace).map_err(|problem| {
        let recent: Vec<String> = trace
            .decisions()
            .skip(trace.entries.len().saturating_sub(12))
            .map(|(index, entry)| at(index, entry))
            .collect();
        TestCaseError::fail(format!(
            "{problem}\nplan: {:?}\nscenario: {:?}\nlast decisions:\n  {}",
            trace.plan,
            trace.scenario,
            recent.join("\n  ")
        ))
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn nothing_touches_the_hub_before_preflight_passed(run in run()) {
        verify(&simulate(&run), check_nothing_touches_the_hub_before_preflight_passed)?;
    }

    #[test]
    fn the_original_hub_is_persisted_before_it_is_scaled(run in run()) {
        verify(&simulate(&run), check_original_hub_persisted_before_scaling)?;
    }

    #[test]
    fn the_migration_starts_only_after_a_verified_backup_is_persisted(run in run()) {
        verify(&simulate(&run), check_migration_starts_only_after_a_verified_backup)?;
    }

    #[test]
    fn the_hub_never_runs_on_a_database_its_image_cannot_use(run in run()) {
        verify(&simulate(&run), check_hub_never_runs_on_an_unfit_database)?;
    }

    #[test]
    fn every_run_ends_in_a_terminal_phase_matching_the_hub(run in run()) {
        verify(&simulate(&run), check_run_ends_in_a_consistent_terminal_phase)?;
    }

    #[test]
    fn terminal_phases_stick_and_leave_the_hub_alone(run in run()) {
        verify(&simulate(&run), check_terminal_phases_stick)?;
    }

    #[test]
    fn external_image_management_never_writes_the_image(run in run()) {
        verify(&simulate(&run), check_external_mode_never_writes_the_image)?;
    }

    #[test]
    fn the_configuration_is_copied_before_the_hub_stops(run in run()) {
        verify(&simulate(&run), check_configuration_copied_before_the_hub_stops)?;
    }
}

fn calm_run(plan: Plan, target_image_works: bool) -> Run {
    Run {
        plan,
        scenario: Scenario {
            original_image: ORIGINAL_IMAGE.to_string(),
            original_replicas: 2,
            hub_exists: true,
            preflight_problems: Vec::new(),
            lock_held_by_another_upgrade: false,
            target_image_works,
            active_servers: Some(3),
        },
        turbulent: Vec::new(),
    }
}

/// Every shape of plan, with every timeout and the drain window as in the defaults.
fn every_plan_shape() -> Vec<Plan> {
    let mut plans = Vec::new();
    for rehearse in [false, true] {
        for drain in [
            None,
            Some(DrainPlan {
                max_active_servers: 0,
                on_timeout: OnDrainTimeout::StopServers,
            }),
        ] {
            for image_management in [
                None,
                Some(ImageManagement::Operator),
                Some(ImageManagement::External),
            ] {
                for rollback in [RollbackPolicy::Automatic, RollbackPolicy::Manual] {
                    plans.push(Plan {
                        target_image: TARGET_IMAGE.to_string(),
                        rehearse,
                        drain: drain.clone(),
                        image_management,
                        accept_image_drift: false,
                        rollback,
                        on_migration_failure: MigrationFailure::RollBack,
                        verify_hub_api: false,
                        timeouts: Timeouts::default(),
                        window: Window::default(),
                        approval_required: false,
                    });
                }
            }
        }
    }
    plans
}

/// The phases a run went through, in order, with how each ended.
fn timeline(trace: &Trace) -> Vec<(Phase, Option<hubgrade::machine::Outcome>)> {
    trace
        .persisted
        .steps
        .iter()
        .map(|step| (step.name, step.outcome))
        .collect()
}

#[test]
fn a_calm_upgrade_succeeds_with_every_plan_shape() {
    use hubgrade::machine::Outcome::{Skipped, Succeeded};
    for plan in every_plan_shape() {
        let trace = simulate(&calm_run(plan.clone(), true));
        let rehearsal = if plan.rehearse { Succeeded } else { Skipped };
        let draining = if plan.drain.is_some() {
            Succeeded
        } else {
            Skipped
        };
        assert_eq!(
            timeline(&trace),
            [
                (Phase::Preflight, Some(Succeeded)),
                (Phase::Rehearsal, Some(rehearsal)),
                (Phase::Draining, Some(draining)),
                (Phase::ScalingDown, Some(Succeeded)),
                (Phase::BackingUp, Some(Succeeded)),
                (Phase::Migrating, Some(Succeeded)),
                (Phase::RollingOut, Some(Succeeded)),
                (Phase::Verifying, Some(Succeeded)),
                (Phase::Succeeded, Some(Succeeded)),
            ],
            "{plan:?}"
        );
        check_run_ends_in_a_consistent_terminal_phase(&trace).unwrap();
        let progress = &trace.persisted;
        assert_eq!(progress.from, Some(trace.original()), "{plan:?}");
        assert!(progress.backup.as_ref().is_some_and(|b| b.verified));
        assert!(progress.migration_started && progress.migration_succeeded);
        assert!(!progress.database_restored);
        assert_eq!(progress.failure, None);
        assert!(progress.downtime_seconds().is_some_and(|s| s > 0));
    }
}

#[test]
fn a_calm_upgrade_to_an_image_that_never_becomes_ready_is_undone() {
    for plan in every_plan_shape() {
        let trace = simulate(&calm_run(plan.clone(), false));
        let progress = &trace.persisted;
        let failure = progress.failure.as_deref().unwrap_or_default();
        assert!(
            failure.contains("did not become Ready"),
            "{plan:?}: {failure}"
        );
        match plan.rollback {
            // Restored from the backup and back on the original image.
            RollbackPolicy::Automatic => {
                assert_eq!(progress.phase, Phase::RolledBack, "{plan:?}");
                assert!(progress.database_restored, "{plan:?}");
                assert_eq!(trace.last.database, Database::Restored, "{plan:?}");
            }
            // Left stopped, on the migrated database, for a person to decide; lock kept.
            RollbackPolicy::Manual => {
                assert_eq!(progress.phase, Phase::Failed, "{plan:?}");
                let hub = trace.last.hub.as_ref().unwrap();
                assert_eq!((hub.replicas, hub.pods), (0, 0), "{plan:?}");
                assert_eq!(trace.last.database, Database::Migrated, "{plan:?}");
                assert_eq!(trace.last.lock, LockState::HeldBySelf, "{plan:?}");
            }
        }
        check_run_ends_in_a_consistent_terminal_phase(&trace).unwrap();
    }
}

/// The generators reach every phase, every ending and the risky paths, so the invariants are
/// not checked on easy runs only.
#[test]
fn the_simulation_reaches_every_phase_and_the_risky_paths() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = run();
    let mut phases = std::collections::HashSet::new();
    let mut endings = std::collections::HashMap::<Phase, usize>::new();
    let mut lost_write_of_the_original = 0;
    let mut restores = 0;
    let mut cancelled_migrations = 0;
    let mut external_rollouts = 0;
    for _ in 0..512 {
        let trace = simulate(&strategy.new_tree(&mut runner).unwrap().current());
        for entry in &trace.entries {
            phases.insert(entry.progress.phase);
            phases.insert(entry.decision.progress.phase);
            if entry.crashed
                && entry.decision.progress.from.is_some()
                && entry.progress.from.is_none()
            {
                lost_write_of_the_original += 1;
            }
            match entry.decision.action {
                Action::StartRestore => restores += 1,
                Action::CancelMigration => cancelled_migrations += 1,
                _ => {}
            }
        }
        if trace.plan.image_management == Some(ImageManagement::External)
            && trace.persisted.phase == Phase::Succeeded
        {
            external_rollouts += 1;
        }
        *endings.entry(trace.persisted.phase).or_default() += 1;
    }
    eprintln!(
        "endings {endings:?}; lost writes of the original hub {lost_write_of_the_original}; \
         restores {restores}; cancelled migrations {cancelled_migrations}; \
         external roll outs {external_rollouts}"
    );
    for phase in Phase::ALL {
        assert!(phases.contains(&phase), "no run reached {phase}");
    }
    for ending in [Phase::Succeeded, Phase::RolledBack, Phase::Failed] {
        assert!(
            endings.get(&ending).copied().unwrap_or(0) >= 10,
            "few runs ended {ending}"
        );
    }
    assert!(
        lost_write_of_the_original > 0,
        "no run lost the write that records the original hub"
    );
    assert!(restores > 0, "no run restored the database");
    assert!(cancelled_migrations > 0, "no run cancelled a migration");
    assert!(external_rollouts > 0, "no External run succeeded");
}
