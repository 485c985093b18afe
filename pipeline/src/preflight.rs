//! `sluice validate`'s preflight: after the config checks, it reaches every
//! dependency the config names (broker, indexer, database, webhook, LLM
//! endpoint, the admin server's address) and says, for each, what it found or why it
//! failed. Nothing is written: no topic, table, file or case is created.
//!
//! Errors never carry a secret: connection URLs are shown as host, port and
//! database only, and keys are never echoed.

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, InputKind, StoreKind};
use crate::store::StoreBackend;

/// One dependency and what reaching it gave.
#[derive(Debug)]
pub struct Check {
    /// `broker`, `indexer`, `store`, `checkpoints`, `webhook`, `llm`, `admin`, `input`.
    pub what: &'static str,
    /// Where, without credentials.
    pub target: String,
    pub result: Result<String, String>,
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// Reaches everything `config` uses.
pub fn run(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    if let Some(p) = &config.input.path
        && p != "-"
        && config.input_kind() != InputKind::Kafka
    {
        let result = match std::fs::metadata(p) {
            Ok(m) => Ok(format!("{} bytes", m.len())),
            Err(_) if config.input.follow => Ok("not there yet: followed from when it appears".into()),
            Err(e) => Err(e.to_string()),
        };
        checks.push(Check { what: "input", target: p.clone(), result });
    }
    if config.input_kind() == InputKind::Kafka {
        checks.push(Check {
            what: "broker",
            target: config.kafka.brokers.clone(),
            result: sluice_connectors::kafka::check_broker(&config.kafka).map_err(|e| e.to_string()),
        });
    }
    if config.input_kind() == InputKind::OpenSearch {
        checks.push(Check {
            what: "indexer",
            target: config.opensearch.url.clone(),
            result: sluice_connectors::opensearch::check_indexer(&config.opensearch).map_err(|e| e.to_string()),
        });
    }
    if config.store_enabled() {
        let s = &config.store;
        checks.push(match s.backend {
            StoreBackend::Sqlite => {
                let path = if s.path.is_empty() {
                    Path::new(&config.checkpoint.dir).join("sluice.db")
                } else {
                    Path::new(&s.path).to_path_buf()
                };
                Check { what: "store", target: path.display().to_string(), result: writable(&path) }
            }
            StoreBackend::Postgres => postgres("store", &s.postgres_url_env),
        });
    }
    if config.checkpoints_enabled() {
        let c = &config.checkpoint;
        checks.push(match c.store {
            StoreKind::Dir => {
                let dir = Path::new(&c.dir);
                Check { what: "checkpoints", target: c.dir.clone(), result: writable(&dir.join("probe")) }
            }
            StoreKind::Postgres => postgres("checkpoints", &c.postgres_url_env),
        });
    }
    let w = &config.sinks.webhook;
    if !w.url.is_empty() {
        let secret = std::env::var(&w.secret_env).ok().filter(|s| !s.is_empty());
        let result = match secret {
            None => Err(format!("${} (the signing secret) is not set", w.secret_env)),
            Some(_) => http_reachable("HEAD", &w.url, None),
        };
        checks.push(Check { what: "webhook", target: origin(&w.url), result });
    }
    let l = &config.sinks.llm;
    if !l.base_url.is_empty() {
        let key = std::env::var(&l.api_key_env).ok().filter(|k| !k.is_empty());
        let url = format!("{}/models", l.base_url.trim_end_matches('/'));
        let result = http_reachable("GET", &url, key.as_deref()).and_then(|found| {
            if found.starts_with("HTTP 401") || found.starts_with("HTTP 403") {
                Err(format!("{found}: the API key (${}) was refused", l.api_key_env))
            } else {
                Ok(found)
            }
        });
        checks.push(Check { what: "llm", target: origin(&l.base_url), result });
    }
    if config.admin.enabled() {
        let result = match std::net::TcpListener::bind(&config.admin.listen) {
            Ok(_) => Ok("free to listen on".into()),
            // As at start: the default address taken is a warning there.
            Err(e) if config.admin.listen == crate::admin::DEFAULT_LISTEN => {
                Ok(format!("in use ({e}): sluice run would go on without the admin server"))
            }
            Err(e) => Err(format!("cannot listen: {e}")),
        };
        checks.push(Check { what: "admin", target: config.admin.listen.clone(), result });
    }
    checks
}

/// A URL's scheme, host and port only: webhook paths often carry a secret
/// (as chat webhooks do), and userinfo always does.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if scheme.is_empty() { host.to_string() } else { format!("{scheme}://{host}") }
}

/// Whether `path` (a file that may not exist yet) could be written: its
/// directory exists and is writable, or could be created.
fn writable(path: &Path) -> Result<String, String> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut existing = dir;
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    let meta = std::fs::metadata(existing).map_err(|e| format!("{}: {e}", existing.display()))?;
    if meta.permissions().readonly() {
        return Err(format!("{} is read-only", existing.display()));
    }
    // A real write test, removed at once (in the existing directory).
    let probe = existing.join(format!(".sluice-preflight-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(|e| format!("cannot write in {}: {e}", existing.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(if existing == dir { "writable".into() } else { format!("{} will be created", dir.display()) })
}

/// Connects to PostgreSQL with the URL in `$var` and runs `SELECT 1`.
fn postgres(what: &'static str, var: &str) -> Check {
    let Some(url) = std::env::var(var).ok().filter(|u| !u.is_empty()) else {
        return Check { what, target: format!("${var}"), result: Err(format!("${var} is not set")) };
    };
    let target = match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(o) => format!("postgres://{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or("")),
        Err(_) => return Check { what, target: format!("${var}"), result: Err("not a PostgreSQL URL".into()) },
    };
    let result = (|| {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        runtime.block_on(async {
            use sqlx::Connection as _;
            let connect = sqlx::postgres::PgConnection::connect(&url);
            let mut c = tokio::time::timeout(TIMEOUT, connect)
                .await
                .map_err(|_| format!("no answer within {TIMEOUT:?}"))?
                // sqlx's messages name host and user, never the password.
                .map_err(|e| e.to_string())?;
            let version: String =
                sqlx::query_scalar("SHOW server_version").fetch_one(&mut c).await.map_err(|e| e.to_string())?;
            let _ = c.close().await;
            Ok(format!("PostgreSQL {version}"))
        })
    })();
    Check { what, target, result }
}

/// Sends `method` to `url`; any HTTP answer means reachable (its status is
/// reported); no answer is the error.
fn http_reachable(method: &str, url: &str, bearer: Option<&str>) -> Result<String, String> {
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(TIMEOUT)).http_status_as_error(false).build().into();
    let response = match (method, bearer) {
        ("HEAD", _) => agent.head(url).call(),
        (_, Some(key)) => agent.get(url).header("Authorization", format!("Bearer {key}")).call(),
        (_, None) => agent.get(url).call(),
    };
    match response {
        Ok(r) => Ok(format!("HTTP {} to {method}", r.status().as_u16())),
        // An error may quote the URL, whose path may hold a secret: only
        // its origin is kept. Headers are never quoted.
        Err(e) => Err(without(&e.to_string(), url)),
    }
}

/// `text` with every occurrence of `url` replaced by its origin.
fn without(text: &str, url: &str) -> String {
    text.replace(url, &origin(url))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_show_no_path_or_credentials() {
        assert_eq!(origin("https://hooks.example.com/services/T000/B000/secret-token"), "https://hooks.example.com");
        assert_eq!(origin("http://user:pw@10.0.0.5:8080/v1?key=abc"), "http://10.0.0.5:8080");
        assert_eq!(origin("http://127.0.0.1:11434/v1"), "http://127.0.0.1:11434");
    }
}
