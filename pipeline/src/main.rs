//! `sluice`: the command line.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand};
use sluice_connectors::file::{FileOptions, FileSource};
use sluice_connectors::generator::{GeneratorConfig, Label, write_stream};
use sluice_connectors::kafka::{KafkaSink, KafkaSource};
use sluice_connectors::opensearch::OpenSearchSource;
use sluice_connectors::source::{Source, StopFlag};
use sluice_connectors::synthetic::GeneratorSource;
use sluice_operators::operator::ReportKind;
use sluice_pipeline::checkpoint::{CheckpointStore, DirStore, PgStore};
use sluice_pipeline::config::{Config, Format, InputKind, StoreKind};
use sluice_pipeline::metrics::{ComponentState, Metrics};
use sluice_pipeline::output::{EventWriter, human_summary, stable_case_json};
use sluice_pipeline::runtime::Event;
use sluice_pipeline::runtime::PriorsSlot;
use sluice_pipeline::sinks::{Dispatchers, LlmSink, Sink, SinksConfig, WebhookSink};
use sluice_pipeline::store::Store;
use sluice_pipeline::{CheckpointOptions, RunOptions, eval, run};

mod bench;
mod bench_checkpoint;
mod bench_fairness;
mod bench_kafka;
mod replay;
mod rules_cmd;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: Wazuh alerts in, a handful of escalated, explained clusters out.
#[derive(Parser, Debug)]
#[command(name = "sluice", version, about)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    /// Text at a terminal, JSON lines otherwise (files, journald, CI).
    Auto,
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the pipeline: on a Wazuh alerts file, stdin, or (with no input)
    /// the embedded generator.
    Run(RunArgs),
    /// Run a file or an OpenSearch time range through a config at full
    /// speed and write what would have been escalated (for tuning
    /// thresholds and rules on history).
    Replay(replay::ReplayArgs),
    /// Write a realistic multi-tenant Wazuh alerts.json stream with labelled
    /// attack campaigns, and the labels beside it.
    Generate(GenerateArgs),
    /// Run the pipeline on labelled alerts and report reduction, recall,
    /// precision and fragmentation, per tenant and overall.
    Eval(EvalArgs),
    /// Check a config file and say exactly what is wrong, then reach every
    /// dependency it names (broker, database, webhook, LLM endpoint, the
    /// admin address): the preflight check before a deployment.
    Validate {
        /// The TOML config file.
        config: PathBuf,
        /// Check the config only; reach nothing.
        #[arg(long)]
        offline: bool,
    },
    /// Measure throughput (parse-only ceiling, decode, full pipeline), peak
    /// RSS and triage latency.
    Bench(bench::BenchArgs),
    /// Load a Wazuh alerts file into a Kafka topic, keyed by tenant (for
    /// replays, demos and tests).
    Produce(ProduceArgs),
    /// Measure the Kafka path (source → pipeline → sink) against a bare
    /// consumer on the same topic.
    BenchKafka(bench_kafka::BenchKafkaArgs),
    /// Measure what a checkpoint costs with a large live state.
    BenchCheckpoint(bench_checkpoint::BenchCheckpointArgs),
    /// Measure fair scheduling: one tenant floods at 100× the others' rate;
    /// the others' triage latency against a run without the flood.
    BenchFairness(bench_fairness::BenchFairnessArgs),
    /// The hand-off outbox: what is pending, deferred (over budget) or
    /// parked, and sending parked cases again.
    #[command(subcommand)]
    Outbox(OutboxCommand),
    /// A cluster's history from the store: versions, hand-offs, verdicts and
    /// its audit trail.
    History {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        cluster_id: String,
        #[arg(long, value_enum, default_value_t = Format::Human)]
        format: Format,
    },
    /// Record a verdict from an investigation platform (one that got the
    /// case by webhook, such as SocTalk) on a case in the store; a confident
    /// false positive becomes a prior.
    Verdict(VerdictArgs),
    /// Verdict priors: confident false-positive verdicts that lower the score
    /// of later clusters of the same kind. List them, revoke one.
    #[command(subcommand)]
    Priors(PriorsCommand),
    /// Correlation rules: test them on a file, explain their plans, list them.
    #[command(subcommand)]
    Rules(rules_cmd::RulesCommand),
}

#[derive(Subcommand, Debug)]
enum OutboxCommand {
    /// Counts by sink and status, then every case with the given status and
    /// its reason.
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// pending, deferred, parked or delivered.
        #[arg(long, default_value = "parked")]
        status: String,
    },
    /// Puts a tenant's parked cases back in the queue (written to the audit
    /// log); they go out on the next run.
    Requeue {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// Only this sink's cases (webhook, llm).
        #[arg(long, default_value = "")]
        sink: String,
    },
}

#[derive(Args, Debug)]
struct VerdictArgs {
    #[arg(long, short)]
    config: Option<PathBuf>,
    #[arg(long)]
    tenant: String,
    /// The case's idempotency key (`cluster_id:version`).
    #[arg(long)]
    key: String,
    /// true_positive, false_positive or needs_escalation.
    #[arg(long)]
    verdict: String,
    /// 0 to 1.
    #[arg(long)]
    confidence: f64,
    #[arg(long)]
    summary: String,
    /// Who judged (written to the audit log).
    #[arg(long, default_value = "external")]
    by: String,
}

#[derive(Subcommand, Debug)]
enum PriorsCommand {
    /// Every tenant's priors (or one tenant's), newest first.
    List {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revokes a prior (written to the audit log); a running Sluice on the
    /// same store stops applying it within seconds.
    Revoke {
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        /// The prior's number, as `priors list` shows it.
        id: i64,
    },
}

#[derive(Args, Debug)]
struct ProduceArgs {
    /// Kafka brokers (`bootstrap.servers`).
    #[arg(long, value_name = "BROKERS")]
    kafka: String,
    /// Topic to write.
    #[arg(long)]
    topic: String,
    /// Alerts file, one JSON alert per line.
    #[arg(long, short)]
    input: PathBuf,
    /// Dotted JSON path of the tenant, used as the message key.
    #[arg(long, default_value = "manager.name")]
    tenant_field: String,
    /// Partitions of the topic, if it has to be created.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
}

#[derive(Args, Debug, Clone)]
struct GenArgs {
    /// Tenants in the generated stream.
    #[arg(long)]
    tenants: Option<usize>,
    /// Alerts to generate.
    #[arg(long)]
    alerts: Option<u64>,
    /// Seed: the same seed gives the same stream.
    #[arg(long)]
    seed: Option<u64>,
    /// Average alerts per second of event time.
    #[arg(long)]
    rate: Option<f64>,
    /// Add each tenant's authorised vulnerability scan, sweeping the same
    /// two web servers this often (e.g. `8h`): a recurring false positive.
    #[arg(long, value_name = "PERIOD")]
    recurring_scan: Option<humantime::Duration>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// TOML config file (see deploy/sluice.example.toml). Without one, the
    /// defaults apply.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Wazuh alerts file (`-` for stdin). Without one, alerts are generated.
    #[arg(long, short)]
    input: Option<String>,
    /// Tail the input like `tail -F`, surviving rotation and truncation.
    #[arg(long)]
    follow: bool,
    /// How escalated clusters are printed.
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Write case files as NDJSON to this file.
    #[arg(long, short)]
    output: Option<String>,
    /// Write dead letters here (default sluice-dead-letters.ndjson).
    #[arg(long)]
    dead_letters: Option<String>,
    /// Write late records here.
    #[arg(long)]
    late: Option<String>,
    /// Also print the final state of every escalated cluster.
    #[arg(long)]
    show_final: bool,
    /// Write the run summary as JSON to this file.
    #[arg(long)]
    summary_json: Option<PathBuf>,
    /// List every member alert id in case files (costs memory on big clusters).
    #[arg(long)]
    members: bool,
    /// Worker shards (overrides runtime.shards).
    #[arg(long)]
    shards: Option<usize>,
    /// Read Kafka at these brokers (sets input.kind = "kafka", kafka.brokers).
    #[arg(long, value_name = "BROKERS")]
    kafka: Option<String>,
    /// Kafka topic or ^regex to read (repeatable; overrides kafka.topics).
    #[arg(long = "topic")]
    topics: Vec<String>,
    /// Kafka consumer group (overrides kafka.group_id).
    #[arg(long)]
    group: Option<String>,
    /// End once every assigned Kafka partition is read to its end.
    #[arg(long)]
    exit_when_caught_up: bool,
    /// Checkpoint directory (overrides checkpoint.dir).
    #[arg(long)]
    state_dir: Option<String>,
    /// Take checkpoints even for file input (checkpoint.mode = "on").
    #[arg(long)]
    checkpoint: bool,
    /// Ignore and remove existing checkpoints: start without state.
    #[arg(long)]
    fresh_state: bool,
    #[command(flatten)]
    generator: GenArgs,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Where to write the alerts (`-` for stdout).
    #[arg(long, short, default_value = "alerts.json")]
    output: String,
    /// Where to write the labels (default: the output path + `.labels.ndjson`).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Write in real time at `--rate` alerts per second (for `run --follow`).
    #[arg(long)]
    realtime: bool,
    #[command(flatten)]
    generator: GenArgs,
}

#[derive(Args, Debug)]
struct EvalArgs {
    /// Alerts file; without one, a stream is generated in memory.
    #[arg(long, short)]
    input: Option<String>,
    /// Labels file written by `sluice generate` (required with --input).
    #[arg(long, short)]
    labels: Option<PathBuf>,
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// `human` or `json`.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Judge every hand-off (escalation or update) without a campaign alert
    /// a confident false positive as it happens (the labels as the investigation stage), so
    /// verdict priors act on later clusters: what priors are worth.
    #[arg(long)]
    oracle_priors: bool,
    /// Write every hand-off (escalation or update) here as NDJSON: tenant,
    /// cluster, kind, score, signature and the score breakdown.
    #[arg(long, value_name = "FILE")]
    handoffs: Option<PathBuf>,
    #[command(flatten)]
    generator: GenArgs,
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(a) => cmd_run(a),
        Command::Generate(a) => cmd_generate(a),
        Command::Replay(a) => replay::cmd_replay(a, load_config),
        Command::Eval(a) => cmd_eval(a),
        Command::Validate { config, offline } => cmd_validate(&config, offline),
        Command::Bench(a) => bench::cmd_bench(a),
        Command::Produce(a) => cmd_produce(a),
        Command::BenchKafka(a) => bench_kafka::cmd_bench_kafka(a),
        Command::BenchCheckpoint(a) => bench_checkpoint::cmd_bench_checkpoint(a),
        Command::BenchFairness(a) => bench_fairness::cmd_bench_fairness(a),
        Command::Rules(c) => rules_cmd::cmd_rules(c),
        Command::Outbox(c) => cmd_outbox(c),
        Command::Priors(c) => cmd_priors(c),
        Command::History { config, tenant, cluster_id, format } => {
            cmd_history(config.as_deref(), &tenant, &cluster_id, format)
        }
        Command::Verdict(a) => cmd_verdict(a),
    };
    if let Err(e) = result {
        eprintln!("error: {}", describe(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, each said once (messages that already quote
/// their cause are not followed by it again).
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut previous = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !previous.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        previous = text;
    }
    out
}

/// Changes the log filter once the config is read (unless the environment
/// set one).
static LOG_FILTER: std::sync::OnceLock<
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>,
> = std::sync::OnceLock::new();

/// The filter from `SLUICE_LOG` or `RUST_LOG` (`info,sluice_pipeline::sinks=debug`),
/// else `info` until the config's `[log] filter` applies.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let from_env = ["SLUICE_LOG", "RUST_LOG"]
        .iter()
        .find_map(|var| std::env::var(var).ok().and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok()));
    let env_set = from_env.is_some();
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(from_env.unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info")));
    // Colours and text for a person at a terminal; JSON lines for machines.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(terminal);
    let layer = match format {
        LogFormat::Text => layer.with_target(false).boxed(),
        LogFormat::Auto if terminal => layer.with_target(false).boxed(),
        LogFormat::Json | LogFormat::Auto => layer.json().boxed(),
    };
    tracing_subscriber::registry().with(filter).with(layer).init();
    if !env_set {
        let _ = LOG_FILTER.set(handle);
    }
}

/// Applies the config's `[log] filter`, unless the environment set one.
fn apply_log_filter(config: &Config) -> Result<()> {
    let Some(handle) = LOG_FILTER.get() else { return Ok(()) };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.filter)
        .with_context(|| format!("log.filter = {:?}", config.log.filter))?;
    handle.reload(filter).context("setting the log filter")?;
    Ok(())
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    let config = match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    apply_log_filter(&config)?;
    Ok(config)
}

fn apply_gen(config: &mut Config, g: &GenArgs) {
    if let Some(v) = g.tenants {
        config.generator.tenants = v;
    }
    if let Some(v) = g.alerts {
        config.generator.alerts = v;
    }
    if let Some(v) = g.seed {
        config.generator.seed = v;
    }
    if let Some(v) = g.rate {
        config.generator.rate = v;
    }
    if let Some(v) = g.recurring_scan {
        config.generator.recurring_scan = Some(sluice_operators::time::Duration(v.as_millis() as i64));
    }
}

fn generator_config(config: &Config) -> GeneratorConfig {
    GeneratorConfig {
        tenants: config.generator.tenants,
        alerts: config.generator.alerts,
        seed: config.generator.seed,
        rate: config.generator.rate,
        recurring_scan: config.generator.recurring_scan.map(|d| d.millis()),
        ..GeneratorConfig::default()
    }
}

/// Stops sources on Ctrl-C so open windows are flushed before exit.
/// SIGINT (Ctrl-C) and SIGTERM stop the run cleanly: open windows are
/// flushed, or with checkpoints a last checkpoint is taken. A second one
/// aborts at once. SIGHUP is not a stop: it reloads rules and intel (when configured)
/// and is otherwise ignored.
fn stop_on_signals() -> StopFlag {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = StopFlag::new();
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // The conditional exit is registered first, so it sees the flag as
        // the previous signal left it.
        let _ = signal_hook::flag::register_conditional_shutdown(signal, 130, signalled.clone());
        let _ = signal_hook::flag::register(signal, signalled.clone());
    }
    // SIGHUP reloads (rules and intel, when configured); it must never end the run.
    let _ =
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let s = stop.clone();
    let _ = std::thread::Builder::new().name("sluice-signals".into()).spawn(move || {
        while !signalled.load(std::sync::atomic::Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("\nstopping: flushing open windows (Ctrl-C again to abort)");
        s.stop();
    });
    stop
}

fn open_source(config: &Config, stop: &StopFlag) -> Result<Box<dyn Source>> {
    Ok(match (config.input_kind(), &config.input.path) {
        (InputKind::Kafka, _) => Box::new(KafkaSource::new(&config.kafka, stop.clone())?),
        (InputKind::OpenSearch, _) => Box::new(OpenSearchSource::new(&config.opensearch, stop.clone())?),
        (InputKind::File | InputKind::Auto, Some(path)) => {
            let opts = FileOptions { follow: config.input.follow, ..FileOptions::default() };
            Box::new(FileSource::open(path, opts, stop.clone())?)
        }
        _ => Box::new(GeneratorSource::new(generator_config(config), config.runtime.batch_size.get(), stop.clone())?),
    })
}

fn cmd_run(a: RunArgs) -> Result<()> {
    let mut config = load_config(a.config.as_deref())?;
    if let Some(i) = a.input {
        config.input.path = Some(i);
    }
    config.input.follow |= a.follow;
    if let Some(f) = a.format {
        config.output.format = f;
    }
    if let Some(o) = a.output {
        config.output.cases = Some(o);
    }
    if let Some(d) = a.dead_letters {
        config.output.dead_letters = d;
    }
    if let Some(l) = a.late {
        config.output.late = l;
    }
    if let Some(s) = a.shards {
        config.runtime.shards = s;
    }
    if let Some(brokers) = a.kafka {
        config.input.kind = InputKind::Kafka;
        config.kafka.brokers = brokers;
    }
    if !a.topics.is_empty() {
        config.kafka.topics = a.topics;
    }
    if let Some(g) = a.group {
        config.kafka.group_id = g;
    }
    config.kafka.exit_when_caught_up |= a.exit_when_caught_up;
    if let Some(d) = a.state_dir {
        config.checkpoint.dir = d;
    }
    if a.checkpoint {
        config.checkpoint.mode = sluice_pipeline::config::Switch::On;
    }
    apply_gen(&mut config, &a.generator);
    let errors = config.validate();
    if !errors.is_empty() {
        bail!("invalid settings:\n  - {}", errors.join("\n  - "));
    }
    let stop = stop_on_signals();
    let source = open_source(&config, &stop)?;
    let checkpoint = if config.checkpoints_enabled() {
        let c = &config.checkpoint;
        let store: std::sync::Arc<dyn CheckpointStore> = match c.store {
            StoreKind::Dir => std::sync::Arc::new(DirStore::new(&c.dir, c.keep)?),
            StoreKind::Postgres => {
                let url = std::env::var(&c.postgres_url_env).with_context(|| {
                    format!("checkpoint.store = \"postgres\" needs the connection URL in ${}", c.postgres_url_env)
                })?;
                std::sync::Arc::new(PgStore::connect(&url, &c.instance, c.keep)?)
            }
        };
        tracing::info!(store = %store.describe(), "checkpoints on");
        Some(CheckpointOptions {
            store,
            interval: Duration::from_millis(config.checkpoint.interval.millis() as u64),
            fresh: a.fresh_state,
        })
    } else {
        None
    };
    // A run that resumes from a checkpoint continues its output files
    // instead of truncating them.
    let append = match &checkpoint {
        Some(c) if !c.fresh => {
            c.store.latest_id()?.is_some()
                || (config.input_kind() == InputKind::Kafka
                    && c.store.latest_part_id(config.kafka.state_scope())?.is_some())
        }
        _ => false,
    };
    let metrics = Arc::new(Metrics::new(config.admin.max_clusters_per_tenant));
    let mut kafka_sink = match config.input_kind() {
        InputKind::Kafka => {
            let sink = KafkaSink::new(&config.kafka)?;
            metrics.component("kafka_sink", ComponentState::Ready, &config.kafka.cases_topic);
            Some(sink)
        }
        _ => None,
    };
    match (config.input_kind(), &config.input.path) {
        (InputKind::Kafka, _) => tracing::info!(
            brokers = %config.kafka.brokers,
            topics = ?config.kafka.topics,
            group = %config.kafka.group_id,
            cases_topic = %config.kafka.cases_topic,
            "reading Wazuh alerts from Kafka"
        ),
        (InputKind::OpenSearch, _) => tracing::info!(
            url = %config.opensearch.url,
            index = %config.opensearch.index,
            mode = ?config.opensearch.mode,
            tenants = config.opensearch.sources.len(),
            "reading Wazuh alerts from OpenSearch"
        ),
        (_, Some(p)) => tracing::info!(input = %p, follow = config.input.follow, "reading Wazuh alerts"),
        (_, None) => tracing::info!(
            tenants = config.generator.tenants,
            alerts = config.generator.alerts,
            seed = config.generator.seed,
            "no input given: running on the embedded generator (realistic noise with hidden attack campaigns)"
        ),
    }
    let handoff = start_handoff(&config, &metrics)?;
    let _admin = sluice_pipeline::admin::start(
        &config.admin,
        metrics.clone(),
        handoff.as_ref().map(|h| h.store.clone()),
        config.effective_budget(),
    )?;
    let stdout = std::io::stdout().lock();
    let mut writer = EventWriter::new(&config.output, BufWriter::new(stdout), append)?;
    writer.show_final = a.show_final;
    let options = RunOptions {
        progress: Some(Duration::from_secs(5)),
        track_members: a.members,
        checkpoint,
        priors: handoff.as_ref().map(|h| h.priors.clone()),
        metrics: Some(metrics.clone()),
        ..RunOptions::default()
    };
    let summary = run(&config, source, &options, &stop, |e| {
        // With a store, Kafka publishes the case file as stored: one content
        // per key, even when a replay scores differently.
        let stored = match &handoff {
            Some(h) => h.record(&e)?,
            None => None,
        };
        if let Some(sink) = &mut kafka_sink {
            to_kafka(sink, &e, stored)?;
        }
        writer.write(e)
    })?;
    writer.finish()?;
    if let Some(h) = handoff {
        h.finish(&stop)?;
    }
    if let Some(sink) = &mut kafka_sink {
        sink.confirm(Duration::from_secs(60)).context("confirming the last Kafka deliveries")?;
    }
    let dead_file = writer.dead_letter_file().map(str::to_string);
    let late_file = writer.late_file().map(str::to_string);
    drop(writer);
    if config.output.format == Format::Json {
        eprint!("{}", human_summary(&summary));
    } else {
        print!("{}", human_summary(&summary));
    }
    if let Some(path) = dead_file {
        eprintln!("{} dead-lettered record(s) written to {path}", summary.dead_lettered);
    }
    if let Some(path) = late_file {
        eprintln!("{} late record(s) written to {path} (beyond time.allowed_lateness)", summary.late);
    }
    if let Some(path) = a.summary_json {
        std::fs::write(&path, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The store and the sinks' dispatchers of a run.
struct Handoff {
    store: Arc<Store>,
    dispatchers: Dispatchers,
    sinks: Vec<&'static str>,
    score: sluice_operators::score::ScoreConfig,
    drain: Duration,
    /// Where new priors go while the pipeline runs.
    priors: PriorsSlot,
}

/// Opens the store and starts a dispatcher per configured sink, when the
/// config keeps a store.
fn start_handoff(config: &Config, metrics: &Metrics) -> Result<Option<Handoff>> {
    if !config.store_enabled() {
        return Ok(None);
    }
    let store = Arc::new(Store::open(&config.store, &config.checkpoint.dir)?);
    metrics.component("store", ComponentState::Ready, store.describe());
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if !config.sinks.webhook.url.is_empty() {
        sinks.push(Box::new(WebhookSink::new(&config.sinks.webhook).map_err(anyhow::Error::msg)?));
    }
    if !config.sinks.llm.base_url.is_empty() {
        sinks.push(Box::new(LlmSink::new(&config.sinks.llm)));
    }
    let names: Vec<&'static str> = sinks.iter().map(|s| s.name()).collect();
    tracing::info!(store = %store.describe(), sinks = ?names, "hand-offs go through the store's outbox");
    // The active priors apply from the first alert; new ones while running.
    let active = store.active_priors(sluice_connectors::source::now_us())?;
    let count: usize = active.0.values().map(|p| p.len()).sum();
    if count > 0 {
        tracing::info!(priors = count, "verdict priors active");
    }
    let priors: PriorsSlot = Arc::new(std::sync::Mutex::new(Some(active)));
    // Budgets: [sinks.budget], each tenant's [policy] budget in place of its own.
    let sinks_config = SinksConfig { budget: config.effective_budget(), ..config.sinks.clone() };
    let dispatchers = Dispatchers::start_observed(store.clone(), sinks, &sinks_config, Some(priors.clone()), metrics);
    for name in &names {
        metrics.component(&format!("sink_{name}"), ComponentState::Ready, "");
    }
    Ok(Some(Handoff {
        store,
        dispatchers,
        sinks: names,
        score: config.score.clone(),
        drain: Duration::from_millis(config.sinks.retry.drain_timeout.millis().max(0) as u64),
        priors,
    }))
}

impl Handoff {
    /// Writes a report to the store (for a hand-off, its case file and
    /// outbox rows, in one transaction) and wakes the dispatchers. Returns
    /// the case file as stored.
    fn record(&self, event: &Event) -> std::io::Result<Option<String>> {
        let Event::Report(kind, report) = event else { return Ok(None) };
        let body = stable_case_json(*kind, report);
        let floor = self.score.over_floor(&report.breakdown);
        let (_, stored) = self
            .store
            .record(*kind, report, &body, &self.sinks, floor, sluice_connectors::source::now_us())
            .map_err(std::io::Error::other)?;
        self.dispatchers.notify();
        Ok(stored)
    }

    /// At the end of the run: lets the sinks deliver what is due (at most
    /// `sinks.retry.drain_timeout`; none on an interrupt), then says what is
    /// left in the outbox.
    fn finish(self, stop: &StopFlag) -> Result<()> {
        let wait = if stop.is_stopped() { Duration::ZERO } else { self.drain };
        let counts = self.dispatchers.drain(wait)?;
        for sink in &self.sinks {
            use sluice_pipeline::store::status::{DEFERRED, DELIVERED, PARKED, PENDING};
            let n = |s| counts.get(sink, s);
            eprintln!(
                "outbox {sink:<8} delivered {}, pending {}, deferred {}, parked {}",
                n(DELIVERED),
                n(PENDING),
                n(DEFERRED),
                n(PARKED)
            );
            if n(PENDING) + n(DEFERRED) > 0 {
                eprintln!("         pending and deferred cases go out on the next start (`sluice outbox list`)");
            }
        }
        Ok(())
    }
}

/// The store a config names (for the commands that read it).
fn open_store(path: Option<&Path>) -> Result<Store> {
    let config = load_config(path)?;
    Ok(Store::open(&config.store, &config.checkpoint.dir)?)
}

/// Who an operator is, for the audit log.
fn operator() -> String {
    format!("operator:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}

fn cmd_history(config: Option<&Path>, tenant: &str, cluster_id: &str, format: Format) -> Result<()> {
    let store = open_store(config)?;
    let h = store.history(tenant, cluster_id)?;
    if h.versions.is_empty() {
        bail!("tenant {tenant} has no cluster {cluster_id} in {}", store.describe());
    }
    if format == Format::Json {
        println!("{}", serde_json::to_string_pretty(&h)?);
        return Ok(());
    }
    println!("cluster {cluster_id} of tenant {tenant}");
    for v in &h.versions {
        println!("  v{:<5} {:<9} score {:<7} {:<9} {}", v[0], v[1], v[2], v[3], v[4]);
    }
    for o in &h.handoffs {
        let error = if o[4].is_empty() { String::new() } else { format!("  ({})", o[4]) };
        println!("  hand-off {} → {:<8} {} after {} attempt(s){error}", o[0], o[1], o[2], o[3]);
    }
    for v in &h.verdicts {
        println!("  verdict  {} by {}: {} (confidence {})\n           {}", v[0], v[1], v[2], v[3], v[4]);
    }
    for a in &h.audit {
        let at = sluice_operators::time::Rfc3339(a[0].parse::<i64>().unwrap_or(0) / 1000);
        println!("  audit    {at} {} {} {} {}", a[1], a[2], a[3], a[4]);
    }
    Ok(())
}

fn cmd_verdict(a: VerdictArgs) -> Result<()> {
    let config = load_config(a.config.as_deref())?;
    let store = Store::open(&config.store, &config.checkpoint.dir)?;
    let kind =
        serde_json::from_value::<sluice_pipeline::sinks::VerdictKind>(serde_json::json!(a.verdict)).map_err(|_| {
            anyhow::anyhow!("--verdict {:?}: use true_positive, false_positive or needs_escalation", a.verdict)
        })?;
    if !(0.0..=1.0).contains(&a.confidence) {
        bail!("--confidence {} is not within 0..1", a.confidence);
    }
    let body =
        serde_json::json!({"verdict": kind.as_str(), "confidence": a.confidence, "summary": a.summary, "by": a.by});
    let record = sluice_pipeline::store::VerdictRecord {
        verdict: kind.as_str().into(),
        confidence: a.confidence,
        body: body.to_string(),
        prompt_tokens: 0,
        completion_tokens: 0,
    };
    let actor = format!("external:{}", a.by);
    let prior = store.external_verdict(
        &a.tenant,
        &a.key,
        &actor,
        &record,
        &config.sinks.priors.policy(),
        sluice_connectors::source::now_us(),
    )?;
    println!(
        "verdict {} on {} of tenant {} recorded{}",
        kind.as_str(),
        a.key,
        a.tenant,
        if prior { "; it made a prior (`sluice priors list`)" } else { "" }
    );
    Ok(())
}

fn cmd_priors(command: PriorsCommand) -> Result<()> {
    let now = sluice_connectors::source::now_us();
    match command {
        PriorsCommand::List { config, tenant } => {
            let store = open_store(config.as_deref())?;
            let tenants = match tenant {
                Some(t) => vec![t],
                None => store.tenants()?,
            };
            for t in tenants {
                for p in store.priors(&t)? {
                    let state = match p.revoked_us {
                        Some(_) => format!("revoked by {}", p.revoked_by),
                        None if p.expires_us <= now => "expired".to_string(),
                        None => format!("active until {}", sluice_operators::time::Rfc3339(p.expires_us / 1000)),
                    };
                    println!("[{t}] prior #{} signature {} — {} — {state}", p.id, p.signature, p.reason);
                }
            }
        }
        PriorsCommand::Revoke { config, tenant, id } => {
            let store = open_store(config.as_deref())?;
            if !store.revoke_prior(&tenant, id, &operator(), now)? {
                bail!("tenant {tenant} has no active prior #{id} (see `sluice priors list`)");
            }
            println!("prior #{id} of tenant {tenant} revoked; a running Sluice stops applying it within seconds");
        }
    }
    Ok(())
}

fn cmd_outbox(command: OutboxCommand) -> Result<()> {
    let open = open_store;
    match command {
        OutboxCommand::List { config, status } => {
            let store = open(config.as_deref())?;
            println!("store {}", store.describe());
            for (sink, st, n) in &store.outbox_counts()?.rows {
                println!("  {sink:<8} {st:<10} {n:>8}");
            }
            for tenant in store.tenants()? {
                for (sink, key, reason) in store.outbox_rows(&tenant, &status)? {
                    println!("{status} [{tenant}] {sink} {key}  {reason}");
                }
            }
        }
        OutboxCommand::Requeue { config, tenant, sink } => {
            let store = open(config.as_deref())?;
            let n = store.requeue_parked(&tenant, &sink, &operator(), sluice_connectors::source::now_us())?;
            println!("{n} parked case(s) of tenant {tenant} queued again");
        }
    }
    Ok(())
}

/// Hands an event to the Kafka sink (a case file as `stored`, when the store
/// has it); a checkpoint waits for every delivery.
fn to_kafka(sink: &mut KafkaSink, event: &Event, stored: Option<String>) -> std::io::Result<()> {
    let result = match event {
        // Final states are not hand-offs: the cases topic carries escalations
        // and updates, each key once.
        Event::Report(ReportKind::Close, _) => Ok(()),
        Event::Report(kind, report) => {
            let kind_name = serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(str::to_string));
            let payload = stored.unwrap_or_else(|| stable_case_json(*kind, report));
            sink.send_case(&report.tenant, &report.idempotency_key, &kind_name.unwrap_or_default(), payload.as_bytes())
        }
        Event::DeadLetter(dl) => sink.send_dead_letter(dl),
        Event::Checkpoint(_) => sink.confirm(Duration::from_secs(60)),
        Event::Late(_) => Ok(()),
    };
    result.map_err(|e| std::io::Error::other(format!("kafka sink: {e}")))
}

fn cmd_generate(a: GenerateArgs) -> Result<()> {
    let mut config = Config::default();
    apply_gen(&mut config, &a.generator);
    let gen_cfg = generator_config(&config);
    let labels_path = a.labels.clone().unwrap_or_else(|| {
        let base = if a.output == "-" { "alerts.json".to_string() } else { a.output.clone() };
        PathBuf::from(format!("{base}.labels.ndjson"))
    });
    let labels_file =
        std::fs::File::create(&labels_path).with_context(|| format!("creating {}", labels_path.display()))?;
    let mut labels = BufWriter::new(labels_file);
    let started = std::time::Instant::now();
    let total = gen_cfg.alerts;
    let rate = gen_cfg.rate;
    let progress = |n: u64| {
        tracing::info!(alerts = n, total, "generating");
    };
    let stats = if a.output == "-" {
        let mut out = BufWriter::new(std::io::stdout().lock());
        let s = generate_to(gen_cfg, &mut out, &mut labels, a.realtime, rate, progress)?;
        out.flush()?;
        s
    } else {
        let file = std::fs::File::create(&a.output).with_context(|| format!("creating {}", a.output))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let s = generate_to(gen_cfg, &mut out, &mut labels, a.realtime, rate, progress)?;
        out.flush()?;
        s
    };
    labels.flush()?;
    eprintln!(
        "wrote {} alerts ({} in {} labelled campaigns) to {} and labels to {} in {:.1}s",
        stats.alerts,
        stats.campaign_alerts,
        stats.campaigns,
        a.output,
        labels_path.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Writes the stream, paced to `rate` alerts per wall-clock second when `realtime`.
fn generate_to(
    cfg: GeneratorConfig,
    out: &mut dyn Write,
    labels: &mut dyn Write,
    realtime: bool,
    rate: f64,
    progress: impl FnMut(u64),
) -> Result<sluice_connectors::generator::GenerateStats> {
    if !realtime {
        return Ok(write_stream(cfg, &mut &mut *out, &mut &mut *labels, progress)?);
    }
    let start = std::time::Instant::now();
    let mut paced = Paced { inner: out, written: 0, start, rate };
    Ok(write_stream(cfg, &mut paced, &mut &mut *labels, progress)?)
}

/// A writer that flushes each line and sleeps to hold a rate in lines/s.
struct Paced<'a> {
    inner: &'a mut dyn Write,
    written: u64,
    start: std::time::Instant,
    rate: f64,
}

impl Write for Paced<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(buf)?;
        let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
        if lines > 0 {
            self.written += lines;
            self.inner.flush()?;
            let due = Duration::from_secs_f64(self.written as f64 / self.rate);
            if let Some(wait) = due.checked_sub(self.start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn read_labels(path: &Path) -> Result<Vec<Label>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading labels {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).with_context(|| format!("{}:{}: not a label", path.display(), i + 1)))
        .collect()
}

fn cmd_eval(a: EvalArgs) -> Result<()> {
    let mut config = load_config(a.config.as_deref())?;
    apply_gen(&mut config, &a.generator);
    let mut handoffs = match &a.handoffs {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    let handoffs_out = handoffs.as_mut().map(|w| w as &mut dyn std::io::Write);
    let (report, summary) = match &a.input {
        Some(input) => {
            let Some(labels) = a.labels.clone() else { bail!("--labels is required with --input") };
            config.input.path = Some(input.clone());
            let source = open_source(&config, &StopFlag::new())?;
            {
                let labels = read_labels(&labels)?;
                let oracle =
                    a.oracle_priors.then(|| eval::Oracle { labels: Arc::new(std::sync::Mutex::new(labels.clone())) });
                eval::evaluate_run(&config, source, move || labels, oracle, handoffs_out)?
            }
        }
        None => {
            let collected = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let sink = collected.clone();
            let source =
                GeneratorSource::new(generator_config(&config), config.runtime.batch_size.get(), StopFlag::new())?
                    .with_labels(move |l| sink.lock().expect("labels lock").push(l));
            let oracle = a.oracle_priors.then(|| eval::Oracle { labels: collected.clone() });
            eval::evaluate_run(
                &config,
                Box::new(source),
                move || std::mem::take(&mut *collected.lock().expect("labels lock")),
                oracle,
                handoffs_out,
            )?
        }
    };
    if let (Some(w), Some(path)) = (handoffs.as_mut(), &a.handoffs) {
        w.flush().with_context(|| format!("writing {}", path.display()))?;
    }
    match a.format {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "quality": report, "summary": summary }))?)
        }
        _ => {
            print!("{}", eval::human(&report));
            println!(
                "hand-offs to the investigation stage: {} escalations, {} updates",
                summary.escalated, summary.updates
            );
            eprintln!(
                "{} alerts in {:.1}s ({:.0}/s), {} dead-lettered",
                summary.alerts_read, summary.elapsed_secs, summary.alerts_per_sec, summary.dead_lettered
            );
        }
    }
    Ok(())
}

fn cmd_produce(a: ProduceArgs) -> Result<()> {
    let data = std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let config = sluice_connectors::kafka::KafkaConfig { brokers: a.kafka, ..Default::default() };
    sluice_connectors::kafka::ensure_topics(&config, &[(&a.topic, a.partitions)])?;
    let started = std::time::Instant::now();
    let n = sluice_connectors::kafka::produce_lines(&config, &a.topic, &data, &a.tenant_field)?;
    eprintln!("produced {n} alerts to {} in {:.1}s", a.topic, started.elapsed().as_secs_f64());
    Ok(())
}

fn cmd_validate(path: &Path, offline: bool) -> Result<()> {
    let config = Config::load(path)?;
    // Build every component once: what would fail at start fails here.
    let decode = config.decode_config();
    sluice_pipeline::runtime::build_chain(&config, &decode, config.correlate.clone())?;
    sluice_operators::decode::Decoder::new(decode, &config.tenant)?;
    if let Err(problems) = config.intel.load() {
        bail!("{}: {} intel problem(s):\n  {}", path.display(), problems.len(), problems.join("\n  "));
    }
    if let Some(p) = &config.input.path
        && p != "-"
        && !config.input.follow
        && !Path::new(p).exists()
    {
        bail!("{}: input.path {p:?} does not exist", path.display());
    }
    println!("{}: config OK", path.display());
    if offline {
        return Ok(());
    }
    let checks = sluice_pipeline::preflight::run(&config);
    let mut failed = Vec::new();
    for c in &checks {
        match &c.result {
            Ok(found) => println!("  ok    {:<12} {}: {found}", c.what, c.target),
            Err(why) => {
                println!("  FAIL  {:<12} {}: {why}", c.what, c.target);
                failed.push(c.what);
            }
        }
    }
    if !failed.is_empty() {
        bail!("{}: cannot reach {}", path.display(), failed.join(", "));
    }
    println!("{}: every dependency reached", path.display());
    Ok(())
}
