//! JupyterHub's database URLs (SQLAlchemy style: `sqlite:///jupyterhub.sqlite`,
//! `postgresql+psycopg2://user:password@host:5432/jupyterhub?sslmode=require`,
//! `mysql+pymysql://...`), read with the `url` crate into what sqlx connects with (its connect
//! options, query parameters included). The password never leaves this type in text: `Display`
//! and `Debug` show it as `***`.

use std::fmt;
use std::path::PathBuf;

use percent_encoding::{NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sqlx::ConnectOptions;
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;
use url::{Host, Url};

#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite { path: PathBuf },
    Postgres(ServerUrl),
    Mysql(ServerUrl),
}

#[derive(Clone, PartialEq, Eq)]
pub struct ServerUrl {
    pub user: String,
    password: Option<String>,
    /// A host name or an IP address; an IPv6 address without its brackets.
    pub host: String,
    pub port: Option<u16>,
    pub database: String,
    /// The query parameters (`sslmode=require`), handed to sqlx's connect options.
    params: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error(
        "{0} is not a database URL hubgrade knows; use sqlite:///PATH, postgresql://... or mysql://..."
    )]
    UnknownScheme(String),
    #[error("{0} does not name a database")]
    NoDatabase(String),
    #[error("{0}: {1}")]
    Malformed(String, String),
}

impl ServerUrl {
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The value of query parameter `key` (`sslmode`), if the URL has it.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The same server, another database on it.
    pub fn with_database(&self, database: &str) -> ServerUrl {
        ServerUrl {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// What sqlx connects to PostgreSQL with (password included: never print it).
    pub fn pg_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let options = PgConnectOptions::from_url(&self.sqlx_url("postgres")?)?;
        // sqlx takes the host from the URL with an IPv6 address's brackets.
        Ok(match self.host.contains(':') {
            true => options.host(&self.host),
            false => options,
        })
    }

    /// What sqlx connects to MySQL or MariaDB with (password included: never print it).
    pub fn mysql_options(&self) -> Result<MySqlConnectOptions, sqlx::Error> {
        let options = MySqlConnectOptions::from_url(&self.sqlx_url("mysql")?)?;
        Ok(match self.host.contains(':') {
            true => options.host(&self.host),
            false => options,
        })
    }

    /// The URL in sqlx's own form: its scheme, everything percent-encoded, the parameters kept.
    fn sqlx_url(&self, scheme: &str) -> Result<Url, sqlx::Error> {
        let encode = |text: &str| utf8_percent_encode(text, NON_ALPHANUMERIC).to_string();
        let credentials = match &self.password {
            Some(password) => format!("{}:{}", encode(&self.user), encode(password)),
            None => encode(&self.user),
        };
        let text = format!(
            "{scheme}://{credentials}@{}{}/{}",
            self.host_in_url(),
            self.port.map(|p| format!(":{p}")).unwrap_or_default(),
            encode(&self.database)
        );
        let mut url = Url::parse(&text).map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
        if !self.params.is_empty() {
            url.query_pairs_mut().extend_pairs(&self.params);
        }
        Ok(url)
    }

    fn host_in_url(&self) -> String {
        match self.host.contains(':') {
            true => format!("[{}]", self.host),
            false => self.host.clone(),
        }
    }

    fn redacted(&self, scheme: &str) -> String {
        let password = if self.password.is_some() { ":***" } else { "" };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let mut text = format!(
            "{scheme}://{}{password}@{}{port}/{}",
            self.user,
            self.host_in_url(),
            self.database
        );
        for (i, (key, value)) in self.params.iter().enumerate() {
            let value = match key.to_ascii_lowercase().contains("password") {
                true => "***",
                false => value,
            };
            text.push(if i == 0 { '?' } else { '&' });
            text.push_str(&format!("{key}={value}"));
        }
        text
    }
}

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<DatabaseUrl, UrlError> {
        let unknown = || UrlError::UnknownScheme(redact(text));
        let (scheme, rest) = text.split_once("://").ok_or_else(unknown)?;
        let dialect = scheme.split('+').next().unwrap_or(scheme);
        match dialect {
            "sqlite" => sqlite_path(rest)
                .map(|path| DatabaseUrl::Sqlite { path })
                .ok_or_else(|| UrlError::NoDatabase(text.to_string())),
            "postgresql" | "postgres" => {
                let server = server(text)?;
                checked(
                    text,
                    server.pg_options().map(|_| DatabaseUrl::Postgres(server)),
                )
            }
            "mysql" | "mariadb" => {
                let server = server(text)?;
                checked(
                    text,
                    server.mysql_options().map(|_| DatabaseUrl::Mysql(server)),
                )
            }
            _ => Err(unknown()),
        }
    }
}

/// A URL sqlx refuses (an unknown `sslmode`, say) is refused when it is read, not at connection.
fn checked(text: &str, url: Result<DatabaseUrl, sqlx::Error>) -> Result<DatabaseUrl, UrlError> {
    url.map_err(|e| UrlError::Malformed(redact(text), e.to_string()))
}

/// The file of `sqlite:///relative.sqlite` or `sqlite:////absolute/path.sqlite`, read as
/// SQLAlchemy reads it: everything after the third slash, as written. Not through the `url`
/// crate, which would resolve `..` (`sqlite:///../hub.sqlite` is not `hub.sqlite`).
fn sqlite_path(after_scheme: &str) -> Option<PathBuf> {
    let path = after_scheme.strip_prefix('/')?;
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

fn server(text: &str) -> Result<ServerUrl, UrlError> {
    let malformed = |why: String| UrlError::Malformed(redact(text), why);
    let url = Url::parse(&with_encoded_credentials(text)).map_err(|e| malformed(e.to_string()))?;
    let decode = |part: &str| {
        percent_decode_str(part)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| malformed("a part is not UTF-8 once percent-decoded".into()))
    };
    let host = match url.host() {
        Some(Host::Domain(name)) => decode(name)?,
        Some(Host::Ipv4(address)) => address.to_string(),
        Some(Host::Ipv6(address)) => address.to_string(),
        None => String::new(),
    };
    let database = decode(url.path().trim_start_matches('/'))?;
    if database.is_empty() {
        return Err(UrlError::NoDatabase(redact(text)));
    }
    Ok(ServerUrl {
        user: decode(url.username())?,
        password: url.password().map(decode).transpose()?,
        host,
        port: url.port(),
        database,
        params: url.query_pairs().into_owned().collect(),
    })
}

/// `text` with the user and password of its credentials percent-encoded, so that a password
/// written as it is (`p@ss/w?rd#1`, which a URL must encode but people do not) stays the
/// password (see [`split_credentials`]). Parts already percent-encoded stay as they are.
fn with_encoded_credentials(text: &str) -> String {
    let Some((scheme, credentials, after)) = split_credentials(text) else {
        return text.to_string();
    };
    let encode = |part: &str| {
        let decoded = percent_decode_str(part).decode_utf8_lossy().into_owned();
        utf8_percent_encode(&decoded, NON_ALPHANUMERIC).to_string()
    };
    let credentials = match credentials.split_once(':') {
        Some((user, password)) => format!("{}:{}", encode(user), encode(password)),
        None => encode(credentials),
    };
    format!("{scheme}://{credentials}@{after}")
}

/// `scheme://credentials@rest` taken apart; `None` without a scheme or credentials. The
/// credentials end at the last `@`: a password written unencoded may hold `@`, `/`, `?` and
/// `#`, and then looks just like a host, a path and a query, so in doubt more is taken for the
/// password, and hidden, never less (an `@` in a query must be written `%40`).
fn split_credentials(text: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = text.split_once("://")?;
    let (credentials, after) = rest.rsplit_once('@')?;
    Some((scheme, credentials, after))
}

/// The URL with its password replaced by `***`, for messages, whatever the password holds
/// (an `@`, a `/`, a `?`): everything between the user's `:` and the last `@`.
pub fn redact(text: &str) -> String {
    match split_credentials(text) {
        Some((scheme, credentials, after)) => match credentials.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{after}"),
            None => text.to_string(),
        },
        None => text.to_string(),
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite { path } => write!(f, "sqlite:///{}", path.display()),
            DatabaseUrl::Postgres(s) => f.write_str(&s.redacted("postgresql")),
            DatabaseUrl::Mysql(s) => f.write_str(&s.redacted("mysql")),
        }
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({self})")
    }
}

impl fmt::Debug for ServerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServerUrl({})", self.redacted("db"))
    }
}

#[cfg(test)]
mod tests;
