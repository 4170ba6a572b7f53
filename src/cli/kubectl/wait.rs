//! `wait`: follows one HubUpgrade (a watch on that object) and prints a line each time its
//! phase or message changes, until the condition asked for is met or the upgrade went wrong.
//! `upgrade --wait`, `abort --wait` and `retry --wait` end here too.

use std::io::Write;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;

use super::Session;
use super::exit::{EXIT_CODES, Exit, PluginError};
use super::output::{parse_timeout, seconds};
use crate::api::HubUpgrade;
use crate::machine::{Phase, Progress};

#[derive(Debug, Clone, Args)]
#[command(after_help = EXIT_CODES)]
pub struct WaitArgs {
    /// The HubUpgrade.
    pub name: String,
    /// Namespace (default: the kubeconfig context's, or in a pod its own).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// What to wait for.
    #[arg(long = "for", value_enum, value_name = "CONDITION", default_value_t = Until::Succeeded)]
    pub until: Until,
    /// Give up after this long (30s, 10m, 1h30m) with exit code 5; a name that does not exist
    /// yet is waited for this long too. Default: no limit.
    #[arg(long, value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
}

/// The condition a wait ends on. Each ends non-zero when the upgrade failed, rolled back, or
/// rolls back with its database back as it was (restored, or never migrated), except
/// `finished`, which follows a roll back to its end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Until {
    /// The upgrade Succeeded (exit 0).
    Succeeded,
    /// The database was migrated (status.migrationSucceeded), or the upgrade Succeeded without
    /// a migration (the hub was already at its target): what a Helm hook waits for before Helm
    /// rolls the new image out.
    Migrated,
    /// The upgrade ended: Succeeded (0), RolledBack (3) or Failed (4).
    Finished,
}

/// Where an upgrade stands for a wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Succeeded,
    Migrated,
    RollingBack,
    RolledBack,
    Failed,
}

impl Verdict {
    pub fn exit(self) -> Exit {
        match self {
            Verdict::Succeeded | Verdict::Migrated => Exit::Done,
            Verdict::RollingBack | Verdict::RolledBack => Exit::RolledBack,
            Verdict::Failed => Exit::Failed,
        }
    }
}

impl Until {
    /// Whether the wait is over, and how; `None`: keep waiting.
    pub fn verdict(self, progress: &Progress) -> Option<Verdict> {
        match (self, progress.phase) {
            (_, Phase::Succeeded) => Some(Verdict::Succeeded),
            (_, Phase::RolledBack) => Some(Verdict::RolledBack),
            (_, Phase::Failed) => Some(Verdict::Failed),
            (Until::Finished, _) => None,
            // A Helm hook fails once the database is as it was before the upgrade: then
            // `helm upgrade --atomic` puts the old release back (old image, the chart's
            // replicas) without the old hub ever meeting a half-restored database.
            (_, Phase::RollingBack)
                if progress.database_restored || !progress.migration_started =>
            {
                Some(Verdict::RollingBack)
            }
            (_, Phase::RollingBack) => None,
            (Until::Migrated, _) if progress.migration_succeeded => Some(Verdict::Migrated),
            _ => None,
        }
    }
}

/// `--wait [--timeout]` of the commands that change an upgrade (abort, approve, retry): then
/// follow it, printing its progress, and exit by its outcome.
#[derive(Debug, Clone, Args)]
pub struct ThenWait {
    /// Then wait, printing its progress: abort until the upgrade ended; approve and retry until
    /// it Succeeded (as `wait`).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this long (30s, 10m, 1h30m), exit code 5.
    #[arg(long, value_parser = parse_timeout, requires = "wait")]
    pub timeout: Option<Duration>,
}

impl ThenWait {
    /// Follows `name` until `until` when asked to wait; else done at once.
    pub async fn follow(
        &self,
        session: &Session,
        name: &str,
        until: Until,
    ) -> Result<Exit, PluginError> {
        if !self.wait {
            return Ok(Exit::Done);
        }
        let (exit, _) = follow(session, name, until, self.timeout, Lines::Stdout).await?;
        Ok(exit)
    }
}

/// Where progress lines go: stdout, or stderr when stdout carries `-o json|yaml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    Stdout,
    Stderr,
}

impl Lines {
    pub fn say(self, line: &str) {
        // A closed pipe (`| head`) must not turn into a panic.
        let _ = match self {
            Lines::Stdout => writeln!(std::io::stdout(), "{line}"),
            Lines::Stderr => writeln!(std::io::stderr(), "{line}"),
        };
    }
}

pub async fn run(args: WaitArgs, program: &'static str) -> Result<Exit, PluginError> {
    let session = Session::connect(args.namespace, program).await?;
    let (exit, _) = follow(
        &session,
        &args.name,
        args.until,
        args.timeout,
        Lines::Stdout,
    )
    .await?;
    Ok(exit)
}

/// Follows HubUpgrade `name` until `until` decides; prints progress on `lines` and the
/// outcome (a failure on stderr). Returns the exit code and the upgrade as last seen.
pub async fn follow(
    session: &Session,
    name: &str,
    until: Until,
    timeout: Option<Duration>,
    lines: Lines,
) -> Result<(Exit, HubUpgrade), PluginError> {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let mut updates = watcher::watch_object(session.upgrades(), name)
        .default_backoff()
        .boxed();
    let mut last: Option<HubUpgrade> = None;
    let mut shown: Option<(Phase, String)> = None;
    let mut said_missing = false;
    loop {
        let next = match deadline {
            Some(deadline) => match tokio::time::timeout_at(deadline, updates.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let name = name.to_string();
                    let waited = seconds(timeout.unwrap_or_default().as_secs() as i64);
                    // A name that never appeared is not there: an error, not a slow upgrade.
                    return Err(match &last {
                        None => PluginError::NeverAppeared {
                            name,
                            namespace: session.namespace.clone(),
                            waited,
                        },
                        Some(_) => PluginError::TimedOut {
                            name,
                            waited,
                            last: describe_last(last.as_ref()),
                        },
                    });
                }
            },
            None => updates.next().await,
        };
        let upgrade = match next {
            None => {
                return Err(PluginError::Refused(format!(
                    "the watch on HubUpgrade {name} ended unexpectedly"
                )));
            }
            Some(Err(error)) => {
                if let Some(fatal) = fatal_watch_error(session, name, error) {
                    return Err(fatal);
                }
                continue;
            }
            Some(Ok(None)) => {
                if last.is_some() {
                    return Err(PluginError::Deleted {
                        name: name.to_string(),
                        last: describe_last(last.as_ref()),
                    });
                }
                if deadline.is_none() {
                    return Err(session.not_found(name));
                }
                if !said_missing {
                    lines.say(&format!(
                        "HubUpgrade {name} does not exist yet in namespace {}; waiting for it",
                        session.namespace
                    ));
                    said_missing = true;
                }
                continue;
            }
            Some(Ok(Some(upgrade))) => upgrade,
        };
        let progress = progress_of(&upgrade);
        let now = (progress.phase, progress.message.clone());
        if shown.as_ref() != Some(&now) {
            lines.say(&progress_line(
                session.started.elapsed().as_secs(),
                progress.phase,
                &progress.message,
            ));
            shown = Some(now);
        }
        if let Some(verdict) = until.verdict(&progress) {
            report(session, name, &upgrade, verdict, lines);
            return Ok((verdict.exit(), upgrade));
        }
        last = Some(upgrade);
    }
}

/// `[  12s] Migrating    running jupyterhub upgrade-db with ...`
pub fn progress_line(elapsed_seconds: u64, phase: Phase, message: &str) -> String {
    format!("[{elapsed_seconds:>4}s] {:<12} {message}", phase.as_str())
        .trim_end()
        .to_string()
}

pub fn progress_of(upgrade: &HubUpgrade) -> Progress {
    upgrade
        .status
        .as_ref()
        .map(|s| s.progress.clone())
        .unwrap_or_default()
}

fn describe_last(upgrade: Option<&HubUpgrade>) -> String {
    let progress = upgrade.map(progress_of).unwrap_or_default();
    if progress.message.is_empty() {
        format!("last phase {}", progress.phase)
    } else {
        format!("last phase {}: {}", progress.phase, progress.message)
    }
}

/// A watch error that retrying cannot cure (no right to read, no such resource type) ends the
/// wait; others are retried with the watcher's back-off.
fn fatal_watch_error(session: &Session, name: &str, error: watcher::Error) -> Option<PluginError> {
    let status = match &error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status)) => status.code,
        watcher::Error::WatchError(status) => status.code,
        _ => 0,
    };
    matches!(status, 401 | 403 | 404).then(|| PluginError::Api {
        doing: format!(
            "watching HubUpgrade {name} in namespace {}",
            session.namespace
        ),
        reason: super::exit::causes(&error),
    })
}

/// The last line: what the upgrade did, on stdout when the wait succeeded, else on stderr.
fn report(session: &Session, name: &str, upgrade: &HubUpgrade, verdict: Verdict, lines: Lines) {
    let progress = progress_of(upgrade);
    let why = progress
        .failure
        .clone()
        .filter(|f| !f.is_empty())
        .unwrap_or_else(|| progress.message.clone());
    match verdict {
        Verdict::Succeeded => {
            let image = progress
                .to
                .as_ref()
                .map(|t| t.image.clone())
                .unwrap_or_else(|| upgrade.spec.target_image.clone());
            let downtime = upgrade
                .status
                .as_ref()
                .and_then(|s| s.downtime_seconds)
                .map(|d| format!(" after {} of downtime", seconds(d)))
                .unwrap_or_default();
            lines.say(&format!(
                "HubUpgrade {name} succeeded: the hub runs {image}{downtime}"
            ));
        }
        Verdict::Migrated => {
            let revision = progress
                .to
                .as_ref()
                .and_then(|t| t.revision.clone())
                .map(|r| format!(" to revision {r}"))
                .unwrap_or_default();
            lines.say(&format!(
                "HubUpgrade {name} migrated the database{revision}; the hub is {}",
                progress.phase
            ));
        }
        Verdict::RollingBack => eprintln!(
            "error: HubUpgrade {name} is rolling back: {why} (`{} wait {name} -n {} --for finished` follows it to the end)",
            session.program, session.namespace
        ),
        Verdict::RolledBack => eprintln!("error: HubUpgrade {name} rolled back: {why}"),
        Verdict::Failed => {
            let backup = progress
                .backup
                .as_ref()
                .filter(|b| !why.contains(&b.reference))
                .map(|b| format!(" (backup: {})", b.reference))
                .unwrap_or_default();
            eprintln!("error: HubUpgrade {name} failed: {why}{backup}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From Migrating on the migration has started; a roll back here has restored the
    /// database.
    fn at(phase: Phase, migration_succeeded: bool) -> Progress {
        Progress {
            phase,
            migration_succeeded,
            migration_started: migration_succeeded,
            database_restored: phase == Phase::RollingBack,
            ..Progress::default()
        }
    }

    #[test]
    fn a_roll_back_fails_the_wait_only_once_the_database_is_as_it_was() {
        for until in [Until::Succeeded, Until::Migrated] {
            let restoring = Progress {
                phase: Phase::RollingBack,
                migration_started: true,
                ..Progress::default()
            };
            assert_eq!(until.verdict(&restoring), None, "{until:?}");
            let restored = Progress {
                database_restored: true,
                ..restoring.clone()
            };
            assert_eq!(until.verdict(&restored), Some(Verdict::RollingBack));
            let never_migrated = Progress {
                phase: Phase::RollingBack,
                ..Progress::default()
            };
            assert_eq!(until.verdict(&never_migrated), Some(Verdict::RollingBack));
        }
    }

    #[test]
    fn succeeded_fails_fast_on_a_roll_back() {
        let until = Until::Succeeded;
        assert_eq!(until.verdict(&at(Phase::Migrating, false)), None);
        assert_eq!(until.verdict(&at(Phase::Verifying, true)), None);
        assert_eq!(
            until.verdict(&at(Phase::Succeeded, true)),
            Some(Verdict::Succeeded)
        );
        assert_eq!(
            until.verdict(&at(Phase::RollingBack, false)),
            Some(Verdict::RollingBack)
        );
        assert_eq!(
            until.verdict(&at(Phase::RolledBack, false)),
            Some(Verdict::RolledBack)
        );
        assert_eq!(
            until.verdict(&at(Phase::Failed, false)),
            Some(Verdict::Failed)
        );
    }

    #[test]
    fn migrated_ends_once_the_migration_succeeded_or_nothing_needed_migrating() {
        let until = Until::Migrated;
        assert_eq!(until.verdict(&at(Phase::Migrating, false)), None);
        for phase in [Phase::RollingOut, Phase::Verifying] {
            assert_eq!(until.verdict(&at(phase, true)), Some(Verdict::Migrated));
        }
        // AlreadyAtTarget: Succeeded without a migration.
        assert_eq!(
            until.verdict(&at(Phase::Succeeded, false)),
            Some(Verdict::Succeeded)
        );
        // A hub that never became Ready after a good migration still rolls back.
        assert_eq!(
            until.verdict(&at(Phase::RollingBack, true)),
            Some(Verdict::RollingBack)
        );
    }

    #[test]
    fn finished_follows_a_roll_back_to_its_end() {
        let until = Until::Finished;
        assert_eq!(until.verdict(&at(Phase::RollingBack, true)), None);
        assert_eq!(until.verdict(&at(Phase::Verifying, true)), None);
        assert_eq!(
            until.verdict(&at(Phase::RolledBack, true)),
            Some(Verdict::RolledBack)
        );
    }

    #[test]
    fn exit_codes_follow_the_outcome() {
        assert_eq!(Verdict::Succeeded.exit() as u8, 0);
        assert_eq!(Verdict::Migrated.exit() as u8, 0);
        assert_eq!(Verdict::RollingBack.exit() as u8, 3);
        assert_eq!(Verdict::RolledBack.exit() as u8, 3);
        assert_eq!(Verdict::Failed.exit() as u8, 4);
    }

    #[test]
    fn a_progress_line_shows_elapsed_time_phase_and_message() {
        assert_eq!(
            progress_line(12, Phase::Migrating, "running jupyterhub upgrade-db"),
            "[  12s] Migrating    running jupyterhub upgrade-db"
        );
        assert_eq!(progress_line(3, Phase::Pending, ""), "[   3s] Pending");
    }
}
