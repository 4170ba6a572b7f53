//! The transition function: one phase at a time, one action at a time.
//!
//! One file on purpose, though long: the single `match` over every phase in [`decide`] reads as
//! the state diagram, and the `Step` methods it calls are the transitions it names.

use jiff::{SignedDuration, Timestamp};

use super::{
    Action, Check, Decision, EventKind, HubObservation, ImageManagement, LockState,
    MigrationFailure, Notice, OnDrainTimeout, Original, Outcome, Phase, Plan, Progress,
    RollbackPolicy, StepRecord, StepState, Target, Window, World,
};

/// How soon to look again while waiting on something that is not watched (pods, the hub API).
const POLL: SignedDuration = SignedDuration::from_secs(5);

/// The next action for an upgrade, and the progress to record once it is done.
pub fn decide(plan: &Plan, progress: &Progress, world: &World, now: Timestamp) -> Decision {
    let mut step = Step {
        plan,
        world,
        now,
        progress: progress.clone(),
        notice: None,
    };
    if world.deleting
        && !progress.phase.is_terminal()
        && let Some(action) = step.deleted()
    {
        return step.into_decision(action);
    }
    if let Some(why) = &world.abort
        && !progress.phase.is_terminal()
        && let Some(action) = step.aborted(why)
    {
        return step.into_decision(action);
    }
    let action = match progress.phase {
        Phase::Succeeded | Phase::RolledBack | Phase::Failed => {
            // The lock is released only once the terminal phase is recorded, so a crash in
            // between can never leave an unfinished upgrade without its lock.
            let release = world.lock == LockState::HeldBySelf && !progress.keeps_lock;
            return Decision {
                action: if release {
                    Action::ReleaseLock
                } else {
                    Action::Wait
                },
                progress: progress.clone(),
                notice: None,
                requeue_after: None,
            };
        }
        Phase::Pending => {
            step.enter(
                Phase::Preflight,
                "checking the hub, its database and the target",
            );
            Action::Wait
        }
        Phase::Preflight => step.preflight(),
        _ if step.world.lock != LockState::HeldBySelf => step.lock_lost(),
        Phase::Rehearsal => step.rehearsal(),
        Phase::Scheduled => step.scheduled(),
        Phase::Draining => step.draining(),
        Phase::ScalingDown => step.scaling_down(),
        Phase::BackingUp => step.backing_up(),
        Phase::Migrating => step.migrating(),
        Phase::RollingOut => step.rolling_out(),
        Phase::Verifying => step.verifying(),
        Phase::RollingBack => step.rolling_back(),
    };
    step.into_decision(action)
}

/// One decision in the making: the progress is edited in place, the action is returned.
struct Step<'a> {
    plan: &'a Plan,
    world: &'a World,
    now: Timestamp,
    progress: Progress,
    notice: Option<Notice>,
}

impl Step<'_> {
    fn into_decision(self, action: Action) -> Decision {
        let requeue_after = (!self.progress.phase.is_terminal()).then_some(POLL);
        Decision {
            action,
            progress: self.progress,
            notice: self.notice,
            requeue_after,
        }
    }

    /// The HubUpgrade is being deleted. Before the hub was touched it simply ends; once the
    /// hub is stopped it rolls back (whatever the roll back policy: nobody will be left to
    /// decide), unless the migration already succeeded, in which case it finishes. `None`: go
    /// on with the current phase (finishing, or rolling back).
    fn deleted(&mut self) -> Option<Action> {
        let touched = self.progress.from.is_some();
        match self.progress.phase {
            _ if !touched => Some(self.fail_untouched(
                "Deleted",
                "the HubUpgrade was deleted before it touched the hub; nothing was changed".into(),
            )),
            Phase::ScalingDown | Phase::BackingUp | Phase::Migrating
                if !self.progress.migration_succeeded =>
            {
                let problem = format!(
                    "the HubUpgrade was deleted during {}; rolling the hub back before it goes",
                    self.progress.phase
                );
                Some(self.roll_back(problem))
            }
            _ => None,
        }
    }

    /// Someone asked the upgrade to stop (the abort annotation). Before the hub was touched it
    /// ends with nothing changed; after, it rolls back whatever the roll back policy says (the
    /// person asking has decided). `None`: already rolling back, go on.
    fn aborted(&mut self, why: &str) -> Option<Action> {
        if self.progress.from.is_none() {
            let problem =
                format!("aborted ({why}) before the hub was touched; nothing was changed");
            return Some(self.fail_untouched("Aborted", problem));
        }
        if self.progress.phase == Phase::RollingBack {
            return None;
        }
        self.progress.reason = "Aborted".into();
        Some(self.roll_back(format!("aborted ({why})")))
    }

    fn preflight(&mut self) -> Action {
        let Some(checks) = &self.world.preflight else {
            return Action::Wait;
        };
        let Some(hub) = &self.world.hub else {
            let problem = checks
                .problems
                .first()
                .cloned()
                .unwrap_or_else(|| "the hub Deployment does not exist".to_string());
            return self.fail_untouched("PreflightFailed", problem);
        };
        if hub.image == self.plan.target_image {
            // Another upgrade may be on its way to the same target: judge once it is done.
            return match &self.world.lock {
                LockState::HeldBy(other) => self.wait_for_lock(other),
                _ => self.already_at_target(hub),
            };
        }
        if !checks.problems.is_empty() {
            return self.fail_untouched("PreflightFailed", checks.problems.join("; "));
        }
        let mode = match self.image_management(hub) {
            Ok(mode) => mode,
            Err(problem) => return self.fail_untouched("ManagedHub", problem),
        };
        match &self.world.lock {
            LockState::HeldBy(other) => self.wait_for_lock(other),
            LockState::Free => Action::AcquireLock,
            LockState::HeldBySelf => {
                self.progress.waiting_for = None;
                self.progress.image_management = Some(mode);
                self.after_preflight();
                Action::Wait
            }
        }
    }

    fn wait_for_lock(&mut self, other: &str) -> Action {
        if self.progress.waiting_for.as_deref() != Some(other) {
            let message = format!(
                "waiting for HubUpgrade {other}, which holds the hub lock; \
                 this upgrade starts when that one ends"
            );
            self.notify(EventKind::Normal, "WaitingForLock", &message);
            self.progress.message = message;
            self.progress.waiting_for = Some(other.to_string());
        }
        Action::Wait
    }

    /// The hub's Deployment already has the target image (a HubUpgrade applied again from Git
    /// after a prune or a disaster recovery, or a Helm hook on a release that did not change
    /// the image). Once that hub is Ready the upgrade is done without touching anything:
    /// JupyterHub starts only on a database at its own alembic revision (it exits on any
    /// other, unless started with `--upgrade-db`, which migrates it first), so a Ready hub on
    /// the target image shows the database is at the target's revision.
    fn already_at_target(&mut self, hub: &HubObservation) -> Action {
        let image = &self.plan.target_image;
        if hub.rolled_out && hub.replicas > 0 {
            self.progress.to = Some(Target {
                image: image.clone(),
                revision: None,
            });
            let message = format!(
                "the hub already runs {image} and is Ready (JupyterHub starts only on a \
                 database at its own revision); nothing was changed"
            );
            self.finish(
                Phase::Succeeded,
                Outcome::Succeeded,
                EventKind::Normal,
                message,
            );
            self.say_why("AlreadyAtTarget");
            return Action::Wait;
        }
        let not_ready = if hub.replicas == 0 {
            Some("it is scaled to zero".to_string())
        } else if let Some(why) = &hub.stuck {
            Some(format!("it cannot start: {why}"))
        } else if self.timed_out(self.plan.timeouts.verify) {
            Some(format!(
                "it did not become Ready within {}",
                human(self.plan.timeouts.verify)
            ))
        } else {
            None
        };
        match not_ready {
            Some(why) => {
                let problem = format!(
                    "the hub Deployment already has the target image {image}, but {why}; there \
                     is nothing to upgrade, and hubgrade leaves a hub it did not stop as it is"
                );
                self.fail_untouched("TargetNotReady", problem)
            }
            None => {
                self.progress.message = format!(
                    "the hub Deployment already has the target image {image}; waiting for it \
                     to be Ready"
                );
                Action::Wait
            }
        }
    }

    /// Who sets the target image: the spec's choice, or for Auto the tool that manages the
    /// Deployment. Operator on a managed hub only when asked for knowingly.
    fn image_management(&self, hub: &HubObservation) -> Result<ImageManagement, String> {
        match (self.plan.image_management, &hub.managed_by) {
            (Some(ImageManagement::External), _) | (None, Some(_)) => Ok(ImageManagement::External),
            (None, None) | (Some(ImageManagement::Operator), None) => Ok(ImageManagement::Operator),
            (Some(ImageManagement::Operator), Some(_)) if self.plan.accept_image_drift => {
                Ok(ImageManagement::Operator)
            }
            (Some(ImageManagement::Operator), Some(tool)) => Err(format!(
                "the hub Deployment is managed by {tool}: with rollout.imageManagement Operator, \
                 hubgrade would set the image behind its back, and the next sync or upgrade by \
                 {tool} would put {} back onto the migrated database, where that hub no longer \
                 starts. Use rollout.imageManagement External or Auto ({tool} sets the image; \
                 hubgrade migrates first and waits for it), or set rollout.acceptImageDrift: \
                 true to accept that and change the image in {tool} yourself",
                hub.image
            )),
        }
    }

    /// How the target image reaches the hub, as settled in Preflight.
    fn mode(&self) -> ImageManagement {
        self.progress
            .image_management
            .or(self.plan.image_management)
            .unwrap_or(ImageManagement::Operator)
    }

    /// Who sets the image in External mode, for messages.
    fn manager(&self) -> String {
        self.world
            .hub
            .as_ref()
            .and_then(|h| h.managed_by.clone())
            .unwrap_or_else(|| "the tool that manages the hub Deployment".to_string())
    }

    /// After Preflight the upgrade must hold the hub lock. Free: someone removed the annotation;
    /// take it back. Held by another upgrade: stop here, touching nothing more.
    fn lock_lost(&mut self) -> Action {
        if self.world.hub.is_none() {
            // No Deployment, no lock to take back: the hub itself is gone.
            return self.hub_vanished();
        }
        match &self.world.lock {
            LockState::HeldBy(other) => {
                let problem = format!(
                    "HubUpgrade {other} took the hub lock while this upgrade was in {}; \
                     stopped without touching the hub further",
                    self.progress.phase
                );
                self.fail_touched(problem);
                self.progress.keeps_lock = false;
                Action::Wait
            }
            _ => Action::AcquireLock,
        }
    }

    /// Enters the first phase after Preflight, recording the skipped optional ones.
    fn after_preflight(&mut self) {
        if self.plan.rehearse {
            self.enter(
                Phase::Rehearsal,
                "rehearsing the migration on a copy of the database",
            );
            return;
        }
        self.enter(Phase::Rehearsal, "");
        self.finish_current(Outcome::Skipped, "rehearsal disabled");
        self.after_rehearsal();
    }

    /// Checked and rehearsed: through the gate (approval, the window) when there is one.
    fn after_rehearsal(&mut self) {
        if self.plan.approval_required || self.plan.window != Window::default() {
            self.enter(Phase::Scheduled, "");
            let _ = self.scheduled();
            return;
        }
        self.after_gate();
    }

    fn after_gate(&mut self) {
        if self.plan.drain.is_some() {
            self.enter(Phase::Draining, "waiting for users' servers to stop");
            return;
        }
        self.enter(Phase::Draining, "");
        self.finish_current(Outcome::Skipped, "draining disabled");
        self.enter_scaling_down();
    }

    /// The hub is about to go down: only inside the window.
    fn enter_scaling_down(&mut self) -> Action {
        if let Some(action) = self.window_closed() {
            return action;
        }
        self.enter(
            Phase::ScalingDown,
            "recording the hub, copying its configuration and scaling it to zero",
        );
        Action::Wait
    }

    /// Past `schedule.notAfter` before the hub was stopped: the upgrade ends, nothing changed.
    fn window_closed(&mut self) -> Option<Action> {
        let closes = self.plan.window.not_after?;
        (self.now > closes).then(|| {
            let problem = format!(
                "the maintenance window closed at {closes} before the hub could be stopped; \
                 nothing was changed"
            );
            self.fail_untouched("WindowClosed", problem)
        })
    }

    /// Waiting for approval and for the window; nothing changes for users meanwhile.
    fn scheduled(&mut self) -> Action {
        if let Some(action) = self.window_closed() {
            return action;
        }
        let waiting_for_approval = self.plan.approval_required && self.world.approved.is_none();
        if let Some(who) = self.world.approved.clone()
            && self.plan.approval_required
            && self.progress.approved_by.is_none()
        {
            // Its own decision, so that its Event is not replaced by the next phase's.
            let message = format!("approved by {who}");
            self.notify(EventKind::Normal, "Approved", &message);
            self.progress.message = message;
            self.progress.approved_by = Some(who);
            return Action::Wait;
        }
        let opens = self.plan.window.not_before.filter(|t| self.now < *t);
        let message = match (waiting_for_approval, opens) {
            (false, None) => {
                self.after_gate();
                return Action::Wait;
            }
            (true, _) => format!(
                "checked and rehearsed, nothing changed for users; waiting for approval: \
                 annotate the HubUpgrade {} (kubectl hubgrade approve){}",
                super::APPROVED_ANNOTATION,
                opens
                    .map(|t| format!(", then for the window at {t}"))
                    .unwrap_or_default()
            ),
            (false, Some(t)) => format!(
                "checked and rehearsed, nothing changed for users; waiting for the maintenance \
                 window: the hub is stopped from {t}"
            ),
        };
        if self.progress.message != message {
            let reason = if waiting_for_approval {
                "AwaitingApproval"
            } else {
                "Scheduled"
            };
            self.notify(EventKind::Normal, reason, &message);
            self.progress.message = message;
        }
        Action::Wait
    }

    fn rehearsal(&mut self) -> Action {
        if let (Some(why), StepState::NotStarted) =
            (&self.world.rehearsal_blocked, &self.world.rehearsal)
        {
            let message = format!("rehearsal skipped: {why}");
            self.finish_current(Outcome::Skipped, &message);
            self.notify(EventKind::Warning, "RehearsalSkipped", &message);
            self.after_rehearsal();
            return Action::Wait;
        }
        if self.timed_out(self.plan.timeouts.rehearsal) {
            let problem = format!(
                "the rehearsal did not finish within {}; the hub was not touched",
                human(self.plan.timeouts.rehearsal)
            );
            return self.fail_untouched("RehearsalFailed", problem);
        }
        match &self.world.rehearsal {
            StepState::NotStarted => Action::StartRehearsal,
            StepState::Running => Action::Wait,
            StepState::Failed(why) => {
                let problem = format!(
                    "the rehearsal of the migration failed: {why}; the hub was not touched"
                );
                self.fail_untouched("RehearsalFailed", problem)
            }
            StepState::Succeeded(()) => {
                self.after_rehearsal();
                Action::Wait
            }
        }
    }

    /// Waiting, through the hub's API, until few enough users' servers are active; then the
    /// hub goes down, or on timeout what `drain.onTimeout` says. Nothing of the hub changes here.
    fn draining(&mut self) -> Action {
        let Some(drain) = self.plan.drain.clone() else {
            return self.enter_scaling_down();
        };
        let active = self.world.active_servers.clone();
        if let Some(servers) = &active {
            self.progress.active_servers = Some(servers.len() as u32);
            if servers.len() as u32 <= drain.max_active_servers {
                let message = format!(
                    "{} active, at most {} allowed",
                    user_servers(servers.len()),
                    drain.max_active_servers
                );
                self.finish_current(Outcome::Succeeded, &message);
                return self.enter_scaling_down();
            }
        }
        let limit = self.plan.timeouts.drain;
        // Asked to stop, they get as long as stopping the hub's own pods may take.
        if self.timed_out(limit + self.plan.timeouts.scale_down) {
            let problem = format!(
                "{} {} after they were asked to stop; the hub was not touched",
                still_active(active.as_deref()),
                human(self.plan.timeouts.scale_down)
            );
            return self.fail_untouched("DrainTimedOut", problem);
        }
        if !self.progress.stopped_servers.is_empty() {
            self.progress.message = format!(
                "stopping users' servers through the hub's API: {} still active",
                still_active(active.as_deref())
            );
            return Action::Wait;
        }
        if !self.timed_out(limit) {
            self.progress.message = match &active {
                Some(servers) => format!(
                    "waiting for users' servers to stop: {} ({}), at most {} allowed; after {}: {}",
                    user_servers(servers.len()),
                    named(servers),
                    drain.max_active_servers,
                    human(limit),
                    drain.on_timeout
                ),
                None => match &self.world.hub_api_problem {
                    Some(why) => {
                        format!("waiting for the hub's API to report its active servers: {why}")
                    }
                    None => "waiting for the hub's API to report its active servers".to_string(),
                },
            };
            return Action::Wait;
        }
        let still = still_active(active.as_deref());
        match (drain.on_timeout, active) {
            (OnDrainTimeout::Proceed, _) => {
                let message = format!(
                    "draining did not finish within {}: {still}; proceeding (drain.onTimeout \
                     Proceed): running servers keep running and serving, and reach the hub \
                     again once it is back",
                    human(limit)
                );
                if let Some(action) = self.window_closed() {
                    return action;
                }
                self.finish_current(Outcome::Succeeded, &message);
                // Entered quietly: the Event says why the hub goes down with servers running.
                self.enter(Phase::ScalingDown, "");
                self.notify(EventKind::Normal, "DrainProceeding", &message);
                self.progress.message = message;
                Action::Wait
            }
            (OnDrainTimeout::StopServers, Some(servers)) => {
                let message = format!(
                    "draining did not finish within {}: stopping {} through the hub's API \
                     (drain.onTimeout StopServers): {}",
                    human(limit),
                    user_servers(servers.len()),
                    servers.join(", ")
                );
                self.notify(EventKind::Normal, "StoppingServers", &message);
                self.progress.message = message;
                self.progress.stopped_servers = servers.clone();
                Action::StopServers { servers }
            }
            (OnDrainTimeout::Abort, _) | (OnDrainTimeout::StopServers, None) => {
                let problem = format!(
                    "draining did not finish within {}: {still} (drain.onTimeout {}); the hub \
                     was not touched",
                    human(limit),
                    drain.on_timeout
                );
                self.fail_untouched("DrainTimedOut", problem)
            }
        }
    }

    fn scaling_down(&mut self) -> Action {
        let Some(hub) = &self.world.hub else {
            return self.hub_vanished();
        };
        if self.progress.from.is_none() {
            // Written to status before anything touches the hub, so a roll back knows what to restore.
            self.progress.from = Some(Original {
                image: hub.image.clone(),
                replicas: hub.replicas,
            });
            return Action::Wait;
        }
        if !self.progress.config_backed_up {
            // Before the hub stops: the copy is not part of the downtime, and a hub whose
            // configuration cannot be copied keeps running. Recorded with the copy, which a
            // crash before the record makes again (the Secret that exists is the copy).
            if self.timed_out(self.plan.timeouts.scale_down) {
                let problem = format!(
                    "the hub's configuration could not be copied within {}; the hub was not \
                     stopped",
                    human(self.plan.timeouts.scale_down)
                );
                return self.fail_untouched("ConfigurationNotCopied", problem);
            }
            self.progress.config_backed_up = true;
            return Action::BackUpConfig;
        }
        if hub.replicas != 0 {
            // The hub stops answering now, seconds before its pods are gone.
            self.progress.hub_scaled_down_at.get_or_insert(self.now);
            return Action::ScaleHub { replicas: 0 };
        }
        if hub.pods == 0 {
            self.progress.hub_stopped_at = Some(self.now);
            self.enter(Phase::BackingUp, "backing up the database");
            // The downtime has begun: the backup starts with the phase, not a round later.
            return match self.world.backup {
                StepState::NotStarted => Action::StartBackup,
                _ => Action::Wait,
            };
        }
        if self.timed_out(self.plan.timeouts.scale_down) {
            let problem = format!(
                "{} still ran {} after scaling to zero",
                hub_pods(hub.pods),
                human(self.plan.timeouts.scale_down)
            );
            return self.roll_back(problem);
        }
        self.progress.message = format!("waiting for {} to stop", hub_pods(hub.pods));
        Action::Wait
    }

    fn backing_up(&mut self) -> Action {
        if self.timed_out(self.plan.timeouts.backup) {
            let problem = format!(
                "the backup did not finish within {}",
                human(self.plan.timeouts.backup)
            );
            return self.roll_back(problem);
        }
        if let Some(action) = self.keep_hub_stopped() {
            return action;
        }
        if !self.progress.config_backed_up {
            // An upgrade that stopped its hub before copying the configuration first.
            self.progress.config_backed_up = true;
            return Action::BackUpConfig;
        }
        match &self.world.backup {
            StepState::NotStarted => Action::StartBackup,
            StepState::Running => Action::Wait,
            StepState::Failed(why) => self.roll_back(format!("the database backup failed: {why}")),
            StepState::Succeeded(report) if !report.verified => self.roll_back(format!(
                "the database backup {} could not be verified",
                report.reference
            )),
            StepState::Succeeded(report) => {
                self.progress.backup = Some(report.clone());
                self.enter(
                    Phase::Migrating,
                    format!(
                        "running jupyterhub upgrade-db with {}",
                        self.plan.target_image
                    ),
                );
                Action::Wait
            }
        }
    }

    fn migrating(&mut self) -> Action {
        let backup_ok = self.progress.backup.as_ref().is_some_and(|b| b.verified);
        if !self.progress.migration_started {
            if !backup_ok {
                return self.roll_back(
                    "no verified backup is recorded; the migration was not started".into(),
                );
            }
            // Recorded before the Job exists: from here on a roll back restores the database.
            self.progress.migration_started = true;
            return Action::Wait;
        }
        if let Some(action) = self.keep_hub_stopped() {
            return action;
        }
        match &self.world.migration {
            StepState::NotStarted | StepState::Running
                if self.timed_out(self.plan.timeouts.migration) =>
            {
                let problem = format!(
                    "the migration did not finish within {}",
                    human(self.plan.timeouts.migration)
                );
                self.roll_back(problem)
            }
            StepState::NotStarted => Action::StartMigration,
            StepState::Running => Action::Wait,
            StepState::Failed(why)
                if self.plan.on_migration_failure == MigrationFailure::FreshDatabase =>
            {
                let why = why.clone();
                self.fresh_database(why)
            }
            StepState::Failed(why) => self.roll_back(format!("the migration failed: {why}")),
            StepState::Succeeded(()) => {
                self.progress.migration_succeeded = true;
                self.progress.to = Some(Target {
                    image: self.plan.target_image.clone(),
                    revision: self.world.migrated_revision.clone(),
                });
                let message = match self.mode() {
                    ImageManagement::Operator => {
                        format!("setting the hub image to {}", self.plan.target_image)
                    }
                    ImageManagement::External => format!(
                        "database migrated; waiting for {} to set the hub image to {}",
                        self.manager(),
                        self.plan.target_image
                    ),
                };
                self.enter(Phase::RollingOut, message);
                Action::Wait
            }
        }
    }

    /// `migration.onFailure: FreshDatabase`: the failed database is moved aside (the verified
    /// backup stays), then the hub rolls out on the target image and makes a new database.
    fn fresh_database(&mut self, why: String) -> Action {
        match &self.world.fresh_database {
            StepState::NotStarted => Action::StartFreshDatabase,
            StepState::Running => {
                self.progress.message = format!(
                    "the migration failed ({why}); moving the failed database aside for a fresh one"
                );
                Action::Wait
            }
            StepState::Failed(error) => self.roll_back(format!(
                "the migration failed: {why}; moving the database aside for a fresh one failed too: {error}"
            )),
            StepState::Succeeded(()) => {
                let backup = self
                    .progress
                    .backup
                    .as_ref()
                    .map(|b| b.reference.clone())
                    .unwrap_or_default();
                let moved = self
                    .world
                    .moved_aside
                    .clone()
                    .unwrap_or_else(|| "the failed database was moved aside".into());
                let message = format!(
                    "the migration failed ({why}); as migration.onFailure FreshDatabase asks, the \
                     hub starts on a new, empty database: {moved}; the verified backup {backup} \
                     is kept"
                );
                self.progress.fresh_database = Some(message.clone());
                self.progress.to = Some(Target {
                    image: self.plan.target_image.clone(),
                    revision: None,
                });
                // The migration step failed; the upgrade goes on without it.
                self.finish_current(Outcome::Failed, &message);
                self.enter(
                    Phase::RollingOut,
                    format!(
                        "setting the hub image to {} on a fresh database",
                        self.plan.target_image
                    ),
                );
                // Said instead of the phase's own Event.
                self.notify(EventKind::Warning, "FreshDatabase", &message);
                Action::Wait
            }
        }
    }

    fn rolling_out(&mut self) -> Action {
        let Some(hub) = &self.world.hub else {
            return self.hub_vanished();
        };
        let Some(from) = self.progress.from.clone() else {
            self.fail_touched("the original image and replicas were not recorded".into());
            return Action::Wait;
        };
        if hub.image != self.plan.target_image {
            if self.timed_out(self.plan.timeouts.rollout) {
                let problem = format!(
                    "the hub image was not set to {} within {}",
                    self.plan.target_image,
                    human(self.plan.timeouts.rollout)
                );
                return self.roll_back(problem);
            }
            return match self.mode() {
                ImageManagement::Operator => Action::SetHubImage {
                    image: self.plan.target_image.clone(),
                },
                ImageManagement::External => Action::Wait,
            };
        }
        if hub.replicas != from.replicas {
            if self.timed_out(self.plan.timeouts.rollout) {
                let problem = format!(
                    "the hub's replicas were not set back to {} within {}",
                    from.replicas,
                    human(self.plan.timeouts.rollout)
                );
                return self.roll_back(problem);
            }
            return Action::ScaleHub {
                replicas: from.replicas,
            };
        }
        self.enter(
            Phase::Verifying,
            format!(
                "waiting for the hub to become Ready on {}",
                self.plan.target_image
            ),
        );
        Action::Wait
    }

    fn verifying(&mut self) -> Action {
        let Some(hub) = &self.world.hub else {
            return self.hub_vanished();
        };
        let wanted = self.progress.from.as_ref().map(|f| f.replicas);
        if hub.image == self.plan.target_image && Some(hub.replicas) == wanted && hub.rolled_out {
            self.progress.hub_ready_at.get_or_insert(self.now);
            let revision = self.progress.to.as_ref().and_then(|t| t.revision.clone());
            let checks = match self.check_hub(hub.replicas, revision.as_deref()) {
                Ok(checks) => checks,
                Err(Unverified::Wrong(problem)) => return self.roll_back(problem),
                Err(Unverified::NotYet(why)) => {
                    if self.timed_out(self.plan.timeouts.verify) {
                        let problem = format!(
                            "the hub is Ready on {} but not verified within {}: {why}",
                            self.plan.target_image,
                            human(self.plan.timeouts.verify)
                        );
                        return self.roll_back(problem);
                    }
                    self.progress.message = format!("verifying the hub: {why}");
                    return Action::Wait;
                }
            };
            self.record_checks(checks);
            let message = match &self.progress.fresh_database {
                None => format!("the hub runs {}", self.plan.target_image),
                Some(_) => format!(
                    "the hub runs {} on a fresh database (migration.onFailure FreshDatabase; \
                     the old database and its backup are kept)",
                    self.plan.target_image
                ),
            };
            self.finish(
                Phase::Succeeded,
                Outcome::Succeeded,
                EventKind::Normal,
                message,
            );
            return Action::Wait;
        }
        if let Some(why) = &hub.stuck {
            let problem = format!("the hub cannot start on {}: {why}", self.plan.target_image);
            return self.roll_back(problem);
        }
        if self.timed_out(self.plan.timeouts.verify) {
            let problem = format!(
                "the hub did not become Ready on {} within {}",
                self.plan.target_image,
                human(self.plan.timeouts.verify)
            );
            return self.roll_back(problem);
        }
        Action::Wait
    }

    fn rolling_back(&mut self) -> Action {
        let Some(hub) = &self.world.hub else {
            return self.hub_vanished();
        };
        let Some(from) = self.progress.from.clone() else {
            self.fail_touched("the original image and replicas were not recorded".into());
            return Action::Wait;
        };
        let needs_restore = self.progress.migration_started && !self.progress.database_restored;
        if self.timed_out(self.plan.timeouts.rollback) {
            let problem = format!(
                "the roll back did not finish within {}",
                human(self.plan.timeouts.rollback)
            );
            let stop = needs_restore && hub.replicas != 0;
            self.fail_touched(problem);
            return if stop {
                Action::ScaleHub { replicas: 0 }
            } else {
                Action::Wait
            };
        }
        if needs_restore {
            if hub.replicas != 0 {
                return Action::ScaleHub { replicas: 0 };
            }
            if hub.pods > 0 {
                self.progress.message = format!("waiting for {} to stop", hub_pods(hub.pods));
                return Action::Wait;
            }
            if self.world.migration == StepState::Running {
                return Action::CancelMigration;
            }
            return match &self.world.restore {
                StepState::NotStarted => Action::StartRestore,
                StepState::Running => Action::Wait,
                StepState::Failed(why) => {
                    // The hub is stopped (above) on the database the migration left, which the
                    // original image may refuse: say how to put the backup back.
                    self.fail_touched(format!(
                        "restoring the database failed: {why}; the hub is left stopped on the \
                         database the migration left: once that is fixed, restore the backup by \
                         hand (`hubgrade db restore --from` the record in status.backup) before \
                         starting the hub"
                    ));
                    Action::Wait
                }
                StepState::Succeeded(()) => {
                    self.progress.database_restored = true;
                    self.progress.message = format!(
                        "database restored; setting the image back to {}",
                        from.image
                    );
                    if let Some(said) = self.world.restored.clone() {
                        // Where the failed database is kept (a server restore keeps it).
                        self.notify(EventKind::Normal, "DatabaseRestored", &said);
                    }
                    Action::Wait
                }
            };
        }
        if hub.image != from.image {
            return match self.mode() {
                ImageManagement::Operator => Action::SetHubImage { image: from.image },
                // Never an image write that the tool would revert: the hub stays stopped on the
                // restored database until the tool puts the original image back.
                ImageManagement::External if hub.replicas != 0 => Action::ScaleHub { replicas: 0 },
                ImageManagement::External => {
                    self.progress.message = format!(
                        "{}waiting for {} to set the hub image back to {} (helm rollback, \
                         `helm upgrade --atomic`, or reverting the change in Git); the hub stays \
                         stopped until then",
                        if self.progress.database_restored {
                            "database restored; "
                        } else {
                            ""
                        },
                        self.manager(),
                        from.image
                    );
                    Action::Wait
                }
            };
        }
        if hub.replicas != from.replicas {
            return Action::ScaleHub {
                replicas: from.replicas,
            };
        }
        if hub.rolled_out {
            self.progress.hub_ready_at.get_or_insert(self.now);
            let checks = match self.check_hub(hub.replicas, None) {
                Ok(checks) => checks,
                Err(Unverified::Wrong(problem)) => {
                    self.fail_touched(format!("the rolled back hub is wrong: {problem}"));
                    return Action::Wait;
                }
                Err(Unverified::NotYet(why)) => {
                    self.progress.message = format!("verifying the rolled back hub: {why}");
                    return Action::Wait;
                }
            };
            self.record_checks(checks);
            let why = self.progress.failure.clone().unwrap_or_default();
            let message = format!("rolled back to {}: {why}", from.image);
            // The roll back itself worked; the upgrade did not.
            self.finish_current(Outcome::Succeeded, "");
            self.finish(
                Phase::RolledBack,
                Outcome::Failed,
                EventKind::Warning,
                message,
            );
            return Action::Wait;
        }
        self.progress.message = format!("waiting for the hub to become Ready on {}", from.image);
        Action::Wait
    }

    /// Verifies the Ready hub (`replicas` of them) through its REST API: `/hub/health` answers
    /// and `/hub/api` reports the JupyterHub release its image ships and its database's
    /// `revision` belongs to (when known). `Ok`: the checks, for the phase's step.
    fn check_hub(&self, replicas: i32, revision: Option<&str>) -> Result<Vec<Check>, Unverified> {
        let check = |name: &str, outcome, message: String| Check {
            name: name.into(),
            outcome,
            message,
        };
        if !self.plan.verify_hub_api {
            return Ok(vec![check(
                "HubApi",
                Outcome::Skipped,
                "verify.hubApi is false: a Ready Deployment is enough".into(),
            )]);
        }
        if replicas == 0 {
            return Ok(vec![check(
                "HubApi",
                Outcome::Skipped,
                "the hub runs no pod (replicas 0)".into(),
            )]);
        }
        let Some(api) = &self.world.hub_api else {
            return Err(Unverified::NotYet(
                "waiting for the hub's API to answer".into(),
            ));
        };
        if let Err(why) = &api.health {
            return Err(Unverified::NotYet(format!("/hub/health: {why}")));
        }
        let version = api
            .version
            .as_ref()
            .map_err(|why| Unverified::NotYet(format!("/hub/api: {why}")))?;
        let mut checks = vec![check(
            "HubHealth",
            Outcome::Succeeded,
            "/hub/health answered".into(),
        )];
        let Some(reported) = &api.version_release else {
            checks.push(check(
                "HubVersion",
                Outcome::Skipped,
                format!(
                    "JupyterHub {version}: a release hubgrade's table does not know, not compared"
                ),
            ));
            return Ok(checks);
        };
        if let Some(shipped) = &api.image_release
            && shipped != reported
        {
            return Err(Unverified::Wrong(format!(
                "the hub reports JupyterHub {version} ({}), but its image ships JupyterHub {}",
                reported.releases, shipped.releases
            )));
        }
        checks.push(check(
            "HubVersion",
            Outcome::Succeeded,
            format!("JupyterHub {version} ({})", reported.releases),
        ));
        match revision {
            Some(revision) if revision == reported.head => checks.push(check(
                "DatabaseRevision",
                Outcome::Succeeded,
                format!("{revision}, the schema of JupyterHub {}", reported.releases),
            )),
            Some(revision) => {
                return Err(Unverified::Wrong(format!(
                    "the hub reports JupyterHub {version}, whose database schema is {}, but the \
                     database was migrated to {revision}",
                    reported.head
                )));
            }
            None => {}
        }
        Ok(checks)
    }

    /// Adds `checks` to the current phase's step.
    fn record_checks(&mut self, checks: Vec<Check>) {
        if let Some(step) = self.progress.steps.last_mut() {
            step.checks = checks;
        }
    }

    /// A failure after the hub was touched: roll back, unless the policy leaves it to a person.
    fn roll_back(&mut self, problem: String) -> Action {
        self.progress.failure = Some(problem.clone());
        // A hub found Ready but wrong is not back for its users: the downtime goes on.
        self.progress.hub_ready_at = None;
        let decided = self.world.deleting || self.world.abort.is_some();
        if self.plan.rollback == RollbackPolicy::Manual && !decided {
            let stop = self.world.hub.as_ref().is_some_and(|h| h.replicas != 0);
            self.fail_touched(format!(
                "{problem}; the roll back policy is Manual, so the hub is left stopped"
            ));
            return if stop {
                Action::ScaleHub { replicas: 0 }
            } else {
                Action::Wait
            };
        }
        self.finish_current(Outcome::Failed, &problem);
        self.enter(Phase::RollingBack, format!("rolling back: {problem}"));
        self.notify(EventKind::Warning, "RollingBack", &problem);
        Action::Wait
    }

    /// Ends the upgrade before anything on the hub changed; the lock is released.
    fn fail_untouched(&mut self, reason: &str, problem: String) -> Action {
        self.progress.failure = Some(problem.clone());
        self.finish(Phase::Failed, Outcome::Failed, EventKind::Warning, problem);
        self.say_why(reason);
        Action::Wait
    }

    /// Names how the upgrade just ended, in the status and in the Event announcing it.
    fn say_why(&mut self, reason: &str) {
        self.progress.reason = reason.to_string();
        if let Some(n) = &mut self.notice {
            n.reason = reason.to_string();
        }
    }

    /// Ends the upgrade after the hub changed and could not be put back. The lock stays, so no
    /// other upgrade acts on the hub until a person looks at it.
    fn fail_touched(&mut self, problem: String) {
        let backup = match &self.progress.backup {
            Some(b) => format!("; the database backup is {} ({})", b.reference, b.method),
            None => String::new(),
        };
        self.progress.failure = Some(problem.clone());
        self.progress.keeps_lock = true;
        let message =
            format!("{problem}{backup}; the hub lock stays until this HubUpgrade is deleted");
        self.finish(Phase::Failed, Outcome::Failed, EventKind::Warning, message);
    }

    /// While the database is backed up or migrated the hub must stay down; an autoscaler or a
    /// self-healing GitOps tool may scale it up again. `Some`: what to do instead of the step.
    fn keep_hub_stopped(&mut self) -> Option<Action> {
        let Some(hub) = &self.world.hub else {
            return Some(self.hub_vanished());
        };
        if hub.replicas != 0 {
            let by = match &hub.scaled_by {
                Some(manager) => format!("by {manager}"),
                None => "by an autoscaler or a GitOps tool?".to_string(),
            };
            let message = format!(
                "the hub Deployment was scaled up to {} ({by}) during {}, while its database \
                 must stay untouched; scaling it to zero again",
                hub.replicas, self.progress.phase
            );
            self.notify(EventKind::Warning, "HubRestarted", &message);
            self.progress.message = message;
            return Some(Action::ScaleHub { replicas: 0 });
        }
        if hub.pods > 0 {
            // A hub pod now could open (and, with --upgrade-db, migrate) the database under
            // the backup or the migration: it goes at once, not after its grace period.
            self.progress.message = format!("stopping {} that came back", hub_pods(hub.pods));
            return Some(Action::DeleteHubPods);
        }
        None
    }

    fn hub_vanished(&mut self) -> Action {
        self.fail_touched("the hub Deployment disappeared during the upgrade".into());
        Action::Wait
    }

    fn timed_out(&self, limit: SignedDuration) -> bool {
        self.progress
            .phase_started_at
            .is_some_and(|start| start.duration_until(self.now) > limit)
    }

    /// Closes the current phase's step (if open) and opens the next phase.
    fn enter(&mut self, phase: Phase, message: impl Into<String>) {
        let message = message.into();
        self.finish_current(Outcome::Succeeded, "");
        self.progress.phase = phase;
        self.progress.phase_started_at = Some(self.now);
        self.progress.steps.push(StepRecord {
            name: phase,
            started_at: self.now,
            finished_at: None,
            outcome: None,
            message: String::new(),
            checks: Vec::new(),
        });
        if !message.is_empty() {
            self.notify(EventKind::Normal, phase.as_str(), &message);
            self.progress.message = message;
        }
    }

    /// Enters a terminal phase.
    fn finish(&mut self, phase: Phase, outcome: Outcome, kind: EventKind, message: String) {
        end(&mut self.progress, phase, outcome, &message, self.now);
        self.notify(kind, phase.as_str(), &message);
    }

    fn finish_current(&mut self, outcome: Outcome, message: &str) {
        close_step(&mut self.progress, outcome, message, self.now);
    }

    fn notify(&mut self, kind: EventKind, reason: &str, message: &str) {
        self.notice = Some(Notice {
            kind,
            reason: reason.to_string(),
            message: message.to_string(),
        });
    }
}

/// The decision for an upgrade whose spec cannot be planned (possible only past the CRD's
/// validation, e.g. under an older CRD): Failed before anything was touched, with the problem
/// in the status and a Warning `InvalidSpec`.
pub fn refuse_spec(progress: &Progress, problem: &str, now: Timestamp) -> Decision {
    let mut next = progress.clone();
    let message = format!("the spec cannot be run: {problem}");
    next.failure = Some(problem.to_string());
    next.reason = "InvalidSpec".to_string();
    end(&mut next, Phase::Failed, Outcome::Failed, &message, now);
    Decision {
        action: Action::Wait,
        progress: next,
        notice: Some(Notice {
            kind: EventKind::Warning,
            reason: "InvalidSpec".to_string(),
            message: problem.to_string(),
        }),
        requeue_after: None,
    }
}

/// Closes the open step and enters the terminal `phase`.
fn end(progress: &mut Progress, phase: Phase, outcome: Outcome, message: &str, now: Timestamp) {
    close_step(progress, outcome, message, now);
    progress.phase = phase;
    progress.phase_started_at = Some(now);
    progress.steps.push(StepRecord {
        name: phase,
        started_at: now,
        finished_at: Some(now),
        outcome: Some(outcome),
        message: message.to_string(),
        checks: Vec::new(),
    });
    progress.message = message.to_string();
}

/// Closes the current phase's step, if it is still open.
fn close_step(progress: &mut Progress, outcome: Outcome, message: &str, now: Timestamp) {
    if let Some(last) = progress.steps.last_mut()
        && last.finished_at.is_none()
    {
        last.finished_at = Some(now);
        last.outcome = Some(outcome);
        if !message.is_empty() {
            last.message = message.to_string();
        }
    }
}

/// `30m`, `1h30m`, `45s`: how a person writes a timeout.
/// "1 hub pod", "2 hub pods".
/// Why a Ready hub is not verified (yet).
enum Unverified {
    /// Not yet: it may still come (the API warming up); the phase's timeout decides.
    NotYet(String),
    /// Wrong: waiting will not change it.
    Wrong(String),
}

/// "1 user server", "3 user servers".
fn user_servers(count: usize) -> String {
    match count {
        1 => "1 user server".into(),
        n => format!("{n} user servers"),
    }
}

/// Up to five names, then how many more.
fn named(servers: &[String]) -> String {
    let mut text = servers
        .iter()
        .take(5)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if servers.len() > 5 {
        text.push_str(&format!(" and {} more", servers.len() - 5));
    }
    text
}

/// What is still active, as a sentence part.
fn still_active(servers: Option<&[String]>) -> String {
    match servers {
        Some(servers) => format!(
            "{} still active ({})",
            user_servers(servers.len()),
            named(servers)
        ),
        None => "the hub's API did not report its active servers".into(),
    }
}

fn hub_pods(count: u32) -> String {
    match count {
        1 => "1 hub pod".to_string(),
        n => format!("{n} hub pods"),
    }
}

fn human(duration: SignedDuration) -> String {
    let secs = duration.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}
