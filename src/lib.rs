//! hubgrade: a Kubernetes operator that upgrades JupyterHub deployments safely.

pub mod agent;
pub mod api;
pub mod backup;
pub mod cli;
pub mod hub;
pub mod kube;
pub mod machine;
pub mod reconcile;
