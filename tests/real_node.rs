//! The local cluster's real node (tests/cluster/node.sh): kubelet, containerd and runc on this
//! machine, images from the local registry under their real names, volumes of the default
//! StorageClass, kube-proxy's Services. A missing real node fails these tests, it never skips them.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use support::{TestNamespace, client, kubeconfig, kubectl, pinned, stderr, stdout, wait_until};

const NODE: &str = "real-node-0";
const MINUTE: Duration = Duration::from_secs(60);

/// The busybox image up.sh built from Debian's busybox-static and pushed to the local registry.
fn busybox() -> String {
    let file = kubeconfig().with_file_name("busybox-tag");
    let tag = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}): the real node is not up; start the cluster with `make cluster-up` \
             (without HUBGRADE_REAL_NODE=0)",
            file.display()
        )
    });
    format!("docker.io/library/busybox:{}", tag.trim())
}

async fn real_node(client: &Client) -> Node {
    let nodes: Api<Node> = Api::all(client.clone());
    nodes
        .get_opt(NODE)
        .await
        .expect("reading nodes")
        .unwrap_or_else(|| {
            panic!(
                "the real node {NODE} is missing: start the cluster with `make cluster-up` \
             (without HUBGRADE_REAL_NODE=0)"
            )
        })
}

/// A pod of the busybox image pinned to the real node (its taint tolerated).
fn pod(name: &str, script: &str, extra: serde_json::Value) -> Pod {
    let mut spec = json!({
        "restartPolicy": "Never",
        "nodeSelector": {"hubgrade.io/node": "real"},
        "tolerations": [{"key": "hubgrade.io/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": busybox(), "command": ["sh", "-c", script]}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            spec.insert(key.clone(), value.clone());
        }
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": name}}, "spec": spec}),
    )
    .expect("pod object")
}

/// Waits until the pod's container terminated; returns (node, exit code).
async fn finished(pods: &Api<Pod>, name: &str) -> (String, i32) {
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        if let Ok(pod) = pods.get(name).await {
            let terminated = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first())
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .map(|t| t.exit_code);
            if let Some(code) = terminated {
                return (pod.spec.and_then(|s| s.node_name).unwrap_or_default(), code);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {MINUTE:?} waiting for pod {name} to finish"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pod's output, through kubectl logs (apiserver → kubelet, both authenticated).
fn logs(ns: &str, name: &str) -> String {
    let output = kubectl(&["logs", "-n", ns, name])
        .output()
        .expect("kubectl");
    assert!(
        output.status.success(),
        "kubectl logs {name}: {}",
        stderr(&output)
    );
    stdout(&output)
}

async fn run(pods: &Api<Pod>, ns: &str, pod: Pod) -> (i32, String) {
    let name = pod.name_any();
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("creating a pod");
    let (node, code) = finished(pods, &name).await;
    assert_eq!(node, NODE, "pod {name} ran on {node}, not on the real node");
    (code, logs(ns, &name))
}

#[tokio::test]
async fn the_real_node_is_ready_labelled_and_tainted() {
    let client = client().await;
    let node = real_node(&client).await;
    let status = node.status.clone().expect("node status");
    let ready = status
        .conditions
        .as_ref()
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.status.clone(), c.message.clone()));
    assert_eq!(
        ready.as_ref().map(|r| r.0.as_str()),
        Some("True"),
        "{ready:?}"
    );
    let info = status.node_info.expect("node info");
    assert_eq!(info.kubelet_version, format!("v{}", pinned("K8S_VERSION")));
    assert!(
        info.container_runtime_version.starts_with("containerd://"),
        "{}",
        info.container_runtime_version
    );
    assert_eq!(
        node.labels().get("hubgrade.io/node").map(String::as_str),
        Some("real")
    );
    let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "hubgrade.io/real-node" && t.effect == "NoSchedule"),
        "the real node must keep the KWOK tests' pods away: {taints:?}"
    );
}

#[tokio::test]
async fn a_container_really_exits_with_the_code_it_was_asked_for() {
    let client = client().await;
    real_node(&client).await;
    let ns = TestNamespace::new(&client, "real-exit").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let (code, output) = run(
        &pods,
        &ns.name,
        pod(
            "exit3",
            "echo \"pid $$$$ on $(hostname), api at $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT\"; exit 3",
            json!({}),
        ),
    )
    .await;
    assert_eq!(code, 3, "{output}");
    // PID 1 of its own PID namespace (`$$$$`: the kubelet turns `$$` into `$`), the kubelet's
    // Service variables.
    assert_eq!(output.trim(), "pid 1 on exit3, api at 10.96.0.1:443");
    wait_until(MINUTE, "pod exit3 to be Failed", || async {
        pods.get("exit3")
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.phase)
            .is_some_and(|p| p == "Failed")
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn a_pod_reads_what_another_wrote_into_a_claim_of_the_default_class() {
    let client = client().await;
    real_node(&client).await;
    let ns = TestNamespace::new(&client, "real-volume").await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .expect("claim object");
    claims
        .create(&PostParams::default(), &claim)
        .await
        .expect("creating a claim");
    let class = claims
        .get("data")
        .await
        .expect("claim")
        .spec
        .and_then(|s| s.storage_class_name);
    assert_eq!(
        class.as_deref(),
        Some("hubgrade-local"),
        "the default StorageClass"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let volume =
        json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]});
    let mount = |mut pod: Pod| {
        pod.spec.as_mut().expect("spec").containers[0].volume_mounts = Some(vec![
            serde_json::from_value(json!({"name": "data", "mountPath": "/data"})).expect("mount"),
        ]);
        pod
    };
    let (code, output) = run(
        &pods,
        &ns.name,
        mount(pod(
            "writer",
            "echo written-by-writer > /data/file && echo ok",
            volume.clone(),
        )),
    )
    .await;
    assert_eq!((code, output.trim()), (0, "ok"));
    let (code, output) = run(
        &pods,
        &ns.name,
        mount(pod("reader", "cat /data/file", volume)),
    )
    .await;
    assert_eq!((code, output.trim()), (0, "written-by-writer"));

    // The volume is a folder of the machine, next to the kubeconfig.
    let folder = kubeconfig()
        .with_file_name("volumes")
        .join(&ns.name)
        .join("data");
    assert_eq!(
        std::fs::read_to_string(folder.join("file"))
            .expect("the volume's folder")
            .trim(),
        "written-by-writer"
    );

    // Deleting the claim deletes its volume (the folder stays).
    let bound = claims
        .get("data")
        .await
        .expect("claim")
        .spec
        .and_then(|s| s.volume_name)
        .expect("bound");
    for name in ["writer", "reader"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("deleting a pod");
    }
    claims
        .delete("data", &DeleteParams::default())
        .await
        .expect("deleting the claim");
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    wait_until(MINUTE, &format!("volume {bound} to be deleted"), || async {
        volumes.get_opt(&bound).await.ok().flatten().is_none()
    })
    .await;
    ns.delete().await;
}

#[tokio::test]
async fn pods_reach_the_apiserver_through_the_kubernetes_service() {
    let client = client().await;
    real_node(&client).await;
    let ns = TestNamespace::new(&client, "real-api").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let (code, output) = run(
        &pods,
        &ns.name,
        pod(
            "api",
            "timeout 10 wget -q -O - --no-check-certificate https://10.96.0.1/version",
            json!({}),
        ),
    )
    .await;
    assert_eq!(code, 0, "{output}");
    let version: serde_json::Value = serde_json::from_str(&output).expect("/version is JSON");
    assert_eq!(version["gitVersion"], format!("v{}", pinned("K8S_VERSION")));
    ns.delete().await;
}

#[tokio::test]
async fn a_cluster_ip_service_answers_pods_and_the_host() {
    let client = client().await;
    real_node(&client).await;
    let ns = TestNamespace::new(&client, "real-service").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
    }))
    .expect("service object");
    services
        .create(&PostParams::default(), &service)
        .await
        .expect("creating a service");
    let mut web = pod(
        "web",
        "mkdir -p /tmp/www && echo hello-from-$(hostname) > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
        json!({}),
    );
    web.spec.as_mut().expect("spec").containers[0].readiness_probe = Some(
        serde_json::from_value(json!({"tcpSocket": {"port": 8080}, "periodSeconds": 1}))
            .expect("probe"),
    );
    pods.create(&PostParams::default(), &web)
        .await
        .expect("creating the web pod");
    wait_until(MINUTE, "the web pod to become Ready", || async {
        pods.get("web")
            .await
            .ok()
            .and_then(|p| p.status)
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    })
    .await;

    // From a pod, by the variables the kubelet injects for Services that exist before the pod.
    let (code, output) = run(
        &pods,
        &ns.name,
        pod(
            "client",
            // (busybox 1.35's `wget -T` crashes: `timeout` bounds it instead)
            "echo $WEB_SERVICE_PORT; timeout 10 wget -q -O - http://$WEB_SERVICE_HOST:$WEB_SERVICE_PORT/",
            json!({}),
        ),
    )
    .await;
    assert_eq!((code, output.as_str()), (0, "80\nhello-from-web\n"));

    // From the host, through kube-proxy's rules.
    let ip = services
        .get("web")
        .await
        .expect("service")
        .spec
        .and_then(|s| s.cluster_ip)
        .expect("cluster IP");
    let mut answer = String::new();
    let mut stream = TcpStream::connect_timeout(
        &format!("{ip}:80").parse().expect("address"),
        Duration::from_secs(5),
    )
    .expect("connecting to the Service from the host");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream
        .write_all(b"GET / HTTP/1.0\r\n\r\n")
        .expect("request");
    stream.read_to_string(&mut answer).expect("answer");
    assert!(answer.ends_with("hello-from-web\n"), "{answer}");
    ns.delete().await;
}
