//! PostgreSQL backups of a stopped hub's database.
//!
//! - Clone: `CREATE DATABASE <backup> TEMPLATE <hub>` on the same server: fast, and refused by
//!   PostgreSQL while anything is still connected to the hub's database.
//! - Dump: `pg_dump --format=custom` to a file, restored with `pg_restore`.
//!
//! A restore never drops the failed database: it is renamed `<hub>_failed_<time>` and kept
//! until someone discards it, then the hub's database is made again from the backup.

use std::path::Path;
use std::process::Stdio;

// Identifiers in dynamic SQL go through `quote`; values are always bound.
use sqlx::{AssertSqlSafe, Connection, PgConnection};

use super::server::{
    Client, Fingerprint, ServerBackupError, check_dump_checksum, check_room, check_same,
    finish_dump, revision, verified_clone,
};
use super::url::{DatabaseUrl, ServerUrl};
use crate::machine::BackupRecord;

type Result<T> = std::result::Result<T, ServerBackupError>;

fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// A connection to the server's maintenance database (`postgres`): databases are created and
/// renamed from outside them.
async fn maintenance(server: &ServerUrl) -> Result<PgConnection> {
    let maintenance = server.with_database("postgres");
    let url = DatabaseUrl::Postgres(maintenance.clone());
    connect(&maintenance)
        .await
        .map_err(super::server::database_error("connecting", url))
}

async fn connect(server: &ServerUrl) -> std::result::Result<PgConnection, sqlx::Error> {
    PgConnection::connect_with(&server.pg_options()?).await
}

fn database_error(
    what: &'static str,
    server: &ServerUrl,
) -> impl Fn(sqlx::Error) -> ServerBackupError {
    super::server::database_error(what, DatabaseUrl::Postgres(server.clone()))
}

async fn refuse_if_in_use(db: &mut PgConnection, server: &ServerUrl, database: &str) -> Result<()> {
    // Only clients count (autovacuum workers come and go, and CREATE DATABASE cancels them).
    super::server::refuse_if_in_use(database, async || {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        )
        .bind(database)
        .fetch_one(&mut *db)
        .await
        .map_err(database_error("counting connections", server))?;
        Ok(count)
    })
    .await
}

async fn exists(db: &mut PgConnection, server: &ServerUrl, database: &str) -> Result<bool> {
    let found: Option<(i32,)> = sqlx::query_as("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_optional(&mut *db)
        .await
        .map_err(database_error("looking up a database", server))?;
    Ok(found.is_some())
}

/// Checks, changing nothing, that a backup can start: the server answers, nothing is connected
/// to the hub's database, and (for a dump) the dump fits in `dump_to`'s folder.
pub async fn prepare(server: &ServerUrl, dump_to: Option<&Path>) -> Result<()> {
    let mut db = maintenance(server).await?;
    refuse_if_in_use(&mut db, server, &server.database).await?;
    if let Some(file) = dump_to {
        let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size($1)")
            .bind(&server.database)
            .fetch_one(&mut db)
            .await
            .map_err(database_error("measuring the database", server))?;
        // A custom-format dump is compressed: the database's size is a safe upper bound.
        check_room(file, size.max(0) as u64)?;
    }
    Ok(())
}

/// The hub database's size in bytes.
pub async fn size(server: &ServerUrl) -> Result<u64> {
    let mut db = maintenance(server).await?;
    let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size($1)")
        .bind(&server.database)
        .fetch_one(&mut db)
        .await
        .map_err(database_error("measuring the database", server))?;
    let _ = db.close().await;
    Ok(size.max(0) as u64)
}

/// The clients connected to the hub's database (this connection aside): each one's address
/// (`None`: a local socket) and application name.
pub async fn clients(server: &ServerUrl) -> Result<Vec<Client>> {
    let mut db = maintenance(server).await?;
    let rows: Vec<(Option<String>, String)> = sqlx::query_as(
        "SELECT host(client_addr), coalesce(application_name, '') FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .bind(&server.database)
    .fetch_all(&mut db)
    .await
    .map_err(database_error("listing the connected clients", server))?;
    let _ = db.close().await;
    Ok(rows
        .into_iter()
        .map(|(address, application)| Client {
            address,
            application,
        })
        .collect())
}

/// Checks a clone is still there and readable as a hub database.
pub async fn verify_clone(server: &ServerUrl, backup: &str) -> Result<()> {
    let mut db = maintenance(server).await?;
    if !exists(&mut db, server, backup).await? {
        return Err(ServerBackupError::MissingBackup(backup.to_string()));
    }
    let _ = db.close().await;
    fingerprint(&server.with_database(backup)).await.map(drop)
}

/// Checks a dump still has its recorded checksum and that pg_restore can read it.
pub async fn verify_dump(server: &ServerUrl, file: &Path, checksum: &str) -> Result<()> {
    check_dump_checksum(file, checksum)?;
    let mut list = libpq_command("pg_restore", server);
    list.arg("--list").arg(file);
    run_tool("pg_restore --list", list, server).await
}

/// Copies the hub's database into a new database `backup` on the same server, then checks the
/// copy holds the same schema revision and the same number of rows in every table.
pub async fn clone_database(server: &ServerUrl, backup: &str) -> Result<BackupRecord> {
    let mut db = maintenance(server).await?;
    refuse_if_in_use(&mut db, server, &server.database).await?;
    if !exists(&mut db, server, backup).await? {
        let sql = format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote(backup),
            quote(&server.database)
        );
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut db)
            .await
            .map_err(database_error("cloning the database", server))?;
    }
    let (size,): (i64,) = sqlx::query_as("SELECT pg_database_size($1)")
        .bind(backup)
        .fetch_one(&mut db)
        .await
        .map_err(database_error("measuring the copy", server))?;
    let _ = db.close().await;
    verified_clone(server, backup, size, fingerprint).await
}

/// Row counts of every table, and the revision: what a copy must share with its original.
async fn fingerprint(server: &ServerUrl) -> Result<Fingerprint> {
    let url = DatabaseUrl::Postgres(server.clone());
    let revision = revision(&url).await?;
    let mut db = connect(server)
        .await
        .map_err(database_error("connecting", server))?;
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename",
    )
    .fetch_all(&mut db)
    .await
    .map_err(database_error("listing tables", server))?;
    let mut row_counts = Vec::new();
    for (table,) in tables {
        let count: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            quote(&table)
        )))
        .fetch_one(&mut db)
        .await
        .map_err(database_error("counting rows", server))?;
        row_counts.push((table, count));
    }
    let _ = db.close().await;
    Ok(Fingerprint {
        revision,
        row_counts,
    })
}

/// Moves the (failed) hub database aside as `<hub>_failed_<stamp>` and makes the hub's database
/// again from `backup`, which stays as it is. Returns the name the failed database was kept under.
pub async fn restore_clone(server: &ServerUrl, backup: &str, stamp: &str) -> Result<String> {
    let mut db = maintenance(server).await?;
    if !exists(&mut db, server, backup).await? {
        return Err(ServerBackupError::MissingBackup(backup.to_string()));
    }
    refuse_if_in_use(&mut db, server, &server.database).await?;
    refuse_if_in_use(&mut db, server, backup).await?;
    let kept = move_aside(&mut db, server, stamp).await?;
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE {}",
        quote(&server.database),
        quote(backup)
    );
    sqlx::query(AssertSqlSafe(sql))
        .execute(&mut db)
        .await
        .map_err(database_error("restoring from the clone", server))?;
    let _ = db.close().await;
    check_same(&server.with_database(backup), server, fingerprint).await?;
    Ok(kept)
}

async fn move_aside(db: &mut PgConnection, server: &ServerUrl, stamp: &str) -> Result<String> {
    let kept = format!("{}_failed_{stamp}", server.database);
    if exists(db, server, &server.database).await? {
        let sql = format!(
            "ALTER DATABASE {} RENAME TO {}",
            quote(&server.database),
            quote(&kept)
        );
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut *db)
            .await
            .map_err(database_error("moving the failed database aside", server))?;
    }
    Ok(kept)
}

/// Drops a backup (or a kept failed) database.
pub async fn discard(server: &ServerUrl, database: &str) -> Result<()> {
    let mut db = maintenance(server).await?;
    let sql = format!("DROP DATABASE IF EXISTS {}", quote(database));
    sqlx::query(AssertSqlSafe(sql))
        .execute(&mut db)
        .await
        .map_err(database_error("dropping a database", server))?;
    Ok(())
}

/// libpq settings for pg_dump and pg_restore: the password goes in the environment, never on
/// the command line, where `ps` would show it.
fn libpq_command(tool: &str, server: &ServerUrl) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(tool);
    command
        .env("PGHOST", &server.host)
        .env("PGUSER", &server.user)
        .env("PGDATABASE", &server.database)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(port) = server.port {
        command.env("PGPORT", port.to_string());
    }
    match server.password() {
        Some(password) => command.env("PGPASSWORD", password),
        None => command.env_remove("PGPASSWORD"),
    };
    // The URL's libpq parameters, so that pg_dump connects as sqlx does (`sslmode=require`).
    for (param, variable) in [
        ("sslmode", "PGSSLMODE"),
        ("sslrootcert", "PGSSLROOTCERT"),
        ("sslcert", "PGSSLCERT"),
        ("sslkey", "PGSSLKEY"),
        ("application_name", "PGAPPNAME"),
        ("options", "PGOPTIONS"),
    ] {
        match server.param(param) {
            Some(value) => command.env(variable, value),
            None => command.env_remove(variable),
        };
    }
    command
}

async fn run_tool(
    tool: &'static str,
    command: tokio::process::Command,
    server: &ServerUrl,
) -> Result<()> {
    super::server::run_tool(tool, command, server.password()).await
}

/// `pg_dump --format=custom` of the hub's database to `file`, checked with `pg_restore --list`.
pub async fn dump(server: &ServerUrl, file: &Path) -> Result<BackupRecord> {
    prepare(server, Some(file)).await?;
    let partial = format!("{}.partial", file.display());
    let mut command = libpq_command("pg_dump", server);
    command.args(["--format=custom", "--no-owner", "--file", &partial]);
    run_tool("pg_dump", command, server).await?;
    let mut list = libpq_command("pg_restore", server);
    list.args(["--list", &partial]);
    run_tool("pg_restore --list", list, server).await?;
    finish_dump(Path::new(&partial), file)
}

/// Checks the dump's checksum, moves the failed database aside, and restores the dump into a
/// fresh database of the hub's name. Returns the name the failed database was kept under.
pub async fn restore_dump(
    server: &ServerUrl,
    file: &Path,
    checksum: &str,
    stamp: &str,
) -> Result<String> {
    check_dump_checksum(file, checksum)?;
    let mut db = maintenance(server).await?;
    refuse_if_in_use(&mut db, server, &server.database).await?;
    let kept = move_aside(&mut db, server, stamp).await?;
    let sql = format!("CREATE DATABASE {}", quote(&server.database));
    sqlx::query(AssertSqlSafe(sql))
        .execute(&mut db)
        .await
        .map_err(database_error("creating the database", server))?;
    let _ = db.close().await;
    let mut command = libpq_command("pg_restore", server);
    command.args([
        "--no-owner",
        "--exit-on-error",
        "--dbname",
        &server.database,
    ]);
    command.arg(file);
    run_tool("pg_restore", command, server).await?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_dump_gets_the_password_and_the_url_parameters_through_its_environment() {
        let url = DatabaseUrl::parse(
            "postgresql+psycopg2://hub:hunter2@[::1]:5433/jupyterhub?sslmode=require",
        )
        .expect("url");
        let DatabaseUrl::Postgres(server) = url else {
            panic!("not postgres")
        };
        let command = libpq_command("pg_dump", &server);
        let command = command.as_std();
        let env: std::collections::BTreeMap<_, _> = command
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?, v?.to_str()?)))
            .collect();
        assert_eq!(env.get("PGPASSWORD"), Some(&"hunter2"));
        assert_eq!(env.get("PGSSLMODE"), Some(&"require"));
        assert_eq!(env.get("PGHOST"), Some(&"::1"));
        assert_eq!(env.get("PGPORT"), Some(&"5433"));
        assert!(
            command
                .get_args()
                .all(|a| !a.to_string_lossy().contains("hunter2"))
        );
    }
}
