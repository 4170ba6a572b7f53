//! Issue "Helm, Argo CD, Flux and kubectl", points 1, 2 and 4, as a state sequence on the local
//! (KWOK) cluster: a hub that Helm manages is upgraded without hubgrade ever writing its image
//! (Auto is External there), Operator on such a hub is refused unless the drift is accepted,
//! and a roll back keeps the hub stopped on its restored database until the tool (here
//! `kubectl` standing in for `helm rollback`) puts the original image back. The real `helm`
//! with hook Jobs on the real node: tests/helm_hooks.rs.

mod support;

use std::time::{Duration, Instant};

use hubgrade::machine::{ImageManagement, Phase};
use support::argocd::argocd_health;
use support::e2e::{Hub, ORIGINAL_IMAGE, assert_phase, checksum};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const LIMIT: Duration = Duration::from_secs(120);
const TERMINAL: [Phase; 3] = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];

/// Marks the hub Deployment as `helm install` leaves a z2jh 4 release (labels and annotations
/// only; what `helm` would also do to the pod template does not matter here).
fn mark_as_helm_release(hub: &Hub) {
    for args in [
        vec![
            "label",
            "deployment/hub",
            "app.kubernetes.io/managed-by=Helm",
            "heritage=Helm",
        ],
        vec![
            "annotate",
            "deployment/hub",
            "meta.helm.sh/release-name=jhub",
            &format!("meta.helm.sh/release-namespace={}", hub.ns()),
        ],
    ] {
        let mut full = vec!["-n", hub.ns(), "--field-manager=helm"];
        full.extend(args.iter().map(|a| &**a));
        let out = support::kubectl(&full).output().expect("kubectl");
        assert!(out.status.success(), "{}", support::stderr(&out));
    }
}

/// What Helm does to the hub's image: the container's image, written by the field manager
/// "helm" (`helm upgrade` of the new chart version, or `helm rollback`).
fn helm_sets(hub: &Hub, image: &str, replicas: Option<i32>) {
    let out = support::kubectl(&[
        "-n",
        hub.ns(),
        "set",
        "image",
        "deployment/hub",
        &format!("hub={image}"),
        "--field-manager=helm",
    ])
    .output()
    .expect("kubectl");
    assert!(out.status.success(), "{}", support::stderr(&out));
    if let Some(replicas) = replicas {
        let out = support::kubectl(&[
            "-n",
            hub.ns(),
            "scale",
            "deployment/hub",
            &format!("--replicas={replicas}"),
        ])
        .output()
        .expect("kubectl");
        assert!(out.status.success(), "{}", support::stderr(&out));
    }
}

/// The upgrade's message, once it contains `words`.
async fn wait_for_message(hub: &Hub, name: &str, words: &str) -> String {
    let start = Instant::now();
    loop {
        let upgrade = hub.upgrades().get(name).await.expect("upgrade");
        let status = upgrade.status.unwrap_or_default();
        if status.progress.message.contains(words) {
            return status.progress.message;
        }
        assert!(
            !status.progress.phase.is_terminal() && start.elapsed() < LIMIT,
            "{name} never said {words:?}; it is {} ({})",
            status.progress.phase,
            status.progress.message
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Point 1 and 2: Auto on a Helm release is External. hubgrade stops the hub, backs it up and
/// migrates, then waits for Helm to set the image; it never writes the image itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_helm_manages_is_upgraded_without_hubgrade_writing_its_image() {
    let hub = Hub::new("gitops-helm", |yaml| yaml).await;
    mark_as_helm_release(&hub);
    hub.apply_upgrade(
        "to-target",
        serde_json::json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    let message = wait_for_message(&hub, "to-target", "waiting for Helm (release jhub)").await;
    assert!(message.contains(TARGET), "{message}");
    let upgrade = hub.upgrades().get("to-target").await.expect("upgrade");
    let status = upgrade.status.expect("status");
    assert_eq!(status.progress.phase, Phase::RollingOut);
    assert!(status.progress.migration_succeeded);
    assert_eq!(
        status.progress.image_management,
        Some(ImageManagement::External)
    );
    // It waits: the image stays what Helm last set.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);

    helm_sets(&hub, TARGET, None);
    let done = hub.wait_for("to-target", &TERMINAL, LIMIT).await;
    assert_phase(&done.status.expect("status"), Phase::Succeeded);
    assert!(hub.hub_available().await);
    assert_image_never_written_by_hubgrade(&hub).await;
}

/// No managed-fields entry of hubgrade owns the hub container's image.
async fn assert_image_never_written_by_hubgrade(hub: &Hub) {
    let deployment = hub.hub().await;
    for entry in deployment.metadata.managed_fields.unwrap_or_default() {
        let fields = entry.fields_v1.map(|f| f.0.to_string()).unwrap_or_default();
        if entry.manager.as_deref() == Some("hubgrade") {
            assert!(
                !fields.contains("f:image"),
                "hubgrade owns the image field: {fields}"
            );
        }
    }
}

/// Point 1: Operator on a hub Helm manages is refused, naming what would happen, and changes
/// nothing; with the drift accepted it runs.
#[tokio::test(flavor = "multi_thread")]
async fn operator_mode_on_a_helm_release_is_refused_unless_the_drift_is_accepted() {
    let hub = Hub::new("gitops-operator", |yaml| yaml).await;
    mark_as_helm_release(&hub);
    // Annotations bump a Deployment's generation: let its controller observe it first.
    assert!(hub.hub_available().await);
    let version = hub.hub().await.metadata.resource_version;
    let spec = serde_json::json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
                                  "rollout": {"imageManagement": "Operator"}});
    let status = hub.run_upgrade("operator", spec, LIMIT).await;
    assert_phase(&status, Phase::Failed);
    assert_eq!(status.progress.reason, "ManagedHub");
    for words in ["managed by Helm (release jhub)", "rollout.acceptImageDrift"] {
        assert!(
            status.progress.message.contains(words),
            "{}",
            status.progress.message
        );
    }
    assert_eq!(hub.hub().await.metadata.resource_version, version);

    let spec = serde_json::json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
        "rollout": {"imageManagement": "Operator", "acceptImageDrift": true}});
    let status = hub.run_upgrade("accepted", spec, LIMIT).await;
    assert_phase(&status, Phase::Succeeded);
    assert_eq!(hub.hub_image().await, TARGET);
}

/// Point 2, the `helm upgrade --atomic` sequence: Helm rolls out a target that never becomes
/// Ready; hubgrade restores the database and keeps the hub stopped (even when the tool scales
/// it up again) until Helm puts the original image back, then verifies it: RolledBack, the
/// database as it was, and not one image write by hubgrade.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_roll_out_of_a_helm_release_waits_for_helm_to_put_the_old_image_back() {
    let hub = Hub::new("gitops-atomic", |yaml| yaml).await;
    mark_as_helm_release(&hub);
    let original = checksum(&hub.database());
    // KWOK never readies a non-Job pod whose image mentions never-ready.
    let target = "quay.io/jupyterhub/k8s-hub:4.2.0-never-ready";
    hub.apply_upgrade(
        "to-broken",
        serde_json::json!({"hub": {"deployment": "hub"}, "targetImage": target,
                           "rollout": {"timeout": "8s"}}),
    )
    .await;
    wait_for_message(&hub, "to-broken", "waiting for Helm (release jhub)").await;
    // `helm upgrade` applies the new chart: the new image, and the chart's replicas.
    helm_sets(&hub, target, Some(1));
    let message = wait_for_message(&hub, "to-broken", "set the hub image back to").await;
    assert!(message.contains("database restored"), "{message}");
    assert!(message.contains(ORIGINAL_IMAGE), "{message}");
    // A sync that brings the broken hub back up is stopped again: the database stays untouched.
    helm_sets(&hub, target, Some(1));
    support::wait_until(LIMIT, "the hub to be scaled to zero again", || async {
        hub.hub()
            .await
            .spec
            .and_then(|s| s.replicas)
            .is_some_and(|r| r == 0)
    })
    .await;
    let status = hub
        .upgrades()
        .get("to-broken")
        .await
        .expect("upgrade")
        .status
        .expect("status");
    assert_eq!(status.progress.phase, Phase::RollingBack);
    assert_eq!(hub.hub_image().await, target);
    assert_eq!(checksum(&hub.database()), original);

    // `helm --atomic` rolls the release back: the original image, the chart's replicas.
    helm_sets(&hub, ORIGINAL_IMAGE, Some(1));
    let done = hub.wait_for("to-broken", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::RolledBack);
    assert!(status.progress.database_restored);
    assert!(hub.hub_available().await);
    assert_eq!(checksum(&hub.database()), original);
    assert_image_never_written_by_hubgrade(&hub).await;
}

/// The README's Argo CD recipe, live: examples/argocd/hub-upgrade.yaml applied as it is (sync
/// wave -1) to a hub Argo CD tracks. Argo CD's health check, run by Lua on the live object,
/// turns Healthy only once the database is migrated, while the hub still has its old image;
/// then the next wave (the chart's Deployment, here `kubectl set image` by "argocd-controller")
/// sets the new image, and the upgrade ends Succeeded, Healthy.
#[tokio::test(flavor = "multi_thread")]
async fn argo_cd_syncs_the_next_wave_once_the_upgrade_is_healthy() {
    let hub = Hub::new("gitops-argocd", |yaml| yaml).await;
    let annotated = support::kubectl(&[
        "-n",
        hub.ns(),
        "annotate",
        "deployment/hub",
        &format!(
            "argocd.argoproj.io/tracking-id=jhub:apps/Deployment:{}/hub",
            hub.ns()
        ),
    ])
    .output()
    .expect("kubectl");
    assert!(
        annotated.status.success(),
        "{}",
        support::stderr(&annotated)
    );
    let recipe = std::fs::read_to_string(support::repo().join("examples/argocd/hub-upgrade.yaml"))
        .expect("examples/argocd/hub-upgrade.yaml")
        .replace("namespace: jhub", &format!("namespace: {}", hub.ns()))
        .replace("quay.io/jupyterhub/k8s-hub:4.2.0", TARGET);
    let applied = support::kubectl_with_input(&["apply", "-f", "-"], &recipe);
    assert!(applied.status.success(), "{}", support::stderr(&applied));

    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let live = hub.upgrades().get("hub-to-4-2-0").await.expect("upgrade");
        let health = argocd_health(&serde_json::to_value(&live).expect("JSON"));
        if seen.last() != Some(&health.status) {
            seen.push(health.status.clone());
        }
        if health.status == "Healthy" {
            let status = live.status.expect("status");
            assert_eq!(status.progress.phase, Phase::RollingOut, "{health:?}");
            assert!(status.progress.migration_succeeded);
            assert!(
                health.message.contains("Argo CD (application jhub)"),
                "{health:?}"
            );
            break;
        }
        assert_ne!(health.status, "Degraded", "{health:?}");
        assert!(start.elapsed() < LIMIT, "never Healthy: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        seen.first().map(String::as_str),
        Some("Progressing"),
        "{seen:?}"
    );
    assert_eq!(
        hub.hub_image().await,
        ORIGINAL_IMAGE,
        "the image moved before wave 0"
    );

    // Wave 0: Argo CD applies the chart with the new image.
    let synced = support::kubectl(&[
        "-n",
        hub.ns(),
        "set",
        "image",
        "deployment/hub",
        &format!("hub={TARGET}"),
        "--field-manager=argocd-controller",
    ])
    .output()
    .expect("kubectl");
    assert!(synced.status.success(), "{}", support::stderr(&synced));
    let done = hub.wait_for("hub-to-4-2-0", &TERMINAL, LIMIT).await;
    assert_eq!(
        done.status.as_ref().expect("status").progress.phase,
        Phase::Succeeded
    );
    let health = argocd_health(&serde_json::to_value(&done).expect("JSON"));
    assert_eq!(health.status, "Healthy", "{health:?}");
    assert_image_never_written_by_hubgrade(&hub).await;
}
