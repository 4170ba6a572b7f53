//! `upgrade`: creates the HubUpgrade of a hub Deployment (or finds the one a retried Helm hook
//! already made) and optionally waits on it.

use std::time::Duration;

use clap::{ArgGroup, Args};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;

use super::exit::{EXIT_CODES, Exit, PluginError};
use super::output::{ObjectFormat, parse_timeout, without_managed_fields};
use super::target::{default_name, is_chart_version, repository};
use super::wait::{Lines, Until, follow, progress_of};
use super::{PLUGIN_EXECUTABLE, Session};
use crate::api::HubUpgrade;

#[derive(Debug, Clone, Args)]
#[command(
    after_help = EXIT_CODES,
    group(ArgGroup::new("waiting").args(["wait", "wait_for"])),
)]
pub struct UpgradeArgs {
    /// The hub Deployment (z2jh: hub).
    pub hub: String,
    /// The image to upgrade to (quay.io/jupyterhub/k8s-hub:4.4.0), or a bare chart version
    /// (4.4.0): the hub container's own image repository with that tag.
    #[arg(long, value_name = "IMAGE|CHART-VERSION")]
    pub to: String,
    /// Namespace (default: the kubeconfig context's, or in a pod its own).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Name of the HubUpgrade (default: <hub>-to-<tag>, e.g. hub-to-4-4-0).
    #[arg(long)]
    pub name: Option<String>,
    /// spec.rollout.imageManagement (default: the operator's).
    #[arg(long, value_enum, ignore_case = true, value_name = "MODE")]
    pub image_management: Option<ImageManagement>,
    /// Wait until the upgrade Succeeded (same as --wait-for succeeded).
    #[arg(long)]
    pub wait: bool,
    /// Wait for this condition (see `wait --help`).
    #[arg(long, value_enum, value_name = "CONDITION")]
    pub wait_for: Option<Until>,
    /// With --wait or --wait-for: give up after this long (30s, 10m, 1h30m), exit code 5.
    #[arg(long, value_parser = parse_timeout, requires = "waiting")]
    pub timeout: Option<Duration>,
    /// Print the HubUpgrade (after the wait, as it ended) instead of the human lines, which go
    /// to stderr.
    #[arg(short, long, value_enum, value_name = "FORMAT")]
    pub output: Option<ObjectFormat>,
}

/// The values of spec.rollout.imageManagement, written into the spec as given.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ImageManagement {
    /// The operator decides (a Helm-managed hub: External).
    #[value(name = "Auto")]
    Auto,
    /// hubgrade sets the target image on the hub Deployment.
    #[value(name = "Operator")]
    Operator,
    /// Helm, Argo CD or Flux sets it; hubgrade migrates and waits for it.
    #[value(name = "External")]
    External,
}

impl ImageManagement {
    fn as_str(self) -> &'static str {
        match self {
            ImageManagement::Auto => "Auto",
            ImageManagement::Operator => "Operator",
            ImageManagement::External => "External",
        }
    }
}

pub async fn run(args: UpgradeArgs, program: &'static str) -> Result<Exit, PluginError> {
    let lines = match args.output {
        Some(_) => Lines::Stderr,
        None => Lines::Stdout,
    };
    let session = Session::connect(args.namespace.clone(), program).await?;
    let image = resolve_target(&session, &args.hub, &args.to, lines).await?;
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| default_name(&args.hub, &image));
    let spec = Wanted {
        name: &name,
        hub: &args.hub,
        image: &image,
        image_management: args.image_management,
    };
    let created = match existing(&session, &spec).await? {
        Some(upgrade) => {
            say_reused(&session, &upgrade, lines);
            serde_json::to_value(&upgrade)
        }
        None => match create(&session, &spec).await {
            Ok(created) => {
                lines.say(&format!(
                    "hubupgrade.hubgrade.io/{name} created in namespace {}: deployment {} to {image}",
                    session.namespace, args.hub
                ));
                serde_json::to_value(&created)
            }
            // Made between our read and our create (two hook Pods at once): the same check.
            Err(error) if is_conflict(&error) => match existing(&session, &spec).await? {
                Some(upgrade) => {
                    say_reused(&session, &upgrade, lines);
                    serde_json::to_value(&upgrade)
                }
                None => return Err(session.api_error(format!("creating HubUpgrade {name}"), error)),
            },
            Err(error) => {
                return Err(session.api_error(format!("creating HubUpgrade {name}"), error));
            }
        },
    }
    .map_err(|e| PluginError::Refused(format!("could not render HubUpgrade {name}: {e}")))?;

    let until = args.wait_for.or(args.wait.then_some(Until::Succeeded));
    let Some(until) = until else {
        match args.output {
            Some(format) => print!("{}", format.render(&without_managed_fields(created))?),
            None => lines.say(&format!(
                "follow it with: {program} wait {name} -n {}",
                session.namespace
            )),
        }
        return Ok(Exit::Done);
    };
    let (exit, last) = follow(&session, &name, until, args.timeout, lines).await?;
    if let Some(format) = args.output {
        let last = serde_json::to_value(&last).unwrap_or_default();
        print!("{}", format.render(&without_managed_fields(last))?);
    }
    Ok(exit)
}

/// The HubUpgrade this command wants.
struct Wanted<'a> {
    name: &'a str,
    hub: &'a str,
    image: &'a str,
    image_management: Option<ImageManagement>,
}

/// `--to` as an image: a chart version becomes the hub container's repository with that tag.
async fn resolve_target(
    session: &Session,
    hub: &str,
    to: &str,
    lines: Lines,
) -> Result<String, PluginError> {
    if !is_chart_version(to) {
        return Ok(to.to_string());
    }
    let deployments: Api<Deployment> = Api::namespaced(session.client.clone(), &session.namespace);
    let deployment = deployments
        .get_opt(hub)
        .await
        .map_err(|e| session.api_error(format!("reading Deployment {hub}"), e))?
        .ok_or_else(|| PluginError::HubNotFound {
            name: hub.to_string(),
            namespace: session.namespace.clone(),
        })?;
    let cannot = |why: String| {
        PluginError::Refused(format!(
            "cannot tell which image --to {to} means: {why}; give the whole image instead (--to REPOSITORY:{to})"
        ))
    };
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .ok_or_else(|| cannot(format!("Deployment {hub} has no pod template")))?;
    let container = crate::hub::find_container(pod, None).map_err(|e| cannot(e.to_string()))?;
    let current = container
        .image
        .as_deref()
        .ok_or_else(|| cannot(format!("container {} has no image", container.name)))?;
    let image = format!("{}:{to}", repository(current));
    lines.say(&format!(
        "--to {to}: deployment {hub}'s container {} runs {current}, so the target is {image}",
        container.name
    ));
    Ok(image)
}

/// An upgrade of that name already there: reused when it is the same upgrade (a retried hook
/// must not fail), refused when it is another.
async fn existing(
    session: &Session,
    wanted: &Wanted<'_>,
) -> Result<Option<HubUpgrade>, PluginError> {
    let name = wanted.name;
    let Some(upgrade) = session
        .upgrades()
        .get_opt(name)
        .await
        .map_err(|e| session.api_error(format!("reading HubUpgrade {name}"), e))?
    else {
        return Ok(None);
    };
    let spec = &upgrade.spec;
    if spec.hub.deployment != wanted.hub || spec.target_image != wanted.image {
        return Err(PluginError::Refused(format!(
            "HubUpgrade {name} already exists in namespace {} for another upgrade (deployment {}, target {}); choose another --name or delete it",
            session.namespace, spec.hub.deployment, spec.target_image
        )));
    }
    Ok(Some(upgrade))
}

fn say_reused(session: &Session, upgrade: &HubUpgrade, lines: Lines) {
    let name = upgrade.metadata.name.as_deref().unwrap_or_default();
    let phase = progress_of(upgrade).phase;
    let mut line = format!(
        "HubUpgrade {name} already exists in namespace {} for the same hub and image (phase {phase}); using it",
        session.namespace
    );
    if phase.is_terminal() {
        line.push_str(&format!(
            "; it has ended, `{} retry {name}` runs it again",
            session.program
        ));
    }
    lines.say(&line);
}

/// Creates the HubUpgrade with only the fields asked for: the CRD's defaults fill in the rest,
/// so the operator's defaults are never hardcoded here.
async fn create(session: &Session, wanted: &Wanted<'_>) -> Result<DynamicObject, kube::Error> {
    let mut spec = json!({
        "hub": {"deployment": wanted.hub},
        "targetImage": wanted.image,
    });
    if let Some(mode) = wanted.image_management {
        spec["rollout"] = json!({"imageManagement": mode.as_str()});
    }
    let object = DynamicObject::new(wanted.name, &ApiResource::erase::<HubUpgrade>(&()))
        .within(&session.namespace)
        .data(json!({"spec": spec}));
    let params = PostParams {
        field_manager: Some(PLUGIN_EXECUTABLE.to_string()),
        ..PostParams::default()
    };
    session.raw_upgrades().create(&params, &object).await
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}
