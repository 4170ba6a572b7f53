//! Issue "The maintenance window", point 2, on the local cluster's real node: draining through
//! the REST API of a real JupyterHub 4.1.6 (the z2jh-shaped hub of examples/z2jh-hub/real/),
//! whose user server is started through that API and runs in its own pod (KubeSpawner). The
//! drain waits while it is active (the count and the name in the status); `onTimeout: Proceed`
//! upgrades the hub to JupyterHub 5.5.0 and leaves the server running, still serving through the
//! proxy and still known to the new hub; `onTimeout: StopServers` stops it through the API,
//! says which, and then upgrades. The token is the `hubgrade` service's, from the hub Secret
//! where z2jh keeps it. A missing real node, registry or image fails these tests.

mod support;

use std::time::{Duration, Instant};

use hubgrade::machine::{Outcome, Phase};
use serde_json::json;
use support::real_hub::{NEW_IMAGE, OLD_IMAGE, Operator, RealHub};

const UPGRADE_LIMIT: Duration = Duration::from_secs(900);
const TERMINAL: &[Phase] = &[Phase::Succeeded, Phase::RolledBack, Phase::Failed];

fn drain(hub: &RealHub, timeout: &str, on_timeout: &str) -> serde_json::Value {
    let (name, key) = hub.drain_token_secret();
    json!({"drain": {"tokenSecret": {"name": name, "key": key}, "maxActiveServers": 0,
                     "timeout": timeout, "onTimeout": on_timeout}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_waits_for_a_running_server_and_proceed_leaves_it_serving() {
    let hub = RealHub::new("drain-proceed", None, Operator::HostProcess).await;
    hub.start_user_server("alice").await;
    assert!(hub.user_server_answers("alice"));

    hub.apply_upgrade("drain", NEW_IMAGE, drain(&hub, "20s", "Proceed"))
        .await;
    // It waits, saying who, with the hub untouched.
    let waited_from = Instant::now();
    let mut waiting_seen = 0;
    loop {
        let upgrade = hub.upgrades().get("drain").await.expect("the HubUpgrade");
        let status = upgrade.status.unwrap_or_default();
        let phase = status.progress.phase;
        let reports_alice = status.progress.active_servers == Some(1)
            && status.progress.message.contains("(alice)");
        if phase == Phase::Draining && reports_alice {
            waiting_seen += 1;
            assert_eq!(hub.hub_image().await, OLD_IMAGE);
            assert_eq!(
                hub.health(),
                Some(200),
                "the hub must keep serving while draining"
            );
        } else if phase != Phase::Draining
            && (phase.is_terminal() || waiting_seen > 0 || waited_from.elapsed() > UPGRADE_LIMIT)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        waiting_seen >= 5,
        "the drain should have waited, reporting alice, for ~20 s ({waiting_seen} looks)"
    );

    let done = hub.wait_for("drain", TERMINAL, UPGRADE_LIMIT).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{:?}",
        status.progress.failure
    );
    assert_eq!(hub.hub_image().await, NEW_IMAGE);
    assert!(status.progress.stopped_servers.is_empty());
    let reasons: Vec<String> = hub.events().await.into_iter().map(|e| e.2).collect();
    assert!(
        reasons.iter().any(|r| r == "DrainProceeding"),
        "{reasons:?}"
    );
    // The server ran through the upgrade: it still serves, and the new hub knows it.
    assert!(hub.user_pod_exists("alice").await);
    assert!(
        hub.user_server_answers("alice"),
        "alice's server should still serve through the proxy"
    );
    assert_eq!(hub.hub_version().split('.').next(), Some("5"));
    assert_eq!(hub.active_servers(), ["alice"]);
    // Verified through the new hub's API.
    assert_eq!(
        status.progress.checks_of(Phase::Verifying),
        [
            ("HubHealth", Outcome::Succeeded),
            ("HubVersion", Outcome::Succeeded),
            ("DatabaseRevision", Outcome::Succeeded)
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drain_with_stop_servers_stops_them_through_the_api_then_upgrades() {
    let hub = RealHub::new("drain-stop", None, Operator::HostProcess).await;
    hub.start_user_server("bob").await;
    assert_eq!(hub.active_servers(), ["bob"]);

    hub.apply_upgrade("drain", NEW_IMAGE, drain(&hub, "5s", "StopServers"))
        .await;
    let done = hub.wait_for("drain", TERMINAL, UPGRADE_LIMIT).await;
    let status = done.status.expect("status");
    assert_eq!(
        status.progress.phase,
        Phase::Succeeded,
        "{:?}",
        status.progress.failure
    );
    assert_eq!(status.progress.stopped_servers, ["bob"]);
    let stopping: Vec<String> = hub
        .events()
        .await
        .into_iter()
        .filter(|e| e.2 == "StoppingServers")
        .map(|e| e.3)
        .collect();
    assert!(stopping.iter().any(|m| m.contains("bob")), "{stopping:?}");
    // Stopped for real: the pod is gone and the new hub lists no active server.
    assert!(!hub.user_pod_exists("bob").await);
    assert!(!hub.user_server_answers("bob"));
    assert_eq!(hub.hub_image().await, NEW_IMAGE);
    assert!(hub.active_servers().is_empty());
    let drained = status
        .progress
        .steps
        .iter()
        .find(|s| s.name == Phase::Draining)
        .expect("a Draining step");
    assert_eq!(drained.outcome, Some(Outcome::Succeeded));
}
