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
    let sql = "SELECT version_num FROM alembic_version";
    let rows: Vec<(String,)> = match url {
        DatabaseUrl::Sqlite { path } => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true);
            let mut db = sqlx::SqliteConnection::connect_with(&options)
                .await
                .map_err(connect)?;
            let exists: Option<(String,)> = sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'alembic_version'",
            )
            .fetch_optional(&mut db)
            .await
            .map_err(query_error)?;
            if exists.is_none() {
                return Ok(None);
            }
            sqlx::query_as(sql)
                .fetch_all(&mut db)
                .await
                .map_err(query_error)?
        }
        DatabaseUrl::Postgres(server) => {
            let options = server.pg_options().map_err(connect)?;
            let mut db = sqlx::PgConnection::connect_with(&options)
                .await
                .map_err(connect)?;
            let exists: Option<(String,)> =
                sqlx::query_as("SELECT table_name::text FROM information_schema.tables WHERE table_name = 'alembic_version'")
                    .fetch_optional(&mut db)
                    .await
                    .map_err(query_error)?;
            if exists.is_none() {
                return Ok(None);
            }
            sqlx::query_as(sql)
                .fetch_all(&mut db)
                .await
                .map_err(query_error)?
        }
        DatabaseUrl::Mysql(server) => {
            let options = server.mysql_options().map_err(connect)?;
            let mut db = sqlx::MySqlConnection::connect_with(&options)
                .await
                .map_err(connect)?;
            let exists: Option<(String,)> = sqlx::query_as(
                "SELECT CAST(table_name AS CHAR) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'alembic_version'",
            )
            .fetch_optional(&mut db)
            .await
            .map_err(query_error)?;
            if exists.is_none() {
                return Ok(None);
            }
            sqlx::query_as(sql)
                .fetch_all(&mut db)
                .await
                .map_err(query_error)?
        }
    };
    Ok(rows.into_iter().next().map(|(r,)| r))
}
