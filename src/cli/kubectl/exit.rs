//! How the plugin's commands end: the exit codes scripts and Helm hooks rely on, and the one
//! error type whose message is the single sentence printed on stderr.

use std::process::ExitCode;

/// The exit codes, as `--help` and docs/KUBECTL_PLUGIN.md list them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0  done, or the condition waited for is met
  1  error: API error, not found, refused
  2  usage error
  3  the upgrade rolled back or is rolling back
  4  the upgrade failed (Failed)
  5  timed out waiting";

/// What a command ended with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Done = 0,
    Error = 1,
    RolledBack = 3,
    Failed = 4,
    TimedOut = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Why a command could not do what it was asked. Each message is one sentence naming the
/// object it was about.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no Kubernetes configuration (KUBECONFIG, ~/.kube/config or in-cluster): {0}")]
    Config(String),
    #[error("HubUpgrade {name} was not found in namespace {namespace}")]
    UpgradeNotFound { name: String, namespace: String },
    #[error("HubUpgrade {name} was not found in namespace {namespace} (waited {waited} for it)")]
    NeverAppeared {
        name: String,
        namespace: String,
        waited: String,
    },
    #[error("Deployment {name} was not found in namespace {namespace}")]
    HubNotFound { name: String, namespace: String },
    #[error("{doing}: {reason}")]
    Api { doing: String, reason: String },
    /// A request the command refuses, with the reason (an upgrade still running, ...).
    #[error("{0}")]
    Refused(String),
    #[error("HubUpgrade {name} was deleted while waiting for it ({last})")]
    Deleted { name: String, last: String },
    #[error("timed out after {waited} waiting for HubUpgrade {name} ({last})")]
    TimedOut {
        name: String,
        waited: String,
        last: String,
    },
}

impl PluginError {
    /// An API call that failed while `doing` something: the API server's own message, or for a
    /// connection failure the chain of causes.
    pub fn api(doing: impl Into<String>, error: kube::Error) -> PluginError {
        let reason = match &error {
            kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
            _ => causes(&error),
        };
        PluginError::Api {
            doing: doing.into(),
            reason,
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            PluginError::TimedOut { .. } => Exit::TimedOut,
            _ => Exit::Error,
        }
    }
}

/// Whether a kube error is the API server saying the object does not exist.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// An error and its sources, joined with ": ", each said once.
pub fn causes(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}
