//! Reading a hub database's alembic revision, for SQLite, PostgreSQL and MySQL alike.

use sqlx::Connection;

use super::url::DatabaseUrl;

#[derive(Debug, thiserror::Error)]
pub enum RevisionReadError {
    #[error("cannot open {url}: {message}")]
    Connect { url: String, message: String },
    #[error("cannot read alembic_version in {url}: {message}")]
    Query { url: String, message: String },
}

/// Error text from a driver, with the password cut out in case the driver echoed it.
pub fn scrubbed(error: &sqlx::Error, url: &DatabaseUrl) -> String {
    let text = error.to_string();
    match url {
        DatabaseUrl::Postgres(s) | DatabaseUrl::Mysql(s) => match s.password() {
            Some(password) if !password.is_empty() => text.replace(password, "***"),
            _ => text,
        },
        DatabaseUrl::Sqlite { .. } => text,
    }
}

/// The revision in `alembic_version`; `None` when the table is missing or empty.
pub async fn read_revision(url: &DatabaseUrl) -> Result<Option<String>, RevisionReadError> {
    let connect = |e: sqlx::Error| RevisionReadError::Connect {
        url: url.to_string(),
        message: scrubbed(&e, url),
    };
    let query_error = |e: sqlx::Error| RevisionReadError::Query {
        url: url.to_string(),
        message: scrubbed(&e, url),
    };
    match url {
        DatabaseUrl::Sqlite { path } => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true);
            let mut db = sqlx::SqliteConnection::connect_with(&options)
                .await
                .map_err(connect)?;
            alembic_revision(
                &mut db,
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'",
            )
            .await
        }
        DatabaseUrl::Postgres(server) => {
            let options = server.pg_options().map_err(connect)?;
            let mut db = sqlx::PgConnection::connect_with(&options)
                .await
                .map_err(connect)?;
            alembic_revision(
                &mut db,
                "SELECT table_name::text FROM information_schema.tables WHERE table_name = 'alembic_version'",
            )
            .await
        }
        DatabaseUrl::Mysql(server) => {
            let options = server.mysql_options().map_err(connect)?;
            let mut db = sqlx::MySqlConnection::connect_with(&options)
                .await
                .map_err(connect)?;
            alembic_revision(
                &mut db,
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'alembic_version'",
            )
            .await
        }
    }
    .map_err(query_error)
}

/// The first row of `alembic_version`, once `table_exists` (a query returning its name) found
/// the table; the same two queries on every kind of database.
async fn alembic_revision<C>(
    db: &mut C,
    table_exists: &'static str,
) -> Result<Option<String>, sqlx::Error>
where
    C: Connection,
    for<'c> &'c mut C: sqlx::Executor<'c, Database = C::Database>,
    <C::Database as sqlx::Database>::Arguments: sqlx::IntoArguments<C::Database>,
    (String,): for<'r> sqlx::FromRow<'r, <C::Database as sqlx::Database>::Row>,
{
    let exists: Option<(String,)> = sqlx::query_as(table_exists)
        .fetch_optional(&mut *db)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let rows: Vec<(String,)> = sqlx::query_as("SELECT version_num FROM alembic_version")
        .fetch_all(&mut *db)
        .await?;
    Ok(rows.into_iter().next().map(|(revision,)| revision))
}
