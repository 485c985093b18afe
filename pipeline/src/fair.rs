//! Fair scheduling between the tenants of a shard.
//!
//! A shard that keeps up processes batches as they arrive. When it falls
//! behind (more is waiting on its channel), it takes what is waiting into a
//! queue per tenant and serves the queues by weighted deficit round robin:
//! each turn a tenant may process up to `quantum × weight` alerts. A tenant
//! that floods the shard then waits behind its own alerts, and the others
//! do not wait behind it.
//!
//! Results do not depend on the scheduling. A tenant's state depends only
//! on its own alerts and watermarks, in their order (see
//! [`Tenants`](sluice_operators::operator::Tenants)), and that order is
//! kept: a watermark reaches every tenant with nothing queued at once, and
//! is queued behind the alerts of every tenant that has some.
//!
//! A tenant whose queue passes `tenant_backlog` alerts is *held back*
//! ([`HeldBack`]): sources that can pause one tenant (a Kafka topic per
//! tenant) stop reading it until its queue is below half of that. Held-back
//! time is a metric, so a slowed tenant is visible.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use sluice_operators::hash::{FastMap, FastSet};
use sluice_operators::operator::AlertBatch;
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

/// Tenants held back at the source, and for how long in all.
#[derive(Debug, Default)]
pub struct HeldBack {
    inner: Mutex<HeldInner>,
    /// Bumped on every change, so a source notices without locking.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct HeldInner {
    /// Held now, since when.
    now: FastMap<Arc<str>, Instant>,
    /// Time held in finished spells.
    total: FastMap<Arc<str>, Duration>,
    /// Spells, per tenant.
    spells: FastMap<Arc<str>, u64>,
}

impl HeldBack {
    pub fn hold(&self, tenant: &Arc<str>) {
        let mut inner = self.inner.lock().expect("held-back tenants");
        if !inner.now.contains_key(tenant) {
            inner.now.insert(tenant.clone(), Instant::now());
            *inner.spells.entry(tenant.clone()).or_default() += 1;
            self.generation.fetch_add(1, Ordering::Release);
            tracing::info!(tenant = %tenant, "tenant held back: its queue is over runtime.tenant_backlog");
        }
    }

    pub fn release(&self, tenant: &str) {
        let mut inner = self.inner.lock().expect("held-back tenants");
        if let Some((tenant, since)) = inner.now.remove_entry(tenant) {
            *inner.total.entry(tenant.clone()).or_default() += since.elapsed();
            self.generation.fetch_add(1, Ordering::Release);
            tracing::info!(tenant = %tenant, "tenant released");
        }
    }

    pub fn is_held(&self, tenant: &str) -> bool {
        self.inner.lock().expect("held-back tenants").now.contains_key(tenant)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The tenants held now.
    pub fn current(&self) -> FastSet<Arc<str>> {
        self.inner.lock().expect("held-back tenants").now.keys().cloned().collect()
    }

    /// Per tenant ever held: whether held now, seconds held in all, spells.
    pub fn report(&self) -> Vec<(Arc<str>, bool, f64, u64)> {
        let inner = self.inner.lock().expect("held-back tenants");
        let mut out: Vec<_> = inner
            .spells
            .iter()
            .map(|(t, spells)| {
                let running = inner.now.get(t).map(Instant::elapsed);
                let total = inner.total.get(t).copied().unwrap_or_default() + running.unwrap_or_default();
                (t.clone(), running.is_some(), total.as_secs_f64(), *spells)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

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
    fn held_back_time_adds_up_per_tenant() {
        let held = HeldBack::default();
        let t: Arc<str> = "flood".into();
        let g = held.generation();
        held.hold(&t);
        held.hold(&t);
        assert!(held.is_held("flood"));
        assert_eq!(held.generation(), g + 1, "holding twice is one change");
        held.release("flood");
        held.release("flood");
        assert_eq!(held.generation(), g + 2);
        held.hold(&t);
        let report = held.report();
        assert_eq!(report.len(), 1);
        assert_eq!((report[0].1, report[0].3), (true, 2));
        assert!(held.current().contains("flood"));
    }
}
