//! The HubUpgrade CRD against the real API server: accepted, examples valid, bad specs
//! refused with their messages, docs in `kubectl explain`, spec frozen once started.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use hubgrade::api::HubUpgrade;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::{TestNamespace, client, install_crd, kubectl, stderr, stdout};

fn yaml_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(support::repo().join(dir))
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{dir} has no manifests");
    files
}

async fn ensure_namespace(name: &str) {
    let output = kubectl(&["create", "namespace", name])
        .output()
        .expect("kubectl");
    assert!(
        output.status.success() || stderr(&output).contains("AlreadyExists"),
        "creating namespace {name}: {}",
        stderr(&output)
    );
}

#[tokio::test]
async fn every_example_is_accepted_by_the_server() {
    let client = client().await;
    install_crd(&client).await;
    let mut files = yaml_files("examples");
    // The example hubs' HubUpgrades too (hub.yaml beside them is the hub itself).
    for folder in ["examples/z2jh-hub", "examples/server-hub"] {
        files.extend(
            yaml_files(folder)
                .into_iter()
                .filter(|f| support::read(f).contains("kind: HubUpgrade")),
        );
    }
    for file in files {
        let text = support::read(&file);
        let manifest: serde_json::Value = serde_saphyr::from_str(&text).expect("example is YAML");
        if let Some(ns) = manifest["metadata"]["namespace"].as_str() {
            ensure_namespace(ns).await;
        }
        // The example must also be what the operator's types read.
        let _: HubUpgrade = serde_json::from_value(manifest).unwrap_or_else(|e| {
            panic!(
                "{} does not deserialize as a HubUpgrade: {e}",
                file.display()
            )
        });
        let path = file.to_str().expect("utf-8 path");
        let output = kubectl(&["apply", "--dry-run=server", "-f", path])
            .output()
            .expect("kubectl");
        assert!(
            output.status.success(),
            "{} was refused: {}",
            file.display(),
            stderr(&output)
        );
    }
}

#[tokio::test]
async fn every_invalid_manifest_is_refused_with_its_message() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "invalid").await;
    for file in yaml_files("tests/invalid") {
        let text = support::read(&file);
        let expected = text
            .lines()
            .find_map(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} has no `# expect:` line", file.display()));
        let path = file.to_str().expect("utf-8 path");
        let output = kubectl(&["apply", "--dry-run=server", "-n", &ns.name, "-f", path])
            .output()
            .expect("kubectl");
        assert!(!output.status.success(), "{} was accepted", file.display());
        assert!(
            stderr(&output).contains(expected),
            "{}: expected {expected:?} in: {}",
            file.display(),
            stderr(&output)
        );
    }
    ns.delete().await;
}

#[tokio::test]
async fn kubectl_explain_shows_the_field_docs() {
    let client = client().await;
    install_crd(&client).await;
    // The CRD's OpenAPI reaches the discovery documents a moment after it is Established.
    let mut text = String::new();
    for _ in 0..50 {
        let output = kubectl(&["explain", "hubupgrade.spec"])
            .output()
            .expect("kubectl");
        text = stdout(&output);
        if output.status.success() && text.contains("targetImage") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for expected in [
        "The hub to upgrade: its Deployment in this namespace.",
        "The hub image to upgrade to, with a tag or a digest",
        "How the database is backed up before the migration.",
        "Wait for users' servers to stop before the hub goes down, through the hub's REST API.",
    ] {
        // kubectl wraps long descriptions.
        let flowing = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            flowing.contains(expected),
            "missing {expected:?} in:\n{text}"
        );
    }
    let output = kubectl(&["explain", "hubupgrade.spec.backup.method"])
        .output()
        .expect("kubectl");
    assert!(stdout(&output).contains("Auto (default), File, VolumeSnapshot, Clone or Dump."));
}

#[tokio::test]
async fn defaults_are_filled_in_and_columns_show_progress() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "defaults").await;
    let upgrades: Api<HubUpgrade> = Api::namespaced(client.clone(), &ns.name);
    let upgrade: HubUpgrade = serde_json::from_value(json!({
        "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
        "metadata": {"name": "minimal"},
        "spec": {"hub": {"deployment": "hub"}, "targetImage": "quay.io/jupyterhub/k8s-hub:4.2.0"}
    }))
    .expect("upgrade");
    let created = upgrades
        .create(&PostParams::default(), &upgrade)
        .await
        .expect("create");
    let spec = &created.spec;
    assert_eq!(spec.backup.retain, 5);
    assert_eq!(spec.migration.timeout, "30m");
    assert!(spec.migration.rehearse);
    assert_eq!(spec.rollout.timeout, "10m");
    assert!(spec.drain.is_none());
    spec.plan()
        .expect("the server's defaults make a runnable plan");
    // Before any operator wrote to it, its status says that no generation was observed yet, so
    // Flux and other kstatus readers wait instead of taking it for done.
    let fresh = upgrades.get("minimal").await.expect("read back");
    assert_eq!(
        fresh.status.and_then(|s| s.observed_generation),
        Some(-1),
        "the CRD's status default"
    );

    let status =
        json!({"status": {"phase": "Migrating", "message": "running jupyterhub upgrade-db"}});
    upgrades
        .patch_status("minimal", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status");
    let output = kubectl(&["get", "hubup", "-n", &ns.name])
        .output()
        .expect("kubectl");
    let table = stdout(&output);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "PHASE", "HUB", "TARGET", "AGE", "MESSAGE"]);
    assert!(
        table.contains("Migrating") && table.contains("running jupyterhub upgrade-db"),
        "{table}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn the_spec_is_frozen_once_the_upgrade_has_started() {
    let client = client().await;
    install_crd(&client).await;
    let ns = TestNamespace::new(&client, "immutable").await;
    let upgrades: Api<HubUpgrade> = Api::namespaced(client.clone(), &ns.name);
    let upgrade: HubUpgrade = serde_json::from_value(json!({
        "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
        "metadata": {"name": "frozen"},
        "spec": {"hub": {"deployment": "hub"}, "targetImage": "quay.io/jupyterhub/k8s-hub:4.1.0"}
    }))
    .expect("upgrade");
    upgrades
        .create(&PostParams::default(), &upgrade)
        .await
        .expect("create");

    let retarget = |tag: &str| {
        Patch::Merge(json!({"spec": {"targetImage": format!("quay.io/jupyterhub/k8s-hub:{tag}")}}))
    };
    upgrades
        .patch("frozen", &PatchParams::default(), &retarget("4.2.0"))
        .await
        .expect("a Pending upgrade may still be edited");

    let started = json!({"status": {"phase": "Preflight"}});
    upgrades
        .patch_status("frozen", &PatchParams::default(), &Patch::Merge(&started))
        .await
        .expect("status");
    let error = upgrades
        .patch("frozen", &PatchParams::default(), &retarget("4.3.0"))
        .await
        .expect_err("a started upgrade's spec cannot change");
    let kube::Error::Api(status) = error else {
        panic!("not an API error: {error}")
    };
    assert_eq!(status.code, 422);
    assert!(
        status
            .message
            .contains("spec cannot change once the upgrade has started"),
        "{}",
        status.message
    );
    // Labels and annotations stay editable.
    upgrades
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"team": "x"}}})),
        )
        .await
        .expect("metadata of a started upgrade may change");
    let current = upgrades.get("frozen").await.expect("get");
    assert_eq!(
        current.spec.target_image,
        "quay.io/jupyterhub/k8s-hub:4.2.0"
    );
    ns.delete().await;
}
