//! hubgrade: a Kubernetes operator that upgrades JupyterHub deployments safely.
//!
//! `machine/` decides (pure), `cluster/` observes and acts on Kubernetes, `db/` backs up and
//! restores hub databases, `hub/` knows JupyterHub and z2jh; see docs/ARCHITECTURE.md.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod db;
pub mod hub;
pub mod ledger;
pub mod machine;
pub mod reconcile;
