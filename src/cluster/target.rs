//! The resolved target of one upgrade: everything observation, the builders and the effects
//! need, read from the `HubUpgrade` once per reconcile, right after planning. This is the only
//! place in `cluster/` that reads the spec. (Not to be confused with `machine::Target`, the
//! image and revision recorded in the status once the hub moved.)

use k8s_openapi::api::apps::v1::Deployment;
use kube::{Resource, ResourceExt};

use crate::api::{BackupMethod, HubUpgrade, SecretKeyRef, SpecError};
use crate::hub::image::ImagePolicy;
use crate::hub::{ChartDatabase, HubLayout, LayoutError, LayoutHints, detect_layout};
use crate::machine::Plan;

/// The upgrade as the owner of what hubgrade makes and the holder of the hub lock (metadata
/// only, so it is known even when the spec cannot be planned).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// Being deleted: what is made now gets no owner reference (see `objects::owned_metadata`).
    pub deleting: bool,
    /// The abort annotation's value: someone asked the upgrade to stop now.
    pub abort: Option<String>,
    /// The approval annotation's value: who approved.
    pub approved: Option<String>,
}

impl Owner {
    pub fn of(upgrade: &HubUpgrade) -> Owner {
        Owner {
            namespace: upgrade.namespace().unwrap_or_default(),
            name: upgrade.name_any(),
            uid: upgrade.uid().unwrap_or_default(),
            deleting: upgrade.meta().deletion_timestamp.is_some(),
            abort: upgrade
                .annotations()
                .get(crate::api::ABORT_ANNOTATION)
                .map(|why| abort_reason(why)),
            approved: upgrade
                .annotations()
                .get(crate::api::APPROVED_ANNOTATION)
                .map(|who| one_line(who, "someone")),
        }
    }
}

/// The abort annotation's value as the status shows it: one line, at most 200 characters, and
/// something even when the annotation is empty.
fn abort_reason(value: &str) -> String {
    one_line(
        value,
        &format!("the {} annotation is set", crate::api::ABORT_ANNOTATION),
    )
}

/// An annotation's value as the status shows it: one line, at most 200 characters, `empty`
/// when there is nothing.
fn one_line(value: &str, empty: &str) -> String {
    let line: String = value
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    if line.is_empty() {
        empty.to_string()
    } else {
        line
    }
}

/// One upgrade, resolved: who owns it, what it runs, on which hub.
#[derive(Clone, Debug)]
pub struct Target {
    pub owner: Owner,
    pub plan: Plan,
    /// The hub Deployment, in the owner's namespace.
    pub hub: String,
    /// The operator's own image, run by the agent containers (`hubgrade agent`).
    pub agent_image: String,
    /// Secrets (in the hub's namespace) to pull `agent_image` with: the operator's
    /// `--agent-image-pull-secret`, the chart's `imagePullSecrets`.
    pub agent_pull_secrets: Vec<String>,
    pub backup_method: BackupMethod,
    /// How many SQLite backups the backup Job keeps next to the database.
    pub backup_retain: u32,
    /// `backup.volumeSnapshotClass`: the class of the VolumeSnapshot (`VolumeSnapshot` backups).
    pub volume_snapshot_class: Option<String>,
    /// `backup.dumpClaim`: the claim a dump is written to (`Dump` backups).
    pub dump_claim: Option<String>,
    /// Where to look for the hub container and its database (`spec.hub.container`,
    /// `spec.database`), read by [`Target::layout`].
    pub layout_hints: LayoutHints,
    /// The repositories the operator's administrator allows targets from, besides the hub's own.
    pub image_policy: ImagePolicy,
    /// `drain.tokenSecret`: where the token for the hub's API is (draining only).
    pub drain_token: Option<SecretKeyRef>,
    /// `notifications.webhook.urlSecret`: where the webhook's URL is.
    pub webhook: Option<SecretKeyRef>,
}

impl Target {
    /// Plans the spec; a spec that cannot be planned is refused with the planning error.
    pub fn resolve(upgrade: &HubUpgrade, agent_image: &str) -> Result<Target, SpecError> {
        Ok(Target {
            owner: Owner::of(upgrade),
            plan: upgrade.spec.plan()?,
            hub: Target::hub_of(upgrade).to_string(),
            agent_image: agent_image.to_string(),
            agent_pull_secrets: Vec::new(),
            backup_method: upgrade.spec.backup.method,
            backup_retain: upgrade.spec.backup.retain,
            volume_snapshot_class: upgrade.spec.backup.volume_snapshot_class.clone(),
            dump_claim: upgrade.spec.backup.dump_claim.clone(),
            layout_hints: LayoutHints::from(&upgrade.spec),
            image_policy: ImagePolicy::default(),
            drain_token: upgrade.spec.drain.as_ref().map(|d| d.token_secret.clone()),
            webhook: upgrade
                .spec
                .notifications
                .webhook
                .as_ref()
                .map(|w| w.url_secret.clone()),
        })
    }

    /// The claim a dump goes to: the spec's, else the one the operator makes for this upgrade.
    pub fn dump_claim(&self) -> String {
        self.dump_claim
            .clone()
            .unwrap_or_else(|| super::owned::owned_name(&self.owner, "dump"))
    }

    /// The hub Deployment an upgrade names, known even when its spec cannot be planned (to
    /// release the lock of a deleted upgrade).
    pub fn hub_of(upgrade: &HubUpgrade) -> &str {
        &upgrade.spec.hub.deployment
    }

    /// The hub's layout (container, database, claim) in its Deployment, once that is read.
    pub fn layout(&self, deployment: &Deployment) -> Result<HubLayout, LayoutError> {
        self.layout_with_chart(deployment, None)
    }

    /// The same, knowing what the hub's z2jh chart values say about its database.
    pub fn layout_with_chart(
        &self,
        deployment: &Deployment,
        chart: Option<ChartDatabase>,
    ) -> Result<HubLayout, LayoutError> {
        let hints = LayoutHints {
            chart,
            ..self.layout_hints.clone()
        };
        detect_layout(deployment, hints)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::testing::{AGENT_IMAGE, TARGET_IMAGE, UID, hub, upgrade};

    #[test]
    fn the_target_is_what_the_upgrade_asks_for() {
        let mut upgrade = upgrade();
        upgrade.spec.backup.method = BackupMethod::File;
        upgrade.spec.backup.retain = 5;
        let target = Target::resolve(&upgrade, AGENT_IMAGE).expect("target");
        assert_eq!(
            target.owner,
            Owner {
                namespace: "jhub".into(),
                name: "to-4-2".into(),
                uid: UID.into(),
                deleting: false,
                abort: None,
                approved: None,
            }
        );
        assert_eq!(target.hub, "hub");
        assert_eq!(target.plan, upgrade.spec.plan().expect("plan"));
        assert_eq!(target.plan.target_image, TARGET_IMAGE);
        assert_eq!(target.agent_image, AGENT_IMAGE);
        assert_eq!(
            (target.backup_method, target.backup_retain),
            (BackupMethod::File, 5)
        );
        assert_eq!(
            target
                .layout(&hub())
                .expect("layout")
                .sqlite()
                .expect("SQLite")
                .volume_claim,
            "hub-db-dir"
        );
    }

    #[test]
    fn a_spec_that_cannot_be_planned_has_no_target() {
        let mut upgrade = upgrade();
        upgrade.spec.rollback.timeout = "whenever".into();
        assert!(Target::resolve(&upgrade, AGENT_IMAGE).is_err());
    }
}
