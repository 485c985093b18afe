//! Live metrics of a running pipeline, for the admin server.
//!
//! The pipeline's threads publish into one [`Metrics`] without slowing the
//! hot path: each shard hands over a copy of its counters and state sizes
//! about once a second (its own thread keeps counting in between), the
//! source its consumer lag, the caller's thread every event it acknowledges
//! (escalations, dead letters, late records, triage latency) and each sink
//! dispatcher its delivery outcomes. Readers (`/metrics`, the JSON API, the
//! status page) take a consistent copy under short locks.
//!
//! Everything per tenant stays per tenant: counters are keyed by tenant, the
//! cluster registry is one map per tenant, and [`Metrics::tenant_view`] is
//! how a tenant-scoped reader sees only its own.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use sluice_connectors::source::now_us;
use sluice_operators::cluster::ClusterReport;
use sluice_operators::intel::{Intel, IntelCounts};
use sluice_operators::operator::{Counters, Operator, ReportKind};

use crate::fair::Backlog;
use crate::output::case_json;
use crate::runtime::Event;

/// How many throughput samples (one a second) the status page can chart.
const SAMPLES: usize = 600;
/// Versions of one cluster kept in its live history.
const HISTORY: usize = 64;
/// Per-tenant totals are kept every five minutes for a day, for analytics
/// (288 snapshots: a few tens of bytes per tenant each).
const TOTALS_EVERY: Duration = Duration::from_secs(300);
const TOTALS_KEPT: usize = 24 * 12;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking writer leaves counters that are still counters.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The state of one component, for `/ready`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentState {
    Starting,
    Ready,
    /// Done with its work (a finite input was read to its end).
    Finished,
    Failed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Component {
    pub state: ComponentState,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Delivery outcomes of one sink, counted by its dispatcher.
#[derive(Debug, Default)]
pub struct SinkStats {
    pub attempts: AtomicU64,
    pub delivered: AtomicU64,
    pub retries: AtomicU64,
    pub parked: AtomicU64,
    pub deferred: AtomicU64,
    pub llm_tokens: AtomicU64,
}

impl SinkStats {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// One shard's latest published view.
#[derive(Clone, Debug, Default)]
struct ShardView {
    counters: Counters,
    /// `(operator, what, tenant) → entries`.
    state: BTreeMap<(&'static str, &'static str, Arc<str>), u64>,
}

/// Per-tenant counts of what reached the caller.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TenantEvents {
    pub escalated: u64,
    pub updates: u64,
    pub closed: u64,
    pub late: u64,
    pub dead_letters: u64,
    /// Alerts set aside because the tenant's policy disables it.
    pub disabled: u64,
}

/// A cluster as the admin API lists it.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterRow {
    pub tenant: String,
    pub cluster_id: String,
    pub kind: ReportKind,
    pub version: u64,
    pub score: f64,
    pub decision: String,
    pub reason: String,
    pub first_seen: String,
    pub last_seen: String,
    pub alerts: u64,
    pub tactics: Vec<String>,
    /// When this process last received a report of it (µs since the epoch).
    pub updated_us: i64,
    #[serde(skip)]
    pub last_seen_ms: i64,
}

/// One version of a cluster as this process saw it.
#[derive(Clone, Debug, Serialize)]
pub struct VersionRow {
    pub version: u64,
    pub kind: ReportKind,
    pub score: f64,
    pub decision: String,
    pub at_us: i64,
}

#[derive(Clone, Debug)]
struct ClusterEntry {
    row: ClusterRow,
    /// The latest case file (JSON), the full detail.
    case: String,
    history: VecDeque<VersionRow>,
}

/// A tenant's running totals (for analytics over a time range).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct TenantTotals {
    pub alerts_in: u64,
    pub duplicates: u64,
    pub escalated: u64,
    pub updates: u64,
}

impl TenantTotals {
    fn minus(self, earlier: TenantTotals) -> TenantTotals {
        TenantTotals {
            alerts_in: self.alerts_in.saturating_sub(earlier.alerts_in),
            duplicates: self.duplicates.saturating_sub(earlier.duplicates),
            escalated: self.escalated.saturating_sub(earlier.escalated),
            updates: self.updates.saturating_sub(earlier.updates),
        }
    }
}

/// A throughput sample.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the start.
    pub t: f64,
    pub read: u64,
    pub escalated: u64,
}

#[derive(Debug)]
struct Live {
    latency: Histogram<u64>,
    /// The same, per tenant.
    tenant_latency: BTreeMap<String, Histogram<u64>>,
    tenants: BTreeMap<String, TenantEvents>,
    dead_letters: BTreeMap<&'static str, u64>,
    clusters: BTreeMap<String, BTreeMap<String, ClusterEntry>>,
    escalated: u64,
}

/// Live metrics; one per process, shared by `Arc`.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Records read by the source (counted by the router).
    pub read: Arc<AtomicU64>,
    shards: Mutex<Vec<ShardView>>,
    live: Mutex<Live>,
    lag: Mutex<BTreeMap<(String, String), i64>>,
    lag_seconds: Mutex<BTreeMap<(String, String), f64>>,
    sinks: Mutex<Vec<(&'static str, Arc<SinkStats>)>>,
    components: Mutex<BTreeMap<String, Component>>,
    samples: Mutex<VecDeque<Sample>>,
    last_sample: Mutex<Instant>,
    /// (wall clock µs, tenant → totals then), oldest first.
    totals: Mutex<VecDeque<(i64, BTreeMap<String, TenantTotals>)>>,
    last_totals: Mutex<Instant>,
    max_clusters_per_tenant: usize,
    /// Alerts in flight per tenant, and who is held back (fair scheduling).
    pub backlog: Backlog,
    /// The threat intel and inventories in force, and when they were loaded
    /// (wall clock µs).
    intel: Mutex<Option<(IntelCounts, i64)>>,
    /// Kafka partitions moved out and in with their state.
    pub handovers: Handovers,
}

/// Partitions that changed hands with their state (see the runtime), and
/// how long reading stopped for it.
#[derive(Debug, Default)]
pub struct Handovers {
    pub released: AtomicU64,
    pub acquired: AtomicU64,
    /// Microseconds reading stood still for handovers, in all.
    pub paused_us: AtomicU64,
}

impl Handovers {
    /// `n` partitions went out (`released`) or came in, after `paused`.
    pub fn record(&self, released: bool, n: usize, paused: Duration) {
        let counter = if released { &self.released } else { &self.acquired };
        counter.fetch_add(n as u64, Ordering::Relaxed);
        self.paused_us.fetch_add(paused.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(500)
    }
}

impl Metrics {
    /// `max_clusters_per_tenant` bounds the live cluster registry (the most
    /// recently reported are kept).
    pub fn new(max_clusters_per_tenant: usize) -> Self {
        Self {
            started: Instant::now(),
            read: Arc::new(AtomicU64::new(0)),
            shards: Mutex::new(Vec::new()),
            live: Mutex::new(Live {
                latency: latency_histogram(3),
                tenant_latency: BTreeMap::new(),
                tenants: BTreeMap::new(),
                dead_letters: BTreeMap::new(),
                clusters: BTreeMap::new(),
                escalated: 0,
            }),
            lag: Mutex::new(BTreeMap::new()),
            lag_seconds: Mutex::new(BTreeMap::new()),
            sinks: Mutex::new(Vec::new()),
            components: Mutex::new(BTreeMap::new()),
            samples: Mutex::new(VecDeque::new()),
            last_sample: Mutex::new(Instant::now()),
            totals: Mutex::new(VecDeque::from([(now_us(), BTreeMap::new())])),
            last_totals: Mutex::new(Instant::now()),
            max_clusters_per_tenant: max_clusters_per_tenant.max(1),
            backlog: Backlog::default(),
            intel: Mutex::new(None),
            handovers: Handovers::default(),
        }
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    // ── writers ──

    /// Sets a component's state for `/ready`.
    pub fn component(&self, name: &str, state: ComponentState, detail: impl Into<String>) {
        lock(&self.components).insert(name.to_string(), Component { state, detail: detail.into() });
    }

    /// A shard's counters (cumulative since its start) and state sizes.
    /// `queued`: alerts waiting in the shard's per-tenant queues.
    pub fn publish_shard(
        &self,
        shard: usize,
        counters: &Counters,
        operators: &[Box<dyn Operator>],
        queued: &[(Arc<str>, u64)],
    ) {
        let mut state = BTreeMap::new();
        for (tenant, n) in queued {
            state.insert(("scheduler", "queued", tenant.clone()), *n);
        }
        for op in operators {
            let name = op.name();
            op.state_sizes(&mut |what, tenant, n| {
                state.insert((name, what, tenant.clone()), n);
            });
        }
        let mut shards = lock(&self.shards);
        if shards.len() <= shard {
            shards.resize_with(shard + 1, ShardView::default);
        }
        shards[shard] = ShardView { counters: counters.clone(), state };
    }

    /// Threat intel and inventories now in force.
    pub fn set_intel(&self, intel: &Intel) {
        *lock(&self.intel) = Some((intel.counts(), now_us()));
    }

    /// What [`Metrics::set_intel`] was last given, and when.
    pub fn intel(&self) -> Option<(IntelCounts, i64)> {
        lock(&self.intel).clone()
    }

    /// The consumer lag of a source's partitions.
    pub fn set_lag(&self, source: &str, lag: &[(String, i64)]) {
        let mut map = lock(&self.lag);
        map.retain(|(s, _), _| s != source);
        for (partition, n) in lag {
            map.insert((source.to_string(), partition.clone()), *n);
        }
    }

    /// The same in seconds of event time, for sources that can tell.
    pub fn set_lag_seconds(&self, source: &str, lag: &[(String, f64)]) {
        let mut map = lock(&self.lag_seconds);
        map.retain(|(s, _), _| s != source);
        for (input, secs) in lag {
            map.insert((source.to_string(), input.clone()), *secs);
        }
    }

    pub fn lag_seconds(&self) -> BTreeMap<(String, String), f64> {
        lock(&self.lag_seconds).clone()
    }

    /// A sink's counters, registered when its dispatcher starts.
    pub fn register_sink(&self, name: &'static str) -> Arc<SinkStats> {
        let stats = Arc::new(SinkStats::default());
        lock(&self.sinks).push((name, stats.clone()));
        stats
    }

    /// The triage latency of a tenant's hand-off, in µs.
    pub fn record_latency(&self, tenant: &str, us: u64) {
        let mut live = lock(&self.live);
        let _ = live.latency.record(us.max(1));
        let h = match live.tenant_latency.get_mut(tenant) {
            Some(h) => h,
            None => live.tenant_latency.entry(tenant.to_string()).or_insert_with(|| latency_histogram(2)),
        };
        let _ = h.record(us.max(1));
    }

    /// An event on its way to the caller.
    pub fn observe(&self, event: &Event) {
        let mut live = lock(&self.live);
        match event {
            Event::Report(kind, report) => {
                let t = live.tenants.entry(report.tenant.clone()).or_default();
                match kind {
                    ReportKind::Escalate => t.escalated += 1,
                    ReportKind::Update => t.updates += 1,
                    ReportKind::Close => t.closed += 1,
                }
                if *kind == ReportKind::Escalate {
                    live.escalated += 1;
                }
                let cap = self.max_clusters_per_tenant;
                record_cluster(live.clusters.entry(report.tenant.clone()).or_default(), *kind, report, cap);
            }
            Event::DeadLetter(d) => {
                *live.dead_letters.entry(d.reason.code()).or_default() += 1;
            }
            Event::Late(l) => live.tenants.entry(l.tenant.clone()).or_default().late += 1,
            Event::Checkpoint(_) => {}
        }
    }

    /// Alerts of a disabled tenant, set aside by the router.
    pub fn count_disabled(&self, tenant: &str, n: u64) {
        let mut live = lock(&self.live);
        match live.tenants.get_mut(tenant) {
            Some(t) => t.disabled += n,
            None => live.tenants.entry(tenant.to_string()).or_default().disabled += n,
        }
    }

    /// Takes a throughput sample when a second has passed since the last.
    pub fn tick(&self) {
        let mut last = lock(&self.last_sample);
        if last.elapsed() < Duration::from_secs(1) {
            return;
        }
        *last = Instant::now();
        let escalated = lock(&self.live).escalated;
        let sample =
            Sample { t: self.started.elapsed().as_secs_f64(), read: self.read.load(Ordering::Relaxed), escalated };
        let mut samples = lock(&self.samples);
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(sample);
        drop(samples);
        let mut last = lock(&self.last_totals);
        if last.elapsed() >= TOTALS_EVERY {
            *last = Instant::now();
            let now = self.tenant_totals();
            let mut totals = lock(&self.totals);
            if totals.len() == TOTALS_KEPT {
                totals.pop_front();
            }
            totals.push_back((now_us(), now));
        }
    }

    /// Every tenant's totals now.
    pub fn tenant_totals(&self) -> BTreeMap<String, TenantTotals> {
        let mut all: BTreeMap<String, TenantTotals> = BTreeMap::new();
        for ((op, metric, tenant), n) in &self.counters().0 {
            let t = all.entry(tenant.to_string()).or_default();
            match (*op, *metric) {
                ("dedup", "records_in") => t.alerts_in += n,
                ("dedup", "duplicates") => t.duplicates += n,
                _ => {}
            }
        }
        for (tenant, e) in &lock(&self.live).tenants {
            let t = all.entry(tenant.clone()).or_default();
            t.escalated = e.escalated;
            t.updates = e.updates;
        }
        all
    }

    /// A tenant's totals between two wall-clock times (µs), to five minutes:
    /// the totals at `to` (`None`: now) minus those at `from`.
    pub fn totals_between(&self, tenant: &str, from_us: i64, to_us: Option<i64>) -> TenantTotals {
        let now = now_us();
        let at = |t: i64| -> TenantTotals {
            if t >= now {
                return self.tenant_totals().get(tenant).copied().unwrap_or_default();
            }
            let totals = lock(&self.totals);
            totals
                .iter()
                .rev()
                .find(|(when, _)| *when <= t)
                .and_then(|(_, m)| m.get(tenant).copied())
                .unwrap_or_default()
        };
        at(to_us.unwrap_or(now)).minus(at(from_us))
    }

    // ── readers ──

    pub fn components(&self) -> BTreeMap<String, Component> {
        lock(&self.components).clone()
    }

    /// Whether every component is ready (none starting or failed).
    pub fn ready(&self) -> bool {
        let c = lock(&self.components);
        !c.is_empty() && c.values().all(|c| c.state == ComponentState::Ready)
    }

    /// Every shard's counters merged.
    pub fn counters(&self) -> Counters {
        let mut all = Counters::default();
        for s in lock(&self.shards).iter() {
            all.merge(&s.counters);
        }
        all
    }

    /// `(operator, what, tenant) → entries`, over all shards.
    pub fn state_sizes(&self) -> BTreeMap<(&'static str, &'static str, Arc<str>), u64> {
        let mut all = BTreeMap::new();
        for s in lock(&self.shards).iter() {
            for (k, v) in &s.state {
                *all.entry(k.clone()).or_default() += v;
            }
        }
        all
    }

    pub fn lag(&self) -> BTreeMap<(String, String), i64> {
        lock(&self.lag).clone()
    }

    pub fn sinks(&self) -> Vec<(&'static str, Arc<SinkStats>)> {
        lock(&self.sinks).clone()
    }

    pub fn latency(&self) -> Histogram<u64> {
        lock(&self.live).latency.clone()
    }

    /// Triage latency per tenant.
    pub fn tenant_latency(&self) -> BTreeMap<String, Histogram<u64>> {
        lock(&self.live).tenant_latency.clone()
    }

    pub fn dead_letters(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.live).dead_letters.clone()
    }

    pub fn tenant_events(&self) -> BTreeMap<String, TenantEvents> {
        lock(&self.live).tenants.clone()
    }

    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).iter().copied().collect()
    }

    /// The tenants known so far: from the shards' counters and the events.
    pub fn tenants(&self) -> Vec<String> {
        let mut names: std::collections::BTreeSet<String> =
            self.counters().0.keys().map(|(_, _, t)| t.to_string()).collect();
        names.extend(lock(&self.live).tenants.keys().cloned());
        names.into_iter().collect()
    }

    /// Clusters matching `filter`, highest score first, at most `limit`.
    pub fn clusters(&self, filter: &ClusterFilter, limit: usize) -> Vec<ClusterRow> {
        let live = lock(&self.live);
        let mut rows: Vec<ClusterRow> = live
            .clusters
            .iter()
            .filter(|(t, _)| filter.tenant.as_deref().is_none_or(|want| want == t.as_str()))
            .flat_map(|(_, m)| m.values())
            .filter(|e| filter.matches(&e.row))
            .map(|e| e.row.clone())
            .collect();
        rows.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| b.updated_us.cmp(&a.updated_us)));
        rows.truncate(limit);
        rows
    }

    /// One cluster's latest case file and the versions this process saw.
    pub fn cluster(&self, tenant: &str, cluster_id: &str) -> Option<(String, Vec<VersionRow>)> {
        let live = lock(&self.live);
        let e = live.clusters.get(tenant)?.get(cluster_id)?;
        Some((e.case.clone(), e.history.iter().cloned().collect()))
    }
}

/// Triage latencies in µs, from 1 µs to an hour, to `digits` significant
/// digits (2 for the per-tenant ones: a few KiB each).
fn latency_histogram(digits: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, digits).expect("valid histogram bounds")
}

fn record_cluster(map: &mut BTreeMap<String, ClusterEntry>, kind: ReportKind, r: &ClusterReport, cap: usize) {
    let now = now_us();
    let row = ClusterRow {
        tenant: r.tenant.clone(),
        cluster_id: r.cluster_id.clone(),
        kind,
        version: r.version,
        score: r.score,
        decision: r.decision.to_string(),
        reason: r.reason.clone(),
        first_seen: r.first_seen.clone(),
        last_seen: r.last_seen.clone(),
        alerts: r.alerts,
        tactics: r.tactics.clone(),
        updated_us: now,
        last_seen_ms: r.last_seen_ms,
    };
    let version = VersionRow { version: r.version, kind, score: r.score, decision: row.decision.clone(), at_us: now };
    let case = case_json(kind, r);
    match map.get_mut(&r.cluster_id) {
        Some(e) => {
            e.row = row;
            e.case = case;
            if e.history.len() == HISTORY {
                e.history.pop_front();
            }
            e.history.push_back(version);
        }
        None => {
            if map.len() >= cap {
                // Make room: the cluster reported longest ago goes.
                if let Some(oldest) = map.iter().min_by_key(|(_, e)| e.row.updated_us).map(|(k, _)| k.clone()) {
                    map.remove(&oldest);
                }
            }
            map.insert(r.cluster_id.clone(), ClusterEntry { row, case, history: VecDeque::from([version]) });
        }
    }
}

/// Which clusters to list.
#[derive(Clone, Debug, Default)]
pub struct ClusterFilter {
    pub tenant: Option<String>,
    pub decision: Option<String>,
    pub min_score: Option<f64>,
    pub max_score: Option<f64>,
    /// Event time bounds on the cluster's last alert (ms since the epoch).
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl ClusterFilter {
    fn matches(&self, r: &ClusterRow) -> bool {
        self.decision.as_deref().is_none_or(|d| d == r.decision)
            && self.min_score.is_none_or(|m| r.score >= m)
            && self.max_score.is_none_or(|m| r.score <= m)
            && self.since_ms.is_none_or(|t| r.last_seen_ms >= t)
            && self.until_ms.is_none_or(|t| r.last_seen_ms <= t)
    }
}
