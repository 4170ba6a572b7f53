//! Issue "The maintenance window", points 3 and 4, on the local (KWOK) cluster: the webhook
//! receives exactly the documented messages (window open, downtime starting, finished), a dead
//! webhook changes nothing about the outcome, and the hub is verified through its REST API (the
//! KWOK stand-in plays it at the hub pod's address): health, version, revision in
//! `status.steps`, and a Ready hub that reports the wrong JupyterHub release is rolled back.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use hubgrade::machine::{Outcome, Phase};
use serde_json::{Value, json};
use support::e2e::{Hub, assert_phase, with_template_annotations};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const NEXT: &str = "quay.io/jupyterhub/k8s-hub:4.3.0";
const LIMIT: Duration = Duration::from_secs(120);
const TERMINAL: [Phase; 3] = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];

/// A webhook receiver on this machine: the JSON bodies it was sent, in order.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |body: String| {
            let kept = kept.clone();
            async move {
                let body: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
                kept.lock().expect("lock").push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    // A token in the URL, as chat webhooks have: it must never show.
    (
        format!("http://{address}/hook?token=webhook-s3cret"),
        received,
    )
}

fn webhook_secret(hub: &Hub, name: &str, url: &str) {
    let created = support::kubectl(&[
        "create",
        "secret",
        "generic",
        name,
        "-n",
        hub.ns(),
        &format!("--from-literal=url={url}"),
    ])
    .output()
    .expect("kubectl");
    assert!(created.status.success(), "{}", support::stderr(&created));
}

fn spec(target: &str, secret: &str) -> Value {
    json!({"hub": {"deployment": "hub"}, "targetImage": target,
           "notifications": {"webhook": {"urlSecret": {"name": secret, "key": "url"}}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_hears_each_moment_and_a_dead_one_changes_nothing() {
    let mut hub = Hub::new("notify", |yaml| yaml).await;
    let (url, received) = receiver().await;
    webhook_secret(&hub, "webhook", &url);
    hub.apply_upgrade("to-4-2", spec(TARGET, "webhook")).await;
    let done = hub.wait_for("to-4-2", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::Succeeded);

    // Delivered in the background: give it a moment.
    support::wait_until(
        Duration::from_secs(20),
        "three webhook messages",
        || async { received.lock().expect("lock").len() >= 3 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let messages = received.lock().expect("lock").clone();
    let events: Vec<&str> = messages
        .iter()
        .map(|m| m["event"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(events, ["WindowOpen", "DowntimeStarting", "Finished"]);
    let ns = hub.ns().to_string();
    for message in &messages {
        assert_eq!(message["hub"], format!("{ns}/hub"));
        assert_eq!(message["upgrade"], format!("{ns}/to-4-2"));
        assert_eq!(message["toImage"], TARGET);
        assert_eq!(message["toVersion"], "5.0 – 5.5");
    }
    assert_eq!(messages[1]["phase"], "ScalingDown");
    assert_eq!(messages[1]["fromImage"], support::e2e::ORIGINAL_IMAGE);
    assert_eq!(messages[1]["fromVersion"], "5.0 – 5.5");
    let finished = &messages[2];
    assert_eq!(finished["phase"], "Succeeded");
    assert_eq!(finished["downtimeSeconds"], json!(status.downtime_seconds));
    assert!(finished["downtimeSeconds"].is_i64(), "{finished}");

    // Verified through the hub's API (the stand-in answers at the new hub pod's address).
    assert_eq!(
        status.progress.checks_of(Phase::Verifying),
        [
            ("HubHealth", Outcome::Succeeded),
            ("HubVersion", Outcome::Succeeded),
            ("DatabaseRevision", Outcome::Succeeded)
        ]
    );

    // A webhook nobody answers: the next upgrade ends exactly as well, and says it gave up
    // trying only in the operator's log, never with the URL.
    let dead = format!(
        "http://127.0.0.1:{}/hook?token=webhook-s3cret",
        support::free_port()
    );
    webhook_secret(&hub, "dead-webhook", &dead);
    hub.apply_upgrade("to-4-3", spec(NEXT, "dead-webhook"))
        .await;
    let done = hub.wait_for("to-4-3", &TERMINAL, LIMIT).await;
    assert_phase(&done.status.expect("status"), Phase::Succeeded);
    assert_eq!(hub.hub_image().await, NEXT);
    support::wait_until(Duration::from_secs(20), "the operator to retry", || async {
        hub.operator_log().contains("webhook not delivered")
    })
    .await;
    let log = hub.operator_log();
    assert!(
        !log.contains("webhook-s3cret"),
        "the webhook's URL was logged"
    );
    hub.kill_operator();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ready_hub_that_reports_the_wrong_release_is_rolled_back() {
    // The target's hub pod says it runs JupyterHub 4.1.6, where z2jh 4 ships JupyterHub 5.
    let annotation = format!("kwok.hubgrade.io/hub-version: \"{TARGET}=4.1.6\"");
    let hub = Hub::new("wrong-version", with_template_annotations(&annotation)).await;
    hub.apply_upgrade(
        "to-4-2",
        json!({"hub": {"deployment": "hub"}, "targetImage": TARGET}),
    )
    .await;
    let done = hub.wait_for("to-4-2", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::RolledBack);
    let failure = status.progress.failure.clone().unwrap_or_default();
    assert!(
        failure.contains("reports JupyterHub 4.1.6") && failure.contains("5.0 – 5.5"),
        "{failure}"
    );
    assert_eq!(hub.hub_image().await, support::e2e::ORIGINAL_IMAGE);
    // The rolled back hub was verified too.
    assert!(
        status
            .progress
            .checks_of(Phase::RollingBack)
            .contains(&("HubVersion", Outcome::Succeeded)),
        "{:?}",
        status.progress.steps
    );
}
