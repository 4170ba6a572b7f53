//! kwok-agent-standin: TEST INFRASTRUCTURE ONLY, for the KWOK-based local cluster, where no
//! container runs. It plays the containers of every pod hubgrade makes (label
//! `hubgrade.io/role`: `agent`, or `hub-image` for the rehearsal and the migration), init
//! containers first, in order:
//! - `hubgrade agent ...` containers: parsed with hubgrade's own parser and run with hubgrade's
//!   own agent code against local directories standing for the volumes (a claim:
//!   `<volumes>/<namespace>/<claim>/<subPath>`; an emptyDir: a folder per pod);
//! - `jupyterhub upgrade-db`: a stand-in migration of the database the pod pinned (its
//!   `pin-database` container's `--database-url`), which really changes it, as JupyterHub does:
//!   a timestamped copy next to it, a new column, the alembic revision of JupyterHub 5. A pod
//!   that pins nothing migrates the server database its z2jh values name (the hub Secret
//!   mounted at /usr/local/etc/jupyterhub/secret: `hub.db.url`, `hub.db.password`); with the
//!   pod annotation `kwok.hubgrade.io/migration: fails-halfway` either migration adds the
//!   column, then fails, as a migration that dies half-way.
//!
//! Secret volumes are written from the API into a folder per pod, as the kubelet would.
//! `--agent-delay D` plays every `agent` pod (the backup, the restore) only D after it runs, as
//! a slow volume would: the hub's pod template annotations reach only the `hub-image` pods, so
//! this is how a test makes sure it can act while a backup runs.
//!
//! It hands the last report and the exit code to KWOK through pod annotations
//! (`kwok.hubgrade.io/result`, `kwok.hubgrade.io/exit-code`), which the `pod-agent-finish`
//! stage turns into the container's termination message and exit code.
//!
//! It also plays the REST API of the hubs (pods labelled `component=hub`, z2jh's hub label) as
//! the operator reads it: every such pod that is Running, has a pod IP and is not being deleted
//! is served on `<pod IP>:<port>` (the hub container's, the one named `hub` else the first,
//! containerPort named `http`, else 8081). The KWOK node's podCIDR (tests/cluster/nodes.yaml)
//! is a loopback range, so that address is on this machine. Any path (so any `base_url`)
//! ending in
//! - `hub/health` answers 200;
//! - `hub/api` answers `{"version": V}`: the pod annotation `kwok.hubgrade.io/hub-version`
//!   (`V`, or `IMAGE=V` for the pods of that image only), else
//!   what the hub container's image runs: 4.1.6 for `.../jupyterhub/k8s-hub:3.*` (z2jh 3), else
//!   5.5.0 (z2jh 4, and the JupyterHub 5 revision the stand-in migration leaves);
//! - `hub/api/users` answers `[]`: no user has an active server.
//!
//! With the pod annotation `kwok.hubgrade.io/api-after: D` the API is served only from D after
//! the pod is first seen running (a hub slow to start).
//!
//! GET (and HEAD) only; tokens are not checked. The server stops (its listener closed, idle
//! connections too) once the pod is gone or deleting. An address still in use (a pod IP KWOK
//! gave again while another namespace's stand-in still serves the pod that had it) is tried
//! again on the next pass, every 300 ms.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use clap::Parser;
use hubgrade::agent::AgentCommand;
use hubgrade::hub::revision::{release_for_version, release_of_image};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sqlx::Connection;
use tokio::sync::watch;

#[derive(Debug, Parser)]
#[command(about = "Runs hubgrade agent pods' work locally, for a KWOK cluster (tests only)")]
struct Args {
    /// Only pods in this namespace (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Root of the local directories standing for volume claims.
    #[arg(long)]
    volumes: PathBuf,
    /// How long each `agent` pod runs before its work is played (e.g. `2s`): a slow volume.
    #[arg(long, value_parser = hubgrade::api::parse_duration)]
    agent_delay: Option<jiff::SignedDuration>,
}

#[derive(Debug, Parser)]
struct AgentLine {
    #[command(subcommand)]
    command: AgentCommand,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = Client::try_default()
        .await
        .expect("a kubeconfig for the local cluster");
    let pods: Api<Pod> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let volumes = std::sync::Arc::new(args.volumes);
    let agent_delay = args
        .agent_delay
        .map_or(Duration::ZERO, |d| d.unsigned_abs());
    let mut started: HashSet<String> = HashSet::new();
    let mut hub_apis = HubApis::default();
    loop {
        let listed = pods
            .list(&ListParams::default().labels("hubgrade.io/role in (agent,hub-image)"))
            .await;
        for pod in listed.map(|l| l.items).unwrap_or_default() {
            let uid = pod.uid().unwrap_or_default();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let answered = pod.annotations().contains_key("kwok.hubgrade.io/result");
            if !running || answered || !started.insert(uid) {
                continue;
            }
            // Each pod in its own task: pods run side by side, as on a real node.
            let (client, volumes) = (client.clone(), volumes.clone());
            tokio::spawn(async move { finish(client, pod, &volumes, agent_delay).await });
        }
        // A failed list keeps what is served: the hubs did not stop for it.
        if let Ok(hubs) = pods
            .list(&ListParams::default().labels("component=hub"))
            .await
        {
            hub_apis.serve(&hubs.items).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The hub API's port when the hub container names none `http`: JupyterHub's default.
const HUB_API_PORT: u16 = 8081;

/// The hub APIs being served, by pod uid.
#[derive(Default)]
struct HubApis {
    serving: HashMap<String, HubApi>,
    /// The last failure to bind, per pod waiting for its address: each logged once.
    failed: HashMap<String, String>,
    /// When each running hub pod was first seen running, for `kwok.hubgrade.io/api-after`.
    first_seen: HashMap<String, std::time::Instant>,
}

/// A served hub API. Dropping it stops the server: its version channel closes.
struct HubApi {
    address: SocketAddr,
    version: watch::Sender<String>,
}

/// What a running hub pod's API is.
struct HubPod {
    name: String,
    address: SocketAddr,
    version: String,
    /// How long after the pod is first seen running its API starts answering (the pod
    /// annotation `kwok.hubgrade.io/api-after`, as a hub that is slow to start).
    answers_after: Duration,
}

impl HubApis {
    /// Serves the API of each running hub pod of `pods` (all the hub pods listed) and stops
    /// serving every other.
    async fn serve(&mut self, pods: &[Pod]) {
        let running: HashMap<String, HubPod> = pods
            .iter()
            .filter_map(|pod| Some((pod.uid()?, running_hub(pod)?)))
            .collect();
        // Stopped first: a new pod may have the address of one that is gone.
        self.serving.retain(|uid, api| {
            running
                .get(uid)
                .is_some_and(|hub| hub.address == api.address)
        });
        self.failed.retain(|uid, _| running.contains_key(uid));
        self.first_seen.retain(|uid, _| running.contains_key(uid));
        for (uid, hub) in running {
            let first_seen = *self
                .first_seen
                .entry(uid.clone())
                .or_insert_with(std::time::Instant::now);
            if first_seen.elapsed() < hub.answers_after {
                continue;
            }
            if let Some(api) = self.serving.get(&uid) {
                api.version.send_if_modified(|version| {
                    let changed = *version != hub.version;
                    *version = hub.version.clone();
                    changed
                });
                continue;
            }
            match tokio::net::TcpListener::bind(hub.address).await {
                Ok(listener) => {
                    eprintln!(
                        "kwok-agent-standin: {}: serving the hub API (JupyterHub {}) on {}",
                        hub.name, hub.version, hub.address
                    );
                    self.failed.remove(&uid);
                    let (version, watched) = watch::channel(hub.version);
                    tokio::spawn(serve_hub_api(listener, watched));
                    let address = hub.address;
                    self.serving.insert(uid, HubApi { address, version });
                }
                Err(error) if self.failed.get(&uid) != Some(&error.to_string()) => {
                    eprintln!(
                        "kwok-agent-standin: {}: cannot serve the hub API on {} yet: {error}",
                        hub.name, hub.address
                    );
                    self.failed.insert(uid, error.to_string());
                }
                Err(_) => {}
            }
        }
    }
}

/// The API a hub pod serves, if it runs: Running, with a pod IP, not being deleted.
fn running_hub(pod: &Pod) -> Option<HubPod> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Running") || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    let containers = &pod.spec.as_ref()?.containers;
    let hub = containers
        .iter()
        .find(|c| c.name == "hub")
        .or(containers.first())?;
    let port = hub
        .ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some("http"))
        .and_then(|p| u16::try_from(p.container_port).ok())
        .unwrap_or(HUB_API_PORT);
    let image = hub.image.as_deref().unwrap_or_default();
    // `VERSION`, or `IMAGE=VERSION`: only a pod of that image reports it.
    let annotated = pod
        .annotations()
        .get("kwok.hubgrade.io/hub-version")
        .and_then(|value| match value.split_once('=') {
            None => Some(value.clone()),
            Some((of, version)) => (of == image).then(|| version.to_string()),
        });
    let version = annotated.unwrap_or_else(|| jupyterhub_version_of(image).to_string());
    let answers_after = pod
        .annotations()
        .get("kwok.hubgrade.io/api-after")
        .and_then(|after| hubgrade::api::parse_duration(after).ok())
        .map_or(Duration::ZERO, |after| after.unsigned_abs());
    Some(HubPod {
        name: format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any()),
        address: SocketAddr::new(ip, port),
        version,
        answers_after,
    })
}

/// The JupyterHub version a hub image reports: 4.1.6 for the JupyterHub 4 series of z2jh 3's
/// k8s-hub; 5.5.0 for any other (z2jh 4's), whose revision the stand-in migration leaves.
fn jupyterhub_version_of(image: &str) -> &'static str {
    let release = release_of_image(image);
    if release.is_some() && release == release_for_version("4.1.6") {
        "4.1.6"
    } else {
        "5.5.0"
    }
}

/// Serves one hub's API on `listener` until `version`'s sender is dropped; then closes the
/// listener and the idle connections, so a pooled connection cannot outlive the pod.
async fn serve_hub_api(listener: tokio::net::TcpListener, version: watch::Receiver<String>) {
    let mut stopped = version.clone();
    let router = axum::Router::new()
        .fallback(answer_hub_api)
        .with_state(version);
    let _ = axum::serve(listener, router)
        .with_graceful_shutdown(async move { while stopped.changed().await.is_ok() {} })
        .await;
}

/// The hub API's answer to `method` on `uri`, by how its path ends (the hub's `base_url`
/// comes before `hub/`).
async fn answer_hub_api(
    State(version): State<watch::Receiver<String>>,
    method: Method,
    uri: Uri,
) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let json_answer = |body: serde_json::Value| {
        let content_type = [(header::CONTENT_TYPE, "application/json")];
        (content_type, body.to_string()).into_response()
    };
    let path = uri.path().trim_end_matches('/');
    if path.ends_with("/hub/health") {
        StatusCode::OK.into_response()
    } else if path.ends_with("/hub/api") {
        json_answer(json!({"version": *version.borrow()}))
    } else if path.ends_with("/hub/api/users") {
        json_answer(json!([]))
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

/// How long `pod` runs before it is played: its `kwok.hubgrade.io/delay`, else `agent_delay`
/// for an `agent` pod (which the hub's pod template annotations do not reach).
fn hold(pod: &Pod, agent_delay: Duration) -> Duration {
    if let Some(delay) = pod.annotations().get("kwok.hubgrade.io/delay")
        && let Ok(delay) = hubgrade::api::parse_duration(delay)
    {
        return delay.unsigned_abs();
    }
    match pod.labels().get("hubgrade.io/role").map(String::as_str) {
        Some("agent") => agent_delay,
        _ => Duration::ZERO,
    }
}

/// Plays `pod` (after its [`hold`]) and hands the result to KWOK.
async fn finish(client: Client, pod: Pod, volumes: &Path, agent_delay: Duration) {
    tokio::time::sleep(hold(&pod, agent_delay)).await;
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    // A pod deleted meanwhile (a cancelled migration) was killed: on a node its containers
    // would stop, so it does nothing more.
    // The API server may be away (restarted by the chaos tests): asked again, as a kubelet
    // does, so that a pod is never left unfinished for want of one answer.
    let name = pod.name_any();
    let now = until_answered(|| api.get_opt(&name)).await;
    match now {
        Some(now) if now.metadata.deletion_timestamp.is_none() && now.uid() == pod.uid() => {}
        _ => return,
    }
    // The agent's server backups hold futures the compiler cannot prove Send (async closures
    // over borrowed URLs): each pod is played on a runtime of its own thread, as `hubgrade
    // agent` runs them in its own process.
    let (code, report) = {
        let (api, pod, volumes) = (api.clone(), pod.clone(), volumes.to_path_buf());
        tokio::task::spawn_blocking(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(play(&api, &pod, &volumes)))
                .unwrap_or_else(|e| (1, format!("a runtime for the pod: {e}")))
        })
        .await
        .unwrap_or_else(|e| (1, format!("playing the pod panicked: {e}")))
    };
    eprintln!(
        "kwok-agent-standin: {namespace}/{} exit {code}: {report}",
        pod.name_any()
    );
    let patch = json!({"metadata": {"annotations": {
        "kwok.hubgrade.io/result": report,
        "kwok.hubgrade.io/exit-code": code.to_string(),
    }}});
    until_answered(|| async {
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            // Gone meanwhile: nobody waits for its result.
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            other => other.map(drop),
        }
    })
    .await;
}

/// Runs `request` until the API server answers it (every 500 ms, for at most 5 minutes).
async fn until_answered<T, F>(mut request: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Result<T, kube::Error>>,
{
    let started = std::time::Instant::now();
    loop {
        match request().await {
            Ok(answer) => return answer,
            Err(error) if started.elapsed() > Duration::from_secs(300) => {
                panic!("kwok-agent-standin: the API server did not answer for 5 minutes: {error}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// The alembic revision the stand-in migration leaves (JupyterHub 5.0 – 5.5).
const MIGRATED_REVISION: &str = "4621fec11365";

/// Runs the pod's containers on the local stand-ins of its volumes.
async fn play(pods: &Api<Pod>, pod: &Pod, volumes: &Path) -> (i32, String) {
    let namespace = pod.namespace().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return (1, "no pod spec".into());
    };
    let scratch = volumes
        .join(&namespace)
        .join(".pods")
        .join(pod.uid().unwrap_or_default());
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter());
    let mut pinned: Option<String> = None;
    let mut last = (1, "no container".to_string());
    for container in containers {
        // Where each mounted volume is on this machine.
        let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
        let mut secrets: Vec<(String, PathBuf, String)> = Vec::new();
        for mount in container.volume_mounts.iter().flatten() {
            let Some(volume) = spec.volumes.iter().flatten().find(|v| v.name == mount.name) else {
                continue;
            };
            if let Some(secret) = volume.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                secrets.push((mount.mount_path.clone(), scratch.join(&mount.name), secret));
                continue;
            }
            let local = match (&volume.persistent_volume_claim, &volume.empty_dir) {
                (Some(claim), _) => {
                    let root = volumes.join(&namespace).join(&claim.claim_name);
                    match mount.sub_path.as_deref().filter(|p| !p.is_empty()) {
                        Some(sub) => root.join(sub),
                        None => root,
                    }
                }
                (None, Some(_)) => scratch.join(&mount.name),
                _ => continue,
            };
            let _ = std::fs::create_dir_all(&local);
            moved.push((PathBuf::from(&mount.mount_path), local));
        }
        for (mounted, local, secret) in secrets {
            if let Err(error) = write_secret(pods, &namespace, &secret, &local).await {
                return (1, error);
            }
            moved.push((PathBuf::from(mounted), local));
        }
        let command = container.command.clone().unwrap_or_default();
        last = if command.first().map(String::as_str) == Some("jupyterhub") {
            let halfway = pod
                .annotations()
                .get("kwok.hubgrade.io/migration")
                .is_some_and(|m| m == "fails-halfway");
            let values = moved
                .iter()
                .find(|(mounted, _)| mounted == Path::new(hubgrade::hub::VALUES_MOUNT))
                .map(|(_, local)| local.clone());
            match (&pinned, values) {
                (Some(url), _) => standin_migration(url, halfway).await,
                (None, Some(values)) => standin_server_migration(values, halfway).await,
                (None, None) => (1, "upgrade-db ran without a pinned database".into()),
            }
        } else {
            let words = std::iter::once("agent".to_string())
                .chain(container.args.clone().unwrap_or_default());
            let mut agent = match AgentLine::try_parse_from(words) {
                Ok(line) => line.command,
                Err(error) => return (2, error.to_string()),
            };
            for (mounted, local) in &moved {
                agent = agent.with_paths_moved(mounted, local);
            }
            if let AgentCommand::PinDatabase { database_url, .. } = &agent {
                pinned = Some(database_url.clone());
            }
            let mut report = agent.execute().await;
            // Report paths as the pod sees them, as the real agent would.
            if let Some(backup) = report.backup.as_mut() {
                let as_mounted = |path: &mut String| {
                    for (mounted, local) in &moved {
                        if let Ok(rest) = Path::new(path.as_str()).strip_prefix(local) {
                            *path = mounted.join(rest).display().to_string();
                        }
                    }
                };
                as_mounted(&mut backup.reference);
                backup.pruned.iter_mut().for_each(as_mounted);
            }
            if let Some(message) = report.message.as_mut() {
                for (mounted, local) in &moved {
                    *message = message
                        .replace(&local.display().to_string(), &mounted.display().to_string());
                }
            }
            let code = if report.ok { 0 } else { 1 };
            (code, serde_json::to_string(&report).unwrap_or_default())
        };
        if last.0 != 0 {
            break;
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    last
}

/// Writes the Secret `name`'s keys as files into `folder`, as the kubelet mounts a Secret.
async fn write_secret(
    pods: &Api<Pod>,
    namespace: &str,
    name: &str,
    folder: &Path,
) -> Result<(), String> {
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(pods.clone().into_client(), namespace);
    // The API server away (a transport error or a 5xx) is asked again, as the kubelet tries
    // a mount again; a Secret that is not there, or not readable, fails the pod.
    let secret = until_answered(|| async {
        match secrets.get(name).await {
            Err(kube::Error::Api(status)) if status.code < 500 => Ok(Err(status.message)),
            other => other.map(Ok),
        }
    })
    .await
    .map_err(|e| format!("reading the Secret {namespace}/{name}: {e}"))?;
    std::fs::create_dir_all(folder).map_err(|e| e.to_string())?;
    for (key, value) in secret.data.unwrap_or_default() {
        std::fs::write(folder.join(&key), &value.0).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The stand-in migration of the server database the z2jh values in `values` name.
async fn standin_server_migration(values: PathBuf, fails_halfway: bool) -> (i32, String) {
    let source = hubgrade::agent::ServerSource {
        values: Some(values),
        ..Default::default()
    };
    let url = match source.url() {
        Ok(url) => url,
        Err(error) => return (1, error),
    };
    let result = async {
        use hubgrade::db::url::DatabaseUrl;
        let column = "ALTER TABLE users ADD COLUMN standin_migrated TEXT";
        let stamp = format!("UPDATE alembic_version SET version_num = '{MIGRATED_REVISION}'");
        // The same statements on either server, through its own connection type.
        macro_rules! migrate {
            ($connection:ty, $options:expr) => {{
                let mut db = <$connection>::connect_with(&$options?).await?;
                let (current,): (String,) =
                    sqlx::query_as("SELECT version_num FROM alembic_version")
                        .fetch_one(&mut db)
                        .await?;
                if current != MIGRATED_REVISION {
                    sqlx::query(column).execute(&mut db).await?;
                    if !fails_halfway {
                        sqlx::query(sqlx::AssertSqlSafe(stamp.clone()))
                            .execute(&mut db)
                            .await?;
                    }
                }
                db.close().await
            }};
        }
        match &url {
            DatabaseUrl::Postgres(server) => migrate!(sqlx::PgConnection, server.pg_options()),
            DatabaseUrl::Mysql(server) => migrate!(sqlx::MySqlConnection, server.mysql_options()),
            DatabaseUrl::Sqlite { .. } => Ok(()),
        }
    }
    .await;
    match (result, fails_halfway) {
        (Err(error), _) => (1, format!("stand-in migration: {error}")),
        (Ok(()), true) => (
            1,
            "alembic: the migration failed half-way (kwok.hubgrade.io/migration: fails-halfway)"
                .into(),
        ),
        (Ok(()), false) => (0, "upgrade-db done".into()),
    }
}

/// What `jupyterhub upgrade-db` does to an SQLite hub database, in miniature: a timestamped
/// copy next to it, then a schema change and the new alembic revision.
async fn standin_migration(url: &str, fails_halfway: bool) -> (i32, String) {
    let Some(path) = url.strip_prefix("sqlite:///") else {
        return (
            1,
            format!("the stand-in migrates SQLite files only, not {url}"),
        );
    };
    let path = Path::new(path);
    let stamp = jiff::Zoned::now().strftime("%Y-%m-%d-%H%M%S").to_string();
    let copy = PathBuf::from(format!("{}.{stamp}", path.display()));
    if let Err(error) = std::fs::copy(path, &copy) {
        return (1, format!("copying {}: {error}", path.display()));
    }
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    let result = async {
        let mut db = sqlx::SqliteConnection::connect_with(&options).await?;
        let (current,): (String,) = sqlx::query_as("SELECT version_num FROM alembic_version")
            .fetch_one(&mut db)
            .await?;
        if current == MIGRATED_REVISION {
            // Already at head: alembic has nothing to do.
            return db.close().await;
        }
        sqlx::query("ALTER TABLE users ADD COLUMN standin_migrated TEXT")
            .execute(&mut db)
            .await?;
        if !fails_halfway {
            sqlx::query("UPDATE alembic_version SET version_num = ?")
                .bind(MIGRATED_REVISION)
                .execute(&mut db)
                .await?;
        }
        sqlx::Connection::close(db).await
    }
    .await;
    match result {
        Ok(()) if fails_halfway => (
            1,
            "alembic: the migration failed half-way (kwok.hubgrade.io/migration: fails-halfway)"
                .into(),
        ),
        Ok(()) => (0, "upgrade-db done".into()),
        Err(error) => (
            1,
            format!("stand-in migration of {}: {error}", path.display()),
        ),
    }
}
