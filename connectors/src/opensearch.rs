//! OpenSearch (the Wazuh indexer) as a source: alerts read back from an
//! index pattern such as `wazuh-alerts-4.x-*`.
//!
//! **Paging.** Each scan opens a point in time (`POST /<index>/_search/
//! point_in_time?keep_alive=…`) and pages through it with `POST /_search`
//! carrying `pit`, `sort: [{timestamp: asc}, {id: asc}]` and `search_after`
//! (the sort values of the last hit), as OpenSearch 2.x documents. The sort
//! is on the alert's `timestamp` (a `date` in the Wazuh template) and its
//! `id` (a keyword through the template's `string_as_keyword`), not on
//! `_id`, whose doc values OpenSearch may refuse to sort on. The PIT makes a
//! scan stable while the indexer keeps writing; if it expires (the indexer
//! answers `search_context_missing_exception`), a new one is opened and the
//! scan goes on from the same `search_after` cursor, so nothing is skipped or
//! read twice. The PIT is deleted (`DELETE /_search/point_in_time`) when a
//! scan ends.
//!
//! **Modes.** `backfill` reads `[from, to]` once, then stops or (with
//! `then_follow`) follows. `follow` polls every `poll_interval` for alerts
//! from the cursor's time minus `overlap`, so documents indexed late (with
//! an older `timestamp`) are still picked up; ids handed over within the
//! overlap are remembered (a bounded set) and skipped when seen again. A
//! follow page is read in two requests: the sort values only
//! (`_source: false`; the id is one of them), then the documents of the
//! ids not read yet (`terms` on `id`), so the overlap read again at every
//! poll costs the indexer no document fetches.
//!
//! **Position.** The cursor (sort values of the newest alert handed over),
//! the ids handed over within the overlap, the lower time bound and the
//! phase, per scan: a restart resumes exactly where it stopped, with no gap
//! and no duplicate.
//!
//! **Filters.** `min_level` (a `range` on `rule.level`), `exclude_agents`
//! (`term`s on `agent.id` under `must_not`) and extra query clauses, all
//! evaluated by the indexer (`bool.filter` and `bool.must_not`).
//!
//! **Tenants.** One scan per `[[opensearch.sources]]` entry (each with its
//! own index pattern, credentials and fixed tenant), or one scan whose
//! records carry their tenant (`[tenant]` as for files).
//!
//! **Transport.** Plain blocking HTTP through `ureq` (rustls), which Sluice
//! already uses for its sinks, speaking the documented REST API. The
//! `opensearch` crate was weighed and not taken: its 2.x line is built on
//! `reqwest` 0.11 (a second HTTP and TLS stack, OpenSSL by default) and needs
//! an async runtime, for the four endpoints used here. Credentials come from
//! the environment only (`Authorization: Basic …` or `ApiKey …`) and are
//! never logged; TLS verifies against the system roots or `ca_file`, and is
//! off only with `insecure_skip_verify` (a warning at start). Every request
//! has a timeout, is retried with exponential backoff on 429, 5xx and
//! transport errors (honouring `Retry-After`), and requests are spaced to
//! at most `rate_limit` per second so Sluice never floods the indexer.
//!
//! **Lag.** After each follow round (and every few backfill pages) the
//! alerts indexed with a `timestamp` newer than the cursor are counted
//! (`size: 0`, `track_total_hits`) and the newest of them found (a `max`
//! aggregation on `timestamp`): the source's lag in alerts, and in seconds
//! between the newest indexed and the newest read.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sluice_operators::decode::{ChunkTenant, RawChunk};
use sluice_operators::time::{Duration as ConfigDuration, parse_timestamp};

use crate::source::{InputChange, Source, SourceError, StopFlag, now_us};

/// Most ids remembered for the overlap; beyond it the oldest are forgotten
/// (a warning says duplicates are then possible).
const MAX_SEEN: usize = 200_000;

/// How the source reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Poll for new alerts every `poll_interval`, forever.
    #[default]
    Follow,
    /// Read `[from, to]` once, then stop (or follow with `then_follow`).
    Backfill,
}

/// `[[opensearch.sources]]`: one tenant's index and credentials.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantSource {
    /// Every alert of this source belongs to this tenant.
    pub tenant: String,
    /// Index pattern; empty: `opensearch.index`.
    pub index: String,
    /// Credentials; empty: those of `[opensearch]`.
    pub username_env: String,
    pub password_env: String,
    pub api_key_env: String,
}

/// `[opensearch]`: the indexer to read alerts from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenSearchConfig {
    /// Base URL of the indexer (`https://indexer:9200`).
    pub url: String,
    /// Index pattern to read.
    pub index: String,
    /// Hits per `_search` page.
    pub page_size: usize,
    pub mode: Mode,
    /// Oldest alert `timestamp` to read (`2024-05-01T00:00:00Z`); unset:
    /// backfill reads from the beginning, follow from the start time.
    pub from: Option<String>,
    /// With `backfill`: newest alert `timestamp` to read (inclusive).
    pub to: Option<String>,
    /// With `backfill`: follow once the range is read instead of stopping.
    pub then_follow: bool,
    /// With `follow`: how often to look for new alerts.
    pub poll_interval: ConfigDuration,
    /// With `follow`: how far behind the newest alert read to look again,
    /// for alerts indexed late; ids seen within it are skipped.
    pub overlap: ConfigDuration,
    /// How long the indexer keeps a point in time between pages.
    pub keep_alive: ConfigDuration,
    /// Only alerts with `rule.level` at least this (0: all).
    pub min_level: u32,
    /// Agents whose alerts are not read (`agent.id`, e.g. `"000"`, the manager).
    pub exclude_agents: Vec<String>,
    /// Extra query clauses, each a JSON object (`{"term":{"rule.groups":"sshd"}}`),
    /// all required (`bool.filter`).
    pub query: Vec<String>,
    /// Environment variables holding the basic-auth user and password.
    pub username_env: String,
    pub password_env: String,
    /// Environment variable holding an API key (`Authorization: ApiKey …`).
    pub api_key_env: String,
    /// PEM file of the CA that signed the indexer's certificate.
    pub ca_file: Option<String>,
    /// Do not verify the indexer's certificate (logged as a warning).
    pub insecure_skip_verify: bool,
    /// Timeout of each request.
    pub timeout: ConfigDuration,
    /// Retries of a request on 429, 5xx or a transport error.
    pub max_retries: u32,
    /// Most requests per second.
    pub rate_limit: f64,
    /// One source per tenant; empty: one source on `index`, tenants from
    /// the records.
    pub sources: Vec<TenantSource>,
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        Self {
            url: "https://localhost:9200".into(),
            index: "wazuh-alerts-4.x-*".into(),
            page_size: 1000,
            mode: Mode::Follow,
            from: None,
            to: None,
            then_follow: false,
            poll_interval: ConfigDuration::from_secs(10),
            overlap: ConfigDuration::from_mins(5),
            keep_alive: ConfigDuration::from_mins(1),
            min_level: 0,
            exclude_agents: Vec::new(),
            query: Vec::new(),
            username_env: String::new(),
            password_env: String::new(),
            api_key_env: String::new(),
            ca_file: None,
            insecure_skip_verify: false,
            timeout: ConfigDuration::from_secs(30),
            max_retries: 5,
            rate_limit: 20.0,
            sources: Vec::new(),
        }
    }
}

fn parse_time(key: &str, v: &Option<String>, errors: &mut Vec<String>) -> Option<i64> {
    let s = v.as_deref()?;
    let t = parse_timestamp(s).or_else(|| s.parse::<i64>().ok());
    if t.is_none() {
        errors
            .push(format!("opensearch.{key} = {s:?} is not a timestamp (2024-05-01T00:00:00Z) or epoch milliseconds"));
    }
    t
}

impl OpenSearchConfig {
    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut e = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            e.push(format!("opensearch.url = {:?} must start with http:// or https://", self.url));
        }
        // Credentials belong in the environment: a URL is logged and shown.
        let authority = self.url.split("://").nth(1).unwrap_or("").split('/').next().unwrap_or("");
        if authority.contains('@') {
            e.push(
                "opensearch.url holds credentials (user:password@): put them in the environment \
                 (opensearch.username_env / password_env / api_key_env)"
                    .into(),
            );
        }
        if self.index.trim().is_empty() && self.sources.iter().any(|s| s.index.trim().is_empty()) {
            e.push("opensearch.index is empty".into());
        }
        if self.index.trim().is_empty() && self.sources.is_empty() {
            e.push("opensearch.index is empty".into());
        }
        if self.page_size == 0 || self.page_size > 10_000 {
            e.push(format!("opensearch.page_size = {} must be in 1..=10000", self.page_size));
        }
        let from = parse_time("from", &self.from, &mut e);
        let to = parse_time("to", &self.to, &mut e);
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            e.push("opensearch.from is after opensearch.to".into());
        }
        if self.mode == Mode::Follow && self.to.is_some() {
            e.push("opensearch.to needs mode = \"backfill\"".into());
        }
        if self.mode == Mode::Follow && self.then_follow {
            e.push("opensearch.then_follow needs mode = \"backfill\"".into());
        }
        for (key, d) in
            [("poll_interval", self.poll_interval), ("keep_alive", self.keep_alive), ("timeout", self.timeout)]
        {
            if d.millis() <= 0 {
                e.push(format!("opensearch.{key} must be positive"));
            }
        }
        if self.overlap.millis() < 0 {
            e.push("opensearch.overlap must not be negative".into());
        }
        if !(self.rate_limit.is_finite() && self.rate_limit > 0.0) {
            e.push(format!("opensearch.rate_limit = {} must be > 0 (requests per second)", self.rate_limit));
        }
        for (i, q) in self.query.iter().enumerate() {
            if !serde_json::from_str::<Value>(q).is_ok_and(|v| v.is_object()) {
                e.push(format!("opensearch.query[{i}] is not a JSON object: {q}"));
            }
        }
        if self.exclude_agents.iter().any(|a| a.trim().is_empty()) {
            e.push("opensearch.exclude_agents has an empty agent id".into());
        }
        let auth = |prefix: &str, user: &str, pass: &str, key: &str, e: &mut Vec<String>| {
            if user.is_empty() != pass.is_empty() {
                e.push(format!("{prefix}username_env and {prefix}password_env go together"));
            }
            if !user.is_empty() && !key.is_empty() {
                e.push(format!("{prefix}api_key_env and {prefix}username_env: choose one"));
            }
        };
        auth("opensearch.", &self.username_env, &self.password_env, &self.api_key_env, &mut e);
        let mut tenants = HashSet::new();
        for (i, s) in self.sources.iter().enumerate() {
            let p = format!("opensearch.sources[{i}].");
            if s.tenant.trim().is_empty() {
                e.push(format!("{p}tenant is empty"));
            } else if !tenants.insert(s.tenant.as_str()) {
                e.push(format!("{p}tenant = {:?} appears twice", s.tenant));
            }
            auth(&p, &s.username_env, &s.password_env, &s.api_key_env, &mut e);
        }
        e
    }
}

/// Reads an environment variable (a map in tests).
pub type Env = dyn Fn(&str) -> Option<String>;

/// The `Authorization` header value from the environment, if any.
fn auth_header(env: &Env, user_env: &str, pass_env: &str, key_env: &str) -> Result<Option<String>, SourceError> {
    let get = |name: &str| {
        env(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| SourceError::Config(format!("opensearch credentials: ${name} is not set")))
    };
    if !key_env.is_empty() {
        return Ok(Some(format!("ApiKey {}", get(key_env)?)));
    }
    if !user_env.is_empty() {
        let pair = format!("{}:{}", get(user_env)?, get(pass_env)?);
        return Ok(Some(format!("Basic {}", base64(pair.as_bytes()))));
    }
    Ok(None)
}

/// Standard base64 with padding (RFC 4648), for basic auth.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n =
            (u32::from(c[0]) << 16) | (u32::from(*c.get(1).unwrap_or(&0)) << 8) | u32::from(*c.get(2).unwrap_or(&0));
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= c.len() {
                out.push(T[(n >> shift) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Why a request failed for good.
#[derive(Debug)]
enum CallError {
    /// The point in time is gone (expired, or the node restarted).
    PitGone,
    Failed(String),
    Stopped,
}

/// The HTTP side: one agent, credentials, retries and the rate limit.
struct Client {
    agent: ureq::Agent,
    base: String,
    auth: Option<String>,
    max_retries: u32,
    spacing: Duration,
    last: Option<Instant>,
    stop: StopFlag,
}

fn std_duration(d: ConfigDuration) -> Duration {
    Duration::from_millis(d.millis().max(1) as u64)
}

impl Client {
    fn new(config: &OpenSearchConfig, auth: Option<String>, stop: StopFlag) -> Result<Self, SourceError> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| SourceError::Io { path: path.clone(), source: e })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(SourceError::Config(format!("opensearch.ca_file {path}: no PEM certificate in it")));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        if config.insecure_skip_verify {
            tracing::warn!(url = %config.url, "opensearch.insecure_skip_verify: the indexer's TLS certificate is NOT verified");
            tls = tls.disable_verification(true);
        }
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(std_duration(config.timeout)))
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build()
            .into();
        Ok(Self {
            agent,
            base: config.url.trim_end_matches('/').to_string(),
            auth,
            max_retries: config.max_retries,
            spacing: Duration::from_secs_f64(1.0 / config.rate_limit),
            last: None,
            stop,
        })
    }

    /// Sleeps up to `d`, waking early on stop; false if stopped.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while Instant::now() < end {
            if self.stop.is_stopped() {
                return false;
            }
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
        }
        !self.stop.is_stopped()
    }

    /// One JSON request with retries; the parsed JSON answer.
    fn call(&mut self, method: &str, path: &str, body: &Value) -> Result<Value, CallError> {
        let url = format!("{}{}", self.base, path);
        let body = body.to_string();
        let mut attempt = 0;
        loop {
            if let Some(last) = self.last {
                let due = last + self.spacing;
                let now = Instant::now();
                if due > now && !self.sleep(due - now) {
                    return Err(CallError::Stopped);
                }
            }
            self.last = Some(Instant::now());
            let result = {
                let with_auth = |b: ureq::RequestBuilder<ureq::typestate::WithBody>| match &self.auth {
                    Some(a) => b.header("Authorization", a),
                    None => b,
                };
                let req = match method {
                    "POST" => self.agent.post(&url),
                    "DELETE" => self.agent.delete(&url).force_send_body(),
                    other => unreachable!("method {other}"),
                };
                with_auth(req).header("Content-Type", "application/json").send(body.as_bytes())
            };
            let (error, after) = match result {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<f64>().ok())
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(|s| Duration::from_secs_f64(s.min(60.0)));
                    let text = resp.body_mut().with_config().limit(1 << 30).read_to_string().unwrap_or_default();
                    if (200..300).contains(&status) {
                        return serde_json::from_str(&text)
                            .map_err(|e| CallError::Failed(format!("{method} {path}: answer is not JSON: {e}")));
                    }
                    if text.contains("search_context_missing_exception") || text.contains("No search context found") {
                        return Err(CallError::PitGone);
                    }
                    let short: String = text.chars().take(300).collect();
                    let error = format!("{method} {path}: HTTP {status}: {short}");
                    if !(status == 429 || status >= 500) {
                        return Err(CallError::Failed(error));
                    }
                    (error, after)
                }
                Err(e) => (format!("{method} {path}: {e}"), None),
            };
            if attempt >= self.max_retries {
                return Err(CallError::Failed(format!("{error} (after {} retries)", self.max_retries)));
            }
            let backoff =
                after.unwrap_or_else(|| Duration::from_millis(100u64 << attempt.min(8)).min(Duration::from_secs(30)));
            tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, attempt = attempt + 1, "opensearch request failed, retrying");
            attempt += 1;
            if !self.sleep(backoff) {
                return Err(CallError::Stopped);
            }
        }
    }
}

/// Where a scan is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Phase {
    Backfill,
    Follow,
    Done,
}

/// A scan's checkpoint position.
#[derive(Debug, Serialize, Deserialize)]
struct ScanPosition {
    phase: Phase,
    /// Sort values (`timestamp` in epoch ms, `id`) of the newest alert handed over.
    after: Option<(i64, String)>,
    /// Lower `timestamp` bound of the scan (epoch ms).
    floor: Option<i64>,
    /// Alerts handed over within the overlap, oldest first.
    seen: Vec<(i64, String)>,
    /// Alerts handed over so far.
    count: u64,
}

/// The position of the whole source: one entry per scan, by name.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    opensearch: std::collections::BTreeMap<String, ScanPosition>,
}

/// One index pattern read with one set of credentials.
struct Scan {
    name: String,
    index: String,
    tenant: ChunkTenant,
    client: Client,
    phase: Phase,
    then_follow: bool,
    floor: Option<i64>,
    to: Option<i64>,
    after: Option<(i64, String)>,
    seen: VecDeque<(i64, String)>,
    seen_ids: HashSet<String>,
    seen_full_warned: bool,
    count: u64,
    /// The open point in time.
    pit: Option<String>,
    /// The `search_after` of the next page: the last hit's sort values (in
    /// a backfill, or within a follow round).
    round_after: Option<Value>,
    /// Within a follow round: its `timestamp` range, fixed at its start.
    round_range: Value,
    in_round: bool,
    next_poll: Instant,
    pages: u64,
    lag: i64,
    lag_seconds: f64,
    idle: bool,
}

/// What every scan shares: paging and filters.
struct Settings {
    page_size: usize,
    keep_alive: String,
    poll: Duration,
    overlap_ms: i64,
    filters: Vec<Value>,
    must_not: Vec<Value>,
}

impl Settings {
    /// The query: the base filters and a `timestamp` range.
    fn query(&self, range: Value) -> Value {
        let mut filter = self.filters.clone();
        if range.as_object().is_some_and(|m| !m.is_empty()) {
            filter.push(json!({"range": {"timestamp": range}}));
        }
        json!({"bool": {"filter": filter, "must_not": self.must_not}})
    }
}

fn hits(answer: &Value) -> &[Value] {
    answer.pointer("/hits/hits").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// `(timestamp ms, id)` from a hit's `sort` values.
fn sort_key(hit: &Value) -> Option<(i64, String)> {
    let sort = hit.get("sort")?.as_array()?;
    let t = sort.first()?;
    let t = t.as_i64().or_else(|| t.as_f64().map(|f| f as i64)).or_else(|| t.as_str().and_then(|s| s.parse().ok()))?;
    Some((t, sort.get(1)?.as_str()?.to_string()))
}

impl Scan {
    /// The `timestamp` range of the next request.
    fn range(&self, overlap_ms: i64) -> Value {
        let mut r = serde_json::Map::new();
        let low = match self.phase {
            Phase::Follow => {
                let back = self.after.as_ref().map(|(t, _)| t - overlap_ms);
                match (back, self.floor) {
                    (Some(b), Some(f)) => Some(b.max(f)),
                    (b, f) => b.or(f),
                }
            }
            _ => self.floor,
        };
        if let Some(l) = low {
            r.insert("gte".into(), json!(l));
        }
        if self.phase == Phase::Backfill
            && let Some(t) = self.to
        {
            r.insert("lte".into(), json!(t));
        }
        if !r.is_empty() {
            r.insert("format".into(), json!("epoch_millis"));
        }
        Value::Object(r)
    }

    fn open_pit(&mut self, s: &Settings) -> Result<(), CallError> {
        let path = format!("/{}/_search/point_in_time?keep_alive={}", self.index, s.keep_alive);
        let answer = self.client.call("POST", &path, &json!({}))?;
        let id = answer
            .get("pit_id")
            .and_then(Value::as_str)
            .ok_or_else(|| CallError::Failed(format!("POST {path}: no pit_id in the answer")))?;
        self.pit = Some(id.to_string());
        Ok(())
    }

    fn close_pit(&mut self) {
        if let Some(id) = self.pit.take()
            && let Err(e) = self.client.call("DELETE", "/_search/point_in_time", &json!({"pit_id": [id]}))
        {
            tracing::debug!(error = ?e, "deleting a point in time failed (it expires by itself)");
        }
    }

    /// One page: a `_search` on the point in time over `range`, from
    /// `search_after`; without `_source` when `ids_only` (the sort values
    /// carry the id); only the alerts of `ids` when given.
    fn page(
        &mut self,
        s: &Settings,
        range: &Value,
        search_after: Option<Value>,
        ids_only: bool,
        ids: Option<&[String]>,
    ) -> Result<Vec<Value>, CallError> {
        let mut recreated = false;
        let mut query = s.query(range.clone());
        if let Some(ids) = ids
            && let Some(filter) = query.pointer_mut("/bool/filter").and_then(Value::as_array_mut)
        {
            filter.push(json!({"terms": {"id": ids}}));
        }
        let size = ids.map_or(s.page_size, <[String]>::len);
        loop {
            if self.pit.is_none() {
                self.open_pit(s)?;
            }
            let mut body = json!({
                "size": size,
                "query": query,
                "pit": {"id": self.pit, "keep_alive": s.keep_alive},
                "sort": [{"timestamp": {"order": "asc"}}, {"id": {"order": "asc"}}],
                "track_total_hits": false,
            });
            if let Some(after) = &search_after {
                body["search_after"] = after.clone();
            }
            if ids_only {
                body["_source"] = json!(false);
            }
            match self.client.call("POST", "/_search", &body) {
                Ok(answer) => {
                    // The indexer may hand back a new id: always use the latest.
                    if let Some(id) = answer.get("pit_id").and_then(Value::as_str) {
                        self.pit = Some(id.to_string());
                    }
                    return Ok(hits(&answer).to_vec());
                }
                Err(CallError::PitGone) if !recreated => {
                    tracing::info!(scan = %self.name, "point in time expired: opening a new one, same cursor");
                    self.pit = None;
                    recreated = true;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Alerts newer than the cursor, as the indexer counts them now.
    fn measure_lag(&mut self, s: &Settings) {
        let mut r = serde_json::Map::new();
        if let Some((t, _)) = &self.after {
            r.insert("gt".into(), json!(t));
            r.insert("format".into(), json!("epoch_millis"));
        } else if let Some(f) = self.floor {
            r.insert("gte".into(), json!(f));
            r.insert("format".into(), json!("epoch_millis"));
        }
        let body = json!({
            "size": 0,
            "track_total_hits": true,
            "query": s.query(Value::Object(r)),
            "aggs": {"newest": {"max": {"field": "timestamp"}}}
        });
        match self.client.call("POST", &format!("/{}/_search", self.index), &body) {
            Ok(a) => {
                if let Some(n) = a.pointer("/hits/total/value").and_then(Value::as_i64) {
                    self.lag = n;
                }
                // Epoch milliseconds (a double); null when nothing is newer.
                let newest = a.pointer("/aggregations/newest/value").and_then(Value::as_f64);
                let read = self.after.as_ref().map(|(t, _)| *t as f64).or(self.floor.map(|f| f as f64));
                self.lag_seconds = match (newest, read) {
                    (Some(newest), Some(read)) => ((newest - read) / 1000.0).max(0.0),
                    _ => 0.0,
                };
            }
            Err(e) => tracing::debug!(error = ?e, "measuring the lag failed"),
        }
    }

    fn remember(&mut self, key: (i64, String), overlap_ms: i64) {
        self.seen_ids.insert(key.1.clone());
        self.seen.push_back(key);
        let newest = self.after.as_ref().map_or(i64::MIN, |a| a.0);
        while let Some((t, id)) = self.seen.front() {
            if *t < newest.saturating_sub(overlap_ms) || self.seen.len() > MAX_SEEN {
                if self.seen.len() > MAX_SEEN && !self.seen_full_warned {
                    self.seen_full_warned = true;
                    tracing::warn!(scan = %self.name, "opensearch.overlap holds more than {MAX_SEEN} alerts: the oldest are forgotten, late duplicates possible; lower overlap");
                }
                self.seen_ids.remove(id);
                self.seen.pop_front();
            } else {
                break;
            }
        }
    }

    /// The next chunk of this scan, `None` if it has nothing right now.
    fn step(&mut self, s: &Settings, input: u32, source: &str) -> Result<Option<RawChunk>, CallError> {
        match self.phase {
            Phase::Done => Ok(None),
            Phase::Backfill => {
                // Pages go on from the last hit's sort values; a restart from
                // the cursor (the newest alert handed over).
                let after = self.round_after.clone().or_else(|| self.after.as_ref().map(|(t, id)| json!([t, id])));
                let range = self.range(s.overlap_ms);
                let page = self.page(s, &range, after, false, None)?;
                self.pages += 1;
                if let Some(sort) = page.last().and_then(|h| h.get("sort")) {
                    self.round_after = Some(sort.clone());
                }
                let mut chunk = self.chunk(input, source);
                for hit in &page {
                    if !self.push(&mut chunk, hit) {
                        continue;
                    }
                    // An alert without an `id` is handed over (the pipeline
                    // judges it) but cannot be a cursor.
                    let Some(key) = sort_key(hit) else { continue };
                    if self.after.as_ref().is_none_or(|a| &key > a) {
                        self.after = Some(key.clone());
                    }
                    if self.then_follow {
                        self.remember(key, s.overlap_ms);
                    }
                }
                if page.len() < s.page_size {
                    self.close_pit();
                    self.measure_lag(s);
                    self.phase = if self.then_follow { Phase::Follow } else { Phase::Done };
                    self.round_after = None;
                    tracing::info!(scan = %self.name, alerts = self.count, follow = self.then_follow, "backfill done");
                } else if self.pages.is_multiple_of(10) {
                    self.measure_lag(s);
                }
                Ok(Some(chunk))
            }
            Phase::Follow => {
                if !self.in_round {
                    if Instant::now() < self.next_poll {
                        return Ok(None);
                    }
                    self.in_round = true;
                    self.round_after = None;
                    self.round_range = self.range(s.overlap_ms);
                }
                // Two passes per page: the sort values only (the id is one of
                // them), then the documents of the ids not read yet. The
                // overlap, read again every poll, costs the indexer no
                // `_source` fetches.
                let range = self.round_range.clone();
                let keys = self.page(s, &range, self.round_after.clone(), true, None)?;
                if let Some(sort) = keys.last().and_then(|h| h.get("sort")) {
                    self.round_after = Some(sort.clone());
                }
                let new: Vec<String> =
                    keys.iter().filter_map(sort_key).filter(|k| !self.seen_ids.contains(&k.1)).map(|k| k.1).collect();
                let mut chunk = self.chunk(input, source);
                if !new.is_empty() {
                    for hit in self.page(s, &range, None, false, Some(&new))? {
                        let Some(key) = sort_key(&hit) else { continue };
                        if self.seen_ids.contains(&key.1) || !self.push(&mut chunk, &hit) {
                            continue;
                        }
                        if self.after.as_ref().is_none_or(|a| &key > a) {
                            self.after = Some(key.clone());
                        }
                        self.remember(key, s.overlap_ms);
                    }
                }
                if keys.len() < s.page_size {
                    self.close_pit();
                    self.in_round = false;
                    self.next_poll = Instant::now() + s.poll;
                    self.measure_lag(s);
                }
                Ok((!chunk.lines.is_empty()).then_some(chunk))
            }
        }
    }

    fn chunk(&self, input: u32, source: &str) -> RawChunk {
        RawChunk {
            source: source.into(),
            ingest_us: now_us(),
            input,
            tenant: self.tenant.clone(),
            ..RawChunk::default()
        }
    }

    /// Appends a hit's `_source` as one JSON line; false if it has none.
    fn push(&mut self, chunk: &mut RawChunk, hit: &Value) -> bool {
        let Some(doc) = hit.get("_source") else {
            tracing::warn!(scan = %self.name, id = ?hit.get("_id"), "a hit without _source is skipped");
            return false;
        };
        let start = chunk.data.len();
        serde_json::to_writer(&mut chunk.data, doc).expect("writing JSON to memory");
        chunk.lines.push((start, chunk.data.len()));
        chunk.data.push(b'\n');
        chunk.positions.push(self.count);
        self.count += 1;
        true
    }

    fn position(&self) -> ScanPosition {
        ScanPosition {
            phase: self.phase,
            after: self.after.clone(),
            floor: self.floor,
            seen: self.seen.iter().cloned().collect(),
            count: self.count,
        }
    }
}

/// Reads alerts from OpenSearch (see the module doc).
pub struct OpenSearchSource {
    name: String,
    scans: Vec<Scan>,
    settings: Settings,
    next: usize,
    stop: StopFlag,
    changes: Vec<InputChange>,
}

impl std::fmt::Debug for OpenSearchSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenSearchSource").field("name", &self.name).finish_non_exhaustive()
    }
}

fn ms_string(d: ConfigDuration) -> String {
    format!("{}ms", d.millis().max(1))
}

/// Preflight: reaches the indexer with the configured credentials (`GET /`,
/// the cluster's name and version) and says what it found, or why not.
pub fn check_indexer(config: &OpenSearchConfig) -> Result<String, SourceError> {
    let env = |name: &str| std::env::var(name).ok();
    let auth = auth_header(&env, &config.username_env, &config.password_env, &config.api_key_env)?;
    let client = Client::new(config, auth, StopFlag::new())?;
    let mut request = client.agent.get(format!("{}/", client.base));
    if let Some(a) = &client.auth {
        request = request.header("Authorization", a);
    }
    // ureq's errors name the host, never the headers.
    let mut response = request.call().map_err(|e| SourceError::Config(format!("cannot reach {}: {e}", config.url)))?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    match status {
        200 => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            Ok(format!(
                "cluster {} (OpenSearch {})",
                v["cluster_name"].as_str().unwrap_or("?"),
                v["version"]["number"].as_str().unwrap_or("?")
            ))
        }
        401 | 403 => Err(SourceError::Config(format!("HTTP {status}: the credentials were refused"))),
        other => Err(SourceError::Config(format!("HTTP {other} to GET /"))),
    }
}

impl OpenSearchSource {
    /// A source on `config`; credentials are read from the environment now.
    pub fn new(config: &OpenSearchConfig, stop: StopFlag) -> Result<Self, SourceError> {
        Self::with_env(config, stop, &|name| std::env::var(name).ok())
    }

    /// As [`OpenSearchSource::new`], with credentials read through `env`.
    pub fn with_env(config: &OpenSearchConfig, stop: StopFlag, env: &Env) -> Result<Self, SourceError> {
        let errors = config.validate();
        if !errors.is_empty() {
            return Err(SourceError::Config(errors.join("; ")));
        }
        let mut ignored = Vec::new();
        let from = parse_time("from", &config.from, &mut ignored);
        let to = parse_time("to", &config.to, &mut ignored);
        // Follow without `from` starts now (minus the overlap).
        let floor = match (config.mode, from) {
            (_, Some(f)) => Some(f),
            (Mode::Follow, None) => Some(now_us() / 1000 - config.overlap.millis()),
            (Mode::Backfill, None) => None,
        };
        let phase = match config.mode {
            Mode::Follow => Phase::Follow,
            Mode::Backfill => Phase::Backfill,
        };
        let mut specs: Vec<(String, String, ChunkTenant, Option<String>)> = Vec::new();
        if config.sources.is_empty() {
            let auth = auth_header(env, &config.username_env, &config.password_env, &config.api_key_env)?;
            specs.push((config.index.clone(), config.index.clone(), ChunkTenant::FromRecord, auth));
        } else {
            for s in &config.sources {
                let auth = if s.username_env.is_empty() && s.api_key_env.is_empty() {
                    auth_header(env, &config.username_env, &config.password_env, &config.api_key_env)?
                } else {
                    auth_header(env, &s.username_env, &s.password_env, &s.api_key_env)?
                };
                let index = if s.index.is_empty() { config.index.clone() } else { s.index.clone() };
                specs.push((s.tenant.clone(), index, ChunkTenant::Fixed(s.tenant.as_str().into()), auth));
            }
        }
        let mut scans = Vec::new();
        for (name, index, tenant, auth) in specs {
            scans.push(Scan {
                name,
                index,
                tenant,
                client: Client::new(config, auth, stop.clone())?,
                phase,
                then_follow: config.then_follow,
                floor,
                to,
                after: None,
                seen: VecDeque::new(),
                seen_ids: HashSet::new(),
                seen_full_warned: false,
                count: 0,
                pit: None,
                round_after: None,
                round_range: Value::Null,
                in_round: false,
                next_poll: Instant::now(),
                pages: 0,
                lag: 0,
                lag_seconds: 0.0,
                idle: false,
            });
        }
        let mut filters = Vec::new();
        if config.min_level > 0 {
            filters.push(json!({"range": {"rule.level": {"gte": config.min_level}}}));
        }
        for q in &config.query {
            filters.push(serde_json::from_str(q).expect("validated"));
        }
        let must_not = config.exclude_agents.iter().map(|a| json!({"term": {"agent.id": a}})).collect();
        let changes = if scans.len() > 1 { (0..scans.len() as u32).map(InputChange::Opened).collect() } else { vec![] };
        Ok(Self {
            name: format!("opensearch:{}", config.url),
            scans,
            settings: Settings {
                page_size: config.page_size,
                keep_alive: ms_string(config.keep_alive),
                poll: std_duration(config.poll_interval),
                overlap_ms: config.overlap.millis(),
                filters,
                must_not,
            },
            next: 0,
            stop,
            changes,
        })
    }
}

impl Source for OpenSearchSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        let started = Instant::now();
        loop {
            if self.stop.is_stopped() {
                for scan in &mut self.scans {
                    scan.close_pit();
                }
                return Ok(None);
            }
            if self.scans.iter().all(|s| s.phase == Phase::Done) {
                return Ok(None);
            }
            let n = self.scans.len();
            for k in 0..n {
                let i = (self.next + k) % n;
                let scan = &mut self.scans[i];
                match scan.step(&self.settings, i as u32, &self.name) {
                    Ok(Some(chunk)) => {
                        self.next = (i + 1) % n;
                        if scan.idle && !chunk.lines.is_empty() {
                            scan.idle = false;
                            if n > 1 {
                                self.changes.push(InputChange::Opened(i as u32));
                            }
                        }
                        return Ok(Some(chunk));
                    }
                    Ok(None) => {
                        if !scan.idle {
                            scan.idle = true;
                            if n > 1 {
                                self.changes.push(InputChange::Idle(i as u32));
                            }
                        }
                    }
                    Err(CallError::Stopped) => return Ok(None),
                    Err(CallError::PitGone) => {
                        return Err(SourceError::Config(format!(
                            "opensearch {}: the point in time expired again at once",
                            scan.name
                        )));
                    }
                    Err(CallError::Failed(e)) if scan.phase == Phase::Follow => {
                        // Following: the indexer may be back by the next poll.
                        tracing::warn!(scan = %scan.name, error = %e, "opensearch poll failed; trying again at the next poll");
                        scan.close_pit();
                        scan.in_round = false;
                        scan.next_poll = Instant::now() + self.settings.poll;
                    }
                    Err(CallError::Failed(e)) => {
                        return Err(SourceError::Config(format!("opensearch {}: {e}", scan.name)));
                    }
                }
            }
            // Everything waits for its next poll: an empty chunk now and then.
            if started.elapsed() >= Duration::from_millis(100) {
                return Ok(Some(RawChunk { source: self.name.as_str().into(), ..RawChunk::default() }));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn position(&self) -> Option<String> {
        let p = Position { opensearch: self.scans.iter().map(|s| (s.name.clone(), s.position())).collect() };
        serde_json::to_string(&p).ok()
    }

    fn restore(&mut self, position: &str) -> Result<(), SourceError> {
        let p: Position = serde_json::from_str(position)
            .map_err(|e| SourceError::Config(format!("opensearch checkpoint position unreadable: {e}")))?;
        for scan in &mut self.scans {
            let Some(sp) = p.opensearch.get(&scan.name) else {
                tracing::info!(scan = %scan.name, "no checkpoint position for this OpenSearch source: starting afresh");
                continue;
            };
            scan.phase = sp.phase;
            scan.after = sp.after.clone();
            scan.floor = sp.floor;
            scan.count = sp.count;
            scan.seen = sp.seen.iter().cloned().collect();
            scan.seen_ids = sp.seen.iter().map(|(_, id)| id.clone()).collect();
            tracing::info!(scan = %scan.name, after = ?scan.after, alerts = scan.count, "resuming OpenSearch from the checkpoint");
        }
        Ok(())
    }

    fn input_changes(&mut self) -> Vec<InputChange> {
        std::mem::take(&mut self.changes)
    }

    fn lag(&self) -> Vec<(String, i64)> {
        self.scans.iter().map(|s| (s.name.clone(), s.lag)).collect()
    }

    fn lag_seconds(&self) -> Vec<(String, f64)> {
        self.scans.iter().map(|s| (s.name.clone(), s.lag_seconds)).collect()
    }
}

impl Drop for OpenSearchSource {
    fn drop(&mut self) {
        for scan in &mut self.scans {
            if scan.pit.is_some() {
                scan.client.max_retries = 0;
                scan.close_pit();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn validate_names_each_key() {
        let c = OpenSearchConfig {
            url: "indexer:9200".into(),
            page_size: 0,
            to: Some("yesterday".into()),
            query: vec!["[1]".into()],
            username_env: "U".into(),
            rate_limit: 0.0,
            ..OpenSearchConfig::default()
        };
        let e = c.validate().join("\n");
        for key in [
            "opensearch.url",
            "opensearch.page_size",
            "opensearch.to",
            "opensearch.query[0]",
            "password_env",
            "opensearch.rate_limit",
        ] {
            assert!(e.contains(key), "{key} not in {e}");
        }
        assert!(OpenSearchConfig::default().validate().is_empty());
        let with_password =
            OpenSearchConfig { url: "https://admin:s3cret@indexer:9200".into(), ..OpenSearchConfig::default() };
        let e = with_password.validate().join("\n");
        assert!(e.contains("holds credentials") && !e.contains("s3cret"), "{e}");
        let at_in_path = OpenSearchConfig { url: "https://indexer:9200/a@b".into(), ..OpenSearchConfig::default() };
        assert!(at_in_path.validate().is_empty());
    }
}
