//! Who owns what hubgrade creates: the names (from the upgrade's uid), the labels and the
//! controller owner reference every object of an upgrade carries, and the steps run as Jobs.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;

use crate::api::HubUpgrade;

pub use super::target::Owner;

/// Label on every object hubgrade creates: which HubUpgrade it belongs to.
pub const UPGRADE_LABEL: &str = "hubgrade.io/upgrade";
/// Label naming the uid of the HubUpgrade an object belongs to (names are reused, uids not).
pub const UPGRADE_UID_LABEL: &str = "hubgrade.io/upgrade-uid";
/// Label saying what the object is for (backup, migration, restore, rehearsal, config-backup).
pub const STEP_LABEL: &str = "hubgrade.io/step";
/// Label on pods that run `hubgrade agent` (the operator's own image).
pub const ROLE_LABEL: &str = "hubgrade.io/role";
/// Directory, next to the database, where SQLite backups are kept.
pub const BACKUP_DIR: &str = "hubgrade-backups";

/// The steps that run as Jobs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, strum::IntoStaticStr, strum::VariantArray,
)]
#[strum(serialize_all = "kebab-case")]
pub enum JobStep {
    Rehearsal,
    Backup,
    Migration,
    /// `migration.onFailure: FreshDatabase`: the failed SQLite file moved aside.
    FreshDatabase,
    Restore,
}

impl JobStep {
    /// Every step, in the order an upgrade runs them.
    pub const ALL: &[JobStep] = <JobStep as strum::VariantArray>::VARIANTS;

    /// The step's name in object names and the `hubgrade.io/step` label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `hubgrade-<first 8 of uid>-<what>`: stable across retries and restarts, unique per upgrade.
pub fn owned_name(owner: &Owner, what: &str) -> String {
    let uid = if owner.uid.is_empty() {
        "nouid"
    } else {
        &owner.uid
    };
    let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    format!("hubgrade-{short}-{what}")
}

/// The controller owner reference to the upgrade (what kube's `controller_owner_ref` makes), so
/// the garbage collector removes what it made.
pub fn owner_reference(owner: &Owner) -> OwnerReference {
    OwnerReference {
        api_version: HubUpgrade::api_version(&()).into_owned(),
        kind: HubUpgrade::kind(&()).into_owned(),
        name: owner.name.clone(),
        uid: owner.uid.clone(),
        controller: Some(true),
        block_owner_deletion: None,
    }
}

pub fn owned_metadata(owner: &Owner, what: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(owned_name(owner, what)),
        namespace: Some(owner.namespace.clone()),
        labels: Some(labels(owner, what)),
        // An upgrade being deleted (Argo CD prunes with foreground deletion) would have the
        // garbage collector remove what it makes now, the roll back's Jobs included: those
        // are left unowned and deleted by the finalizer once the upgrade has ended.
        owner_references: (!owner.deleting).then(|| vec![owner_reference(owner)]),
        ..Default::default()
    }
}

pub(crate) fn labels(owner: &Owner, what: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "hubgrade".into()),
        ("app.kubernetes.io/managed-by".into(), "hubgrade".into()),
        (UPGRADE_LABEL.into(), owner.name.clone()),
        (STEP_LABEL.into(), what.into()),
        (UPGRADE_UID_LABEL.into(), owner.uid.clone()),
    ])
}
