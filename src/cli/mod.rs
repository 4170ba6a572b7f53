//! The `hubgrade` command line.

mod agent;
mod db;
mod kubectl;
mod ledger;
mod plan;
mod run;

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// hubgrade upgrades JupyterHub deployments on Kubernetes safely: checks, a rehearsal of the
/// database migration, a backup, the migration, the new image, verification, and a roll back
/// when anything fails. Through a link named `kubectl-hubgrade` on PATH it is also the kubectl
/// plugin `kubectl hubgrade`.
#[derive(Debug, Parser)]
#[command(name = "hubgrade", version, about, long_about = None, after_help = kubectl::EXIT_CODES)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator (in-cluster configuration, or KUBECONFIG).
    Run(run::RunArgs),
    /// Print the HubUpgrade CustomResourceDefinition as YAML (what crds/hubupgrade.yaml holds).
    Crd,
    /// Print hubgrade's version.
    Version,
    /// Database operations: schema revision, backup, restore.
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Work done inside the operator's Jobs, on the hub's volume.
    #[command(subcommand)]
    Agent(crate::agent::AgentCommand),
    /// Upgrade a hub Deployment: create its HubUpgrade (--to IMAGE or a chart version).
    Upgrade(kubectl::upgrade::UpgradeArgs),
    /// Wait for a HubUpgrade, printing its progress.
    Wait(kubectl::wait::WaitArgs),
    /// Show the namespace's HubUpgrades, or one in detail.
    Status(kubectl::status::StatusArgs),
    /// Ask a running HubUpgrade to stop (Failed if the hub is untouched, else rolled back).
    Abort(kubectl::abort::AbortArgs),
    /// Approve a HubUpgrade with `approval: Manual`: it stops the hub once checked and rehearsed.
    Approve(kubectl::approve::ApproveArgs),
    /// Run a Failed or RolledBack HubUpgrade again (delete it and create it anew).
    Retry(kubectl::retry::RetryArgs),
    /// What the operator would do with a HubUpgrade (a dry run against the live cluster that
    /// changes nothing): layout, checks, versions, backup, predicted downtime. Exit code 2:
    /// the upgrade would not go ahead.
    Plan(plan::PlanArgs),
    /// The upgrades the ledger recorded, newest first, including those whose HubUpgrade is gone.
    History(ledger::LedgerArgs),
    /// The database backups the ledger recorded, newest first.
    Backups(ledger::LedgerArgs),
    /// Print a shell completion script.
    Completion(kubectl::completion::CompletionArgs),
    /// kubectl's plugin completion (kubectl_complete-hubgrade runs it).
    #[command(name = "__complete", hide = true)]
    Complete(kubectl::completion::CompleteArgs),
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let program = invoked_as(std::env::args_os().next());
    let mut command = Cli::command();
    if program == kubectl::PLUGIN_NAME {
        command = command.bin_name(program).display_name(program);
    }
    let cli = Cli::from_arg_matches(&command.get_matches()).unwrap_or_else(|e| e.exit());
    match cli.command {
        Command::Crd => match crate::api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("hubgrade: could not render the CRD: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Version => {
            println!("hubgrade {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Agent(command) => with_runtime(agent::run(command)),
        Command::Db(command) => with_runtime(db::run(command)),
        Command::Run(args) => with_runtime(run::run(args)),
        Command::Upgrade(args) => plugin(kubectl::upgrade::run(args, program)),
        Command::Wait(args) => plugin(kubectl::wait::run(args, program)),
        Command::Status(args) => plugin(kubectl::status::run(args, program)),
        Command::Abort(args) => plugin(kubectl::abort::run(args, program)),
        Command::Approve(args) => plugin(kubectl::approve::run(args, program)),
        Command::Retry(args) => plugin(kubectl::retry::run(args, program)),
        Command::Plan(args) => with_runtime(plan::run(args)),
        Command::History(args) => with_runtime(ledger::history(args)),
        Command::Backups(args) => with_runtime(ledger::backups(args)),
        Command::Completion(args) => kubectl::completion::script(args, program).into(),
        Command::Complete(args) => plugin(kubectl::completion::candidates(args, program)),
    }
}

/// `kubectl hubgrade` when kubectl ran us as its plugin (argv[0]'s file name is
/// `kubectl-hubgrade`), else `hubgrade`: the name help, usage and messages use.
fn invoked_as(argv0: Option<OsString>) -> &'static str {
    let file = argv0
        .as_deref()
        .and_then(|a| Path::new(a).file_stem())
        .and_then(|f| f.to_str());
    if file == Some(kubectl::PLUGIN_EXECUTABLE) {
        kubectl::PLUGIN_NAME
    } else {
        "hubgrade"
    }
}

/// A plugin command on the async runtime, ending with its documented exit code.
fn plugin(
    work: impl std::future::Future<Output = Result<kubectl::Exit, kubectl::PluginError>>,
) -> ExitCode {
    with_runtime(async { kubectl::finish(work.await) })
}

fn with_runtime(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(error) => {
            eprintln!("hubgrade: could not start the async runtime: {error}");
            ExitCode::FAILURE
        }
    }
}
