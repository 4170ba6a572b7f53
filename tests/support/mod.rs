//! Shared helpers for the tests that run against the local cluster (`make cluster-up`).
//! They fail loudly when the cluster is not there: a missing cluster is never a skipped test.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn kubeconfig() -> PathBuf {
    std::env::var_os("HUBGRADE_KUBECONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/cluster/kubeconfig"))
}

/// A value pinned in tests/cluster/versions.env.
pub fn pinned(name: &str) -> String {
    let text = std::fs::read_to_string(repo().join("tests/cluster/versions.env"))
        .expect("reading tests/cluster/versions.env");
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} is not pinned in tests/cluster/versions.env"))
        .trim()
        .to_string()
}

/// Where tests/cluster/build.sh put the cluster's binaries.
pub fn cluster_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("HUBGRADE_CLUSTER_BIN") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("HUBGRADE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/hubgrade")
        });
    cache
        .join("cluster")
        .join(pinned("K8S_VERSION"))
        .join("bin")
}

/// A KWOK stand-in binary (`tests/standins`, a crate of its own so `cargo install hubgrade` does
/// not install it), next to this test's own build: `make test` builds it first, by hand
/// `cargo build -p hubgrade-standins`.
pub fn standin(name: &str) -> PathBuf {
    // This test runs as <target>/debug/deps/<test>-<hash>; binaries are in <target>/debug.
    let exe = std::env::current_exe().expect("the test's own path");
    let path = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from <target>/<profile>/deps")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the stand-ins with `cargo build -p hubgrade-standins` (make test does)",
        path.display()
    );
    path
}

/// A kube client for the local cluster, as its administrator.
pub async fn client() -> Client {
    let path = kubeconfig();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap_or_else(|e| {
        panic!(
            "the local cluster's kubeconfig {} cannot be read ({e}); start the cluster with `make cluster-up`",
            path.display()
        )
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("the local cluster's kubeconfig is valid");
    let client = Client::try_from(config).expect("building a client for the local cluster");
    client.apiserver_version().await.unwrap_or_else(|e| {
        panic!("the local cluster does not answer ({e}); start it with `make cluster-up`")
    });
    client
}

/// `kubectl` of the pinned version, pointed at the local cluster.
pub fn kubectl(args: &[&str]) -> Command {
    let mut command = Command::new(cluster_bin().join("kubectl"));
    command.env("KUBECONFIG", kubeconfig()).args(args);
    command
}

/// Runs kubectl with `stdin` as input; returns its output.
pub fn kubectl_with_input(args: &[&str], stdin: &str) -> Output {
    use std::io::Write;
    let mut child = kubectl(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting kubectl");
    let mut input = child.stdin.take().expect("kubectl stdin");
    let text = stdin.to_string();
    // kubectl answers while it reads: its answers are drained meanwhile, or with a long input
    // (500 hubs' manifests) both sides wait on a full pipe for ever.
    let writer = std::thread::spawn(move || input.write_all(text.as_bytes()));
    let output = child.wait_with_output().expect("waiting for kubectl");
    writer
        .join()
        .expect("the thread writing to kubectl")
        .expect("writing to kubectl");
    output
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n}", (nanos ^ std::process::id()) & 0xfffff)
}

/// A fresh namespace; deleted when the test passes (kept for a look when it fails).
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = unique(prefix);
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"hubgrade.io/test": "true"}}
        }))
        .expect("namespace object");
        namespaces
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating a test namespace");
        // Pods need the namespace's default ServiceAccount, made by its controller.
        let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
            Api::namespaced(client.clone(), &name);
        wait_until(
            Duration::from_secs(30),
            "the default ServiceAccount",
            || async { accounts.get_opt("default").await.ok().flatten().is_some() },
        )
        .await;
        TestNamespace {
            name,
            client: client.clone(),
        }
    }

    pub async fn delete(self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A TCP port that nothing listens on right now on any of `addresses`.
pub fn free_port_on(addresses: &[&str]) -> u16 {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind((addresses[0], 0))
            .and_then(|l| l.local_addr())
            .unwrap_or_else(|e| panic!("no free port on {}: {e}", addresses[0]));
        let port = first.port();
        if addresses[1..]
            .iter()
            .all(|a| std::net::TcpListener::bind((*a, port)).is_ok())
        {
            return port;
        }
    }
    panic!("no port free on all of {addresses:?}");
}

/// A setting of the real node, as tests/cluster/node.sh reads it: the environment's value, else
/// the default of tests/cluster/node.env (`: "${NAME:=default}"`).
pub fn node_setting(name: &str) -> String {
    if let Some(value) = std::env::var(name).ok().filter(|v| !v.is_empty()) {
        return value;
    }
    let text = read(&repo().join("tests/cluster/node.env"));
    let start = format!("${{{name}:=");
    text.lines()
        .find_map(|line| {
            let rest = &line[line.find(&start)? + start.len()..];
            Some(rest[..rest.find('}')?].to_string())
        })
        .unwrap_or_else(|| panic!("{name} has no default in tests/cluster/node.env"))
}

/// Where pods of the real node reach this machine: the node bridge's address (`NODE_IP`) and
/// the pods' addresses (`NODE_POD_CIDR`).
#[derive(Clone, Debug)]
pub struct NodeNetwork {
    pub ip: String,
    pub pod_cidr: String,
}

impl NodeNetwork {
    /// The real node's network; fails when the bridge's address is not on this machine (the
    /// bridge exists only while the real node runs).
    pub fn require() -> NodeNetwork {
        let ip = node_setting("NODE_IP");
        let pod_cidr = node_setting("NODE_POD_CIDR");
        if let Err(e) = std::net::TcpListener::bind((ip.as_str(), 0)) {
            panic!(
                "cannot listen on the real node's bridge address {ip} (NODE_IP): {e}; the bridge \
                 {} exists only while the real node runs: start the cluster with `make cluster-up` \
                 (without HUBGRADE_REAL_NODE=0)",
                node_setting("NODE_BRIDGE")
            );
        }
        NodeNetwork { ip, pod_cidr }
    }
}

/// Polls `check` until it holds; panics naming `what` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if check().await {
            return;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Installs (server-side apply) the committed HubUpgrade CRD and waits until it is Established.
pub async fn install_crd(client: &Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Patch, PatchParams};
    let text = read(&repo().join("crds/hubupgrade.yaml"));
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&text).expect("crds/hubupgrade.yaml is a CustomResourceDefinition");
    let name = crd.metadata.name.clone().expect("CRD name");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply("hubgrade-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("the API server accepts the generated CRD");
    wait_for_established(&crds, &name).await;
}
pub mod argocd;
pub mod bench;
pub mod chaos;
pub mod e2e;
pub mod jupyterhub;
pub mod local_pod;
pub mod mariadb;
pub mod postgres;
pub mod real_hub;
pub mod server_db;

/// Waits until the CustomResourceDefinition `name` is Established.
pub async fn wait_for_established(
    crds: &Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>,
    name: &str,
) {
    wait_until(
        Duration::from_secs(60),
        &format!("the CRD {name} to become Established"),
        || async {
            crds.get(name)
                .await
                .ok()
                .and_then(|c| c.status)
                .and_then(|s| s.conditions)
                .is_some_and(|c| {
                    c.iter()
                        .any(|c| c.type_ == "Established" && c.status == "True")
                })
        },
    )
    .await;
}

/// One plain HTTP/1.0 GET on 127.0.0.1 (the operator's /metrics, /healthz, /readyz): the whole
/// response, headers included, or None when nothing answers.
pub async fn try_http_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    Some(response)
}

/// A CA (`ca.crt`) and a server certificate for 127.0.0.1 it signed (`server.crt`,
/// `server.key`), in `dir`, owned by the database server's system user `owner`.
pub fn make_certificates(dir: &Path, owner: &str) {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (tests/install-deps.sh installs it)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            stderr(&output)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=hubgrade test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("san.ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
    let _ = Command::new("chown")
        .arg(format!("{owner}:{owner}"))
        .args(["server.key", "server.crt"])
        .current_dir(dir)
        .status();
    let _ = Command::new("chmod")
        .args(["600", "server.key"])
        .current_dir(dir)
        .status();
}

/// A CA of its own (`other-ca.crt` in `dir`) that signed nothing a test server presents: a
/// client that trusts only it must refuse the server.
pub fn another_ca(dir: &Path) -> PathBuf {
    let ca = dir.join("other-ca.crt");
    let made = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another CA", "-keyout"])
        .arg(dir.join("other.key"))
        .arg("-out")
        .arg(&ca)
        .output()
        .expect("openssl");
    assert!(made.status.success(), "{}", stderr(&made));
    ca
}

/// The secrets every test knows: the test servers' passwords, as written and as in a URL, and
/// the example hub's cookie secret (in its Secret, copied into the configuration backup).
const KNOWN_SECRETS: [&str; 5] = [
    postgres::PASSWORD,
    postgres::PASSWORD_IN_URL,
    mariadb::PASSWORD,
    mariadb::PASSWORD_IN_URL,
    "3d9a0b1c2e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b",
];

/// After an end-to-end test (called when a harness is dropped, unless the test already failed):
/// the operator's log holds no panic and none of `secrets` (the known ones, and whatever the
/// test adds).
pub fn assert_clean_operator_log(log: &str, secrets: &[&str]) {
    if std::thread::panicking() {
        return;
    }
    if let Some(line) = log.lines().find(|l| l.contains("panicked at")) {
        panic!("the operator panicked: {line}");
    }
    for secret in KNOWN_SECRETS
        .iter()
        .chain(secrets)
        .filter(|s| !s.is_empty())
    {
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("a secret is in the operator's log: {line}");
        }
    }
}

/// Like [`assert_clean_operator_log`], for what a user reads in `namespace`: its Events and its
/// HubUpgrades, status included, hold none of the known secrets nor `secrets`.
pub fn assert_no_secret_in_records(namespace: &str, secrets: &[&str]) {
    if std::thread::panicking() {
        return;
    }
    for what in ["events", "events.events.k8s.io", "hubupgrades"] {
        let output = kubectl(&["get", what, "-n", namespace, "-o", "json"])
            .output()
            .expect("kubectl get");
        assert!(
            output.status.success(),
            "kubectl get {what} -n {namespace}: {}",
            stderr(&output)
        );
        let records = stdout(&output);
        for (i, secret) in KNOWN_SECRETS.iter().chain(secrets).enumerate() {
            if secret.is_empty() {
                continue;
            }
            if let Some(line) = records.lines().find(|l| l.contains(secret)) {
                panic!("secret #{i} is in the {what} of {namespace}: {line}");
            }
        }
    }
}
