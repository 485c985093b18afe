//! The one TOML config file: every section, every key, its default.
//!
//! Unknown keys are rejected with their name (serde `deny_unknown_fields`),
//! and [`Config::validate`] reports every problem at once, each naming its
//! key. Secrets never live here: they come from the environment.
//! `deploy/sluice.example.toml` documents every key with its default.

use std::num::NonZeroUsize;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sluice_connectors::kafka::KafkaConfig;
use sluice_connectors::opensearch::OpenSearchConfig;
use sluice_operators::correlate::CorrelateConfig;
use sluice_operators::decode::{DecodeConfig, TenantConfig};
use sluice_operators::dedup::DedupConfig;
use sluice_operators::handoff::HandoffConfig;
use sluice_operators::score::ScoreConfig;
use sluice_operators::time::Duration;

use crate::sinks::SinksConfig;
use crate::store::StoreConfig;

/// The whole configuration.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub input: InputConfig,
    pub generator: GeneratorSettings,
    pub tenant: TenantConfig,
    pub decode: DecodeConfig,
    pub time: TimeConfig,
    pub dedup: DedupConfig,
    pub correlate: CorrelateConfig,
    pub score: ScoreConfig,
    pub handoff: HandoffConfig,
    pub runtime: RuntimeConfig,
    pub output: OutputConfig,
    pub kafka: KafkaConfig,
    pub opensearch: OpenSearchConfig,
    pub checkpoint: CheckpointConfig,
    pub rules: RulesConfig,
    pub store: StoreConfig,
    pub sinks: SinksConfig,
    pub intel: crate::intel::IntelConfig,
    pub policy: crate::policy::PolicyConfig,
    pub admin: crate::admin::AdminConfig,
    pub log: LogConfig,
}

/// `[log]`: what is logged.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Levels, overall and per module, in `RUST_LOG` syntax:
    /// `"info,sluice_pipeline::sinks=debug"`. `SLUICE_LOG` or `RUST_LOG`
    /// in the environment win over it.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { filter: "info".into() }
    }
}

/// `[rules]`: SQL correlation rules (see `rules/README.md`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Run the rules that ship with Sluice (`rules/library/`). Off by
    /// default for now: with all of them the pipeline runs at a fraction
    /// of its speed (see BENCHMARKS.md).
    pub builtin: bool,
    /// More rule files, or directories of rule files (`.toml`, `.yaml`,
    /// `.yml`, `.sql`); reloaded on SIGHUP or when one changes.
    pub paths: Vec<std::path::PathBuf>,
    /// Rules not to run, by name.
    pub disable: Vec<String>,
    /// The longest window a rule may use: a tenant's alerts are kept that long.
    pub max_window: Duration,
    /// Most alerts buffered per tenant for rules; the oldest go first.
    pub max_alerts_per_tenant: usize,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            builtin: false,
            paths: Vec::new(),
            disable: Vec::new(),
            max_window: Duration::from_hours(24),
            max_alerts_per_tenant: 2_000_000,
        }
    }
}

impl RulesConfig {
    pub fn limits(&self) -> sluice_rules::Limits {
        sluice_rules::Limits { max_window: self.max_window }
    }

    /// Every configured rule that parsed (not yet planned), and every
    /// problem found.
    pub fn load(&self) -> (Vec<sluice_rules::Rule>, Vec<String>) {
        let (mut rules, errors) = sluice_rules::load(self.builtin, &self.paths, self.limits());
        let mut problems: Vec<String> = errors.iter().map(ToString::to_string).collect();
        problems.extend(
            self.disable
                .iter()
                .filter(|name| !rules.iter().any(|r| &&r.name == name))
                .map(|name| format!("rules.disable: no rule is named {name:?}")),
        );
        rules.retain(|r| !self.disable.contains(&r.name));
        (rules, problems)
    }

    /// Every configured rule, planned by `engine`; all problems of loading
    /// and planning together, one per line.
    pub fn compile(&self, engine: &sluice_rules::Engine) -> Result<Vec<sluice_rules::Compiled>, Vec<String>> {
        let (rules, mut problems) = self.load();
        let compiled = match sluice_rules::compile_all(engine, rules) {
            Ok(c) => c,
            Err(errors) => {
                problems.extend(errors.iter().map(ToString::to_string));
                Vec::new()
            }
        };
        if problems.is_empty() { Ok(compiled) } else { Err(problems) }
    }
}

/// Which source feeds the pipeline.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InputKind {
    /// `input.path` if set, else the embedded generator.
    #[default]
    Auto,
    File,
    Generator,
    /// The topics of `[kafka]`.
    Kafka,
    /// The index pattern of `[opensearch]` (the Wazuh indexer).
    #[serde(rename = "opensearch")]
    OpenSearch,
}

/// `[input]`: where alerts come from.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InputConfig {
    pub kind: InputKind,
    /// A Wazuh alerts file (`/var/ossec/logs/alerts/alerts.json`), `-` for
    /// stdin, or unset for the embedded generator.
    pub path: Option<String>,
    /// Tail the file like `tail -F` (survives rotation and truncation).
    pub follow: bool,
}

/// `[generator]`: the embedded synthetic stream used when no input is set.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GeneratorSettings {
    pub tenants: usize,
    pub alerts: u64,
    pub seed: u64,
    /// Average alerts per second of event time, all tenants together.
    pub rate: f64,
    /// Each tenant's authorised vulnerability scan sweeps the same web
    /// servers this often (a recurring false positive); absent: no scan.
    pub recurring_scan: Option<Duration>,
}

impl Default for GeneratorSettings {
    fn default() -> Self {
        Self { tenants: 5, alerts: 500_000, seed: 42, rate: 100.0, recurring_scan: None }
    }
}

/// `[time]`: event time and watermarks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TimeConfig {
    /// How far behind the newest event time a record may arrive and still be
    /// on time (judged per input: per Kafka partition). Later records are
    /// counted and written to the late output, not correlated.
    pub allowed_lateness: Duration,
    /// Watermarks advance in steps of this much event time. Coarser steps
    /// mean fewer, larger batches; results do not depend on it.
    pub watermark_interval: Duration,
}

impl Default for TimeConfig {
    fn default() -> Self {
        Self { allowed_lateness: Duration::from_secs(30), watermark_interval: Duration::from_secs(10) }
    }
}

/// `[runtime]`: threads, batches, channels.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Worker shards; each tenant lives on exactly one. 0 = one per core.
    pub shards: usize,
    /// Decoding threads. 0 = one per core.
    pub decode_threads: usize,
    /// Most alerts per Arrow batch.
    pub batch_size: NonZeroUsize,
    /// Capacity of every channel between stages, in batches (backpressure).
    pub channel_capacity: NonZeroUsize,
    /// Schedule the tenants of a busy shard fairly (weighted round robin,
    /// see `fair.rs`); `false`: strictly in arrival order.
    pub fair_scheduling: bool,
    /// Alerts a tenant may have queued in its shard before its input is
    /// held back at the source (where the source can: a Kafka topic per
    /// tenant).
    pub tenant_backlog: NonZeroUsize,
    /// The same while other tenants send too and this one is heavy (more
    /// than four times their average in flight), per unit of its weight:
    /// a flooding tenant then holds only this much of the pipeline's queues,
    /// so the others' alerts do not wait behind its backlog.
    pub contended_backlog: NonZeroUsize,
    /// Alerts a shard queues before it stops taking more (backpressure).
    pub shard_backlog: NonZeroUsize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            decode_threads: 0,
            batch_size: NonZeroUsize::new(4096).expect("non-zero"),
            channel_capacity: NonZeroUsize::new(8).expect("non-zero"),
            fair_scheduling: true,
            tenant_backlog: NonZeroUsize::new(16_384).expect("non-zero"),
            contended_backlog: NonZeroUsize::new(1024).expect("non-zero"),
            shard_backlog: NonZeroUsize::new(65_536).expect("non-zero"),
        }
    }
}

impl RuntimeConfig {
    pub fn effective_shards(&self) -> usize {
        if self.shards == 0 { cores() } else { self.shards }
    }
    pub fn effective_decode_threads(&self) -> usize {
        if self.decode_threads == 0 { cores() } else { self.decode_threads }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// How escalated clusters are printed on stdout.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// A few lines per cluster, for a person.
    #[default]
    Human,
    /// One JSON case file per line.
    Json,
    /// Nothing per cluster (only the summary).
    Quiet,
}

/// `[output]`: where results go.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OutputConfig {
    /// Escalations and updates on stdout.
    pub format: Format,
    /// Case files (escalations, updates, final state of escalated clusters)
    /// as NDJSON.
    pub cases: Option<String>,
    /// Dead-lettered records with their reason and offset, as NDJSON. Created
    /// on the first dead letter.
    pub dead_letters: String,
    /// Late records (beyond `time.allowed_lateness`), as NDJSON. Created on
    /// the first late record.
    pub late: String,
}

impl Default for OutputConfig {
    fn default() -> Self {
        Self {
            format: Format::Human,
            cases: None,
            dead_letters: "sluice-dead-letters.ndjson".into(),
            late: "sluice-late.ndjson".into(),
        }
    }
}

/// A feature that is `auto` (on when the rest of the config needs it),
/// `on` or `off`: `checkpoint.mode`, `store.mode`.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    #[default]
    Auto,
    On,
    Off,
}

/// Where checkpoints are kept.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// Files in `checkpoint.dir`.
    #[default]
    Dir,
    /// Rows of the table `sluice_checkpoints` in PostgreSQL.
    Postgres,
}

/// `[checkpoint]`: operator state and source positions, for restarts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// `auto`: on for Kafka and OpenSearch (where a restart must resume),
    /// off otherwise.
    pub mode: Switch,
    pub store: StoreKind,
    /// Directory of the local checkpoint store.
    pub dir: String,
    /// With `store = "postgres"`: the environment variable holding the
    /// connection URL (it carries a password, so never this file).
    pub postgres_url_env: String,
    /// With `store = "postgres"`: this instance's key in the table, so
    /// several instances can share a database.
    pub instance: String,
    /// How often to checkpoint (also once at shutdown).
    pub interval: Duration,
    /// Checkpoints kept in the directory; older ones are removed.
    pub keep: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            mode: Switch::Auto,
            store: StoreKind::Dir,
            dir: "sluice-state".into(),
            postgres_url_env: "SLUICE_POSTGRES_URL".into(),
            instance: "sluice".into(),
            interval: Duration::from_secs(10),
            keep: 3,
        }
    }
}

impl Config {
    /// The source this config reads.
    pub fn input_kind(&self) -> InputKind {
        match self.input.kind {
            InputKind::Auto if self.input.path.is_some() => InputKind::File,
            InputKind::Auto => InputKind::Generator,
            other => other,
        }
    }

    /// Whether this run keeps the store (clusters, case files, outbox,
    /// verdicts, audit log).
    pub fn store_enabled(&self) -> bool {
        match self.store.mode {
            Switch::Auto => !self.sinks.names().is_empty() || self.checkpoints_enabled(),
            Switch::On => true,
            Switch::Off => false,
        }
    }

    /// Whether this run takes checkpoints.
    pub fn checkpoints_enabled(&self) -> bool {
        match self.checkpoint.mode {
            Switch::Auto => matches!(self.input_kind(), InputKind::Kafka | InputKind::OpenSearch),
            Switch::On => true,
            Switch::Off => false,
        }
    }
}

/// A config that could not be loaded, with everything wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path} has {} problem(s):\n  - {}", .errors.len(), .errors.join("\n  - "))]
    Invalid { path: String, errors: Vec<String> },
}

impl Config {
    /// Reads, parses and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: origin.to_string(), message: e.to_string() })?;
        let errors = config.validate();
        if errors.is_empty() { Ok(config) } else { Err(ConfigError::Invalid { path: origin.to_string(), errors }) }
    }

    /// `[sinks.budget]` with each tenant's `[policy]` budget in place of
    /// its `[sinks.budget.tenants.<name>]`.
    pub fn effective_budget(&self) -> crate::sinks::BudgetConfig {
        let mut budget = self.sinks.budget.clone();
        if let Ok(tenants) = self.policy.tenants() {
            for (tenant, p) in tenants {
                if let Some(b) = p.budget {
                    budget.tenants.insert(tenant, b);
                }
            }
        }
        budget
    }

    /// `[decode]` with each tenant's `[policy]` fields (read at start;
    /// a policy reload does not change the columns).
    pub fn decode_config(&self) -> sluice_operators::decode::DecodeConfig {
        let mut decode = self.decode.clone();
        if let Ok(tenants) = self.policy.tenants() {
            decode.tenant_fields =
                tenants.into_iter().filter(|(_, p)| !p.fields.is_empty()).map(|(t, p)| (t, p.fields)).collect();
        }
        decode
    }

    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        errors.extend(self.decode_config().validate());
        errors.extend(self.dedup.validate());
        errors.extend(self.correlate.validate());
        errors.extend(self.score.validate());
        errors.extend(self.handoff.validate());
        errors.extend(self.intel.validate());
        errors.extend(self.policy.validate(&self.handoff, &self.correlate.windows));
        errors.extend(self.admin.validate());
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            errors.push(format!("log.filter = {:?}: {e}", self.log.filter));
        }
        if self.tenant.static_tenant.as_deref().is_some_and(|t| t.trim().is_empty()) {
            errors.push("tenant.static is set but empty".into());
        }
        if self.tenant.static_tenant.is_none() && self.tenant.field.trim().is_empty() {
            errors.push("tenant.field is empty and tenant.static is not set: no record could get a tenant".into());
        }
        if self.time.allowed_lateness.millis() < 0 {
            errors.push("time.allowed_lateness must not be negative".into());
        }
        if self.time.watermark_interval.millis() <= 0 {
            errors.push("time.watermark_interval must be positive".into());
        }
        if self.input.follow && self.input.path.is_none() {
            errors.push("input.follow needs input.path".into());
        }
        if self.input.kind == InputKind::File && self.input.path.is_none() {
            errors.push("input.kind = \"file\" needs input.path".into());
        }
        if self.input_kind() == InputKind::Kafka {
            errors.extend(self.kafka.validate());
        }
        if self.input_kind() == InputKind::OpenSearch {
            errors.extend(self.opensearch.validate());
        }
        if self.checkpoint.interval.millis() <= 0 {
            errors.push("checkpoint.interval must be positive".into());
        }
        if self.checkpoint.keep == 0 {
            errors.push("checkpoint.keep must be >= 1".into());
        }
        if self.checkpoints_enabled()
            && self.checkpoint.store == StoreKind::Dir
            && self.checkpoint.dir.trim().is_empty()
        {
            errors.push("checkpoint.dir is empty".into());
        }
        if self.checkpoint.store == StoreKind::Postgres {
            if self.checkpoint.postgres_url_env.trim().is_empty() {
                errors.push("checkpoint.postgres_url_env is empty".into());
            }
            if self.checkpoint.instance.trim().is_empty() {
                errors.push("checkpoint.instance is empty".into());
            }
        }
        errors.extend(self.sinks.validate());
        if self.store.mode == Switch::Off && !self.sinks.names().is_empty() {
            errors.push(
                "store.mode = \"off\" but a hand-off sink is configured: hand-offs go through the store's outbox"
                    .into(),
            );
        }
        if self.generator.tenants == 0 {
            errors.push("generator.tenants must be >= 1".into());
        }
        if !(self.generator.rate.is_finite() && self.generator.rate > 0.0) {
            errors.push(format!("generator.rate = {} must be > 0", self.generator.rate));
        }
        if self.output.late.trim().is_empty() {
            errors.push("output.late must name a file: late records are never discarded".into());
        }
        if self.output.dead_letters.trim().is_empty() {
            errors.push("output.dead_letters must name a file: dead letters are never discarded".into());
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_to_the_defaults() {
        let text = include_str!("../../deploy/sluice.example.toml");
        let parsed = Config::parse(text, "sluice.example.toml").unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn the_kafka_example_is_valid_and_keeps_its_secret_in_the_environment() {
        let text = include_str!("../../deploy/sluice.kafka.toml");
        let c = Config::parse(text, "sluice.kafka.toml").unwrap();
        assert_eq!(c.input_kind(), InputKind::Kafka);
        assert!(c.checkpoints_enabled());
        assert_eq!(c.kafka.properties["sasl.password"], "${SLUICE_KAFKA_PASSWORD}");
        let literal = text.replace("${SLUICE_KAFKA_PASSWORD}", "hunter2");
        let err = Config::parse(&literal, "c.toml").unwrap_err().to_string();
        assert!(err.contains("sasl.password") && !err.contains("hunter2"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err = Config::parse("[dedup]\nwindw = \"5m\"\n", "c.toml").unwrap_err().to_string();
        assert!(err.contains("windw"), "{err}");
        let err = Config::parse("[nonsense]\n", "c.toml").unwrap_err().to_string();
        assert!(err.contains("nonsense"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text =
            "[handoff]\nreview_threshold = 90.0\n[time]\nwatermark_interval = \"0s\"\n[generator]\ntenants = 0\n";
        let Err(ConfigError::Invalid { errors, .. }) = Config::parse(text, "c.toml") else {
            panic!("expected invalid")
        };
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("handoff.review_threshold")));
        assert!(errors.iter().any(|e| e.contains("time.watermark_interval")));
        assert!(errors.iter().any(|e| e.contains("generator.tenants")));
    }

    #[test]
    fn the_opensearch_example_is_valid_and_keeps_its_secret_in_the_environment() {
        let text = include_str!("../../deploy/sluice.opensearch.toml");
        let c = Config::parse(text, "sluice.opensearch.toml").unwrap();
        assert_eq!(c.input_kind(), InputKind::OpenSearch);
        assert!(c.checkpoints_enabled());
        assert_eq!(c.opensearch.password_env, "SLUICE_OPENSEARCH_PASSWORD");
        assert_eq!(c.opensearch.exclude_agents, ["000"]);
    }

    #[test]
    fn opensearch_settings_are_checked_and_name_their_key() {
        let text = "[input]\nkind = \"opensearch\"\n[opensearch]\nurl = \"https://indexer:9200\"\nmode = \"backfill\"\n\
                    from = \"2024-05-01T00:00:00Z\"\nexclude_agents = [\"000\"]\nmin_level = 7\n\
                    [[opensearch.sources]]\ntenant = \"acme\"\nindex = \"acme-alerts-*\"\n";
        let c = Config::parse(text, "c.toml").unwrap();
        assert_eq!(c.input_kind(), InputKind::OpenSearch);
        assert!(c.checkpoints_enabled(), "a restart resumes from the cursor");
        assert_eq!(c.opensearch.sources[0].tenant, "acme");
        let err = Config::parse("[opensearch]\npage_sise = 10\n", "c.toml").unwrap_err().to_string();
        assert!(err.contains("page_sise"), "{err}");
        let err =
            Config::parse("[input]\nkind = \"opensearch\"\n[opensearch]\npage_size = 0\nfrom = \"soon\"\n", "c.toml")
                .unwrap_err()
                .to_string();
        assert!(err.contains("opensearch.page_size") && err.contains("opensearch.from"), "{err}");
    }

    #[test]
    fn bad_duration_names_its_key() {
        let err = Config::parse("[dedup]\nwindow = \"five minutes\"\n", "c.toml").unwrap_err().to_string();
        assert!(err.contains("window") && err.contains("five minutes"), "{err}");
    }
}
