//! Reading the cluster into a [`Snapshot`] (reads only); [`super::interpret`] turns it into
//! the state machine's world.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod, Secret};
use kube::Client;
use kube::api::{Api, ListParams};

use super::cache::{Cache, ChartFacts, Written};
use super::hub_api::{answers, api_root, missing_token, secret_value};
use super::interpret::{STUCK_AFTER, Snapshot};
use super::lock;
use super::owned::{JobStep, UPGRADE_UID_LABEL, owned_name};
use super::target::Target;
use crate::api::{BackupMethod, DatabaseType, HubUpgrade};
use crate::db::url::DatabaseUrl;
use crate::hub::api::HubApi;
use crate::hub::image::{HUB_ANNOTATION, looks_like_a_hub};
use crate::hub::revision::check_image_upgrade;
use crate::hub::{
    HubDatabase, HubLayout, LayoutError, SecretKeys, ServerDatabase, UrlSource, VALUES_KEY,
    chart_base_url, chart_database, chart_url_from_secrets, merge_values, values_secrets,
};
use crate::machine::{LockState, MigrationFailure, Phase, Preflight, Progress, World};

/// What one reconcile saw: the snapshot, and the Preflight checks while in Preflight.
pub struct Observation {
    pub snapshot: Snapshot,
    pub preflight: Option<Preflight>,
}

impl Observation {
    /// The machine's view: the snapshot interpreted, with the Preflight checks.
    pub fn world(&self, now: Timestamp) -> World {
        World {
            preflight: self.preflight.clone(),
            ..self.snapshot.world(now)
        }
    }
}

/// What one reconcile of the operator sees; `cache`: its watched copies, read where they
/// serve (see [`Cache`]), the API server otherwise.
pub async fn observe(
    client: &Client,
    cache: Option<&Cache>,
    target: &Target,
    progress: &Progress,
) -> Result<Observation, kube::Error> {
    observe_with(client, cache, target, progress, true).await
}

/// [`observe`]; `ask_server`: in Preflight, connect to a hub's database server (the operator
/// does; `hubgrade plan`, which may run where the server cannot be reached, does not).
pub async fn observe_with(
    client: &Client,
    cache: Option<&Cache>,
    target: &Target,
    progress: &Progress,
    ask_server: bool,
) -> Result<Observation, kube::Error> {
    let phase = progress.phase;
    if phase.is_terminal() {
        return observe_ended(client, cache, target).await;
    }
    let cache = match cache {
        Some(cache) if cache.ready().await => Some(cache),
        _ => None,
    };
    let namespace = target.owner.namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let uid = target.owner.uid.as_str();
    // What this upgrade just wrote is read from the API server until the copy shows it.
    let (deployment, hub_settled) = hub_deployment(client, cache, target).await?;
    let hub_settled = cache.filter(|_| hub_settled);
    // The chart values, when the spec leaves the database to detection: they say whether the
    // database is a file or on a server. (The Secrets read here are not read again.)
    let mut facts = None;
    let mut read = BTreeMap::new();
    let layout = match &deployment {
        None => None,
        Some(d) => {
            if target.layout_hints.database.kind == DatabaseType::Auto {
                facts = Some(chart_facts(client, cache, target, d, phase, &mut read).await?);
            }
            let chart = facts.as_ref().and_then(|f: &ChartFacts| f.database.clone());
            Some(target.layout_with_chart(d, chart))
        }
    };
    let mut snapshot = owner_snapshot(target);
    if let Some(deployment) = &deployment {
        snapshot.hub_pods = match hub_settled.and_then(|cache| cache.hub_pods(deployment)) {
            Some(cached) => cached,
            None => hub_pods(&pods, deployment).await?,
        };
        snapshot.lock = observe_lock(client, cache, target, deployment).await?;
    }
    let snapshot_backup = target.backup_method == BackupMethod::VolumeSnapshot;
    if let Some(Ok(layout)) = &layout
        && let Some(file) = layout.sqlite()
    {
        let restoring = snapshot_backup && phase == Phase::RollingBack;
        // In Rehearsal, until the rehearsal's Job is made (see below).
        if matches!(phase, Phase::Pending | Phase::Preflight) || restoring {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
            snapshot.claim = claims.get_opt(&file.volume_claim).await?;
        }
        if snapshot_backup {
            let name = owned_name(&target.owner, "db");
            if phase == Phase::BackingUp {
                snapshot.volume_snapshot =
                    super::snapshot::get_snapshot(client, namespace, &name).await?;
            }
            snapshot.snapshot_backup = Some(name);
        }
    }
    // Whether the cluster serves VolumeSnapshots to this operator, when the spec asks for one.
    let mut snapshot_api = None;
    if snapshot_backup && matches!(phase, Phase::Pending | Phase::Preflight) {
        snapshot_api = Some(super::snapshot::api_problem(client, namespace).await);
    }
    // The Secret holding a server database's URL, when the spec names one.
    let mut url_secret = None;
    if matches!(phase, Phase::Pending | Phase::Preflight)
        && let Some(Ok(layout)) = &layout
        && let Some(UrlSource::Secret { name, .. }) = layout.server().map(|s| &s.url)
    {
        let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
        url_secret = Some(secrets.get_opt(name).await?);
    }
    // A server database is asked, in Preflight, whether it answers and who is connected.
    let mut server_problems = Vec::new();
    if phase == Phase::Preflight
        && ask_server
        && let Some(Ok(layout)) = &layout
        && let Some(server) = layout.server()
    {
        server_problems.extend(check_server(client, namespace, server, &snapshot.hub_pods).await?);
        if target.backup_method == BackupMethod::Dump
            && let Some(claim) = &target.dump_claim
        {
            let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
            if claims.get_opt(claim).await?.is_none() {
                server_problems.push(format!(
                    "spec.backup.dumpClaim: the claim {namespace}/{claim} does not exist (omit it and the operator makes one)"
                ));
            }
        }
    }
    // The configuration backup must fit a Secret: found out before the hub goes down.
    if phase == Phase::Preflight
        && let Some(Ok(layout)) = &layout
    {
        match super::configuration::read_with(client, namespace, layout, &read).await {
            Ok(configuration) => server_problems.extend(configuration.too_large()),
            Err((_, error)) => return Err(error),
        }
    }
    // The hub's REST API: in Preflight, whether it answers (and takes the drain's token);
    // while Draining, the active servers; once the hub is back, its health and version.
    let plan = &target.plan;
    let api_phase = match phase {
        Phase::Preflight => ask_server && (plan.drain.is_some() || plan.verify_hub_api),
        Phase::Draining => plan.drain.is_some(),
        Phase::Verifying | Phase::RollingBack => plan.verify_hub_api,
        _ => false,
    };
    if api_phase && let (Some(deployment), Some(Ok(layout))) = (&deployment, &layout) {
        // The base URL is read from the chart values only when a hub pod is there to ask.
        if api_root(deployment, &snapshot.hub_pods, layout, "/").is_some() {
            let base_url = match facts {
                Some(facts) => facts.base_url,
                None => {
                    chart_facts(client, cache, target, deployment, phase, &mut read)
                        .await?
                        .base_url
                }
            };
            snapshot.hub_api_root = api_root(deployment, &snapshot.hub_pods, layout, &base_url);
        }
        // The drain's token, only where the drain uses it.
        let token = match (&target.drain_token, phase) {
            (Some(key), Phase::Preflight | Phase::Draining) => {
                secret_value(client, namespace, key).await?
            }
            _ => None,
        };
        match (phase, &snapshot.hub_api_root) {
            (Phase::Preflight, root) => {
                server_problems.extend(api_problems(target, root.as_ref(), token).await);
            }
            (Phase::Draining, Some(root)) => {
                let api = HubApi::new(root.clone(), token);
                snapshot.active_servers = Some(api.active_servers().await);
            }
            (Phase::Draining, None) => {
                snapshot.active_servers = Some(Err("no hub pod is Ready".into()));
            }
            (_, Some(root)) => {
                let api = HubApi::new(root.clone(), None);
                snapshot.hub_api = Some(answers(&api, &layout.image).await);
            }
            (_, None) => {}
        }
    }
    let preflight = matches!(phase, Phase::Pending | Phase::Preflight).then(|| {
        let mut checked = preflight(
            target,
            deployment.as_ref(),
            layout.as_ref(),
            snapshot.claim.as_ref(),
            url_secret.as_ref().map(Option::as_ref),
            snapshot_api.flatten(),
        );
        checked.problems.extend(server_problems);
        checked
    });
    let jobs: Api<Job> = Api::namespaced(client.clone(), namespace);
    let mut jobs_found = BTreeMap::new();
    // This upgrade's Jobs in one read (they carry its uid), each step's found by its name.
    let jobs_settled = cache.filter(|cache| !cache.jobs_unsettled(uid, namespace));
    let copied = jobs_settled.and_then(|cache| cache.jobs_of(namespace, uid).ok());
    let mut listed = match copied {
        Some(copied) => copied,
        None => {
            let live = jobs
                .list(&ListParams::default().labels(&format!("{UPGRADE_UID_LABEL}={uid}")))
                .await?
                .items;
            if let Some(cache) = cache
                && cache
                    .jobs_of(namespace, uid)
                    .is_ok_and(|copied| versions(&copied) == versions(&live))
            {
                cache.shows(uid, Written::Jobs);
            }
            live
        }
    };
    for &step in JobStep::ALL {
        let name = owned_name(&target.owner, step.as_str());
        let Some(at) = listed
            .iter()
            .position(|job| job.metadata.name.as_deref() == Some(name.as_str()))
        else {
            continue;
        };
        let job = listed.swap_remove(at);
        let finished_ok = job_holds(&job, &["Complete"]);
        let finished = job_holds(&job, &["Complete", "Failed"]);
        // A finished Job's pods are only read for a report (backup, migration, restore) or a
        // failure; the copy serves once it has seen the pod finish too.
        let cached = cache.and_then(|cache| cache.job_pods(namespace, &name).ok());
        let job_pods = match cached {
            _ if finished_ok && step == JobStep::Rehearsal => Vec::new(),
            Some(cached) if !finished || cached.iter().any(super::interpret::finished) => cached,
            _ => {
                pods.list(&ListParams::default().labels(&format!("job-name={name}")))
                    .await?
                    .items
            }
        };
        jobs_found.insert(step, (job, job_pods));
    }
    // A Job that has no pod yet may be unable to make one: only Events say why.
    // (Read only once such a Job or pod has tried for long enough to be judged stuck.)
    let podless = jobs_found.values().any(|(job, pods)| {
        pods.is_empty()
            && !job_holds(job, &["Complete", "Failed"])
            && trying_for_long(&job.metadata)
    });
    if podless {
        let events: Api<Event> = Api::namespaced(client.clone(), namespace);
        let warnings = ListParams::default().fields("type=Warning,involvedObject.kind=Job");
        snapshot.job_events = events.list(&warnings).await?.items;
    }
    snapshot.jobs = jobs_found;
    // Volume trouble shows only in Events: read them for pods that are still being created.
    let creating = snapshot
        .hub_pods
        .iter()
        .chain(snapshot.jobs.values().flat_map(|(_, p)| p.iter()))
        .any(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending")
                && trying_for_long(&p.metadata)
        });
    if creating {
        let events: Api<Event> = Api::namespaced(client.clone(), namespace);
        let warnings = ListParams::default().fields("type=Warning,involvedObject.kind=Pod");
        snapshot.pod_events = events.list(&warnings).await?.items;
    }
    // The claim decides whether the rehearsal may run beside the hub: read until it does.
    if phase == Phase::Rehearsal
        && !snapshot.jobs.contains_key(&JobStep::Rehearsal)
        && let Some(Ok(layout)) = &layout
        && let Some(file) = layout.sqlite()
    {
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
        snapshot.claim = claims.get_opt(&file.volume_claim).await?;
    }
    snapshot.deployment = deployment;
    snapshot.layout = layout;
    Ok(Observation {
        snapshot,
        preflight,
    })
}

/// A snapshot of what the upgrade itself says (being deleted, abort, approval), before
/// anything is read.
fn owner_snapshot(target: &Target) -> Snapshot {
    Snapshot {
        deleting: target.owner.deleting,
        abort: target.owner.abort.clone(),
        approved: target.owner.approved.clone(),
        ..Snapshot::default()
    }
}

/// The hub Deployment, from the copy unless the copy may not show yet what this upgrade just
/// wrote to it: then from the API server, and a copy found at the version read shows it. With
/// whether the copy showed it before this read (and so shows the hub's pods too).
async fn hub_deployment(
    client: &Client,
    cache: Option<&Cache>,
    target: &Target,
) -> Result<(Option<Deployment>, bool), kube::Error> {
    let namespace = target.owner.namespace.as_str();
    let uid = target.owner.uid.as_str();
    if let Some(cache) = cache
        && !cache.hub_unsettled(uid, namespace, &target.hub)
        && let Ok(copied) = cache.deployment(namespace, &target.hub)
    {
        return Ok((copied, true));
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let live = deployments.get_opt(&target.hub).await?;
    if let Some(cache) = cache
        && cache.deployment_version(namespace, &target.hub)
            == live
                .as_ref()
                .and_then(|d| d.metadata.resource_version.clone())
    {
        cache.shows(uid, Written::Hub);
    }
    Ok((live, false))
}

/// What an ended upgrade reads: all it may still do is release the hub's lock (see the
/// machine's terminal phases), so the hub Deployment, for its lock annotations, is enough. It
/// waits only for the Deployments' first list, not the Jobs' and pods': an operator starting
/// with many ended upgrades gets through them without those lists.
async fn observe_ended(
    client: &Client,
    cache: Option<&Cache>,
    target: &Target,
) -> Result<Observation, kube::Error> {
    let cache = match cache {
        Some(cache) if cache.deployments_ready().await => Some(cache),
        _ => None,
    };
    let (deployment, _) = hub_deployment(client, cache, target).await?;
    let mut snapshot = owner_snapshot(target);
    if let Some(deployment) = &deployment {
        snapshot.lock = observe_lock(client, cache, target, deployment).await?;
    }
    snapshot.deployment = deployment;
    Ok(Observation {
        snapshot,
        preflight: None,
    })
}

/// Preflight's questions to the hub's API: with a drain, the token is there and the hub takes
/// it for listing servers; when verifying through the API, the hub answers the operator now
/// (so a NetworkPolicy that keeps the operator out is found before the hub goes down).
async fn api_problems(
    target: &Target,
    root: Option<&url::Url>,
    token: Option<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let namespace = &target.owner.namespace;
    if let Some(key) = &target.drain_token
        && token.is_none()
    {
        problems.push(missing_token(namespace, key));
    }
    let Some(root) = root else {
        if target.plan.drain.is_some() {
            problems.push(
                "spec.drain asks the hub's API for its active servers, but no hub pod is Ready"
                    .into(),
            );
        }
        // A hub at zero replicas is verified by its Deployment alone.
        return problems;
    };
    let has_token = token.is_some();
    let api = HubApi::new(root.clone(), token);
    if target.plan.verify_hub_api
        && let Err(why) = healthy(&api).await
    {
        problems.push(format!(
            "the hub's API does not answer the operator ({why}); the upgraded hub is verified \
             through it: let the operator in (with z2jh, hub.networkPolicy.ingress) or set \
             spec.verify.hubApi to false"
        ));
        return problems;
    }
    if target.plan.drain.is_some()
        && has_token
        && let Err(why) = api.active_servers().await
    {
        problems.push(format!(
            "spec.drain: the hub's API refuses to list its active servers: {why}"
        ));
    }
    problems
}

/// Whether the hub answers `/hub/health`, asked up to three times a second apart: a hub pod
/// that just became Ready may not listen yet.
async fn healthy(api: &HubApi) -> Result<(), String> {
    let mut last = Ok(());
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
        last = api.health().await;
        if last.is_ok() {
            break;
        }
    }
    last
}

/// The hub's z2jh chart values: the hub Secret's `values.yaml`, with `hub.existingSecret`'s
/// merged over it as z2jh does; `None` when there are none. They hold secrets: callers keep
/// only what they need. The Secrets read go into `read`, by name.
async fn values_text(
    client: &Client,
    target: &Target,
    deployment: &Deployment,
    read: &mut BTreeMap<String, Secret>,
) -> Result<Option<String>, kube::Error> {
    let names = values_secrets(deployment, target.layout_hints.container.as_deref());
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &target.owner.namespace);
    let mut texts = Vec::new();
    for name in &names {
        let Some(secret) = secrets.get_opt(name).await? else {
            continue;
        };
        let values = secret
            .data
            .as_ref()
            .and_then(|data| data.get(VALUES_KEY))
            .and_then(|bytes| String::from_utf8(bytes.0.clone()).ok());
        texts.extend(values);
        read.insert(name.clone(), secret);
    }
    if texts.is_empty() {
        return Ok(None);
    }
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    Ok(Some(merge_values(&texts)))
}

/// The chart facts of the hub: read from its values in Pending and Preflight (and whenever
/// they were not kept, e.g. after a restart of the operator), then the kept ones.
async fn chart_facts(
    client: &Client,
    cache: Option<&Cache>,
    target: &Target,
    deployment: &Deployment,
    phase: Phase,
    read: &mut BTreeMap<String, Secret>,
) -> Result<ChartFacts, kube::Error> {
    let uid = target.owner.uid.as_str();
    let settled = !matches!(phase, Phase::Pending | Phase::Preflight);
    if settled && let Some(facts) = cache.and_then(|cache| cache.chart(uid)) {
        return Ok(facts);
    }
    let values = values_text(client, target, deployment, read).await?;
    let facts = ChartFacts {
        database: values.as_deref().and_then(chart_database),
        base_url: chart_base_url(values.as_deref().unwrap_or_default()),
    };
    if let Some(cache) = cache {
        cache.keep_chart(uid, facts.clone());
    }
    Ok(facts)
}

/// Whether an object was made at least [`STUCK_AFTER`] ago: before that, nothing it does is
/// judged stuck, so no Event about it is read.
fn trying_for_long(metadata: &kube::api::ObjectMeta) -> bool {
    metadata
        .creation_timestamp
        .as_ref()
        .is_some_and(|created| created.0.duration_until(Timestamp::now()) >= STUCK_AFTER)
}

/// The names and resourceVersions of `jobs`, to compare a copy with a read.
fn versions(jobs: &[Job]) -> BTreeMap<String, String> {
    jobs.iter()
        .map(|job| {
            (
                job.metadata.name.clone().unwrap_or_default(),
                job.metadata.resource_version.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// Whether one of the Job's conditions named `kinds` holds.
fn job_holds(job: &Job, kinds: &[&str]) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| kinds.contains(&c.type_.as_str()) && c.status == "True")
        })
}

/// The pods the hub Deployment's selector selects.
async fn hub_pods(pods: &Api<Pod>, deployment: &Deployment) -> Result<Vec<Pod>, kube::Error> {
    let selector = deployment
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone())
        .unwrap_or_default()
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if selector.is_empty() {
        return Ok(Vec::new());
    }
    Ok(pods
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

async fn observe_lock(
    client: &Client,
    cache: Option<&Cache>,
    target: &Target,
    deployment: &Deployment,
) -> Result<LockState, kube::Error> {
    let Some((name, uid)) = lock::holder(&deployment.metadata) else {
        return Ok(LockState::Free);
    };
    if uid == target.owner.uid {
        return Ok(LockState::HeldBySelf);
    }
    let namespace = target.owner.namespace.as_str();
    // A lock whose holder no longer exists is stale (deleted without its finalizer running).
    // The copy serves when it has the holder; a holder it lacks is asked for, since taking
    // a lock whose holder still exists would let two upgrades work on one hub.
    let holder = match cache.and_then(|cache| cache.upgrade(namespace, &name)) {
        Some(holder) => Some(holder),
        None => {
            let upgrades: Api<HubUpgrade> = Api::namespaced(client.clone(), namespace);
            upgrades.get_opt(&name).await?
        }
    };
    match holder {
        Some(holder) if holder.metadata.uid.as_deref() == Some(uid.as_str()) => {
            Ok(LockState::HeldBy(format!("{namespace}/{name}")))
        }
        _ => Ok(LockState::Free),
    }
}

/// The read-only checks, on what was read (pure).
fn preflight(
    target: &Target,
    deployment: Option<&Deployment>,
    layout: Option<&Result<HubLayout, LayoutError>>,
    claim: Option<&PersistentVolumeClaim>,
    url_secret: Option<Option<&Secret>>,
    snapshot_api: Option<String>,
) -> Preflight {
    let mut problems = Vec::new();
    let (namespace, hub) = (&target.owner.namespace, &target.hub);
    if let Some(deployment) = deployment
        && !looks_like_a_hub(deployment)
    {
        problems.push(format!(
            "the Deployment {namespace}/{hub} does not look like a JupyterHub hub (no z2jh \
             label component: hub); if it is one, annotate it {HUB_ANNOTATION}: \"true\""
        ));
    }
    match (deployment, layout) {
        (None, _) | (_, None) => problems.push(format!(
            "the hub Deployment {namespace}/{hub} does not exist; set spec.hub.deployment to the hub's Deployment"
        )),
        (Some(_), Some(Err(error))) => problems.push(error.to_string()),
        (Some(_), Some(Ok(layout))) => {
            match &layout.database {
                HubDatabase::Sqlite(file) => {
                    if let Some(problem) = claim_problem(namespace, file, claim) {
                        problems.push(problem);
                    }
                }
                HubDatabase::Server(server) => {
                    if let (UrlSource::Secret { name, key }, Some(secret)) = (&server.url, url_secret)
                    {
                        let has_key = secret.is_some_and(|s| {
                            s.data.as_ref().is_some_and(|d| d.contains_key(key))
                                || s.string_data.as_ref().is_some_and(|d| d.contains_key(key))
                        });
                        if !has_key {
                            problems.push(format!(
                                "spec.database.urlSecret: the Secret {namespace}/{name} has no key {key:?} (or does not exist)"
                            ));
                        }
                    }
                }
            }
            if let Some(problem) = backup_method_problem(target.backup_method, &layout.database) {
                problems.push(problem);
            }
            problems.extend(snapshot_api);
            if let (Some(server), MigrationFailure::FreshDatabase) =
                (layout.server(), target.plan.on_migration_failure)
            {
                problems.push(format!(
                    "migration.onFailure FreshDatabase is for SQLite hubs; this hub's database is {}: use RollBack",
                    server.kind
                ));
            }
            if let Err(problem) = check_image_upgrade(&layout.image, &target.plan.target_image) {
                problems.push(problem.to_string());
            }
            if let Err(problem) = target
                .image_policy
                .check(&layout.image, &target.plan.target_image)
            {
                problems.push(problem);
            }
        }
    }
    Preflight { problems }
}

/// How long the Preflight waits for a database server to answer.
const SERVER_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether the hub's server database answers, and who besides the hub is connected to it (the
/// clone backup, once the hub is stopped, needs the database to itself). The URL is read from
/// the hub Secret (or the spec's Secret) and used only to connect: the messages show it
/// without its password. Clients are the hub's when they connect from its pods' addresses or
/// their nodes' (a server outside the cluster may see the node's address).
async fn check_server(
    client: &Client,
    namespace: &str,
    server: &ServerDatabase,
    hub_pods: &[Pod],
) -> Result<Option<String>, kube::Error> {
    let url = match server_url(client, namespace, server).await? {
        // A missing Secret or key is reported by the checks on what was read.
        None => return Ok(None),
        Some(Err(problem)) => return Ok(Some(problem)),
        Some(Ok(url)) => url,
    };
    let kind = server.kind;
    let clients = match tokio::time::timeout(SERVER_CHECK_TIMEOUT, server_clients(&url)).await {
        Err(_) => {
            return Ok(Some(format!(
                "the hub's {kind} database {url} did not answer within {}s",
                SERVER_CHECK_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(problem)) => {
            return Ok(Some(format!(
                "the hub's {kind} database does not answer: {problem}"
            )));
        }
        Ok(Ok(clients)) => clients,
    };
    let hub_addresses: Vec<&str> = hub_pods
        .iter()
        .filter_map(|p| p.status.as_ref())
        .flat_map(|s| [s.pod_ip.as_deref(), s.host_ip.as_deref()])
        .flatten()
        .collect();
    let others: Vec<String> = clients
        .iter()
        .filter(|c| {
            c.address
                .as_deref()
                .is_none_or(|a| !hub_addresses.contains(&a))
        })
        .map(|c| {
            let address = c.address.as_deref().unwrap_or("a local socket");
            match c.application.is_empty() {
                true => address.to_string(),
                false => format!("{address} ({})", c.application),
            }
        })
        .collect();
    if others.is_empty() {
        return Ok(None);
    }
    Ok(Some(format!(
        "besides the hub, {} connected to the hub's {kind} database {url}: {}; the backup (a \
         clone once the hub is stopped) needs the database to itself: stop them first",
        match others.len() {
            1 => "1 client is".to_string(),
            n => format!("{n} clients are"),
        },
        others.join(", ")
    )))
}

/// The URL (password included: never print it) of a hub's server database, read from the hub
/// Secret's values (as z2jh's configuration reads them) or the spec's Secret. `None`: the
/// Secret or its key is missing; `Some(Err)`: what is wrong with what it holds.
pub(super) async fn server_url(
    client: &Client,
    namespace: &str,
    server: &ServerDatabase,
) -> Result<Option<Result<DatabaseUrl, String>>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    // The Secrets to read, the one whose keys win first (z2jh: `hub.existingSecret`).
    let (names, key) = match &server.url {
        UrlSource::Secret { name, key } => (vec![name], Some(key)),
        UrlSource::ChartValues {
            secret, existing, ..
        } => (
            existing
                .iter()
                .map(|(name, _)| name)
                .chain([secret])
                .collect(),
            None,
        ),
    };
    let mut found = Vec::new();
    for name in names {
        let data = secrets.get_opt(name).await?.and_then(|s| s.data);
        found.push(data.unwrap_or_default());
    }
    let readers: Vec<_> = found
        .iter()
        .map(|data| {
            move |key: &str| {
                data.get(key)
                    .and_then(|v| String::from_utf8(v.0.clone()).ok())
            }
        })
        .collect();
    let readers: Vec<SecretKeys<'_>> = readers.iter().map(|r| r as SecretKeys<'_>).collect();
    let text = match key {
        Some(key) => readers[0](key).map(Ok),
        None => chart_url_from_secrets(&readers)
            .map(|url| url.map_err(|problem| format!("the hub's database: {problem}"))),
    };
    Ok(text.map(|text| {
        DatabaseUrl::parse(text?.trim())
            .map_err(|problem| format!("the hub's database URL: {problem}"))
    }))
}

/// The clients of the database `url` names; errors in words, without the password.
async fn server_clients(url: &DatabaseUrl) -> Result<Vec<crate::db::server::Client>, String> {
    crate::db::server::clients(url)
        .await
        .map_err(|e| e.to_string())
}

/// What is wrong with the claim of an SQLite hub, if anything.
fn claim_problem(
    namespace: &str,
    file: &crate::hub::SqliteFile,
    claim: Option<&PersistentVolumeClaim>,
) -> Option<String> {
    let Some(claim) = claim else {
        return Some(format!(
            "the hub's database volume claim {namespace}/{} does not exist",
            file.volume_claim
        ));
    };
    let phase = claim
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default();
    (phase != "Bound").then(|| {
        format!(
            "the hub's database volume claim {namespace}/{} is {phase}, not Bound",
            file.volume_claim
        )
    })
}

/// Whether the operator runs `method` for this database.
fn backup_method_problem(method: BackupMethod, database: &HubDatabase) -> Option<String> {
    match (database, method) {
        (
            HubDatabase::Sqlite(_),
            BackupMethod::Auto | BackupMethod::File | BackupMethod::VolumeSnapshot,
        ) => None,
        (HubDatabase::Server(_), BackupMethod::Auto | BackupMethod::Clone | BackupMethod::Dump) => {
            None
        }
        (HubDatabase::Sqlite(_), method) => Some(format!(
            "spec.backup.method {method} is not run by the operator for an SQLite hub yet; use File or Auto"
        )),
        (HubDatabase::Server(server), method) => Some(format!(
            "spec.backup.method {method} is for SQLite hubs; this hub's database is {}: use Clone, Dump or Auto",
            server.kind
        )),
    }
}

#[cfg(test)]
mod tests {
    use jiff::{SignedDuration, Timestamp};
    use serde_json::{Value, json};

    use super::{Observation, observe};
    use crate::cluster::testing::{
        Exchange, HUB_PATH, UID, hub_configuration, hub_values, job_lookups, locked_hub, scenario,
        target,
    };
    use crate::machine::{LockState, Phase, StepState};

    const PODS: &str = "/api/v1/namespaces/jhub/pods";
    const OTHER_UID: &str = "99999999-aaaa-bbbb-cccc-000000000000";

    async fn observed(phase: Phase, exchanges: Vec<Exchange>) -> Observation {
        let target = target();
        let observation = scenario(exchanges, |client| async move {
            let progress = crate::machine::Progress {
                phase,
                ..crate::machine::Progress::default()
            };
            observe(&client, None, &target, &progress).await
        })
        .await;
        observation.expect("observed")
    }

    fn job(name: &str, complete: bool) -> Value {
        let conditions = if complete {
            json!([{"type": "Complete", "status": "True"}])
        } else {
            json!([])
        };
        json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "jhub"},
            "status": {"conditions": conditions}
        })
    }

    fn hub_pods() -> Exchange {
        Exchange::get(PODS)
            .query("labelSelector", "component=hub")
            .empty_list("PodList")
    }

    fn bound_claim() -> Exchange {
        Exchange::get("/api/v1/namespaces/jhub/persistentvolumeclaims/hub-db-dir").reply(json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "hub-db-dir", "namespace": "jhub"},
            "status": {"phase": "Bound"}
        }))
    }

    #[tokio::test]
    async fn a_missing_hub_deployment_is_a_snapshot_without_a_hub() {
        let mut exchanges = vec![Exchange::get(HUB_PATH).not_found()];
        // No pods, lock or claim to read without a Deployment; the Jobs and the backup still.
        exchanges.extend(job_lookups(|_| None));
        let observation = observed(Phase::Preflight, exchanges).await;
        assert!(observation.snapshot.deployment.is_none());
        let world = observation.world(Timestamp::now());
        assert_eq!(world.hub, None);
        assert_eq!(world.lock, LockState::Free);
        let problems = world.preflight.expect("Preflight checks").problems;
        assert!(
            problems[0].starts_with("the hub Deployment jhub/hub does not exist"),
            "{problems:?}"
        );
    }

    #[tokio::test]
    async fn in_preflight_the_hub_its_pods_its_lock_holder_and_its_claim_are_read() {
        let mut exchanges = vec![
            Exchange::get(HUB_PATH).reply(locked_hub(("to-4-1", OTHER_UID))),
            hub_values(),
            hub_pods(),
            // The holder still exists under the uid in the lock: the lock is its.
            Exchange::get("/apis/hubgrade.io/v1alpha1/namespaces/jhub/hubupgrades/to-4-1").reply(
                json!({
                    "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
                    "metadata": {"name": "to-4-1", "namespace": "jhub", "uid": OTHER_UID},
                    "spec": {"hub": {"deployment": "hub"}, "targetImage": "quay.io/jupyterhub/k8s-hub:4.1.1"}
                }),
            ),
            bound_claim(),
        ];
        exchanges.extend(hub_configuration());
        exchanges.extend(job_lookups(|_| None));
        let observation = observed(Phase::Preflight, exchanges).await;
        let world = observation.world(Timestamp::now());
        assert_eq!(world.lock, LockState::HeldBy("jhub/to-4-1".into()));
        assert_eq!(
            world.hub.expect("the hub").image,
            "quay.io/jupyterhub/k8s-hub:4.1.0"
        );
        assert_eq!(
            world.preflight.expect("Preflight checks").problems,
            Vec::<String>::new()
        );
    }

    #[tokio::test]
    async fn a_lock_whose_holder_is_gone_is_free() {
        let mut exchanges = vec![
            Exchange::get(HUB_PATH).reply(locked_hub(("to-4-1", OTHER_UID))),
            hub_values(),
            hub_pods(),
            Exchange::get("/apis/hubgrade.io/v1alpha1/namespaces/jhub/hubupgrades/to-4-1")
                .not_found(),
            bound_claim(),
        ];
        exchanges.extend(hub_configuration());
        exchanges.extend(job_lookups(|_| None));
        let observation = observed(Phase::Preflight, exchanges).await;
        assert_eq!(observation.snapshot.lock, LockState::Free);
    }

    /// What `observe` reads while migrating, with the migration's pod Pending since `created`;
    /// `events`: whether the pods' warnings are read (once the pod may be judged stuck).
    async fn migrating_with_a_pending_pod(created: Timestamp, events: bool) {
        let mut exchanges = vec![
            // Held by this upgrade: no holder to look up; past Rehearsal: no claim to read. The
            // chart values are read in every phase: they say where the database is.
            Exchange::get(HUB_PATH).reply(locked_hub(("to-4-2", UID))),
            hub_values(),
            hub_pods(),
        ];
        exchanges.extend(job_lookups(|name| {
            let pods = Exchange::get(PODS).query("labelSelector", &format!("job-name={name}"));
            match name {
                // A finished rehearsal's pods are not read again.
                "hubgrade-0f1e2d3c-rehearsal" => Some((job(name, true), vec![])),
                // A finished backup's are: they hold its report.
                "hubgrade-0f1e2d3c-backup" => {
                    Some((job(name, true), vec![pods.empty_list("PodList")]))
                }
                "hubgrade-0f1e2d3c-migration" => Some((
                    job(name, false),
                    vec![pods.reply(json!({
                        "apiVersion": "v1", "kind": "PodList", "metadata": {},
                        "items": [{
                            "metadata": {"name": "migration-1", "namespace": "jhub",
                                         "creationTimestamp": created.to_string()},
                            "status": {"phase": "Pending"}
                        }]
                    }))],
                )),
                _ => None,
            }
        }));
        if events {
            exchanges.push(
                Exchange::get("/api/v1/namespaces/jhub/events")
                    .query("fieldSelector", "type=Warning,involvedObject.kind=Pod")
                    .empty_list("EventList"),
            );
        }
        let observation = observed(Phase::Migrating, exchanges).await;
        assert!(observation.preflight.is_none());
        assert!(observation.snapshot.claim.is_none());
        let world = observation.world(Timestamp::now());
        assert_eq!(world.lock, LockState::HeldBySelf);
        assert_eq!(world.rehearsal, StepState::Succeeded(()));
        assert_eq!(world.migration, StepState::Running);
    }

    #[tokio::test]
    async fn while_migrating_the_jobs_their_pods_and_warnings_about_pending_pods_are_read() {
        let created = Timestamp::now() - super::STUCK_AFTER - SignedDuration::from_secs(5);
        migrating_with_a_pending_pod(created, true).await;
    }

    #[tokio::test]
    async fn a_pod_pending_for_a_moment_costs_no_read_of_events() {
        migrating_with_a_pending_pod(Timestamp::now(), false).await;
    }
}
