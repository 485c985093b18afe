//! Fair scheduling between tenants.
//!
//! Two mechanisms, both per tenant:
//!
//! * **In a shard**: a shard that keeps up processes batches as they
//!   arrive. When it falls behind (more is waiting on its channel), the
//!   alerts of a *heavy* tenant (far more in flight than the average
//!   tenant, see [`Backlog::is_heavy`]) go into that tenant's queue
//!   ([`FairQueue`]) instead, and the other tenants' alerts go straight
//!   through, ahead of them. The queues are served by weighted deficit
//!   round robin (`quantum × weight` alerts per turn) whenever nothing else
//!   is waiting, or when they hold `runtime.shard_backlog` alerts in all.
//! * **At the source**: a tenant with more than `runtime.tenant_backlog`
//!   alerts in flight is held back ([`Backlog`]) until it is under half of
//!   that. While other tenants are sending too, a heavy tenant is held back
//!   far sooner, over `runtime.contended_backlog` (times its weight): what
//!   a stage holds of it is then small, and the others' alerts wait behind
//!   little of it in the stages that serve in arrival order (the decoders
//!   and the router). A source that can hold one tenant back (a Kafka topic
//!   per tenant) stops handing its records over meanwhile; they wait
//!   upstream.
//!
//! Results do not depend on the scheduling. A tenant's state depends only
//! on its own alerts and watermarks, in their order (see
//! [`Tenants`](sluice_operators::operator::Tenants)), and that order is
//! kept: a watermark reaches every tenant with nothing queued at once, and
//! is queued behind the alerts of every tenant that has some.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use sluice_operators::hash::{FastMap, FastSet};
use sluice_operators::operator::AlertBatch;
use sluice_operators::policy::Policies;
use sluice_operators::time::EventTime;

/// A shard's batch, its rows grouped by tenant: `(tenant, offset, len)`.
#[derive(Debug)]
pub struct Grouped {
    pub batch: RecordBatch,
    pub groups: Vec<(Arc<str>, usize, usize)>,
}

impl Grouped {
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    /// Each tenant's rows (zero-copy slices).
    pub fn parts(&self) -> impl Iterator<Item = (&Arc<str>, RecordBatch)> {
        self.groups.iter().map(|(t, offset, len)| (t, self.batch.slice(*offset, *len)))
    }
}

/// What to do next for one tenant.
#[derive(Debug)]
pub enum Work {
    /// Process these alerts; `watermark` is the tenant's own watermark.
    Batch { tenant: Arc<str>, batch: AlertBatch, watermark: Option<EventTime> },
    /// Advance this tenant's event time.
    Watermark { tenant: Arc<str>, watermark: EventTime },
}

#[derive(Debug)]
enum Queued {
    Batch(AlertBatch),
    Watermark(EventTime),
}

#[derive(Debug)]
struct TenantQueue {
    items: VecDeque<Queued>,
    rows: usize,
    /// Alerts the tenant may still process in its current turn.
    deficit: usize,
    /// The newest watermark this tenant has been given.
    watermark: Option<EventTime>,
}

/// The per-tenant queues of one shard.
#[derive(Debug)]
pub struct FairQueue {
    queues: FastMap<Arc<str>, TenantQueue>,
    /// Tenants with queued work, in turn order.
    ring: VecDeque<Arc<str>>,
    /// The same tenants, as a set (they miss watermarks until served).
    queued_tenants: FastSet<Arc<str>>,
    rows: usize,
    quantum: usize,
    /// The newest watermark the shard has received.
    watermark: Option<EventTime>,
}

impl FairQueue {
    pub fn new(quantum: usize) -> Self {
        Self {
            queues: FastMap::default(),
            ring: VecDeque::new(),
            queued_tenants: FastSet::default(),
            rows: 0,
            quantum: quantum.max(1),
            watermark: None,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Alerts queued, all tenants.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Alerts queued for one tenant.
    pub fn tenant_rows(&self, tenant: &str) -> usize {
        self.queues.get(tenant).map_or(0, |q| q.rows)
    }

    /// Whether the tenant has anything queued: alerts, or watermarks it has
    /// not been given yet (its next alerts must wait behind them).
    pub fn has(&self, tenant: &str) -> bool {
        self.queues.contains_key(tenant)
    }

    /// Every tenant with queued alerts, and how many.
    pub fn backlog(&self) -> impl Iterator<Item = (&Arc<str>, usize)> {
        self.queues.iter().map(|(t, q)| (t, q.rows))
    }

    /// The shard's watermark (what a tenant with nothing queued has seen).
    pub fn watermark(&self) -> Option<EventTime> {
        self.watermark
    }

    /// Queues one tenant's alerts.
    pub fn push(&mut self, tenant: &Arc<str>, batch: RecordBatch) {
        let rows = batch.num_rows();
        if rows == 0 {
            return;
        }
        let shard_watermark = self.watermark;
        let q = self.queues.entry(tenant.clone()).or_insert_with(|| TenantQueue {
            items: VecDeque::new(),
            rows: 0,
            deficit: 0,
            watermark: shard_watermark,
        });
        if q.items.is_empty() {
            self.ring.push_back(tenant.clone());
            self.queued_tenants.insert(tenant.clone());
        }
        q.items.push_back(Queued::Batch(AlertBatch::new(batch)));
        q.rows += rows;
        self.rows += rows;
    }

    /// The shard's watermark advances: queued behind every tenant that has
    /// alerts queued. Returns those tenants; every other tenant takes the
    /// watermark now.
    pub fn advance(&mut self, wm: EventTime) -> &FastSet<Arc<str>> {
        self.watermark = Some(wm);
        for tenant in &self.ring {
            if let Some(q) = self.queues.get_mut(tenant) {
                q.items.push_back(Queued::Watermark(wm));
            }
        }
        &self.queued_tenants
    }

    /// The next piece of work: from the tenant whose turn it is, at most
    /// the rest of its turn's alerts (a batch is split where the turn ends).
    pub fn next(&mut self, weight: impl Fn(&str) -> u32) -> Option<Work> {
        let tenant = self.ring.front()?.clone();
        let q = self.queues.get_mut(&tenant).expect("a tenant in the ring has a queue");
        if q.deficit == 0 {
            q.deficit = self.quantum.saturating_mul(weight(&tenant).max(1) as usize);
        }
        let work = match q.items.pop_front().expect("a tenant in the ring has queued work") {
            Queued::Watermark(wm) => {
                q.watermark = Some(wm);
                Work::Watermark { tenant: tenant.clone(), watermark: wm }
            }
            Queued::Batch(b) => {
                let rows = b.num_rows();
                let batch = if rows > q.deficit {
                    // The turn ends inside this batch: the rest waits.
                    let take = q.deficit;
                    q.items.push_front(Queued::Batch(AlertBatch::new(b.batch.slice(take, rows - take))));
                    AlertBatch::new(b.batch.slice(0, take))
                } else {
                    b
                };
                let n = batch.num_rows();
                q.deficit -= n;
                q.rows -= n;
                self.rows -= n;
                Work::Batch { tenant: tenant.clone(), batch, watermark: q.watermark }
            }
        };
        if q.items.is_empty() {
            self.queues.remove(&tenant);
            self.queued_tenants.remove(&tenant);
            self.ring.pop_front();
        } else if q.deficit == 0 {
            self.ring.rotate_left(1);
        }
        Some(work)
    }
}

/// Every tenant's alerts in flight, and which tenants are held back at the
/// source because of it.
///
/// Alerts enter ([`Backlog::entered`]) when the router sends them to their
/// shard and leave ([`Backlog::left`]) when the shard has processed them.
/// When the source knows a chunk's tenant (a Kafka topic per tenant), they
/// already enter when read, and leave the router's count once routed: then
/// the count covers the decoders' queues too, wherever the pipeline is
/// slowest. A tenant with more than the limit in flight is held back until
/// it is under half of it.
///
/// The limit is `runtime.tenant_backlog` when the tenant has the pipeline
/// to itself, and `runtime.contended_backlog` times its weight when it is
/// heavy (more than four times the others' average in flight) and another
/// tenant sent alerts within the last [`CONTENDED_FOR`]: a lone tenant gets
/// the whole pipeline, a flooding one no more than a small share of each
/// stage's queue.
#[derive(Debug, Default)]
pub struct Backlog {
    inner: Mutex<BacklogInner>,
    /// Bumped whenever the set of held tenants changes, so a source
    /// notices without locking.
    generation: AtomicU64,
}

/// How recently another tenant must have sent alerts for a tenant to
/// share the pipeline (and be held to `runtime.contended_backlog`).
pub const CONTENDED_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct BacklogInner {
    tenants: FastMap<Arc<str>, TenantBacklog>,
    /// Alerts in flight, all tenants.
    total: u64,
    /// Tenants with alerts in flight.
    active: u64,
    /// `None`: nobody is held back.
    limits: Option<Limits>,
    /// The tenant that sent alerts last, and before it the last other one
    /// that did, with when each last did.
    last: [Option<(Arc<str>, Instant)>; 2],
    /// Scheduling weights (from the policy).
    policies: Arc<Policies>,
}

/// When a tenant is held back (see [`Backlog`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// `runtime.tenant_backlog`: alone, or not heavy.
    pub alone: u64,
    /// `runtime.contended_backlog`, per unit of weight: heavy while others
    /// send too.
    pub contended: u64,
}

impl BacklogInner {
    /// Whether a tenant other than `tenant` sent alerts since `now -
    /// CONTENDED_FOR`.
    fn contended(&self, tenant: &str, now: Instant) -> bool {
        self.last
            .iter()
            .flatten()
            .find(|(t, _)| **t != *tenant)
            .is_some_and(|(_, at)| now.saturating_duration_since(*at) < CONTENDED_FOR)
    }

    /// The most `tenant` may have in flight before it is held back.
    fn limit(&self, tenant: &str, in_flight: u64, now: Instant) -> Option<u64> {
        let limits = self.limits?;
        let weight = u64::from(self.policies.weight(tenant));
        let others = self.active - u64::from(in_flight > 0);
        let others_average = (self.total - in_flight) / others.max(1);
        let heavy = in_flight > 4 * others_average * weight;
        if heavy && self.contended(tenant, now) {
            Some(limits.alone.min(limits.contended.saturating_mul(weight)))
        } else {
            Some(limits.alone)
        }
    }

    fn sent(&mut self, tenant: &Arc<str>, now: Instant) {
        match &mut self.last[0] {
            Some((t, at)) if *t == *tenant => *at = now,
            _ => {
                self.last[1] = self.last[0].take();
                self.last[0] = Some((tenant.clone(), now));
            }
        }
    }
}

#[derive(Debug, Default)]
struct TenantBacklog {
    in_flight: u64,
    held_since: Option<Instant>,
    /// The limit it was held back over.
    held_limit: u64,
    /// Time held in finished spells.
    held: Duration,
    spells: u64,
}

/// A tenant's backlog as the metrics show it.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantBacklogReport {
    pub tenant: Arc<str>,
    pub in_flight: u64,
    pub held: bool,
    pub held_secs: f64,
    pub spells: u64,
}

impl Backlog {
    /// Sets the limits for this run (`None`: never hold anyone back).
    pub fn configure(&self, limits: Option<Limits>) {
        self.lock().limits = limits;
    }

    /// The tenants' scheduling weights, from the policy in force.
    pub fn set_policies(&self, policies: Arc<Policies>) {
        self.lock().policies = policies;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BacklogInner> {
        self.inner.lock().expect("tenant backlog")
    }

    /// `n` more of the tenant's alerts are in flight.
    pub fn entered(&self, tenant: &Arc<str>, n: u64) {
        self.entered_at(tenant, n, Instant::now());
    }

    fn entered_at(&self, tenant: &Arc<str>, n: u64, now: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        inner.sent(tenant, now);
        let t = inner.tenants.entry(tenant.clone()).or_default();
        if t.in_flight == 0 {
            inner.active += 1;
        }
        t.in_flight += n;
        inner.total += n;
        let in_flight = t.in_flight;
        let limit = inner.limit(tenant, in_flight, now);
        let t = inner.tenants.get_mut(tenant).expect("just entered");
        if let Some(limit) = limit.filter(|&l| t.in_flight > l)
            && t.held_since.is_none()
        {
            t.held_since = Some(Instant::now());
            t.held_limit = limit;
            t.spells += 1;
            self.generation.fetch_add(1, Ordering::Release);
            tracing::debug!(tenant = %tenant, in_flight = t.in_flight, limit, "tenant held back: more of its alerts in flight than its limit (runtime.tenant_backlog, or runtime.contended_backlog while others send)");
        }
    }

    /// `n` of the tenant's alerts are no longer in flight.
    pub fn left(&self, tenant: &str, n: u64) {
        self.left_at(tenant, n, Instant::now());
    }

    fn left_at(&self, tenant: &str, n: u64, now: Instant) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let Some(t) = inner.tenants.get_mut(tenant) else { return };
        let n = n.min(t.in_flight);
        let was = t.in_flight;
        t.in_flight -= n;
        inner.total -= n;
        if was > 0 && t.in_flight == 0 {
            inner.active -= 1;
        }
        // Released under half of the limit it was held over, or of
        // `tenant_backlog` once the others stop sending (not when it merely
        // stops being heavy on the way down: holds would flap).
        let held_limit = t.held_limit;
        let limit =
            if inner.contended(tenant, now) { held_limit } else { inner.limits.map_or(0, |l| l.alone.max(held_limit)) };
        let t = inner.tenants.get_mut(tenant).expect("looked up above");
        if let Some(since) = t.held_since
            && t.in_flight <= limit / 2
        {
            t.held += since.elapsed();
            t.held_since = None;
            self.generation.fetch_add(1, Ordering::Release);
            tracing::debug!(tenant, "tenant released");
        }
    }

    /// Whether the tenant has far more in flight than its share: more than
    /// a turn (`quantum × weight`) and more than four times the average of
    /// the tenants with alerts in flight, times its weight.
    pub fn is_heavy(&self, tenant: &str, weight: u32, quantum: usize) -> bool {
        let inner = self.lock();
        let Some(t) = inner.tenants.get(tenant) else { return false };
        let weight = u64::from(weight.max(1));
        let average = inner.total / inner.active.max(1);
        t.in_flight > quantum as u64 * weight && t.in_flight > 4 * average * weight
    }

    pub fn in_flight(&self, tenant: &str) -> u64 {
        self.lock().tenants.get(tenant).map_or(0, |t| t.in_flight)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The tenants held back now.
    pub fn held(&self) -> Vec<Arc<str>> {
        self.lock().tenants.iter().filter(|(_, t)| t.held_since.is_some()).map(|(k, _)| k.clone()).collect()
    }

    /// Every tenant seen, by name.
    pub fn report(&self) -> Vec<TenantBacklogReport> {
        let inner = self.lock();
        let mut out: Vec<_> = inner
            .tenants
            .iter()
            .map(|(tenant, t)| {
                let running = t.held_since.map(|s| s.elapsed());
                TenantBacklogReport {
                    tenant: tenant.clone(),
                    in_flight: t.in_flight,
                    held: running.is_some(),
                    held_secs: (t.held + running.unwrap_or_default()).as_secs_f64(),
                    spells: t.spells,
                }
            })
            .collect();
        out.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};
    use sluice_operators::policy::TenantPolicy;

    fn rows(values: std::ops::Range<i64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(values))]).unwrap()
    }

    fn first_value(b: &AlertBatch) -> i64 {
        b.batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().value(0)
    }

    /// Drains the queue, as (tenant, rows or watermark) in serving order.
    fn drain(q: &mut FairQueue, weight: impl Fn(&str) -> u32) -> Vec<(String, String)> {
        let mut out = Vec::new();
        while let Some(w) = q.next(&weight) {
            out.push(match w {
                Work::Batch { tenant, batch, .. } => {
                    (tenant.to_string(), format!("{}+{}", first_value(&batch), batch.num_rows()))
                }
                Work::Watermark { tenant, watermark } => (tenant.to_string(), format!("wm{watermark}")),
            });
        }
        out
    }

    #[test]
    fn a_flooding_tenant_waits_behind_its_own_alerts_not_the_others() {
        let (flood, quiet): (Arc<str>, Arc<str>) = ("flood".into(), "quiet".into());
        let mut q = FairQueue::new(10);
        q.push(&flood, rows(0..100));
        q.push(&quiet, rows(1000..1005));
        assert_eq!(q.rows(), 105);
        let served = drain(&mut q, |_| 1);
        // The flood gets one turn of 10, then the quiet tenant is served in
        // full, then the flood carries on.
        assert_eq!(served[0], ("flood".to_string(), "0+10".to_string()));
        assert_eq!(served[1], ("quiet".to_string(), "1000+5".to_string()));
        assert_eq!(served[2], ("flood".to_string(), "10+10".to_string()));
        assert_eq!(served.len(), 11);
        assert!(q.is_empty());
        assert_eq!(q.rows(), 0);
    }

    #[test]
    fn weights_set_the_share_of_each_turn() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut q = FairQueue::new(10);
        q.push(&a, rows(0..100));
        q.push(&b, rows(0..100));
        let served = drain(&mut q, |t| if t == "b" { 3 } else { 1 });
        assert_eq!(served[0], ("a".to_string(), "0+10".to_string()));
        assert_eq!(served[1], ("b".to_string(), "0+30".to_string()));
        assert_eq!(served[2], ("a".to_string(), "10+10".to_string()));
    }

    #[test]
    fn watermarks_stay_in_order_with_each_tenants_alerts() {
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        let mut q = FairQueue::new(4);
        q.push(&a, rows(0..6));
        // Only `a` has alerts queued: it misses the watermark for now.
        let held: Vec<String> = q.advance(100).iter().map(|t| t.to_string()).collect();
        assert_eq!(held, ["a"]);
        q.push(&b, rows(50..52));
        q.push(&a, rows(6..8));
        let served = drain(&mut q, |_| 1);
        assert_eq!(
            served,
            [
                ("a".to_string(), "0+4".to_string()),
                ("b".to_string(), "50+2".to_string()),
                ("a".to_string(), "4+2".to_string()),
                ("a".to_string(), "wm100".to_string()),
                ("a".to_string(), "6+2".to_string()),
            ]
        );
        assert_eq!(q.watermark(), Some(100));
    }

    #[test]
    fn a_tenant_with_only_watermarks_left_still_has_a_queue() {
        let a: Arc<str> = "a".into();
        let mut q = FairQueue::new(100);
        q.push(&a, rows(0..5));
        q.advance(10);
        assert!(matches!(q.next(|_| 1), Some(Work::Batch { .. })));
        assert_eq!(q.tenant_rows("a"), 0);
        assert!(q.has("a"), "its watermark is still queued: new alerts must wait behind it");
        assert!(matches!(q.next(|_| 1), Some(Work::Watermark { watermark: 10, .. })));
        assert!(!q.has("a") && q.is_empty());
    }

    #[test]
    fn a_batch_carries_its_tenants_own_watermark() {
        let a: Arc<str> = "a".into();
        let mut q = FairQueue::new(100);
        q.advance(10);
        q.push(&a, rows(0..1));
        q.advance(20);
        q.push(&a, rows(1..2));
        let mut marks = Vec::new();
        while let Some(w) = q.next(|_| 1) {
            if let Work::Batch { watermark, .. } = w {
                marks.push(watermark);
            }
        }
        assert_eq!(marks, [Some(10), Some(20)]);
    }

    #[test]
    fn a_tenant_over_its_backlog_is_held_back_until_under_half() {
        let backlog = Backlog::default();
        backlog.configure(Some(Limits { alone: 100, contended: 100 }));
        let (flood, quiet): (Arc<str>, Arc<str>) = ("flood".into(), "quiet".into());
        let g = backlog.generation();
        backlog.entered(&quiet, 10);
        backlog.entered(&flood, 100);
        assert!(backlog.held().is_empty(), "at the limit, not over it");
        backlog.entered(&flood, 1);
        backlog.entered(&flood, 50);
        assert_eq!(backlog.held(), std::slice::from_ref(&flood));
        assert_eq!(backlog.generation(), g + 1, "held once, however much more comes");
        backlog.left("flood", 100);
        assert_eq!(backlog.held().len(), 1, "51 in flight is over half of 100");
        backlog.left("flood", 1);
        assert!(backlog.held().is_empty());
        assert_eq!(backlog.generation(), g + 2);
        let report = backlog.report();
        assert_eq!(report.len(), 2);
        assert_eq!(
            (report[0].tenant.as_ref(), report[0].in_flight, report[0].held, report[0].spells),
            ("flood", 50, false, 1)
        );
        assert_eq!((report[1].tenant.as_ref(), report[1].in_flight), ("quiet", 10));
        backlog.left("quiet", 10);
        let report = backlog.report();
        assert_eq!((report[1].tenant.as_ref(), report[1].in_flight), ("quiet", 0), "still reported, at 0");
    }

    #[test]
    fn heavy_means_far_over_the_average_share() {
        let backlog = Backlog::default();
        let tenants: Vec<Arc<str>> = (0..10).map(|i| Arc::from(format!("t{i}"))).collect();
        for t in &tenants {
            backlog.entered(t, 1000);
        }
        assert!(!backlog.is_heavy("t0", 1, 100), "an even share is not heavy");
        backlog.entered(&tenants[0], 60_000);
        assert!(backlog.is_heavy("t0", 1, 100));
        assert!(!backlog.is_heavy("t0", 1, 100_000), "not more than a turn");
        assert!(!backlog.is_heavy("t0", 50, 100), "its weight gives it a larger share");
        assert!(!backlog.is_heavy("t1", 1, 100));
        assert!(!backlog.is_heavy("unknown", 1, 100));
    }

    /// A backlog with these limits, and a clock: milliseconds from now.
    fn limited(alone: u64, contended: u64) -> (Backlog, impl Fn(u64) -> Instant) {
        let backlog = Backlog::default();
        backlog.configure(Some(Limits { alone, contended }));
        let t0 = Instant::now();
        (backlog, move |ms| t0 + Duration::from_millis(ms))
    }

    #[test]
    fn a_lone_tenant_is_held_back_only_over_tenant_backlog() {
        let (backlog, _) = limited(1000, 10);
        let flood: Arc<str> = "flood".into();
        backlog.entered(&flood, 1000);
        assert!(backlog.held().is_empty(), "nobody else sends: the whole pipeline is its own");
        backlog.entered(&flood, 1);
        assert_eq!(backlog.held(), [flood]);
    }

    #[test]
    fn a_heavy_tenant_is_held_back_over_contended_backlog_while_others_send() {
        let (backlog, at) = limited(1000, 10);
        let (flood, quiet): (Arc<str>, Arc<str>) = ("flood".into(), "quiet".into());
        backlog.entered_at(&quiet, 1, at(0));
        backlog.entered_at(&flood, 10, at(1));
        assert!(backlog.held().is_empty(), "at the contended limit, not over it");
        backlog.entered_at(&flood, 1, at(2));
        assert_eq!(backlog.held(), std::slice::from_ref(&flood));
        // Released under half of the contended limit while quiet still sends.
        backlog.left_at("flood", 5, at(3));
        assert_eq!(backlog.held().len(), 1, "6 in flight is over half of 10");
        backlog.left_at("flood", 1, at(4));
        assert!(backlog.held().is_empty());
        // The quiet tenant itself is never heavy next to the flood.
        backlog.entered_at(&flood, 200, at(5));
        backlog.entered_at(&quiet, 20, at(6));
        assert_eq!(backlog.held(), std::slice::from_ref(&flood));
    }

    #[test]
    fn a_held_tenant_is_released_under_half_its_limit_not_when_it_stops_being_heavy() {
        let (backlog, at) = limited(100_000, 1000);
        let (flood, busy): (Arc<str>, Arc<str>) = ("flood".into(), "busy".into());
        backlog.entered_at(&busy, 300, at(0));
        backlog.entered_at(&flood, 1300, at(1));
        assert_eq!(backlog.held(), std::slice::from_ref(&flood), "heavy: over 4 × 300 and over 1000");
        backlog.left_at("flood", 200, at(2));
        assert_eq!(backlog.held().len(), 1, "1100 is no longer heavy, but over half of 1000");
        backlog.left_at("flood", 600, at(3));
        assert!(backlog.held().is_empty());
    }

    #[test]
    fn a_held_tenant_goes_on_once_the_others_stop_sending() {
        let (backlog, at) = limited(1000, 10);
        let (flood, quiet): (Arc<str>, Arc<str>) = ("flood".into(), "quiet".into());
        backlog.entered_at(&quiet, 1, at(0));
        backlog.entered_at(&flood, 400, at(10));
        assert_eq!(backlog.held(), std::slice::from_ref(&flood));
        backlog.left_at("quiet", 1, at(20));
        backlog.left_at("flood", 1, at(500));
        assert_eq!(backlog.held().len(), 1, "quiet sent within the last second");
        backlog.left_at("flood", 1, at(1100));
        assert!(backlog.held().is_empty(), "alone again: 398 is under half of tenant_backlog");
        backlog.entered_at(&flood, 100, at(1200));
        assert!(backlog.held().is_empty(), "and it is not held back again while alone");
    }

    #[test]
    fn weight_raises_the_contended_limit() {
        let (backlog, _) = limited(1000, 10);
        let tenants = [("big".to_string(), TenantPolicy { weight: Some(5), ..TenantPolicy::default() })];
        backlog.set_policies(Arc::new(Policies::new(tenants.into_iter().collect())));
        let (big, quiet): (Arc<str>, Arc<str>) = ("big".into(), "quiet".into());
        backlog.entered(&quiet, 1);
        backlog.entered(&big, 50);
        assert!(backlog.held().is_empty(), "5 × 10 in flight is its share");
        backlog.entered(&big, 1);
        assert_eq!(backlog.held(), [big]);
    }
}
