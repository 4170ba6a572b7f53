//! The leader's ledger writer. The controller hands it each HubUpgrade as it sees it
//! ([`LedgerWriter::submit`], never waiting); a task writes the records in the background.
//! When the ledger cannot be reached the upgrades go on: the records wait in memory (the newest
//! one per upgrade), each waiting upgrade gets one `LedgerUnavailable` Warning per outage,
//! `hubgrade_ledger_up` drops to 0, and the records are written once the ledger is back.
//! After a restart the controller submits every HubUpgrade again, so what the ledger missed
//! while the operator was down is made up too.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::{Ledger, LedgerError, UpgradeEntry};
use crate::api::HubUpgrade;
use crate::reconcile::Metrics;

/// Where the ledger is: opened (again) by the writer whenever it is not open.
#[derive(Clone)]
pub struct LedgerSource {
    pub url: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for LedgerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LedgerSource({})", crate::db::url::redact(&self.url))
    }
}

struct Waiting {
    entry: UpgradeEntry,
    hash: u64,
    object: ObjectReference,
}

#[derive(Default)]
struct Shared {
    /// The newest record not yet written, per upgrade uid.
    waiting: BTreeMap<String, Waiting>,
    /// The hash of the last record written, per upgrade uid: an unchanged upgrade is not
    /// written again.
    written: BTreeMap<String, u64>,
    /// Upgrades already warned about in this outage.
    warned: BTreeSet<String>,
}

/// The controller's handle on the writer.
#[derive(Clone, Default)]
pub struct LedgerWriter {
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
}

impl LedgerWriter {
    /// Queues the record of `upgrade` (marked deleted when `deleting`) unless the ledger
    /// already has it as it is.
    pub fn submit(&self, upgrade: &HubUpgrade, deleting: bool) {
        let deleted_at = deleting.then(|| {
            upgrade
                .metadata
                .deletion_timestamp
                .as_ref()
                .map_or_else(jiff::Timestamp::now, |t| t.0)
        });
        let Some(entry) = UpgradeEntry::of(upgrade, deleted_at) else {
            return;
        };
        let mut hasher = DefaultHasher::new();
        entry.hash(&mut hasher);
        let hash = hasher.finish();
        let mut shared = self.shared.lock().expect("ledger writer lock");
        if shared.written.get(&entry.uid) == Some(&hash) {
            return;
        }
        shared.waiting.insert(
            entry.uid.clone(),
            Waiting {
                entry,
                hash,
                object: upgrade.object_ref(&()),
            },
        );
        drop(shared);
        self.wake.notify_one();
    }

    /// How many upgrades have a record waiting to be written.
    pub fn waiting(&self) -> usize {
        self.shared
            .lock()
            .expect("ledger writer lock")
            .waiting
            .len()
    }

    /// Writes waiting records until the process ends; opens the ledger (again) when needed.
    pub async fn run(self, source: LedgerSource, recorder: Recorder, metrics: Arc<Metrics>) {
        let mut ledger: Option<Ledger> = None;
        let mut retry = Duration::from_secs(1);
        loop {
            if ledger.is_none() {
                match Ledger::open(&source.url, source.password.as_deref()).await {
                    Ok(opened) => {
                        info!(ledger = %opened.url(), "the ledger is open");
                        ledger = Some(opened);
                    }
                    Err(error) => {
                        self.outage(&error, &recorder, &metrics).await;
                    }
                }
            }
            if let Some(open) = &ledger {
                match self.write_waiting(open).await {
                    Ok(()) => {
                        let warned = std::mem::take(
                            &mut self.shared.lock().expect("ledger writer lock").warned,
                        );
                        if !warned.is_empty() {
                            info!(ledger = %open.url(), "the ledger is back; the missing records are written");
                        }
                        metrics.set_ledger_up(true);
                        retry = Duration::from_secs(1);
                    }
                    Err(error) => {
                        self.outage(&error, &recorder, &metrics).await;
                        // Open afresh: the server may have restarted.
                        open.close().await;
                        ledger = None;
                    }
                }
            }
            metrics.set_ledger_waiting(self.waiting());
            let waiting = self.waiting() > 0;
            if ledger.is_some() && !waiting {
                self.wake.notified().await;
            } else {
                tokio::select! {
                    _ = self.wake.notified(), if ledger.is_some() => {}
                    _ = tokio::time::sleep(retry) => {}
                }
                if ledger.is_none() || waiting {
                    retry = (retry * 2).min(Duration::from_secs(15));
                }
            }
        }
    }

    async fn write_waiting(&self, ledger: &Ledger) -> Result<(), LedgerError> {
        let batch: Vec<(String, UpgradeEntry, u64)> = {
            let shared = self.shared.lock().expect("ledger writer lock");
            shared
                .waiting
                .iter()
                .map(|(uid, w)| (uid.clone(), w.entry.clone(), w.hash))
                .collect()
        };
        for (uid, entry, hash) in batch {
            ledger.write(&entry).await?;
            let mut shared = self.shared.lock().expect("ledger writer lock");
            if shared.waiting.get(&uid).is_some_and(|w| w.hash == hash) {
                shared.waiting.remove(&uid);
            }
            shared.written.insert(uid, hash);
        }
        Ok(())
    }

    /// The ledger cannot be written: a metric, a log line, and one Warning per waiting upgrade.
    async fn outage(&self, error: &LedgerError, recorder: &Recorder, metrics: &Metrics) {
        metrics.set_ledger_up(false);
        metrics.ledger_write_failed();
        let unwarned: Vec<ObjectReference> = {
            let mut shared = self.shared.lock().expect("ledger writer lock");
            let uids: Vec<String> = shared
                .waiting
                .keys()
                .filter(|uid| !shared.warned.contains(*uid))
                .cloned()
                .collect();
            let objects = uids
                .iter()
                .filter_map(|uid| shared.waiting.get(uid).map(|w| w.object.clone()))
                .collect();
            shared.warned.extend(uids);
            objects
        };
        warn!(%error, waiting = self.waiting(), "cannot write the ledger; the upgrades go on");
        for object in unwarned {
            let event = Event {
                type_: EventType::Warning,
                reason: "LedgerUnavailable".into(),
                note: Some(
                    format!(
                        "the upgrade goes on, but its record is not in the ledger yet (it is \
                         written once the ledger is back): {error}"
                    )
                    .chars()
                    .take(1000)
                    .collect(),
                ),
                action: "Record".into(),
                secondary: None,
            };
            if let Err(error) = recorder.publish(&event, &object).await {
                warn!(%error, "could not publish an Event");
            }
        }
    }
}
