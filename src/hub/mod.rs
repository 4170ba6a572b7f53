//! JupyterHub knowledge: how a hub is laid out in its Deployment (z2jh conventions).

pub mod api;
mod config;
pub mod image;
mod layout;
pub mod revision;
mod values;

pub use config::{WRONG_DATABASE_EXIT_CODE, pinned_database_config};
pub use layout::{HubDatabase, ServerDatabase, ServerKind, SqliteFile, UrlSource};
pub use layout::{HubLayout, LayoutError, LayoutHints, detect_layout, find_container};
pub use values::{
    ChartDatabase, EXISTING_SECRET_MOUNT, SecretKeys, VALUES_KEY, VALUES_MOUNT, chart_base_url,
    chart_database, chart_database_url, chart_url_from_secrets, merge_values, values_secret,
    values_secrets,
};

/// Where z2jh keeps the hub's SQLite database.
pub const Z2JH_SQLITE_PATH: &str = "/srv/jupyterhub/jupyterhub.sqlite";
/// z2jh's name for the hub container.
pub const DEFAULT_CONTAINER: &str = "hub";
