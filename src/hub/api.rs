//! JupyterHub's REST API, as far as the operator uses it: whether the hub is healthy, which
//! version it runs, which users' servers are active, and stopping one. The token travels only
//! in the `Authorization` header; no error message carries it.

use std::sync::LazyLock;
use std::time::Duration;

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use url::Url;

/// How long one request may take: the hub answers these from memory.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle connection to a hub is kept for the next request.
const IDLE_CONNECTION: Duration = Duration::from_secs(5);
/// Users per page when listing (JupyterHub's default page size caps it anyway).
const PAGE: usize = 200;

/// A client of one hub's REST API.
#[derive(Clone)]
pub struct HubApi {
    /// The hub's root: `http://<pod>:8081/` plus z2jh's `hub.baseUrl`, ending in `/`.
    root: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl std::fmt::Debug for HubApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubApi")
            .field("root", &self.root.as_str())
            .field("token", &self.token.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

#[derive(Deserialize)]
struct Info {
    version: String,
}

#[derive(Deserialize)]
struct User {
    name: String,
    /// Present with the `read:servers` scope; with `state=active`, the active ones only.
    #[serde(default)]
    servers: Option<std::collections::BTreeMap<String, serde_json::Value>>,
}

/// A page of users, as JupyterHub (2.0 and later) sends it when asked for pagination.
#[derive(Deserialize)]
struct Page {
    items: Vec<User>,
    #[serde(rename = "_pagination")]
    pagination: Option<Pagination>,
}

#[derive(Deserialize)]
struct Pagination {
    next: Option<serde_json::Value>,
}

/// The HTTP client every [`HubApi`] shares. Making one loads the TLS roots and caches (about
/// 1 MiB each, heaptrack says): one per reconcile, a fleet's concurrent reconciles held one
/// each. Idle connections are kept only briefly; a hub's pod is often replaced.
static HTTP: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(IDLE_CONNECTION)
        .build()
        .unwrap_or_default()
});

impl HubApi {
    /// `root`: where the hub serves (`http://10.244.0.7:8081/`, with its base URL, if any).
    pub fn new(root: Url, token: Option<String>) -> HubApi {
        HubApi {
            root,
            token,
            http: HTTP.clone(),
        }
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// `GET /hub/health`: 200 when the hub is up.
    pub async fn health(&self) -> Result<(), String> {
        self.get("hub/health").await.map(drop)
    }

    /// The JupyterHub version `GET /hub/api` reports (no token needed).
    pub async fn version(&self) -> Result<String, String> {
        let body = self.get("hub/api").await?;
        serde_json::from_str::<Info>(&body)
            .map(|info| info.version)
            .map_err(|e| format!("/hub/api answered without a version: {e}"))
    }

    /// The active users' servers: `alice` for a user's default server, `alice/gpu` for a named
    /// one. Needs the scopes `list:users` and `read:servers`.
    pub async fn active_servers(&self) -> Result<Vec<String>, String> {
        let mut servers = Vec::new();
        let mut offset = 0;
        loop {
            let path = format!("hub/api/users?state=active&offset={offset}&limit={PAGE}");
            let body = self.get(&path).await?;
            // Paginated (JupyterHub 2.0 and later, as asked), else a plain list.
            let page: Page = serde_json::from_str(&body)
                .or_else(|_| {
                    serde_json::from_str::<Vec<User>>(&body).map(|items| Page {
                        items,
                        pagination: None,
                    })
                })
                .map_err(|e| format!("/hub/api/users answered what is not a user list: {e}"))?;
            let count = page.items.len();
            for user in page.items {
                let Some(active) = user.servers else {
                    return Err(format!(
                        "/hub/api/users shows no servers for {}: the token needs the scope read:servers",
                        user.name
                    ));
                };
                for name in active.keys() {
                    servers.push(match name.as_str() {
                        "" => user.name.clone(),
                        named => format!("{}/{named}", user.name),
                    });
                }
            }
            let more = page
                .pagination
                .and_then(|p| p.next)
                .is_some_and(|n| !n.is_null());
            if !more || count == 0 {
                return Ok(servers);
            }
            offset += count;
        }
    }

    /// Stops a user's server (`alice` or `alice/gpu`); one that is no longer running counts as
    /// stopped. Needs the scope `servers`.
    pub async fn stop_server(&self, server: &str) -> Result<(), String> {
        let encode = |part: &str| utf8_percent_encode(part, NON_ALPHANUMERIC).to_string();
        let path = match server.split_once('/') {
            None => format!("hub/api/users/{}/server", encode(server)),
            Some((user, name)) => {
                format!("hub/api/users/{}/servers/{}", encode(user), encode(name))
            }
        };
        let url = self.url(&path)?;
        let response = self
            .authorized(self.http.delete(url.clone()))
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            // "not running", or the user or server is gone: nothing left to stop.
            400 | 404 => Ok(()),
            code => Err(format!(
                "{} answered {code}{}",
                url.path(),
                scope_hint(code)
            )),
        }
    }

    fn url(&self, path: &str) -> Result<Url, String> {
        self.root
            .join(path)
            .map_err(|e| format!("the hub's API address {} with {path}: {e}", self.root))
    }

    fn authorized(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(token) => request.header(reqwest::header::AUTHORIZATION, format!("token {token}")),
            None => request,
        }
    }

    async fn get(&self, path: &str) -> Result<String, String> {
        let url = self.url(path)?;
        let request = self.http.get(url.clone()).header(
            reqwest::header::ACCEPT,
            "application/jupyterhub-pagination+json",
        );
        let response = self
            .authorized(request)
            .send()
            .await
            .map_err(|e| unreachable(&url, &e))?;
        let code = response.status().as_u16();
        if !(200..300).contains(&code) {
            return Err(format!(
                "{} answered {code}{}",
                url.path(),
                scope_hint(code)
            ));
        }
        response
            .text()
            .await
            .map_err(|e| format!("reading {}: {e}", url.path()))
    }
}

/// Why a request got no answer, naming the address (never the token, which is in a header).
fn unreachable(url: &Url, error: &reqwest::Error) -> String {
    let why = if error.is_timeout() {
        "no answer within 5 s".to_string()
    } else if error.is_connect() {
        "cannot connect (is the hub running, and does a NetworkPolicy let the operator in?)"
            .to_string()
    } else {
        error.to_string()
    };
    format!("{}: {why}", url)
}

fn scope_hint(code: u16) -> &'static str {
    match code {
        401 => " (the token is not valid for this hub)",
        403 => {
            " (the token lacks a scope: it needs list:users and read:servers, or servers to stop them)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::HubApi;

    #[test]
    fn the_token_never_shows_in_debug_output() {
        let api = HubApi::new(
            "http://10.0.0.1:8081/".parse().expect("url"),
            Some("s3cret-token".into()),
        );
        let shown = format!("{api:?}");
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("10.0.0.1:8081"), "{shown}");
    }
}
