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
    let url = DatabaseUrl::parse("postgresql+psycopg2://hub:s%40cret@db.example:5433/jupyterhub")
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
    let server = server_of("postgresql://hub%2Badmin:p%40ss%3Aw%2Fo%25rd@localhost/jupyter%2Dhub");
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

/// Passwords as people write them, unencoded: whatever they hold, they are the password (the
/// connection gets them whole) and no part of them shows in a message.
#[test]
fn a_password_written_unencoded_is_read_whole_and_never_shown() {
    for password in [
        "p@ss", "Zx@q?w", "a/b@c", "q#1@2", "x:y@z", "w@h/db?x", "%zz@1",
    ] {
        for (scheme, query) in [
            ("postgresql", "sslmode=disable"),
            ("mysql+pymysql", "ssl-mode=disabled"),
        ] {
            let text = format!("{scheme}://hub:{password}@db.example.org:5432/jupyterhub?{query}");
            let shown = redact(&text);
            assert_eq!(
                shown,
                format!("{scheme}://hub:***@db.example.org:5432/jupyterhub?{query}")
            );
            let url = DatabaseUrl::parse(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let server = match &url {
                DatabaseUrl::Postgres(s) | DatabaseUrl::Mysql(s) => s,
                DatabaseUrl::Sqlite { .. } => panic!("not a server"),
            };
            assert_eq!(server.password(), Some(password), "{text}");
            assert_eq!(server.host, "db.example.org");
            assert_eq!(server.database, "jupyterhub");
            let (key, value) = query.split_once('=').expect("a parameter");
            assert_eq!(server.param(key), Some(value));
            for shown in [url.to_string(), format!("{url:?}"), format!("{server:?}")] {
                assert!(!shown.contains(password), "{shown} shows {password}");
            }
        }
    }
    // An @ in the query that could end the credentials is taken as theirs (a password
    // `pw@db/jupyterhub?application_name=a` written unencoded looks just like it): more is
    // hidden, never less. Written as %40, it is the query's.
    let url = "postgresql://hub:pw@db/jupyterhub?application_name=a@b";
    assert_eq!(redact(url), "postgresql://hub:***@b");
    let url = "postgresql://hub:pw@db/jupyterhub?application_name=a%40b";
    assert_eq!(
        redact(url),
        "postgresql://hub:***@db/jupyterhub?application_name=a%40b"
    );
    let DatabaseUrl::Postgres(server) = DatabaseUrl::parse(url).expect("url") else {
        panic!("not postgres")
    };
    assert_eq!(server.param("application_name"), Some("a@b"));
    // A URL refused for another reason does not show it either.
    let error = DatabaseUrl::parse("postgresql://hub:s3@cr?t@db").expect_err("no database");
    assert!(!error.to_string().contains("s3@cr?t"), "{error}");
    assert!(!error.to_string().contains("cr?t"), "{error}");
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
