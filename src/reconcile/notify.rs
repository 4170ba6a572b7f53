//! The upgrade's webhook (`spec.notifications.webhook`): a JSON message when the window opens
//! (the hub is about to be drained or stopped), right before the hub goes down, and when the
//! upgrade ends. Messages are sent from a task of their own with retries and backoff: a slow
//! or dead receiver never delays or changes the upgrade. One upgrade's messages arrive in the
//! order they happened (each waits for the one before it); different upgrades' go side by side. The URL is read from the Secret when
//! the message is sent and never logged (it often carries a token); a message that could not be
//! delivered is logged with the hub's name only.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use kube::{Client, ResourceExt};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{HubUpgrade, SecretKeyRef};
use crate::cluster::hub_api::secret_value;
use crate::hub::revision::release_of_image;
use crate::ledger::writer::LedgerSource;
use crate::ledger::{Filter, Ledger};
use crate::machine::{Phase, Progress};

/// What happened, as the message's `event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, strum::Display)]
pub enum Moment {
    /// Checked (and rehearsed, approved, in the window): the hub is drained or stopped next.
    WindowOpen,
    /// The hub is scaled to zero now: users lose it until it is back.
    DowntimeStarting,
    /// The upgrade ended: Succeeded, RolledBack or Failed.
    Finished,
}

/// The JSON body a webhook receives.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub event: Moment,
    /// `namespace/deployment` of the hub.
    pub hub: String,
    /// `namespace/name` of the HubUpgrade.
    pub upgrade: String,
    pub from_image: Option<String>,
    pub to_image: String,
    /// The JupyterHub release series of each image, where hubgrade's table knows it.
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub phase: Phase,
    pub reason: String,
    pub message: String,
    /// From the ledger's past upgrades, when the operator keeps one.
    pub predicted_downtime_seconds: Option<i64>,
    /// Once the hub is back.
    pub downtime_seconds: Option<i64>,
}

/// The moments a step from `before` to `after` passes, in order.
pub fn moments(before: &Progress, after: &Progress) -> Vec<Moment> {
    let gate = |p: Phase| {
        matches!(
            p,
            Phase::Pending | Phase::Preflight | Phase::Rehearsal | Phase::Scheduled
        )
    };
    let mut moments = Vec::new();
    if gate(before.phase) && matches!(after.phase, Phase::Draining | Phase::ScalingDown) {
        moments.push(Moment::WindowOpen);
    }
    // The hub as it was is recorded right before it is scaled to zero.
    if after.phase == Phase::ScalingDown && before.from.is_none() && after.from.is_some() {
        moments.push(Moment::DowntimeStarting);
    }
    if !before.phase.is_terminal() && after.phase.is_terminal() {
        moments.push(Moment::Finished);
    }
    moments
}

/// Sends webhook messages in the background.
#[derive(Clone)]
pub struct Notifier {
    client: Client,
    http: reqwest::Client,
    /// Where the predicted downtime is read, when the operator keeps a ledger.
    ledger: Option<LedgerSource>,
    attempts: usize,
    lanes: Lanes,
}

impl Notifier {
    pub fn new(client: Client, ledger: Option<LedgerSource>) -> Notifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Notifier {
            client,
            http,
            ledger,
            attempts: 6,
            lanes: Lanes::default(),
        }
    }

    /// Queues the messages for `moments` of `upgrade` (now at `progress`), if it has a webhook.
    pub fn notify(&self, upgrade: &HubUpgrade, progress: &Progress, moments: Vec<Moment>) {
        let Some(webhook) = upgrade.spec.notifications.webhook.clone() else {
            return;
        };
        if moments.is_empty() {
            return;
        }
        let namespace = upgrade.namespace().unwrap_or_default();
        let messages: Vec<Message> = moments
            .into_iter()
            .map(|event| message(upgrade, progress, event))
            .collect();
        let this = self.clone();
        let uid = upgrade.uid().unwrap_or_default();
        let hub = (namespace.clone(), upgrade.spec.hub.deployment.clone());
        let lane = uid.clone();
        self.lanes.push(
            &lane,
            Box::pin(async move {
                let predicted = this.predicted(&hub.0, &hub.1, &uid).await;
                for mut message in messages {
                    message.predicted_downtime_seconds = predicted;
                    this.send(&namespace, &webhook.url_secret, &message).await;
                }
            }),
        );
    }

    async fn predicted(&self, namespace: &str, hub: &str, uid: &str) -> Option<i64> {
        let source = self.ledger.as_ref()?;
        let ledger = Ledger::open_to_read(&source.url, source.password.as_deref())
            .await
            .ok()?;
        let filter = Filter {
            namespace: Some(namespace.to_string()),
            hub: Some(hub.to_string()),
        };
        let history = ledger.history(&filter).await.ok();
        ledger.close().await;
        history?
            .into_iter()
            .find(|entry| entry.uid == uid)
            .and_then(|entry| entry.predicted_downtime_seconds)
    }

    /// Delivers one message, retrying with backoff; gives up quietly after the last attempt.
    async fn send(&self, namespace: &str, secret: &SecretKeyRef, message: &Message) {
        let attempt = || async {
            let url = secret_value(&self.client, namespace, secret)
                .await
                .map_err(|e| format!("reading the Secret {}: {e}", secret.name))?
                .ok_or_else(|| {
                    format!(
                        "the Secret {namespace}/{} has no key {}",
                        secret.name, secret.key
                    )
                })?;
            let response = self
                .http
                .post(url.as_str())
                .json(message)
                .send()
                .await
                // Without the URL: it may carry a token.
                .map_err(|e| e.without_url().to_string())?;
            let code = response.status();
            if code.is_success() {
                Ok(())
            } else {
                Err(format!("the webhook answered {code}"))
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(30))
            .with_max_times(self.attempts - 1);
        let delivered = attempt
            .retry(backoff)
            .notify(|error: &String, after| {
                warn!(hub = %message.hub, event = %message.event, %error, ?after, "webhook not delivered, retrying");
            })
            .await;
        match delivered {
            Ok(()) => info!(hub = %message.hub, event = %message.event, "webhook delivered"),
            Err(error) => warn!(
                hub = %message.hub, event = %message.event, %error,
                "webhook not delivered; giving up (the upgrade goes on)"
            ),
        }
    }
}

type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One lane per upgrade: its deliveries run one after another, in the order they were pushed,
/// on a task of the lane's own. A lane left idle for a minute ends (an upgrade deleted before
/// it finished leaves nothing behind); the next push starts a new one.
#[derive(Clone)]
struct Lanes {
    open: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Delivery>>>>,
    idle: Duration,
}

impl Default for Lanes {
    fn default() -> Lanes {
        Lanes {
            open: Arc::default(),
            idle: Duration::from_secs(60),
        }
    }
}

impl Lanes {
    fn push(&self, key: &str, delivery: Delivery) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let delivery = match open.get(key) {
            Some(lane) => match lane.send(delivery) {
                Ok(()) => return,
                Err(closed) => closed.0,
            },
            None => delivery,
        };
        let (lane, queue) = mpsc::unbounded_channel();
        let _ = lane.send(delivery);
        open.insert(key.to_string(), lane);
        tokio::spawn(self.clone().run(key.to_string(), queue));
    }

    async fn run(self, key: String, mut queue: mpsc::UnboundedReceiver<Delivery>) {
        loop {
            if let Ok(Some(delivery)) = tokio::time::timeout(self.idle, queue.recv()).await {
                delivery.await;
                continue;
            }
            // Idle: close the lane, unless a push came in meanwhile (pushes hold the same lock).
            let next = {
                let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
                let next = queue.try_recv().ok();
                if next.is_none() {
                    open.remove(&key);
                }
                next
            };
            match next {
                Some(delivery) => delivery.await,
                None => return,
            }
        }
    }
}

fn message(upgrade: &HubUpgrade, progress: &Progress, event: Moment) -> Message {
    let namespace = upgrade.namespace().unwrap_or_default();
    let from_image = progress.from.as_ref().map(|f| f.image.clone());
    let version = |image: &str| release_of_image(image).map(|r| r.releases.to_string());
    Message {
        event,
        hub: format!("{namespace}/{}", upgrade.spec.hub.deployment),
        upgrade: format!("{namespace}/{}", upgrade.name_any()),
        from_version: from_image.as_deref().and_then(version),
        from_image,
        to_version: version(&upgrade.spec.target_image),
        to_image: upgrade.spec.target_image.clone(),
        phase: progress.phase,
        reason: progress.reason.clone(),
        message: progress.message.clone(),
        predicted_downtime_seconds: None,
        downtime_seconds: progress.downtime_seconds(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(phase: Phase) -> Progress {
        Progress {
            phase,
            ..Progress::default()
        }
    }

    fn recorded(phase: Phase) -> Progress {
        Progress {
            from: Some(crate::machine::Original {
                image: "hub:1".into(),
                replicas: 1,
            }),
            ..at(phase)
        }
    }

    #[tokio::test]
    async fn one_upgrades_messages_go_in_order_and_others_do_not_wait() {
        let lanes = Lanes::default();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let deliver = |what: &'static str, slow: u64| -> Delivery {
            let heard = heard.clone();
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(slow)).await;
                heard.lock().unwrap().push(what);
            })
        };
        // The first message is slow (a ledger read, a retry); the second must still come after it.
        lanes.push("a", deliver("a: WindowOpen", 300));
        lanes.push("a", deliver("a: DowntimeStarting", 0));
        // Another upgrade's message does not wait behind them.
        lanes.push("b", deliver("b: WindowOpen", 0));
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(
            *heard.lock().unwrap(),
            ["b: WindowOpen", "a: WindowOpen", "a: DowntimeStarting"]
        );
    }

    #[tokio::test]
    async fn an_idle_lane_ends_and_a_later_push_opens_another() {
        let lanes = Lanes {
            idle: Duration::from_millis(50),
            ..Lanes::default()
        };
        let heard = Arc::new(Mutex::new(0));
        let count = |heard: &Arc<Mutex<i32>>| -> Delivery {
            let heard = heard.clone();
            Box::pin(async move { *heard.lock().unwrap() += 1 })
        };
        lanes.push("a", count(&heard));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            lanes.open.lock().unwrap().is_empty(),
            "the idle lane is still open"
        );
        lanes.push("a", count(&heard));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*heard.lock().unwrap(), 2);
    }

    #[test]
    fn a_step_passes_the_moments_between_its_phases() {
        use Moment::*;
        let cases = [
            (at(Phase::Rehearsal), at(Phase::Draining), vec![WindowOpen]),
            (
                at(Phase::Scheduled),
                at(Phase::ScalingDown),
                vec![WindowOpen],
            ),
            (at(Phase::Draining), at(Phase::ScalingDown), vec![]),
            (
                at(Phase::ScalingDown),
                recorded(Phase::ScalingDown),
                vec![DowntimeStarting],
            ),
            (
                recorded(Phase::ScalingDown),
                recorded(Phase::ScalingDown),
                vec![],
            ),
            (at(Phase::Verifying), at(Phase::Succeeded), vec![Finished]),
            (at(Phase::Preflight), at(Phase::Failed), vec![Finished]),
            (at(Phase::Draining), at(Phase::Draining), vec![]),
            (at(Phase::Succeeded), at(Phase::Succeeded), vec![]),
        ];
        for (before, after, expected) in cases {
            let (from, to) = (before.phase, after.phase);
            assert_eq!(moments(&before, &after), expected, "{from} → {to}");
        }
    }
}
