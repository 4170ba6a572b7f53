//! `hubgrade plan -f upgrade.yaml`: what the operator would do with a HubUpgrade, against the
//! live cluster, changing nothing. It reads what the operator's Preflight reads (only GET
//! requests), asks the API server to validate the spec with a dry run (nothing is stored),
//! runs the state machine's own Preflight on what it read, and predicts the downtime from the
//! ledger's past upgrades.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use kube::api::{Api, PostParams};
use kube::{Client, Config, ResourceExt};
use serde::Serialize;

use super::ledger::Format;
use crate::api::HubUpgrade;
use crate::cluster::Target;
use crate::cluster::observe::observe_with;
use crate::hub::HubDatabase;
use crate::hub::revision::{check_image_upgrade, release_of_image};
use crate::ledger::predict::{Prediction, Sample, predict};
use crate::ledger::{Filter, Ledger, UpgradeEntry};
use crate::machine::{Action, LockState, Phase, Progress, decide};

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The HubUpgrade to plan (YAML or JSON); `-` reads standard input.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    /// Its namespace, when the file does not say (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The operator's image policy (give the same as its `hubgrade run`).
    #[command(flatten)]
    pub image_policy: super::run::ImagePolicyArgs,
    /// The ledger to predict the downtime from (the operator's; see `hubgrade history`).
    #[arg(long, env = "HUBGRADE_LEDGER_URL")]
    pub ledger_url: Option<String>,
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The plan, as `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub upgrade: String,
    pub hub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutReport>,
    pub checks: Vec<Check>,
    pub versions: Versions,
    pub backup: String,
    pub downtime: Prediction,
    /// What the operator would do: its first phases, or why it would stop.
    pub verdict: String,
    /// Whether the operator would go ahead.
    pub would_proceed: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutReport {
    pub container: String,
    pub database: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_path: Option<String>,
    pub config_maps: Vec<String>,
    pub secrets: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub check: String,
    pub passed: bool,
    pub detail: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Versions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_revision: Option<String>,
    pub target_image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_release: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_revision: Option<String>,
    /// Whether `jupyterhub upgrade-db` changes the schema; None when an image is not a known
    /// z2jh hub image (the migration runs and tells).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub migration_needed: Option<bool>,
}

pub async fn run(args: PlanArgs) -> ExitCode {
    match plan(&args).await {
        Ok(report) => {
            let text = match args.output {
                Format::Table => text(&report),
                Format::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
                Format::Yaml => serde_saphyr::to_string(&report).unwrap_or_default(),
            };
            print!("{text}");
            if report.would_proceed {
                ExitCode::SUCCESS
            } else {
                // The plan was made; the upgrade would not go ahead.
                ExitCode::from(2)
            }
        }
        Err(problem) => {
            eprintln!("hubgrade plan: {problem}");
            ExitCode::FAILURE
        }
    }
}

async fn plan(args: &PlanArgs) -> Result<Report, String> {
    let text = if args.file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(|e| format!("reading stdin: {e}"))?
    } else {
        std::fs::read_to_string(&args.file)
            .map_err(|e| format!("reading {}: {e}", args.file.display()))?
    };
    let mut upgrade: HubUpgrade = serde_saphyr::from_str(&text)
        .map_err(|e| format!("{} is not a HubUpgrade: {e}", args.file.display()))?;
    let config = Config::infer()
        .await
        .map_err(|e| format!("no Kubernetes configuration: {e}"))?;
    let namespace = upgrade
        .namespace()
        .or_else(|| args.namespace.clone())
        .unwrap_or_else(|| config.default_namespace.clone());
    upgrade.metadata.namespace = Some(namespace.clone());
    let client = Client::try_from(config).map_err(|e| e.to_string())?;
    let mut checks = Vec::new();

    // The API server's own validation (schema and CEL rules), stored nowhere.
    let upgrades: Api<HubUpgrade> = Api::namespaced(client.clone(), &namespace);
    let mut candidate = upgrade.clone();
    candidate.metadata.resource_version = None;
    candidate.status = None;
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    checks.push(match upgrades.create(&dry_run, &candidate).await {
        Ok(_) => check("the API server accepts the spec (dry run)", true, "valid"),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Planned as that object: a lock it holds is its own.
            if let Ok(existing) = upgrades.get(&upgrade.name_any()).await {
                upgrade.metadata.uid = existing.metadata.uid;
            }
            check(
                "the API server accepts the spec (dry run)",
                true,
                "a HubUpgrade of this name already exists; the spec was read as written",
            )
        }
        Err(kube::Error::Api(status)) if status.code == 403 => check(
            "the API server accepts the spec (dry run)",
            true,
            "not checked: this account may not create HubUpgrades here (the dry run needs \
             create); the operator's checks below still ran",
        ),
        Err(error) => check(
            "the API server accepts the spec (dry run)",
            false,
            &error.to_string(),
        ),
    });

    // The operator's own Preflight, on the cluster as it is now.
    let target = Target {
        image_policy: args.image_policy.policy(),
        ..Target::resolve(&upgrade, "").map_err(|e| e.to_string())?
    };
    // The database server is not asked from here (it may be reachable only in the cluster).
    let preflight = Progress {
        phase: Phase::Preflight,
        ..Progress::default()
    };
    let observation = observe_with(&client, None, &target, &preflight, false)
        .await
        .map_err(|e| format!("reading the cluster: {e}"))?;
    let now = jiff::Timestamp::now();
    let mut world = observation.world(now);
    let lock = world.lock.clone();
    checks.push(match &lock {
        LockState::HeldBy(other) => check(
            "the hub lock is free",
            false,
            &format!("held by HubUpgrade {other}: this upgrade would wait for it to end"),
        ),
        LockState::HeldBySelf => check(
            "the hub lock is free",
            true,
            "held by this HubUpgrade itself",
        ),
        LockState::Free => check("the hub lock is free", true, "free"),
    });
    let problems = world
        .preflight
        .as_ref()
        .map(|p| p.problems.clone())
        .unwrap_or_default();
    if problems.is_empty() {
        checks.push(check(
            "Preflight",
            true,
            "the Deployment and its layout, the database's claim (Bound), the upgrade path \
             (no older schema or image) and the backup method",
        ));
    }
    for problem in &problems {
        checks.push(check("Preflight", false, problem));
    }
    if let Some(Ok(layout)) = &observation.snapshot.layout
        && let Some(server) = layout.server()
    {
        checks.push(check(
            "the database server (asked by the operator)",
            true,
            &format!(
                "the operator's Preflight connects to the {} database (the URL from the hub's \
                 Secret) and refuses if it does not answer or clients other than the hub are \
                 connected; plan does not connect to it from here",
                server.kind
            ),
        ));
    }
    // Past the lock, as if this upgrade held it: where the machine would go next.
    world.lock = LockState::HeldBySelf;
    let start = Progress {
        phase: Phase::Preflight,
        phase_started_at: Some(now),
        ..Progress::default()
    };
    let decision = decide(&target.plan, &start, &world, now);
    let next = &decision.progress;
    let would_proceed = !next.phase.is_terminal() && next.phase != Phase::Preflight
        || next.reason == "AlreadyAtTarget";
    let verdict = match (next.phase, next.reason.as_str()) {
        (_, "AlreadyAtTarget") => format!(
            "the hub already runs {} and is Ready: the upgrade would end Succeeded at once, \
             changing nothing",
            target.plan.target_image
        ),
        (Phase::Failed, reason) => format!("it would stop ({reason}): {}", next.message),
        (Phase::Preflight, _) if decision.action == Action::Wait => format!(
            "it would wait in Preflight: {}",
            if next.message.is_empty() {
                "not ready"
            } else {
                &next.message
            }
        ),
        (phase, _) => format!(
            "it would go on to {phase}{}, then stop the hub, back up its database and \
             configuration, migrate with {}, roll the hub out and verify it; any failure \
             rolls it back",
            if matches!(lock, LockState::HeldBy(_)) {
                " once the other upgrade ends"
            } else {
                ""
            },
            target.plan.target_image
        ),
    };
    checks.push(check(
        "the operator would go ahead",
        would_proceed,
        &verdict,
    ));

    let hub_filter = Filter {
        namespace: Some(namespace.clone()),
        hub: Some(target.hub.clone()),
    };
    let past = match &args.ledger_url {
        None => Err("no ledger given (--ledger-url or $HUBGRADE_LEDGER_URL)".to_string()),
        Some(url) => {
            let password = std::env::var("HUBGRADE_LEDGER_PASSWORD").ok();
            match Ledger::open_to_read(url, password.as_deref()).await {
                Ok(ledger) => {
                    let read = ledger.history(&Filter::default()).await;
                    ledger.close().await;
                    read.map_err(|e| e.to_string())
                }
                Err(error) => Err(error.to_string()),
            }
        }
    };
    let samples = past
        .as_ref()
        .map(|upgrades| upgrades.iter().map(Sample::from).collect())
        .map_err(Clone::clone);
    let downtime = predict(&samples, &hub_filter);
    let this_hub: Vec<&UpgradeEntry> = past
        .as_ref()
        .map(|upgrades| {
            upgrades
                .iter()
                .filter(|u| Some(&u.namespace) == hub_filter.namespace.as_ref())
                .filter(|u| Some(&u.hub) == hub_filter.hub.as_ref())
                .collect()
        })
        .unwrap_or_default();
    let last_backup = this_hub
        .iter()
        .find_map(|u| u.backup.as_ref().and_then(|b| b.size_bytes))
        .and_then(|bytes| u64::try_from(bytes).ok());
    // The database's revision as the last upgrade of this hub left it (read from the database
    // after its migration), for a hub whose image the release table does not know.
    let recorded_revision = this_hub
        .iter()
        .filter(|u| u.phase == "Succeeded")
        .find_map(|u| u.to_revision.clone());
    let layout = observation.snapshot.layout.clone().and_then(Result::ok);
    let current_image = layout.as_ref().map(|l| l.image.clone());
    let current = current_image.as_deref().and_then(release_of_image);
    let wanted = release_of_image(&target.plan.target_image);
    let versions = Versions {
        current_release: current.map(|r| r.releases.to_string()),
        current_revision: current.map(|r| r.head.to_string()).or(recorded_revision),
        target_release: wanted.map(|r| r.releases.to_string()),
        target_revision: wanted.map(|r| r.head.to_string()),
        migration_needed: current.zip(wanted).map(|(c, w)| c.head != w.head),
        current_image,
        target_image: target.plan.target_image.clone(),
    };
    if let Some(image) = &versions.current_image
        && let Err(problem) = check_image_upgrade(image, &target.plan.target_image)
    {
        checks.push(check(
            "the target is not older",
            false,
            &problem.to_string(),
        ));
    }

    let backup = match layout.as_ref().map(|l| &l.database) {
        None => "none: the hub's layout was not found".to_string(),
        Some(HubDatabase::Server(server)) => {
            let made = match target.backup_method {
                crate::machine::BackupMethod::Dump => format!(
                    "Dump of the {} database (pg_dump/mysqldump) to the claim {}{}",
                    server.kind,
                    target.dump_claim(),
                    match &target.dump_claim {
                        Some(_) => ", whose room is checked first",
                        None => ", made for it at twice the database's size",
                    }
                ),
                _ => format!(
                    "Clone of the {} database on its own server (`<database>_{}`)",
                    server.kind,
                    crate::cluster::objects::server_clone_suffix(&target.owner)
                ),
            };
            format!(
                "{made}, made once the hub is stopped and checked; a roll back keeps the failed \
                 database as `<database>_failed_<time>`. No rehearsal: the server cannot copy \
                 the database while the hub is connected to it"
            )
        }
        Some(HubDatabase::Sqlite(file)) => format!(
            "{} copy of {} on the claim {}, next to the database (kept: the last {}); the \
             backup Job checks first that the claim has room for the backup, JupyterHub's own \
             copy and 10 % growth{}",
            match target.backup_method {
                crate::machine::BackupMethod::Auto => "File".to_string(),
                method => method.to_string(),
            },
            file.path,
            file.volume_claim,
            target.backup_retain,
            match last_backup {
                Some(bytes) => {
                    let dir = std::path::Path::new(&file.mount_path);
                    let needed: u64 = crate::db::sqlite::SpacePlan::BackupBeforeMigration
                        .needs(bytes, dir, dir)
                        .iter()
                        .map(|n| n.bytes)
                        .sum();
                    format!(
                        ": about {} free for a database the size of this hub's last backup \
                         ({bytes} bytes)",
                        human_bytes(needed)
                    )
                }
                None => " (no earlier backup of this hub in the ledger to size it by)".into(),
            }
        ),
    };
    let layout_report = layout.map(|l| {
        let (database, claim, sub_path) = match l.database {
            HubDatabase::Sqlite(file) => (
                format!("SQLite {}", file.path),
                Some(file.volume_claim),
                file.sub_path,
            ),
            HubDatabase::Server(server) => (server.described(), None, None),
        };
        LayoutReport {
            container: l.container,
            database,
            claim,
            sub_path,
            config_maps: l.config_maps,
            secrets: l.secrets,
        }
    });
    Ok(Report {
        upgrade: format!("{namespace}/{}", upgrade.name_any()),
        hub: format!("{namespace}/{}", target.hub),
        layout: layout_report,
        checks,
        versions,
        backup,
        downtime,
        verdict,
        would_proceed,
    })
}

fn human_bytes(bytes: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if bytes as f64 >= MIB {
        format!("{:.1} MiB", bytes as f64 / MIB)
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn check(name: &str, passed: bool, detail: &str) -> Check {
    Check {
        check: name.to_string(),
        passed,
        detail: detail.to_string(),
    }
}

/// The plan for people.
fn text(report: &Report) -> String {
    let mut out = format!(
        "Plan for HubUpgrade {} (hub {})\n\n",
        report.upgrade, report.hub
    );
    if let Some(layout) = &report.layout {
        out += "Layout\n";
        out += &format!("  container    {}\n", layout.container);
        out += &format!("  database     {}\n", layout.database);
        if let Some(claim) = &layout.claim {
            out += &format!("  claim        {claim}\n");
        }
        if let Some(sub_path) = &layout.sub_path {
            out += &format!("  subPath      {sub_path}\n");
        }
        out += &format!(
            "  config       ConfigMaps {:?}, Secrets {:?}\n\n",
            layout.config_maps, layout.secrets
        );
    }
    let v = &report.versions;
    out += "Versions\n";
    out += &format!(
        "  now          {} (JupyterHub {}, revision {})\n",
        v.current_image.as_deref().unwrap_or("-"),
        v.current_release.as_deref().unwrap_or("unknown"),
        v.current_revision.as_deref().unwrap_or("unknown"),
    );
    out += &format!(
        "  target       {} (JupyterHub {}, revision {})\n",
        v.target_image,
        v.target_release.as_deref().unwrap_or("unknown"),
        v.target_revision.as_deref().unwrap_or("unknown"),
    );
    out += &format!(
        "  migration    {}\n\n",
        match v.migration_needed {
            Some(true) => "needed: the schema changes",
            Some(false) => "none needed: same schema revision",
            None => "unknown: the migration Job finds out",
        }
    );
    out += "Checks\n";
    for check in &report.checks {
        out += &format!(
            "  [{}] {}: {}\n",
            if check.passed { "ok" } else { "no" },
            check.check,
            check.detail
        );
    }
    out += &format!("\nBackup\n  {}\n\n", report.backup);
    out += &format!(
        "Downtime\n  {}: {}\n\n",
        report
            .downtime
            .seconds
            .map_or_else(|| "unknown".to_string(), |s| format!("about {s}s")),
        report.downtime.basis
    );
    out += &format!("Verdict\n  {}\n", report.verdict);
    out
}
