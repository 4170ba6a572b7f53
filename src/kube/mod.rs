//! Kubernetes effects and observations: what the operator reads from the cluster to feed the
//! state machine, and how it carries out the machine's actions.

pub mod effects;
pub mod interpret;
pub mod lock;
pub mod objects;
pub mod observe;
