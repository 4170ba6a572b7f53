//! The hub lock: annotations on the hub Deployment naming the HubUpgrade acting on it, so only
//! one upgrade touches a hub at a time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

pub const LOCKED_BY: &str = "hubgrade.io/locked-by";
pub const LOCKED_BY_UID: &str = "hubgrade.io/locked-by-uid";

/// The (name, uid) of the HubUpgrade holding the lock of the hub Deployment with this
/// metadata, if any.
pub fn holder(hub: &ObjectMeta) -> Option<(String, String)> {
    let annotations = hub.annotations.as_ref()?;
    let name = annotations.get(LOCKED_BY)?.clone();
    let uid = annotations.get(LOCKED_BY_UID).cloned().unwrap_or_default();
    Some((name, uid))
}
