//! JupyterHub's database URLs (SQLAlchemy style: `sqlite:///jupyterhub.sqlite`,
//! `postgresql+psycopg2://user:password@host:5432/jupyterhub`, `mysql+pymysql://...`), read
//! into what sqlx connects with. The password never leaves this type in text: `Display` and
//! `Debug` show it as `***`.

use std::fmt;
use std::path::PathBuf;

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
    pub host: String,
    pub port: Option<u16>,
    pub database: String,
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
    Malformed(String, &'static str),
}

impl ServerUrl {
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The same server, another database on it.
    pub fn with_database(&self, database: &str) -> ServerUrl {
        ServerUrl {
            database: database.to_string(),
            ..self.clone()
        }
    }

    fn redacted(&self, scheme: &str) -> String {
        let password = if self.password.is_some() { ":***" } else { "" };
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        format!(
            "{scheme}://{}{password}@{}{port}/{}",
            self.user, self.host, self.database
        )
    }
}

impl DatabaseUrl {
    pub fn parse(text: &str) -> Result<DatabaseUrl, UrlError> {
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| UrlError::UnknownScheme(redact(text)))?;
        let dialect = scheme.split('+').next().unwrap_or(scheme);
        match dialect {
            "sqlite" => {
                // sqlite:///relative.sqlite and sqlite:////absolute/path.sqlite, as SQLAlchemy reads them.
                let path = rest.strip_prefix('/').unwrap_or(rest);
                let path = path.split('?').next().unwrap_or(path);
                if path.is_empty() || path == ":memory:" {
                    return Err(UrlError::NoDatabase(text.to_string()));
                }
                Ok(DatabaseUrl::Sqlite {
                    path: PathBuf::from(path),
                })
            }
            "postgresql" | "postgres" => Ok(DatabaseUrl::Postgres(server(rest, text)?)),
            "mysql" | "mariadb" => Ok(DatabaseUrl::Mysql(server(rest, text)?)),
            _ => Err(UrlError::UnknownScheme(redact(text))),
        }
    }

    /// The URL sqlx connects with (password included: never print it).
    pub fn sqlx_url(&self) -> String {
        match self {
            DatabaseUrl::Sqlite { path } => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(s) => server_sqlx_url("postgres", s),
            DatabaseUrl::Mysql(s) => server_sqlx_url("mysql", s),
        }
    }
}

fn server_sqlx_url(scheme: &str, s: &ServerUrl) -> String {
    let credentials = match &s.password {
        Some(password) => format!("{}:{}", encode(&s.user), encode(password)),
        None => encode(&s.user),
    };
    let port = s.port.map(|p| format!(":{p}")).unwrap_or_default();
    format!(
        "{scheme}://{credentials}@{}{port}/{}",
        s.host,
        encode(&s.database)
    )
}

fn server(rest: &str, whole: &str) -> Result<ServerUrl, UrlError> {
    let malformed = |why| UrlError::Malformed(redact(whole), why);
    let rest = rest.split('?').next().unwrap_or(rest);
    let (authority, database) = rest
        .split_once('/')
        .ok_or_else(|| UrlError::NoDatabase(redact(whole)))?;
    if database.is_empty() {
        return Err(UrlError::NoDatabase(redact(whole)));
    }
    let (credentials, host_port) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    let (user, password) = match credentials {
        Some(c) => match c.split_once(':') {
            Some((u, p)) => (decode(u), Some(decode(p))),
            None => (decode(c), None),
        },
        None => (String::new(), None),
    };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            Some(
                p.parse()
                    .map_err(|_| malformed("the port is not a number"))?,
            ),
        ),
        None => (host_port.to_string(), None),
    };
    Ok(ServerUrl {
        user,
        password,
        host,
        port,
        database: decode(database),
    })
}

/// The URL with its password replaced by `***`, for messages.
pub fn redact(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    let Some((credentials, after)) = rest.split_once('@') else {
        return text.to_string();
    };
    match credentials.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{after}"),
        None => text.to_string(),
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(high * 16 + low);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(digit: u8) -> Option<u8> {
    (digit as char).to_digit(16).map(|d| d as u8)
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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
        assert_eq!(
            url.sqlx_url(),
            "postgres://hub:s%40cret@db.example:5433/jupyterhub"
        );
        let url = DatabaseUrl::parse("mysql+pymysql://hub:pw@127.0.0.1/jupyterhub?charset=utf8mb4")
            .expect("url");
        assert_eq!(url.sqlx_url(), "mysql://hub:pw@127.0.0.1/jupyterhub");
    }

    #[test]
    fn never_shows_the_password() {
        let url = DatabaseUrl::parse("postgresql://hub:hunter2@localhost/jupyterhub").expect("url");
        assert_eq!(url.to_string(), "postgresql://hub:***@localhost/jupyterhub");
        assert!(!format!("{url:?}").contains("hunter2"));
        let error = DatabaseUrl::parse("oracle://hub:hunter2@localhost/x").expect_err("unknown");
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
            DatabaseUrl::parse("postgresql://hub@localhost"),
            Err(UrlError::NoDatabase(_))
        ));
        assert!(matches!(
            DatabaseUrl::parse("postgresql://h:x@localhost:port/db"),
            Err(UrlError::Malformed(..))
        ));
    }
}
