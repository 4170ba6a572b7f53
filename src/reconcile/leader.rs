//! Leader election with a `coordination.k8s.io` Lease: only the holder runs the controller, so
//! two replicas never both act. A replica that cannot renew its lease in time exits, rather
//! than risk acting beside a new leader.
//!
//! Hand-written because no leader-election crate fits (checked 2026-11 on crates.io):
//! `kube-leader-election` 0.44.0 needs kube 4, `kube-coordinate` 2.0.0-rc.0 kube 2, and
//! `kubert` 0.25.0 kube 1.1. `kube-lease-manager` 0.13.1 supports kube 5, but a standby reads
//! the Lease again only when the expiry it last saw has passed, so a lease given back on a clean
//! shutdown is taken only up to a whole lease duration later (the hand-over test in
//! `tests/e2e_operator.rs` asks for less), and it needs `patch` on Leases besides.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::metrics::{Health, Role};

pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name in a cluster).
    pub identity: String,
    pub duration: Duration,
}

pub struct LeaderLease {
    api: Api<Lease>,
    config: LeaseConfig,
    /// The Lease as this replica last wrote it: a renewal writes over it without reading it
    /// first (one request instead of two); a conflict means someone else wrote, and the Lease
    /// is read again.
    written: std::sync::Mutex<Option<Lease>>,
}

impl LeaderLease {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        LeaderLease {
            api: Api::namespaced(client, &config.namespace),
            config,
            written: std::sync::Mutex::new(None),
        }
    }

    /// Waits until this replica holds the lease; until then `health` says whether it is a
    /// standby (another replica holds the lease) or does not know (the lease could not be read).
    pub async fn acquire(&self, health: &Health) {
        loop {
            match self.try_hold().await {
                Ok(true) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "became the leader");
                    health.set(Role::Leader);
                    return;
                }
                Ok(false) => health.set(Role::Standby),
                Err(error) => {
                    warn!(%error, "could not take the leader lease");
                    health.set(Role::Unknown);
                }
            }
            tokio::time::sleep(self.config.duration / 3).await;
        }
    }

    /// Renews the lease every third of its duration; returns (the caller must stop acting at
    /// once) when another replica took it, or when no renewal succeeded within two thirds of
    /// the duration since the last one. That deadline also bounds a renewal the API server
    /// never answers (a partition): the lease others see expires a whole duration after its
    /// last renewal, so this replica has stopped a third of a duration before anyone else may
    /// take over.
    pub async fn keep(&self) {
        let deadline = self.config.duration * 2 / 3;
        // When the last successful renewal started: the renew time it wrote is no earlier.
        let mut renewed_at = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(self.config.duration / 3).await;
            let attempt = tokio::time::Instant::now();
            match tokio::time::timeout_at(renewed_at + deadline, self.try_hold()).await {
                Ok(Ok(true)) => renewed_at = attempt,
                Ok(Ok(false)) => {
                    warn!("another replica took the leader lease");
                    return;
                }
                Ok(Err(error)) => {
                    warn!(%error, "could not renew the leader lease");
                    if renewed_at.elapsed() >= deadline {
                        return;
                    }
                }
                Err(_) => {
                    warn!(
                        "the API server did not answer the leader lease's renewal within {} s of the last renewal",
                        deadline.as_secs_f64()
                    );
                    return;
                }
            }
        }
    }

    /// Gives the lease up (on a clean shutdown), so another replica takes over at once.
    pub async fn release(&self) {
        self.written.lock().expect("the written lease").take();
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await {
            let spec = lease.spec.get_or_insert_with(Default::default);
            if spec.holder_identity.as_deref() == Some(self.config.identity.as_str()) {
                spec.holder_identity = None;
                spec.renew_time = None;
                let _ = self
                    .api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await;
            }
        }
    }

    /// Takes or renews the lease if it is free, expired or ours; `Ok(false)` if another holds it.
    async fn try_hold(&self) -> Result<bool, kube::Error> {
        let written = self.written.lock().expect("the written lease").take();
        if let Some(mut lease) = written {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
            match self.write(&lease).await {
                Err(kube::Error::Api(s)) if s.code == 409 => {} // read it again, below
                other => return other,
            }
        }
        let now = jiff::Timestamp::now();
        let seconds = self.config.duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    *self.written.lock().expect("the written lease") = Some(created);
                    Ok(true)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(error) => Err(error),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let ours = spec.holder_identity.as_deref() == Some(self.config.identity.as_str());
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(MicroTime(renewed)), Some(duration)) => renewed
                .checked_add(jiff::SignedDuration::from_secs(duration.into()))
                .is_ok_and(|end| end < now),
            _ => true,
        };
        if !(ours || free || expired) {
            return Ok(false);
        }
        if !ours {
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.holder_identity = Some(self.config.identity.clone());
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        match self.write(&lease).await {
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            other => other,
        }
    }

    /// Writes `lease` (ours); replace() carries its resourceVersion, so a write over someone
    /// else's is refused (409). What was written is kept for the next renewal.
    async fn write(&self, lease: &Lease) -> Result<bool, kube::Error> {
        let written = self
            .api
            .replace(&lease.name_any(), &PostParams::default(), lease)
            .await?;
        *self.written.lock().expect("the written lease") = Some(written);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{Exchange, scenario};

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/hubgrade/leases/hubgrade-leader";

    fn lease(holder: &str, version: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "hubgrade-leader", "namespace": "hubgrade", "resourceVersion": version},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                     "renewTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}
        })
    }

    fn leader(client: Client) -> LeaderLease {
        LeaderLease::new(
            client,
            LeaseConfig {
                namespace: "hubgrade".into(),
                name: "hubgrade-leader".into(),
                identity: "a".into(),
                duration: Duration::from_secs(15),
            },
        )
    }

    /// Once it holds the lease, a renewal writes over what it last wrote (one request); a
    /// conflict (someone else wrote) has it read the Lease again, and another holder's Lease is
    /// left alone.
    #[tokio::test]
    async fn a_renewal_is_one_write_until_someone_else_writes() {
        let exchanges = vec![
            Exchange::get(LEASE).reply(lease("a", "1")),
            Exchange::put(LEASE)
                .body_contains(serde_json::json!({"metadata": {"resourceVersion": "1"}}))
                .reply(lease("a", "2")),
            Exchange::put(LEASE)
                .body_contains(serde_json::json!({"metadata": {"resourceVersion": "2"}}))
                .reply(lease("a", "3")),
            Exchange::put(LEASE)
                .body_contains(serde_json::json!({"metadata": {"resourceVersion": "3"}}))
                .fail(409, "Conflict"),
            Exchange::get(LEASE).reply(lease("b", "4")),
        ];
        let held = scenario(exchanges, |client| async move {
            let leader = leader(client);
            let mut held = Vec::new();
            for _ in 0..3 {
                held.push(leader.try_hold().await.expect("an answer"));
            }
            held
        })
        .await;
        assert_eq!(held, [true, true, false]);
    }

    /// A partition: the API server accepts connections and never answers. The leader must give
    /// up within two thirds of its lease, not wait for the client's own timeout (minutes).
    #[tokio::test]
    async fn a_renewal_the_api_server_never_answers_ends_within_the_deadline() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let address = listener.local_addr().expect("its address");
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((connection, _)) = listener.accept().await {
                held.push(connection); // read nothing, answer nothing
            }
        });
        let config = kube::Config::new(format!("http://{address}").parse().expect("a URL"));
        let client = Client::try_from(config).expect("a client");
        let lease = LeaderLease::new(
            client,
            LeaseConfig {
                namespace: "hubgrade".into(),
                name: "hubgrade-leader".into(),
                identity: "a".into(),
                duration: Duration::from_secs(3),
            },
        );
        let started = std::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(10), lease.keep())
            .await
            .expect("keep() gave up");
        let took = started.elapsed();
        assert!(
            took < Duration::from_millis(2500),
            "gave up after {took:?}, past two thirds of the 3 s lease"
        );
    }
}
