//! The controller: reads an upgrade and the world, asks the state machine for one action,
//! carries it out, records the progress (server-side apply, one field manager) and announces
//! it with an Event. All state lives in the resource, so a restarted operator continues.

pub mod conditions;
mod finalizers;
pub mod leader;
pub mod metrics;
pub mod notify;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action as Requeue, Config as ControllerConfig, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::api::{HubUpgrade, SpecError};
use crate::cluster::cache::{self, Cache, Written};
use crate::cluster::effects::{self, EffectError, EffectInputs};
use crate::cluster::observe::observe;
use crate::cluster::{Owner, Target};
use crate::hub::image::ImagePolicy;
use crate::ledger::writer::LedgerWriter;
use crate::machine::{self, Action, Decision, EventKind, Progress, decide};

pub use metrics::Metrics;

pub use crate::cluster::MANAGER;
/// Holds a deleted HubUpgrade until it has ended (rolled back or finished, if it had stopped
/// the hub) and released the hub lock.
pub const FINALIZER: &str = "hubgrade.io/hub-lock";

pub struct Context {
    pub client: Client,
    /// Who the Events say sent them.
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// Image of the operator itself, run by the backup and restore Jobs (`hubgrade agent`).
    pub agent_image: String,
    /// Secrets to pull it with, in each hub's namespace.
    pub agent_pull_secrets: Vec<String>,
    /// Records every upgrade in the ledger, when there is one.
    pub ledger: Option<LedgerWriter>,
    /// The repositories targets may come from besides the hub's own (`--allow-image-repository`).
    pub image_policy: ImagePolicy,
    /// Sends the upgrades' webhook messages (`spec.notifications.webhook`).
    pub notifier: Option<notify::Notifier>,
    /// The watched copies reconciles read (set by [`run_controller`]; without them, every
    /// read goes to the API server).
    pub cache: OnceLock<Cache>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading the cluster for {upgrade}: {source}")]
    Observe {
        upgrade: String,
        source: kube::Error,
    },
    #[error("{upgrade}: {source}")]
    Effect {
        upgrade: String,
        source: EffectError,
    },
    #[error("recording the status of {upgrade}: {source}")]
    Status {
        upgrade: String,
        source: kube::Error,
    },
    #[error("finalizer of {upgrade}: {message}")]
    Finalizer { upgrade: String, message: String },
}

/// Runs the controller until `shutdown` resolves. `namespace`: watch one namespace, or all;
/// `concurrency`: how many reconciles may run at once.
pub async fn run_controller(
    context: Arc<Context>,
    namespace: Option<String>,
    concurrency: u16,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = context.client.clone();
    let upgrades: Api<HubUpgrade> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    // At most `concurrency` reconciles at once: a fleet's upgrades all woken together would
    // otherwise each hold a connection and their reads at the same moment.
    let (store, upgrades) = cache::watched(upgrades, watcher::Config::default(), cache::upgrade);
    let controller = Controller::for_stream(upgrades, store)
        .with_config(ControllerConfig::default().concurrency(concurrency));
    let (cache, watches) = Cache::watch(&client, namespace.as_deref(), controller.store());
    if context.cache.set(cache).is_err() {
        warn!("the controller runs twice on one context: the second reads the first's copies");
    }
    let cached = Arc::clone(&context);
    controller
        .owns_stream(watches.jobs)
        // A locked hub that changes (scaled back up by Helm or a GitOps tool, its pods gone)
        // wakes the upgrade holding the lock at once, not at its next poll; so does one of
        // its pods, and a pod of hubgrade's Jobs wakes its upgrade.
        .watches_stream(watches.deployments, |hub: Deployment| {
            let (name, _) = crate::cluster::lock::holder(&hub.metadata)?;
            Some(ObjectRef::new(&name).within(&hub.namespace()?))
        })
        .watches_stream(watches.hub_pods, move |pod| {
            cached
                .cache
                .get()
                .map(|cache| cache.lock_holders_of(&pod))
                .unwrap_or_default()
        })
        .watches_stream(watches.agent_pods, |pod| cache::upgrade_of(&pod))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            if let Err(error) = result {
                warn!(%error, "reconcile failed");
            }
        })
        .await;
}

fn label(upgrade: &HubUpgrade) -> String {
    format!(
        "{}/{}",
        upgrade.namespace().unwrap_or_default(),
        upgrade.name_any()
    )
}

async fn reconcile(upgrade: Arc<HubUpgrade>, context: Arc<Context>) -> Result<Requeue, Error> {
    context.metrics.reconciled();
    let deleting = upgrade.metadata.deletion_timestamp.is_some();
    if let Some(ledger) = &context.ledger {
        // Each status the controller sees goes to the ledger, deleted or not.
        ledger.submit(&upgrade, deleting);
    }
    if let Some(uid) = upgrade.metadata.uid.as_deref() {
        let progress = upgrade.status.clone().unwrap_or_default().progress;
        context
            .metrics
            .track(uid, &progress, jiff::Timestamp::now());
    }
    let api: Api<HubUpgrade> = Api::namespaced(
        context.client.clone(),
        &upgrade.namespace().unwrap_or_default(),
    );
    let name = label(&upgrade);
    let finalizer_error = |source: kube::Error| Error::Finalizer {
        upgrade: name.clone(),
        message: source.to_string(),
    };
    let has_finalizer = upgrade.finalizers().iter().any(|f| f == FINALIZER);
    if upgrade.metadata.deletion_timestamp.is_none() {
        if !has_finalizer {
            // Before anything else: from now on a deletion waits for the upgrade to end.
            finalizers::add(&api, &upgrade, FINALIZER)
                .await
                .map_err(finalizer_error)?;
            return Ok(Requeue::requeue(Duration::from_millis(100)));
        }
        return advance(&upgrade, &context).await;
    }
    if !has_finalizer {
        return Ok(Requeue::await_change());
    }
    // Being deleted: an upgrade that stopped the hub first brings it back (or finishes), and
    // only a terminal phase, recorded in status and an Event, lets the object go.
    let phase = upgrade
        .status
        .as_ref()
        .map(|s| s.progress.phase)
        .unwrap_or_default();
    if !phase.is_terminal() {
        return advance(&upgrade, &context).await;
    }
    let owner = Owner::of(&upgrade);
    effects::release_lock(&context.client, &owner, Target::hub_of(&upgrade))
        .await
        .map_err(|source| Error::Effect {
            upgrade: name.clone(),
            source,
        })?;
    effects::delete_unowned(&context.client, &owner)
        .await
        .map_err(|source| Error::Effect {
            upgrade: name.clone(),
            source,
        })?;
    finalizers::remove(&api, &upgrade, FINALIZER)
        .await
        .map_err(finalizer_error)?;
    if let Some(uid) = upgrade.metadata.uid.as_deref() {
        context.metrics.forget(uid, jiff::Timestamp::now());
        context.forget(uid);
    }
    info!(upgrade = %name, %phase, "deleted after the upgrade ended");
    Ok(Requeue::await_change())
}

fn error_policy(upgrade: Arc<HubUpgrade>, error: &Error, context: Arc<Context>) -> Requeue {
    context.metrics.failed();
    warn!(upgrade = %label(&upgrade), %error, "will retry");
    Requeue::requeue(Duration::from_secs(5))
}

/// One step of one upgrade: resolve the target, observe, decide, act, record.
async fn advance(cached: &HubUpgrade, context: &Context) -> Result<Requeue, Error> {
    let name = label(cached);
    let reading = |source| Error::Observe {
        upgrade: name.clone(),
        source,
    };
    let api: Api<HubUpgrade> = Api::namespaced(
        context.client.clone(),
        &cached.namespace().unwrap_or_default(),
    );
    // The freshest status: the machine must see its own last write. The watched copy is when
    // it is the version this operator last read or wrote; otherwise it is read.
    let uid = cached.metadata.uid.clone().unwrap_or_default();
    let upgrade = if context.is_known(&uid, cached.resource_version().as_deref()) {
        cached.clone()
    } else {
        let Some(upgrade) = api.get_opt(&cached.name_any()).await.map_err(&reading)? else {
            return Ok(Requeue::await_change());
        };
        context.know(&upgrade);
        upgrade
    };
    let progress = upgrade.status.clone().unwrap_or_default().progress;
    let now = jiff::Timestamp::now();
    let target = match Target::resolve(&upgrade, &context.agent_image) {
        Ok(target) => Target {
            agent_pull_secrets: context.agent_pull_secrets.clone(),
            image_policy: context.image_policy.clone(),
            ..target
        },
        Err(_) if progress.phase.is_terminal() => return Ok(Requeue::await_change()),
        Err(problem) => {
            return refuse_invalid_spec(context, &upgrade, &progress, problem, now).await;
        }
    };
    let observation = observe(&context.client, context.cache.get(), &target, &progress)
        .await
        .map_err(&reading)?;
    let decision = decide(&target.plan, &progress, &observation.world(now), now);
    info!(upgrade = %name, phase = %progress.phase, action = ?decision.action, "step");
    let inputs = EffectInputs {
        client: &context.client,
        target: &target,
        progress: &progress,
        snapshot: &observation.snapshot,
    };
    if let (Some(cache), Some(what)) = (context.cache.get(), written_by(&decision.action)) {
        cache.wrote(&uid, what);
    }
    let carried_out = effects::carry_out(&decision.action, &inputs).await;
    if let (Some(cache), Some(what), Ok(Some(version))) = (
        context.cache.get(),
        written_by(&decision.action),
        &carried_out,
    ) {
        cache.wrote_at(&uid, what, version.clone());
    }
    if let Err(source) = carried_out {
        if source.is_conflict() {
            // Someone changed the object between our read and our write: look again.
            return Ok(Requeue::requeue(Duration::from_millis(500)));
        }
        publish(
            context,
            &upgrade,
            EventKind::Warning,
            "ActionFailed",
            &source.to_string(),
        )
        .await;
        return Err(Error::Effect {
            upgrade: name,
            source,
        });
    }
    context.metrics.acted(&decision.action);
    record(context, &upgrade, &progress, decision).await
}

/// After the action: writes the decision's progress (if it changed), announces its notice and
/// says when to look again.
async fn record(
    context: &Context,
    upgrade: &HubUpgrade,
    progress: &Progress,
    decision: Decision,
) -> Result<Requeue, Error> {
    let name = label(upgrade);
    let next = &decision.progress;
    if next != progress {
        let written = write_status(&context.client, upgrade, next)
            .await
            .map_err(|source| Error::Status {
                upgrade: name.clone(),
                source,
            })?;
        context.know(&written);
    }
    if let Some(notice) = &decision.notice {
        publish(
            context,
            upgrade,
            notice.kind,
            &notice.reason,
            &notice.message,
        )
        .await;
    }
    if let Some(notifier) = &context.notifier {
        notifier.notify(upgrade, next, notify::moments(progress, next));
    }
    context
        .metrics
        .stepped(progress, next, jiff::Timestamp::now());
    if next.phase != progress.phase {
        info!(upgrade = %name, from = %progress.phase, to = %next.phase, "phase changed");
        context.metrics.entered(next.phase);
    }
    Ok(match decision.requeue_after {
        // A changed status or action is followed up at once; a wait polls.
        _ if next.phase != progress.phase || decision.action != Action::Wait => {
            Requeue::requeue(Duration::from_millis(200))
        }
        Some(after) => Requeue::requeue(Duration::from_millis(after.as_millis().max(0) as u64)),
        None => Requeue::await_change(),
    })
}

/// A spec that cannot be planned (only possible past the CRD's validation, e.g. an older CRD
/// installed) ends the upgrade `Failed`, announced with an `InvalidSpec` Event.
async fn refuse_invalid_spec(
    context: &Context,
    upgrade: &HubUpgrade,
    progress: &Progress,
    problem: SpecError,
    now: jiff::Timestamp,
) -> Result<Requeue, Error> {
    let decision = machine::refuse_spec(progress, &problem.to_string(), now);
    record(context, upgrade, progress, decision).await?;
    // Nothing will change until the spec does.
    Ok(Requeue::await_change())
}

/// Writes the whole status with server-side apply; the resourceVersion makes a write based on
/// a stale read fail instead of overwriting newer progress.
async fn write_status(
    client: &Client,
    upgrade: &HubUpgrade,
    progress: &Progress,
) -> Result<HubUpgrade, kube::Error> {
    let api: Api<HubUpgrade> =
        Api::namespaced(client.clone(), &upgrade.namespace().unwrap_or_default());
    let previous = upgrade.status.clone().unwrap_or_default();
    let status = conditions::status(
        progress,
        upgrade.metadata.generation,
        &previous,
        jiff::Timestamp::now(),
    );
    let patch = json!({
        "apiVersion": "hubgrade.io/v1alpha1",
        "kind": "HubUpgrade",
        "metadata": {"name": upgrade.name_any(), "resourceVersion": upgrade.resource_version()},
        "status": status,
    });
    api.patch_status(
        &upgrade.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
}

/// What `action` writes that the watched copies show only an event later.
fn written_by(action: &Action) -> Option<Written> {
    match action {
        Action::AcquireLock
        | Action::ReleaseLock
        | Action::ScaleHub { .. }
        | Action::SetHubImage { .. }
        | Action::DeleteHubPods => Some(Written::Hub),
        Action::StartRehearsal
        | Action::StartBackup
        | Action::StartMigration
        | Action::CancelMigration
        | Action::StartRestore
        | Action::StartFreshDatabase => Some(Written::Jobs),
        Action::Wait | Action::StopServers { .. } | Action::BackUpConfig => None,
    }
}

impl Context {
    /// Whether `version` is the upgrade's version this operator last read or wrote.
    fn is_known(&self, uid: &str, version: Option<&str>) -> bool {
        self.cache
            .get()
            .is_some_and(|cache| cache.is_fresh(uid, version))
    }

    fn know(&self, upgrade: &HubUpgrade) {
        if let Some(cache) = self.cache.get() {
            cache.read(upgrade);
        }
    }

    fn forget(&self, uid: &str) {
        if let Some(cache) = self.cache.get() {
            cache.forget(uid);
        }
    }
}

async fn publish(
    context: &Context,
    upgrade: &HubUpgrade,
    kind: EventKind,
    reason: &str,
    message: &str,
) {
    let event = Event {
        type_: match kind {
            EventKind::Normal => EventType::Normal,
            EventKind::Warning => EventType::Warning,
        },
        reason: reason.to_string(),
        // The Events API caps notes at 1 kB.
        note: Some(message.chars().take(1000).collect()),
        action: "Upgrade".into(),
        secondary: None,
    };
    // A Recorder of its own for each Event: one kept for the process keeps every Event it sent
    // for 6 minutes (about 4,000 of them, 9 MiB, while a fleet of 500 upgrades), to make a
    // repeat of one reason into a series, and a series keeps the first Event's note. Each of
    // our Events is one step of one upgrade, with its own message.
    let recorder = Recorder::new(context.client.clone(), context.reporter.clone());
    if let Err(error) = recorder.publish(&event, &upgrade.object_ref(&())).await {
        warn!(upgrade = %label(upgrade), %error, "could not publish an Event");
    }
}

pub fn reporter(instance: Option<String>) -> Reporter {
    Reporter {
        controller: "hubgrade".into(),
        instance,
    }
}

/// One reconcile against a mocked API server: the status write, the Event, and what a
/// failed action leaves unrecorded.
#[cfg(test)]
mod tests;
