//! The Kubernetes side of the operator (named `cluster` so it does not shadow the `kube` crate):
//! the resolved upgrade every step here takes (`target`), what the operator reads from the
//! cluster to feed the state machine (`observe`, `interpret`), how it carries out the machine's
//! actions (`effects`, `objects`, `lock`), and CSI VolumeSnapshots of claims (`snapshot`).

/// The field manager of every write hubgrade makes (status applies and object patches alike),
/// so managed fields tell hubgrade's writes from others'.
pub const MANAGER: &str = "hubgrade";

pub mod cache;
pub mod configuration;
pub mod effects;
pub mod hub_api;
pub mod interpret;
pub mod lock;
pub mod objects;
pub mod observe;
pub mod owned;
pub mod snapshot;
pub mod target;
#[cfg(test)]
pub(crate) mod testing;

pub use target::{Owner, Target};
