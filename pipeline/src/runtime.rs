//! The runtime: threads, bounded channels, sharding and watermarks.
//!
//! ```text
//!  source ─► decoders (N) ─► router ─► shards (S) ─► events ─► caller
//!  thread     threads         thread    threads      channel   (main thread)
//! ```
//!
//! * The **source** thread reads chunks and numbers them.
//! * **Decoders** turn chunks into Arrow batches in parallel; dead letters
//!   go straight on.
//! * The **router** puts batches back in input order, tracks the watermark,
//!   marks late records, splits each batch by tenant shard (a tenant lives on
//!   exactly one shard) and cuts batches where the watermark steps.
//! * Each **shard** owns a chain of operators (dedup → correlate) and the
//!   state of its tenants: no locks on the hot path.
//! * The caller receives [`Event`]s on its own thread and acknowledges each
//!   by returning; triage latency is measured at that point.
//!
//! Every channel is bounded, so a slow consumer slows the source.
//!
//! **Checkpoints** ride the same channels as barriers (see `checkpoint.rs`):
//! the source thread sends one on the configured interval and at shutdown,
//! with its position; the router forwards it to every shard after all
//! earlier records and adds its watermarks; each shard snapshots its
//! operators when the barrier reaches it. The caller's thread assembles the
//! parts, has its sinks make everything before the barrier durable
//! ([`Event::Checkpoint`]), writes the checkpoint and only then lets the
//! source commit upstream.
//!
//! **State per partition** (Kafka, checkpoints on): the router records which
//! partition each tenant's alerts arrive on, the shards snapshot each tenant
//! apart, and a checkpoint is written as one part per partition (see
//! `checkpoint.rs`). When the group takes partitions away, the source thread
//! stops, has a checkpoint written and committed, has the shards forget the
//! tenants of those partitions and only then lets them go; when partitions
//! arrive, it loads their parts, has the shards take the tenants' state in
//! and only then starts reading them, at the parts' offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use crossbeam_channel::{Receiver, Sender, bounded};
use hdrhistogram::Histogram;
use serde::Serialize;
use sluice_connectors::source::{Handover, InputChange, InputPosition, InputStart, Source, StopFlag, now_us};
use sluice_operators::cluster::ClusterReport;
use sluice_operators::correlate::{Correlate, CorrelateConfig, Priors};
use sluice_operators::dead_letter::DeadLetter;
use sluice_operators::decode::{ChunkTenant, DecodeConfig, DecodeStats, Decoder, RawChunk};
use sluice_operators::dedup::Dedup;
use sluice_operators::hash::stable_hash;
use sluice_operators::intel::Intel;
use sluice_operators::operator::{AlertBatch, Chain, Context, Counters, Operator, Output, ReportKind, Tenants};
use sluice_operators::policy::Policies;
use sluice_operators::schema::AlertColumns;
use sluice_operators::time::{EventTime, Rfc3339};

use crate::checkpoint::{Checkpoint, CheckpointError, CheckpointStore, OperatorState, PartCheckpoint, TenantState};
use crate::config::Config;
use crate::fair::{FairQueue, Grouped, Work};
use crate::metrics::{ComponentState, Metrics};
use crate::watermark::WatermarkTracker;

/// A record that arrived after the watermark had passed its event time.
#[derive(Debug, Clone, Serialize)]
pub struct LateRecord {
    pub tenant: String,
    pub alert_id: String,
    pub event_time: String,
    pub watermark: String,
    /// The original record.
    pub record: String,
}

/// What the pipeline hands to its caller.
#[derive(Debug)]
pub enum Event {
    Report(ReportKind, Box<ClusterReport>),
    DeadLetter(DeadLetter),
    Late(LateRecord),
    /// Checkpoint `id` is about to be written: everything handed over before
    /// it must be durable (files synced, Kafka deliveries confirmed) when the
    /// callback returns, because the source will not replay it.
    Checkpoint(u64),
}

/// Counts and timings of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    pub alerts_read: u64,
    pub decoded: u64,
    pub dead_lettered: u64,
    pub late: u64,
    pub deduplicated: u64,
    pub clustered: u64,
    pub unclustered: u64,
    pub clusters: u64,
    /// Clusters that merged into another one.
    pub merged: u64,
    /// Closed clusters by final decision.
    pub closed_escalate: u64,
    pub escalated: u64,
    pub updates: u64,
    pub closed_review: u64,
    pub closed_suppress: u64,
    pub hubs_demoted: u64,
    pub evicted: u64,
    /// Checkpoints written by this run.
    pub checkpoints: u64,
    /// The checkpoint this run resumed from.
    pub restored_from: Option<u64>,
    /// Alerts read per escalated cluster.
    pub reduction: f64,
    pub elapsed_secs: f64,
    /// From the start to the arrival of the last record (an unbounded source
    /// that ends when caught up spends the rest noticing the end).
    pub reading_secs: f64,
    pub alerts_per_sec: f64,
    pub triage_latency_us: LatencySummary,
    /// Per-tenant counters: tenant → metric → value.
    pub tenants: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Triage latency percentiles in µs, from an HdrHistogram.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("source: {0}")]
    Source(#[from] sluice_connectors::source::SourceError),
    #[error("{0}")]
    Operator(#[from] sluice_operators::Error),
    #[error("output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("internal error: a pipeline thread panicked ({0})")]
    Panic(&'static str),
}

/// What the source thread sends down the pipeline, in order.
enum Item {
    Chunk(RawChunk),
    Input(InputChange),
    Barrier(Barrier),
    /// An operator update in order with the alerts: a new rule set (see
    /// [`crate::reload`]) or new verdict priors.
    Update(Update),
    /// These inputs' state is durable and they leave: forget their tenants.
    Release(Vec<u32>),
    /// These inputs arrive with their state (by input number).
    Acquire(Vec<(u32, PartCheckpoint)>),
}

/// What [`Operator::reconfigure`] receives.
type Update = Arc<dyn std::any::Any + Send + Sync>;

/// New verdict priors for a running pipeline: put a set here and the
/// pipeline applies it, in order with the alerts, soon after.
pub type PriorsSlot = Arc<std::sync::Mutex<Option<Priors>>>;

#[derive(Clone, Debug)]
struct Barrier {
    id: u64,
    position: Option<String>,
    /// With state per partition: the partitions owned, each with its offset.
    inputs: Vec<InputPosition>,
}

enum ShardMsg {
    Batch(Grouped),
    Watermark(EventTime),
    /// Snapshot now; with state per partition, each of these tenants apart.
    Barrier(u64, Option<Vec<Arc<str>>>),
    Update(Update),
    /// Tenants arriving with a partition.
    Absorb(Vec<TenantState>),
    /// Tenants leaving with a partition.
    Forget(Vec<Arc<str>>),
    /// End of input; `flush` closes every open window (not when stopping
    /// with checkpoints on: the next run continues those windows).
    End {
        flush: bool,
    },
}

struct DecodedChunk {
    seq: u64,
    input: u32,
    /// The chunk's tenant and record count, when the source knew the tenant
    /// (counted in flight from the source on, see [`crate::fair::Backlog`]).
    read: Option<(Arc<str>, u64)>,
    batches: Vec<RecordBatch>,
    dead_letters: Vec<DeadLetter>,
    control: Option<Item>,
}

/// What travels on the events channel: events for the caller, and the
/// parts of checkpoints.
enum Message {
    Event(Event),
    Router {
        id: u64,
        position: Option<String>,
        watermark: WatermarkTracker,
        /// With state per partition: the partitions owned and which owns
        /// each tenant.
        inputs: Vec<InputPosition>,
        owners: Vec<(Arc<str>, u32)>,
    },
    Shard {
        id: u64,
        shard: usize,
        state: ShardState,
    },
}

/// A shard's part of a checkpoint.
enum ShardState {
    /// Each operator's whole state.
    Whole(Vec<OperatorState>),
    /// Each tenant's state apart (state per partition).
    Tenants(Vec<TenantState>),
}

/// What the checkpoint writer makes durable before the source may commit
/// `position`.
enum Durable {
    Whole(Checkpoint),
    Parts { id: u64, position: Option<String>, parts: Vec<PartCheckpoint> },
}

impl Durable {
    fn id(&self) -> u64 {
        match self {
            Durable::Whole(c) => c.id,
            Durable::Parts { id, .. } => *id,
        }
    }
}

/// Builds the operator chain of one shard: dedup → rules → correlate.
/// `decode` is the decoders' config (from [`Config::decode_config`]): its
/// extra columns are the rules' too.
pub fn build_chain(
    config: &Config,
    decode: &DecodeConfig,
    correlate: CorrelateConfig,
) -> Result<Chain, sluice_operators::Error> {
    let mut ops: Vec<Box<dyn Operator>> = vec![Box::new(Dedup::new(config.dedup.clone())?)];
    if rules_enabled(config) {
        let extra = decode.extra_columns();
        let engine = sluice_rules::Engine::new(&extra).map_err(|e| sluice_operators::Error::Config(e.to_string()))?;
        let compiled = config.rules.compile(&engine).map_err(|problems| {
            sluice_operators::Error::Config(format!("{} rule problem(s):\n  {}", problems.len(), problems.join("\n  ")))
        })?;
        ops.push(Box::new(sluice_rules::Rules::new(
            engine,
            compiled,
            config.time.allowed_lateness.millis(),
            config.rules.max_alerts_per_tenant,
        )));
    }
    ops.push(Box::new(
        Correlate::new(correlate, config.score.clone(), config.handoff.clone())?
            .with_duplicate_window(config.dedup.window),
    ));
    Ok(Chain::new(ops))
}

/// Whether the chain has a rules stage.
fn rules_enabled(config: &Config) -> bool {
    config.rules.builtin || !config.rules.paths.is_empty()
}

/// Options that are not part of the config file.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Keep member alert ids in reports (eval).
    pub track_members: bool,
    /// Report every closed cluster, not only escalated ones (eval, golden tests).
    pub report_all_closed: bool,
    /// Log progress to stderr every this often.
    pub progress: Option<Duration>,
    /// Take checkpoints (and resume from the latest one).
    pub checkpoint: Option<CheckpointOptions>,
    /// Verdict priors: applied at start, and again whenever the slot is
    /// filled while running.
    pub priors: Option<PriorsSlot>,
    /// Live metrics for the admin server.
    pub metrics: Option<Arc<Metrics>>,
}

/// Where and how often to checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointOptions {
    pub store: Arc<dyn CheckpointStore>,
    pub interval: Duration,
    /// Ignore (and remove) existing checkpoints.
    pub fresh: bool,
}

/// Runs the pipeline over `source` until it ends (or is stopped), calling
/// `on_event` on this thread for every event. Returning from `on_event` is
/// the acknowledgement: triage latency is measured then.
pub fn run(
    config: &Config,
    source: Box<dyn Source>,
    options: &RunOptions,
    stop: &StopFlag,
    mut on_event: impl FnMut(Event) -> std::io::Result<()>,
) -> Result<Summary, RunError> {
    let started = Instant::now();
    let cap = config.runtime.channel_capacity.get();
    let shards = config.runtime.effective_shards();
    let decoders = config.runtime.effective_decode_threads();
    let batch_size = config.runtime.batch_size.get();
    let mut correlate_cfg = config.correlate.clone();
    correlate_cfg.track_members |= options.track_members;
    correlate_cfg.report_all_closed |= options.report_all_closed;
    // Rules reload on SIGHUP or a rule file change, when rule files are
    // configured (the shipped library is part of the binary).
    // Read once: the decoders and the rules must agree on the columns.
    let decode = config.decode_config();
    let watcher = if rules_enabled(config) && !config.rules.paths.is_empty() {
        match crate::reload::Watcher::start(config.rules.clone(), decode.extra_columns()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "rules will not reload while running (SIGHUP or file watch failed)");
                None
            }
        }
    } else {
        None
    };
    let reloads = watcher.as_ref().map(|w| w.pending());
    // Threat intel and inventories: loaded in full now, reloaded like rules.
    let (intel, intel_watcher) = crate::intel::start(&config.intel)?.unzip();
    let intel_reloads = intel_watcher.flatten().map(|w| (w.pending(), w));
    // Per-tenant policy: the same.
    let (policies, policy_watcher) =
        crate::policy::start(&config.policy, &config.handoff, &config.correlate.windows)?.unzip();
    let policy_reloads = policy_watcher.flatten().map(|w| (w.pending(), w));
    // Build everything up front so a bad config fails before any thread starts.
    let mut chains =
        (0..shards).map(|_| build_chain(config, &decode, correlate_cfg.clone())).collect::<Result<Vec<_>, _>>()?;
    // The priors known at start apply from the first alert on.
    let priors_slot = options.priors.clone();
    if let Some(priors) = priors_slot.as_ref().and_then(|p| p.lock().expect("pending priors").take()) {
        for chain in &mut chains {
            chain.reconfigure(&priors)?;
        }
    }
    if let Some(intel) = &intel {
        for chain in &mut chains {
            chain.reconfigure(intel.as_ref())?;
        }
    }
    if let Some(policies) = &policies {
        for chain in &mut chains {
            chain.reconfigure(policies.as_ref())?;
        }
    }
    // The router sets aside the alerts of disabled tenants.
    let router_policies =
        policies.as_ref().and_then(|p| p.downcast_ref::<Arc<Policies>>().cloned()).unwrap_or_default();
    let mut decoder_list =
        (0..decoders).map(|_| Decoder::new(decode.clone(), &config.tenant)).collect::<Result<Vec<_>, _>>()?;
    let mut source = source;
    let source_name = source.name().to_string();
    let mut watermark =
        WatermarkTracker::new(1, config.time.allowed_lateness.millis(), config.time.watermark_interval.millis());
    let mut next_checkpoint = 1u64;
    let mut restored_from = None;
    // With checkpoints on, a source whose inputs move between instances (a
    // Kafka consumer group) keeps its state per input, under this scope.
    let partitioned = options.checkpoint.as_ref().and_then(|_| source.hand_over_inputs());
    // This process, as the owner of the partitions it is assigned (see
    // `CheckpointStore::claim_parts`).
    let owner = format!("{}:{}:{}", hostname(), std::process::id(), now_us());
    if let (Some(cp), Some(scope)) = (&options.checkpoint, &partitioned) {
        if cp.fresh {
            cp.store.clear()?;
            cp.store.clear_parts(scope)?;
            tracing::info!(store = %cp.store.describe(), group = %scope, "starting without state (--fresh-state): the group's partition state removed");
        } else if let Some(id) = cp.store.latest_id()? {
            tracing::warn!(
                checkpoint = id,
                store = %cp.store.describe(),
                "a whole-instance checkpoint is not used with Kafka: state is kept per partition (a checkpoint from an older version; its open windows are dropped)"
            );
        }
        next_checkpoint = cp.store.latest_part_id(scope)?.map_or(1, |id| id + 1);
    } else if let Some(cp) = &options.checkpoint {
        if cp.fresh {
            cp.store.clear()?;
            tracing::info!(store = %cp.store.describe(), "starting without state (--fresh-state): old checkpoints removed");
        } else if let Some(checkpoint) = cp.store.load_latest()? {
            restore(&checkpoint, cp.store.as_ref(), &mut chains, source.as_mut())?;
            watermark = checkpoint.watermark.clone();
            next_checkpoint = checkpoint.id + 1;
            restored_from = Some(checkpoint.id);
            tracing::info!(checkpoint = checkpoint.id, store = %cp.store.describe(), position = ?checkpoint.position, "resumed from checkpoint");
        }
    }

    let (chunk_tx, chunk_rx) = bounded::<(u64, Item)>(cap);
    let (decoded_tx, decoded_rx) = bounded::<DecodedChunk>(cap * 2);
    let (event_tx, event_rx) = bounded::<Message>(cap * 1024);
    // (checkpoint id, position) of each durable checkpoint, in order.
    // Unbounded: the writer never blocks on it, and none is dropped (the
    // source drains it on every turn).
    let (commit_tx, commit_rx) = crossbeam_channel::unbounded::<(u64, String)>();
    let metrics = options.metrics.clone().unwrap_or_default();
    if let Some(set) = intel.as_ref().and_then(|i| i.downcast_ref::<Arc<Intel>>()) {
        metrics.set_intel(set);
    }
    metrics.backlog.configure(config.runtime.fair_scheduling.then(|| crate::fair::Limits {
        alone: config.runtime.tenant_backlog.get() as u64,
        contended: config.runtime.contended_backlog.get() as u64,
    }));
    metrics.backlog.set_policies(router_policies.clone());
    let read_counter = metrics.read.clone();
    // Whether shards close their windows at the end (see ShardMsg::End).
    let flush_at_end = Arc::new(AtomicBool::new(true));

    // Source.
    let source_stop = stop.clone();
    let source_flush = flush_at_end.clone();
    let interval = options.checkpoint.as_ref().map(|c| c.interval);
    let source_metrics = metrics.clone();
    let source_store = options.checkpoint.as_ref().map(|c| c.store.clone());
    let source_scope = partitioned.clone();
    let source_owner = owner.clone();
    // The newest partition state taken over, for the summary.
    let restored_parts = Arc::new(AtomicU64::new(0));
    let source_restored = restored_parts.clone();
    let source_handle = thread::Builder::new()
        .name("sluice-source".into())
        .spawn(move || -> Result<(), RunError> {
            let failed = |e: sluice_connectors::source::SourceError| {
                // With checkpoints the next run resumes the open windows:
                // do not close them as if the input had ended.
                if interval.is_some() {
                    source_flush.store(false, Ordering::SeqCst);
                }
                source_metrics.component("source", ComponentState::Failed, e.to_string());
                RunError::Source(e)
            };
            let mut last_lag = Instant::now();
            let mut held_seen = 0u64;
            let mut seq = 0u64;
            let mut send = |item: Item| -> bool {
                let ok = chunk_tx.send((seq, item)).is_ok();
                seq += 1;
                ok
            };
            let mut last_barrier = Instant::now();
            let mut barrier_id = next_checkpoint;
            let mut stopping = false;
            loop {
                if let Some(rules) = reloads.as_ref().and_then(|p| p.lock().expect("pending rules").take()) {
                    if !send(Item::Update(rules)) {
                        return Ok(());
                    }
                    crate::reload::record("rules", true);
                }
                if let Some(priors) = priors_slot.as_ref().and_then(|p| p.lock().expect("pending priors").take())
                    && !send(Item::Update(Arc::new(priors)))
                {
                    return Ok(());
                }
                if let Some(intel) = intel_reloads.as_ref().and_then(|(p, _)| p.lock().expect("pending intel").take()) {
                    if let Some(set) = intel.downcast_ref::<Arc<Intel>>() {
                        source_metrics.set_intel(set);
                    }
                    if !send(Item::Update(intel)) {
                        return Ok(());
                    }
                    crate::reload::record("intel", true);
                }
                if let Some(policy) =
                    policy_reloads.as_ref().and_then(|(p, _)| p.lock().expect("pending policy").take())
                {
                    if let Some(policies) = policy.downcast_ref::<Arc<Policies>>() {
                        source_metrics.backlog.set_policies(policies.clone());
                    }
                    if !send(Item::Update(policy)) {
                        return Ok(());
                    }
                    crate::reload::record("policy", true);
                }
                while let Ok((_, position)) = commit_rx.try_recv() {
                    source.commit(&position).map_err(failed)?;
                }
                let generation = source_metrics.backlog.generation();
                if generation != held_seen {
                    held_seen = generation;
                    source.hold_back(&source_metrics.backlog.held());
                }
                stopping |= source_stop.is_stopped();
                // When stopping, one last call hands over what the source holds.
                let chunk = source.next_chunk().map_err(failed)?;
                let ended = chunk.is_none();
                // A stop raised while the source was polling makes it end
                // too: that is a stop (windows stay open for the next run),
                // not the end of the input.
                stopping |= source_stop.is_stopped();
                if last_lag.elapsed() >= METRICS_EVERY || ended {
                    last_lag = Instant::now();
                    source_metrics.set_lag(source.name(), &source.lag());
                    source_metrics.set_lag_seconds(source.name(), &source.lag_seconds());
                    let state = if ended { ComponentState::Finished } else { ComponentState::Ready };
                    source_metrics.component("source", state, source.name());
                }
                // Input changes first: a newly assigned partition must hold the
                // watermark back before another partition's records move it.
                for change in source.input_changes() {
                    if !send(Item::Input(change)) {
                        return Ok(());
                    }
                }
                if let Some(chunk) = chunk
                    && !chunk.lines.is_empty()
                {
                    if let ChunkTenant::Fixed(t) = &chunk.tenant {
                        source_metrics.backlog.entered(t, chunk.lines.len() as u64);
                    }
                    if !send(Item::Chunk(chunk)) {
                        return Ok(());
                    }
                }
                let last = ended || stopping;
                if let Some(every) = interval
                    && (last || last_barrier.elapsed() >= every)
                {
                    let position = source.position();
                    let inputs = if source_scope.is_some() { source.input_positions() } else { Vec::new() };
                    let resumable = position.is_some();
                    if !send(Item::Barrier(Barrier { id: barrier_id, position, inputs })) {
                        return Ok(());
                    }
                    barrier_id += 1;
                    last_barrier = Instant::now();
                    if last {
                        // The next run continues the open windows from this
                        // checkpoint; commit its position before leaving
                        // (earlier checkpoints' commits may come first).
                        source_flush.store(ended && !stopping, Ordering::SeqCst);
                        if resumable {
                            let deadline = Some(Instant::now() + Duration::from_secs(60));
                            commit_through(source.as_mut(), &commit_rx, barrier_id - 1, deadline).map_err(failed)?;
                        }
                    }
                }
                // Partitions changing hands (state per partition only).
                if let (Some(scope), Some(store)) = (&source_scope, &source_store)
                    && !last
                    && let Some(handover) = source.handover()
                {
                    match handover {
                        Handover::Release(inputs) => {
                            // They leave only once a checkpoint of exactly
                            // what was read from them is durable and
                            // committed: the next owner starts there.
                            let paused = Instant::now();
                            let barrier =
                                Barrier { id: barrier_id, position: source.position(), inputs: source.input_positions() };
                            if !send(Item::Barrier(barrier)) {
                                return Ok(());
                            }
                            barrier_id += 1;
                            last_barrier = Instant::now();
                            // However long that takes (the group waits up to
                            // max.poll.interval.ms). Should the write fail,
                            // the run stops (with the writer's error), the
                            // windows stay open, and the partitions go with
                            // their last durable state.
                            let durable = commit_through(source.as_mut(), &commit_rx, barrier_id - 1, None)
                                .map_err(failed)?;
                            if !durable {
                                source_flush.store(false, Ordering::SeqCst);
                                return Ok(());
                            }
                            let n = inputs.len();
                            if !send(Item::Release(inputs)) {
                                return Ok(());
                            }
                            source.released();
                            source_metrics.handovers.record(true, n, paused.elapsed());
                        }
                        Handover::Acquire(inputs) => {
                            let paused = Instant::now();
                            let n = inputs.len();
                            // Claimed before they are read: from now on the
                            // store takes no write of their state from an
                            // instance that held them before.
                            let names: Vec<String> = inputs.iter().map(|(_, name)| name.clone()).collect();
                            store
                                .claim_parts(scope, &names, &source_owner)
                                .inspect_err(|_| source_flush.store(false, Ordering::SeqCst))?;
                            let mut parts = Vec::new();
                            let mut starts = Vec::new();
                            for (input, name) in inputs {
                                // On failure the windows stay open for
                                // whoever takes the partitions next.
                                let part = store
                                    .load_part(scope, &name)
                                    .inspect_err(|_| source_flush.store(false, Ordering::SeqCst))?;
                                let Some(part) = part else { continue };
                                starts.push(InputStart { name, offset: part.offset, idle: part.idle });
                                barrier_id = barrier_id.max(part.id + 1);
                                source_restored.fetch_max(part.id, Ordering::Relaxed);
                                parts.push((input, part));
                            }
                            let names: Vec<&str> = starts.iter().map(|s| s.name.as_str()).collect();
                            tracing::info!(group = %scope, with_state = ?names, "partitions arriving: their state is loaded");
                            if !send(Item::Acquire(parts)) {
                                return Ok(());
                            }
                            source.acquired(&starts);
                            source_metrics.handovers.record(false, n, paused.elapsed());
                        }
                    }
                }
                if last {
                    return Ok(());
                }
            }
        })
        .expect("spawn source thread");

    // Decoders.
    let mut decoder_handles = Vec::new();
    for (i, mut decoder) in decoder_list.drain(..).enumerate() {
        let rx = chunk_rx.clone();
        let tx = decoded_tx.clone();
        decoder_handles.push(
            thread::Builder::new()
                .name(format!("sluice-decode-{i}"))
                .spawn(move || -> Result<DecodeStats, RunError> {
                    for (seq, item) in rx {
                        let mut decoded = DecodedChunk {
                            seq,
                            input: 0,
                            read: None,
                            batches: Vec::new(),
                            dead_letters: Vec::new(),
                            control: None,
                        };
                        match item {
                            Item::Chunk(chunk) => {
                                decoded.input = chunk.input;
                                if let ChunkTenant::Fixed(t) = &chunk.tenant {
                                    decoded.read = Some((t.clone(), chunk.lines.len() as u64));
                                }
                                for part in split_chunk(chunk, batch_size) {
                                    let out = decoder.decode(&part)?;
                                    decoded.batches.extend(out.batch);
                                    decoded.dead_letters.extend(out.dead_letters);
                                }
                            }
                            control => decoded.control = Some(control),
                        }
                        if tx.send(decoded).is_err() {
                            break;
                        }
                    }
                    Ok(decoder.stats())
                })
                .expect("spawn decoder thread"),
        );
    }
    drop(chunk_rx);
    drop(decoded_tx);

    // Shards.
    let mut shard_txs = Vec::new();
    let mut shard_handles = Vec::new();
    for (i, mut chain) in chains.drain(..).enumerate() {
        let (tx, rx) = bounded::<ShardMsg>(cap);
        shard_txs.push(tx);
        let events = event_tx.clone();
        let metrics = metrics.clone();
        let scheduling = Scheduling {
            fair: config.runtime.fair_scheduling,
            quantum: batch_size,
            shard_backlog: config.runtime.shard_backlog.get(),
            policies: router_policies.clone(),
        };
        shard_handles.push(
            thread::Builder::new()
                .name(format!("sluice-shard-{i}"))
                .spawn(move || run_shard(i, &mut chain, rx, events, &metrics, scheduling))
                .expect("spawn shard thread"),
        );
    }

    // Router.
    let router_events = event_tx.clone();
    let router_read = read_counter.clone();
    let router_metrics = metrics.clone();
    let router_partitioned = partitioned.is_some();
    let router_handle = thread::Builder::new()
        .name("sluice-router".into())
        .spawn(move || {
            let mut router = Router {
                shards: shard_txs,
                events: router_events,
                watermark,
                late: 0,
                read: router_read,
                last_read: started,
                policies: router_policies,
                metrics: router_metrics,
                owners: router_partitioned.then(BTreeMap::new),
                split: BTreeSet::new(),
            };
            router.run(decoded_rx, &flush_at_end)
        })
        .expect("spawn router thread");
    drop(event_tx);

    // The checkpoint writer: encodes, writes and syncs off the caller's
    // thread (events keep flowing meanwhile), then lets the source commit.
    // On failure it stops the run and drops `commit_tx`, so the source no
    // longer waits for a commit.
    let (write_tx, write_rx) = bounded::<Durable>(1);
    let writer = options.checkpoint.as_ref().map(|c| {
        let store = c.store.clone();
        let scope = partitioned.clone().unwrap_or_default();
        let stop = stop.clone();
        thread::Builder::new()
            .name("sluice-checkpoint".into())
            .spawn(move || -> (u64, Option<CheckpointError>) {
                let mut written = 0;
                for checkpoint in write_rx {
                    let id = checkpoint.id();
                    let (saved, position) = match checkpoint {
                        Durable::Whole(c) => (store.save(&c), c.position),
                        Durable::Parts { position, parts, .. } => (store.save_parts(&scope, &parts, &owner), position),
                    };
                    match saved {
                        Ok(place) => {
                            written += 1;
                            tracing::debug!(id, %place, "checkpoint written");
                            if let Some(position) = position {
                                let _ = commit_tx.send((id, position));
                            }
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "checkpoint failed; stopping (the last good checkpoint stays)");
                            stop.stop();
                            return (written, Some(e));
                        }
                    }
                }
                (written, None)
            })
            .expect("spawn checkpoint thread")
    });

    // The caller's side: events until every producer is done.
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds");
    let mut escalations = 0u64;
    let mut updates = 0u64;
    let mut output_error = None;
    let mut assembler = Assembler { shards, source: source_name, pending: BTreeMap::new() };
    let mut last_progress = Instant::now();
    metrics.component("pipeline", ComponentState::Ready, format!("{shards} shard(s), {decoders} decoder(s)"));
    loop {
        let message = match event_rx.recv_timeout(Duration::from_millis(500)) {
            Ok(e) => e,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                progress(options, &mut last_progress, &read_counter, started, escalations);
                metrics.tick();
                continue;
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
        };
        let event = match assembler.add(message) {
            Assembled::Event(e) => e,
            Assembled::Incomplete => continue,
            Assembled::Checkpoint(checkpoint) => {
                if output_error.is_some() {
                    continue; // never checkpoint past output that failed
                }
                // Everything handed over before the barrier is made durable
                // first; only then may the checkpoint (and the commit) exist.
                match on_event(Event::Checkpoint(checkpoint.id())) {
                    Ok(()) => {
                        let _ = write_tx.send(checkpoint);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "output failed before a checkpoint; stopping");
                        output_error = Some(e);
                        stop.stop();
                    }
                }
                continue;
            }
        };
        let trigger = match &event {
            Event::Report(kind @ (ReportKind::Escalate | ReportKind::Update), r) => {
                if *kind == ReportKind::Escalate {
                    escalations += 1;
                } else {
                    updates += 1;
                }
                r.trigger.as_ref().map(|t| (t.ingest_time_us, r.tenant.clone()))
            }
            _ => None,
        };
        metrics.observe(&event);
        if output_error.is_none()
            && let Err(e) = on_event(event)
        {
            // Stop reading; keep draining so every thread can finish.
            output_error = Some(e);
            stop.stop();
        }
        if let Some((ingest, tenant)) = trigger {
            let us = (now_us() - ingest).max(1) as u64;
            let _ = latency.record(us);
            metrics.record_latency(&tenant, us);
        }
        progress(options, &mut last_progress, &read_counter, started, escalations);
        metrics.tick();
    }
    let finished = if output_error.is_some() { ComponentState::Failed } else { ComponentState::Finished };
    metrics.component("pipeline", finished, "");

    drop(write_tx);
    let (checkpoints, checkpoint_error) = match writer {
        Some(h) => h.join().map_err(|_| RunError::Panic("checkpoint"))?,
        None => (0, None),
    };
    let source_result = source_handle.join().map_err(|_| RunError::Panic("source"))?;
    let mut decode_stats = DecodeStats::default();
    for h in decoder_handles {
        let s = h.join().map_err(|_| RunError::Panic("decoder"))??;
        decode_stats.read += s.read;
        decode_stats.decoded += s.decoded;
        decode_stats.dead_lettered += s.dead_lettered;
    }
    let (late, last_read) = router_handle.join().map_err(|_| RunError::Panic("router"))?;
    let mut counters = Counters::default();
    for h in shard_handles {
        counters.merge(&h.join().map_err(|_| RunError::Panic("shard"))??);
    }
    source_result?;
    if let Some(e) = output_error {
        return Err(RunError::Output(e));
    }
    if let Some(e) = checkpoint_error {
        return Err(RunError::Checkpoint(e));
    }

    let elapsed = started.elapsed().as_secs_f64();
    let mut tenants: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for ((op, metric, tenant), v) in &counters.0 {
        tenants.entry(tenant.to_string()).or_default().insert(format!("{op}.{metric}"), *v);
    }
    Ok(Summary {
        alerts_read: decode_stats.read,
        decoded: decode_stats.decoded,
        dead_lettered: decode_stats.dead_lettered,
        late,
        deduplicated: counters.total("dedup", "duplicates"),
        clustered: counters.total("correlate", "clustered"),
        unclustered: counters.total("correlate", "unclustered"),
        clusters: counters.total("correlate", "clusters_created"),
        merged: counters.total("correlate", "clusters_merged"),
        closed_escalate: counters.total("correlate", "closed_escalate"),
        escalated: escalations,
        updates,
        closed_review: counters.total("correlate", "closed_review"),
        closed_suppress: counters.total("correlate", "closed_suppress"),
        hubs_demoted: counters.total("correlate", "hubs_demoted"),
        evicted: counters.total("correlate", "clusters_evicted") + counters.total("dedup", "evicted"),
        checkpoints,
        restored_from: restored_from.or_else(|| Some(restored_parts.load(Ordering::Relaxed)).filter(|&id| id > 0)),
        reduction: if escalations == 0 {
            decode_stats.read as f64
        } else {
            decode_stats.read as f64 / escalations as f64
        },
        elapsed_secs: elapsed,
        reading_secs: last_read.duration_since(started).as_secs_f64(),
        alerts_per_sec: decode_stats.read as f64 / elapsed.max(1e-9),
        triage_latency_us: LatencySummary::from_histogram(&latency),
        tenants,
    })
}

/// This machine's name, for people reading who owns a partition.
fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "sluice".into())
}

/// Commits what the checkpoint writer reports durable until checkpoint
/// `id` is; gives up when the writer stops (a failed write) or at
/// `deadline`. Tells whether `id` is durable.
fn commit_through(
    source: &mut dyn Source,
    durable: &Receiver<(u64, String)>,
    id: u64,
    deadline: Option<Instant>,
) -> Result<bool, sluice_connectors::source::SourceError> {
    loop {
        let next = match deadline {
            Some(d) => durable.recv_timeout(d.saturating_duration_since(Instant::now())).ok(),
            None => durable.recv().ok(),
        };
        let Some((written, position)) = next else { return Ok(false) };
        source.commit(&position)?;
        if written >= id {
            return Ok(true);
        }
    }
}

fn progress(options: &RunOptions, last: &mut Instant, read: &AtomicU64, started: Instant, escalated: u64) {
    let Some(every) = options.progress else { return };
    if last.elapsed() < every {
        return;
    }
    *last = Instant::now();
    let n = read.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    tracing::info!(alerts = n, alerts_per_sec = (n as f64 / secs.max(1e-9)) as u64, escalated, "progress");
}

/// The distinct tenants of a batch, comma-separated (for its span).
fn batch_tenants(batch: &RecordBatch) -> String {
    let Ok(columns) = AlertColumns::new(batch) else { return String::new() };
    let mut names: Vec<&str> = (0..batch.num_rows()).map(|row| columns.tenant(row)).collect();
    names.sort_unstable();
    names.dedup();
    names.join(",")
}

/// How often shards and the source publish their metrics.
const METRICS_EVERY: Duration = Duration::from_secs(1);

/// Splits a chunk into chunks of at most `n` records (no copy when it fits).
fn split_chunk(chunk: RawChunk, n: usize) -> Vec<RawChunk> {
    if chunk.lines.len() <= n {
        return vec![chunk];
    }
    chunk
        .lines
        .chunks(n)
        .enumerate()
        .map(|(i, lines)| {
            let (start, end) = (lines[0].0, lines[lines.len() - 1].1);
            let first = i * n;
            RawChunk {
                source: chunk.source.clone(),
                data: chunk.data[start..end].to_vec(),
                lines: lines.iter().map(|&(s, e)| (s - start, e - start)).collect(),
                base_offset: chunk.base_offset + start as u64,
                ingest_us: chunk.ingest_us,
                input: chunk.input,
                tenant: chunk.tenant.clone(),
                positions: chunk.positions.get(first..first + lines.len()).map(<[u64]>::to_vec).unwrap_or_default(),
            }
        })
        .collect()
}

/// How a shard schedules its tenants (see `fair.rs`).
#[derive(Clone, Debug)]
struct Scheduling {
    fair: bool,
    quantum: usize,
    shard_backlog: usize,
    policies: Arc<Policies>,
}

/// A shard: its operator chain, fed fairly from per-tenant queues when it
/// falls behind.
struct Shard<'a> {
    id: usize,
    chain: &'a mut Chain,
    ctx: Context,
    out: Vec<Output>,
    queue: FairQueue,
    scheduling: Scheduling,
    events: Sender<Message>,
    metrics: &'a Metrics,
}

impl Shard<'_> {
    /// Hands what the operators produced to the caller; `false` when the
    /// caller is gone.
    fn forward(&mut self) -> bool {
        for o in self.out.drain(..) {
            if let Output::Cluster(kind, report) = o
                && self.events.send(Message::Event(Event::Report(kind, report))).is_err()
            {
                return false;
            }
        }
        true
    }

    fn process(&mut self, batch: AlertBatch, watermark: Option<EventTime>) -> Result<(), RunError> {
        // A span per batch (at debug level; free when that is off) naming
        // the tenants in it.
        let span =
            tracing::debug_span!("batch", shard = self.id, rows = batch.num_rows(), tenants = tracing::field::Empty);
        if !span.is_disabled() {
            span.record("tenants", batch_tenants(&batch.batch).as_str());
        }
        let _entered = span.enter();
        self.ctx.watermark = watermark;
        self.chain.process(batch, &mut self.ctx, &mut self.out)?;
        Ok(())
    }

    /// Takes a batch. A tenant's alerts go into its queue when it has one
    /// already, or when the shard is behind and the tenant is heavy; all
    /// others are processed now.
    fn take(&mut self, batch: Grouped, behind: bool) -> Result<(), RunError> {
        let defer = |tenant: &Arc<str>| {
            self.scheduling.fair
                && (self.queue.has(tenant)
                    || behind
                        && self.metrics.backlog.is_heavy(
                            tenant,
                            self.scheduling.policies.weight(tenant),
                            self.scheduling.quantum,
                        ))
        };
        let deferred: Vec<bool> = batch.groups.iter().map(|(t, ..)| defer(t)).collect();
        let wm = self.queue.watermark();
        if !deferred.contains(&true) {
            self.process(AlertBatch::new(batch.batch), wm)?;
            for (tenant, _, n) in &batch.groups {
                self.metrics.backlog.left(tenant, *n as u64);
            }
            return Ok(());
        }
        for ((tenant, part), deferred) in batch.parts().zip(deferred) {
            if deferred {
                self.queue.push(tenant, part);
            } else {
                let n = part.num_rows() as u64;
                self.process(AlertBatch::new(part), wm)?;
                self.metrics.backlog.left(tenant, n);
            }
        }
        Ok(())
    }

    fn watermark(&mut self, wm: EventTime) -> Result<(), RunError> {
        let queued = self.queue.advance(wm);
        let tenants = if queued.is_empty() { Tenants::All } else { Tenants::Except(queued) };
        self.chain.on_watermark(wm, tenants, &mut self.ctx, &mut self.out)?;
        Ok(())
    }

    /// Serves one turn of the tenant whose turn it is; `false` when nothing
    /// is queued.
    fn serve(&mut self) -> Result<bool, RunError> {
        let policies = self.scheduling.policies.clone();
        let Some(work) = self.queue.next(|t| policies.weight(t)) else { return Ok(false) };
        match work {
            Work::Batch { tenant, batch, watermark } => {
                let n = batch.num_rows() as u64;
                self.process(batch, watermark)?;
                self.metrics.backlog.left(&tenant, n);
            }
            Work::Watermark { tenant, watermark } => {
                self.chain.on_watermark(watermark, Tenants::Only(&tenant), &mut self.ctx, &mut self.out)?;
            }
        }
        Ok(true)
    }

    /// Serves every queue to its end (before a barrier, an update or the end).
    fn drain(&mut self) -> Result<bool, RunError> {
        while self.serve()? {
            if !self.forward() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn publish(&self) {
        let queued: Vec<(Arc<str>, u64)> = self.queue.backlog().map(|(t, n)| (t.clone(), n as u64)).collect();
        self.metrics.publish_shard(self.id, &self.ctx.counters, self.chain.operators(), &queued);
    }
}

fn run_shard(
    id: usize,
    chain: &mut Chain,
    rx: Receiver<ShardMsg>,
    events: Sender<Message>,
    metrics: &Metrics,
    scheduling: Scheduling,
) -> Result<Counters, RunError> {
    let mut shard = Shard {
        id,
        chain,
        ctx: Context::default(),
        out: Vec::new(),
        queue: FairQueue::new(scheduling.quantum),
        scheduling,
        events,
        metrics,
    };
    let mut published = Instant::now();
    // Messages taken in since the queues were last served: they get a turn
    // at least this often, so a busy channel cannot starve them (and a
    // held-back tenant is released in time).
    const SERVE_EVERY: u32 = 8;
    let mut taken = 0u32;
    loop {
        // Take in what is waiting while there is room; serve a turn when
        // nothing is, the queues are full, or they are due a turn. Idle
        // shards still publish their metrics.
        let msg = if shard.queue.is_empty() {
            match rx.recv_timeout(METRICS_EVERY) {
                Ok(msg) => Some(msg),
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    published = Instant::now();
                    shard.publish();
                    continue;
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        } else if shard.queue.rows() < shard.scheduling.shard_backlog && taken < SERVE_EVERY {
            rx.try_recv().ok()
        } else {
            None
        };
        match msg {
            None => {
                taken = 0;
                shard.serve()?;
            }
            Some(ShardMsg::Batch(b)) => {
                taken += u32::from(!shard.queue.is_empty());
                shard.take(b, !rx.is_empty())?
            }
            Some(ShardMsg::Watermark(wm)) => shard.watermark(wm)?,
            Some(ShardMsg::Update(update)) => {
                if !shard.drain()? {
                    break;
                }
                if let Some(policies) = update.downcast_ref::<Arc<Policies>>() {
                    shard.scheduling.policies = policies.clone();
                }
                shard.chain.reconfigure(update.as_ref())?;
            }
            Some(ShardMsg::Barrier(barrier, tenants)) => {
                // Aligned: everything before the barrier is in the snapshot.
                if !shard.drain()? {
                    break;
                }
                let ops = shard.chain.operators();
                let state = match tenants {
                    None => ShardState::Whole(
                        ops.iter()
                            .map(|op| Ok(OperatorState { operator: op.name().to_string(), state: op.snapshot()? }))
                            .collect::<Result<Vec<_>, sluice_operators::Error>>()?,
                    ),
                    Some(tenants) => ShardState::Tenants(
                        tenants
                            .iter()
                            .filter_map(|t| snapshot_tenant(shard.chain, t).transpose())
                            .collect::<Result<_, _>>()?,
                    ),
                };
                if shard.events.send(Message::Shard { id: barrier, shard: id, state }).is_err() {
                    break;
                }
            }
            Some(ShardMsg::Absorb(tenants)) => {
                if !shard.drain()? {
                    break;
                }
                for tenant in tenants {
                    absorb_tenant(shard.chain, tenant)?;
                }
            }
            Some(ShardMsg::Forget(tenants)) => {
                if !shard.drain()? {
                    break;
                }
                for tenant in &tenants {
                    for op in shard.chain.operators_mut() {
                        op.forget(tenant);
                    }
                }
            }
            Some(ShardMsg::End { flush }) => {
                if !shard.drain()? {
                    break;
                }
                if flush {
                    shard.chain.on_end(&mut shard.ctx, &mut shard.out)?;
                }
                shard.forward();
                break;
            }
        }
        if !shard.forward() {
            break;
        }
        if published.elapsed() >= METRICS_EVERY {
            published = Instant::now();
            shard.publish();
        }
    }
    shard.publish();
    Ok(shard.ctx.counters)
}

/// One tenant's state in every operator of `chain` that holds some; `None`
/// when none does.
pub fn snapshot_tenant(chain: &Chain, tenant: &str) -> Result<Option<TenantState>, sluice_operators::Error> {
    let mut operators = Vec::new();
    for op in chain.operators() {
        if let Some(state) = op.snapshot_tenant(tenant)? {
            operators.push(OperatorState { operator: op.name().to_string(), state });
        }
    }
    Ok((!operators.is_empty()).then(|| TenantState { tenant: tenant.to_string(), operators }))
}

/// Takes a tenant's state (from [`snapshot_tenant`], maybe on another
/// instance) into `chain`, each operator's part into that operator.
pub fn absorb_tenant(chain: &mut Chain, tenant: TenantState) -> Result<(), RunError> {
    let invalid = |reason: String| {
        RunError::Checkpoint(CheckpointError::Invalid {
            origin: format!("the state of tenant {}", tenant.tenant),
            reason,
        })
    };
    for saved in &tenant.operators {
        let Some(op) = chain.operators_mut().iter_mut().find(|o| o.name() == saved.operator) else {
            return Err(invalid(format!("it holds operator {:?}, which this build does not run", saved.operator)));
        };
        op.absorb(&saved.state).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

/// Puts a checkpoint back together from its parts.
struct Assembler {
    shards: usize,
    source: String,
    pending: BTreeMap<u64, PendingCheckpoint>,
}

struct PendingCheckpoint {
    router: Option<RouterPart>,
    shards: Vec<Option<ShardState>>,
}

struct RouterPart {
    position: Option<String>,
    watermark: WatermarkTracker,
    inputs: Vec<InputPosition>,
    owners: Vec<(Arc<str>, u32)>,
}

enum Assembled {
    Event(Event),
    Incomplete,
    Checkpoint(Durable),
}

impl Assembler {
    fn entry(&mut self, id: u64) -> &mut PendingCheckpoint {
        let shards = self.shards;
        self.pending
            .entry(id)
            .or_insert_with(|| PendingCheckpoint { router: None, shards: (0..shards).map(|_| None).collect() })
    }

    fn add(&mut self, message: Message) -> Assembled {
        let id = match message {
            Message::Event(e) => return Assembled::Event(e),
            Message::Router { id, position, watermark, inputs, owners } => {
                self.entry(id).router = Some(RouterPart { position, watermark, inputs, owners });
                id
            }
            Message::Shard { id, shard, state } => {
                self.entry(id).shards[shard] = Some(state);
                id
            }
        };
        let p = &self.pending[&id];
        if p.router.is_none() || p.shards.iter().any(Option::is_none) {
            return Assembled::Incomplete;
        }
        let p = self.pending.remove(&id).expect("present");
        let router = p.router.expect("checked");
        let created_unix_ms = now_us() / 1000;
        let writer = format!("sluice {}", env!("CARGO_PKG_VERSION"));
        let mut whole = Vec::new();
        let mut tenants: BTreeMap<String, TenantState> = BTreeMap::new();
        for state in p.shards.into_iter().flatten() {
            match state {
                ShardState::Whole(operators) => whole.push(operators),
                ShardState::Tenants(states) => tenants.extend(states.into_iter().map(|t| (t.tenant.clone(), t))),
            }
        }
        if whole.len() == self.shards {
            return Assembled::Checkpoint(Durable::Whole(Checkpoint {
                id,
                created_unix_ms,
                writer,
                source: self.source.clone(),
                position: router.position,
                watermark: router.watermark,
                shards: whole,
            }));
        }
        // State per partition: each owned partition with its tenants.
        let mut parts: Vec<PartCheckpoint> = router
            .inputs
            .iter()
            .map(|i| PartCheckpoint {
                id,
                created_unix_ms,
                writer: writer.clone(),
                source: self.source.clone(),
                input: i.name.clone(),
                offset: i.offset,
                newest: router.watermark.newest(i.input as usize),
                idle: router.watermark.is_retired(i.input as usize),
                tenants: Vec::new(),
            })
            .collect();
        for (tenant, input) in &router.owners {
            let Some(state) = tenants.remove(&**tenant) else { continue };
            match router.inputs.iter().position(|i| i.input == *input) {
                Some(at) => parts[at].tenants.push(state),
                None => {
                    tracing::warn!(%tenant, input, "a tenant's partition is not owned here: its state is not saved")
                }
            }
        }
        Assembled::Checkpoint(Durable::Parts { id, position: router.position, parts })
    }
}

/// Loads a checkpoint into the chains and the source, or refuses it whole.
fn restore(
    checkpoint: &Checkpoint,
    store: &dyn CheckpointStore,
    chains: &mut [Chain],
    source: &mut dyn Source,
) -> Result<(), RunError> {
    let origin = format!("{} (id {})", store.describe(), checkpoint.id);
    let invalid = |reason: String| RunError::Checkpoint(CheckpointError::Invalid { origin: origin.clone(), reason });
    if checkpoint.source != source.name() {
        return Err(invalid(format!(
            "it was taken reading {:?}, this run reads {:?}",
            checkpoint.source,
            source.name()
        )));
    }
    if checkpoint.shards.len() != chains.len() {
        return Err(invalid(format!(
            "it was taken with {} shards and this run has {}; set runtime.shards = {}",
            checkpoint.shards.len(),
            chains.len(),
            checkpoint.shards.len()
        )));
    }
    // On any failure the run ends before a thread starts: a half-restored
    // chain is never used.
    for (i, (chain, saved)) in chains.iter_mut().zip(&checkpoint.shards).enumerate() {
        let names: Vec<&str> = chain.operators().iter().map(|o| o.name()).collect();
        let saved_names: Vec<&str> = saved.iter().map(|o| o.operator.as_str()).collect();
        if names != saved_names {
            return Err(invalid(format!("shard {i} holds operators {saved_names:?}, this build runs {names:?}")));
        }
        for (op, state) in chain.operators_mut().iter_mut().zip(saved) {
            op.restore(&state.state).map_err(|e| invalid(format!("shard {i}: {e}")))?;
        }
    }
    if let Some(position) = &checkpoint.position {
        source.restore(position).map_err(|e| invalid(format!("cannot resume the source: {e}")))?;
    }
    Ok(())
}

/// The shard a tenant lives on, of `shards`.
fn shard_for(tenant: &str, shards: usize) -> usize {
    (stable_hash(tenant.as_bytes()) % shards as u64) as usize
}

struct Router {
    shards: Vec<Sender<ShardMsg>>,
    events: Sender<Message>,
    watermark: WatermarkTracker,
    late: u64,
    read: Arc<AtomicU64>,
    /// When the last record arrived.
    last_read: Instant,
    /// Which tenants are disabled.
    policies: Arc<Policies>,
    metrics: Arc<Metrics>,
    /// State per partition: which input (partition) owns each tenant.
    owners: Option<BTreeMap<Arc<str>, u32>>,
    /// Tenants seen on a second partition (warned about once).
    split: BTreeSet<Arc<str>>,
}

impl Router {
    /// Returns the number of late records.
    /// Returns the number of late records and when the last record arrived.
    fn run(&mut self, rx: Receiver<DecodedChunk>, flush_at_end: &AtomicBool) -> (u64, Instant) {
        let mut pending: BTreeMap<u64, DecodedChunk> = BTreeMap::new();
        let mut next = 0u64;
        let mut broken = false;
        'outer: for chunk in rx {
            pending.insert(chunk.seq, chunk);
            while let Some(chunk) = pending.remove(&next) {
                next += 1;
                if self.handle(chunk).is_err() {
                    broken = true;
                    break 'outer;
                }
            }
        }
        // A shard or the caller failed: the run ends with that error, and
        // closing every window as if the input had ended would hand off
        // what the next run (or the partition's next owner) goes on with.
        let flush = !broken && flush_at_end.load(Ordering::SeqCst);
        for tx in &self.shards {
            let _ = tx.send(ShardMsg::End { flush });
        }
        (self.late, self.last_read)
    }

    fn handle(&mut self, chunk: DecodedChunk) -> Result<(), ()> {
        match chunk.control {
            Some(Item::Input(InputChange::Opened(input))) => self.watermark.open(input as usize),
            Some(Item::Input(InputChange::Idle(input))) => {
                if let Some(wm) = self.watermark.retire(input as usize) {
                    self.broadcast(|| ShardMsg::Watermark(wm))?;
                }
            }
            Some(Item::Barrier(b)) => {
                match &self.owners {
                    Some(owners) => {
                        let mut by_shard = vec![Vec::new(); self.shards.len()];
                        for tenant in owners.keys() {
                            by_shard[self.shard_of(tenant)].push(tenant.clone());
                        }
                        for (tx, tenants) in self.shards.iter().zip(by_shard) {
                            tx.send(ShardMsg::Barrier(b.id, Some(tenants))).map_err(|_| ())?;
                        }
                    }
                    None => self.broadcast(|| ShardMsg::Barrier(b.id, None))?,
                }
                let owners = self.owners.iter().flatten().map(|(t, i)| (t.clone(), *i)).collect();
                let part = Message::Router {
                    id: b.id,
                    position: b.position,
                    watermark: self.watermark.clone(),
                    inputs: b.inputs,
                    owners,
                };
                self.events.send(part).map_err(|_| ())?;
            }
            Some(Item::Release(inputs)) => self.release(&inputs)?,
            Some(Item::Acquire(parts)) => self.acquire(parts)?,
            Some(Item::Update(update)) => {
                if let Some(policies) = update.downcast_ref::<Arc<Policies>>() {
                    self.policies = policies.clone();
                }
                self.broadcast(|| ShardMsg::Update(update.clone()))?
            }
            Some(Item::Chunk(_)) => unreachable!("decoders decode chunks"),
            None => {}
        }
        if !chunk.dead_letters.is_empty() || !chunk.batches.is_empty() {
            self.last_read = Instant::now();
        }
        for dl in chunk.dead_letters {
            self.read.fetch_add(1, Ordering::Relaxed);
            self.events.send(Message::Event(Event::DeadLetter(dl))).map_err(|_| ())?;
        }
        for batch in chunk.batches {
            self.read.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
            self.route(batch, chunk.input as usize)?;
        }
        // Counted from the source on: routed (counted again) or set aside.
        if let Some((tenant, n)) = chunk.read {
            self.metrics.backlog.left(&tenant, n);
        }
        Ok(())
    }

    /// Partitions leave (their state is durable): their tenants are
    /// forgotten and they stop holding the watermark.
    fn release(&mut self, inputs: &[u32]) -> Result<(), ()> {
        let shards = self.shards.len();
        let Some(owners) = &mut self.owners else { return Ok(()) };
        let leaving: Vec<Arc<str>> =
            owners.iter().filter(|(_, i)| inputs.contains(i)).map(|(t, _)| t.clone()).collect();
        let mut by_shard = vec![Vec::new(); self.shards.len()];
        for tenant in leaving {
            owners.remove(&tenant);
            by_shard[shard_for(&tenant, shards)].push(tenant);
        }
        self.split.retain(|t| owners.contains_key(t));
        for (tx, tenants) in self.shards.iter().zip(by_shard) {
            if !tenants.is_empty() {
                tx.send(ShardMsg::Forget(tenants)).map_err(|_| ())?;
            }
        }
        for &input in inputs {
            if let Some(wm) = self.watermark.retire(input as usize) {
                self.broadcast(|| ShardMsg::Watermark(wm))?;
            }
        }
        if self.watermark.is_empty() {
            // Nothing is owned here any more: the watermark starts over
            // from the partitions that arrive next, at their own.
            self.watermark.reset();
        }
        Ok(())
    }

    /// Partitions arrive with their state: their tenants go to their
    /// shards, and each partition holds the watermark where it stood.
    fn acquire(&mut self, parts: Vec<(u32, PartCheckpoint)>) -> Result<(), ()> {
        let Some(owners) = &mut self.owners else { return Ok(()) };
        let mut by_shard: Vec<Vec<TenantState>> = vec![Vec::new(); self.shards.len()];
        for (input, part) in parts {
            if !part.idle {
                self.watermark.resume(input as usize, part.newest);
            }
            for tenant in part.tenants {
                if let Some(&owner) = owners.get(tenant.tenant.as_str()) {
                    // Its alerts came on two partitions (not keyed by
                    // tenant), and both parts hold some of its state.
                    tracing::error!(
                        tenant = %tenant.tenant,
                        owner,
                        input,
                        "a tenant's state arrives with two partitions: the first is kept, this one dropped \
                         (key the tenant's messages to one partition)"
                    );
                    continue;
                }
                owners.insert(Arc::from(tenant.tenant.as_str()), input);
                by_shard[shard_for(&tenant.tenant, self.shards.len())].push(tenant);
            }
        }
        for (tx, tenants) in self.shards.iter().zip(by_shard) {
            if !tenants.is_empty() {
                tx.send(ShardMsg::Absorb(tenants)).map_err(|_| ())?;
            }
        }
        Ok(())
    }

    /// Records the partition a tenant's alerts arrive on (state per
    /// partition): the first one owns the tenant's state.
    fn own(&mut self, tenant: &str, input: u32) {
        let Some(owners) = &mut self.owners else { return };
        match owners.get(tenant) {
            None => {
                owners.insert(Arc::from(tenant), input);
            }
            Some(&owner) if owner != input && !self.split.contains(tenant) => {
                tracing::warn!(
                    tenant,
                    owner,
                    input,
                    "a tenant's alerts arrive on two partitions: its state stays with the first, and moves with it \
                     alone (key the tenant's messages to one partition)"
                );
                self.split.insert(Arc::from(tenant));
            }
            Some(_) => {}
        }
    }

    fn broadcast(&self, msg: impl Fn() -> ShardMsg) -> Result<(), ()> {
        for tx in &self.shards {
            tx.send(msg()).map_err(|_| ())?;
        }
        Ok(())
    }

    fn shard_of(&self, tenant: &str) -> usize {
        shard_for(tenant, self.shards.len())
    }

    /// Splits one batch by shard, cutting wherever the watermark steps.
    fn route(&mut self, batch: RecordBatch, input: usize) -> Result<(), ()> {
        let cols = AlertColumns::new(&batch).map_err(|_| ())?;
        // Tenant (dictionary key) → its shard, or `None` when its policy
        // disables it.
        let mut shard_of_key: BTreeMap<i32, Option<usize>> = BTreeMap::new();
        let mut disabled: BTreeMap<i32, u64> = BTreeMap::new();
        // Per shard, each tenant's rows (tenant dictionary key → rows).
        let mut rows: Vec<BTreeMap<i32, Vec<u32>>> = vec![BTreeMap::new(); self.shards.len()];
        for row in 0..batch.num_rows() {
            let t = cols.event_time.value(row);
            if self.watermark.is_late(input, t) {
                // Late records are reported and counted, and kept out of the
                // operators: whether their window is still open would depend
                // on how partitions interleave, and results must not.
                self.late += 1;
                let wm = self.watermark.input_watermark(input).unwrap_or(EventTime::MIN);
                let late = LateRecord {
                    tenant: cols.tenant(row).to_string(),
                    alert_id: cols.alert_id.value(row).to_string(),
                    event_time: Rfc3339(t).to_string(),
                    watermark: Rfc3339(wm).to_string(),
                    record: String::from_utf8_lossy(cols.raw.value(row)).into_owned(),
                };
                self.events.send(Message::Event(Event::Late(late))).map_err(|_| ())?;
                continue;
            }
            let key = cols.tenant_key(row);
            let shard = match shard_of_key.get(&key) {
                Some(&s) => s,
                None => {
                    let tenant = cols.tenant(row);
                    let s = self.policies.enabled(tenant).then(|| self.shard_of(tenant));
                    if s.is_some() {
                        self.own(tenant, input as u32);
                    }
                    shard_of_key.insert(key, s);
                    s
                }
            };
            match shard {
                Some(shard) => rows[shard].entry(key).or_default().push(row as u32),
                None => *disabled.entry(key).or_default() += 1,
            }
            if let Some(wm) = self.watermark.observe(input, t) {
                self.flush(&batch, &cols, &mut rows)?;
                self.broadcast(|| ShardMsg::Watermark(wm))?;
            }
        }
        for (key, n) in disabled {
            if let Some(row) = (0..batch.num_rows()).find(|&r| cols.tenant_key(r) == key) {
                self.metrics.count_disabled(cols.tenant(row), n);
            }
        }
        self.flush(&batch, &cols, &mut rows)
    }

    /// Sends each shard its rows, grouped by tenant (one copy per shard;
    /// the groups are slices of it).
    fn flush(
        &self,
        batch: &RecordBatch,
        cols: &AlertColumns<'_>,
        rows: &mut [BTreeMap<i32, Vec<u32>>],
    ) -> Result<(), ()> {
        for (shard, by_tenant) in rows.iter_mut().enumerate() {
            if by_tenant.is_empty() {
                continue;
            }
            let mut groups = Vec::with_capacity(by_tenant.len());
            let mut indices: Vec<u32> = Vec::new();
            for idx in by_tenant.values() {
                let tenant: Arc<str> = Arc::from(cols.tenant(idx[0] as usize));
                self.metrics.backlog.entered(&tenant, idx.len() as u64);
                groups.push((tenant, indices.len(), idx.len()));
                indices.extend_from_slice(idx);
            }
            by_tenant.clear();
            let in_order = indices.len() == batch.num_rows() && indices.iter().enumerate().all(|(i, &r)| r == i as u32);
            let part = if in_order {
                batch.clone()
            } else {
                take_record_batch(batch, &UInt32Array::from(indices)).map_err(|_| ())?
            };
            self.shards[shard].send(ShardMsg::Batch(Grouped { batch: part, groups })).map_err(|_| ())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_connectors::generator::{GeneratorConfig, write_stream};

    /// What the router sends one shard for a generated stream of `tenants`,
    /// with a watermark right at the newest alert (so any alert queued is
    /// behind it).
    fn routed(tenants: usize, alerts: u64) -> Vec<ShardMsg> {
        let mut config = Config::default();
        config.time.allowed_lateness = sluice_operators::time::Duration(0);
        config.time.watermark_interval = sluice_operators::time::Duration(1000);
        let mut data = Vec::new();
        let cfg = GeneratorConfig { tenants, alerts, seed: 3, ..GeneratorConfig::default() };
        write_stream(cfg, &mut data, &mut std::io::sink(), |_| {}).unwrap();
        let (shard_tx, shard_rx) = crossbeam_channel::unbounded();
        let (events, _events_rx) = crossbeam_channel::unbounded();
        let mut router = Router {
            shards: vec![shard_tx],
            events,
            watermark: WatermarkTracker::new(
                1,
                config.time.allowed_lateness.millis(),
                config.time.watermark_interval.millis(),
            ),
            late: 0,
            read: Arc::default(),
            last_read: Instant::now(),
            policies: Arc::default(),
            metrics: Arc::default(),
            owners: None,
            split: BTreeSet::new(),
        };
        let mut decoder = Decoder::new(config.decode_config(), &config.tenant).unwrap();
        let text = String::from_utf8(data).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (seq, part) in lines.chunks(97).enumerate() {
            let mut chunk = RawChunk::default();
            for line in part {
                let start = chunk.data.len();
                chunk.data.extend_from_slice(line.as_bytes());
                chunk.lines.push((start, chunk.data.len()));
            }
            let out = decoder.decode(&chunk).unwrap();
            let decoded = DecodedChunk {
                seq: seq as u64,
                input: 0,
                read: None,
                batches: out.batch.into_iter().collect(),
                dead_letters: Vec::new(),
                control: None,
            };
            router.handle(decoded).unwrap();
        }
        drop(router);
        shard_rx.into_iter().collect()
    }

    /// Runs a shard over the messages. `heavy`: a tenant made heavy (as if
    /// a million of its alerts were in flight), so that its alerts are
    /// queued whenever the shard is behind, which here is always; the queue
    /// is served down to about 400 alerts after each message, so it misses
    /// watermarks and the others overtake it. Returns each tenant's reports,
    /// in order, and how many alerts were queued.
    fn shard_reports(msgs: &[ShardMsg], heavy: Option<&str>, quantum: usize) -> (BTreeMap<String, Vec<String>>, usize) {
        let config = Config::default();
        let mut correlate = config.correlate.clone();
        correlate.report_all_closed = true;
        let mut chain = build_chain(&config, &config.decode, correlate).unwrap();
        let (events, events_rx) = crossbeam_channel::unbounded();
        let metrics = Metrics::default();
        if let Some(t) = heavy {
            metrics.backlog.entered(&Arc::from(t), 1_000_000);
        }
        let mut shard = Shard {
            id: 0,
            chain: &mut chain,
            ctx: Context::default(),
            out: Vec::new(),
            queue: FairQueue::new(quantum),
            scheduling: Scheduling { fair: true, quantum, shard_backlog: usize::MAX, policies: Arc::default() },
            events,
            metrics: &metrics,
        };
        let mut queued = 0;
        for msg in msgs {
            match msg {
                ShardMsg::Batch(g) => {
                    for (tenant, _, n) in &g.groups {
                        metrics.backlog.entered(tenant, *n as u64);
                    }
                    shard.take(Grouped { batch: g.batch.clone(), groups: g.groups.clone() }, true).unwrap()
                }
                ShardMsg::Watermark(wm) => shard.watermark(*wm).unwrap(),
                _ => unreachable!("the router sends batches and watermarks here"),
            }
            queued = queued.max(shard.queue.rows());
            while shard.queue.rows() > 400 {
                shard.serve().unwrap();
            }
            assert!(shard.forward());
        }
        assert!(shard.drain().unwrap());
        shard.chain.on_end(&mut shard.ctx, &mut shard.out).unwrap();
        assert!(shard.forward());
        drop(shard);
        for r in metrics.backlog.report() {
            let phantom = if heavy == Some(r.tenant.as_ref()) { 1_000_000 } else { 0 };
            assert_eq!(r.in_flight, phantom, "{}: every alert routed is processed", r.tenant);
        }
        let mut by_tenant: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for message in events_rx.try_iter() {
            if let Message::Event(Event::Report(kind, report)) = message {
                let json = serde_json::to_string(&report).unwrap();
                by_tenant.entry(report.tenant.clone()).or_default().push(format!("{kind:?} {json}"));
            }
        }
        (by_tenant, queued)
    }

    /// Once a tenant has queued anything, its next alerts queue behind it,
    /// heavy or not: here behind a watermark it has not been given yet.
    #[test]
    fn a_tenants_alerts_wait_behind_its_queued_watermark() {
        let msgs = routed(2, 2_000);
        let first = msgs.iter().find_map(|m| if let ShardMsg::Batch(g) = m { Some(g) } else { None }).unwrap();
        let tenant = first.groups[0].0.clone();
        let config = Config::default();
        let mut chain = build_chain(&config, &config.decode, config.correlate.clone()).unwrap();
        let (events, _rx) = crossbeam_channel::unbounded();
        let metrics = Metrics::default();
        // Heavy: far more in flight than the average of ten tenants.
        metrics.backlog.entered(&tenant, 1_000_000);
        for i in 0..9 {
            metrics.backlog.entered(&Arc::from(format!("other-{i}")), 10);
        }
        let mut shard = Shard {
            id: 0,
            chain: &mut chain,
            ctx: Context::default(),
            out: Vec::new(),
            queue: FairQueue::new(4096),
            scheduling: Scheduling { fair: true, quantum: 1, shard_backlog: usize::MAX, policies: Arc::default() },
            events,
            metrics: &metrics,
        };
        let only = |g: &Grouped| {
            let (t, offset, len) = g.groups[0].clone();
            Grouped { batch: g.batch.slice(offset, len), groups: vec![(t, 0, len)] }
        };
        shard.take(only(first), true).unwrap();
        shard.watermark(first_event_time(first) + 1).unwrap();
        assert!(shard.serve().unwrap(), "the queued alerts");
        assert_eq!(shard.queue.tenant_rows(&tenant), 0);
        metrics.backlog.left(&tenant, 1_000_000); // no longer heavy
        shard.take(only(first), false).unwrap();
        assert_eq!(shard.queue.tenant_rows(&tenant), first.groups[0].2, "queued behind its watermark");
    }

    fn first_event_time(g: &Grouped) -> EventTime {
        AlertColumns::new(&g.batch).unwrap().event_time.value(0)
    }

    #[test]
    fn fair_scheduling_changes_the_order_between_tenants_not_the_results() {
        let msgs = routed(5, 30_000);
        let batches = msgs.iter().filter(|m| matches!(m, ShardMsg::Batch(_))).count();
        let watermarks = msgs.iter().filter(|m| matches!(m, ShardMsg::Watermark(_))).count();
        assert!(batches > 100 && watermarks > 10, "{batches} batches, {watermarks} watermarks");
        let (in_order, queued) = shard_reports(&msgs, None, 4096);
        assert_eq!(queued, 0, "five even tenants: nobody is heavy, nothing is queued");
        assert_eq!(in_order.len(), 5, "every tenant reports");
        let reports: usize = in_order.values().map(Vec::len).sum();
        assert!(reports > 50, "{reports} reports");
        let tenants: Vec<String> = in_order.keys().cloned().collect();
        for (heavy, quantum) in tenants.iter().zip([1, 13, 200, 4096, 7]) {
            let (fair, queued) = shard_reports(&msgs, Some(heavy), quantum);
            assert!(queued > 400, "{heavy} queued {queued} alerts");
            for (tenant, expected) in &in_order {
                let got = fair.get(tenant).cloned().unwrap_or_default();
                let first_difference = expected.iter().zip(&got).position(|(a, b)| a != b);
                assert!(
                    got == *expected,
                    "tenant {tenant}, {heavy} heavy, quantum {quantum}: {} reports against {}, first difference at {first_difference:?}",
                    got.len(),
                    expected.len()
                );
            }
        }
    }

    /// Partitions arriving with their state: an active one holds the
    /// watermark where it stood, an idle one does not hold it at all; each
    /// tenant goes to its shard once, even if two parts hold it.
    #[test]
    fn arriving_partitions_bring_their_watermark_and_tenants() {
        let (shard_tx, shard_rx) = crossbeam_channel::unbounded();
        let (events, _events_rx) = crossbeam_channel::unbounded();
        let mut router = Router {
            shards: vec![shard_tx],
            events,
            watermark: WatermarkTracker::new(1, 0, 1000),
            late: 0,
            read: Arc::default(),
            last_read: Instant::now(),
            policies: Arc::default(),
            metrics: Arc::default(),
            owners: Some(BTreeMap::new()),
            split: BTreeSet::new(),
        };
        let tenant = |name: &str| TenantState {
            tenant: name.into(),
            operators: vec![OperatorState { operator: "dedup".into(), state: vec![1] }],
        };
        let part = |input: &str, newest: Option<EventTime>, idle: bool, tenants: Vec<TenantState>| PartCheckpoint {
            id: 3,
            created_unix_ms: 0,
            writer: "test".into(),
            source: "kafka:t".into(),
            input: input.into(),
            offset: 10,
            newest,
            idle,
            tenants,
        };
        router
            .acquire(vec![
                (0, part("t[0]", Some(50_000), false, vec![tenant("acme")])),
                (1, part("t[1]", Some(20_000), true, vec![tenant("globex"), tenant("acme")])),
            ])
            .unwrap();
        assert!(!router.watermark.is_retired(0) && router.watermark.newest(0) == Some(50_000));
        assert!(router.watermark.is_retired(1), "the idle partition does not hold the watermark");
        let owners: Vec<(String, u32)> =
            router.owners.as_ref().unwrap().iter().map(|(t, i)| (t.to_string(), *i)).collect();
        assert_eq!(owners, [("acme".to_string(), 0), ("globex".to_string(), 1)], "acme stays with the first part");
        let absorbed: Vec<String> = shard_rx
            .try_iter()
            .flat_map(|m| match m {
                ShardMsg::Absorb(tenants) => tenants.into_iter().map(|t| t.tenant).collect(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(absorbed, ["acme", "globex"]);
        // The active partition's next record moves the watermark on its own.
        assert_eq!(router.watermark.observe(0, 61_000), Some(61_000));
        // Releasing everything starts the watermark over.
        router.release(&[0, 1]).unwrap();
        assert_eq!(router.watermark.current(), None);
        assert!(router.owners.as_ref().unwrap().is_empty());
    }
}
