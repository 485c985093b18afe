//! `sluice bench-fairness`: one tenant floods at 100× the others' rate;
//! does it push the others' triage latency up?
//!
//! Each tenant is its own input, as with a Kafka topic per tenant: records
//! become available at the tenant's rate from the start of the run, and the
//! source reads whatever is available from every input that is not held
//! back (see `fair.rs`). A held-back tenant's records wait at the source,
//! like a paused partition's in Kafka, and are read once it is released.
//!
//! Three runs over the same tenants and the same wall-clock span:
//! 1. every tenant at the base rate (the reference);
//! 2. the first tenant at 100× the base rate, fair scheduling on;
//! 3. the same flood with `runtime.fair_scheduling = false` (arrival order).
//!
//! Reported per run: the other tenants' triage latency (p50, p99, max over
//! their escalations), the flooding tenant's, how long the flooding tenant
//! was held back, and the run's throughput. Latency here counts from the
//! moment an alert is *offered* (would be in the broker), not from the
//! moment Sluice reads it: a tenant kept waiting at the source by someone
//! else's flood must show it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use sluice_connectors::generator::{GeneratorConfig, write_stream};
use sluice_connectors::source::{InputChange, Source, SourceError, StopFlag, now_us};
use sluice_operators::decode::{ChunkTenant, RawChunk};
use sluice_pipeline::config::{Config, Format};
use sluice_pipeline::metrics::Metrics;
use sluice_pipeline::{RunOptions, run};

#[derive(Args, Debug)]
pub struct BenchFairnessArgs {
    /// Tenants, the flooding one included.
    #[arg(long, default_value_t = 50)]
    tenants: usize,
    /// Each tenant's alerts per second, on average (tenants differ in size).
    #[arg(long, default_value_t = 3_000.0)]
    rate: f64,
    /// How many times the base rate the flooding tenant sends.
    #[arg(long, default_value_t = 100.0)]
    flood: f64,
    /// Seconds of offered load per run.
    #[arg(long, default_value_t = 5.0)]
    secs: f64,
    /// Hours of event time the offered alerts span.
    #[arg(long, default_value_t = 2.0)]
    event_hours: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Config for the runs (fair_scheduling is set per run).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Rounds of the three runs (the machine's noise shows in the spread).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Latency {
    escalations: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1e3;
        Latency {
            escalations: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

#[derive(Debug, Serialize)]
struct FairnessRun {
    name: &'static str,
    round: usize,
    fair_scheduling: bool,
    flood_rate: f64,
    alerts: u64,
    secs: f64,
    alerts_per_sec: f64,
    others: Latency,
    flooding_tenant: Latency,
    flooding_tenant_held_back_secs: f64,
    /// Others' p99 as a ratio to the same round's reference run.
    others_p99_ratio: f64,
}

/// One kind of run over every round.
#[derive(Debug, Serialize)]
struct Scenario {
    name: &'static str,
    /// Median over the rounds of the others' p99, and its range.
    others_p99_ms_median: f64,
    others_p99_ms_min: f64,
    others_p99_ms_max: f64,
    /// The median as a ratio to the reference's median.
    others_p99_ratio: f64,
    flooding_tenant_p99_ms_median: f64,
    flooding_tenant_held_back_secs_median: f64,
}

#[derive(Debug, Serialize)]
struct FairnessReport {
    tenants: usize,
    base_rate: f64,
    flood_factor: f64,
    offered_secs: f64,
    cores: usize,
    flooding_tenant: String,
    scenarios: Vec<Scenario>,
    runs: Vec<FairnessRun>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// One tenant's records, as lines in one buffer.
#[derive(Clone, Default)]
struct Lines {
    data: Arc<Vec<u8>>,
    spans: Arc<Vec<(usize, usize)>>,
}

impl Lines {
    fn len(&self) -> usize {
        self.spans.len()
    }
}

/// Generates (or reads back from `target/`) a stream and splits it by tenant.
fn tenant_lines(cfg: GeneratorConfig) -> Result<Vec<(String, Lines)>> {
    let path = PathBuf::from(format!(
        "target/bench-fairness-{}-{}-{}-{:.3}.json",
        cfg.tenants, cfg.alerts, cfg.seed, cfg.rate
    ));
    if !path.exists() {
        eprintln!("generating {} alerts for {} tenant(s) into {} …", cfg.alerts, cfg.tenants, path.display());
        std::fs::create_dir_all("target")?;
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        write_stream(cfg, &mut out, &mut std::io::sink(), |_| {})?;
        std::io::Write::flush(&mut out)?;
    }
    split_by_tenant(&path)
}

fn split_by_tenant(path: &Path) -> Result<Vec<(String, Lines)>> {
    #[derive(Deserialize)]
    struct Manager<'a> {
        #[serde(borrow)]
        name: &'a str,
    }
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(borrow)]
        manager: Manager<'a>,
    }
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    #[derive(Default)]
    struct Building {
        data: Vec<u8>,
        spans: Vec<(usize, usize)>,
    }
    let mut by_tenant: std::collections::BTreeMap<String, Building> = Default::default();
    for (n, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let head: Head<'_> =
            serde_json::from_slice(line).with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        let b = by_tenant.entry(head.manager.name.to_string()).or_default();
        let start = b.data.len();
        b.data.extend_from_slice(line);
        b.spans.push((start, b.data.len()));
    }
    Ok(by_tenant.into_iter().map(|(t, b)| (t, Lines { data: Arc::new(b.data), spans: Arc::new(b.spans) })).collect())
}

/// One input per tenant; each offers its records at its rate from the start.
struct Offered {
    inputs: Vec<Input>,
    /// When the run started, as an instant and as wall-clock µs.
    start: Option<(Instant, i64)>,
    /// Whose turn it is first.
    turn: usize,
    opened: bool,
}

struct Input {
    tenant: Arc<str>,
    lines: Lines,
    rate: f64,
    next: usize,
    held: bool,
    last_sent: Instant,
    finished: bool,
}

/// Records per chunk at most, and how long records may wait at the source
/// for more to join them (a Kafka consumer's fetch does the same).
const MAX_CHUNK: usize = 1024;
const LINGER: Duration = Duration::from_millis(20);

impl Source for Offered {
    fn name(&self) -> &str {
        "offered"
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        let (start, start_us) = *self.start.get_or_insert_with(|| (Instant::now(), now_us()));
        let elapsed = start.elapsed().as_secs_f64();
        let n = self.inputs.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            let input = &mut self.inputs[i];
            if input.held || input.finished {
                continue;
            }
            let available = ((input.rate * elapsed) as usize).min(input.lines.len());
            let due = available.saturating_sub(input.next);
            let all_in = available == input.lines.len();
            if due == 0 || (due < MAX_CHUNK / 4 && input.last_sent.elapsed() < LINGER && !all_in) {
                continue;
            }
            let take = due.min(MAX_CHUNK);
            // The tenant comes with the input, as from a Kafka topic per
            // tenant. Latency counts from when the chunk's first record was
            // offered: time spent waiting upstream (a held-back tenant's, or
            // anyone's behind a flood) counts too.
            let offered_us = start_us + (input.next as f64 / input.rate * 1e6) as i64;
            let mut chunk = RawChunk {
                source: Arc::from("offered"),
                ingest_us: offered_us,
                input: i as u32,
                tenant: ChunkTenant::Fixed(input.tenant.clone()),
                ..RawChunk::default()
            };
            for &(s, e) in &input.lines.spans[input.next..input.next + take] {
                let at = chunk.data.len();
                chunk.data.extend_from_slice(&input.lines.data[s..e]);
                chunk.lines.push((at, chunk.data.len()));
            }
            input.next += take;
            input.last_sent = Instant::now();
            self.turn = i + 1;
            return Ok(Some(chunk));
        }
        if self.inputs.iter().all(|i| i.next == i.lines.len()) {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(1));
        Ok(Some(RawChunk { source: Arc::from("offered"), ..RawChunk::default() }))
    }

    fn input_changes(&mut self) -> Vec<InputChange> {
        let mut changes = Vec::new();
        if !self.opened {
            self.opened = true;
            changes.extend((0..self.inputs.len()).map(|i| InputChange::Opened(i as u32)));
        }
        // A tenant read to its end stops holding the watermark back.
        for (i, input) in self.inputs.iter_mut().enumerate() {
            if !input.finished && input.next == input.lines.len() {
                input.finished = true;
                changes.push(InputChange::Idle(i as u32));
            }
        }
        changes
    }

    fn hold_back(&mut self, tenants: &[Arc<str>]) {
        for input in &mut self.inputs {
            input.held = tenants.contains(&input.tenant);
        }
    }
}

pub fn cmd_bench_fairness(a: BenchFairnessArgs) -> Result<()> {
    anyhow::ensure!(a.tenants >= 2, "--tenants must be at least 2");
    anyhow::ensure!(a.repeat >= 1, "--repeat must be at least 1");
    anyhow::ensure!(
        a.rate > 0.0 && a.flood >= 1.0 && a.secs > 0.0 && a.event_hours > 0.0,
        "--rate, --secs and --event-hours must be positive, --flood at least 1"
    );
    let mut config = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.output.format = Format::Quiet;

    // Every tenant at the base rate; the flooding tenant's own stream at
    // `flood` times that. Both span the same `event_hours` of event time
    // (campaigns take hours to unfold), replayed in `secs`.
    let span_secs = a.event_hours * 3600.0;
    let everyone_alerts = (a.rate * a.secs) as u64 * a.tenants as u64;
    let everyone = tenant_lines(GeneratorConfig {
        tenants: a.tenants,
        alerts: everyone_alerts,
        seed: a.seed,
        rate: everyone_alerts as f64 / span_secs,
        ..GeneratorConfig::default()
    })?;
    let flood_alerts = (a.rate * a.flood * a.secs) as u64;
    let mut flood = tenant_lines(GeneratorConfig {
        tenants: 1,
        alerts: flood_alerts,
        seed: a.seed + 1,
        rate: flood_alerts as f64 / span_secs,
        ..GeneratorConfig::default()
    })?;
    let (flooder, flood_lines) = flood.pop().context("the flood stream is empty")?;
    anyhow::ensure!(
        everyone.iter().any(|(t, _)| *t == flooder),
        "the flooding tenant {flooder} is not among the {} tenants",
        a.tenants
    );

    let offered = |flooding: bool| {
        let inputs = everyone
            .iter()
            .map(|(tenant, lines)| {
                // Tenants differ in size (the generator's mix): each offers
                // its alerts evenly over the run.
                let lines = if flooding && *tenant == flooder { flood_lines.clone() } else { lines.clone() };
                let rate = lines.len() as f64 / a.secs;
                Input {
                    tenant: Arc::from(tenant.as_str()),
                    lines,
                    rate,
                    next: 0,
                    held: false,
                    last_sent: Instant::now(),
                    finished: false,
                }
            })
            .collect();
        Offered { inputs, start: None, turn: 0, opened: false }
    };

    const KINDS: [(&str, bool, bool); 3] =
        [("reference", false, true), ("flood, fair scheduling", true, true), ("flood, arrival order", true, false)];
    let mut runs: Vec<FairnessRun> = Vec::new();
    // A first reference run warms the machine up (page cache, allocator);
    // it is not reported. Rounds interleave the kinds, so that the
    // machine's drift spreads over all of them.
    let plan = std::iter::once((0, ("warm-up", false, true)))
        .chain((1..=a.repeat).flat_map(|round| KINDS.iter().map(move |k| (round, *k))));
    for (round, (name, flooding, fair)) in plan {
        eprintln!("round {round}: {name} …");
        let t0 = Instant::now();
        let mut cfg = config.clone();
        cfg.runtime.fair_scheduling = fair;
        let metrics = Arc::new(Metrics::default());
        let options = RunOptions { metrics: Some(metrics.clone()), ..RunOptions::default() };
        let stop = StopFlag::new();
        let summary = run(&cfg, Box::new(offered(flooding)), &options, &stop, |_| Ok(()))?;
        eprintln!(
            "  {:.2} s in all, last record read at {:.2} s, run reports {:.2} s",
            t0.elapsed().as_secs_f64(),
            summary.reading_secs,
            summary.elapsed_secs
        );
        let mut others = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        let mut flooding_tenant = others.clone();
        for (tenant, h) in metrics.tenant_latency() {
            if tenant == flooder { flooding_tenant.add(&h)? } else { others.add(&h)? }
        }
        let held = metrics.backlog.report().into_iter().find(|r| *r.tenant == *flooder).map_or(0.0, |r| r.held_secs);
        if name == "warm-up" {
            continue;
        }
        let others = Latency::of(&others);
        let reference_p99 = runs.iter().find(|r| r.round == round).map_or(others.p99_ms, |r| r.others.p99_ms);
        runs.push(FairnessRun {
            name,
            round,
            fair_scheduling: fair,
            flood_rate: if flooding { a.rate * a.flood } else { a.rate },
            alerts: summary.alerts_read,
            secs: summary.elapsed_secs,
            alerts_per_sec: summary.alerts_per_sec,
            others_p99_ratio: others.p99_ms / reference_p99.max(1e-3),
            others,
            flooding_tenant: Latency::of(&flooding_tenant),
            flooding_tenant_held_back_secs: held,
        });
    }
    let of = |name: &str, f: fn(&FairnessRun) -> f64| -> Vec<f64> {
        runs.iter().filter(|r| r.name == name).map(f).collect()
    };
    let reference_median = median(of("reference", |r| r.others.p99_ms));
    let scenarios = KINDS
        .iter()
        .map(|(name, ..)| {
            let p99 = of(name, |r| r.others.p99_ms);
            let m = median(p99.clone());
            Scenario {
                name,
                others_p99_ms_median: m,
                others_p99_ms_min: p99.iter().copied().fold(f64::INFINITY, f64::min),
                others_p99_ms_max: p99.iter().copied().fold(0.0, f64::max),
                others_p99_ratio: m / reference_median.max(1e-3),
                flooding_tenant_p99_ms_median: median(of(name, |r| r.flooding_tenant.p99_ms)),
                flooding_tenant_held_back_secs_median: median(of(name, |r| r.flooding_tenant_held_back_secs)),
            }
        })
        .collect();
    let report = FairnessReport {
        tenants: a.tenants,
        base_rate: a.rate,
        flood_factor: a.flood,
        offered_secs: a.secs,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        flooding_tenant: flooder,
        scenarios,
        runs,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "{} tenants at {:.0} alerts/s each; {} floods at {:.0}× for {:.0} s; {} cores",
        report.tenants,
        report.base_rate,
        report.flooding_tenant,
        report.flood_factor,
        report.offered_secs,
        report.cores
    );
    println!(
        "{:<2} {:<24} {:>9} {:>6} {:>24} {:>9} {:>22} {:>7}",
        "#", "run", "alerts/s", "secs", "others p50/p99/max ms", "×ref p99", "flooder p50/p99 ms", "held s"
    );
    for r in &report.runs {
        println!(
            "{:<2} {:<24} {:>9.0} {:>6.1} {:>24} {:>9.2} {:>22} {:>7.1}",
            r.round,
            r.name,
            r.alerts_per_sec,
            r.secs,
            format!("{:.1}/{:.1}/{:.1} ({})", r.others.p50_ms, r.others.p99_ms, r.others.max_ms, r.others.escalations),
            r.others_p99_ratio,
            format!(
                "{:.1}/{:.1} ({})",
                r.flooding_tenant.p50_ms, r.flooding_tenant.p99_ms, r.flooding_tenant.escalations
            ),
            r.flooding_tenant_held_back_secs
        );
    }
    println!("over {} round(s), medians:", a.repeat);
    for sc in &report.scenarios {
        println!(
            "   {:<24} others p99 {:.1} ms ({:.1}–{:.1}), {:.2}× the reference; flooder p99 {:.1} ms, held back {:.1} s",
            sc.name,
            sc.others_p99_ms_median,
            sc.others_p99_ms_min,
            sc.others_p99_ms_max,
            sc.others_p99_ratio,
            sc.flooding_tenant_p99_ms_median,
            sc.flooding_tenant_held_back_secs_median
        );
    }
    Ok(())
}
