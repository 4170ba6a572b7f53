//! `hubgrade` as a kubectl plugin (`kubectl hubgrade ...`, through a link named
//! `kubectl-hubgrade` on PATH) and the commands a Helm hook runs: `upgrade`, `wait`, `status`,
//! `abort`, `approve`, `retry`, `completion`. They talk to the API server as the user (or a hook Job's
//! ServiceAccount) and only create, read, annotate and delete HubUpgrades; the operator acts.

pub(crate) mod abort;
pub(crate) mod approve;
pub(crate) mod completion;
mod exit;
mod output;
pub(crate) mod retry;
pub(crate) mod status;
mod target;
pub(crate) mod upgrade;
pub(crate) mod wait;

use std::process::ExitCode;
use std::time::Instant;

use kube::api::{Api, ApiResource, DynamicObject};
use kube::{Client, Config};

pub use exit::{EXIT_CODES, Exit, PluginError};
pub use output::columns;

use crate::api::HubUpgrade;

/// The program's name when invoked through kubectl's plugin mechanism.
pub const PLUGIN_NAME: &str = "kubectl hubgrade";
/// The file name kubectl looks for on PATH.
pub const PLUGIN_EXECUTABLE: &str = "kubectl-hubgrade";

/// The client, the namespace and how the user called us: what every command needs.
pub struct Session {
    pub client: Client,
    pub namespace: String,
    /// `hubgrade` or `kubectl hubgrade`, for the commands suggested in messages.
    pub program: &'static str,
    /// When the command started; progress lines show the time since.
    pub started: Instant,
}

impl Session {
    /// Connects as kubectl would: KUBECONFIG or ~/.kube/config, else the in-cluster
    /// ServiceAccount; the namespace is `namespace`, else the context's (or the pod's).
    pub async fn connect(
        namespace: Option<String>,
        program: &'static str,
    ) -> Result<Session, PluginError> {
        let started = Instant::now();
        let config = Config::infer()
            .await
            .map_err(|e| PluginError::Config(exit::causes(&e)))?;
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| PluginError::Config(exit::causes(&e)))?;
        Ok(Session {
            client,
            namespace,
            program,
            started,
        })
    }

    pub fn upgrades(&self) -> Api<HubUpgrade> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// HubUpgrades as raw objects: what is created goes out exactly as written (no default
    /// filled in by this binary's types), and what is copied keeps fields this binary does
    /// not know.
    pub fn raw_upgrades(&self) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.namespace,
            &ApiResource::erase::<HubUpgrade>(&()),
        )
    }

    /// The HubUpgrade `name`; a missing one is [`PluginError::UpgradeNotFound`].
    pub async fn upgrade(&self, name: &str) -> Result<HubUpgrade, PluginError> {
        self.upgrades()
            .get_opt(name)
            .await
            .map_err(|e| self.api_error(format!("reading HubUpgrade {name}"), e))?
            .ok_or_else(|| self.not_found(name))
    }

    pub fn not_found(&self, name: &str) -> PluginError {
        PluginError::UpgradeNotFound {
            name: name.to_string(),
            namespace: self.namespace.clone(),
        }
    }

    /// An API error while `doing` something in this session's namespace.
    pub fn api_error(&self, doing: String, error: kube::Error) -> PluginError {
        PluginError::api(format!("{doing} in namespace {}", self.namespace), error)
    }
}

/// How a plugin command ends: its error printed as one sentence on stderr, its outcome turned
/// into the documented exit code.
pub fn finish(result: Result<Exit, PluginError>) -> ExitCode {
    match result {
        Ok(exit) => exit.into(),
        Err(error) => {
            eprintln!("error: {error}");
            error.exit().into()
        }
    }
}
