//! The JSON API (`/api/v1`). Every handler works out which tenants the
//! caller may see first ([`scope`]) and reads nothing else. Errors are JSON:
//! `{"error": {"status": 400, "message": "…"}}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Extension;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_connectors::source::now_us;

use super::{AdminState, Principal};
use crate::metrics::ClusterFilter;
use crate::store::{Store, StoreError};

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self { status, message: message.into() }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.status.as_u16(), "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "admin API: store");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, format!("the store failed: {e}"))
    }
}

type ApiResult = Result<Response, ApiError>;

fn ok(value: impl Serialize) -> ApiResult {
    Ok(axum::Json(value).into_response())
}

/// Query parameters, validated: unknown ones and bad values are a 400
/// naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::bad_request(e.body_text()))
    }
}

/// The tenant a request is about: the one asked for, or for a tenant
/// token its own (asking for another is refused). `None`: every tenant.
fn scope(principal: &Principal, asked: Option<&str>) -> Result<Option<String>, ApiError> {
    match (principal, asked) {
        (Principal::Admin, asked) => Ok(asked.map(str::to_string)),
        (Principal::Tenant(own), Some(asked)) if asked != own => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "this token may not read that tenant"))
        }
        (Principal::Tenant(own), _) => Ok(Some(own.clone())),
    }
}

fn store(state: &AdminState) -> Result<Arc<Store>, ApiError> {
    state.store.clone().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "no store in this run (store.mode, or configure a sink): nothing recorded")
    })
}

/// Runs store reads off the server's thread.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the request failed"))?
}

/// The tenants a request covers: its scope, or every tenant known.
fn tenants_in(state: &AdminState, scope: Option<String>) -> Vec<String> {
    match scope {
        Some(t) => vec![t],
        None => state.metrics.tenants(),
    }
}

/// A point in time: RFC 3339 (`2026-11-23T10:00:00Z`) or a duration ago
/// (`15m`, `24h`). µs since the epoch.
fn parse_time(name: &str, value: &str) -> Result<i64, ApiError> {
    if let Ok(ago) = humantime::parse_duration(value) {
        return Ok(now_us() - ago.as_micros() as i64);
    }
    let t = humantime::parse_rfc3339_weak(value).map_err(|_| {
        ApiError::bad_request(format!(
            "{name} = {value:?}: expected RFC 3339 (2026-11-23T10:00:00Z) or a duration ago (1h)"
        ))
    })?;
    Ok(t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64))
}

fn rfc3339(us: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_micros(us.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantParam {
    tenant: Option<String>,
}

// ── /api/v1/status ──

/// Everything the status page shows, in one answer.
pub async fn status(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult {
    let scope = scope(&principal, q.tenant.as_deref())?;
    // Tenant-scoped callers see nothing that sums over other tenants.
    let whole = principal == Principal::Admin && scope.is_none();
    let m = &state.metrics;
    let totals = m.tenant_totals();
    let events = m.tenant_events();
    let sizes = m.state_sizes();
    let names = tenants_in(&state, scope.clone());
    let budgets = budget_burn(&state, &names).await?;
    let latency = m.tenant_latency();
    let live_clusters: BTreeMap<&str, u64> = sizes
        .iter()
        .filter(|((op, what, _), _)| *op == "correlate" && *what == "clusters")
        .map(|((_, _, t), n)| (t.as_ref(), *n))
        .collect();
    let mut tenants = Vec::new();
    for t in &names {
        let tt = totals.get(t).copied().unwrap_or_default();
        let e = events.get(t).cloned().unwrap_or_default();
        let clusters = live_clusters.get(t.as_str()).copied().unwrap_or(0);
        tenants.push(json!({
            "tenant": t,
            "alerts_in": tt.alerts_in,
            "duplicates": tt.duplicates,
            "escalated": e.escalated,
            "updates": e.updates,
            "late": e.late,
            "live_clusters": clusters,
            "triage_latency_ms": latency.get(t).map(latency_ms),
            "budget": budgets.get(t),
        }));
    }
    let filter = ClusterFilter { tenant: scope.clone(), decision: Some("escalate".into()), ..ClusterFilter::default() };
    let top: Vec<Value> = m
        .clusters(&filter, 10)
        .into_iter()
        .map(|row| {
            let breakdown = m
                .cluster(&row.tenant, &row.cluster_id)
                .and_then(|(case, _)| serde_json::from_str::<Value>(&case).ok())
                .and_then(|mut v| v.get_mut("breakdown").map(Value::take))
                .unwrap_or(Value::Null);
            let mut v = serde_json::to_value(&row).unwrap_or(Value::Null);
            v["breakdown"] = breakdown;
            v
        })
        .collect();
    let mut body = json!({
        "uptime_secs": m.uptime().as_secs_f64(),
        "ready": m.ready(),
        "tenants": tenants,
        "top_clusters": top,
        "late_total": names.iter().map(|t| events.get(t).map_or(0, |e| e.late)).sum::<u64>(),
    });
    if whole {
        let samples = m.samples();
        let rate = match (samples.first(), samples.last()) {
            (Some(a), Some(b)) if b.t > a.t => {
                // Over the last 10 s at most.
                let from = samples.iter().rev().find(|s| b.t - s.t >= 10.0).unwrap_or(a);
                (b.read - from.read) as f64 / (b.t - from.t).max(1e-9)
            }
            _ => 0.0,
        };
        let h = m.latency();
        let mut buckets = Vec::new();
        let mut below = 0u64;
        for le_ms in [1u64, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000] {
            let n = h.count_between(0, le_ms * 1000);
            buckets.push(json!({"le_ms": le_ms, "count": n - below}));
            below = n;
        }
        buckets.push(json!({"le_ms": null, "count": h.len() - below}));
        let dead = m.dead_letters();
        body["components"] = serde_json::to_value(m.components()).unwrap_or_default();
        body["read"] = json!(m.read.load(std::sync::atomic::Ordering::Relaxed));
        body["alerts_per_sec"] = json!(rate);
        body["samples"] = serde_json::to_value(samples).unwrap_or_default();
        body["latency"] = json!({
            "count": h.len(),
            "p50_ms": h.value_at_quantile(0.5) as f64 / 1000.0,
            "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
            "buckets": buckets,
        });
        body["dead_letters_total"] = json!(dead.values().sum::<u64>());
        body["dead_letters"] = serde_json::to_value(dead).unwrap_or_default();
    }
    ok(body)
}

/// Each budgeted tenant's use against its limits: LLM tokens in the last
/// day and hand-offs per sink in the last hour. Empty without a store.
async fn budget_burn(state: &AdminState, tenants: &[String]) -> Result<BTreeMap<String, Value>, ApiError> {
    let Some(store) = state.store.clone() else { return Ok(BTreeMap::new()) };
    let sinks: Vec<&'static str> = state.metrics.sinks().iter().map(|(n, _)| *n).collect();
    let budget = state.budget.clone();
    let tenants = tenants.to_vec();
    blocking(move || {
        let now = now_us();
        let mut out = BTreeMap::new();
        for t in tenants {
            let limits = budget.limits(&t);
            // Unlimited tenants have nothing to burn: no queries for them
            // (the page polls every 2 s, over every tenant).
            if limits.cases_per_hour.is_none() && limits.llm_tokens_per_day.is_none() {
                continue;
            }
            let tokens = store.tokens_since(&t, now - 86_400_000_000)?;
            let mut cases = 0;
            for sink in &sinks {
                cases = i64::max(cases, store.delivered_since(&t, sink, now - 3_600_000_000)?);
            }
            out.insert(
                t,
                json!({
                    "llm_tokens_last_day": tokens,
                    "llm_tokens_per_day": limits.llm_tokens_per_day,
                    "cases_last_hour": cases,
                    "cases_per_hour": limits.cases_per_hour,
                }),
            );
        }
        Ok(out)
    })
    .await
}

/// Count and percentiles of a latency histogram (µs), in ms.
fn latency_ms(h: &hdrhistogram::Histogram<u64>) -> Value {
    json!({
        "count": h.len(),
        "p50": h.value_at_quantile(0.5) as f64 / 1000.0,
        "p99": h.value_at_quantile(0.99) as f64 / 1000.0,
        "max": h.max() as f64 / 1000.0,
    })
}

// ── /api/v1/tenants ──

pub async fn tenants(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult {
    let scope = scope(&principal, q.tenant.as_deref())?;
    let counters = state.metrics.counters();
    let events = state.metrics.tenant_events();
    let sizes = state.metrics.state_sizes();
    let latency = state.metrics.tenant_latency();
    // Grouped by tenant once, not scanned once per tenant.
    type Named = BTreeMap<String, u64>;
    let mut by_tenant: BTreeMap<&str, (Named, Named)> = BTreeMap::new();
    for ((op, metric, tenant), n) in &counters.0 {
        by_tenant.entry(tenant.as_ref()).or_default().0.insert(format!("{op}.{metric}"), *n);
    }
    for ((op, what, tenant), n) in &sizes {
        by_tenant.entry(tenant.as_ref()).or_default().1.insert(format!("{op}.{what}"), *n);
    }
    let list: Vec<Value> = tenants_in(&state, scope)
        .into_iter()
        .map(|t| {
            let (c, s) = by_tenant.remove(t.as_str()).unwrap_or_default();
            json!({
                "tenant": t,
                "counters": c,
                "state": s,
                "reports": events.get(&t).cloned().unwrap_or_default(),
                "triage_latency_ms": latency.get(&t).map(latency_ms),
            })
        })
        .collect();
    ok(json!({ "tenants": list }))
}

// ── /api/v1/clusters ──

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterQuery {
    tenant: Option<String>,
    decision: Option<String>,
    min_score: Option<f64>,
    max_score: Option<f64>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

pub async fn clusters(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<ClusterQuery>,
) -> ApiResult {
    let tenant = scope(&principal, q.tenant.as_deref())?;
    if let Some(d) = &q.decision
        && !matches!(d.as_str(), "escalate" | "review" | "suppress")
    {
        return Err(ApiError::bad_request(format!("decision = {d:?}: expected escalate, review or suppress")));
    }
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request(format!("limit = {limit}: expected 1 to 1000")));
    }
    let filter = ClusterFilter {
        tenant,
        decision: q.decision,
        min_score: q.min_score,
        max_score: q.max_score,
        since_ms: q.since.as_deref().map(|v| parse_time("since", v)).transpose()?.map(|us| us / 1000),
        until_ms: q.until.as_deref().map(|v| parse_time("until", v)).transpose()?.map(|us| us / 1000),
    };
    ok(json!({ "clusters": state.metrics.clusters(&filter, limit) }))
}

/// One cluster: its latest case file (full detail and score breakdown),
/// the versions this process reported, and the store's history.
pub async fn cluster(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
    Path((tenant, cluster_id)): Path<(String, String)>,
) -> ApiResult {
    let tenant = scope(&principal, Some(&tenant))?.unwrap_or(tenant);
    let live = state.metrics.cluster(&tenant, &cluster_id);
    let stored = match state.store.clone() {
        Some(store) => {
            let (t, id) = (tenant.clone(), cluster_id.clone());
            Some(blocking(move || Ok(store.history(&t, &id)?)).await?)
        }
        None => None,
    };
    let stored = stored.filter(|h| !h.versions.is_empty());
    if live.is_none() && stored.is_none() {
        return Err(ApiError::new(StatusCode::NOT_FOUND, format!("no cluster {cluster_id} in tenant {tenant}")));
    }
    let (case, versions) = match live {
        Some((case, versions)) => (serde_json::from_str::<Value>(&case).unwrap_or(Value::Null), versions),
        None => (Value::Null, Vec::new()),
    };
    ok(json!({"tenant": tenant, "cluster_id": cluster_id, "case": case, "versions": versions, "store_history": stored}))
}

// ── store-backed lists ──

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeferredQuery {
    tenant: Option<String>,
    status: Option<String>,
}

/// Cases waiting in the outbox: deferred (over budget) by default, or
/// `parked` / `pending`.
pub async fn deferred(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<DeferredQuery>,
) -> ApiResult {
    let scope = scope(&principal, q.tenant.as_deref())?;
    let status = q.status.unwrap_or_else(|| "deferred".into());
    if !matches!(status.as_str(), "deferred" | "parked" | "pending") {
        return Err(ApiError::bad_request(format!("status = {status:?}: expected deferred, parked or pending")));
    }
    let rows = store_rows(&state, scope, move |store, t| {
        Ok(store
            .outbox_rows(t, &status)?
            .into_iter()
            .map(|(sink, key, reason)| {
                json!({"tenant": t, "sink": sink, "idempotency_key": key, "status": status, "reason": reason})
            })
            .collect())
    })
    .await?;
    ok(json!({ "cases": rows }))
}

/// The rows `read` gives for each tenant in scope (every tenant in the
/// store when the scope is all), read off the server's thread.
async fn store_rows(
    state: &AdminState,
    scope: Option<String>,
    read: impl Fn(&Store, &str) -> Result<Vec<Value>, StoreError> + Send + 'static,
) -> Result<Vec<Value>, ApiError> {
    let store = store(state)?;
    blocking(move || {
        let tenants = match scope {
            Some(t) => vec![t],
            None => store.tenants()?,
        };
        let mut rows = Vec::new();
        for t in tenants {
            rows.extend(read(&store, &t)?);
        }
        Ok(rows)
    })
    .await
}

pub async fn verdicts(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult {
    let scope = scope(&principal, q.tenant.as_deref())?;
    let rows = store_rows(&state, scope, |store, t| {
        Ok(store
            .verdicts(t)?
            .into_iter()
            .map(|(key, verdict, confidence)| {
                json!({"tenant": t, "idempotency_key": key, "verdict": verdict, "confidence": confidence})
            })
            .collect())
    })
    .await?;
    ok(json!({ "verdicts": rows }))
}

pub async fn priors(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<TenantParam>,
) -> ApiResult {
    let scope = scope(&principal, q.tenant.as_deref())?;
    let rows = store_rows(&state, scope, |store, t| {
        Ok(store
            .priors(t)?
            .into_iter()
            .map(|p| {
                json!({
                    "tenant": t,
                    "id": p.id,
                    "signature": p.signature,
                    "reason": p.reason,
                    "created": rfc3339(p.created_us),
                    "expires": rfc3339(p.expires_us),
                    "revoked": p.revoked_us.map(rfc3339),
                    "revoked_by": (!p.revoked_by.is_empty()).then_some(p.revoked_by),
                })
            })
            .collect())
    })
    .await?;
    ok(json!({ "priors": rows }))
}

// ── /api/v1/analytics ──

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    tenant: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// One tenant over a wall-clock range (default: the last 24 h): alerts in,
/// duplicates, escalations, reduction (to five minutes, from this process's
/// counts), and from the store verdict outcomes, budget burn and the time
/// from a cluster's first alert to its hand-off.
pub async fn analytics(
    State(state): State<Arc<AdminState>>,
    Extension(principal): Extension<Principal>,
    ApiQuery(q): ApiQuery<AnalyticsQuery>,
) -> ApiResult {
    let Some(tenant) = scope(&principal, q.tenant.as_deref())? else {
        return Err(ApiError::bad_request("tenant is required"));
    };
    let given_to = q.to.as_deref().map(|v| parse_time("to", v)).transpose()?;
    let to = given_to.unwrap_or_else(now_us);
    let from = q.from.as_deref().map(|v| parse_time("from", v)).transpose()?.unwrap_or(to - 86_400_000_000);
    if from >= to {
        return Err(ApiError::bad_request("from must be before to"));
    }
    let t = state.metrics.totals_between(&tenant, from, given_to);
    let mut body = json!({
        "tenant": tenant,
        "from": rfc3339(from),
        "to": rfc3339(to),
        "alerts_in": t.alerts_in,
        "duplicates": t.duplicates,
        "escalations": t.escalated,
        "updates": t.updates,
        "reduction": if t.escalated == 0 { Value::Null } else { json!(t.alerts_in as f64 / t.escalated as f64) },
        "counted_since": rfc3339(now_us() - state.metrics.uptime().as_micros() as i64),
    });
    if let Some(store) = state.store.clone() {
        let limits = state.budget.limits(&tenant);
        let tn = tenant.clone();
        let a = blocking(move || Ok(store.analytics(&tn, from, to)?)).await?;
        let delays = &a.first_alert_to_handoff_us;
        let pct = |q: f64| -> Value {
            if delays.is_empty() {
                return Value::Null;
            }
            let i = ((delays.len() as f64 - 1.0) * q).round() as usize;
            json!(delays[i] as f64 / 1000.0)
        };
        body["verdicts"] = serde_json::to_value(&a.verdicts).unwrap_or_default();
        body["outbox"] = serde_json::to_value(&a.outbox).unwrap_or_default();
        body["budget"] = json!({
            "llm_tokens": a.llm_tokens,
            "llm_tokens_per_day": limits.llm_tokens_per_day,
            "cases_per_hour": limits.cases_per_hour,
        });
        body["first_alert_to_handoff_ms"] =
            json!({"count": delays.len(), "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)});
    }
    ok(body)
}
