//! The local test cluster does what later tests rely on: real API, real controllers, KWOK
//! playing the kubelet. Each test uses its own namespace.

mod support;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::{TestNamespace, client, kubectl, pinned, stdout, wait_until};

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn nodes_are_ready_and_the_server_reports_the_pinned_version() {
    let client = client().await;
    let version = client.apiserver_version().await.expect("/version");
    assert_eq!(version.git_version, format!("v{}", pinned("K8S_VERSION")));

    let nodes: Api<Node> = Api::all(client.clone());
    let listed = nodes
        .list(&ListParams::default())
        .await
        .expect("listing nodes");
    assert!(!listed.items.is_empty(), "the cluster has no node");
    for node in &listed.items {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .map(|c| c.status.as_str());
        assert_eq!(
            ready,
            Some("True"),
            "node {:?} is not Ready",
            node.metadata.name
        );
    }

    // The same, the way a person checks it.
    let output = kubectl(&["get", "nodes", "--no-headers"])
        .output()
        .expect("kubectl");
    assert!(output.status.success());
    assert!(
        stdout(&output).contains(" Ready "),
        "kubectl get nodes: {}",
        stdout(&output)
    );
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "example.org/app:1"}]}
            }
        }
    }))
    .expect("deployment")
}

async fn available(deployments: &Api<Deployment>, name: &str) -> bool {
    let Ok(d) = deployments.get(name).await else {
        return false;
    };
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.unwrap_or_default();
    status.available_replicas.unwrap_or(0) == wanted
        && status.updated_replicas.unwrap_or(0) == wanted
        && status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
}

#[tokio::test]
async fn a_deployment_becomes_available_scales_to_zero_and_back() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "deploy").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(&PostParams::default(), &deployment("web", 1))
        .await
        .expect("create");

    wait_until(MINUTE, "the Deployment to become Available", || {
        available(&deployments, "web")
    })
    .await;
    let running = pods
        .list(&ListParams::default().labels("app=web"))
        .await
        .expect("pods");
    assert_eq!(running.items.len(), 1);
    assert_eq!(
        running.items[0]
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref()),
        Some("Running")
    );

    let scale = |replicas: i32| Patch::Merge(json!({"spec": {"replicas": replicas}}));
    deployments
        .patch("web", &PatchParams::default(), &scale(0))
        .await
        .expect("scale to 0");
    wait_until(MINUTE, "the pods to be gone after scaling to 0", || async {
        pods.list(&ListParams::default().labels("app=web"))
            .await
            .map(|l| l.items.is_empty())
            .unwrap_or(false)
    })
    .await;

    deployments
        .patch("web", &PatchParams::default(), &scale(1))
        .await
        .expect("scale to 1");
    wait_until(MINUTE, "the Deployment to be Available again", || {
        available(&deployments, "web")
    })
    .await;
    ns.delete().await;
}

fn job(name: &str, annotations: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "work", "image": "example.org/tool:1"}]
                }
            }
        }
    }))
    .expect("job")
}

async fn job_condition(jobs: &Api<Job>, name: &str, condition: &str) -> bool {
    jobs.get(name)
        .await
        .ok()
        .and_then(|j| j.status)
        .and_then(|s| s.conditions)
        .is_some_and(|c| c.iter().any(|c| c.type_ == condition && c.status == "True"))
}

#[tokio::test]
async fn a_job_completes_and_a_marked_job_fails_with_the_chosen_exit_code() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "jobs").await;
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);

    jobs.create(&PostParams::default(), &job("works", json!({})))
        .await
        .expect("create");
    let marker = json!({
        "kwok.hubgrade.io/fail": "true",
        "kwok.hubgrade.io/exit-code": "42",
        "kwok.hubgrade.io/message": "migration exploded"
    });
    jobs.create(&PostParams::default(), &job("breaks", marker))
        .await
        .expect("create");

    wait_until(MINUTE, "the Job to complete", || {
        job_condition(&jobs, "works", "Complete")
    })
    .await;
    wait_until(MINUTE, "the marked Job to fail", || {
        job_condition(&jobs, "breaks", "Failed")
    })
    .await;
    assert!(!job_condition(&jobs, "breaks", "Complete").await);

    let failed = pods
        .list(&ListParams::default().labels("job-name=breaks"))
        .await
        .expect("pods");
    let pod = failed.items.first().expect("the failed Job's pod");
    let status = pod.status.as_ref().expect("pod status");
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    let terminated = status
        .container_statuses
        .as_ref()
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .expect("terminated state");
    assert_eq!(terminated.exit_code, 42);
    assert_eq!(terminated.message.as_deref(), Some("migration exploded"));

    let done = pods
        .list(&ListParams::default().labels("job-name=works"))
        .await
        .expect("pods");
    let code = done
        .items
        .first()
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(code, Some(0));
    ns.delete().await;
}

#[tokio::test]
async fn a_job_marked_to_fail_only_as_a_job_leaves_deployments_alone() {
    // A hub pod template may carry `fail: job`: the hub runs, Jobs copied from it fail.
    let client = client().await;
    let ns = TestNamespace::new(&client, "jobmark").await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns.name);
    let mut d = deployment("hub", 1);
    let template = d
        .spec
        .as_mut()
        .expect("spec")
        .template
        .metadata
        .get_or_insert_default();
    template.annotations = Some([("kwok.hubgrade.io/fail".to_string(), "job".to_string())].into());
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create");
    jobs.create(
        &PostParams::default(),
        &job("copy", json!({"kwok.hubgrade.io/fail": "job"})),
    )
    .await
    .expect("create");

    wait_until(MINUTE, "the Deployment to become Available", || {
        available(&deployments, "hub")
    })
    .await;
    wait_until(MINUTE, "the Job to fail", || {
        job_condition(&jobs, "copy", "Failed")
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn a_crd_becomes_established_and_the_server_enforces_its_schema() {
    let client = client().await;
    let group = format!("{}.hubgrade-test.io", support::unique("g"));
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {
            "group": group,
            "names": {"kind": "Widget", "plural": "widgets", "singular": "widget"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {"spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1}},
                        "x-kubernetes-validations": [{"rule": "self.size <= 10", "message": "size must be at most 10"}]
                    }}
                }}
            }]
        }
    }))
    .expect("crd");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("name");
    crds.create(&PostParams::default(), &crd)
        .await
        .expect("create CRD");
    support::wait_for_established(&crds, &name).await;

    let ns = TestNamespace::new(&client, "crd").await;
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(&group, "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns.name, &resource);
    let object = |size: i64| -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": format!("{group}/v1"), "kind": "Widget",
            "metadata": {"name": format!("w{size}")}, "spec": {"size": size}
        }))
        .expect("widget")
    };
    widgets
        .create(&PostParams::default(), &object(3))
        .await
        .expect("a valid object is accepted");
    for (size, expected) in [
        (0, "should be greater than or equal to 1"),
        (11, "size must be at most 10"),
    ] {
        let error = widgets
            .create(&PostParams::default(), &object(size))
            .await
            .expect_err("rejected");
        let kube::Error::Api(status) = error else {
            panic!("not an API error: {error}")
        };
        assert_eq!(status.code, 422);
        assert!(status.message.contains(expected), "{}", status.message);
    }
    ns.delete().await;
    let _ = crds.delete(&name, &Default::default()).await;
}

#[tokio::test]
async fn a_service_account_can_do_what_its_role_allows_and_nothing_else() {
    let client = client().await;
    let ns = TestNamespace::new(&client, "rbac").await;
    let setup = |kind: &str, body: serde_json::Value| {
        let output =
            support::kubectl_with_input(&["apply", "-n", &ns.name, "-f", "-"], &body.to_string());
        assert!(
            output.status.success(),
            "applying {kind}: {}",
            support::stderr(&output)
        );
    };
    setup(
        "ServiceAccount",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "narrow"}}),
    );
    setup(
        "Role",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "configmap-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
        }),
    );
    setup(
        "RoleBinding",
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "narrow"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "configmap-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": ns.name}]
        }),
    );
    let admin_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns.name);
    let map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "settings"}, "data": {"a": "1"}}))
            .expect("cm");
    admin_maps
        .create(&PostParams::default(), &map)
        .await
        .expect("create");

    // A token from the TokenRequest API, as a pod of that ServiceAccount would get.
    let output = kubectl(&[
        "create",
        "token",
        "narrow",
        "-n",
        &ns.name,
        "--duration=10m",
    ])
    .output()
    .expect("kubectl");
    assert!(
        output.status.success(),
        "kubectl create token: {}",
        support::stderr(&output)
    );
    let token = stdout(&output).trim().to_string();
    let mut config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(support::kubeconfig()).expect("kubeconfig"),
        &Default::default(),
    )
    .await
    .expect("config");
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    let narrow = kube::Client::try_from(config).expect("client");

    let maps: Api<ConfigMap> = Api::namespaced(narrow.clone(), &ns.name);
    let got = maps
        .get("settings")
        .await
        .expect("the Role allows reading ConfigMaps");
    assert_eq!(
        got.data.and_then(|d| d.get("a").cloned()).as_deref(),
        Some("1")
    );

    let forbidden = |e: kube::Error| matches!(e, kube::Error::Api(s) if s.code == 403);
    let secrets: Api<Secret> = Api::namespaced(narrow.clone(), &ns.name);
    assert!(forbidden(
        secrets
            .list(&ListParams::default())
            .await
            .expect_err("secrets are not allowed")
    ));
    assert!(forbidden(
        maps.delete("settings", &Default::default())
            .await
            .expect_err("delete is not allowed")
    ));
    let elsewhere: Api<ConfigMap> = Api::namespaced(narrow.clone(), "default");
    assert!(forbidden(
        elsewhere
            .list(&ListParams::default())
            .await
            .expect_err("other namespaces are not allowed")
    ));
    ns.delete().await;
}
