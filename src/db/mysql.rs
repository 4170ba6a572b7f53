//! MySQL and MariaDB backups of a stopped hub's database.
//!
//! - Clone: a backup schema on the same server holding a copy of every table (its `SHOW CREATE
//!   TABLE`, foreign keys included, then its rows), with foreign-key checks off while copying.
//! - Dump: `mysqldump --single-transaction` to a file, restored with the `mysql` client.
//!
//! A restore never drops the failed database: its tables are moved (RENAME TABLE) into
//! `<hub>_failed_<time>`, kept until someone discards it, then the backup is copied back.

use std::path::Path;
use std::process::Stdio;

// Identifiers in dynamic SQL go through `quote`; values are always bound.
use sqlx::mysql::MySqlDatabaseError;
use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection, Row};

use super::server::{
    Client, Fingerprint, ServerBackupError, check_dump_checksum, check_room, check_same,
    finish_dump, revision, verified_clone,
};
use super::url::{DatabaseUrl, ServerUrl};
use crate::machine::BackupRecord;

type Result<T> = std::result::Result<T, ServerBackupError>;

/// MySQL's ER_BAD_DB_ERROR: the database named at login does not exist.
const UNKNOWN_DATABASE: u16 = 1049;

fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

fn database_error(
    what: &'static str,
    server: &ServerUrl,
) -> impl Fn(sqlx::Error) -> ServerBackupError {
    super::server::database_error(what, DatabaseUrl::Mysql(server.clone()))
}

async fn connect(server: &ServerUrl) -> Result<MySqlConnection> {
    let connecting = async { MySqlConnection::connect_with(&server.mysql_options()?).await };
    connecting
        .await
        .map_err(database_error("connecting", server))
}

async fn run(
    db: &mut MySqlConnection,
    server: &ServerUrl,
    what: &'static str,
    sql: String,
) -> Result<()> {
    db.execute(AssertSqlSafe(sql))
        .await
        .map(drop)
        .map_err(database_error(what, server))
}

async fn refuse_if_in_use(
    db: &mut MySqlConnection,
    server: &ServerUrl,
    database: &str,
) -> Result<()> {
    super::server::refuse_if_in_use(database, async || {
        let (count,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS SIGNED) FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
        )
        .bind(database)
        .fetch_one(&mut *db)
        .await
        .map_err(database_error("counting connections", server))?;
        Ok(count)
    })
    .await
}

async fn tables(
    db: &mut MySqlConnection,
    server: &ServerUrl,
    database: &str,
) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = ? AND table_type = 'BASE TABLE' ORDER BY table_name",
    )
    .bind(database)
    .fetch_all(&mut *db)
    .await
    .map_err(database_error("listing tables", server))?;
    Ok(rows.into_iter().map(|(t,)| t).collect())
}

async fn schema_exists(
    db: &mut MySqlConnection,
    server: &ServerUrl,
    database: &str,
) -> Result<bool> {
    let found: Option<(String,)> = sqlx::query_as(
        "SELECT CAST(schema_name AS CHAR) FROM information_schema.schemata WHERE schema_name = ?",
    )
    .bind(database)
    .fetch_optional(&mut *db)
    .await
    .map_err(database_error("looking up a database", server))?;
    Ok(found.is_some())
}

/// Copies every table of `from` into the (existing, empty) schema `to`, structure and rows.
async fn copy_tables(server: &ServerUrl, from: &str, to: &str) -> Result<()> {
    // Connected to the target schema, so the table definitions (and their foreign keys) land there.
    let mut db = connect(&server.with_database(to)).await?;
    run(
        &mut db,
        server,
        "turning foreign-key checks off",
        "SET FOREIGN_KEY_CHECKS = 0".into(),
    )
    .await?;
    for table in tables(&mut db, server, from).await? {
        let row = db
            .fetch_one(AssertSqlSafe(format!(
                "SHOW CREATE TABLE {}.{}",
                quote(from),
                quote(&table)
            )))
            .await
            .map_err(database_error("reading a table definition", server))?;
        let create: String = row
            .try_get(1)
            .map_err(database_error("reading a table definition", server))?;
        run(&mut db, server, "creating a table copy", create).await?;
        let copy = format!(
            "INSERT INTO {}.{} SELECT * FROM {}.{}",
            quote(to),
            quote(&table),
            quote(from),
            quote(&table)
        );
        run(&mut db, server, "copying rows", copy).await?;
    }
    run(
        &mut db,
        server,
        "turning foreign-key checks on",
        "SET FOREIGN_KEY_CHECKS = 1".into(),
    )
    .await?;
    let _ = db.close().await;
    Ok(())
}

/// Row counts of every table, and the revision.
async fn fingerprint(server: &ServerUrl) -> Result<Fingerprint> {
    let revision = revision(&DatabaseUrl::Mysql(server.clone())).await?;
    let mut db = connect(server).await?;
    let mut row_counts = Vec::new();
    for table in tables(&mut db, server, &server.database).await? {
        let sql = format!("SELECT CAST(COUNT(*) AS SIGNED) FROM {}", quote(&table));
        let (count,): (i64,) = sqlx::query_as(AssertSqlSafe(sql))
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

/// Checks, changing nothing, that a backup can start: the server answers, nothing is connected
/// to the hub's database, and (for a dump) the dump fits in `dump_to`'s folder.
pub async fn prepare(server: &ServerUrl, dump_to: Option<&Path>) -> Result<()> {
    let mut db = connect(server).await?;
    refuse_if_in_use(&mut db, server, &server.database).await?;
    if let Some(file) = dump_to {
        let (size,): (i64,) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) FROM information_schema.tables WHERE table_schema = ?",
        )
        .bind(&server.database)
        .fetch_one(&mut db)
        .await
        .map_err(database_error("measuring the database", server))?;
        // SQL text is larger than the tables' pages; twice their size is a safe bound.
        check_room(file, 2 * size.max(0) as u64)?;
    }
    Ok(())
}

/// The hub database's size in bytes (its tables' data and indexes).
pub async fn size(server: &ServerUrl) -> Result<u64> {
    let mut db = connect(server).await?;
    let (size,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) FROM information_schema.tables WHERE table_schema = ?",
    )
    .bind(&server.database)
    .fetch_one(&mut db)
    .await
    .map_err(database_error("measuring the database", server))?;
    let _ = db.close().await;
    Ok(size.max(0) as u64)
}

/// The clients connected to the hub's database (this connection aside): each one's address
/// (`None`: a local socket) and program (MySQL does not know it: empty).
pub async fn clients(server: &ServerUrl) -> Result<Vec<Client>> {
    let mut db = connect(server).await?;
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT CAST(host AS CHAR) FROM information_schema.processlist WHERE db = ? AND id <> CONNECTION_ID()",
    )
    .bind(&server.database)
    .fetch_all(&mut db)
    .await
    .map_err(database_error("listing the connected clients", server))?;
    let _ = db.close().await;
    Ok(rows
        .into_iter()
        .map(|(host,)| {
            // `address:port`, or `localhost` for a socket.
            let address = match host.rsplit_once(':') {
                Some((address, _)) => address.to_string(),
                None => host,
            };
            Client {
                address: (address != "localhost").then_some(address),
                application: String::new(),
            }
        })
        .collect())
}

/// Checks a clone is still there and readable as a hub database.
pub async fn verify_clone(server: &ServerUrl, backup: &str) -> Result<()> {
    let mut db = connect(server).await?;
    if !schema_exists(&mut db, server, backup).await? {
        return Err(ServerBackupError::MissingBackup(backup.to_string()));
    }
    let _ = db.close().await;
    fingerprint(&server.with_database(backup)).await.map(drop)
}

/// Checks a dump still has its recorded checksum.
pub fn verify_dump(file: &Path, checksum: &str) -> Result<()> {
    check_dump_checksum(file, checksum)?;
    Ok(())
}

/// Copies the hub's database into the new schema `backup` and checks the copy.
pub async fn clone_database(server: &ServerUrl, backup: &str) -> Result<BackupRecord> {
    let mut db = connect(server).await?;
    refuse_if_in_use(&mut db, server, &server.database).await?;
    if schema_exists(&mut db, server, backup).await? {
        // A half-made copy from an interrupted attempt is made again from scratch.
        run(
            &mut db,
            server,
            "dropping an unfinished copy",
            format!("DROP DATABASE {}", quote(backup)),
        )
        .await?;
    }
    run(
        &mut db,
        server,
        "creating the backup schema",
        format!("CREATE DATABASE {}", quote(backup)),
    )
    .await?;
    copy_tables(server, &server.database, backup).await?;
    let (size,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(data_length + index_length), 0) AS SIGNED) FROM information_schema.tables WHERE table_schema = ?",
    )
    .bind(backup)
    .fetch_one(&mut db)
    .await
    .map_err(database_error("measuring the copy", server))?;
    let _ = db.close().await;
    verified_clone(server, backup, size, fingerprint).await
}

/// Moves the hub's tables into `<hub>_failed_<stamp>` (kept), leaving the hub's schema empty.
async fn move_aside(db: &mut MySqlConnection, server: &ServerUrl, stamp: &str) -> Result<String> {
    let kept = format!("{}_failed_{stamp}", server.database);
    run(
        db,
        server,
        "creating the schema for the failed database",
        format!("CREATE DATABASE IF NOT EXISTS {}", quote(&kept)),
    )
    .await?;
    run(
        db,
        server,
        "turning foreign-key checks off",
        "SET FOREIGN_KEY_CHECKS = 0".into(),
    )
    .await?;
    for table in tables(db, server, &server.database).await? {
        let rename = format!(
            "RENAME TABLE {}.{} TO {}.{}",
            quote(&server.database),
            quote(&table),
            quote(&kept),
            quote(&table)
        );
        run(db, server, "moving the failed database aside", rename).await?;
    }
    run(
        db,
        server,
        "turning foreign-key checks on",
        "SET FOREIGN_KEY_CHECKS = 1".into(),
    )
    .await?;
    Ok(kept)
}

/// Puts the hub's database back from the clone `backup` (which stays). Returns the schema the
/// failed database was kept in.
pub async fn restore_clone(server: &ServerUrl, backup: &str, stamp: &str) -> Result<String> {
    let in_backup = server.with_database(backup);
    let connecting = async { MySqlConnection::connect_with(&in_backup.mysql_options()?).await };
    let mut db = match connecting.await {
        Ok(db) => db,
        // Only the server's own "unknown database" means the backup is gone; a server that
        // does not answer (or refuses the login) says so.
        Err(sqlx::Error::Database(e))
            if e.try_downcast_ref::<MySqlDatabaseError>()
                .is_some_and(|e| e.number() == UNKNOWN_DATABASE) =>
        {
            return Err(ServerBackupError::MissingBackup(backup.to_string()));
        }
        Err(e) => return Err(database_error("connecting", &in_backup)(e)),
    };
    refuse_if_in_use(&mut db, server, &server.database).await?;
    let kept = move_aside(&mut db, server, stamp).await?;
    let _ = db.close().await;
    copy_tables(server, backup, &server.database).await?;
    check_same(&server.with_database(backup), server, fingerprint).await?;
    Ok(kept)
}

/// Drops a backup (or a kept failed) schema.
pub async fn discard(server: &ServerUrl, database: &str) -> Result<()> {
    let mut db = connect(server).await?;
    run(
        &mut db,
        server,
        "dropping a database",
        format!("DROP DATABASE IF EXISTS {}", quote(database)),
    )
    .await
}

/// Client options in a private file: the password never reaches the command line. Every value
/// is quoted (backslashes and quotes escaped); a value with a line break or a NUL, which could
/// end the line and add options of its own, is refused.
fn options_file(server: &ServerUrl) -> Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let quoted = |part: &'static str, value: &str| {
        if value.contains(['\n', '\r', '\0']) {
            return Err(ServerBackupError::UnsafeOption { part });
        }
        Ok(format!(
            "\"{}\"",
            value.replace('\\', "\\\\").replace('"', "\\\"")
        ))
    };
    let mut text = format!(
        "[client]\nuser={}\nhost={}\n",
        quoted("user", &server.user)?,
        quoted("host", &server.host)?
    );
    if let Some(port) = server.port {
        text.push_str(&format!("port={port}\nprotocol=TCP\n"));
    }
    if let Some(password) = server.password() {
        text.push_str(&format!("password={}\n", quoted("password", password)?));
    }
    // TLS as sqlx reads the URL (`ssl-mode`, `ssl-ca`), for the MariaDB/MySQL command-line tools.
    let mode = server
        .param("ssl-mode")
        .map(|m| m.to_ascii_uppercase().replace('-', "_"));
    match mode.as_deref() {
        Some("DISABLED") => text.push_str("skip-ssl\n"),
        Some("REQUIRED" | "VERIFY_CA" | "VERIFY_IDENTITY") => text.push_str("ssl\n"),
        _ => {}
    }
    if let Some(ca) = server.param("ssl-ca") {
        text.push_str(&format!("ssl-ca={}\n", quoted("ssl-ca", ca)?));
    }
    // The tools check the CA and the host name together: a VERIFY_CA URL gets both.
    if matches!(mode.as_deref(), Some("VERIFY_CA" | "VERIFY_IDENTITY")) {
        text.push_str("ssl-verify-server-cert\n");
    }
    let mut file = tempfile::NamedTempFile::new().map_err(|e| ServerBackupError::File {
        path: "a temporary file".into(),
        message: e.to_string(),
    })?;
    file.write_all(text.as_bytes())
        .map_err(|e| ServerBackupError::File {
            path: file.path().display().to_string(),
            message: e.to_string(),
        })?;
    Ok(file)
}

async fn run_tool(
    tool: &'static str,
    args: &[&str],
    server: &ServerUrl,
    stdin: Option<&Path>,
    stdout: Option<&Path>,
) -> Result<()> {
    let options = options_file(server)?;
    let mut command = tokio::process::Command::new(tool);
    command
        .arg(format!(
            "--defaults-extra-file={}",
            options.path().display()
        ))
        .args(args);
    let file_error = |path: &Path| {
        let path = path.display().to_string();
        move |e: std::io::Error| ServerBackupError::File {
            path,
            message: e.to_string(),
        }
    };
    command.stdin(match stdin {
        Some(path) => Stdio::from(std::fs::File::open(path).map_err(file_error(path))?),
        None => Stdio::null(),
    });
    command.stdout(match stdout {
        Some(path) => Stdio::from(std::fs::File::create(path).map_err(file_error(path))?),
        None => Stdio::null(),
    });
    super::server::run_tool(tool, command, server.password()).await
}

/// `mysqldump --single-transaction` of the hub's database to `file`.
pub async fn dump(server: &ServerUrl, file: &Path) -> Result<BackupRecord> {
    prepare(server, Some(file)).await?;
    let partial = std::path::PathBuf::from(format!("{}.partial", file.display()));
    let args = [
        "--single-transaction",
        "--routines",
        "--triggers",
        "--no-tablespaces",
        "--skip-lock-tables",
        &server.database,
    ];
    run_tool("mysqldump", &args, server, None, Some(&partial)).await?;
    finish_dump(&partial, file)
}

/// Checks the dump's checksum, moves the failed tables aside, and loads the dump.
pub async fn restore_dump(
    server: &ServerUrl,
    file: &Path,
    checksum: &str,
    stamp: &str,
) -> Result<String> {
    check_dump_checksum(file, checksum)?;
    let mut db = connect(server).await?;
    refuse_if_in_use(&mut db, server, &server.database).await?;
    let kept = move_aside(&mut db, server, stamp).await?;
    let _ = db.close().await;
    run_tool("mysql", &[&server.database], server, Some(file), None).await?;
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::url::DatabaseUrl;

    fn server(url: &str) -> ServerUrl {
        match DatabaseUrl::parse(url).expect("url") {
            DatabaseUrl::Mysql(server) => server,
            other => panic!("not MySQL: {other}"),
        }
    }

    /// A URL part percent-encoding a line break could end its line in the options file and add
    /// an option (here: turning TLS off); it is refused, naming the part, never written.
    #[test]
    fn a_line_break_in_the_url_cannot_add_client_options() {
        for (url, part) in [
            ("mysql://hub%0Assl-mode%3DDISABLED:pw@db/jupyterhub", "user"),
            (
                "mysql://hub:pw%0D%0Ainit-command%3Ddrop@db/jupyterhub",
                "password",
            ),
        ] {
            let error = options_file(&server(url)).expect_err("refused");
            assert!(
                matches!(error, ServerBackupError::UnsafeOption { part: p } if p == part),
                "{error}"
            );
            assert!(!error.to_string().contains("pw"), "{error}");
        }
    }

    #[test]
    fn the_tools_use_tls_as_the_url_says() {
        let text = |url: &str| {
            let file = options_file(&server(url)).expect("options");
            std::fs::read_to_string(file.path()).expect("read")
        };
        let verified =
            text("mysql://hub@db/jupyterhub?ssl-mode=VERIFY_IDENTITY&ssl-ca=/etc/ca.crt");
        assert!(
            verified.ends_with("ssl\nssl-ca=\"/etc/ca.crt\"\nssl-verify-server-cert\n"),
            "{verified}"
        );
        assert!(text("mysql://hub@db/jupyterhub?ssl-mode=required").ends_with("\nssl\n"));
        assert!(text("mysql://hub@db/jupyterhub?ssl-mode=DISABLED").ends_with("\nskip-ssl\n"));
        assert!(!text("mysql://hub@db/jupyterhub").contains("ssl"));
    }

    #[test]
    fn every_value_is_quoted_with_quotes_and_backslashes_escaped() {
        let file = options_file(&server(
            r#"mysql://hub:a"b\c#d@db.example.org:3307/jupyterhub"#,
        ))
        .expect("options");
        let text = std::fs::read_to_string(file.path()).expect("read");
        assert_eq!(
            text,
            "[client]\nuser=\"hub\"\nhost=\"db.example.org\"\nport=3307\nprotocol=TCP\npassword=\"a\\\"b\\\\c#d\"\n"
        );
    }
}
