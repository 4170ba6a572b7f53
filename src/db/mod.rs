//! Hub databases: reading their revision, backing them up, checking and restoring the backups:
//! SQLite files, PostgreSQL and MySQL/MariaDB clones and dumps. (Snapshots of claims are
//! Kubernetes objects: `cluster::snapshot`.)

pub mod backend;
pub mod checked_copy;
pub mod file;
pub mod mysql;
pub mod postgres;
pub mod revision;
pub mod server;
pub mod sqlite;
pub mod url;
