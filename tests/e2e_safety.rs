//! Issue "Safety", points 3 to 6 and 8, end to end on the local (KWOK) cluster: the rehearsal
//! runs on the hub pod's node; a HubUpgrade deleted mid-upgrade first brings the hub back; a
//! hub scaled back up during the migration is stopped at once with an Event naming who did it;
//! a Job whose pod cannot start fails the step within a minute; the stand-in migration really
//! changes the database, so the roll back has something to undo. (Points 1, 2: the real
//! JupyterHub tests in tests/upgrade_db_pinned.rs; point 7: tests/db_sqlite.rs.)

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use hubgrade::machine::Phase;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use serde_json::json;
use support::e2e::{Hub, ORIGINAL_IMAGE, assert_phase, checksum, with_template_annotations};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const LIMIT: Duration = Duration::from_secs(120);
const TERMINAL: [Phase; 3] = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];
async fn wait_for_phase(hub: &Hub, name: &str, phase: Phase) {
    hub.wait_for(name, &[phase], LIMIT).await;
}

/// Point 3: on a cluster with several nodes, a ReadWriteOnce claim in use by the hub can only
/// be mounted on the hub pod's node: the rehearsal runs there, even when the scheduler would
/// put it elsewhere (here: the hub's node is cordoned).
#[tokio::test(flavor = "multi_thread")]
async fn rehearsal_runs_on_the_hub_pods_node() {
    let client = support::client().await;
    let pool = support::unique("pool");
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..2 {
        let node: Node = serde_json::from_value(json!({
            "metadata": {
                "name": format!("{pool}-{i}"),
                "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                "labels": {"kubernetes.io/os": "linux", "hubgrade-test/pool": pool, "type": "kwok"}
            },
            "spec": {"taints": [{"key": "hubgrade-test/pool", "value": pool, "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"},
                       "capacity": {"cpu": "32", "memory": "256Gi", "pods": "110"}}
        }))
        .expect("node");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("creating a node");
    }
    let placement = format!(
        "      serviceAccountName: hub\n      nodeSelector: {{hubgrade-test/pool: {pool}}}\n      tolerations: [{{key: hubgrade-test/pool, operator: Equal, value: {pool}, effect: NoSchedule}}]\n"
    );
    let hub = Hub::new("e2e-node", move |yaml| {
        yaml.replace("      serviceAccountName: hub\n", &placement)
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(hub.client.clone(), hub.ns());
    let hub_pod = pods
        .list(&ListParams::default().labels("component=hub"))
        .await
        .expect("hub pods")
        .items
        .into_iter()
        .next()
        .expect("a hub pod");
    let hub_node = hub_pod
        .spec
        .and_then(|s| s.node_name)
        .expect("the hub pod's node");
    nodes
        .patch(
            &hub_node,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .expect("cordoning the hub's node");

    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    let done = hub.wait_for("to-4-2-0", &TERMINAL, LIMIT).await;
    let rehearsal_pods = pods
        .list(&ListParams::default().labels("hubgrade.io/step=rehearsal"))
        .await
        .expect("rehearsal pods")
        .items;
    for i in 0..2 {
        let _ = nodes
            .delete(&format!("{pool}-{i}"), &DeleteParams::default())
            .await;
    }
    let status = done.status.expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{}",
        status.progress.message
    );
    assert_eq!(rehearsal_pods.len(), 1);
    assert_eq!(
        rehearsal_pods[0]
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref()),
        Some(hub_node.as_str()),
        "the rehearsal ran on another node than the hub pod, whose claim it mounts"
    );
}

/// Point 4: deleting a HubUpgrade after it stopped the hub (as Argo CD prune or a Helm hook
/// delete policy does) rolls the hub back first: database restored, original image, hub
/// Ready; the outcome is recorded in an Event before the object goes.
async fn deleted_mid_migration(propagation: PropagationPolicy, prefix: &str) {
    let hub = Hub::new(
        prefix,
        with_template_annotations("kwok.hubgrade.io/delay: 4s"),
    )
    .await;
    let original = checksum(&hub.database());
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET, "migration": {"rehearse": false}}),
    )
    .await;
    wait_for_phase(&hub, "to-4-2-0", Phase::Migrating).await;
    let params = DeleteParams {
        propagation_policy: Some(propagation),
        ..Default::default()
    };
    hub.upgrades()
        .delete("to-4-2-0", &params)
        .await
        .expect("deleting the HubUpgrade");
    support::wait_until(LIMIT, "the deleted HubUpgrade to go", || async {
        hub.upgrades()
            .get_opt("to-4-2-0")
            .await
            .ok()
            .flatten()
            .is_none()
    })
    .await;

    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert_eq!(hub.hub().await.spec.and_then(|s| s.replicas), Some(1));
    assert!(hub.hub_available().await, "the hub was left down");
    assert_eq!(
        checksum(&hub.database()),
        original,
        "the database is not the one from before the upgrade"
    );
    let annotations = hub.hub().await.metadata.annotations.unwrap_or_default();
    assert!(!annotations.contains_key("hubgrade.io/locked-by"));
    let events = hub.event_reasons("to-4-2-0").await;
    assert!(
        events
            .iter()
            .any(|(_, reason, note)| reason == "RolledBack" && note.contains("deleted")),
        "no RolledBack Event saying why: {events:?}"
    );
    support::wait_until(Duration::from_secs(30), "its Jobs to be gone", || async {
        hub.jobs()
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=hubgrade"))
            .await
            .map(|l| {
                l.items
                    .iter()
                    .all(|j| j.metadata.deletion_timestamp.is_some())
            })
            .unwrap_or(false)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_upgrade_mid_migration_rolls_the_hub_back_first() {
    deleted_mid_migration(PropagationPolicy::Background, "e2e-delete").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_an_upgrade_in_the_foreground_as_argo_cd_prunes_rolls_the_hub_back_first() {
    deleted_mid_migration(PropagationPolicy::Foreground, "e2e-delfg").await;
}

/// Point 5: `kubectl scale` (or Helm, or a GitOps tool) bringing the hub back during the
/// migration: the Deployment watch wakes the operator, which stops it at once and says who.
#[tokio::test(flavor = "multi_thread")]
async fn a_hub_scaled_back_up_mid_upgrade_is_stopped_at_once_naming_who() {
    let hub = Hub::new(
        "e2e-scaled",
        with_template_annotations("kwok.hubgrade.io/delay: 6s"),
    )
    .await;
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET, "migration": {"rehearse": false}}),
    )
    .await;
    wait_for_phase(&hub, "to-4-2-0", Phase::Migrating).await;
    let scaled = support::kubectl(&["scale", "deployment/hub", "--replicas=1", "-n", hub.ns()])
        .output()
        .expect("kubectl scale");
    assert!(scaled.status.success(), "{}", support::stderr(&scaled));
    let start = Instant::now();
    support::wait_until(
        Duration::from_secs(3),
        "the hub to be scaled to zero again",
        || async { hub.hub().await.spec.and_then(|s| s.replicas) == Some(0) },
    )
    .await;
    let reacted = start.elapsed();
    let done = hub.wait_for("to-4-2-0", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{}",
        status.progress.message
    );
    let events = hub.event_reasons("to-4-2-0").await;
    let restarted = events
        .iter()
        .find(|(kind, reason, _)| kind == "Warning" && reason == "HubRestarted")
        .unwrap_or_else(|| panic!("no HubRestarted Event: {events:?}"));
    assert!(
        restarted.2.contains("kubectl"),
        "the Event does not name who scaled the hub: {}",
        restarted.2
    );
    assert!(
        reacted < Duration::from_secs(3),
        "the operator took {reacted:?} to stop the hub"
    );
}

/// Point 6: a Job whose pod cannot start (its image cannot be pulled) fails its step within a
/// minute instead of waiting out the 30-minute migration timeout; here the rehearsal, so the
/// hub is untouched.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_pod_cannot_start_fails_within_a_minute() {
    let hub = Hub::new(
        "e2e-stuck",
        with_template_annotations("kwok.hubgrade.io/waiting: ImagePullBackOff"),
    )
    .await;
    let start = Instant::now();
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    let done = hub.wait_for("to-4-2-0", &TERMINAL, LIMIT).await;
    let took = start.elapsed();
    let status = done.status.expect("status");
    assert_eq!(status.progress.phase, Phase::Failed);
    assert!(
        status.progress.message.contains("ImagePullBackOff"),
        "{}",
        status.progress.message
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(hub.hub_available().await);
}

/// Point 8: the migration on KWOK really changes the database (the stand-in plays
/// `upgrade-db`), and the revision it reached is read back and recorded.
#[tokio::test(flavor = "multi_thread")]
async fn the_stand_in_migration_changes_the_database_and_its_revision_is_recorded() {
    let hub = Hub::new("e2e-revision", |yaml| yaml).await;
    let original = checksum(&hub.database());
    hub.apply_upgrade(
        "to-4-2-0",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    let done = hub.wait_for("to-4-2-0", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_eq!(status.progress.phase, Phase::Succeeded);
    assert_ne!(
        checksum(&hub.database()),
        original,
        "the migration changed nothing"
    );
    let to = status.progress.to.expect("status.to");
    assert_eq!(to.image, TARGET);
    assert_eq!(to.revision.as_deref(), Some("4621fec11365"));
}

/// #15 point 2: in a namespace that enforces the `restricted` Pod Security Standard, every pod
/// hubgrade makes is admitted: the rehearsal, backup, migration and restore of an upgrade that
/// rolls back, then those of one that succeeds. A pod the admission refused would leave its Job
/// without a pod and the upgrade would not end as it does.
#[tokio::test(flavor = "multi_thread")]
async fn every_pod_hubgrade_makes_is_admitted_under_the_restricted_pod_security_standard() {
    // The hub itself set up as z2jh's `hub.containerSecurityContext` allows, for `restricted`.
    let hub = Hub::new("restricted", |yaml| {
        yaml.replace(
            "            allowPrivilegeEscalation: false\n",
            "            allowPrivilegeEscalation: false\n            runAsNonRoot: true\n            \
             capabilities: {drop: [ALL]}\n            seccompProfile: {type: RuntimeDefault}\n",
        )
    })
    .await;
    let labelled = support::kubectl(&[
        "label",
        "namespace",
        hub.ns(),
        "pod-security.kubernetes.io/enforce=restricted",
    ])
    .output()
    .expect("kubectl");
    assert!(labelled.status.success(), "{}", support::stderr(&labelled));
    let original = checksum(&hub.database());

    let never_ready = "quay.io/jupyterhub/k8s-hub:4.2.0-never-ready";
    let status = hub
        .run_upgrade(
            "to-never-ready",
            json!({"hub": {"deployment": "hub"}, "targetImage": never_ready,
                   "rollout": {"timeout": "8s"}}),
            LIMIT,
        )
        .await;
    assert_phase(&status, Phase::RolledBack);
    assert!(status.progress.database_restored, "the restore did not run");
    assert_eq!(checksum(&hub.database()), original);
    let status = hub
        .run_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            LIMIT,
        )
        .await;
    assert_phase(&status, Phase::Succeeded);
    assert_eq!(hub.hub_image().await, TARGET);
    let events = support::kubectl(&["get", "events", "-n", hub.ns(), "-o", "json"])
        .output()
        .expect("kubectl");
    let events = support::stdout(&events);
    assert!(
        !events.contains("violates PodSecurity"),
        "a pod was refused by the admission: {events}"
    );
}

/// A Job whose pod cannot be created (a ResourceQuota here; Pod Security admission, a
/// LimitRange or a missing ServiceAccount alike) fails its step within a minute, naming why,
/// instead of waiting out the step's timeout: the rehearsal, so the hub is never touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_job_whose_pod_is_refused_fails_its_step_within_a_minute_naming_why() {
    let hub = Hub::new("refused", |yaml| yaml).await;
    // The hub's own pod is the one pod the namespace may have.
    let quota = support::kubectl(&[
        "create",
        "quota",
        "one-pod",
        "--hard=pods=1",
        "-n",
        hub.ns(),
    ])
    .output()
    .expect("kubectl");
    assert!(quota.status.success(), "{}", support::stderr(&quota));
    let original = checksum(&hub.database());
    let start = Instant::now();
    let status = hub
        .run_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            LIMIT,
        )
        .await;
    assert_eq!(
        status.progress.phase,
        Phase::Failed,
        "{:?}",
        status.progress
    );
    assert!(
        start.elapsed() < Duration::from_secs(75),
        "took {:?}",
        start.elapsed()
    );
    let failure = status.progress.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("cannot be created") && failure.contains("exceeded quota"),
        "{failure}"
    );
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(hub.hub_available().await, "the hub was touched");
    assert_eq!(checksum(&hub.database()), original);
}

/// #15 point 1: a target from another repository than the hub's is refused in Preflight, before
/// anything runs it (the rehearsal would run it with the hub's ServiceAccount, Secrets and
/// volume); the operator's administrator, not the HubUpgrade, allows more.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_from_another_repository_runs_only_when_the_operator_allows_it() {
    let mut hub = Hub::new("image-policy", |yaml| yaml).await;
    let original = checksum(&hub.database());
    let miner = "evil.example.com/miner:1.0";
    let status = hub
        .run_upgrade(
            "to-miner",
            json!({"hub": {"deployment": "hub"}, "targetImage": miner}),
            LIMIT,
        )
        .await;
    assert_eq!(status.progress.phase, Phase::Failed);
    assert_eq!(status.progress.reason, "PreflightFailed");
    let message = status.progress.message.clone();
    assert!(
        message.contains("evil.example.com/miner") && message.contains("--allow-image-repository"),
        "{message}"
    );
    for step in ["rehearsal", "backup", "migration"] {
        assert!(
            hub.jobs_for(step).await.is_empty(),
            "a {step} Job ran the image"
        );
    }
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert_eq!(checksum(&hub.database()), original);

    hub.operator_args = vec![
        "--allow-image-repository".into(),
        "evil.example.com/miner".into(),
    ];
    hub.kill_operator();
    hub.start_operator();
    let status = hub
        .run_upgrade(
            "to-allowed",
            json!({"hub": {"deployment": "hub"}, "targetImage": miner}),
            LIMIT,
        )
        .await;
    assert_phase(&status, Phase::Succeeded);
    assert_eq!(hub.hub_image().await, miner);
}

/// #15 point 1: a Deployment without z2jh's `component: hub` label is not taken for a hub
/// (nothing is done to it) until it is annotated `hubgrade.io/hub: "true"`.
#[tokio::test(flavor = "multi_thread")]
async fn a_deployment_that_is_no_hub_is_left_alone_unless_annotated() {
    let hub = Hub::new("not-a-hub", |yaml| {
        let at = yaml.find("kind: Deployment").expect("the Deployment");
        let (before, after) = yaml.split_at(at);
        format!(
            "{before}{}",
            after.replacen(
                "labels: {app: jupyterhub, component: hub, release: jhub}",
                "labels: {app: something-else}",
                1
            )
        )
    })
    .await;
    let status = hub
        .run_upgrade(
            "to-4-2-0",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            LIMIT,
        )
        .await;
    assert_eq!(status.progress.phase, Phase::Failed);
    assert!(
        status
            .progress
            .message
            .contains("does not look like a JupyterHub hub"),
        "{}",
        status.progress.message
    );
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert!(hub.jobs_for("rehearsal").await.is_empty());

    let annotated = support::kubectl(&[
        "annotate",
        "deployment",
        "hub",
        "-n",
        hub.ns(),
        "hubgrade.io/hub=true",
    ])
    .output()
    .expect("kubectl");
    assert!(
        annotated.status.success(),
        "{}",
        support::stderr(&annotated)
    );
    let status = hub
        .run_upgrade(
            "again",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            LIMIT,
        )
        .await;
    assert_phase(&status, Phase::Succeeded);
}

/// #15 point 1: someone who may create HubUpgrades (the chart's `<name>-edit` ClusterRole) but
/// not pods gains nothing from it: an image of another repository never runs, a Deployment that
/// is no hub is left alone. People with `view` may read HubUpgrades (the aggregated role).
#[tokio::test(flavor = "multi_thread")]
async fn creating_hub_upgrades_gives_no_right_to_run_pods() {
    let hub = Hub::new("no-escalation", |yaml| yaml).await;
    let ns = hub.ns().to_string();
    // The chart's user roles, as a cluster-wide install renders them (named after the test).
    let release = format!("hubgrade-{ns}");
    let rendered = Command::new(support::cluster_bin().join("helm"))
        .args(["template", &release])
        .arg(support::repo().join("charts/hubgrade"))
        .args(["--show-only", "templates/user-roles.yaml"])
        .args(["--set", "clusterWide=true"])
        .output()
        .expect("helm template");
    assert!(rendered.status.success(), "{}", support::stderr(&rendered));
    let applied = support::kubectl_with_input(&["apply", "-f", "-"], &support::stdout(&rendered));
    assert!(applied.status.success(), "{}", support::stderr(&applied));
    let run = |args: &[&str]| {
        let output = support::kubectl(args).output().expect("kubectl");
        assert!(
            output.status.success(),
            "{args:?}: {}",
            support::stderr(&output)
        );
        support::stdout(&output)
    };
    run(&["create", "serviceaccount", "alice", "-n", &ns]);
    run(&["create", "serviceaccount", "bob", "-n", &ns]);
    run(&[
        "create",
        "rolebinding",
        "alice-upgrades",
        "-n",
        &ns,
        &format!("--clusterrole={release}-edit"),
        &format!("--serviceaccount={ns}:alice"),
    ]);
    run(&[
        "create",
        "rolebinding",
        "bob-views",
        "-n",
        &ns,
        "--clusterrole=view",
        &format!("--serviceaccount={ns}:bob"),
    ]);
    let alice = format!("system:serviceaccount:{ns}:alice");
    let bob = format!("system:serviceaccount:{ns}:bob");
    let can = |who: &str, verb: &str, what: &str| {
        let output = support::kubectl(&["auth", "can-i", verb, what, "-n", &ns, "--as", who])
            .output()
            .expect("kubectl");
        support::stdout(&output).trim() == "yes"
    };
    assert!(can(&alice, "create", "hubupgrades.hubgrade.io"));
    assert!(!can(&alice, "create", "pods"));
    assert!(!can(&alice, "create", "jobs.batch"));
    support::wait_until(
        Duration::from_secs(30),
        "the view role to aggregate hubgrade's",
        || async { can(&bob, "list", "hubupgrades.hubgrade.io") },
    )
    .await;
    assert!(!can(&bob, "create", "hubupgrades.hubgrade.io"));

    // Alice tries her image, and a Deployment that is no hub.
    run(&[
        "create",
        "deployment",
        "victim",
        "-n",
        &ns,
        "--image=registry.example.com/app:1",
    ]);
    let miner = "evil.example.com/miner:1.0";
    for (name, deployment) in [("mine", "hub"), ("take-over", "victim")] {
        let manifest = format!(
            "apiVersion: hubgrade.io/v1alpha1\nkind: HubUpgrade\nmetadata:\n  name: {name}\n\
             spec:\n  hub:\n    deployment: {deployment}\n  targetImage: {miner}\n"
        );
        let created = support::kubectl_with_input(
            &["create", "-n", &ns, "--as", &alice, "-f", "-"],
            &manifest,
        );
        assert!(created.status.success(), "{}", support::stderr(&created));
        let done = hub.wait_for(name, &TERMINAL, LIMIT).await;
        let status = done.status.expect("status");
        assert_eq!(
            status.progress.phase,
            Phase::Failed,
            "{name}: {:?}",
            status.progress
        );
        assert_eq!(status.progress.reason, "PreflightFailed");
    }
    let pods = run(&[
        "get",
        "pods",
        "-n",
        &ns,
        "-o",
        "jsonpath={range .items[*]}{.spec.containers[*].image} {.spec.initContainers[*].image}{\"\\n\"}{end}",
    ]);
    assert!(!pods.contains("evil.example.com"), "the image ran: {pods}");
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    let victim = run(&[
        "get",
        "deployment",
        "victim",
        "-n",
        &ns,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(victim, "registry.example.com/app:1");
    // The cluster-wide roles go with the test.
    let _ = support::kubectl(&[
        "delete",
        "clusterrole",
        &format!("{release}-edit"),
        &format!("{release}-view"),
    ])
    .output();
}

/// Adds a key holding `value` to the hub's ConfigMap and to its Secret; `None` removes them.
async fn set_large_keys(hub: &Hub, value: Option<String>) {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let maps: Api<ConfigMap> = Api::namespaced(hub.client.clone(), hub.ns());
    let secrets: Api<Secret> = Api::namespaced(hub.client.clone(), hub.ns());
    let merge = PatchParams::default();
    let map = json!({"data": {"large.py": value}});
    maps.patch("hub", &merge, &Patch::Merge(map))
        .await
        .expect("the hub ConfigMap's large key");
    // Secret data is base64; stringData cannot remove a key, so null goes to data.
    let secret = match value {
        Some(value) => json!({"stringData": {"hub.extraFiles.large": value}}),
        None => json!({"data": {"hub.extraFiles.large": null}}),
    };
    secrets
        .patch("hub", &merge, &Patch::Merge(secret))
        .await
        .expect("the hub Secret's large key");
}

/// #15 point 1: the configuration backup holds what a roll back needs, the ConfigMaps and
/// Secrets the hub container mounts, and must fit a Secret. A configuration too large for one
/// is refused in Preflight, before the hub is touched, naming each object's size; once it fits,
/// the backup holds the hub's ConfigMap and Secret keys and nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn a_configuration_too_large_for_its_backup_is_refused_before_the_hub_is_touched() {
    use k8s_openapi::api::core::v1::Secret;
    let hub = Hub::new("config-size", |yaml| yaml).await;
    let original = checksum(&hub.database());
    let secrets: Api<Secret> = Api::namespaced(hub.client.clone(), hub.ns());
    // Each object fits (an API object holds up to 1 MiB); together they do not fit one Secret.
    set_large_keys(&hub, Some("#".repeat(600 * 1024))).await;
    let status = hub
        .run_upgrade(
            "too-large",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            LIMIT,
        )
        .await;
    assert_eq!(status.progress.phase, Phase::Failed);
    assert_eq!(status.progress.reason, "PreflightFailed");
    let message = status.progress.message.clone();
    assert!(
        message.contains("more than the 1048576 bytes a Secret holds")
            && message.contains("ConfigMap/hub 600.")
            && message.contains("Secret/hub 600."),
        "{message}"
    );
    for step in ["rehearsal", "backup", "migration"] {
        assert!(hub.jobs_for(step).await.is_empty(), "a {step} Job ran");
    }
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert_eq!(hub.hub().await.spec.and_then(|s| s.replicas), Some(1));
    assert_eq!(checksum(&hub.database()), original);

    set_large_keys(&hub, None).await;
    let status = hub
        .run_upgrade(
            "fits",
            json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
            LIMIT,
        )
        .await;
    assert_phase(&status, Phase::Succeeded);
    let uid = hub
        .upgrades()
        .get("fits")
        .await
        .expect("the upgrade")
        .metadata
        .uid
        .expect("a uid");
    let backups = secrets
        .list(&ListParams::default().labels(&format!("hubgrade.io/upgrade-uid={uid}")))
        .await
        .expect("the configuration backup");
    let keys: Vec<String> = backups
        .items
        .iter()
        .flat_map(|s| s.data.clone().unwrap_or_default().into_keys())
        .collect();
    assert_eq!(
        keys,
        [
            "configmap.hub.jupyterhub_config.py",
            "configmap.hub.z2jh.py",
            "secret.hub.hub.config.JupyterHub.cookie_secret",
            "secret.hub.values.yaml",
        ],
        "the configuration backup holds exactly the hub's ConfigMap and Secret"
    );
}
