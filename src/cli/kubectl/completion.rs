//! Shell completion: `completion SHELL` prints clap_complete's script for `hubgrade` (or
//! `kubectl-hubgrade`); the hidden `__complete` answers kubectl's plugin completion protocol
//! (kubectl 1.26+ runs `kubectl_complete-hubgrade ARGS... WORD` and reads one candidate a
//! line, then `:<directive>`), naming the namespace's HubUpgrades and Deployments too.

use std::time::Duration;

use clap::{Args, Command, CommandFactory};
use clap_complete::Shell;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ListParams};

use super::exit::{Exit, PluginError};
use super::{PLUGIN_EXECUTABLE, PLUGIN_NAME, Session};

/// Cobra's ShellCompDirectiveNoFileComp: no file names after our candidates.
const NO_FILE_COMPLETION: &str = ":4";
/// How long a completion may wait for the API server; a slow cluster gives no names.
const LOOKUP_LIMIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Args)]
pub struct CompletionArgs {
    /// bash, zsh, fish or powershell.
    #[arg(value_enum)]
    pub shell: CompletionShell,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
    Powershell,
}

#[derive(Debug, Clone, Args)]
pub struct CompleteArgs {
    /// The words after `kubectl hubgrade`, the last one being completed ("" for a new word).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub words: Vec<String>,
}

/// `completion SHELL`: the script for the name the binary was called by.
pub fn script(args: CompletionArgs, program: &'static str) -> Exit {
    let shell = match args.shell {
        CompletionShell::Bash => Shell::Bash,
        CompletionShell::Zsh => Shell::Zsh,
        CompletionShell::Fish => Shell::Fish,
        CompletionShell::Powershell => Shell::PowerShell,
    };
    let bin = if program == PLUGIN_NAME {
        PLUGIN_EXECUTABLE
    } else {
        "hubgrade"
    };
    let mut command = crate::cli::Cli::command();
    clap_complete::generate(shell, &mut command, bin, &mut std::io::stdout());
    Exit::Done
}

/// `__complete WORDS...`: candidates for the last word, one a line, then the directive.
pub async fn candidates(args: CompleteArgs, program: &'static str) -> Result<Exit, PluginError> {
    let mut command = crate::cli::Cli::command();
    command.build();
    let (current, before) = match args.words.split_last() {
        Some((current, before)) => (current.as_str(), before),
        None => ("", &[][..]),
    };
    let mut lines = match static_candidates(&command, before, current) {
        Wanted::Static(lines) => lines,
        Wanted::Names { kind, namespace } => {
            tokio::time::timeout(LOOKUP_LIMIT, names(kind, namespace, program))
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|n| n.starts_with(current))
                .collect()
        }
    };
    lines.push(NO_FILE_COMPLETION.to_string());
    println!("{}", lines.join("\n"));
    Ok(Exit::Done)
}

/// What the word being completed is.
#[derive(Debug, PartialEq)]
enum Wanted {
    Static(Vec<String>),
    Names {
        kind: NameKind,
        namespace: Option<String>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum NameKind {
    Upgrade,
    Deployment,
}

/// Walks the words already typed through clap's command tree: the subcommand, flags waiting
/// for a value, positionals. Pure, so the protocol is tested without a cluster.
fn static_candidates(root: &Command, before: &[String], current: &str) -> Wanted {
    let mut command = root;
    let mut pending_value: Option<&clap::Arg> = None;
    let mut positionals = 0;
    let mut namespace = None;
    for word in before {
        if let Some(arg) = pending_value.take() {
            if arg.get_id() == "namespace" {
                namespace = Some(word.clone());
            }
            continue;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (flag, value) = match long.split_once('=') {
                Some((flag, value)) => (flag, Some(value)),
                None => (long, None),
            };
            let arg = command.get_arguments().find(|a| a.get_long() == Some(flag));
            match (arg, value) {
                (Some(arg), Some(value)) if arg.get_id() == "namespace" => {
                    namespace = Some(value.to_string())
                }
                (Some(arg), None) if arg.get_action().takes_values() => pending_value = Some(arg),
                _ => {}
            }
        } else if let Some(short) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            let mut chars = short.chars();
            let arg = chars
                .next()
                .and_then(|c| command.get_arguments().find(|a| a.get_short() == Some(c)));
            if let Some(arg) = arg.filter(|a| a.get_action().takes_values()) {
                let attached = chars.as_str();
                if attached.is_empty() {
                    pending_value = Some(arg);
                } else if arg.get_id() == "namespace" {
                    namespace = Some(attached.trim_start_matches('=').to_string());
                }
            }
        } else if positionals == 0
            && let Some(sub) = command.find_subcommand(word)
        {
            command = sub;
        } else {
            positionals += 1;
        }
    }
    if let Some(arg) = pending_value {
        let values = arg
            .get_possible_values()
            .into_iter()
            .map(|v| v.get_name().to_string())
            .filter(|v| v.starts_with(current))
            .collect();
        return Wanted::Static(values);
    }
    if current.starts_with('-') {
        let flags = command
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| {
                let long = format!("--{}", a.get_long()?);
                let help = a.get_help().map(|h| h.to_string()).unwrap_or_default();
                long.starts_with(current).then(|| described(&long, &help))
            })
            .collect();
        return Wanted::Static(flags);
    }
    if command.has_subcommands() {
        let commands = command
            .get_subcommands()
            .filter(|c| !c.is_hide_set() && c.get_name().starts_with(current))
            .map(|c| {
                let about = c.get_about().map(|h| h.to_string()).unwrap_or_default();
                described(c.get_name(), &about)
            })
            .collect();
        return Wanted::Static(commands);
    }
    match (command.get_name(), positionals) {
        ("wait" | "status" | "abort" | "approve" | "retry", 0) => Wanted::Names {
            kind: NameKind::Upgrade,
            namespace,
        },
        ("upgrade", 0) => Wanted::Names {
            kind: NameKind::Deployment,
            namespace,
        },
        _ => Wanted::Static(Vec::new()),
    }
}

/// `candidate<TAB>description`, the first line of the description only.
fn described(candidate: &str, help: &str) -> String {
    match help.lines().next().filter(|l| !l.is_empty()) {
        Some(first) => format!("{candidate}\t{first}"),
        None => candidate.to_string(),
    }
}

/// Names from the cluster; nothing when it cannot be asked.
async fn names(kind: NameKind, namespace: Option<String>, program: &'static str) -> Vec<String> {
    let Ok(session) = Session::connect(namespace, program).await else {
        return Vec::new();
    };
    let listed = match kind {
        NameKind::Upgrade => session
            .upgrades()
            .list_metadata(&ListParams::default())
            .await
            .map(|l| {
                l.items
                    .into_iter()
                    .filter_map(|u| u.metadata.name)
                    .collect()
            }),
        NameKind::Deployment => {
            Api::<Deployment>::namespaced(session.client.clone(), &session.namespace)
                .list_metadata(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter_map(|d| d.metadata.name)
                        .collect()
                })
        }
    };
    listed.unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(words: &[&str]) -> Wanted {
        let mut command = crate::cli::Cli::command();
        command.build();
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        let (current, before) = words.split_last().expect("a word");
        static_candidates(&command, before, current)
    }

    fn names_of(wanted: Wanted) -> Vec<String> {
        match wanted {
            Wanted::Static(lines) => lines
                .into_iter()
                .map(|l| l.split('\t').next().unwrap_or_default().to_string())
                .collect(),
            other => panic!("static candidates expected, got {other:?}"),
        }
    }

    #[test]
    fn subcommands_flags_and_values_complete() {
        let commands = names_of(complete(&[""]));
        for command in [
            "upgrade",
            "wait",
            "status",
            "abort",
            "approve",
            "retry",
            "completion",
        ] {
            assert!(commands.contains(&command.to_string()), "{commands:?}");
        }
        assert!(
            !commands.iter().any(|c| c.starts_with("__")),
            "{commands:?}"
        );
        assert_eq!(names_of(complete(&["ab"])), ["abort"]);
        let flags = names_of(complete(&["upgrade", "hub", "--wa"]));
        assert_eq!(flags, ["--wait", "--wait-for"]);
        assert_eq!(
            names_of(complete(&["wait", "x", "--for", ""])),
            ["succeeded", "migrated", "finished"]
        );
        assert_eq!(
            names_of(complete(&["upgrade", "hub", "--image-management", "E"])),
            ["External"]
        );
    }

    #[test]
    fn names_come_from_the_cluster_in_the_namespace_typed() {
        assert_eq!(
            complete(&["status", "-n", "jhub", ""]),
            Wanted::Names {
                kind: NameKind::Upgrade,
                namespace: Some("jhub".into())
            }
        );
        assert_eq!(
            complete(&["upgrade", "--namespace=jhub", "h"]),
            Wanted::Names {
                kind: NameKind::Deployment,
                namespace: Some("jhub".into())
            }
        );
        assert_eq!(complete(&["upgrade", "hub", ""]), Wanted::Static(vec![]));
    }
}
