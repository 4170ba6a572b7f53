//! Issue "The maintenance window", point 1, on the local (KWOK) cluster: `approval: Manual`
//! stops after the checks and the rehearsal, with nothing changed for users, until
//! `hubgrade approve`; `schedule.notBefore` holds the downtime back until the window opens;
//! `schedule.notAfter` ends an upgrade that could not stop the hub in time, changing nothing.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use hubgrade::machine::Phase;
use support::e2e::{Hub, ORIGINAL_IMAGE, assert_phase};

const TARGET: &str = "quay.io/jupyterhub/k8s-hub:4.2.0";
const LIMIT: Duration = Duration::from_secs(120);
const TERMINAL: [Phase; 3] = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];

/// An RFC 3339 time `seconds` from now.
fn in_seconds(seconds: i64) -> String {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds))
        .round(jiff::Unit::Second)
        .expect("round")
        .to_string()
}

/// The hub as users see it: image, replicas, available.
async fn hub_as_users_see_it(hub: &Hub) -> (String, Option<i32>, bool) {
    (
        hub.hub_image().await,
        hub.hub().await.spec.and_then(|s| s.replicas),
        hub.hub_available().await,
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_approval_holds_the_downtime_until_hubgrade_approve() {
    let hub = Hub::new("schedule-approval", |yaml| yaml).await;
    let before = hub_as_users_see_it(&hub).await;
    hub.apply_upgrade(
        "approved",
        serde_json::json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
                           "approval": "Manual"}),
    )
    .await;
    let waiting = hub.wait_for("approved", &[Phase::Scheduled], LIMIT).await;
    let status = waiting.status.expect("status");
    assert!(
        status.progress.message.contains("waiting for approval"),
        "{}",
        status.progress.message
    );
    let rehearsal = status
        .progress
        .steps
        .iter()
        .find(|s| s.name == Phase::Rehearsal)
        .and_then(|s| s.outcome);
    assert_eq!(rehearsal, Some(hubgrade::machine::Outcome::Succeeded));
    // It keeps waiting, and users keep their hub.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(hub.phase("approved").await, Some(Phase::Scheduled));
    assert_eq!(hub_as_users_see_it(&hub).await, before);
    assert!(hub.jobs_for("backup").await.is_empty());

    let approve = Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(["approve", "approved", "-n", hub.ns(), "--by", "alice"])
        .env("KUBECONFIG", support::kubeconfig())
        .output()
        .expect("hubgrade approve");
    assert!(approve.status.success(), "{}", support::stderr(&approve));
    let done = hub.wait_for("approved", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::Succeeded);
    assert_eq!(status.progress.approved_by.as_deref(), Some("alice"));
    assert_eq!(hub.hub_image().await, TARGET);
    let reasons: Vec<String> = hub
        .event_reasons("approved")
        .await
        .into_iter()
        .map(|(_, reason, _)| reason)
        .collect();
    for reason in ["AwaitingApproval", "Approved"] {
        assert!(reasons.iter().any(|r| r == reason), "{reasons:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_hub_goes_down_only_once_the_window_opens() {
    let hub = Hub::new("schedule-window", |yaml| yaml).await;
    let opens = in_seconds(15);
    hub.apply_upgrade(
        "windowed",
        serde_json::json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
                           "schedule": {"notBefore": opens}}),
    )
    .await;
    let waiting = hub.wait_for("windowed", &[Phase::Scheduled], LIMIT).await;
    let message = waiting.status.expect("status").progress.message;
    assert!(
        message.contains("waiting for the maintenance window"),
        "{message}"
    );
    let done = hub.wait_for("windowed", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::Succeeded);
    let down = status.progress.hub_scaled_down_at.expect("scaled down");
    let opens: jiff::Timestamp = opens.parse().expect("time");
    assert!(
        down >= opens,
        "the hub went down at {down}, before the window at {opens}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_window_that_closes_first_ends_the_upgrade_with_nothing_changed() {
    let hub = Hub::new("schedule-closed", |yaml| yaml).await;
    let before = hub_as_users_see_it(&hub).await;
    let start = Instant::now();
    hub.apply_upgrade(
        "too-late",
        serde_json::json!({"hub": {"deployment": "hub"}, "targetImage": TARGET,
                           "approval": "Manual", "schedule": {"notAfter": in_seconds(10)}}),
    )
    .await;
    let done = hub.wait_for("too-late", &TERMINAL, LIMIT).await;
    let status = done.status.expect("status");
    assert_phase(&status, Phase::Failed);
    assert_eq!(status.progress.reason, "WindowClosed");
    assert!(
        start.elapsed() >= Duration::from_secs(8),
        "ended before the window closed"
    );
    assert_eq!(hub_as_users_see_it(&hub).await, before);
    assert_eq!(before.0, ORIGINAL_IMAGE);
    assert!(hub.jobs_for("backup").await.is_empty());
    // The hub lock goes with it, once the terminal phase is recorded: nothing is left on the
    // Deployment.
    support::wait_until(
        Duration::from_secs(10),
        "the hub lock to be released",
        || async {
            let annotations = hub.hub().await.metadata.annotations.unwrap_or_default();
            !annotations.keys().any(|k| k.starts_with("hubgrade.io/"))
        },
    )
    .await;
}
