//! Issue "Helm, Argo CD, Flux and kubectl", point 2, for real: a z2jh-shaped hub installed by
//! `helm install` of an umbrella chart with hubgrade's hooks (the README's "With Helm" recipe,
//! examples/helm/umbrella/templates/hubgrade-hooks.yaml), upgraded by `helm upgrade --atomic`
//! on the real node. The hook Jobs run hubgrade's image in real containers; Helm, not hubgrade,
//! writes the hub image. A failed upgrade ends with the previous release and the old image
//! running on the restored database.

mod support;

use std::time::Duration;

use hubgrade::machine::{ImageManagement, Phase};
use support::real_hub::{
    NEVER_READY_IMAGE, NEW_IMAGE, OLD_IMAGE, Operator, RealHub, helm, helm_values,
};

const RELEASE: &str = "jhub";
const USERS: usize = 30;
const UPGRADE_LIMIT: Duration = Duration::from_secs(900);
const TERMINAL: &[Phase] = &[Phase::Succeeded, Phase::RolledBack, Phase::Failed];

/// `helm upgrade --atomic` of the umbrella chart to `hub_image`, with `extra` `--set` values;
/// returns helm's output.
fn helm_upgrade(hub: &RealHub, hub_image: &str, extra: &[&str]) -> std::process::Output {
    let mut command = helm(hub.ns(), &["upgrade", RELEASE]);
    command
        .arg(hub.umbrella())
        .args(helm_values(hub.agent_image(), hub_image))
        .args(["--atomic", "--timeout", "12m"]);
    for value in extra {
        command.args(["--set", value]);
    }
    command.output().expect("helm upgrade")
}

/// The release's revisions as `helm history` shows them: (revision, status).
fn history(hub: &RealHub) -> Vec<(u32, String)> {
    let out = helm(hub.ns(), &["history", RELEASE, "-o", "json"])
        .output()
        .expect("helm history");
    assert!(out.status.success(), "{}", support::stderr(&out));
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&out.stdout).expect("helm history JSON");
    rows.iter()
        .map(|r| {
            (
                r["revision"].as_u64().unwrap_or_default() as u32,
                r["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Whether any managed-fields entry of hubgrade owns the hub container's image.
async fn hubgrade_wrote_the_image(hub: &RealHub) -> bool {
    let deployments: kube::Api<k8s_openapi::api::apps::v1::Deployment> =
        kube::Api::namespaced(support::client().await, hub.ns());
    let deployment = deployments.get("hub").await.expect("hub");
    deployment
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter(|f| f.manager.as_deref() == Some("hubgrade"))
        .any(|f| {
            f.fields_v1
                .as_ref()
                .is_some_and(|v| v.0.to_string().contains("f:image"))
        })
}

/// One release through two `helm upgrade --atomic` runs: first to a hub that never becomes
/// Ready (the migration works, the new hub does not start): the post-upgrade hook fails once
/// the database is restored, Helm rolls the release back, and hubgrade, which kept the hub
/// stopped, verifies the old hub on its restored database: RolledBack. Then to the working
/// 4.4.0: the pre-upgrade hook waits for the migration, Helm sets the image, the post-upgrade
/// hook waits for Succeeded, and the users and their tokens are all there.
#[tokio::test(flavor = "multi_thread")]
async fn helm_upgrade_atomic_rolls_back_a_failed_hub_then_upgrades_it() {
    let hub = RealHub::new_helm_release("helm-hooks", RELEASE, Operator::HostProcess).await;
    let population = hub.populate(USERS);
    assert_eq!(hub.hub_image().await, OLD_IMAGE);

    // 1. A hub that never becomes Ready: helm fails, the previous release comes back.
    let failed = helm_upgrade(
        &hub,
        NEVER_READY_IMAGE,
        &["hubgrade.spec.rollout.timeout=1m"],
    );
    assert!(
        !failed.status.success(),
        "helm upgrade to a hub that never starts succeeded:\n{}",
        support::stdout(&failed)
    );
    let upgrade = hub.wait_for("jhub-r2", TERMINAL, UPGRADE_LIMIT).await;
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::RolledBack,
        "{:?}; helm said:\n{}\noperator log:\n{}",
        status.progress.failure,
        support::stderr(&failed),
        hub.operator_log()
    );
    assert!(status.progress.migration_succeeded && status.progress.database_restored);
    assert_eq!(
        status.progress.image_management,
        Some(ImageManagement::External)
    );
    assert_eq!(hub.hub_image().await, OLD_IMAGE);
    hub.wait_for_hub(Duration::from_secs(180)).await;
    assert_eq!(hub.hub_version(), "4.1.6");
    hub.assert_population(&population);
    let revisions = history(&hub);
    assert_eq!(
        revisions.last().map(|(_, s)| s.as_str()),
        Some("deployed"),
        "{revisions:?}"
    );
    assert!(
        revisions.iter().any(|(r, s)| *r == 2 && s == "failed"),
        "{revisions:?}"
    );

    // 2. The working 4.4.0.
    let done = helm_upgrade(&hub, NEW_IMAGE, &[]);
    assert!(
        done.status.success(),
        "helm upgrade to {NEW_IMAGE} failed:\n{}\noperator log:\n{}",
        support::stderr(&done),
        hub.operator_log()
    );
    let revision = history(&hub).last().map(|(r, _)| *r).expect("a revision");
    let name = format!("jhub-r{revision}");
    let upgrade = hub.wait_for(&name, TERMINAL, Duration::from_secs(60)).await;
    let status = upgrade.status.clone().expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{}",
        status.progress.message
    );
    assert_eq!(hub.hub_image().await, NEW_IMAGE);
    hub.wait_for_hub(Duration::from_secs(180)).await;
    assert_eq!(hub.hub_version(), "5.5.0");
    hub.assert_population(&population);
    assert!(
        !hubgrade_wrote_the_image(&hub).await,
        "hubgrade wrote the image of a Helm release"
    );

    // 3. A release that does not change the image: its HubUpgrade ends at once.
    let same = helm_upgrade(&hub, NEW_IMAGE, &[]);
    assert!(same.status.success(), "{}", support::stderr(&same));
    let revision = history(&hub).last().map(|(r, _)| *r).expect("a revision");
    let upgrade = hub
        .wait_for(
            &format!("jhub-r{revision}"),
            TERMINAL,
            Duration::from_secs(60),
        )
        .await;
    let status = upgrade.status.expect("status");
    assert_eq!(
        (status.progress.phase, status.progress.reason.as_str()),
        (Phase::Succeeded, "AlreadyAtTarget")
    );
    hub.delete_namespace().await;
}
