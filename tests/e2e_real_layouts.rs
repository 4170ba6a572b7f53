//! hubgrade upgrading, on the local cluster's real node, a real hub laid out as z2jh lays it out
//! for a Helm release whose objects are prefixed, with a sidecar: the hub of
//! examples/z2jh-hub/real/ (k8s-hub 3.3.8, JupyterHub 4.1.6, SQLite on its claim) rendered for
//! release `prod` with `fullnameOverride: null` (`RealHub::new_prefixed`): the Deployment,
//! ConfigMap and Secret `prod-jupyterhub-hub`, the claim `prod-jupyterhub-hub-db-dir`, and a
//! busybox container `sidecar` after the container `hub` (z2jh's `hub.extraContainers`).
//! The HubUpgrade names the Deployment and leaves the database to detection. A missing real
//! node, registry or image fails this test.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use hubgrade::machine::{BackupMethod, Phase};
use k8s_openapi::api::core::v1::{Pod, PodSpec, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::json;
use support::jupyterhub::revision_of_file;
use support::real_hub::{
    NEW_HEAD, NEW_IMAGE, OLD_IMAGE, Operator, RealHub, SIDECAR, SIDECAR_IMAGE,
};

const USERS: usize = 50;
/// Generous for two busy cores; an upgrade here takes a few minutes at most.
const UPGRADE_LIMIT: Duration = Duration::from_secs(900);
const TERMINAL: &[Phase] = &[Phase::Succeeded, Phase::RolledBack, Phase::Failed];
const DEPLOYMENT: &str = "prod-jupyterhub-hub";
const CLAIM: &str = "prod-jupyterhub-hub-db-dir";

/// (name, image) of a pod spec's containers, init containers first.
fn containers(pod: &PodSpec) -> Vec<(String, String)> {
    pod.init_containers
        .iter()
        .flatten()
        .chain(&pod.containers)
        .map(|c| (c.name.clone(), c.image.clone().unwrap_or_default()))
        .collect()
}

/// The claims a pod spec's volumes name.
fn claims(pod: &PodSpec) -> Vec<String> {
    pod.volumes
        .iter()
        .flatten()
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| c.claim_name.clone())
        .collect()
}

/// The running hub pods (the Deployment's selector: Job pods do not carry the hub's labels).
async fn hub_pods(hub: &RealHub) -> Vec<Pod> {
    let selector = hub
        .hub_deployment()
        .await
        .spec
        .and_then(|s| s.selector.match_labels)
        .expect("the hub Deployment's selector")
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    hub.pods()
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("listing the hub's pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

/// The one hub pod, once its every container (the hub and the sidecar) runs and is ready.
async fn running_hub_pod(hub: &RealHub) -> Pod {
    let limit = Duration::from_secs(120);
    let started = Instant::now();
    loop {
        let pods = hub_pods(hub).await;
        let ready = |p: &Pod| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c.ready))
        };
        if let [pod] = pods.as_slice()
            && ready(pod)
        {
            return pod.clone();
        }
        assert!(
            started.elapsed() < limit,
            "no one hub pod with its every container ready within {limit:?}:\n{}",
            hub.describe()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The hub Deployment's containers: `hub` on `hub_image`, then the sidecar on its own image.
async fn assert_hub_template(hub: &RealHub, hub_image: &str) {
    let template = hub
        .hub_deployment()
        .await
        .spec
        .and_then(|s| s.template.spec)
        .expect("the hub's pod template");
    assert_eq!(
        containers(&template),
        [
            ("hub".to_string(), hub_image.to_string()),
            (SIDECAR.to_string(), SIDECAR_IMAGE.to_string())
        ],
        "the hub Deployment's containers"
    );
    assert_eq!(claims(&template), [CLAIM], "the hub's claim");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_release_prefixed_hub_with_a_sidecar_is_upgraded_to_5_and_keeps_its_sidecar() {
    let hub = RealHub::new_prefixed("real-prefixed", "prod", Operator::HostProcess).await;
    assert_eq!(
        (hub.names.deployment.as_str(), hub.names.claim.as_str()),
        (DEPLOYMENT, CLAIM)
    );
    assert_hub_template(&hub, OLD_IMAGE).await;
    let before = running_hub_pod(&hub).await;
    let population = hub.populate(USERS);

    // `spec.hub.deployment` names the prefixed Deployment; the database is left to detection.
    let created = hub.apply_upgrade("to-5", NEW_IMAGE, json!({})).await;
    assert_eq!(created.spec.hub.deployment, DEPLOYMENT);
    let upgrade = hub.wait_for("to-5", TERMINAL, UPGRADE_LIMIT).await;
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{:?}; operator log:\n{}",
        status.progress.failure,
        hub.operator_log()
    );

    // The hub container runs 5.5.0; the sidecar is where it was, on its own image, and runs
    // in the new hub pod.
    hub.wait_for_hub(Duration::from_secs(120)).await;
    assert_eq!(hub.hub_image().await, NEW_IMAGE);
    assert_hub_template(&hub, NEW_IMAGE).await;
    let after = running_hub_pod(&hub).await;
    assert_ne!(after.uid(), before.uid(), "the hub pod was not replaced");
    let statuses = after
        .status
        .and_then(|s| s.container_statuses)
        .unwrap_or_default();
    let sidecar = statuses
        .iter()
        .find(|c| c.name == SIDECAR)
        .unwrap_or_else(|| panic!("no {SIDECAR} in the new hub pod: {statuses:?}"));
    assert!(
        sidecar
            .state
            .as_ref()
            .and_then(|s| s.running.as_ref())
            .is_some(),
        "the sidecar does not run in the new hub pod: {sidecar:?}"
    );
    assert_eq!(
        containers(&after.spec.expect("the new hub pod's spec")),
        [
            ("hub".to_string(), NEW_IMAGE.to_string()),
            (SIDECAR.to_string(), SIDECAR_IMAGE.to_string())
        ],
        "the new hub pod's containers"
    );

    // JupyterHub 5.5.0 answers, with everything 4.1.6 had, on the migrated database.
    assert_eq!(hub.hub_version(), "5.5.0");
    assert!(revision_of_file(&hub.database()).starts_with(NEW_HEAD));
    hub.assert_population(&population);

    // A verified File backup on the prefixed claim, with the recorded checksum.
    let backup = status.progress.backup.clone().expect("a backup in status");
    assert_eq!(backup.method, BackupMethod::File, "{backup:?}");
    assert_eq!(hub.names.claim, CLAIM);
    hub.assert_verified_backup(&upgrade);

    // The configuration backup holds the prefixed ConfigMap and Secret (key names only).
    let secrets: Api<Secret> = Api::namespaced(hub.client.clone(), hub.ns());
    let config = secrets
        .list(&ListParams::default().labels("hubgrade.io/step=config"))
        .await
        .expect("listing Secrets")
        .items;
    assert_eq!(config.len(), 1, "one configuration backup");
    let keys: BTreeSet<String> = config[0]
        .data
        .iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .collect();
    for key in [
        format!("configmap.{DEPLOYMENT}.jupyterhub_config.py"),
        format!("secret.{DEPLOYMENT}.values.yaml"),
    ] {
        assert!(
            keys.contains(&key),
            "no {key} in the configuration backup: {keys:?}"
        );
    }

    // The Jobs (rehearsal, backup, migration) ran only what hubgrade derives from the hub
    // container and its own agent, on the prefixed claim: never the sidecar.
    let mut ran = Vec::new();
    for step in ["rehearsal", "backup", "migration"] {
        let jobs = hub.jobs_for(step).await;
        assert_eq!(jobs.len(), 1, "one {step} Job: {jobs:?}");
        let job = &jobs[0];
        assert!(
            job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0,
            "the {step} Job did not succeed: {:?}",
            job.status
        );
        let template = job
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .expect("the Job's pod template");
        let pods = hub
            .pods()
            .list(&ListParams::default().labels(&format!("hubgrade.io/step={step}")))
            .await
            .expect("listing the Job's pods")
            .items;
        assert!(!pods.is_empty(), "the {step} Job's pod is gone");
        let specs = std::iter::once(("template".to_string(), Some(template))).chain(
            pods.into_iter()
                .map(|p| (format!("pod {}", p.name_any()), p.spec)),
        );
        for (what, spec) in specs {
            let spec = spec.unwrap_or_else(|| panic!("the {step} Job's {what} has no spec"));
            let names = containers(&spec);
            assert!(
                names
                    .iter()
                    .all(|(name, image)| name != SIDECAR && image != SIDECAR_IMAGE),
                "the {step} Job's {what} runs the hub's sidecar: {names:?}"
            );
            assert_eq!(claims(&spec), [CLAIM], "the {step} Job's {what}'s claim");
            ran.push((step, what, names));
        }
    }
    let migration: Vec<&(String, String)> = ran
        .iter()
        .filter(|(step, _, _)| *step == "migration")
        .flat_map(|(_, _, names)| names)
        .collect();
    assert!(
        migration
            .iter()
            .any(|(name, image)| name == "upgrade-db" && image == NEW_IMAGE),
        "the migration Job ran no upgrade-db on {NEW_IMAGE}: {migration:?}"
    );
    for (step, what, names) in &ran {
        let names: Vec<&str> = names.iter().map(|(name, _)| name.as_str()).collect();
        eprintln!("{step} Job's {what}: {names:?}");
    }
    eprintln!("scenario took {:?}", hub.started.elapsed());
    hub.delete_namespace().await;
}
