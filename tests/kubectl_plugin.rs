//! `hubgrade` as a kubectl plugin, through kubectl's real plugin mechanism: a link named
//! `kubectl-hubgrade` on PATH, run by the cluster's pinned `kubectl` (`kubectl hubgrade ...`),
//! against the KWOK end-to-end harness (a z2jh-shaped hub and the operator as a process).
//! What is asserted is what a user sees: output lines, exit codes, the hub's image.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use hubgrade::machine::Phase;
use serde_json::{Value, json};
use support::e2e::{Hub, ORIGINAL_IMAGE, with_template_annotations};
use support::{TestNamespace, cluster_bin, kubeconfig, stderr, stdout};

const LIMIT: Duration = Duration::from_secs(120);
const TERMINAL: [Phase; 3] = [Phase::Succeeded, Phase::RolledBack, Phase::Failed];
/// What `--to 4.4.0` means for the example hub (quay.io/jupyterhub/k8s-hub:4.1.0).
const RESOLVED: &str = "quay.io/jupyterhub/k8s-hub:4.4.0";

/// A folder on PATH holding `kubectl-hubgrade` (a link to the test build of hubgrade) and the
/// `kubectl_complete-hubgrade` script docs/KUBECTL_PLUGIN.md gives.
struct Plugin {
    dir: tempfile::TempDir,
}

impl Plugin {
    fn install() -> Plugin {
        let dir = tempfile::tempdir().expect("a temporary folder");
        std::os::unix::fs::symlink(
            env!("CARGO_BIN_EXE_hubgrade"),
            dir.path().join("kubectl-hubgrade"),
        )
        .expect("linking kubectl-hubgrade");
        let completer = dir.path().join("kubectl_complete-hubgrade");
        std::fs::write(
            &completer,
            "#!/bin/sh\nexec kubectl-hubgrade __complete \"$@\"\n",
        )
        .expect("writing kubectl_complete-hubgrade");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&completer, std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Plugin { dir }
    }

    fn path(&self) -> String {
        let rest = std::env::var("PATH").unwrap_or_default();
        format!(
            "{}:{}:{rest}",
            self.dir.path().display(),
            cluster_bin().display()
        )
    }

    /// `kubectl ARGS...` with the plugin on PATH, as the cluster's administrator.
    async fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with(&kubeconfig(), args).await
    }

    async fn kubectl_with(&self, config: &Path, args: &[&str]) -> Output {
        let mut command = tokio::process::Command::new(cluster_bin().join("kubectl"));
        command
            .args(args)
            .env("PATH", self.path())
            .env("KUBECONFIG", config)
            .kill_on_drop(true);
        match tokio::time::timeout(Duration::from_secs(240), command.output()).await {
            Ok(output) => output.expect("running kubectl"),
            Err(_) => panic!("kubectl {args:?} did not end within 240 s"),
        }
    }

    /// `kubectl hubgrade ARGS... -n NAMESPACE`.
    async fn hubgrade(&self, namespace: &str, args: &[&str]) -> Output {
        let mut all = vec!["hubgrade"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-n", namespace]);
        self.kubectl(&all).await
    }
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

fn show(output: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        stdout(output),
        stderr(output)
    )
}

/// The progress lines (`[  12s] Phase  message`) of an output, as (phase, message).
fn progress_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix('[')?;
            let (elapsed, rest) = rest.split_once("s] ")?;
            elapsed.trim().parse::<u64>().ok()?;
            let (phase, message) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((phase.to_string(), message.trim().to_string()))
        })
        .collect()
}

/// The HubUpgrade as raw JSON (status fields this test's types may not know included).
async fn raw_upgrade(plugin: &Plugin, namespace: &str, name: &str) -> Value {
    let output = plugin
        .kubectl(&["get", "hubupgrade", name, "-n", namespace, "-o", "json"])
        .await;
    assert!(output.status.success(), "{}", show(&output));
    serde_json::from_slice(&output.stdout).expect("kubectl get -o json")
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_finds_the_plugin_and_its_help_says_kubectl_hubgrade() {
    let plugin = Plugin::install();
    let listed = plugin.kubectl(&["plugin", "list"]).await;
    assert!(
        stdout(&listed).contains(&format!(
            "{}",
            plugin.dir.path().join("kubectl-hubgrade").display()
        )),
        "{}",
        show(&listed)
    );

    let help = plugin.kubectl(&["hubgrade", "--help"]).await;
    assert_eq!(code(&help), Some(0), "{}", show(&help));
    let text = stdout(&help);
    assert!(text.contains("Usage: kubectl hubgrade <COMMAND>"), "{text}");
    for command in ["upgrade", "wait", "status", "abort", "retry", "completion"] {
        assert!(
            text.contains(&format!("\n  {command} ")),
            "no {command}:\n{text}"
        );
    }
    assert!(!text.contains("__complete"), "{text}");
    for line in [
        "Exit codes:",
        "3  the upgrade rolled back or is rolling back",
        "4  the upgrade failed (Failed)",
        "5  timed out waiting",
    ] {
        assert!(text.contains(line), "no {line:?} in:\n{text}");
    }

    // A usage error: clap's exit code 2, and the usage names the plugin as typed.
    let usage = plugin.kubectl(&["hubgrade", "upgrade", "hub"]).await;
    assert_eq!(code(&usage), Some(2), "{}", show(&usage));
    assert!(
        stderr(&usage).contains("Usage: kubectl hubgrade upgrade"),
        "{}",
        show(&usage)
    );
    let wait_help = plugin.kubectl(&["hubgrade", "wait", "--help"]).await;
    assert!(
        stdout(&wait_help).contains("Usage: kubectl hubgrade wait [OPTIONS] <NAME>"),
        "{}",
        show(&wait_help)
    );

    // Called by its own name, it is hubgrade.
    let direct = std::process::Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .arg("--help")
        .output()
        .expect("hubgrade --help");
    assert!(
        stdout(&direct).contains("Usage: hubgrade <COMMAND>"),
        "{}",
        show(&direct)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_prints_scripts_and_kubectl_completes_the_plugin() {
    let plugin = Plugin::install();
    let bash = plugin.kubectl(&["hubgrade", "completion", "bash"]).await;
    assert_eq!(code(&bash), Some(0), "{}", show(&bash));
    let script = stdout(&bash);
    // clap_complete names the function after the link kubectl ran: _kubectl__hubgrade.
    assert!(
        script.contains("_kubectl__hubgrade() {")
            && script.contains("kubectl-hubgrade")
            && script.contains("upgrade)"),
        "{script}"
    );
    let zsh = std::process::Command::new(env!("CARGO_BIN_EXE_hubgrade"))
        .args(["completion", "zsh"])
        .output()
        .expect("hubgrade completion zsh");
    assert!(
        stdout(&zsh).starts_with("#compdef hubgrade"),
        "{}",
        show(&zsh)
    );

    // kubectl's own completion runs kubectl_complete-hubgrade for the plugin's arguments.
    let commands = plugin.kubectl(&["__complete", "hubgrade", "ab"]).await;
    let lines = stdout(&commands);
    assert!(
        lines.lines().any(|l| l.starts_with("abort")),
        "{}",
        show(&commands)
    );
    assert!(!lines.contains("upgrade"), "{lines}");
    let values = plugin
        .kubectl(&["__complete", "hubgrade", "wait", "x", "--for", ""])
        .await;
    let lines = stdout(&values);
    for value in ["succeeded", "migrated", "finished"] {
        assert!(lines.lines().any(|l| l == value), "{}", show(&values));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_upgrade_is_one_sentence_and_exit_code_1() {
    let client = support::client().await;
    support::install_crd(&client).await;
    let namespace = TestNamespace::new(&client, "plugin-missing").await;
    let plugin = Plugin::install();
    for command in [
        &["wait", "no-such-upgrade"][..],
        &["status", "no-such-upgrade"],
        &["abort", "no-such-upgrade"],
        &["retry", "no-such-upgrade"],
    ] {
        let output = plugin.hubgrade(&namespace.name, command).await;
        assert_eq!(code(&output), Some(1), "{command:?}: {}", show(&output));
        let errors = stderr(&output);
        assert_eq!(
            errors.trim_end(),
            format!(
                "error: HubUpgrade no-such-upgrade was not found in namespace {}",
                namespace.name
            ),
            "{command:?}"
        );
        assert!(stdout(&output).is_empty(), "{command:?}: {}", show(&output));
    }
    // Waiting with a timeout waits for the name to appear, then gives up: still not found.
    let waited = plugin
        .hubgrade(
            &namespace.name,
            &["wait", "no-such-upgrade", "--timeout", "2s"],
        )
        .await;
    assert_eq!(code(&waited), Some(1), "{}", show(&waited));
    assert_eq!(
        stderr(&waited).trim_end(),
        format!(
            "error: HubUpgrade no-such-upgrade was not found in namespace {} (waited 2s for it)",
            namespace.name
        )
    );
    let hub = plugin
        .hubgrade(
            &namespace.name,
            &["upgrade", "no-such-hub", "--to", "4.4.0"],
        )
        .await;
    assert_eq!(code(&hub), Some(1), "{}", show(&hub));
    assert_eq!(
        stderr(&hub).trim_end(),
        format!(
            "error: Deployment no-such-hub was not found in namespace {}",
            namespace.name
        )
    );
    namespace.delete().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upgrade_by_chart_version_runs_to_the_end_and_status_shows_it() {
    let hub = Hub::new("plugin-ok", |yaml| yaml).await;
    let plugin = Plugin::install();
    let ns = hub.ns().to_string();

    let run = plugin
        .hubgrade(
            &ns,
            &[
                "upgrade",
                "hub",
                "--to",
                "4.4.0",
                "--wait",
                "--timeout",
                "3m",
            ],
        )
        .await;
    assert_eq!(
        code(&run),
        Some(0),
        "{}\n{}",
        show(&run),
        hub.operator_log()
    );
    // Shown with --nocapture: what a user sees.
    println!("{}", show(&run));
    let text = stdout(&run);
    assert!(
        text.lines().next().unwrap_or_default().contains(&format!(
            "runs {ORIGINAL_IMAGE}, so the target is {RESOLVED}"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "hubupgrade.hubgrade.io/hub-to-4-4-0 created in namespace {ns}"
        )),
        "{text}"
    );
    let phases: Vec<String> = progress_lines(&text).into_iter().map(|(p, _)| p).collect();
    for phase in [
        "Preflight",
        "BackingUp",
        "Migrating",
        "Verifying",
        "Succeeded",
    ] {
        assert!(
            phases.contains(&phase.to_string()),
            "no {phase} line:\n{text}"
        );
    }
    assert!(
        text.trim_end()
            .ends_with(&format!("the hub runs {RESOLVED}"))
            || text.contains(&format!("the hub runs {RESOLVED} after")),
        "{text}"
    );
    assert_eq!(hub.hub_image().await, RESOLVED);

    // The hook retried: the same upgrade is found and its end reported, not a failure. With
    // -o json the object is all of stdout; the human lines go to stderr.
    let again = plugin
        .hubgrade(
            &ns,
            &[
                "upgrade",
                "hub",
                "--to",
                "4.4.0",
                "--wait-for",
                "migrated",
                "-o",
                "json",
            ],
        )
        .await;
    assert_eq!(code(&again), Some(0), "{}", show(&again));
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        show(&again)
    );
    let object: Value = serde_json::from_slice(&again.stdout).expect("upgrade -o json is JSON");
    assert_eq!(
        object.pointer("/metadata/name"),
        Some(&json!("hub-to-4-4-0"))
    );
    assert_eq!(object.pointer("/status/phase"), Some(&json!("Succeeded")));
    assert_eq!(object.pointer("/spec/targetImage"), Some(&json!(RESOLVED)));
    // Another upgrade under that name is refused.
    let other = plugin
        .hubgrade(
            &ns,
            &["upgrade", "hub", "--to", "4.5.0", "--name", "hub-to-4-4-0"],
        )
        .await;
    assert_eq!(code(&other), Some(1), "{}", show(&other));
    assert!(
        stderr(&other).contains("already exists") && stderr(&other).contains("another upgrade"),
        "{}",
        show(&other)
    );

    // status -o json: the object's status.
    let json = plugin
        .hubgrade(&ns, &["status", "hub-to-4-4-0", "-o", "json"])
        .await;
    assert_eq!(code(&json), Some(0), "{}", show(&json));
    let status: Value = serde_json::from_slice(&json.stdout).expect("status -o json is JSON");
    assert_eq!(status["phase"], "Succeeded", "{status}");
    assert_eq!(status["from"]["image"], ORIGINAL_IMAGE, "{status}");
    let yaml = plugin
        .hubgrade(&ns, &["status", "hub-to-4-4-0", "-o", "yaml"])
        .await;
    assert!(
        stdout(&yaml).contains("phase: Succeeded"),
        "{}",
        show(&yaml)
    );

    // The summary in words.
    let summary = plugin.hubgrade(&ns, &["status", "hub-to-4-4-0"]).await;
    let words = stdout(&summary);
    for expected in [
        "Phase:".to_string(),
        format!("From:      {ORIGINAL_IMAGE}, 1 replica"),
        format!("To:        {RESOLVED}"),
        "Backup:    File /srv/jupyterhub/hubgrade-backups/".to_string(),
        "Downtime:".to_string(),
        "Steps:".to_string(),
        "  Migrating".to_string(),
    ] {
        assert!(words.contains(&expected), "no {expected:?} in:\n{words}");
    }

    // Only an ended, unsuccessful upgrade is run again.
    let retry = plugin.hubgrade(&ns, &["retry", "hub-to-4-4-0"]).await;
    assert_eq!(code(&retry), Some(1), "{}", show(&retry));
    assert!(
        stderr(&retry)
            .starts_with("error: HubUpgrade hub-to-4-4-0 succeeded, so there is nothing to retry"),
        "{}",
        show(&retry)
    );

    // The table, in the kubeconfig context's namespace (no -n).
    let config = plugin.dir.path().join("kubeconfig");
    std::fs::copy(kubeconfig(), &config).expect("copying the kubeconfig");
    let set = plugin
        .kubectl_with(
            &config,
            &["config", "set-context", "--current", "--namespace", &ns],
        )
        .await;
    assert!(set.status.success(), "{}", show(&set));
    let table = plugin.kubectl_with(&config, &["hubgrade", "status"]).await;
    let rows: Vec<String> = stdout(&table).lines().map(String::from).collect();
    assert_eq!(rows.len(), 2, "{}", show(&table));
    assert!(rows[0].starts_with("NAME"), "{rows:?}");
    for cell in ["hub-to-4-4-0", "hub", "Succeeded", RESOLVED] {
        assert!(rows[1].contains(cell), "{rows:?}");
    }

    // kubectl completes upgrade names from the namespace typed.
    let names = plugin
        .kubectl(&["__complete", "hubgrade", "status", "-n", &ns, "hub-"])
        .await;
    assert!(
        stdout(&names).lines().any(|l| l == "hub-to-4-4-0"),
        "{}",
        show(&names)
    );
}

/// Pods of Jobs copied from the hub's template fail: with no rehearsal, the migration.
fn failing_migration(yaml: String) -> String {
    with_template_annotations(
        "kwok.hubgrade.io/fail: job, kwok.hubgrade.io/exit-code: \"3\", kwok.hubgrade.io/message: \"alembic: duplicate column\", kwok.hubgrade.io/delay: 2s",
    )(yaml)
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_fails_fast_on_a_roll_back_and_retry_creates_the_upgrade_again() {
    let hub = Hub::new("plugin-rollback", failing_migration).await;
    let plugin = Plugin::install();
    let ns = hub.ns().to_string();
    let spec = json!({"hub": {"deployment": "hub"}, "targetImage": RESOLVED,
                      "migration": {"rehearse": false}});
    hub.apply_upgrade("to-4-4-0", spec).await;

    let waited = plugin
        .hubgrade(&ns, &["wait", "to-4-4-0", "--timeout", "3m"])
        .await;
    assert_eq!(
        code(&waited),
        Some(3),
        "{}\n{}",
        show(&waited),
        hub.operator_log()
    );
    let phases: Vec<String> = progress_lines(&stdout(&waited))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(
        phases.contains(&"Migrating".to_string()),
        "{}",
        show(&waited)
    );
    assert_eq!(
        phases.last().map(String::as_str),
        Some("RollingBack"),
        "the wait did not end as soon as the roll back began: {}",
        show(&waited)
    );
    let errors = stderr(&waited);
    assert_eq!(errors.lines().count(), 1, "{errors}");
    assert!(
        errors.starts_with("error: HubUpgrade to-4-4-0 is rolling back:"),
        "{errors}"
    );

    let done = hub.wait_for("to-4-4-0", &TERMINAL, LIMIT).await;
    let old = done.status.expect("status").progress;
    assert_eq!(old.phase, Phase::RolledBack, "{}", old.message);
    let finished = plugin
        .hubgrade(&ns, &["wait", "to-4-4-0", "--for", "finished"])
        .await;
    assert_eq!(code(&finished), Some(3), "{}", show(&finished));

    // retry: the record is printed before it goes, then the same upgrade is made anew.
    let before = raw_upgrade(&plugin, &ns, "to-4-4-0").await;
    let retried = plugin.hubgrade(&ns, &["retry", "to-4-4-0"]).await;
    assert_eq!(
        code(&retried),
        Some(0),
        "{}\n{}",
        show(&retried),
        hub.operator_log()
    );
    let text = stdout(&retried);
    assert!(
        text.starts_with("HubUpgrade to-4-4-0 ended RolledBack:"),
        "{text}"
    );
    let backup = old.backup.expect("a backup recorded");
    assert!(text.contains(&backup.reference), "{text}");
    assert!(text.contains("created again"), "{text}");
    let after = raw_upgrade(&plugin, &ns, "to-4-4-0").await;
    assert_ne!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["spec"], before["spec"]);
    assert_ne!(
        after.pointer("/status/phase"),
        Some(&json!("RolledBack")),
        "the new object carries the old status: {after}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn abort_ends_an_upgrade_that_has_not_touched_the_hub_failed() {
    // Every Job takes a minute: the upgrade sits in its rehearsal, the hub untouched.
    // Needs the operator's side of the abort annotation (ends an untouched upgrade Failed with
    // status.reason Aborted).
    let hub = Hub::new(
        "plugin-abort",
        with_template_annotations("kwok.hubgrade.io/delay: 60s"),
    )
    .await;
    let plugin = Plugin::install();
    let ns = hub.ns().to_string();
    let started = plugin
        .hubgrade(&ns, &["upgrade", "hub", "--to", "4.4.0"])
        .await;
    assert_eq!(code(&started), Some(0), "{}", show(&started));
    hub.wait_for("hub-to-4-4-0", &[Phase::Rehearsal], LIMIT)
        .await;

    let aborted = plugin
        .hubgrade(
            &ns,
            &[
                "abort",
                "hub-to-4-4-0",
                "--reason",
                "wrong day",
                "--wait",
                "--timeout",
                "50s",
            ],
        )
        .await;
    assert_eq!(
        code(&aborted),
        Some(4),
        "{}\n{}",
        show(&aborted),
        hub.operator_log()
    );
    assert!(
        stdout(&aborted).contains("asked to abort (wrong day)"),
        "{}",
        show(&aborted)
    );
    let upgrade = raw_upgrade(&plugin, &ns, "hub-to-4-4-0").await;
    assert_eq!(
        upgrade.pointer("/status/phase"),
        Some(&json!("Failed")),
        "{upgrade}"
    );
    assert_eq!(
        upgrade.pointer("/status/reason"),
        Some(&json!("Aborted")),
        "{upgrade}"
    );
    assert_eq!(
        upgrade.pointer("/metadata/annotations/hubgrade.io~1abort"),
        Some(&json!("wrong day"))
    );
    assert_eq!(hub.hub_image().await, ORIGINAL_IMAGE);
    assert_eq!(hub.hub().await.spec.and_then(|s| s.replicas), Some(1));
    assert!(
        hub.jobs_for("backup").await.is_empty(),
        "the hub was backed up"
    );

    // An ended upgrade is not aborted.
    let again = plugin.hubgrade(&ns, &["abort", "hub-to-4-4-0"]).await;
    assert_eq!(code(&again), Some(1), "{}", show(&again));
    assert_eq!(
        stderr(&again).trim_end(),
        "error: HubUpgrade hub-to-4-4-0 already ended (Failed); there is nothing to abort"
    );
}
