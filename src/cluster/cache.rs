//! The operator's watched copies of what every reconcile reads: hub Deployments, z2jh hub
//! pods, hubgrade's own Jobs and their pods, and the HubUpgrades. One watch per kind replaces a
//! read per kind per reconcile (a fleet of upgrades would otherwise poll the API server with
//! them), and the same watches wake the upgrades they concern.
//!
//! A copy can lag the API server by a watch event. Every decision taken on it stays safe:
//! something just made (a Job, a hub pod) may be missing for a moment, so an action is
//! repeated and the API server answers that it exists; something just removed may linger, so
//! the machine waits one more round. Two reads are not trusted to a copy: a finished Job
//! whose pod has not been seen finish yet (its report is read from the API server), and the
//! pods of a hub whose selector is not z2jh's (`component: hub`), which no watch covers.
//!
//! The copies hold each object trimmed to what is read, and compact: metadata as it is, the
//! rest as JSON read back on demand ([`Compact`]). A copy that does not read back is not
//! served either: the API server is read instead.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ObjectMeta};
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use super::owned::{UPGRADE_LABEL, UPGRADE_UID_LABEL};
use crate::api::HubUpgrade;
use crate::hub::ChartDatabase;

/// The label z2jh puts on the hub's pods (and its Deployment's selector).
const HUB_POD_LABEL: (&str, &str) = ("component", "hub");
/// The label of everything hubgrade makes, its Jobs' pods included.
const MANAGED: &str = "app.kubernetes.io/managed-by=hubgrade";
/// How long a reconcile waits for the watches' first lists before reading the API server.
const READY_WAIT: Duration = Duration::from_secs(30);

/// What an upgrade read from its hub's chart values in Preflight, kept for the later phases:
/// the database the upgrade backs up is the one it migrates and restores, even if the values
/// change meanwhile.
#[derive(Clone, Debug, PartialEq)]
pub struct ChartFacts {
    pub database: Option<ChartDatabase>,
    pub base_url: String,
}

/// What an action of an upgrade wrote, which its next reconcile reads from the API server until
/// the copy shows it: an action is never repeated for want of an event not yet arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Written {
    /// The hub Deployment (the lock, replicas, image) or its pods.
    Hub,
    /// The upgrade's Jobs.
    Jobs,
}

/// Whether an object at resourceVersion `copy` is at `wrote` or later, both of one resource.
/// The API server's resourceVersions are etcd revisions, which Kubernetes guarantees to be
/// comparable as integers within a resource from 1.35 on (KEP-5504); one that is not an
/// integer is never taken as later, so the caller reads the API server instead.
fn version_at_least(copy: &str, wrote: &str) -> bool {
    match (copy.parse::<u64>(), wrote.parse::<u64>()) {
        (Ok(copy), Ok(wrote)) => copy >= wrote,
        _ => false,
    }
}

/// What an upgrade wrote, and the resourceVersion the write left once it is known.
type Fence = (Written, Option<String>);

pub struct Cache {
    upgrades: Store<HubUpgrade>,
    deployments: Store<Compact<Deployment>>,
    hub_pods: Store<Compact<Pod>>,
    agent_pods: Store<Compact<Pod>>,
    jobs: Store<Compact<Job>>,
    charts: Mutex<HashMap<String, ChartFacts>>,
    /// Per upgrade (uid), what it wrote that the copies may not show yet, with the
    /// resourceVersion the write left once it is known.
    written: Mutex<HashMap<String, Vec<Fence>>>,
    /// Each upgrade's (by uid) resourceVersion this operator last read or wrote: its copy with
    /// that version is as fresh as a read.
    upgrade_versions: Mutex<HashMap<String, String>>,
}

/// The watch streams behind a [`Cache`], for the controller to poll (which keeps the copies
/// current) and to map to the upgrades they wake: each yields the changed objects' metadata.
pub struct Watches {
    pub deployments: BoxStream<'static, Result<Deployment, watcher::Error>>,
    pub hub_pods: BoxStream<'static, Result<Pod, watcher::Error>>,
    pub agent_pods: BoxStream<'static, Result<Pod, watcher::Error>>,
    pub jobs: BoxStream<'static, Result<Job, watcher::Error>>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A watch of `api` that keeps `store` current, each object trimmed by `slim` before it is
/// kept.
pub fn watched<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
) -> (Store<K>, BoxStream<'static, Result<K, watcher::Error>>)
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone + Send + Sync,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .reflect(writer)
        .applied_objects();
    (store, stream.boxed())
}

/// An object as a copy keeps it: its metadata, and the rest as the JSON it came as, read back
/// by [`Compact::expand`] when a reconcile needs it. k8s-openapi's structs hold every optional
/// field inline whether it is set or not (a `Volume` is 3.2 KB, a `Container` 2.1 KB, a `Pod`
/// with neither 2.2 KB): the hub Deployment z2jh's chart renders with its defaults takes
/// 25.2 KB as structs and 3.9 KB as a compact copy (2.8 KB of it JSON), and a fleet's copies
/// were most of the operator's memory.
#[derive(Clone, Debug)]
pub struct Compact<K> {
    metadata: ObjectMeta,
    /// The labels the object's selector matches (a Deployment's), read on every hub pod's
    /// event without reading the object back.
    match_labels: Option<BTreeMap<String, String>>,
    /// The object without its metadata, as JSON; empty if it could not be written, and then
    /// it does not read back ([`Compact::expand`] fails, and the API server is read).
    rest: Box<str>,
    kind: PhantomData<fn() -> K>,
}

/// What a copy keeps compact: a Kubernetes object that writes and reads itself as JSON.
pub trait Compactable:
    Resource<DynamicType = ()> + Default + serde::Serialize + serde::de::DeserializeOwned
{
    /// The labels the object's selector matches, when its copy's readers look it up by them.
    fn match_labels(&self) -> Option<BTreeMap<String, String>> {
        None
    }
}

impl Compactable for Deployment {
    fn match_labels(&self) -> Option<BTreeMap<String, String>> {
        self.spec.as_ref()?.selector.match_labels.clone()
    }
}

impl Compactable for Pod {}

impl Compactable for Job {}

impl<K: Compactable> Compact<K> {
    pub fn new(mut object: K) -> Self {
        let match_labels = object.match_labels();
        let metadata = std::mem::take(object.meta_mut());
        let rest = serde_json::to_string(&object).unwrap_or_default();
        Compact {
            metadata,
            match_labels,
            rest: rest.into(),
            kind: PhantomData,
        }
    }

    /// The object as it came.
    pub fn expand(&self) -> Result<K, serde_json::Error> {
        let mut object: K = serde_json::from_str(&self.rest)?;
        *object.meta_mut() = self.metadata.clone();
        Ok(object)
    }

    /// The object's metadata alone, all a watch's event needs to say which upgrade it wakes.
    fn head(&self) -> K {
        let mut object = K::default();
        *object.meta_mut() = self.metadata.clone();
        object
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Compact<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

fn compacted<K: Compactable>(event: watcher::Event<K>) -> watcher::Event<Compact<K>> {
    use watcher::Event::*;
    match event {
        Apply(object) => Apply(Compact::new(object)),
        Delete(object) => Delete(Compact::new(object)),
        Init => Init,
        InitApply(object) => InitApply(Compact::new(object)),
        InitDone => InitDone,
    }
}

/// A watch of `api` that keeps `store` current with its objects trimmed by `slim` and kept
/// [`Compact`]; the stream yields each changed object's metadata.
fn watched_compact<K>(
    api: Api<K>,
    config: watcher::Config,
    slim: fn(&mut K),
) -> (
    Store<Compact<K>>,
    BoxStream<'static, Result<K, watcher::Error>>,
)
where
    K: Compactable + Clone + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(slim)
        .map_ok(compacted)
        .reflect(writer)
        .applied_objects()
        .map_ok(|object: Compact<K>| object.head());
    (store, stream.boxed())
}

/// How many objects one LIST of a watch's start (or restart) asks for. Each page is read whole,
/// as structs, before its objects are made compact: with kube's default of 500, a fleet of
/// 500 hubs had 500 whole pods, managed fields and all, in memory at once, the operator's
/// largest moment.
const PAGE: u32 = 50;

fn paged() -> watcher::Config {
    watcher::Config::default().page_size(PAGE)
}

/// The annotation `kubectl apply` keeps the whole applied object in, read by nothing here.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A hub Deployment is kept whole but for what nothing reads: of its managed fields, only
/// which manager set `spec.replicas` and when (who scaled the hub), and not the copy of the
/// whole object `kubectl apply` leaves. Its managed fields were half its size.
fn hub_deployment(deployment: &mut Deployment) {
    for entry in deployment.managed_fields_mut() {
        entry.fields_v1 = super::interpret::sets_replicas(entry)
            .then(|| FieldsV1(serde_json::json!({"f:spec": {"f:replicas": {}}})));
    }
    deployment.annotations_mut().remove(LAST_APPLIED);
}

/// A hub pod, with what is read of it: its metadata (without managed fields), the node it
/// runs on, its containers' names and images (which image runs), and its status. The rest
/// of its spec, the hub's environment, mounts and probes, was most of its size.
fn hub_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    pod.annotations_mut().remove(LAST_APPLIED);
    if let Some(spec) = pod.spec.take() {
        let containers = spec.containers.into_iter().map(|c| Container {
            name: c.name,
            image: c.image,
            ..Default::default()
        });
        pod.spec = Some(PodSpec {
            node_name: spec.node_name,
            containers: containers.collect(),
            ..Default::default()
        });
    }
}

/// A HubUpgrade, as the controller keeps it: its managed fields name who made it and when
/// (the ledger's "by"), but which fields each holds is read by nothing.
pub fn upgrade(upgrade: &mut HubUpgrade) {
    for entry in upgrade.managed_fields_mut() {
        entry.fields_v1 = None;
    }
    upgrade.annotations_mut().remove(LAST_APPLIED);
}

/// Of hubgrade's Jobs and their pods, only what says how they are doing is read: metadata and
/// status, and the node a pod runs on. Their specs, made by hubgrade from the hub's pod
/// template, are most of their size, and a fleet's ended upgrades keep three of each.
fn agent_pod(pod: &mut Pod) {
    pod.managed_fields_mut().clear();
    let node_name = pod.spec.take().and_then(|spec| spec.node_name);
    pod.spec = Some(PodSpec {
        node_name,
        ..Default::default()
    });
}

/// Whether the Job with this metadata is one of the Jobs of the upgrade with this uid.
fn is_job_of(job: &ObjectMeta, namespace: &str, uid: &str) -> bool {
    job.namespace.as_deref() == Some(namespace)
        && job
            .labels
            .as_ref()
            .and_then(|labels| labels.get(UPGRADE_UID_LABEL))
            .map(String::as_str)
            == Some(uid)
}

fn job(job: &mut Job) {
    job.managed_fields_mut().clear();
    if let Some(spec) = job.spec.as_mut() {
        spec.template = Default::default();
    }
}

impl Cache {
    /// The copies of one namespace's objects (`None`: every namespace's), with `upgrades`
    /// the controller's own copy of the HubUpgrades.
    pub fn watch(
        client: &Client,
        namespace: Option<&str>,
        upgrades: Store<HubUpgrade>,
    ) -> (Cache, Watches) {
        let (deployments, deployment_watch) = watched_compact(
            api::<Deployment>(client, namespace),
            paged(),
            hub_deployment,
        );
        let hub_label = format!("{}={}", HUB_POD_LABEL.0, HUB_POD_LABEL.1);
        let (hub_pods, hub_pod_watch) = watched_compact(
            api::<Pod>(client, namespace),
            paged().labels(&hub_label),
            hub_pod,
        );
        let (agent_pods, agent_pod_watch) = watched_compact(
            api::<Pod>(client, namespace),
            paged().labels(MANAGED),
            agent_pod,
        );
        let (jobs, job_watch) =
            watched_compact(api::<Job>(client, namespace), paged().labels(MANAGED), job);
        let cache = Cache {
            upgrades,
            deployments,
            hub_pods,
            agent_pods,
            jobs,
            charts: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            upgrade_versions: Mutex::new(HashMap::new()),
        };
        let watches = Watches {
            deployments: deployment_watch,
            hub_pods: hub_pod_watch,
            agent_pods: agent_pod_watch,
            jobs: job_watch,
        };
        (cache, watches)
    }

    /// Whether every copy has had its first list (waits a while for it). A copy that is not
    /// ready is not read: the reconcile reads the API server instead.
    pub async fn ready(&self) -> bool {
        let all = async {
            self.upgrades.wait_until_ready().await.is_ok()
                && self.deployments.wait_until_ready().await.is_ok()
                && self.hub_pods.wait_until_ready().await.is_ok()
                && self.agent_pods.wait_until_ready().await.is_ok()
                && self.jobs.wait_until_ready().await.is_ok()
        };
        tokio::time::timeout(READY_WAIT, all).await.unwrap_or(false)
    }

    /// Whether the Deployments' copy has had its first list (waits a while for it), as
    /// [`Cache::ready`] for that copy alone.
    pub async fn deployments_ready(&self) -> bool {
        let deployments = self.deployments.wait_until_ready();
        matches!(
            tokio::time::timeout(READY_WAIT, deployments).await,
            Ok(Ok(()))
        )
    }

    /// The copy of a Deployment (`None`: there is none); an error when the copy does not
    /// read back, and then the API server is read instead.
    pub fn deployment(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<Deployment>, serde_json::Error> {
        let key = ObjectRef::new(name).within(namespace);
        self.deployments.get(&key).map(|d| d.expand()).transpose()
    }

    /// The resourceVersion of the copy of a Deployment.
    pub fn deployment_version(&self, namespace: &str, name: &str) -> Option<String> {
        let key = ObjectRef::new(name).within(namespace);
        self.deployments
            .get(&key)?
            .metadata
            .resource_version
            .clone()
    }

    pub fn upgrade(&self, namespace: &str, name: &str) -> Option<HubUpgrade> {
        let key = ObjectRef::new(name).within(namespace);
        self.upgrades.get(&key).map(|u| (*u).clone())
    }

    /// The pods `deployment` selects, when its selector is z2jh's (the watch holds every pod
    /// labelled `component: hub`) and their copies read back; `None` otherwise.
    pub fn hub_pods(&self, deployment: &Deployment) -> Option<Vec<Pod>> {
        let selector = deployment.spec.as_ref()?.selector.match_labels.as_ref()?;
        if selector.get(HUB_POD_LABEL.0).map(String::as_str) != Some(HUB_POD_LABEL.1) {
            return None;
        }
        let namespace = deployment.namespace().unwrap_or_default();
        self.hub_pods
            .state_filter(|pod| {
                pod.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && selected(&pod.metadata, selector)
            })
            .iter()
            .map(|pod| pod.expand())
            .collect::<Result<_, _>>()
            .ok()
    }

    /// The Jobs of the upgrade with this uid; an error when a copy does not read back.
    pub fn jobs_of(&self, namespace: &str, uid: &str) -> Result<Vec<Job>, serde_json::Error> {
        self.jobs
            .state_filter(|job| is_job_of(&job.metadata, namespace, uid))
            .iter()
            .map(|job| job.expand())
            .collect()
    }

    /// The pods of one of hubgrade's Jobs; an error when a copy does not read back.
    pub fn job_pods(&self, namespace: &str, job: &str) -> Result<Vec<Pod>, serde_json::Error> {
        self.agent_pods
            .state_filter(|pod| {
                pod.metadata.namespace.as_deref() == Some(namespace)
                    && pod.labels().get("job-name").map(String::as_str) == Some(job)
            })
            .iter()
            .map(|pod| pod.expand())
            .collect()
    }

    /// The chart facts an upgrade read in Preflight.
    pub fn chart(&self, uid: &str) -> Option<ChartFacts> {
        self.charts.lock().ok()?.get(uid).cloned()
    }

    pub fn keep_chart(&self, uid: &str, facts: ChartFacts) {
        if let Ok(mut charts) = self.charts.lock() {
            charts.insert(uid.to_string(), facts);
        }
    }

    /// The upgrade `uid` is about to write `what`: until [`Cache::shows`], it is read from the
    /// API server.
    pub fn wrote(&self, uid: &str, what: Written) {
        self.set_written(uid, what, None);
    }

    /// The upgrade `uid`'s write of `what` left `version`: a copy at that version or later
    /// shows it ([`Cache::unsettled`]), with no read of the API server.
    pub fn wrote_at(&self, uid: &str, what: Written, version: String) {
        self.set_written(uid, what, Some(version));
    }

    fn set_written(&self, uid: &str, what: Written, version: Option<String>) {
        if let Ok(mut written) = self.written.lock() {
            let entry = written.entry(uid.to_string()).or_default();
            entry.retain(|(w, _)| *w != what);
            entry.push((what, version));
        }
    }

    /// Whether the copy may not show yet what the upgrade `uid` wrote of `what`, the copy's
    /// object (the hub Deployment, the newest of the upgrade's Jobs) being at `copy_version`.
    /// A copy at the version the write left, or later, shows it: the upgrade's fence is
    /// lifted.
    pub fn unsettled(&self, uid: &str, what: Written, copy_version: Option<&str>) -> bool {
        let Ok(mut written) = self.written.lock() else {
            return true;
        };
        let Some(entry) = written.get_mut(uid) else {
            return false;
        };
        let Some(at) = entry.iter().position(|(w, _)| *w == what) else {
            return false;
        };
        let caught_up = match (&entry[at].1, copy_version) {
            (Some(wrote), Some(copy)) => version_at_least(copy, wrote),
            _ => false,
        };
        if caught_up {
            entry.remove(at);
            if entry.is_empty() {
                written.remove(uid);
            }
        }
        !caught_up
    }

    /// Whether the copy of the hub Deployment `hub` may not show yet what the upgrade `uid`
    /// wrote to the hub.
    pub fn hub_unsettled(&self, uid: &str, namespace: &str, hub: &str) -> bool {
        let key = ObjectRef::new(hub).within(namespace);
        let copy = self.deployments.get(&key);
        let version = copy
            .as_ref()
            .and_then(|d| d.metadata.resource_version.as_deref());
        self.unsettled(uid, Written::Hub, version)
    }

    /// Whether the copies of the upgrade `uid`'s Jobs may not show yet what it wrote to them.
    /// They come from one watch, in the order of their versions: one of them at or past the
    /// version a write left means the copies hold that write.
    pub fn jobs_unsettled(&self, uid: &str, namespace: &str) -> bool {
        let jobs = self
            .jobs
            .state_filter(|job| is_job_of(&job.metadata, namespace, uid));
        let newest = jobs
            .iter()
            .filter_map(|job| job.metadata.resource_version.as_deref())
            .max_by_key(|version| version.parse::<u64>().ok());
        self.unsettled(uid, Written::Jobs, newest)
    }

    /// The copy has caught up with what the upgrade `uid` wrote of `what`.
    pub fn shows(&self, uid: &str, what: Written) {
        if let Ok(mut written) = self.written.lock()
            && let Some(entry) = written.get_mut(uid)
        {
            entry.retain(|(w, _)| *w != what);
            if entry.is_empty() {
                written.remove(uid);
            }
        }
    }

    /// The upgrade was just read from the API server or written: its copy at this version
    /// is as fresh as a read.
    pub fn read(&self, upgrade: &HubUpgrade) {
        if let (Some(uid), Some(version), Ok(mut versions)) = (
            upgrade.metadata.uid.clone(),
            upgrade.metadata.resource_version.clone(),
            self.upgrade_versions.lock(),
        ) {
            versions.insert(uid, version);
        }
    }

    /// Whether the upgrade `uid` at `version` is the one this operator last read or wrote.
    pub fn is_fresh(&self, uid: &str, version: Option<&str>) -> bool {
        version.is_some()
            && self
                .upgrade_versions
                .lock()
                .is_ok_and(|versions| versions.get(uid).map(String::as_str) == version)
    }

    /// Forgets what a deleted upgrade kept (an ended one keeps it until it is deleted).
    pub fn forget(&self, uid: &str) {
        if let Ok(mut charts) = self.charts.lock() {
            charts.remove(uid);
        }
        if let Ok(mut written) = self.written.lock() {
            written.remove(uid);
        }
        if let Ok(mut versions) = self.upgrade_versions.lock() {
            versions.remove(uid);
        }
    }

    /// The upgrades holding the lock of a hub that `pod` belongs to: a hub pod that comes,
    /// goes or turns Ready wakes them.
    pub fn lock_holders_of(&self, pod: &Pod) -> Vec<ObjectRef<HubUpgrade>> {
        let namespace = pod.namespace().unwrap_or_default();
        self.deployments
            .state_filter(|d| {
                d.metadata.namespace.as_deref() == Some(namespace.as_str())
                    && d.match_labels.as_ref().is_some_and(|selector| {
                        !selector.is_empty() && selected(&pod.metadata, selector)
                    })
            })
            .iter()
            .filter_map(|d| super::lock::holder(&d.metadata))
            .map(|(name, _)| ObjectRef::new(&name).within(&namespace))
            .collect()
    }
}

/// The upgrade one of hubgrade's pods works for (from its label).
pub fn upgrade_of(pod: &Pod) -> Option<ObjectRef<HubUpgrade>> {
    let name = pod.labels().get(UPGRADE_LABEL)?;
    Some(ObjectRef::new(name).within(&pod.namespace()?))
}

/// Whether the pod with this metadata has every label of `selector`.
fn selected(pod: &ObjectMeta, selector: &BTreeMap<String, String>) -> bool {
    let labels = pod.labels.as_ref();
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|labels| labels.get(key)) == Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;
    use serde_json::json;

    fn store_of<K>(objects: Vec<serde_json::Value>) -> Store<K>
    where
        K: Resource + Clone + serde::de::DeserializeOwned + 'static,
        K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        for object in objects {
            let object: K = serde_json::from_value(object).expect("an object");
            writer.apply_watcher_event(&Event::InitApply(object));
        }
        writer.apply_watcher_event(&Event::InitDone);
        store
    }

    fn compact_store_of<K: Compactable + Clone>(
        objects: Vec<serde_json::Value>,
    ) -> Store<Compact<K>> {
        let (store, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        for object in objects {
            let object: K = serde_json::from_value(object).expect("an object");
            writer.apply_watcher_event(&Event::InitApply(Compact::new(object)));
        }
        writer.apply_watcher_event(&Event::InitDone);
        store
    }

    fn pod(name: &str, labels: serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": name, "namespace": "jhub", "labels": labels}})
    }

    fn deployment(name: &str, selector: serde_json::Value, lock: Option<&str>) -> Deployment {
        let annotations = lock.map(|holder| json!({"hubgrade.io/locked-by": holder}));
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "jhub", "annotations": annotations},
            "spec": {"selector": {"matchLabels": selector}, "template": {}}
        }))
        .expect("a Deployment")
    }

    #[test]
    fn an_upgrades_copy_is_fresh_only_at_the_version_last_read_or_written() {
        let cache = cache(Vec::new());
        let upgrade = |version: &str| {
            let mut upgrade = crate::cluster::testing::upgrade();
            upgrade.metadata.uid = Some("1".into());
            upgrade.metadata.resource_version = Some(version.into());
            upgrade
        };
        assert!(!cache.is_fresh("1", Some("5")));
        cache.read(&upgrade("5"));
        assert!(cache.is_fresh("1", Some("5")));
        assert!(
            !cache.is_fresh("1", Some("4")),
            "an older copy is read again"
        );
        assert!(!cache.is_fresh("1", None));
        cache.forget("1");
        assert!(!cache.is_fresh("1", Some("5")));
    }

    #[test]
    fn agent_pods_and_jobs_are_kept_without_their_specs_but_with_what_is_read() {
        let containers = json!([{"name": "agent", "image": "ghcr.io/hubgrade/hubgrade:1",
            "args": ["agent", "backup"], "env": [{"name": "A", "value": "x".repeat(2000)}]}]);
        let managed =
            json!([{"manager": "hubgrade", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]);
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "jhub", "labels": {"job-name": "j"},
                "managedFields": managed},
            "spec": {"nodeName": "node-1", "containers": containers,
                "volumes": [{"name": "hub-db", "persistentVolumeClaim": {"claimName": "hub-db-dir"}}]},
            "status": {"phase": "Succeeded", "containerStatuses": [{"name": "agent", "image": "i",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 0, "message": "{\"report\": 1}"}}}]}
        }))
        .expect("a pod");
        let mut job: Job = serde_json::from_value(json!({
            "metadata": {"name": "j", "namespace": "jhub", "labels": {UPGRADE_UID_LABEL: "1"},
                "managedFields": managed},
            "spec": {"backoffLimit": 0, "template": {"spec": {"containers": containers}}},
            "status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .expect("a Job");
        fn size(object: &impl serde::Serialize) -> usize {
            serde_json::to_vec(object).expect("json").len()
        }
        let (pod_before, job_before) = (size(&pod), size(&job));
        agent_pod(&mut pod);
        self::job(&mut job);
        assert!(size(&pod) * 3 < pod_before, "the pod's spec is dropped");
        assert!(
            size(&job) * 3 < job_before,
            "the Job's pod template is dropped"
        );
        assert_eq!(
            pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            Some("node-1")
        );
        assert!(crate::cluster::interpret::finished(&pod));
        assert_eq!(pod.labels().get("job-name").map(String::as_str), Some("j"));
        assert!(pod.managed_fields().is_empty() && job.managed_fields().is_empty());
        assert_eq!(job.status.and_then(|s| s.succeeded), Some(1));
        assert_eq!(
            job.metadata
                .labels
                .and_then(|l| l.get(UPGRADE_UID_LABEL).cloned())
                .as_deref(),
            Some("1")
        );
    }

    /// A hub Deployment loses the field sets of its managers and `kubectl apply`'s copy, but
    /// not who scaled it nor the marks of the tool that manages it; a hub pod loses its
    /// containers' environment and mounts, but not its node, images or status.
    #[test]
    fn hub_deployments_and_pods_are_kept_with_what_is_read() {
        use crate::cluster::interpret::{managed_by, replicas_manager};
        let template = json!({"metadata": {"labels": {"component": "hub"}}, "spec": {
            "containers": [{"name": "hub", "image": "quay.io/jupyterhub/k8s-hub:4.1.0",
                "env": [{"name": "A", "value": "x".repeat(2000)}],
                "volumeMounts": [{"name": "hub-db-dir", "mountPath": "/srv/jupyterhub"}]}],
            "volumes": [{"name": "hub-db-dir",
                "persistentVolumeClaim": {"claimName": "hub-db-dir"}}]}});
        let fields = |extra: serde_json::Value| {
            let mut spec = json!({"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"hub\"}": {"f:image": {}, "f:env": {}, "f:volumeMounts": {}}}}}});
            spec.as_object_mut()
                .expect("an object")
                .extend(extra.as_object().cloned().unwrap_or_default());
            json!({"f:metadata": {"f:labels": {"f:component": {}}}, "f:spec": spec})
        };
        let managed = json!([
            {"manager": "helm", "operation": "Update", "time": "2026-11-01T00:00:00Z",
             "fieldsV1": fields(json!({"f:replicas": {}}))},
            {"manager": "kubectl-scale", "operation": "Update", "time": "2026-11-02T00:00:00Z",
             "subresource": "scale", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl-edit", "operation": "Update", "time": "2026-11-03T00:00:00Z",
             "fieldsV1": fields(json!({}))}
        ]);
        let applied = serde_json::to_string(&template).expect("json");
        let mut deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "hub", "namespace": "jhub", "managedFields": managed,
                "labels": {"heritage": "Helm", "release": "jh"},
                "annotations": {LAST_APPLIED: applied, "meta.helm.sh/release-name": "jh"}},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"component": "hub"}},
                "template": template},
        }))
        .expect("a Deployment");
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "hub-1", "namespace": "jhub", "labels": {"component": "hub"},
                "managedFields": managed},
            "spec": template["spec"].clone(),
            "status": {"phase": "Running", "podIP": "10.244.0.7", "hostIP": "10.0.0.1",
                "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .expect("a pod");
        pod.spec.as_mut().expect("a spec").node_name = Some("node-1".into());
        let before = (deployment.clone(), pod.clone());
        fn size(object: &impl serde::Serialize) -> usize {
            serde_json::to_vec(object).expect("json").len()
        }
        hub_deployment(&mut deployment);
        hub_pod(&mut pod);
        assert!(!deployment.annotations().contains_key(LAST_APPLIED));
        assert!(
            size(&deployment.metadata.managed_fields) * 2 < size(&before.0.metadata.managed_fields),
            "the managers' field sets are dropped"
        );
        assert!(
            size(&pod) * 3 < size(&before.1),
            "the pod's spec is dropped"
        );
        assert_eq!(
            replicas_manager(&before.0).as_deref(),
            Some("kubectl-scale")
        );
        assert_eq!(replicas_manager(&deployment), replicas_manager(&before.0));
        assert_eq!(
            managed_by(&deployment.metadata),
            managed_by(&before.0.metadata)
        );
        assert_eq!(
            deployment.spec, before.0.spec,
            "the pod template is read: kept"
        );
        assert_eq!(deployment.labels(), before.0.labels());
        let spec = pod.spec.as_ref().expect("a spec");
        assert_eq!(spec.node_name.as_deref(), Some("node-1"));
        assert_eq!(spec.containers.len(), 1);
        assert_eq!(spec.containers[0].name, "hub");
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some("quay.io/jupyterhub/k8s-hub:4.1.0")
        );
        assert_eq!(pod.status, before.1.status);
        assert_eq!(pod.labels(), before.1.labels());
    }

    /// A HubUpgrade keeps who made it (the ledger's "by"), not the fields each manager holds.
    #[test]
    fn upgrades_are_kept_with_their_managers_but_not_their_field_sets() {
        let mut kept: HubUpgrade = serde_json::from_value(json!({
            "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
            "metadata": {"name": "u", "namespace": "jhub", "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update",
                 "time": "2026-11-01T00:00:00Z", "fieldsV1": {"f:spec": {"f:targetImage": {}}}},
                {"manager": "hubgrade", "operation": "Apply", "subresource": "status",
                 "time": "2026-11-01T00:00:01Z", "fieldsV1": {"f:status": {"f:phase": {}}}}]},
            "spec": {"hub": {"deployment": "hub"},
                "targetImage": "quay.io/jupyterhub/k8s-hub:4.2.0"}
        }))
        .expect("a HubUpgrade");
        let before = kept.clone();
        upgrade(&mut kept);
        assert!(kept.managed_fields().iter().all(|m| m.fields_v1.is_none()));
        let who = |u: &HubUpgrade| {
            u.managed_fields()
                .iter()
                .map(|m| (m.manager.clone(), m.time.clone(), m.subresource.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(who(&kept), who(&before));
        assert_eq!(
            crate::ledger::entry::created_by(&kept),
            crate::ledger::entry::created_by(&before)
        );
    }

    fn cache(deployments: Vec<Deployment>) -> Cache {
        let deployments = deployments
            .into_iter()
            .map(|d| serde_json::to_value(d).expect("json"))
            .collect();
        Cache {
            upgrades: store_of(Vec::new()),
            deployments: compact_store_of(deployments),
            hub_pods: compact_store_of(vec![
                pod("hub-a", json!({"component": "hub", "release": "a"})),
                pod("hub-b", json!({"component": "hub", "release": "b"})),
            ]),
            agent_pods: compact_store_of(vec![
                pod("backup-1", json!({"job-name": "hubgrade-1-backup"})),
                pod("migrate-1", json!({"job-name": "hubgrade-1-migrate"})),
            ]),
            jobs: compact_store_of(vec![
                json!({"metadata": {"name": "j1", "namespace": "jhub", "labels": {UPGRADE_UID_LABEL: "1"}}}),
                json!({"metadata": {"name": "j2", "namespace": "jhub", "labels": {UPGRADE_UID_LABEL: "2"}}}),
                json!({"metadata": {"name": "j3", "namespace": "other", "labels": {UPGRADE_UID_LABEL: "1"}}}),
            ]),
            charts: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            upgrade_versions: Mutex::new(HashMap::new()),
        }
    }

    #[test]
    fn what_an_upgrade_wrote_is_unsettled_until_the_copy_shows_it() {
        let cache = cache(vec![]);
        assert!(!cache.unsettled("1", Written::Hub, None));
        cache.wrote("1", Written::Hub);
        cache.wrote("1", Written::Jobs);
        // Whatever the copy's version, a write whose version is unknown waits for a read.
        assert!(cache.unsettled("1", Written::Hub, Some("900")));
        assert!(!cache.unsettled("2", Written::Hub, None));
        cache.shows("1", Written::Hub);
        assert!(!cache.unsettled("1", Written::Hub, None));
        assert!(cache.unsettled("1", Written::Jobs, None));
    }

    #[test]
    fn a_write_is_settled_once_the_copy_reaches_the_version_it_left() {
        let cache = cache(vec![]);
        cache.wrote("1", Written::Hub);
        cache.wrote_at("1", Written::Hub, "120".into());
        assert!(cache.unsettled("1", Written::Hub, None));
        assert!(cache.unsettled("1", Written::Hub, Some("119")));
        // "99" is less than "120" as a number, though not as text.
        assert!(cache.unsettled("1", Written::Hub, Some("99")));
        assert!(!cache.unsettled("1", Written::Hub, Some("1000")));
        // Settled for good: an older copy later (a relist) does not bring the fence back.
        assert!(!cache.unsettled("1", Written::Hub, Some("5")));
        cache.wrote_at("1", Written::Jobs, "120".into());
        assert!(!cache.unsettled("1", Written::Jobs, Some("120")));
        cache.wrote_at("1", Written::Jobs, "not-a-number".into());
        assert!(cache.unsettled("1", Written::Jobs, Some("130")));
        // The next write's fence replaces the last one's.
        cache.wrote("1", Written::Jobs);
        assert!(cache.unsettled("1", Written::Jobs, Some("130")));
    }

    #[test]
    fn a_z2jh_hubs_pods_are_those_its_selector_selects() {
        let hub = deployment("hub", json!({"component": "hub", "release": "a"}), None);
        let pods = cache(vec![]).hub_pods(&hub).expect("served");
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["hub-a"]);
    }

    #[test]
    fn a_hub_selected_otherwise_is_not_served_from_the_copy() {
        let hub = deployment("hub", json!({"app": "my-hub"}), None);
        assert!(cache(vec![]).hub_pods(&hub).is_none());
    }

    #[test]
    fn jobs_and_job_pods_are_found_by_uid_and_job_name_in_their_namespace() {
        let cache = cache(vec![]);
        let jobs: Vec<_> = cache
            .jobs_of("jhub", "1")
            .expect("read back")
            .iter()
            .map(|j| j.name_any())
            .collect();
        assert_eq!(jobs, ["j1"]);
        let pods: Vec<_> = cache
            .job_pods("jhub", "hubgrade-1-backup")
            .expect("read back")
            .iter()
            .map(|p| p.name_any())
            .collect();
        assert_eq!(pods, ["backup-1"]);
    }

    #[test]
    fn a_hub_pod_wakes_the_upgrade_holding_its_hubs_lock() {
        let cache = cache(vec![
            deployment(
                "hub",
                json!({"component": "hub", "release": "a"}),
                Some("to-5"),
            ),
            deployment("other", json!({"component": "hub", "release": "b"}), None),
        ]);
        let pod: Pod =
            serde_json::from_value(pod("hub-a", json!({"component": "hub", "release": "a"})))
                .expect("a pod");
        assert_eq!(
            cache.lock_holders_of(&pod),
            vec![ObjectRef::new("to-5").within("jhub")]
        );
    }

    /// A copy reads back as the object it was, metadata and all; a watch's event carries the
    /// metadata alone; a Deployment's copy keeps its selector for the hub pods' events.
    #[test]
    fn a_compact_copy_reads_back_as_the_object_it_was() {
        let hub = crate::cluster::testing::locked_hub(("to-5", "5"));
        let copy = Compact::new(hub.clone());
        assert_eq!(copy.expand().expect("read back"), hub);
        assert_eq!(
            copy.match_labels,
            Some([("component".to_string(), "hub".to_string())].into())
        );
        let head = copy.head();
        assert_eq!(head.metadata, hub.metadata);
        assert_eq!(head.spec, None);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "jhub", "labels": {"job-name": "j"}},
            "spec": {"nodeName": "node-1", "containers": []},
            "status": {"phase": "Failed", "containerStatuses": [{"name": "agent", "image": "i",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 3, "message": "{\"error\": \"no room\"}"}}}]}
        }))
        .expect("a pod");
        assert_eq!(Compact::new(pod.clone()).expand().expect("read back"), pod);
        assert_eq!(Compact::new(pod.clone()).match_labels, None);
    }

    /// The point of a compact copy: a z2jh hub Deployment's structs hold every optional field
    /// of each volume, container and variable inline; its copy is its JSON.
    #[test]
    fn a_hub_deployments_copy_is_a_fraction_of_its_structs() {
        use k8s_openapi::api::core::v1::{EnvVar, Volume, VolumeMount};
        use std::mem::size_of;
        let hub = crate::cluster::testing::hub();
        let spec = hub
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("a pod spec");
        let containers = &spec.containers;
        // A lower bound of what the structs take: their inline parts alone.
        let structs = size_of::<Deployment>()
            + size_of::<PodSpec>()
            + containers.len() * size_of::<Container>()
            + spec.volumes.as_ref().map_or(0, Vec::len) * size_of::<Volume>()
            + containers
                .iter()
                .map(|c| {
                    c.env.as_ref().map_or(0, Vec::len) * size_of::<EnvVar>()
                        + c.volume_mounts.as_ref().map_or(0, Vec::len) * size_of::<VolumeMount>()
                })
                .sum::<usize>();
        let copy = Compact::new(hub);
        let kept = size_of::<Compact<Deployment>>() + copy.rest.len();
        assert!(
            kept * 4 < structs,
            "the copy takes {kept} bytes where the structs take at least {structs}"
        );
    }

    /// A copy that does not read back is not served: the reconcile reads the API server.
    #[test]
    fn a_copy_that_does_not_read_back_is_not_served() {
        let unreadable = |mut copy: Compact<Pod>| {
            copy.rest = "{".into();
            copy
        };
        let pod: Pod =
            serde_json::from_value(pod("hub-a", json!({"component": "hub", "release": "a"})))
                .expect("a pod");
        assert!(unreadable(Compact::new(pod.clone())).expand().is_err());
        let cache = cache(vec![]);
        let (hub_pods, mut writer) = reflector::store();
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(unreadable(Compact::new(pod))));
        writer.apply_watcher_event(&Event::InitDone);
        let cache = Cache { hub_pods, ..cache };
        let hub = deployment("hub", json!({"component": "hub", "release": "a"}), None);
        assert!(cache.hub_pods(&hub).is_none());
    }

    #[test]
    fn chart_facts_are_kept_until_forgotten() {
        let cache = cache(vec![]);
        let facts = ChartFacts {
            database: Some(ChartDatabase::SqlitePvc),
            base_url: "/".into(),
        };
        cache.keep_chart("1", facts.clone());
        assert_eq!(cache.chart("1"), Some(facts));
        cache.forget("1");
        assert_eq!(cache.chart("1"), None);
    }
}
