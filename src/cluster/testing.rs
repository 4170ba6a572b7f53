//! A mocked API server for the reconciler's tests: the layer between the pure unit tests and
//! the cluster tests (docs/ARCHITECTURE.md, section 5). A test lists the requests it expects,
//! in order, each with the answer to give ([`Exchange`]); [`scenario`] hands the code under test
//! a `kube::Client` whose requests go to a tower-test mock, and fails when a request differs
//! from the one expected (method, path, query, content type, body), when an expected request
//! never comes, or when one more comes.

use std::future::Future;

use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};

use super::interpret::Snapshot;
use super::target::Target;
use crate::api::HubUpgrade;

pub(crate) const MERGE_PATCH: &str = "application/merge-patch+json";
pub(crate) const STRATEGIC_PATCH: &str = "application/strategic-merge-patch+json";
pub(crate) const APPLY_PATCH: &str = "application/apply-patch+yaml";

type BodyCheck = Box<dyn FnOnce(&Value) + Send>;

/// One request the code under test must make, and the answer it gets.
pub(crate) struct Exchange {
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    content_type: Option<&'static str>,
    body: Option<Value>,
    exact_body: bool,
    checks: Vec<BodyCheck>,
    status: StatusCode,
    reply: Option<Value>,
}

impl Exchange {
    fn new(method: Method, path: &str) -> Exchange {
        Exchange {
            method,
            path: path.to_string(),
            query: Vec::new(),
            content_type: None,
            body: None,
            exact_body: false,
            checks: Vec::new(),
            status: StatusCode::OK,
            reply: None,
        }
    }

    pub(crate) fn get(path: &str) -> Exchange {
        Exchange::new(Method::GET, path)
    }

    pub(crate) fn post(path: &str) -> Exchange {
        Exchange::new(Method::POST, path)
    }

    pub(crate) fn patch(path: &str, content_type: &'static str) -> Exchange {
        Exchange {
            content_type: Some(content_type),
            ..Exchange::new(Method::PATCH, path)
        }
    }

    pub(crate) fn put(path: &str) -> Exchange {
        Exchange::new(Method::PUT, path)
    }

    pub(crate) fn delete(path: &str) -> Exchange {
        Exchange::new(Method::DELETE, path)
    }

    /// The query must carry `key=value` (decoded), among others.
    pub(crate) fn query(mut self, key: &str, value: &str) -> Exchange {
        self.query.push((key.to_string(), value.to_string()));
        self
    }

    /// The body must hold `fragment`: objects key by key (a `null` must be there as `null`),
    /// arrays element by element with the same length, other values equal.
    pub(crate) fn body_contains(mut self, fragment: Value) -> Exchange {
        self.body = Some(fragment);
        self
    }

    /// The body must be exactly `body`: nothing more is written.
    pub(crate) fn body_is(mut self, body: Value) -> Exchange {
        self.body = Some(body);
        self.exact_body = true;
        self
    }

    /// Asserts more about the body than a fragment says.
    pub(crate) fn body_check(mut self, check: impl FnOnce(&Value) + Send + 'static) -> Exchange {
        self.checks.push(Box::new(check));
        self
    }

    /// Answers 200 with `object` (without a reply, a write answers with its own body).
    pub(crate) fn reply(mut self, object: impl serde::Serialize) -> Exchange {
        self.reply = Some(serde_json::to_value(object).expect("a serializable reply"));
        self
    }

    /// Answers with a failure `Status`, as the API server does.
    pub(crate) fn fail(mut self, code: u16, reason: &str) -> Exchange {
        self.status = StatusCode::from_u16(code).expect("an HTTP status");
        self.reply = Some(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "reason": reason, "code": code,
            "message": format!("{reason} (mocked)"),
        }));
        self
    }

    pub(crate) fn not_found(self) -> Exchange {
        self.fail(404, "NotFound")
    }

    /// Answers 200 with an empty list of `kind` (`PodList`, `JobList`, ...).
    pub(crate) fn empty_list(self, kind: &str) -> Exchange {
        self.reply(json!({"kind": kind, "apiVersion": "v1", "metadata": {}, "items": []}))
    }

    fn describe(&self) -> String {
        format!("{} {}", self.method, self.path)
    }

    /// Asserts `request` is this exchange's, and builds the answer.
    async fn answer(self, request: Request<Body>) -> Response<Body> {
        let expected = self.describe();
        let (parts, body) = request.into_parts();
        let actual = format!("{} {}", parts.method, parts.uri);
        assert_eq!(
            parts.method, self.method,
            "expected {expected}, got {actual}"
        );
        assert_eq!(
            parts.uri.path(),
            self.path,
            "expected {expected}, got {actual}"
        );
        let query: Vec<(String, String)> =
            form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        for pair in &self.query {
            assert!(
                query.contains(pair),
                "{actual}: the query lacks {}={}",
                pair.0,
                pair.1
            );
        }
        if let Some(content_type) = self.content_type {
            let sent = parts
                .headers
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            assert_eq!(sent, Some(content_type), "{actual}: content type");
        }
        let bytes = body.collect_bytes().await.expect("the request body");
        let sent: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON request body")
        };
        if let Some(fragment) = &self.body {
            if self.exact_body {
                assert_eq!(&sent, fragment, "{actual}: body");
            } else {
                assert!(
                    contains(&sent, fragment),
                    "{actual}: the body\n{sent:#}\ndoes not hold\n{fragment:#}"
                );
            }
        }
        for check in self.checks {
            check(&sent);
        }
        let reply = self.reply.unwrap_or(sent);
        Response::builder()
            .status(self.status)
            .header(CONTENT_TYPE, "application/json")
            .body(Body::from(
                serde_json::to_vec(&reply).expect("a JSON reply"),
            ))
            .expect("a response")
    }
}

/// Whether `actual` holds everything `fragment` says (see [`Exchange::body_contains`]).
pub(crate) fn contains(actual: &Value, fragment: &Value) -> bool {
    match (actual, fragment) {
        (Value::Object(actual), Value::Object(fragment)) => fragment
            .iter()
            .all(|(key, value)| actual.get(key).is_some_and(|a| contains(a, value))),
        (Value::Array(actual), Value::Array(fragment)) => {
            actual.len() == fragment.len()
                && actual.iter().zip(fragment).all(|(a, f)| contains(a, f))
        }
        _ => actual == fragment,
    }
}

/// Runs `test` with a client of a mocked API server that expects `exchanges`, in this order,
/// and nothing else. The server's verdict comes before the test's result is returned, so a
/// wrong request fails with what was wrong, not with the error the client saw.
pub(crate) async fn scenario<F, Fut, T>(exchanges: Vec<Exchange>, test: F) -> T
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = T>,
{
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let server = tokio::spawn(serve(handle, exchanges));
    // The client (and every clone the test made) is dropped when `test` ends, which tells the
    // server no more requests come.
    let result = test(Client::new(service, "default")).await;
    match server.await {
        Ok(()) => result,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

async fn serve(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    exchanges: Vec<Exchange>,
) {
    let count = exchanges.len();
    for (index, exchange) in exchanges.into_iter().enumerate() {
        let Some((request, respond)) = handle.next_request().await else {
            panic!(
                "request {} of {count} never came: {}",
                index + 1,
                exchange.describe()
            );
        };
        respond.send_response(exchange.answer(request).await);
    }
    if let Some((request, _)) = handle.next_request().await {
        panic!(
            "one request more than the {count} expected: {} {}",
            request.method(),
            request.uri()
        );
    }
}

// Fixtures: one upgrade of the z2jh hub `jhub/hub` from 4.1.0 to 4.2.0.

pub(crate) const NAMESPACE: &str = "jhub";
pub(crate) const UID: &str = "0f1e2d3c-aaaa-bbbb-cccc-000000000000";
pub(crate) const AGENT_IMAGE: &str = "ghcr.io/hubgrade/hubgrade:test";
pub(crate) const TARGET_IMAGE: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
pub(crate) const HUB_PATH: &str = "/apis/apps/v1/namespaces/jhub/deployments/hub";

/// `observe` in Pending or Preflight reads the hub Secret's chart values (z2jh's
/// `values.yaml`): here an SQLite hub's, as z2jh renders them.
pub(crate) fn hub_values() -> Exchange {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let values = "hub:\n  db:\n    type: sqlite-pvc\n    pvc: {storage: 1Gi}\n  cookieSecret: x\n";
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("hub".into()),
            ..Default::default()
        },
        data: Some([("values.yaml".to_string(), ByteString(values.into()))].into()),
        ..Default::default()
    };
    Exchange::get("/api/v1/namespaces/jhub/secrets/hub")
        .reply(serde_json::to_value(secret).expect("a Secret"))
}
/// What Preflight reads to size the configuration backup: the hub's ConfigMap (its Secret,
/// read for the chart values just before, is not read again).
pub(crate) fn hub_configuration() -> Vec<Exchange> {
    vec![
        Exchange::get("/api/v1/namespaces/jhub/configmaps/hub").reply(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "hub", "namespace": "jhub"},
            "data": {"jupyterhub_config.py": "c.JupyterHub.log_level = 'INFO'\n"}
        })),
    ]
}
pub(crate) const UPGRADE_PATH: &str =
    "/apis/hubgrade.io/v1alpha1/namespaces/jhub/hubupgrades/to-4-2";
pub(crate) const JOBS_PATH: &str = "/apis/batch/v1/namespaces/jhub/jobs";

/// How `observe` looks up the upgrade's four Jobs by name: `found` answers for those that
/// exist (the Job, then whatever else is read about it), the others are not found.
/// What `observe` reads of this upgrade's Jobs: one list by its uid, holding the Jobs `found`
/// gives for a step's Job name (with the reads of its pods that follow), in step order.
pub(crate) fn job_lookups(
    mut found: impl FnMut(&str) -> Option<(serde_json::Value, Vec<Exchange>)>,
) -> Vec<Exchange> {
    let mut items = Vec::new();
    let mut pods = Vec::new();
    for step in [
        "rehearsal",
        "backup",
        "migration",
        "fresh-database",
        "restore",
    ] {
        if let Some((job, reads)) = found(&format!("hubgrade-0f1e2d3c-{step}")) {
            items.push(job);
            pods.extend(reads);
        }
    }
    let list = Exchange::get(JOBS_PATH)
        .query("labelSelector", &format!("hubgrade.io/upgrade-uid={UID}"))
        .reply(json!({
            "apiVersion": "batch/v1", "kind": "JobList", "metadata": {}, "items": items
        }));
    std::iter::once(list).chain(pods).collect()
}

pub(crate) fn upgrade() -> HubUpgrade {
    serde_json::from_value(json!({
        "apiVersion": "hubgrade.io/v1alpha1", "kind": "HubUpgrade",
        "metadata": {
            "name": "to-4-2", "namespace": NAMESPACE, "uid": UID,
            "resourceVersion": "7", "generation": 1,
            "finalizers": ["hubgrade.io/hub-lock"],
        },
        "spec": {"hub": {"deployment": "hub"}, "targetImage": TARGET_IMAGE}
    }))
    .expect("an upgrade")
}

pub(crate) fn target() -> Target {
    Target::resolve(&upgrade(), AGENT_IMAGE).expect("a target")
}

/// The hub as z2jh deploys it, with its configuration in a ConfigMap and a Secret.
pub(crate) fn hub() -> Deployment {
    serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hub", "namespace": NAMESPACE, "resourceVersion": "41", "generation": 3,
                     "labels": {"app": "jupyterhub", "component": "hub", "release": "jhub"}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"component": "hub"}},
            "template": {
                "metadata": {"labels": {"component": "hub"}},
                "spec": {
                    "containers": [{
                        "name": "hub",
                        "image": "quay.io/jupyterhub/k8s-hub:4.1.0",
                        "args": ["jupyterhub", "--config", "/usr/local/etc/jupyterhub/jupyterhub_config.py"],
                        "volumeMounts": [
                            {"name": "pvc", "mountPath": "/srv/jupyterhub"},
                            {"name": "config", "mountPath": "/usr/local/etc/jupyterhub/jupyterhub_config.py", "subPath": "jupyterhub_config.py"},
                            {"name": "secret", "mountPath": "/usr/local/etc/jupyterhub/secret/"}
                        ]
                    }],
                    "volumes": [
                        {"name": "pvc", "persistentVolumeClaim": {"claimName": "hub-db-dir"}},
                        {"name": "config", "configMap": {"name": "hub"}},
                        {"name": "secret", "secret": {"secretName": "hub"}}
                    ]
                }
            }
        },
        "status": {"observedGeneration": 3, "replicas": 1, "readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}
    }))
    .expect("a Deployment")
}

/// `hub()` with the lock annotations naming `holder` (name, uid).
pub(crate) fn locked_hub(holder: (&str, &str)) -> Deployment {
    let mut hub = hub();
    hub.metadata.annotations = Some(
        [
            (super::lock::LOCKED_BY.to_string(), holder.0.to_string()),
            (super::lock::LOCKED_BY_UID.to_string(), holder.1.to_string()),
        ]
        .into(),
    );
    hub
}

/// What a reconcile would have read of `hub` (no pods, no Jobs).
pub(crate) fn snapshot_of(hub: Deployment) -> Snapshot {
    Snapshot {
        layout: Some(target().layout(&hub)),
        deployment: Some(hub),
        ..Snapshot::default()
    }
}

mod tests {
    use super::contains;
    use serde_json::json;

    #[test]
    fn a_fragment_is_held_key_by_key() {
        let body = json!({"metadata": {"a": 1, "b": null}, "list": [{"x": 1, "y": 2}]});
        assert!(contains(&body, &json!({"metadata": {"a": 1}})));
        assert!(contains(&body, &json!({"metadata": {"b": null}})));
        assert!(contains(&body, &json!({"list": [{"x": 1}]})));
        assert!(!contains(&body, &json!({"metadata": {"c": null}})));
        assert!(!contains(&body, &json!({"metadata": {"a": 2}})));
        assert!(!contains(&body, &json!({"list": []})));
    }
}
