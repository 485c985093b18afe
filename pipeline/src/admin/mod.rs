//! The admin HTTP server: liveness, readiness, Prometheus metrics, a JSON
//! API over the live pipeline and the store, its OpenAPI document, and the
//! status page.
//!
//! It runs on its own thread with its own single-threaded runtime, reading
//! the shared [`Metrics`] (and the store, on blocking threads), so nothing
//! it does slows the pipeline. `/`, `/health` and `/ready` are open (probes
//! and the page's shell carry no data); everything else needs a bearer token
//! once one is configured, and always when the server listens beyond
//! loopback. A tenant-scoped token sees its own tenant only: any other
//! tenant is refused (403) and lists are cut to its own rows. `/metrics`
//! spans every tenant, so it takes the admin token.

mod api;
pub mod prometheus;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::thread::JoinHandle;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::{ComponentState, Metrics};
use crate::sinks::BudgetConfig;
use crate::store::Store;

/// The default address: loopback only, so no token is needed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

/// `[admin]` settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Where the server listens (`host:port`); empty turns it off. If the
    /// default address is taken, `sluice run` goes on without the server
    /// (with a warning); any other address that cannot be bound is an error.
    pub listen: String,
    /// The environment variable holding the admin token (every tenant, and
    /// `/metrics`). Required when `listen` is beyond loopback.
    pub token_env: String,
    /// Tenant-scoped tokens: tenant → the environment variable holding its
    /// token. Such a token reads that tenant's data only.
    pub tenant_token_envs: BTreeMap<String, String>,
    /// Tenants with their own `tenant` label in `/metrics` (the ones with
    /// the most alerts); the others are summed under `tenant="_other"`.
    pub max_tenant_series: usize,
    /// Clusters per tenant the live registry keeps for the API and the
    /// status page (the most recently reported).
    pub max_clusters_per_tenant: usize,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            token_env: "SLUICE_ADMIN_TOKEN".into(),
            tenant_token_envs: BTreeMap::new(),
            max_tenant_series: 100,
            max_clusters_per_tenant: 500,
        }
    }
}

impl AdminConfig {
    pub fn enabled(&self) -> bool {
        !self.listen.trim().is_empty()
    }

    /// Every problem, each naming its key. Reads the token variables: a
    /// server beyond loopback without its token is refused here.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !self.enabled() {
            return errors;
        }
        match resolve(&self.listen) {
            Err(e) => errors.push(format!("admin.listen = {:?}: {e}", self.listen)),
            Ok(addrs) => {
                let loopback = addrs.iter().all(|a| a.ip().is_loopback());
                if !loopback && env_token(&self.token_env).is_none() {
                    errors.push(format!(
                        "admin.listen = {:?} is beyond loopback: set the admin token in ${} (admin.token_env)",
                        self.listen, self.token_env
                    ));
                }
            }
        }
        for (tenant, var) in &self.tenant_token_envs {
            if env_token(var).is_none() {
                errors.push(format!("admin.tenant_token_envs.{tenant}: ${var} is not set"));
            }
        }
        if self.max_tenant_series == 0 {
            errors.push("admin.max_tenant_series must be at least 1".into());
        }
        if self.max_clusters_per_tenant == 0 {
            errors.push("admin.max_clusters_per_tenant must be at least 1".into());
        }
        errors
    }
}

fn resolve(listen: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs: Vec<SocketAddr> = listen.to_socket_addrs().map_err(|e| format!("not a host:port ({e})"))?.collect();
    if addrs.is_empty() {
        return Err("resolves to no address".into());
    }
    Ok(addrs)
}

fn env_token(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|t| !t.trim().is_empty())
}

/// Who a request is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Every tenant.
    Admin,
    /// One tenant only.
    Tenant(String),
}

/// The configured tokens, kept as SHA-256 digests (the secrets themselves
/// are not kept, and comparing digests leaks nothing about them).
#[derive(Clone, Default)]
struct Auth {
    admin: Option<[u8; 32]>,
    tenants: Vec<([u8; 32], String)>,
    /// No token at all and loopback only: every request is the admin.
    open: bool,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth").field("tenant_tokens", &self.tenants.len()).field("open", &self.open).finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.trim().as_bytes()).into()
}

impl Auth {
    fn from_config(config: &AdminConfig) -> Self {
        let admin = env_token(&config.token_env).map(|t| digest(&t));
        let tenants: Vec<([u8; 32], String)> = config
            .tenant_token_envs
            .iter()
            .filter_map(|(tenant, var)| env_token(var).map(|t| (digest(&t), tenant.clone())))
            .collect();
        let open = admin.is_none() && tenants.is_empty();
        Self { admin, tenants, open }
    }

    fn principal(&self, headers: &HeaderMap) -> Result<Principal, api::ApiError> {
        if self.open {
            return Ok(Principal::Admin);
        }
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| api::ApiError::new(StatusCode::UNAUTHORIZED, "a bearer token is required"))?;
        let d = digest(token);
        if self.admin == Some(d) {
            return Ok(Principal::Admin);
        }
        match self.tenants.iter().find(|(t, _)| *t == d) {
            Some((_, tenant)) => Ok(Principal::Tenant(tenant.clone())),
            None => Err(api::ApiError::new(StatusCode::UNAUTHORIZED, "unknown token")),
        }
    }
}

/// What the handlers share.
#[derive(Debug)]
pub struct AdminState {
    pub metrics: Arc<Metrics>,
    pub store: Option<Arc<Store>>,
    pub budget: BudgetConfig,
    pub max_tenant_series: usize,
    auth: Auth,
}

impl AdminState {
    /// The tokens come from the environment variables `config` names.
    pub fn new(config: &AdminConfig, metrics: Arc<Metrics>, store: Option<Arc<Store>>, budget: BudgetConfig) -> Self {
        Self { metrics, store, budget, max_tenant_series: config.max_tenant_series, auth: Auth::from_config(config) }
    }

    /// The tokens given here instead (for embedding and tests): an admin
    /// token, and `(tenant, token)` pairs. With none, access is open.
    pub fn with_tokens(mut self, admin: Option<&str>, tenants: &[(&str, &str)]) -> Self {
        let tenants: Vec<([u8; 32], String)> = tenants.iter().map(|(t, tok)| (digest(tok), t.to_string())).collect();
        self.auth = Auth { admin: admin.map(digest), open: admin.is_none() && tenants.is_empty(), tenants };
        self
    }
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct AdminServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
    /// Dropped here, after the server's thread ended: the store in it owns
    /// a runtime, which must not be dropped inside the server's runtime.
    _state: Arc<AdminState>,
}

impl AdminServer {
    /// Binds `listen` now (so a bad address fails at start) and serves on
    /// a thread of its own.
    pub fn start(listen: &str, state: AdminState) -> std::io::Result<AdminServer> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(state);
        let app = router(state.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = std::thread::Builder::new().name("sluice-admin".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::error!(error = %e, "admin server cannot listen");
                        return;
                    }
                };
                let shutdown = async {
                    let _ = rx.await;
                };
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, "admin server stopped");
                }
            });
        })?;
        Ok(AdminServer { addr, shutdown: Some(tx), handle: Some(handle), _state: state })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Every route. `/`, `/health` and `/ready` are open; the rest go through
/// [`authenticate`].
pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/tenants", get(api::tenants))
        .route("/api/v1/clusters", get(api::clusters))
        .route("/api/v1/clusters/{tenant}/{cluster_id}", get(api::cluster))
        .route("/api/v1/deferred", get(api::deferred))
        .route("/api/v1/verdicts", get(api::verdicts))
        .route("/api/v1/priors", get(api::priors))
        .route("/api/v1/analytics", get(api::analytics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/", get(status_page))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(protected)
        .fallback(|| async { api::ApiError::new(StatusCode::NOT_FOUND, "no such endpoint (see /api/v1/openapi.json)") })
        .with_state(state)
}

async fn authenticate(State(state): State<Arc<AdminState>>, mut request: Request, next: Next) -> Response {
    match state.auth.principal(request.headers()) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

async fn health(State(state): State<Arc<AdminState>>) -> Response {
    axum::Json(serde_json::json!({"status": "ok", "uptime_secs": state.metrics.uptime().as_secs()})).into_response()
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    let components = state.metrics.components();
    let ready = state.metrics.ready();
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "not_ready" },
        "components": components,
    });
    let code = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(body)).into_response()
}

async fn metrics(
    State(state): State<Arc<AdminState>>,
    axum::Extension(principal): axum::Extension<Principal>,
) -> Response {
    if principal != Principal::Admin {
        return api::ApiError::new(StatusCode::FORBIDDEN, "/metrics spans every tenant: it needs the admin token")
            .into_response();
    }
    let outbox = match &state.store {
        Some(store) => {
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.outbox_counts()).await {
                Ok(Ok(c)) => Some(c),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "metrics: cannot read the outbox");
                    None
                }
                Err(_) => None,
            }
        }
        None => None,
    };
    let text = prometheus::render(&state.metrics, outbox.as_ref(), state.max_tenant_series);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// The OpenAPI 3.1 document of the JSON API.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The status page: one file, no build step; it reads `/api/v1/status`.
const STATUS_PAGE: &str = include_str!("status.html");

async fn status_page() -> Html<&'static str> {
    Html(STATUS_PAGE)
}

/// Starts the server a config asks for, on the run's metrics. `Ok(None)`
/// when it is off, or when the default address is taken (logged).
pub fn start(
    config: &AdminConfig,
    metrics: Arc<Metrics>,
    store: Option<Arc<Store>>,
    budget: BudgetConfig,
) -> std::io::Result<Option<AdminServer>> {
    if !config.enabled() {
        return Ok(None);
    }
    let state = AdminState::new(config, metrics.clone(), store, budget);
    let auth = if state.auth.open { "open (loopback, no token set)" } else { "bearer token" };
    match AdminServer::start(&config.listen, state) {
        Ok(server) => {
            tracing::info!(
                addr = %server.addr(),
                auth,
                "admin server: status page http://{}/, /health, /ready, /metrics, /api/v1",
                server.addr()
            );
            metrics.component("admin", ComponentState::Ready, server.addr().to_string());
            Ok(Some(server))
        }
        Err(e) if config.listen == DEFAULT_LISTEN && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!(addr = %config.listen, "admin server not started: the default address is in use (set admin.listen)");
            Ok(None)
        }
        Err(e) => Err(std::io::Error::new(e.kind(), format!("admin.listen = {:?}: {e}", config.listen))),
    }
}
