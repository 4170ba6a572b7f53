//! kwok-agent-standin: TEST INFRASTRUCTURE ONLY, for the KWOK-based local cluster, where no
//! container runs. It plays the part of the container of every pod that runs `hubgrade agent`
//! (label `hubgrade.io/role: agent`): it parses the pod's arguments with hubgrade's own parser,
//! runs hubgrade's own agent code against a local directory standing for each volume claim
//! (`<volumes>/<namespace>/<claim>/`), and hands the report and exit code to KWOK through pod
//! annotations (`kwok.hubgrade.io/result`, `kwok.hubgrade.io/exit-code`), which the
//! `pod-agent-finish` stage turns into the container's termination message and exit code.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use hubgrade::cli::agent::AgentCommand;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

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
    let mut done: HashSet<String> = HashSet::new();
    loop {
        let listed = pods
            .list(&ListParams::default().labels("hubgrade.io/role=agent"))
            .await;
        for pod in listed.map(|l| l.items).unwrap_or_default() {
            let uid = pod.uid().unwrap_or_default();
            let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
            let answered = pod.annotations().contains_key("kwok.hubgrade.io/result");
            if !running || answered || done.contains(&uid) {
                continue;
            }
            let (code, report) = play(&pod, &args.volumes).await;
            let namespace = pod.namespace().unwrap_or_default();
            eprintln!(
                "kwok-agent-standin: {namespace}/{} exit {code}: {report}",
                pod.name_any()
            );
            let patch = json!({"metadata": {"annotations": {
                "kwok.hubgrade.io/result": report,
                "kwok.hubgrade.io/exit-code": code.to_string(),
            }}});
            let api: Api<Pod> = Api::namespaced(client.clone(), &namespace);
            if api
                .patch(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await
                .is_ok()
            {
                done.insert(uid);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Runs the pod's agent command on the local stand-ins of its volumes.
async fn play(pod: &Pod, volumes: &Path) -> (i32, String) {
    let namespace = pod.namespace().unwrap_or_default();
    let Some(spec) = pod.spec.as_ref() else {
        return (1, "no pod spec".into());
    };
    let Some(container) = spec.containers.first() else {
        return (1, "no container".into());
    };
    let words =
        std::iter::once("agent".to_string()).chain(container.args.clone().unwrap_or_default());
    let mut command = match AgentLine::try_parse_from(words) {
        Ok(line) => line.command,
        Err(error) => return (2, error.to_string()),
    };
    let mut moved: Vec<(PathBuf, PathBuf)> = Vec::new();
    for mount in container.volume_mounts.iter().flatten() {
        let claim = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        if let Some(claim) = claim {
            let local = volumes.join(&namespace).join(claim);
            command = command.with_paths_moved(Path::new(&mount.mount_path), &local);
            moved.push((local, PathBuf::from(&mount.mount_path)));
        }
    }
    let mut report = command.execute().await;
    // Report paths as the pod sees them, as the real agent would.
    if let Some(backup) = report.backup.as_mut() {
        for (local, mounted) in &moved {
            if let Ok(rest) = Path::new(&backup.reference).strip_prefix(local) {
                backup.reference = mounted.join(rest).display().to_string();
            }
        }
    }
    let code = if report.ok { 0 } else { 1 };
    (code, serde_json::to_string(&report).unwrap_or_default())
}
