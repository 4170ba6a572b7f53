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
//!
//! It hands the last report and the exit code to KWOK through pod annotations
//! (`kwok.hubgrade.io/result`, `kwok.hubgrade.io/exit-code`), which the `pod-agent-finish`
//! stage turns into the container's termination message and exit code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use hubgrade::agent::AgentCommand;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use sqlx::Connection;

#[derive(Debug, Parser)]
#[command(about = "Runs hubgrade agent pods' work locally, for a KWOK cluster (tests only)")]
struct Args {
    /// Only pods in this namespace (default: all).
    #[arg(long)]
    namespace: Option<String>,
    /// Root of the local directories standing for volume claims.
    #[arg(long)]
    volumes: PathBuf,
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
    let mut started: HashSet<String> = HashSet::new();
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
            tokio::spawn(async move { finish(client, pod, &volumes).await });
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Plays `pod` (after its `kwok.hubgrade.io/delay`, if any) and hands the result to KWOK.
async fn finish(client: Client, pod: Pod, volumes: &Path) {
    if let Some(delay) = pod.annotations().get("kwok.hubgrade.io/delay")
        && let Ok(delay) = hubgrade::api::parse_duration(delay)
    {
        tokio::time::sleep(delay.unsigned_abs()).await;
    }
    let namespace = pod.namespace().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    // A pod deleted meanwhile (a cancelled migration) was killed: on a node its containers
    // would stop, so it does nothing more.
    match api.get_opt(&pod.name_any()).await {
        Ok(Some(now)) if now.metadata.deletion_timestamp.is_none() && now.uid() == pod.uid() => {}
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
    let _ = api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await;
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
    let secret = secrets
        .get(name)
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
