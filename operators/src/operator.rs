//! The operator contract: pure, stateful transformations of alert batches.
//!
//! An operator holds state and transforms batches; it does no I/O and knows no
//! clock but event time, which advances only through [`Operator::on_watermark`].
//! That makes operators deterministic (the same input gives the same output
//! whatever the batch size), testable without a runtime, and checkpointable
//! through [`Operator::snapshot`] / [`Operator::restore`].

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;

use crate::cluster::ClusterReport;
use crate::detection::Detection;
use crate::error::Result;
use crate::hash::FastSet;
use crate::time::EventTime;

/// A batch of alerts plus the per-row marks operators add on the way.
#[derive(Clone, Debug)]
pub struct AlertBatch {
    pub batch: RecordBatch,
    /// Set by dedup: per-row fingerprint and whether the row repeats an alert
    /// already passed within the dedup window.
    pub dedup: Option<DedupMarks>,
}

/// Per-row dedup results, aligned with the batch rows.
#[derive(Clone, Debug, Default)]
pub struct DedupMarks {
    pub fingerprint: Vec<u64>,
    pub duplicate: Vec<bool>,
}

impl AlertBatch {
    pub fn new(batch: RecordBatch) -> Self {
        Self { batch, dedup: None }
    }
    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }
}

/// What a cluster report means to the hand-off.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ReportKind {
    /// The cluster crossed the escalation threshold: hand it off now.
    Escalate,
    /// A handed-off cluster gained a tactic or enough score: send an update.
    Update,
    /// The cluster's windows have all closed on the watermark: final state.
    Close,
}

/// Anything an operator emits.
#[derive(Debug)]
pub enum Output {
    Batch(AlertBatch),
    /// A rule's finding; flows downstream like a batch.
    Detection(Box<Detection>),
    Cluster(ReportKind, Box<ClusterReport>),
}

/// Receives an operator's outputs.
pub trait Collector {
    fn collect(&mut self, output: Output);
}

impl Collector for Vec<Output> {
    fn collect(&mut self, output: Output) {
        self.push(output);
    }
}

/// Per-tenant counters an operator reports (`records_in`, `evicted`, …).
/// Keys are `(operator, metric, tenant)`; tenants never share a counter.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters(pub BTreeMap<(&'static str, &'static str, Arc<str>), u64>);

impl Counters {
    pub fn add(&mut self, operator: &'static str, metric: &'static str, tenant: &Arc<str>, n: u64) {
        if n > 0 {
            *self.0.entry((operator, metric, tenant.clone())).or_default() += n;
        }
    }
    pub fn merge(&mut self, other: &Counters) {
        for (k, v) in &other.0 {
            *self.0.entry(k.clone()).or_default() += v;
        }
    }
    /// Sum of one metric over all tenants.
    pub fn total(&self, operator: &str, metric: &str) -> u64 {
        self.0.iter().filter(|((o, m, _), _)| *o == operator && *m == metric).map(|(_, v)| v).sum()
    }
}

/// What an operator may know besides its input: the watermark of the
/// tenants in the batch at hand and where to count things.
#[derive(Debug, Default)]
pub struct Context {
    pub watermark: Option<EventTime>,
    pub counters: Counters,
}

/// The tenants a watermark advances.
///
/// A tenant's state depends only on its own alerts and watermarks, in their
/// order. That lets a shard schedule tenants fairly: a tenant with queued
/// alerts is held back (`Except`) and receives the watermarks it missed
/// later, in order with its alerts (`Only`), with the same results.
#[derive(Clone, Copy, Debug)]
pub enum Tenants<'a> {
    All,
    Only(&'a str),
    Except(&'a FastSet<Arc<str>>),
}

impl Tenants<'_> {
    pub fn includes(&self, tenant: &str) -> bool {
        match self {
            Tenants::All => true,
            Tenants::Only(t) => *t == tenant,
            Tenants::Except(held) => !held.contains(tenant),
        }
    }
}

/// A pure, stateful stage of the pipeline.
pub trait Operator: Send {
    /// Stable name, used in metrics and snapshots.
    fn name(&self) -> &'static str;

    /// Transforms one batch, emitting zero or more outputs.
    fn process(&mut self, batch: AlertBatch, ctx: &mut Context, out: &mut dyn Collector) -> Result<()>;

    /// A detection from an upstream rule stage; passed on unchanged unless
    /// the operator consumes detections.
    fn on_detection(&mut self, detection: Box<Detection>, _ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        out.collect(Output::Detection(detection));
        Ok(())
    }

    /// Event time has advanced to `wm` for `tenants`: close their windows,
    /// expire their state. Other tenants' state must not change.
    fn on_watermark(
        &mut self,
        _wm: EventTime,
        _tenants: Tenants<'_>,
        _ctx: &mut Context,
        _out: &mut dyn Collector,
    ) -> Result<()> {
        Ok(())
    }

    /// End of input: flush everything still open.
    fn on_end(&mut self, _ctx: &mut Context, _out: &mut dyn Collector) -> Result<()> {
        Ok(())
    }

    /// All state, serialized for a checkpoint.
    fn snapshot(&self) -> Result<Vec<u8>> {
        Ok(Vec::new())
    }

    /// Replaces all state with a snapshot taken by [`Operator::snapshot`].
    fn restore(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }

    /// One tenant's state, to move the tenant to another instance (a Kafka
    /// partition changing hands); `None` when the operator holds nothing of
    /// it. Taken in by [`Operator::absorb`]. An operator that keeps state
    /// (overrides [`Operator::snapshot`]) must override this, `absorb` and
    /// `forget` too, or its state is lost when a partition moves.
    fn snapshot_tenant(&self, _tenant: &str) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Takes in state from [`Operator::snapshot_tenant`] (or
    /// [`Operator::snapshot`]), replacing the state of the tenants in it and
    /// keeping every other tenant's.
    fn absorb(&mut self, _state: &[u8]) -> Result<()> {
        Ok(())
    }

    /// Drops a tenant's state: the tenant moved to another instance.
    fn forget(&mut self, _tenant: &str) {}

    /// A configuration change while running (a new rule set, say). Each
    /// operator takes the updates of its own type and keeps its state;
    /// others ignore them.
    fn reconfigure(&mut self, _update: &(dyn std::any::Any + Send + Sync)) -> Result<()> {
        Ok(())
    }

    /// The size of the live state, per tenant, for metrics: calls `out`
    /// with `(what, tenant, entries)` (`clusters`, `entities`, …).
    fn state_sizes(&self, _out: &mut dyn FnMut(&'static str, &Arc<str>, u64)) {}
}

/// A linear chain of operators: batches flow from each operator into the
/// next; everything else is handed to the caller's collector.
pub struct Chain {
    operators: Vec<Box<dyn Operator>>,
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.operators.iter().map(|o| o.name()).collect();
        f.debug_struct("Chain").field("operators", &names).finish()
    }
}

impl Chain {
    pub fn new(operators: Vec<Box<dyn Operator>>) -> Self {
        Self { operators }
    }

    pub fn operators(&self) -> &[Box<dyn Operator>] {
        &self.operators
    }

    pub fn operators_mut(&mut self) -> &mut [Box<dyn Operator>] {
        &mut self.operators
    }

    /// Pushes one batch through every operator.
    pub fn process(&mut self, batch: AlertBatch, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        self.run_from(0, vec![Output::Batch(batch)], ctx, out)
    }

    /// Advances event time for `tenants` in every operator, in order, so
    /// downstream operators see what upstream ones flushed before their own
    /// watermark.
    pub fn on_watermark(
        &mut self,
        wm: EventTime,
        tenants: Tenants<'_>,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        ctx.watermark = Some(wm);
        for i in 0..self.operators.len() {
            let mut produced = Vec::new();
            self.operators[i].on_watermark(wm, tenants, ctx, &mut produced)?;
            self.run_from(i + 1, produced, ctx, out)?;
        }
        Ok(())
    }

    /// Hands a configuration change to every operator.
    pub fn reconfigure(&mut self, update: &(dyn std::any::Any + Send + Sync)) -> Result<()> {
        self.operators.iter_mut().try_for_each(|op| op.reconfigure(update))
    }

    /// Flushes every operator at end of input.
    pub fn on_end(&mut self, ctx: &mut Context, out: &mut dyn Collector) -> Result<()> {
        for i in 0..self.operators.len() {
            let mut produced = Vec::new();
            self.operators[i].on_end(ctx, &mut produced)?;
            self.run_from(i + 1, produced, ctx, out)?;
        }
        Ok(())
    }

    fn run_from(
        &mut self,
        start: usize,
        mut pending: Vec<Output>,
        ctx: &mut Context,
        out: &mut dyn Collector,
    ) -> Result<()> {
        let start = start.min(self.operators.len());
        for op in &mut self.operators[start..] {
            let mut next = Vec::new();
            for item in pending {
                match item {
                    Output::Batch(b) => op.process(b, ctx, &mut next)?,
                    Output::Detection(d) => op.on_detection(d, ctx, &mut next)?,
                    other => out.collect(other),
                }
            }
            pending = next;
        }
        for item in pending {
            out.collect(item);
        }
        Ok(())
    }
}
