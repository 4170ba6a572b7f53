//! The `hubgrade` command line.

mod agent;
mod db;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// hubgrade upgrades JupyterHub deployments on Kubernetes safely: checks, a rehearsal of the
/// database migration, a backup, the migration, the new image, verification, and a roll back
/// when anything fails.
#[derive(Debug, Parser)]
#[command(name = "hubgrade", version, about, long_about = None)]
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
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
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
    }
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
