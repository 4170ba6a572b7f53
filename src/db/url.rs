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
    let url = Url::parse(text).map_err(|e| malformed(e.to_string()))?;
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

/// The URL with its password replaced by `***`, for messages. A URL the `url` crate cannot read
/// loses everything before its `@`.
pub fn redact(text: &str) -> String {
    match Url::parse(text) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => match text.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, after)) => format!("{scheme}://***@{after}"),
                None => text.to_string(),
            },
            None => text.to_string(),
        },
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
mod tests {
    use super::*;
    use sqlx::mysql::MySqlSslMode;
    use sqlx::postgres::PgSslMode;

    fn server_of(text: &str) -> ServerUrl {
        match DatabaseUrl::parse(text).expect(text) {
            DatabaseUrl::Postgres(s) | DatabaseUrl::Mysql(s) => s,
            DatabaseUrl::Sqlite { .. } => panic!("{text} read as SQLite"),
        }
    }

    #[test]
    fn reads_jupyterhub_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///jupyterhub.sqlite"),
            Ok(DatabaseUrl::Sqlite {
                path: "jupyterhub.sqlite".into()
            })
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:////srv/jupyterhub/jupyterhub.sqlite"),
            Ok(DatabaseUrl::Sqlite {
                path: "/srv/jupyterhub/jupyterhub.sqlite".into()
            })
        );
        let url =
            DatabaseUrl::parse("postgresql+psycopg2://hub:s%40cret@db.example:5433/jupyterhub")
                .expect("url");
        let DatabaseUrl::Postgres(server) = &url else {
            panic!("not postgres")
        };
        assert_eq!(
            (server.user.as_str(), server.password(), server.port),
            ("hub", Some("s@cret"), Some(5433))
        );
        let options = server.pg_options().expect("options");
        assert_eq!(
            (
                options.get_host(),
                options.get_port(),
                options.get_username(),
                options.get_database()
            ),
            ("db.example", 5433, "hub", Some("jupyterhub"))
        );
        let url = DatabaseUrl::parse("mysql+pymysql://hub:pw@127.0.0.1/jupyterhub?charset=utf8mb4")
            .expect("url");
        let DatabaseUrl::Mysql(server) = &url else {
            panic!("not mysql")
        };
        let options = server.mysql_options().expect("options");
        assert_eq!(
            (
                options.get_host(),
                options.get_username(),
                options.get_database(),
                options.get_charset()
            ),
            ("127.0.0.1", "hub", Some("jupyterhub"), "utf8mb4")
        );
    }

    #[test]
    fn keeps_sqlite_paths_as_sqlalchemy_reads_them() {
        for (text, path) in [
            (
                "sqlite:///../hub/jupyterhub.sqlite",
                "../hub/jupyterhub.sqlite",
            ),
            ("sqlite:///my hub.sqlite", "my hub.sqlite"),
            ("sqlite:////srv/a/../b.sqlite?mode=ro", "/srv/a/../b.sqlite"),
        ] {
            assert_eq!(
                DatabaseUrl::parse(text),
                Ok(DatabaseUrl::Sqlite { path: path.into() }),
                "{text}"
            );
        }
        // SQLAlchemy reads a host here and no database: an in-memory one.
        assert!(matches!(
            DatabaseUrl::parse("sqlite://jupyterhub.sqlite"),
            Err(UrlError::NoDatabase(_))
        ));
    }

    #[test]
    fn reads_ipv6_hosts() {
        let server = server_of("postgresql://u:p@[::1]:5432/db");
        assert_eq!((server.host.as_str(), server.port), ("::1", Some(5432)));
        assert_eq!(server.pg_options().expect("options").get_host(), "::1");
        let server = server_of("mysql://u:p@[2001:db8::7]/db");
        assert_eq!(server.host, "2001:db8::7");
        assert_eq!(
            server.mysql_options().expect("options").get_host(),
            "2001:db8::7"
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://u:p@[::1]:5432/db")
                .expect("url")
                .to_string(),
            "postgresql://u:***@[::1]:5432/db"
        );
    }

    #[test]
    fn keeps_query_parameters_and_the_connect_options_honour_them() {
        let server = server_of("postgresql://hub:pw@db.example/jupyterhub?sslmode=require");
        assert_eq!(server.param("sslmode"), Some("require"));
        let options = server.pg_options().expect("options");
        assert!(matches!(options.get_ssl_mode(), PgSslMode::Require));
        let server = server_of("postgresql://hub:pw@[::1]/jupyterhub?sslmode=verify-full");
        let options = server.pg_options().expect("options");
        assert!(matches!(options.get_ssl_mode(), PgSslMode::VerifyFull));
        assert_eq!(options.get_host(), "::1");
        // Without the parameter, sqlx's default.
        let server = server_of("postgresql://hub:pw@db.example/jupyterhub");
        assert!(matches!(
            server.pg_options().expect("options").get_ssl_mode(),
            PgSslMode::Prefer
        ));

        let server = server_of("mysql://hub:pw@db.example/jupyterhub?ssl-mode=REQUIRED");
        assert!(matches!(
            server.mysql_options().expect("options").get_ssl_mode(),
            MySqlSslMode::Required
        ));
        assert_eq!(
            DatabaseUrl::Mysql(server.with_database("other")).to_string(),
            "mysql://hub:***@db.example/other?ssl-mode=REQUIRED"
        );

        let error = DatabaseUrl::parse("postgresql://hub:hunter2@h/db?sslmode=sometimes")
            .expect_err("an sslmode sqlx does not know");
        assert!(matches!(error, UrlError::Malformed(..)), "{error}");
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }

    #[test]
    fn decodes_percent_encoded_parts() {
        let server =
            server_of("postgresql://hub%2Badmin:p%40ss%3Aw%2Fo%25rd@localhost/jupyter%2Dhub");
        assert_eq!(server.user, "hub+admin");
        assert_eq!(server.password(), Some("p@ss:w/o%rd"));
        assert_eq!(server.database, "jupyter-hub");
        // sqlx gets the same password back: its URL carries it encoded once.
        let options = server.pg_options().expect("options");
        assert_eq!(options.get_username(), "hub+admin");
        let lossy = options.to_url_lossy();
        let encoded = lossy.password().expect("a password");
        assert_eq!(
            percent_decode_str(encoded).decode_utf8().expect("utf-8"),
            "p@ss:w/o%rd"
        );
    }

    #[test]
    fn never_shows_the_password() {
        let url = DatabaseUrl::parse("postgresql://hub:hunter2@localhost/jupyterhub").expect("url");
        assert_eq!(url.to_string(), "postgresql://hub:***@localhost/jupyterhub");
        assert!(!format!("{url:?}").contains("hunter2"));
        let DatabaseUrl::Postgres(server) = &url else {
            panic!("not postgres")
        };
        assert!(!format!("{server:?}").contains("hunter2"));
        let url = DatabaseUrl::parse(
            "postgresql://hub@localhost/jupyterhub?password=hunter2&sslmode=disable",
        )
        .expect("url");
        assert!(!url.to_string().contains("hunter2"), "{url}");
        assert!(!format!("{url:?}").contains("hunter2"), "{url:?}");
        let error = DatabaseUrl::parse("oracle://hub:hunter2@localhost/x").expect_err("unknown");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        let error = DatabaseUrl::parse("postgresql://hub:hunter2@local host/x").expect_err("bad");
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert_eq!(redact("mysql://a:b@h/d"), "mysql://a:***@h/d");
    }

    #[test]
    fn refuses_urls_without_a_database() {
        assert!(matches!(
            DatabaseUrl::parse("sqlite://"),
            Err(UrlError::NoDatabase(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("sqlite:///:memory:"),
            Err(UrlError::NoDatabase(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgresql://hub@localhost"),
            Err(UrlError::NoDatabase(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgresql://h:x@localhost:port/db"),
            Err(UrlError::Malformed(..))
        ));
        assert!(matches!(
            DatabaseUrl::parse("jupyterhub.sqlite"),
            Err(UrlError::UnknownScheme(_))
        ));
    }
}
