//! Kubernetes effects and observations: what the operator reads from the cluster to feed the
//! state machine, and how it carries out the machine's actions.

/// The field manager of every write hubgrade makes (status applies and object patches alike),
/// so managed fields tell hubgrade's writes from others'.
pub const MANAGER: &str = "hubgrade";

pub mod effects;
pub mod interpret;
pub mod lock;
pub mod objects;
pub mod observe;
