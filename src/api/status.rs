//! The status of a `HubUpgrade`: the machine's progress plus what Kubernetes users expect
//! (conditions, observed generation) and the derived downtime.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::machine::Progress;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HubUpgradeStatus {
    /// Phase, timeline, original hub, backup: everything needed to continue after a restart.
    #[serde(flatten)]
    pub progress: Progress,
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, Reconciling and Stalled as kstatus (Flux) reads them, and Progressing and Degraded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Seconds from the hub pod's termination to the new hub pod's readiness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<i64>,
}
