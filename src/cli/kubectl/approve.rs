//! `approve`: says go to an upgrade with `approval: Manual` that waits in phase Scheduled, with
//! the approval annotation; the value records who.

use clap::Args;

use super::Session;
use super::abort::{annotate, kubeconfig_user};
use super::exit::{EXIT_CODES, Exit, PluginError};
use super::wait::{ThenWait, Until, progress_of};
use crate::api::APPROVED_ANNOTATION;
use crate::machine::Phase;

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES)]
pub struct ApproveArgs {
    /// The HubUpgrade.
    pub name: String,
    /// Namespace (default: the kubeconfig context's, or in a pod its own).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Who approves; recorded in the upgrade's status (default: the kubeconfig user).
    #[arg(long)]
    pub by: Option<String>,
    #[command(flatten)]
    pub then: ThenWait,
}

pub async fn run(args: ApproveArgs, program: &'static str) -> Result<Exit, PluginError> {
    let session = Session::connect(args.namespace, program).await?;
    let name = &args.name;
    let upgrade = session.upgrade(name).await?;
    let progress = progress_of(&upgrade);
    if progress.phase.is_terminal() {
        return Err(PluginError::Refused(format!(
            "HubUpgrade {name} already ended ({}); there is nothing to approve",
            progress.phase
        )));
    }
    let by = args.by.unwrap_or_else(kubeconfig_user);
    annotate(&session, name, APPROVED_ANNOTATION, &by).await?;
    let when = match progress.phase {
        Phase::Scheduled => "it goes on now (or when its window opens)",
        _ => "it goes on without waiting once it is checked and rehearsed",
    };
    println!("HubUpgrade {name} approved by {by}: {when}");
    args.then.follow(&session, name, Until::Succeeded).await
}
