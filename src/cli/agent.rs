//! `hubgrade agent ...`: runs one [`AgentCommand`] (the protocol lives in `crate::agent`) and
//! prints its JSON report on stdout and into the container's termination message, where the
//! operator reads it.

use std::path::Path;
use std::process::ExitCode;

use crate::agent::AgentCommand;

pub async fn run(command: AgentCommand) -> ExitCode {
    let report = command.execute().await;
    let json = serde_json::to_string(&report).unwrap_or_else(|_| "{\"ok\":false}".to_string());
    println!("{json}");
    // Kubernetes shows the termination message in the pod's status, where the operator reads it.
    let termination_log = Path::new("/dev/termination-log");
    if termination_log.exists() {
        let _ = std::fs::write(termination_log, &json);
    }
    if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
