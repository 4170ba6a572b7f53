//! What Flux and Argo CD show for a HubUpgrade in every phase. The statuses are built exactly as
//! the operator writes them (`reconcile::conditions::status`, the terminal ones from the state
//! machine's own decisions) and judged by the tools' real rules: kstatus from its Go module
//! (`tests/kstatus/`, built by its `build.sh`), and the Argo CD health check
//! `charts/hubgrade/argocd/health.lua` run by a real Lua 5.1 interpreter (Argo CD's gopher-lua
//! is a Lua 5.1). Needs `go` and Debian's `lua5.1` (`make deps`); a missing one fails the test.

#[allow(dead_code)]
mod machine_support;
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use hubgrade::api::{HubUpgrade, HubUpgradeStatus};
use hubgrade::machine::{
    HubObservation, ImageManagement, LockState, Phase, Preflight, Progress, StepState, World,
    decide,
};
use hubgrade::reconcile::conditions;
use machine_support::*;
use serde_json::Value;
use support::argocd::{HEALTH_LUA, argocd_health, run_with_stdin};

const ARGOCD_CM: &str = "charts/hubgrade/argocd/argocd-cm.yaml";
const GENERATION: i64 = 1;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The example HubUpgrade with generation `generation` and the status the operator writes for
/// `progress`, having observed generation `observed`.
fn upgrade_with(progress: Option<&Progress>, generation: i64, observed: i64) -> Value {
    let text = std::fs::read_to_string(repo("examples/sqlite-z2jh.yaml")).expect("the example");
    let mut upgrade: HubUpgrade = serde_saphyr::from_str(&text).expect("a HubUpgrade");
    upgrade.metadata.generation = Some(generation);
    upgrade.status = progress.map(|progress| {
        conditions::status(
            progress,
            Some(observed),
            &HubUpgradeStatus::default(),
            after(1),
        )
    });
    serde_json::to_value(&upgrade).expect("serialize")
}

fn upgrade_in(progress: &Progress) -> Value {
    upgrade_with(Some(progress), GENERATION, GENERATION)
}

/// What the machine records when it enters `phase`, for the phases an upgrade passes through
/// on its own; a roll back also carries why.
fn running(phase: Phase) -> Progress {
    let mut progress = progress_in(phase);
    progress.message = format!("working in {phase}");
    if phase == Phase::RollingBack {
        progress = Progress {
            failure: Some("the migration failed: exit code 3".into()),
            message: "rolling back: the migration failed: exit code 3".into(),
            ..progress_after_migration_started(Phase::RollingBack)
        };
    }
    progress
}

/// The terminal progress the machine decides, asserted to be `phase`.
fn decided(phase: Phase, progress: Progress, world: World) -> Progress {
    let decision = decide(&plan(), &progress, &world, after(100));
    assert_eq!(decision.progress.phase, phase, "{:?}", decision.progress);
    decision.progress
}

fn succeeded() -> Progress {
    let progress = Progress {
        migration_succeeded: true,
        ..progress_after_migration_started(Phase::Verifying)
    };
    let world = World {
        hub: Some(hub(TARGET_IMAGE, ORIGINAL_REPLICAS, 2, true)),
        ..world()
    };
    decided(Phase::Succeeded, progress, world)
}

fn rolled_back() -> Progress {
    let progress = Progress {
        failure: Some("the migration failed: exit code 3".into()),
        database_restored: true,
        ..progress_after_migration_started(Phase::RollingBack)
    };
    let world = World {
        restore: StepState::Succeeded(()),
        ..world()
    };
    decided(Phase::RolledBack, progress, world)
}

fn failed_in_preflight() -> Progress {
    let world = World {
        preflight: Some(Preflight {
            problems: vec!["the target is older than the hub's image".into()],
        }),
        ..world()
    };
    decided(Phase::Failed, progress_in(Phase::Preflight), world)
}

fn waiting_for_the_lock() -> Progress {
    let world = World {
        lock: LockState::HeldBy(OTHER_UPGRADE.into()),
        preflight: Some(Preflight::default()),
        ..world()
    };
    let decision = decide(&plan(), &progress_in(Phase::Preflight), &world, after(1));
    assert_eq!(
        decision.progress.waiting_for.as_deref(),
        Some(OTHER_UPGRADE)
    );
    decision.progress
}

/// Every phase but the terminal ones, as the running upgrade records it.
fn running_phases() -> impl Iterator<Item = Phase> {
    Phase::ALL.into_iter().filter(|phase| !phase.is_terminal())
}

// --- kstatus -------------------------------------------------------------------------------

#[derive(Debug, serde::Deserialize)]
struct Verdict {
    status: String,
    message: String,
}

fn kstatus_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        let script = repo("tests/kstatus/build.sh");
        let output = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            output.status.success(),
            "{} failed (it needs Go, the `go` command, and the Go module proxy)",
            script.display()
        );
        PathBuf::from(String::from_utf8(output.stdout).expect("a path").trim())
    })
}

/// What kstatus (Flux's health checks) computes for `object`.
fn kstatus(object: &Value) -> Verdict {
    let output = run_with_stdin(
        Command::new(kstatus_binary()),
        &serde_json::to_vec(object).expect("json"),
        "tests/kstatus/build.sh builds it",
    );
    serde_json::from_slice(&output).expect("the helper's verdict")
}

#[test]
fn kstatus_sees_every_running_phase_in_progress() {
    for phase in running_phases() {
        let verdict = kstatus(&upgrade_in(&running(phase)));
        assert_eq!(verdict.status, "InProgress", "{phase}: {verdict:?}");
        assert!(verdict.message.contains("working in") || phase == Phase::RollingBack);
    }
    let verdict = kstatus(&upgrade_in(&waiting_for_the_lock()));
    assert_eq!(verdict.status, "InProgress", "{verdict:?}");
    assert!(verdict.message.contains(OTHER_UPGRADE), "{verdict:?}");
}

#[test]
fn kstatus_sees_a_succeeded_upgrade_current() {
    let verdict = kstatus(&upgrade_in(&succeeded()));
    assert_eq!(verdict.status, "Current", "{verdict:?}");
}

#[test]
fn kstatus_sees_failed_and_rolled_back_upgrades_failed_with_the_reason() {
    let verdict = kstatus(&upgrade_in(&rolled_back()));
    assert_eq!(verdict.status, "Failed", "{verdict:?}");
    assert!(
        verdict
            .message
            .contains(&format!("rolled back to {ORIGINAL_IMAGE}"))
            && verdict.message.contains("the migration failed"),
        "{verdict:?}"
    );
    let verdict = kstatus(&upgrade_in(&failed_in_preflight()));
    assert_eq!(verdict.status, "Failed", "{verdict:?}");
    assert!(
        verdict.message.contains("the target is older"),
        "{verdict:?}"
    );
}

#[test]
fn kstatus_sees_a_status_of_an_older_generation_in_progress() {
    let stale = upgrade_with(Some(&succeeded()), GENERATION + 1, GENERATION);
    let verdict = kstatus(&stale);
    assert_eq!(verdict.status, "InProgress", "{verdict:?}");
}

/// A new HubUpgrade, before the operator's first write, as the API server serves it: the CRD's
/// default status (`api::UNOBSERVED_STATUS`) names no generation, so kstatus waits. (Without
/// it, kstatus takes an object with no status for done.)
#[test]
fn kstatus_sees_a_new_upgrade_in_progress_before_the_operator_wrote_to_it() {
    let mut fresh = upgrade_with(None, GENERATION, GENERATION);
    let default: Value = serde_json::from_str(hubgrade::api::UNOBSERVED_STATUS).expect("JSON");
    fresh["status"] = default;
    let verdict = kstatus(&fresh);
    assert_eq!(verdict.status, "InProgress", "{verdict:?}");
    // What the default is there for: with no status at all, kstatus would say Current.
    let bare = kstatus(&upgrade_with(None, GENERATION, GENERATION));
    assert_eq!(bare.status, "Current", "{bare:?}");
}

// --- Flux's CEL health checks (the recipe in examples/flux/hub-upgrade.yaml) ---------------

const FLUX_RECIPE: &str = "examples/flux/hub-upgrade.yaml";

/// The recipe's `current` and `failed` expressions for HubUpgrades.
fn flux_exprs() -> (String, String) {
    let text = std::fs::read_to_string(repo(FLUX_RECIPE)).expect(FLUX_RECIPE);
    let first = text.split("\n---\n").next().expect("a document");
    let kustomization: Value = serde_saphyr::from_str(first).expect("YAML");
    let check = kustomization["spec"]["healthCheckExprs"]
        .as_array()
        .and_then(|checks| checks.iter().find(|c| c["kind"] == "HubUpgrade"))
        .expect("a healthCheckExprs entry for HubUpgrade");
    let expr = |key: &str| check[key].as_str().expect("an expression").to_string();
    (expr("current"), expr("failed"))
}

/// What Flux's `healthCheckExprs` say of `object`, by the kstatus helper's `cel` mode.
fn flux_cel(object: &Value) -> String {
    let (current, failed) = flux_exprs();
    let mut command = Command::new(kstatus_binary());
    command.args(["cel", &current, &failed]);
    let out = run_with_stdin(
        command,
        object.to_string().as_bytes(),
        "tests/kstatus/build.sh builds it",
    );
    let verdict: Value = serde_json::from_slice(&out).expect("JSON");
    verdict["status"].as_str().expect("status").to_string()
}

/// The recipe's gate: the Kustomization of z2jh's release waits (dependsOn) until the upgrade is
/// migrated and waits for its image (External), or is done; a failed upgrade, or an External
/// roll back waiting for the old image, fails it. An Operator-managed upgrade in the same phase
/// is still in progress.
#[test]
fn the_flux_recipe_lets_the_release_sync_once_the_database_is_migrated() {
    for phase in running_phases() {
        assert_eq!(
            flux_cel(&upgrade_in(&running(phase))),
            "InProgress",
            "{phase}"
        );
    }
    let external = |phase, restored| Progress {
        migration_succeeded: true,
        database_restored: restored,
        image_management: Some(ImageManagement::External),
        ..progress_after_migration_started(phase)
    };
    assert_eq!(
        flux_cel(&upgrade_in(&external(Phase::RollingOut, false))),
        "Current"
    );
    let operator = Progress {
        image_management: Some(ImageManagement::Operator),
        ..external(Phase::RollingOut, false)
    };
    assert_eq!(flux_cel(&upgrade_in(&operator)), "InProgress");
    assert_eq!(
        flux_cel(&upgrade_in(&external(Phase::Verifying, false))),
        "InProgress"
    );
    assert_eq!(
        flux_cel(&upgrade_in(&external(Phase::RollingBack, true))),
        "Failed"
    );
    assert_eq!(flux_cel(&upgrade_in(&succeeded())), "Current");
    for ended in [rolled_back(), failed_in_preflight()] {
        assert_eq!(flux_cel(&upgrade_in(&ended)), "Failed");
    }
    // Not yet seen by the operator, or seen at an older generation: in progress.
    assert_eq!(
        flux_cel(&upgrade_with(None, GENERATION, GENERATION)),
        "InProgress"
    );
    assert_eq!(
        flux_cel(&upgrade_with(
            Some(&succeeded()),
            GENERATION + 1,
            GENERATION
        )),
        "InProgress"
    );
}

// --- Argo CD ---------------------------------------------------------------------------------

#[test]
fn argocd_sees_every_running_phase_progressing() {
    for phase in running_phases() {
        let health = argocd_health(&upgrade_in(&running(phase)));
        assert_eq!(health.status, "Progressing", "{phase}: {health:?}");
        assert!(health.message.starts_with(phase.as_str()), "{health:?}");
    }
    let health = argocd_health(&upgrade_in(&waiting_for_the_lock()));
    assert_eq!(health.status, "Progressing", "{health:?}");
    assert!(health.message.contains(OTHER_UPGRADE), "{health:?}");
}

#[test]
fn argocd_sees_a_succeeded_upgrade_healthy() {
    let health = argocd_health(&upgrade_in(&succeeded()));
    assert_eq!(health.status, "Healthy", "{health:?}");
}

#[test]
fn argocd_sees_failed_and_rolled_back_upgrades_degraded_with_the_reason() {
    let health = argocd_health(&upgrade_in(&rolled_back()));
    assert_eq!(health.status, "Degraded", "{health:?}");
    assert!(
        health
            .message
            .starts_with(&format!("RolledBack: rolled back to {ORIGINAL_IMAGE}"))
            && health.message.contains("the migration failed"),
        "{health:?}"
    );
    let health = argocd_health(&upgrade_in(&failed_in_preflight()));
    assert_eq!(health.status, "Degraded", "{health:?}");
    assert!(health.message.contains("the target is older"), "{health:?}");
}

/// An External upgrade (the Argo CD recipe: the HubUpgrade in a sync wave before the hub
/// Deployment's) is Healthy once the database is migrated and only the image change is left, so
/// Argo CD syncs the next wave; its roll back, once the database is restored, is Degraded and
/// says the image must come back. With the operator's own image management, the same phases
/// stay Progressing.
#[test]
fn argocd_lets_the_next_sync_wave_set_the_image_of_an_external_upgrade() {
    let migrated = |mode| {
        let progress = Progress {
            migration_succeeded: true,
            image_management: Some(mode),
            ..progress_after_migration_started(Phase::Migrating)
        };
        let world = World {
            hub: Some(managed_hub(stopped_hub(ORIGINAL_IMAGE))),
            migration: StepState::Succeeded(()),
            ..world()
        };
        decided(Phase::RollingOut, progress, world)
    };
    let health = argocd_health(&upgrade_in(&migrated(ImageManagement::External)));
    assert_eq!(health.status, "Healthy", "{health:?}");
    assert!(
        health
            .message
            .contains("waiting for Argo CD (application jhub) to set the hub image"),
        "{health:?}"
    );
    let health = argocd_health(&upgrade_in(&migrated(ImageManagement::Operator)));
    assert_eq!(health.status, "Progressing", "{health:?}");

    let restored = |mode| {
        let progress = Progress {
            failure: Some("the hub did not become Ready".into()),
            migration_succeeded: true,
            database_restored: true,
            image_management: Some(mode),
            ..progress_after_migration_started(Phase::RollingBack)
        };
        let world = World {
            hub: Some(managed_hub(stopped_hub(TARGET_IMAGE))),
            restore: StepState::Succeeded(()),
            ..world()
        };
        let decision = decide(&plan(), &progress, &world, after(100));
        assert_eq!(decision.progress.phase, Phase::RollingBack);
        decision.progress
    };
    let health = argocd_health(&upgrade_in(&restored(ImageManagement::External)));
    assert_eq!(health.status, "Degraded", "{health:?}");
    assert!(
        health.message.contains("set the hub image back to"),
        "{health:?}"
    );
    let health = argocd_health(&upgrade_in(&restored(ImageManagement::Operator)));
    assert_eq!(health.status, "Progressing", "{health:?}");
}

fn managed_hub(mut hub: HubObservation) -> HubObservation {
    hub.managed_by = Some("Argo CD (application jhub)".into());
    hub
}

#[test]
fn argocd_sees_an_upgrade_without_status_or_with_a_stale_one_progressing() {
    let health = argocd_health(&upgrade_with(None, GENERATION, GENERATION));
    assert_eq!(health.status, "Progressing", "{health:?}");
    for progress in [succeeded(), rolled_back()] {
        let stale = upgrade_with(Some(&progress), GENERATION + 1, GENERATION);
        let health = argocd_health(&stale);
        assert_eq!(health.status, "Progressing", "{health:?}");
        assert!(health.message.contains("generation 2"), "{health:?}");
    }
}

#[test]
fn the_argocd_cm_snippet_carries_the_tested_script() {
    let snippet = std::fs::read_to_string(repo(ARGOCD_CM)).expect(ARGOCD_CM);
    let config_map: Value = serde_saphyr::from_str(&snippet).expect("YAML");
    let script = std::fs::read_to_string(repo(HEALTH_LUA)).expect(HEALTH_LUA);
    assert_eq!(
        config_map["data"]["resource.customizations.health.hubgrade.io_HubUpgrade"]
            .as_str()
            .expect("the health key"),
        script,
        "{ARGOCD_CM} no longer embeds {HEALTH_LUA} as it is"
    );
}

// --- helpers ---------------------------------------------------------------------------------
