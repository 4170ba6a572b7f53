//! Prometheus metrics and the health endpoint, served on one port (`/metrics`, `/healthz`).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::machine::{Action, Phase};

#[derive(Default)]
pub struct Metrics {
    reconciliations: AtomicU64,
    failures: AtomicU64,
    leader: AtomicBool,
    actions: Mutex<BTreeMap<&'static str, u64>>,
    phases: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn reconciled(&self) {
        self.reconciliations.fetch_add(1, Ordering::Relaxed);
    }
    pub fn failed(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Ordering::Relaxed);
    }
    pub fn acted(&self, action: &Action) {
        let name = match action {
            Action::Wait => return,
            Action::AcquireLock => "acquire_lock",
            Action::ReleaseLock => "release_lock",
            Action::StartRehearsal => "start_rehearsal",
            Action::StopServers => "stop_servers",
            Action::ScaleHub { .. } => "scale_hub",
            Action::DeleteHubPods => "delete_hub_pods",
            Action::BackUpConfig => "back_up_config",
            Action::StartBackup => "start_backup",
            Action::StartMigration => "start_migration",
            Action::CancelMigration => "cancel_migration",
            Action::SetHubImage { .. } => "set_hub_image",
            Action::StartRestore => "start_restore",
        };
        if let Ok(mut actions) = self.actions.lock() {
            *actions.entry(name).or_default() += 1;
        }
    }
    pub fn entered(&self, phase: Phase) {
        if let Ok(mut phases) = self.phases.lock() {
            *phases.entry(phase.as_str()).or_default() += 1;
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP hubgrade_reconciliations_total Reconciliations of HubUpgrades.\n# TYPE hubgrade_reconciliations_total counter\n");
        out.push_str(&format!(
            "hubgrade_reconciliations_total {}\n",
            self.reconciliations.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP hubgrade_reconcile_errors_total Reconciliations that failed and were retried.\n# TYPE hubgrade_reconcile_errors_total counter\n");
        out.push_str(&format!(
            "hubgrade_reconcile_errors_total {}\n",
            self.failures.load(Ordering::Relaxed)
        ));
        out.push_str("# HELP hubgrade_leader Whether this replica holds the leader lease.\n# TYPE hubgrade_leader gauge\n");
        out.push_str(&format!(
            "hubgrade_leader {}\n",
            u8::from(self.leader.load(Ordering::Relaxed))
        ));
        out.push_str("# HELP hubgrade_actions_total Actions carried out, by action.\n# TYPE hubgrade_actions_total counter\n");
        if let Ok(actions) = self.actions.lock() {
            for (name, count) in actions.iter() {
                out.push_str(&format!(
                    "hubgrade_actions_total{{action=\"{name}\"}} {count}\n"
                ));
            }
        }
        out.push_str("# HELP hubgrade_phase_entries_total Phases entered, by phase.\n# TYPE hubgrade_phase_entries_total counter\n");
        if let Ok(phases) = self.phases.lock() {
            for (name, count) in phases.iter() {
                out.push_str(&format!(
                    "hubgrade_phase_entries_total{{phase=\"{name}\"}} {count}\n"
                ));
            }
        }
        out
    }
}

/// Serves `/metrics` and `/healthz` until the process ends. A tiny HTTP/1.0 responder: two
/// fixed GET endpoints do not need a web framework.
pub async fn serve(listener: TcpListener, metrics: std::sync::Arc<Metrics>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut buffer = [0u8; 1024];
            let n = stream.read(&mut buffer).await.unwrap_or(0);
            let request = String::from_utf8_lossy(&buffer[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, body) = match path {
                "/metrics" => ("200 OK", metrics.render()),
                "/healthz" | "/readyz" => ("200 OK", "ok\n".to_string()),
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.0 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
