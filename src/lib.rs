//! hubgrade: a Kubernetes operator that upgrades JupyterHub deployments safely.

pub mod machine;
