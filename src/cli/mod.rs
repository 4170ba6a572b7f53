//! The `hubgrade` command line.

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
    /// Print the HubUpgrade CustomResourceDefinition as YAML (what crds/hubupgrade.yaml holds).
    Crd,
    /// Print hubgrade's version.
    Version,
}

/// Runs the command line; returns the process exit code.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match crate::api::crd_yaml() {
            Ok(yaml) => {
                print!("{yaml}");
                std::process::ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("hubgrade: could not render the CRD: {error}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Version => {
            println!("hubgrade {}", env!("CARGO_PKG_VERSION"));
            std::process::ExitCode::SUCCESS
        }
    }
}
