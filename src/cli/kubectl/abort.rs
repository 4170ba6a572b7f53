//! `abort`: asks the operator to stop an upgrade, with the abort annotation. Before the hub was
//! touched the upgrade ends Failed with nothing changed; after, it rolls back.

use clap::Args;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use super::exit::{EXIT_CODES, Exit, PluginError};
use super::wait::{ThenWait, Until, progress_of};
use super::{PLUGIN_EXECUTABLE, PLUGIN_NAME, Session};
use crate::api::ABORT_ANNOTATION;

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES)]
pub struct AbortArgs {
    /// The HubUpgrade.
    pub name: String,
    /// Namespace (default: the kubeconfig context's, or in a pod its own).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Why; shown in the upgrade's status (default: "aborted by <kubeconfig user>").
    #[arg(long)]
    pub reason: Option<String>,
    #[command(flatten)]
    pub then: ThenWait,
}

pub async fn run(args: AbortArgs, program: &'static str) -> Result<Exit, PluginError> {
    let session = Session::connect(args.namespace, program).await?;
    let name = &args.name;
    let upgrade = session.upgrade(name).await?;
    let phase = progress_of(&upgrade).phase;
    if phase.is_terminal() {
        return Err(PluginError::Refused(format!(
            "HubUpgrade {name} already ended ({phase}); there is nothing to abort"
        )));
    }
    let reason = args
        .reason
        .unwrap_or_else(|| format!("aborted by {}", kubeconfig_user()));
    annotate(&session, name, ABORT_ANNOTATION, &reason).await?;
    println!(
        "HubUpgrade {name} asked to abort ({reason}) in phase {phase}: it ends Failed if the hub was not touched yet, else it rolls back"
    );
    args.then.follow(&session, name, Until::Finished).await
}

/// Sets annotation `key` to `value` on the HubUpgrade `name` (a merge patch, as this command).
pub(super) async fn annotate(
    session: &Session,
    name: &str,
    key: &str,
    value: &str,
) -> Result<(), PluginError> {
    let patch = json!({"metadata": {"annotations": {key: value}}});
    session
        .upgrades()
        .patch(
            name,
            &PatchParams {
                field_manager: Some(PLUGIN_EXECUTABLE.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|e| session.api_error(format!("annotating HubUpgrade {name}"), e))?;
    Ok(())
}

/// The user of the kubeconfig's current context, as kubectl would act; in a pod (no
/// kubeconfig) the plugin's name.
pub(super) fn kubeconfig_user() -> String {
    kube::config::Kubeconfig::read()
        .ok()
        .and_then(|config| {
            let current = config.current_context.clone()?;
            config
                .contexts
                .iter()
                .find(|c| c.name == current)?
                .context
                .as_ref()?
                .user
                .clone()
        })
        .filter(|user| !user.is_empty())
        .unwrap_or_else(|| PLUGIN_NAME.to_string())
}
