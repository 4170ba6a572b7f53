//! `hubgrade run`: the operator process. Serves /metrics, /healthz and /readyz, waits for the
//! leader lease, runs the controller while it holds it, and exits if it loses it.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use kube::runtime::events::Recorder;
use tracing::{error, info, warn};

use crate::ledger::writer::{LedgerSource, LedgerWriter};
use crate::ledger::{Ledger, LedgerError};

use crate::reconcile::leader::{LeaderLease, LeaseConfig};
use crate::reconcile::metrics::{Health, Role};
use crate::reconcile::notify::Notifier;
use crate::reconcile::{Context, Metrics, reporter, run_controller};

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Watch HubUpgrades in this namespace only (default: every namespace).
    #[arg(long, env = "HUBGRADE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Image the backup and restore Jobs run (`hubgrade agent`): the operator's own image.
    #[arg(long, env = "HUBGRADE_AGENT_IMAGE", default_value = concat!("ghcr.io/hubgrade/hubgrade:", env!("CARGO_PKG_VERSION")))]
    pub agent_image: String,
    /// A Secret to pull the agent image with (repeatable, or comma-separated in the variable):
    /// it must exist in each hub's namespace, where the Jobs run.
    #[arg(
        long = "agent-image-pull-secret",
        env = "HUBGRADE_AGENT_IMAGE_PULL_SECRETS",
        value_delimiter = ','
    )]
    pub agent_image_pull_secrets: Vec<String>,
    #[command(flatten)]
    pub image_policy: ImagePolicyArgs,
    /// The upgrade ledger: `sqlite:///<path>` (made if missing; the chart puts it on the
    /// operator's claim) or `postgres://<user>@<host>/<database>` for several replicas, its
    /// password in $HUBGRADE_LEDGER_PASSWORD (from a Secret). Without it nothing is recorded
    /// beyond the HubUpgrades themselves.
    #[arg(long, env = "HUBGRADE_LEDGER_URL")]
    pub ledger_url: Option<String>,
    /// How many HubUpgrades are reconciled at the same moment (each reconcile is one short
    /// look and one step; any number of upgrades are in progress between them). More buys
    /// nothing once the API server is the bound, and each costs memory at its peak.
    #[arg(long, env = "HUBGRADE_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "HUBGRADE_METRICS_ADDRESS", default_value = "0.0.0.0:8080")]
    pub metrics_address: SocketAddr,
    /// Namespace of the leader Lease (default: --namespace, else $POD_NAMESPACE, else default).
    #[arg(long, env = "HUBGRADE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "HUBGRADE_LEASE_NAME", default_value = "hubgrade-leader")]
    pub lease_name: String,
    /// Seconds a leader's lease lasts without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_seconds: u64,
    /// This replica's name in the lease (default: $POD_NAME, else the host name and process id).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    pub log_json: bool,
}

/// The operator's image policy, shared by `hubgrade run` and `hubgrade plan`.
#[derive(Debug, Clone, Args)]
pub struct ImagePolicyArgs {
    /// A repository target images may come from besides the hub's own (repeatable, or
    /// comma-separated in the variable): `ghcr.io/org/k8s-hub`, or a prefix ending in `/` for
    /// every repository under it. Only the operator's administrator widens this, never a
    /// HubUpgrade: its target runs with the hub's ServiceAccount, Secrets and volume.
    #[arg(
        long = "allow-image-repository",
        env = "HUBGRADE_ALLOWED_IMAGE_REPOSITORIES",
        value_delimiter = ','
    )]
    pub allowed_image_repositories: Vec<String>,
}

impl ImagePolicyArgs {
    pub fn policy(&self) -> crate::hub::image::ImagePolicy {
        crate::hub::image::ImagePolicy::new(&self.allowed_image_repositories)
    }
}

pub async fn run(args: RunArgs) -> ExitCode {
    init_logging(args.log_json);
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(error) => {
            error!(%error, "no Kubernetes configuration (in-cluster or KUBECONFIG)");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let health = Arc::new(Health::default());
    let listener = match tokio::net::TcpListener::bind(args.metrics_address).await {
        Ok(listener) => listener,
        Err(error) => {
            error!(%error, address = %args.metrics_address, "cannot serve /metrics");
            return ExitCode::FAILURE;
        }
    };
    let server = crate::reconcile::metrics::serve(listener, metrics.clone(), health.clone());
    tokio::spawn(async move {
        if let Err(error) = server.await {
            error!(%error, "serving /metrics stopped");
        }
    });

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let lease_namespace = args
        .lease_namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".into());
    let lease_duration = Duration::from_secs(args.lease_seconds.max(3));
    let lease = LeaderLease::new(
        client.clone(),
        LeaseConfig {
            namespace: lease_namespace,
            name: args.lease_name.clone(),
            identity: identity.clone(),
            duration: lease_duration,
        },
    );
    info!(%identity, namespace = ?args.namespace, "waiting for the leader lease");
    // One listener for the whole run: a SIGTERM that comes while the new leader starts (the
    // ledger, the controller) waits for the select below instead of being lost between two.
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    tokio::select! {
        _ = lease.acquire(&health) => {}
        _ = &mut shutdown => return ExitCode::SUCCESS,
    }
    metrics.set_leader(true);

    // Only the leader writes the ledger. One written by a newer hubgrade is refused at once;
    // one that cannot be reached now is opened by the writer when it can be.
    let ledger_source = args.ledger_url.clone().map(|url| LedgerSource {
        url,
        password: std::env::var("HUBGRADE_LEDGER_PASSWORD").ok(),
    });
    let ledger = match &args.ledger_url {
        None => {
            info!("no ledger (--ledger-url): upgrades are recorded in their HubUpgrades only");
            None
        }
        Some(url) => {
            let password = std::env::var("HUBGRADE_LEDGER_PASSWORD").ok();
            match Ledger::open(url, password.as_deref()).await {
                Err(error @ LedgerError::Newer { .. }) => {
                    error!(%error, "refusing the ledger");
                    return ExitCode::FAILURE;
                }
                Err(error) => warn!(%error, "the ledger is not reachable yet; upgrades go on"),
                Ok(ledger) => {
                    info!(ledger = %ledger.url(), "the ledger's schema is current");
                    ledger.close().await;
                }
            }
            let writer = LedgerWriter::default();
            tokio::spawn(writer.clone().run(
                LedgerSource {
                    url: url.clone(),
                    password,
                },
                Recorder::new(client.clone(), reporter(Some(identity.clone()))),
                metrics.clone(),
            ));
            Some(writer)
        }
    };
    let context = Arc::new(Context {
        client: client.clone(),
        reporter: reporter(Some(identity)),
        metrics,
        agent_image: args.agent_image.clone(),
        agent_pull_secrets: args.agent_image_pull_secrets.clone(),
        ledger,
        image_policy: args.image_policy.policy(),
        notifier: Some(Notifier::new(client.clone(), ledger_source)),
        cache: Default::default(),
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let controller = run_controller(
        context,
        args.namespace.clone(),
        args.concurrency,
        async move {
            let _ = stopped.await;
        },
    );
    health.set(Role::Running);
    let controller = tokio::spawn({
        let health = health.clone();
        async move {
            controller.await;
            health.set(Role::Leader);
        }
    });
    tokio::select! {
        _ = lease.keep() => {
            error!("lost the leader lease; exiting so that only the new leader acts");
            std::process::exit(1);
        }
        _ = &mut shutdown => {
            info!("shutting down");
            let _ = stop.send(());
            // A controller stopped before its first list of HubUpgrades never ends (kube-runtime
            // waits for that list, which nothing makes any more). Past the lease, exit without
            // giving the lease back (a reconcile may still run): a standby waits for its expiry.
            if tokio::time::timeout(lease_duration, controller).await.is_err() {
                error!("the controller did not stop within the lease; exiting without releasing it");
                std::process::exit(1);
            }
            lease.release().await;
            ExitCode::SUCCESS
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
