//! The Helm chart (`charts/hubgrade`) as the pinned `helm` renders it: it lints, its schema
//! refuses bad values naming them, two releases never share a name, a release named `hubgrade`
//! keeps the names the end-to-end tests use, the Lease and its rights are in the release
//! namespace, and the API server accepts what it renders (`kubectl apply --dry-run=server`).

mod support;

use std::process::{Command, Output};

use serde_json::Value;
use support::{cluster_bin, kubectl_with_input, repo, stderr, stdout};

fn chart() -> String {
    repo()
        .join("charts/hubgrade")
        .to_str()
        .expect("a UTF-8 path")
        .to_string()
}

fn helm(args: &[&str], values: &[&str]) -> Output {
    let mut command = Command::new(cluster_bin().join("helm"));
    command.args(args);
    for value in values {
        command.args(["--set", value]);
    }
    command.output().unwrap_or_else(|e| {
        panic!(
            "running helm from {} ({e}); build it with `make cluster-build`",
            cluster_bin().display()
        )
    })
}

/// `helm template` (with `extra` arguments) as text; panics with helm's message when it fails.
fn template_text(release: &str, namespace: &str, values: &[&str], extra: &[&str]) -> String {
    let chart = chart();
    let mut args = vec!["template", release, &chart, "--namespace", namespace];
    args.extend_from_slice(extra);
    let output = helm(&args, values);
    assert!(
        output.status.success(),
        "helm template {release} with {values:?}: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// The objects `helm template` renders.
fn render(release: &str, namespace: &str, values: &[&str]) -> Vec<Value> {
    parse(&template_text(release, namespace, values, &[]))
}

fn parse(text: &str) -> Vec<Value> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(text)
        .unwrap_or_else(|e| panic!("helm rendered YAML that does not parse ({e}):\n{text}"));
    documents.into_iter().filter(|d| !d.is_null()).collect()
}

/// (kind, namespace or "" for cluster-wide objects, name) of every object.
fn identities(objects: &[Value]) -> Vec<(String, String, String)> {
    let mut identities: Vec<_> = objects
        .iter()
        .map(|o| {
            let field = |pointer: &str| o.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            (
                field("/kind").to_string(),
                field("/metadata/namespace").to_string(),
                field("/metadata/name").to_string(),
            )
        })
        .collect();
    identities.sort();
    identities
}

fn object<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", identities(objects)))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn container(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]["containers"][0]
}

/// The value of an environment variable of the operator's container: its `value`, or its
/// `valueFrom` as JSON.
fn env(deployment: &Value, name: &str) -> Option<Value> {
    container(deployment)["env"]
        .as_array()
        .expect("the container's env")
        .iter()
        .find(|e| e["name"] == name)
        .map(|e| {
            e.get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone())
        })
}

/// Whether a rule grants `verb` on `resource`, optionally limited to `name`.
fn grants(role: &Value, resource: &str, verb: &str) -> bool {
    role["rules"].as_array().is_some_and(|rules| {
        rules.iter().any(|rule| {
            let has = |field: &str, item: &str| {
                rule[field]
                    .as_array()
                    .is_some_and(|items| items.iter().any(|i| i == item))
            };
            has("resources", resource) && has("verbs", verb)
        })
    })
}

fn bound_to(binding: &Value, role_kind: &str, role: &str, account: &str, namespace: &str) {
    assert_eq!(binding["roleRef"]["kind"], role_kind, "{binding}");
    assert_eq!(binding["roleRef"]["name"], role, "{binding}");
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"], "ServiceAccount", "{binding}");
    assert_eq!(subject["name"], account, "{binding}");
    assert_eq!(subject["namespace"], namespace, "{binding}");
}

#[test]
fn lint_passes_with_default_namespaced_and_optional_values() {
    let chart = chart();
    for values in [
        &[][..],
        &["watchNamespace=jhub"][..],
        &["clusterWide=true"][..],
        &[
            "clusterWide=true",
            "hubNamespaces={jhub,lab}",
            "log.format=json",
            "log.level=debug",
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
            "imagePullSecrets[0].name=registry",
            "replicas=2",
            "ledger.type=postgres",
            "ledger.url=postgres://hubgrade@ledger-db:5432/hubgrade",
            "ledger.passwordSecret.name=ledger-db",
        ][..],
    ] {
        let output = helm(&["lint", "--strict", &chart], values);
        assert!(
            output.status.success(),
            "helm lint with {values:?}:\n{}{}",
            stdout(&output),
            stderr(&output)
        );
    }
}

#[test]
fn the_schema_refuses_bad_values_naming_them() {
    let chart = chart();
    for (value, named) in [
        ("replicas=two", "/replicas"),
        ("log.format=xml", "/log/format"),
        ("image.repository=", "/image/repository"),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("metrics.port=0", "/metrics/port"),
        ("watchNamespace=Not_A_Namespace", "/watchNamespace"),
        ("watchNamespaces=jhub", "watchNamespaces"),
        (
            "metrics.serviceMonitor.enabled=maybe",
            "/metrics/serviceMonitor/enabled",
        ),
    ] {
        for command in ["lint", "template"] {
            let output = helm(&[command, &chart], &[value]);
            let message = format!("{}{}", stdout(&output), stderr(&output));
            assert!(
                !output.status.success(),
                "helm {command} accepted {value}:\n{message}"
            );
            assert!(
                message.contains("values don't meet the specifications of the schema")
                    && message.contains(named),
                "helm {command} refused {value} without naming {named}:\n{message}"
            );
        }
    }
}

#[test]
fn two_releases_in_one_namespace_share_no_name() {
    for values in [
        &[][..],
        &["watchNamespace=jhub"][..],
        &["clusterWide=true"][..],
    ] {
        let first = render("alpha", "ops", values);
        let second = render("beta", "ops", values);
        let first_names = identities(&first);
        let clashes: Vec<_> = identities(&second)
            .into_iter()
            .filter(|identity| first_names.contains(identity))
            .collect();
        assert!(
            clashes.is_empty(),
            "with {values:?}, both releases render {clashes:?}"
        );
        let lease = |objects: &[Value], deployment: &str| {
            env(
                object(objects, "Deployment", deployment),
                "HUBGRADE_LEASE_NAME",
            )
        };
        assert_eq!(
            lease(&first, "alpha-hubgrade"),
            Some(Value::from("alpha-hubgrade-leader"))
        );
        assert_eq!(
            lease(&second, "beta-hubgrade"),
            Some(Value::from("beta-hubgrade-leader"))
        );
    }
}

#[test]
fn a_release_named_hubgrade_keeps_todays_names() {
    let namespaced = render("hubgrade", "jhub", &["watchNamespace=jhub"]);
    let expected = |items: &[(&str, &str)]| -> Vec<(String, String, String)> {
        let mut items: Vec<_> = items
            .iter()
            .map(|(kind, name)| {
                let namespace = if kind.starts_with("Cluster") {
                    ""
                } else {
                    "jhub"
                };
                (kind.to_string(), namespace.to_string(), name.to_string())
            })
            .collect();
        items.sort();
        items
    };
    assert_eq!(
        identities(&namespaced),
        expected(&[
            ("ServiceAccount", "hubgrade"),
            ("Role", "hubgrade"),
            ("RoleBinding", "hubgrade"),
            ("Role", "hubgrade-leader"),
            ("RoleBinding", "hubgrade-leader"),
            ("Service", "hubgrade"),
            ("Deployment", "hubgrade"),
            ("PersistentVolumeClaim", "hubgrade-ledger"),
        ])
    );
    let deployment = object(&namespaced, "Deployment", "hubgrade");
    assert_eq!(
        env(deployment, "HUBGRADE_LEASE_NAME"),
        Some(Value::from("hubgrade-leader"))
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["serviceAccountName"],
        "hubgrade"
    );

    let everywhere = render("hubgrade", "jhub", &["clusterWide=true"]);
    for (kind, name) in [
        ("ClusterRole", "hubgrade"),
        ("ClusterRoleBinding", "hubgrade"),
        ("Role", "hubgrade-leader"),
    ] {
        object(&everywhere, kind, name);
    }
    // What tests/support/e2e.rs applies before running the operator with its token.
    let rbac = template_text(
        "hubgrade",
        "jhub",
        &["watchNamespace=jhub"],
        &["--show-only", "templates/rbac.yaml"],
    );
    assert!(
        rbac.contains("kind: ServiceAccount\nmetadata:\n  name: hubgrade\n"),
        "{rbac}"
    );
}

/// With no values the operator is namespaced to the release's namespace: a Role there and
/// nothing cluster-wide. Every namespace is an opt-in (`clusterWide`), which a namespace to
/// watch contradicts.
#[test]
fn the_default_is_namespaced_to_the_release_namespace() {
    let objects = render("hubgrade", "jhub", &[]);
    let cluster_wide: Vec<_> = identities(&objects)
        .into_iter()
        .filter(|(kind, _, _)| kind.starts_with("Cluster"))
        .collect();
    assert!(cluster_wide.is_empty(), "by default: {cluster_wide:?}");
    let role = object(&objects, "Role", "hubgrade");
    assert_eq!(role["metadata"]["namespace"], "jhub");
    assert!(grants(role, "jobs", "create") && grants(role, "secrets", "get"));
    bound_to(
        object(&objects, "RoleBinding", "hubgrade"),
        "Role",
        "hubgrade",
        "hubgrade",
        "jhub",
    );
    assert_eq!(
        env(
            object(&objects, "Deployment", "hubgrade"),
            "HUBGRADE_NAMESPACE"
        ),
        Some(Value::from("jhub"))
    );

    let everywhere = render("hubgrade", "jhub", &["clusterWide=true"]);
    assert_eq!(
        env(
            object(&everywhere, "Deployment", "hubgrade"),
            "HUBGRADE_NAMESPACE"
        ),
        None
    );
    object(&everywhere, "ClusterRole", "hubgrade-edit");
    object(&everywhere, "ClusterRole", "hubgrade-view");

    let output = helm(
        &["template", "hubgrade", &chart()],
        &["clusterWide=true", "watchNamespace=jhub"],
    );
    assert!(
        !output.status.success() && stderr(&output).contains("clusterWide: true watches every"),
        "clusterWide with watchNamespace: {}",
        stderr(&output)
    );
}

#[test]
fn namespaced_mode_takes_its_lease_in_the_release_namespace() {
    let objects = render("hubgrade", "ops", &["watchNamespace=jhub"]);
    assert!(
        of_kind(&objects, "ClusterRole").is_empty()
            && of_kind(&objects, "ClusterRoleBinding").is_empty(),
        "namespaced mode renders cluster-wide RBAC: {:?}",
        identities(&objects)
    );
    let watch = object(&objects, "Role", "hubgrade");
    assert_eq!(watch["metadata"]["namespace"], "jhub");
    assert!(grants(watch, "hubupgrades", "watch") && grants(watch, "secrets", "create"));

    let leader = object(&objects, "Role", "hubgrade-leader");
    assert_eq!(leader["metadata"]["namespace"], "ops");
    for verb in ["get", "create", "update"] {
        assert!(
            grants(leader, "leases", verb),
            "the leader Role lacks {verb}: {leader}"
        );
    }
    assert!(
        leader["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|rule| rule.get("resourceNames").is_some())
            .all(|rule| rule["resourceNames"] == serde_json::json!(["hubgrade-leader"])),
        "{leader}"
    );
    bound_to(
        object(&objects, "RoleBinding", "hubgrade-leader"),
        "Role",
        "hubgrade-leader",
        "hubgrade",
        "ops",
    );
    bound_to(
        object(&objects, "RoleBinding", "hubgrade"),
        "Role",
        "hubgrade",
        "hubgrade",
        "ops",
    );

    let deployment = object(&objects, "Deployment", "hubgrade");
    assert_eq!(
        env(deployment, "HUBGRADE_NAMESPACE"),
        Some(Value::from("jhub"))
    );
    // The pod's own namespace, which is the release namespace.
    assert_eq!(
        env(deployment, "HUBGRADE_LEASE_NAMESPACE"),
        Some(serde_json::json!({"fieldRef": {"fieldPath": "metadata.namespace"}}))
    );
    let probe = |name: &str| container(deployment)[name]["httpGet"]["path"].clone();
    assert_eq!(probe("readinessProbe"), "/readyz");
    assert_eq!(probe("livenessProbe"), "/healthz");
}

#[test]
fn the_operator_knows_every_setting_the_chart_passes() {
    let objects = render(
        "hubgrade",
        "ops",
        &[
            "watchNamespace=jhub",
            "log.format=json",
            "imagePullSecrets[0].name=registry",
            "ledger.type=postgres",
            "ledger.url=postgres://hubgrade@ledger-db:5432/hubgrade",
            "ledger.passwordSecret.name=ledger-db",
            "imagePolicy.allowedRepositories[0]=ghcr.io/org/k8s-hub",
            "imagePolicy.allowedRepositories[1]=registry.example.com/jupyter/",
        ],
    );
    let deployment = object(&objects, "Deployment", "hubgrade");
    assert_eq!(
        env(deployment, "HUBGRADE_ALLOWED_IMAGE_REPOSITORIES"),
        Some(serde_json::json!(
            "ghcr.io/org/k8s-hub,registry.example.com/jupyter/"
        ))
    );
    let help = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(["run", "--help"])
        .output()
        .expect("running hubgrade run --help");
    assert!(help.status.success());
    let help = stdout(&help);
    let container = container(deployment);
    for variable in container["env"].as_array().expect("env") {
        let name = variable["name"].as_str().expect("an env name");
        if name == "RUST_LOG" || name == "POD_NAMESPACE" {
            continue; // read by the log filter, and by run.rs as the lease's fallback
        }
        if name == "HUBGRADE_LEDGER_PASSWORD" {
            // Only ever from the environment (a Secret), never a flag: --ledger-url names it.
            assert!(help.contains("$HUBGRADE_LEDGER_PASSWORD"), "{help}");
            continue;
        }
        assert!(
            help.contains(&format!("[env: {name}")),
            "`hubgrade run` reads no {name}:\n{help}"
        );
    }
    let args = container["args"].as_array().expect("args");
    assert_eq!(args[0], "run");
    for arg in &args[1..] {
        let flag = arg.as_str().expect("a flag");
        assert!(help.contains(flag), "`hubgrade run` has no {flag}:\n{help}");
    }
}

/// The chart's `imagePullSecrets` reach the operator's pod and, by name, the Jobs it makes (which
/// run its image in the hubs' namespaces); none set: no variable.
#[test]
fn image_pull_secrets_reach_the_operator_and_its_jobs() {
    let objects = render(
        "hubgrade",
        "ops",
        &[
            "imagePullSecrets[0].name=registry",
            "imagePullSecrets[1].name=mirror",
        ],
    );
    let deployment = object(&objects, "Deployment", "hubgrade");
    assert_eq!(
        env(deployment, "HUBGRADE_AGENT_IMAGE_PULL_SECRETS"),
        Some(Value::from("registry,mirror"))
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["imagePullSecrets"],
        serde_json::json!([{"name": "registry"}, {"name": "mirror"}])
    );
    let plain = render("hubgrade", "ops", &[]);
    let deployment = object(&plain, "Deployment", "hubgrade");
    assert_eq!(env(deployment, "HUBGRADE_AGENT_IMAGE_PULL_SECRETS"), None);
}

#[test]
fn log_values_reach_the_operator() {
    let args_and_filter = |values: &[&str]| {
        let objects = render("hubgrade", "ops", values);
        let deployment = object(&objects, "Deployment", "hubgrade");
        (
            container(deployment)["args"].clone(),
            env(deployment, "RUST_LOG"),
        )
    };
    assert_eq!(
        args_and_filter(&[]),
        (
            serde_json::json!(["run"]),
            Some(Value::from("info,kube=warn"))
        )
    );
    assert_eq!(
        args_and_filter(&["log.format=json", "log.level=debug"]),
        (
            serde_json::json!(["run", "--log-json"]),
            Some(Value::from("debug"))
        )
    );
}

#[test]
fn hub_namespaces_confine_secrets_to_them() {
    let everywhere = render("hubgrade", "ops", &["clusterWide=true"]);
    assert!(grants(
        object(&everywhere, "ClusterRole", "hubgrade"),
        "secrets",
        "create"
    ));
    assert!(
        !identities(&everywhere)
            .iter()
            .any(|(_, _, name)| name.ends_with("-secrets"))
    );

    let listed = render(
        "hubgrade",
        "ops",
        &["clusterWide=true", "hubNamespaces={jhub,lab}"],
    );
    let cluster_role = object(&listed, "ClusterRole", "hubgrade");
    assert!(
        !grants(cluster_role, "secrets", "get") && !grants(cluster_role, "secrets", "create"),
        "{cluster_role}"
    );
    assert!(grants(cluster_role, "hubupgrades", "watch"));
    let roles: Vec<_> = of_kind(&listed, "Role")
        .into_iter()
        .filter(|r| r["metadata"]["name"] == "hubgrade-secrets")
        .collect();
    let namespaces: Vec<_> = roles
        .iter()
        .map(|r| r["metadata"]["namespace"].clone())
        .collect();
    assert_eq!(namespaces, [Value::from("jhub"), Value::from("lab")]);
    for role in roles {
        assert!(
            grants(role, "secrets", "get") && grants(role, "secrets", "create"),
            "{role}"
        );
    }
    let bindings: Vec<_> = of_kind(&listed, "RoleBinding")
        .into_iter()
        .filter(|b| b["metadata"]["name"] == "hubgrade-secrets")
        .collect();
    assert_eq!(bindings.len(), 2);
    for binding in bindings {
        bound_to(binding, "Role", "hubgrade-secrets", "hubgrade", "ops");
    }

    let output = helm(
        &["template", "hubgrade", &chart()],
        &["watchNamespace=jhub", "hubNamespaces={lab}"],
    );
    assert!(
        !output.status.success()
            && stderr(&output)
                .contains("hubNamespaces is for an operator watching every namespace"),
        "hubNamespaces with watchNamespace: {}",
        stderr(&output)
    );
}

#[test]
fn service_monitor_only_when_enabled() {
    let default = render("hubgrade", "ops", &[]);
    assert!(of_kind(&default, "ServiceMonitor").is_empty());
    let service = object(&default, "Service", "hubgrade");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "metrics");
    let pod_labels =
        &object(&default, "Deployment", "hubgrade")["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().expect("a selector") {
        assert_eq!(
            &pod_labels[key], value,
            "the Service selects no operator pod"
        );
    }

    let enabled = render(
        "hubgrade",
        "ops",
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.serviceMonitor.labels.release=prometheus",
        ],
    );
    let monitors = of_kind(&enabled, "ServiceMonitor");
    assert_eq!(monitors.len(), 1, "{:?}", identities(&enabled));
    let monitor = monitors[0];
    assert_eq!(monitor["metadata"]["namespace"], "ops");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );
}

#[test]
fn the_pod_meets_the_restricted_pod_security_standard() {
    let objects = render(
        "hubgrade",
        "ops",
        &["imagePullSecrets[0].name=registry", "nodeSelector.disk=ssd"],
    );
    let pod = &object(&objects, "Deployment", "hubgrade")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{pod}");
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
        "{pod}"
    );
    for container in pod["containers"].as_array().expect("containers") {
        let security = &container["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{container}");
        assert_eq!(
            security["capabilities"]["drop"],
            serde_json::json!(["ALL"]),
            "{container}"
        );
        assert!(security["capabilities"].get("add").is_none(), "{container}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{container}");
        assert_ne!(security["privileged"], true, "{container}");
        assert!(
            container["resources"]["limits"]["memory"].is_string(),
            "{container}"
        );
    }
    assert!(pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none());
    assert_eq!(
        pod["imagePullSecrets"],
        serde_json::json!([{"name": "registry"}])
    );
    assert_eq!(pod["nodeSelector"], serde_json::json!({"disk": "ssd"}));
}

#[test]
fn the_default_image_is_this_version() {
    let objects = render("hubgrade", "ops", &[]);
    let deployment = object(&objects, "Deployment", "hubgrade");
    let image = format!("ghcr.io/hubgrade/hubgrade:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(container(deployment)["image"], image.as_str());
    assert_eq!(
        env(deployment, "HUBGRADE_AGENT_IMAGE"),
        Some(Value::from(image))
    );
}

/// The API server accepts every object the chart renders (CRD included), in both modes, and the
/// README's CRD upgrade; nothing is created (`--dry-run=server`).
#[test]
fn the_api_server_accepts_the_rendered_chart() {
    let crds = repo().join("charts/hubgrade/crds");
    let upgraded = support::kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-f",
        crds.to_str().expect("a UTF-8 path"),
    ])
    .output()
    .expect("kubectl");
    assert!(
        upgraded.status.success() && stdout(&upgraded).contains("hubupgrades.hubgrade.io"),
        "the README's CRD upgrade (kubectl apply --server-side --force-conflicts -f crds/): {}",
        stderr(&upgraded)
    );
    for values in [
        &[][..],
        &["watchNamespace=default"][..],
        &[
            "clusterWide=true",
            "hubNamespaces={default,kube-public}",
            "log.format=json",
        ][..],
    ] {
        let rendered = template_text("hubgrade-dry-run", "default", values, &["--include-crds"]);
        let applied = kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &rendered);
        assert!(
            applied.status.success(),
            "kubectl apply --dry-run=server of the chart with {values:?} (is the local cluster up? \
             `make cluster-up`): {}",
            stderr(&applied)
        );
        let report = stdout(&applied);
        for (kind, _, name) in identities(&parse(&rendered)) {
            let kind = kind.to_lowercase();
            assert!(
                report.lines().any(|line| {
                    (line.starts_with(&format!("{kind}.")) || line.starts_with(&format!("{kind}/")))
                        && line.contains(&format!("/{name} "))
                        && line.ends_with("(server dry run)")
                }),
                "the API server did not take {kind} {name}:\n{report}"
            );
        }
    }
}

/// The ledger: by default an SQLite file on a claim the chart makes and keeps on uninstall,
/// mounted where the operator's URL points, writable for its group; several replicas need a
/// PostgreSQL ledger, whose password comes from a Secret and never from a value.
#[test]
fn the_ledger_is_a_kept_claim_by_default_and_a_server_for_several_replicas() {
    let objects = render("hubgrade", "ops", &[]);
    let claim = object(&objects, "PersistentVolumeClaim", "hubgrade-ledger");
    assert_eq!(
        claim["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let deployment = object(&objects, "Deployment", "hubgrade");
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["fsGroup"], 65532);
    assert_eq!(
        pod["volumes"][0]["persistentVolumeClaim"]["claimName"],
        "hubgrade-ledger"
    );
    let mount = container(deployment)["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("a mount");
    let url = env(deployment, "HUBGRADE_LEDGER_URL")
        .expect("a ledger URL")
        .as_str()
        .expect("a value")
        .to_string();
    assert_eq!(url, format!("sqlite://{mount}/ledger.sqlite"));

    let several = helm(&["template", "hubgrade", &chart()], &["replicas=2"]);
    assert!(!several.status.success());
    assert!(
        stderr(&several).contains("use ledger.type postgres for several replicas"),
        "{}",
        stderr(&several)
    );
    let with_password = helm(
        &["template", "hubgrade", &chart()],
        &[
            "ledger.type=postgres",
            "ledger.url=postgres://u:secret@db/ledger",
        ],
    );
    assert!(!with_password.status.success());
    assert!(stderr(&with_password).contains("/ledger/url"));

    let objects = render(
        "hubgrade",
        "ops",
        &[
            "replicas=2",
            "ledger.type=postgres",
            "ledger.url=postgres://hubgrade@ledger-db:5432/hubgrade",
            "ledger.passwordSecret.name=ledger-db",
        ],
    );
    assert!(of_kind(&objects, "PersistentVolumeClaim").is_empty());
    let deployment = object(&objects, "Deployment", "hubgrade");
    let password = env(deployment, "HUBGRADE_LEDGER_PASSWORD").expect("the password variable");
    assert_eq!(
        password["secretKeyRef"],
        serde_json::json!({"name": "ledger-db", "key": "password"})
    );
    let objects = render("hubgrade", "ops", &["ledger.type=none"]);
    let deployment = object(&objects, "Deployment", "hubgrade");
    assert!(env(deployment, "HUBGRADE_LEDGER_URL").is_none());
    assert!(of_kind(&objects, "PersistentVolumeClaim").is_empty());
}

/// The optional PrometheusRule: rendered only when asked, and every metric its alerts name is
/// one the operator exports.
#[test]
fn the_prometheus_rule_alerts_on_metrics_the_operator_exports() {
    let objects = render("hubgrade", "ops", &[]);
    assert!(of_kind(&objects, "PrometheusRule").is_empty());
    let objects = render(
        "hubgrade",
        "ops",
        &[
            "metrics.prometheusRule.enabled=true",
            "metrics.prometheusRule.labels.release=prometheus",
        ],
    );
    let rule = object(&objects, "PrometheusRule", "hubgrade");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");

    // The operator's /metrics with a sample in every family.
    use hubgrade::machine::{Phase, Progress};
    let metrics = hubgrade::reconcile::Metrics::default();
    let now = jiff::Timestamp::now();
    let running = Progress {
        phase: Phase::Migrating,
        phase_started_at: Some(now),
        ..Progress::default()
    };
    let ended = Progress {
        phase: Phase::RolledBack,
        ..running.clone()
    };
    metrics.stepped(&running, &ended, now);
    metrics.track("u", &running, now);
    metrics.set_leader(true);
    metrics.set_ledger_waiting(0);
    let exported = metrics.render();

    let mut alerts = Vec::new();
    for rule in rule["spec"]["groups"][0]["rules"]
        .as_array()
        .expect("rules")
    {
        alerts.push(rule["alert"].as_str().expect("an alert").to_string());
        let expr = rule["expr"].as_str().expect("an expr");
        let names: Vec<&str> = expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("hubgrade_"))
            .collect();
        assert!(!names.is_empty(), "{expr}");
        for name in names {
            assert!(
                exported.contains(&format!("\n{name}")),
                "the alert {} uses {name}, which the operator does not export:\n{exported}",
                rule["alert"]
            );
        }
    }
    assert_eq!(
        alerts,
        [
            "HubUpgradeStalled",
            "HubUpgradeRolledBack",
            "HubUpgradeFailedHoldingHub",
            "HubgradeNoLeader",
            "HubgradeLedgerBehind"
        ]
    );
}
