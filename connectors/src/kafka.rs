//! Kafka in and out (rdkafka): the consumer-group source and the case sink.
//!
//! **Source.** A consumer group subscribed to topics by name or regex
//! (`^wazuh-alerts-.*`). Offsets are never auto-committed: the runtime
//! commits a position only after the checkpoint that covers it is durable
//! ([`Source::commit`]), and a restored checkpoint's offsets win over the
//! group's committed ones, so a crash replays exactly what the state has not
//! seen. Each partition is its own input with its own watermark; a partition
//! with no data for `idle_timeout` stops holding the others back. Polled
//! messages are copied once into a chunk buffer per partition, the layout the
//! decoders read anyway.
//!
//! **Tenant.** From the record (as for files), from the topic name through a
//! pattern (`wazuh-alerts-{tenant}`) or from a message header. A message
//! whose tenant cannot be resolved is dead-lettered, never defaulted.
//!
//! **Sink.** An idempotent producer (`enable.idempotence`, `acks=all`):
//! case files keyed by tenant with the idempotency key in a header, dead
//! letters with their reason, source topic, partition and offset in headers.
//! [`KafkaSink::confirm`] waits until every message sent so far is
//! acknowledged by the broker; the runtime calls it before a checkpoint, so a
//! hand-off counts as done only once delivered.
//!
//! Secrets never live in the config: a property value written `${NAME}` is
//! read from the environment variable `NAME` when the client is created.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{DeliveryResult, Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use sluice_operators::dead_letter::DeadLetter;
use sluice_operators::decode::{ChunkTenant, RawChunk};
use sluice_operators::time::Duration as ConfigDuration;

use crate::source::{Handover, InputChange, InputPosition, InputStart, Source, SourceError, StopFlag, now_us};

/// librdkafka properties that carry secrets: their values must come from the
/// environment (`${NAME}`), never from the config file.
const SECRET_PROPERTIES: &[&str] =
    &["sasl.password", "ssl.key.password", "ssl.keystore.password", "sasl.oauthbearer.client.secret", "ssl.key.pem"];

/// Where a Kafka record's tenant comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TenantFrom {
    /// The JSON field of `[tenant]`, as for files.
    #[default]
    Record,
    /// The topic name, through `kafka.topic_tenant_pattern`.
    Topic,
    /// A message header, `kafka.tenant_header`.
    Header,
}

/// `[kafka]`: the broker, the source topics and the sink topics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Consumer group; instances with the same group split the partitions.
    pub group_id: String,
    /// The name the partitions' state is kept under in the checkpoint
    /// store; empty: the consumer group's. Instances that hand partitions
    /// to each other share it; a new group starts without state unless it
    /// names the old one here.
    pub state_scope: String,
    /// Topics to read; an entry starting with `^` is a regex.
    pub topics: Vec<String>,
    pub tenant_from: TenantFrom,
    /// With `tenant_from = "topic"`: the topic name with `{tenant}` where the
    /// tenant is (`wazuh-alerts-{tenant}`).
    pub topic_tenant_pattern: String,
    /// With `tenant_from = "header"`: the header holding the tenant.
    pub tenant_header: String,
    /// Most messages per poll round.
    pub max_poll_records: usize,
    /// With `tenant_from = "topic"`: records of a held-back tenant's
    /// partition that wait in Sluice before the partition is paused. While
    /// fewer wait, it is still fetched and nothing is fetched twice; a
    /// pause makes librdkafka drop what it had prefetched and fetch it
    /// again on resume.
    pub held_records: usize,
    /// A partition with no new data for this long stops holding the
    /// watermark back.
    pub idle_timeout: ConfigDuration,
    /// End the run once every assigned partition is read to its end (for
    /// replays and tests); normally Sluice runs until stopped.
    pub exit_when_caught_up: bool,
    /// Case files go here (keyed by tenant); empty: no Kafka sink.
    pub cases_topic: String,
    /// Dead letters go here with their reason in headers; empty: only the
    /// dead-letter file.
    pub dead_letter_topic: String,
    /// Create the sink topics at start if they do not exist (3 partitions,
    /// the broker's default replication).
    pub create_topics: bool,
    /// Any librdkafka property (`security.protocol`, `sasl.mechanism`, …).
    /// Values written `${NAME}` come from the environment.
    pub properties: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "localhost:9092".into(),
            group_id: "sluice".into(),
            state_scope: String::new(),
            topics: vec!["^wazuh-alerts.*".into()],
            tenant_from: TenantFrom::Record,
            topic_tenant_pattern: "wazuh-alerts-{tenant}".into(),
            tenant_header: "tenant".into(),
            max_poll_records: 4096,
            held_records: 16_384,
            idle_timeout: ConfigDuration::from_secs(30),
            exit_when_caught_up: false,
            cases_topic: "sluice.cases".into(),
            dead_letter_topic: "sluice.dead-letters".into(),
            create_topics: true,
            properties: BTreeMap::new(),
        }
    }
}

impl KafkaConfig {
    /// What the partitions' state is kept under (see `state_scope`).
    pub fn state_scope(&self) -> &str {
        if self.state_scope.is_empty() { &self.group_id } else { &self.state_scope }
    }

    /// Every problem, each naming its key.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.brokers.trim().is_empty() {
            errors.push("kafka.brokers is empty".into());
        }
        if self.group_id.trim().is_empty() {
            errors.push("kafka.group_id is empty".into());
        }
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            errors.push("kafka.topics must list at least one topic (or ^regex), none empty".into());
        }
        if self.tenant_from == TenantFrom::Topic && self.topic_tenant_pattern.matches("{tenant}").count() != 1 {
            errors.push(format!(
                "kafka.topic_tenant_pattern = {:?} must contain {{tenant}} exactly once",
                self.topic_tenant_pattern
            ));
        }
        if self.tenant_from == TenantFrom::Header && self.tenant_header.trim().is_empty() {
            errors.push("kafka.tenant_header is empty".into());
        }
        if self.max_poll_records == 0 {
            errors.push("kafka.max_poll_records must be >= 1".into());
        }
        if self.held_records == 0 {
            errors.push("kafka.held_records must be >= 1".into());
        }
        if self.idle_timeout.millis() <= 0 {
            errors.push("kafka.idle_timeout must be positive".into());
        }
        for (key, value) in &self.properties {
            let secret = SECRET_PROPERTIES.contains(&key.as_str());
            if secret && env_reference(value).is_none() {
                errors.push(format!(
                    "kafka.properties.\"{key}\" is a secret: write it as \"${{ENV_VAR}}\" and set the variable; \
                     secrets are never read from the config file"
                ));
            }
            let incremental = (key == "partition.assignment.strategy" && value.contains("cooperative"))
                || (key == "group.protocol" && value.trim() == "consumer");
            if incremental {
                errors.push(format!(
                    "kafka.properties.\"{key}\" = {value:?}: incremental rebalancing is not supported; \
                     use the classic protocol with range or roundrobin (the default): state moves with whole \
                     assignments"
                ));
            }
            if ["enable.auto.commit", "group.id", "bootstrap.servers"].contains(&key.as_str()) {
                errors.push(format!("kafka.properties.\"{key}\" is set by Sluice itself (see the kafka keys)"));
            }
        }
        errors
    }

    /// The tenant a topic belongs to under `topic_tenant_pattern`.
    pub fn tenant_of_topic<'t>(&self, topic: &'t str) -> Option<&'t str> {
        let (prefix, suffix) = self.topic_tenant_pattern.split_once("{tenant}")?;
        let tenant = topic.strip_prefix(prefix)?.strip_suffix(suffix)?;
        (!tenant.is_empty()).then_some(tenant)
    }

    /// A librdkafka config with the brokers and every property (environment
    /// references resolved).
    fn client_config(&self) -> Result<ClientConfig, SourceError> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (key, value) in &self.properties {
            let value = match env_reference(value) {
                Some(name) => std::env::var(name).map_err(|_| {
                    SourceError::Config(format!(
                        "kafka.properties.\"{key}\" refers to the environment variable {name}, which is not set"
                    ))
                })?,
                None => value.clone(),
            };
            c.set(key, value);
        }
        Ok(c)
    }
}

/// Preflight: reaches the brokers and lists the topics the config reads
/// (names, or `^regex` entries matched against the broker's topics), with
/// their partitions. An error says what failed.
pub fn check_broker(config: &KafkaConfig) -> Result<String, SourceError> {
    let mut c = config.client_config()?;
    set_default(&mut c, "group.id", "sluice-preflight");
    let consumer: BaseConsumer = c.create().map_err(|e| SourceError::Config(format!("kafka client: {e}")))?;
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(5))
        .map_err(|e| SourceError::Config(format!("cannot reach the brokers {}: {e}", config.brokers)))?;
    let mut found = Vec::new();
    for wanted in &config.topics {
        let matched: Vec<String> = match wanted.strip_prefix('^') {
            Some(_) => {
                let re = regex::Regex::new(wanted)
                    .map_err(|e| SourceError::Config(format!("kafka.topics {wanted:?}: {e}")))?;
                metadata
                    .topics()
                    .iter()
                    .filter(|t| re.is_match(t.name()))
                    .map(|t| format!("{}({} partitions)", t.name(), t.partitions().len()))
                    .collect()
            }
            None => metadata
                .topics()
                .iter()
                .filter(|t| t.name() == wanted && t.error().is_none())
                .map(|t| format!("{}({} partitions)", t.name(), t.partitions().len()))
                .collect(),
        };
        if matched.is_empty() {
            found.push(format!("{wanted}: no such topic yet"));
        }
        found.extend(matched);
    }
    Ok(format!("{} broker(s); {}", metadata.brokers().len(), found.join(", ")))
}

fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

/// `NAME` of a value written `${NAME}`.
fn env_reference(value: &str) -> Option<&str> {
    value.strip_prefix("${")?.strip_suffix('}').filter(|n| !n.is_empty())
}

fn kafka_error(what: &str, e: KafkaError) -> SourceError {
    SourceError::Config(format!("kafka: {what}: {e}"))
}

/// A partition's place: what the runtime has been handed so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionPosition {
    topic: String,
    partition: i32,
    /// The next offset to read; -1 when nothing was read yet.
    offset: i64,
    /// The watermark input number of this partition.
    input: u32,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Position {
    partitions: Vec<PartitionPosition>,
}

/// State the rebalance callback shares with the source.
#[derive(Debug, Default)]
struct Shared {
    /// Offsets to start assigned partitions at (from a checkpoint), by
    /// `(topic, partition)`.
    start_at: HashMap<(String, i32), i64>,
    assigned: Vec<(String, i32)>,
    revoked: Vec<(String, i32)>,
    /// Whether the runtime completes assignments and revocations (see
    /// [`Source::hand_over_inputs`]) instead of the callback.
    deferred: bool,
    /// The assignment or revocation waiting for the runtime.
    pending: Option<Pending>,
    /// Arriving partitions that were idle when their state was saved: they
    /// stay idle (not holding the watermark back) until they have data.
    idle_on_assign: HashSet<(String, i32)>,
}

/// A rebalance step the runtime has yet to complete.
#[derive(Debug, Clone)]
enum Pending {
    Assign(Vec<(String, i32)>),
    Revoke(Vec<(String, i32)>),
}

/// `topic[partition]`: how inputs are named in metrics and state.
fn input_name(topic: &str, partition: i32) -> String {
    format!("{topic}[{partition}]")
}

/// Assigns partitions, each at its start offset if known, else at the
/// group's committed offset (looked up here so that the resume is checked
/// like a checkpoint's, see `Resume`).
fn assign(consumer: &BaseConsumer<SourceContext>, shared: &mut Shared, parts: Vec<(String, i32)>) {
    let mut unknown = TopicPartitionList::new();
    for (topic, partition) in &parts {
        if !shared.start_at.contains_key(&(topic.clone(), *partition)) {
            unknown.add_partition(topic, *partition);
        }
    }
    if unknown.count() > 0 {
        match consumer.committed_offsets(unknown, Duration::from_secs(10)) {
            Ok(committed) => {
                for e in committed.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        shared.start_at.insert((e.topic().to_string(), e.partition()), o);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "kafka: committed offsets unknown; the broker's start applies"),
        }
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in &parts {
        let offset = match shared.start_at.get(&(topic.clone(), *partition)) {
            Some(&o) if o >= 0 => Offset::Offset(o),
            _ => Offset::Invalid, // the broker's default (auto.offset.reset)
        };
        if let Err(e) = tpl.add_partition_offset(topic, *partition, offset) {
            tracing::error!(error = %e, topic, partition, "kafka: bad start offset");
        }
    }
    if let Err(e) = consumer.assign(&tpl) {
        tracing::error!(error = %e, "kafka: assigning partitions failed");
    }
    tracing::info!(partitions = ?parts, "kafka: partitions assigned");
    shared.assigned.extend(parts);
}

struct SourceContext {
    shared: Arc<Mutex<Shared>>,
}

impl ClientContext for SourceContext {}

impl ConsumerContext for SourceContext {
    /// Assigns partitions at the checkpoint's offsets (which win over the
    /// group's committed ones: a crash between a checkpoint and its commit
    /// must not replay records the state has already seen).
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let mut shared = self.shared.lock().expect("kafka shared state");
        let parts: Vec<(String, i32)> = tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS if shared.deferred => {
                tracing::info!(partitions = ?parts, "kafka: partitions coming; loading their state");
                shared.pending = Some(Pending::Assign(parts));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => assign(consumer, &mut shared, parts),
            // The group waits for this member until it unassigns (librdkafka
            // keeps the rebalance open until then), so the state can be saved
            // first.
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS if shared.deferred => {
                tracing::info!(partitions = ?parts, "kafka: partitions revoked; saving their state first");
                shared.pending = Some(Pending::Revoke(parts));
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                tracing::info!(partitions = ?parts, "kafka: partitions revoked");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "kafka: unassigning partitions failed");
                }
                shared.revoked.extend(parts);
            }
            other => tracing::error!(error = ?other, "kafka: rebalance error"),
        }
    }
}

/// Per-partition bookkeeping of the source.
#[derive(Debug)]
struct PartitionState {
    topic: String,
    partition: i32,
    input: u32,
    /// Next offset after what has been handed to the runtime.
    returned: i64,
    /// Next offset after what has been polled (handed or queued).
    polled: i64,
    last_data: Instant,
    idle: bool,
    assigned: bool,
    /// Paused in the client because its tenant is held back (see
    /// [`Source::hold_back`]); kept across revocations, as the client keeps
    /// the pause.
    paused: bool,
    /// Set while the partition was assigned at a known offset and no message
    /// has confirmed it yet (see [`Resume`]).
    resume: Option<Resume>,
}

impl PartitionState {
    /// A partition known but not assigned (yet), at `offset` (-1: none).
    fn new(topic: String, partition: i32, input: u32, offset: i64) -> Self {
        PartitionState {
            topic,
            partition,
            input,
            returned: offset,
            polled: offset,
            last_data: Instant::now(),
            idle: true,
            assigned: false,
            paused: false,
            resume: None,
        }
    }
}

/// A resume at a known offset that the broker has not confirmed yet.
///
/// A Kafka fetch at an offset inside a record batch returns that whole batch
/// and the client drops the messages before the offset. Some brokers (tansu
/// 0.6) return only the batches that *start* at or after the offset: a
/// resume from a checkpoint that ended mid-batch would skip the rest of that
/// batch, or, in the last batch, read nothing at all. So when the first
/// message lies beyond the resume offset, or none comes although the broker
/// reports data beyond it, Sluice seeks back (`back` messages, then four
/// times as far, down to the log start) and drops what it has already seen:
/// it resumes exactly. On a broker that answers correctly this never
/// triggers; offsets that really are missing (compaction, retention) are
/// reported and skipped.
#[derive(Debug, Clone, Copy)]
struct Resume {
    back: i64,
    since: Instant,
}

impl Resume {
    fn new() -> Self {
        Resume { back: 1000, since: Instant::now() }
    }
}

/// How long a resumed partition may stay silent, with data beyond its
/// offset, before Sluice seeks back.
const RESUME_SILENCE: Duration = Duration::from_secs(1);

/// Reads Wazuh alerts from Kafka topics as a consumer-group member.
pub struct KafkaSource {
    name: String,
    config: KafkaConfig,
    consumer: BaseConsumer<SourceContext>,
    shared: Arc<Mutex<Shared>>,
    partitions: BTreeMap<(String, i32), PartitionState>,
    next_input: u32,
    /// Chunks polled but not yet handed over, with the offset after each.
    ready: VecDeque<(RawChunk, (String, i32), i64)>,
    changes: Vec<InputChange>,
    stop: StopFlag,
    subscribed: bool,
    caught_up_since: Option<Instant>,
    last_idle_check: Instant,
    last_lag_report: Instant,
    /// The lag per assigned partition as last measured.
    lag: Vec<(String, i64)>,
    /// Tenants held back: their chunks wait in `ready`, and their topics'
    /// partitions are paused once `held_records` of a partition wait.
    held: Vec<Arc<str>>,
    /// Pauses so far, for tests and logs.
    pauses: Arc<AtomicU64>,
}

impl std::fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSource").field("name", &self.name).field("partitions", &self.partitions.len()).finish()
    }
}

impl KafkaSource {
    pub fn new(config: &KafkaConfig, stop: StopFlag) -> Result<Self, SourceError> {
        let errors = config.validate();
        if !errors.is_empty() {
            return Err(SourceError::Config(errors.join("; ")));
        }
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut client = config.client_config()?;
        client
            .set("group.id", &config.group_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false");
        set_default(&mut client, "auto.offset.reset", "earliest");
        let consumer: BaseConsumer<SourceContext> = client
            .create_with_context(SourceContext { shared: shared.clone() })
            .map_err(|e| kafka_error("cannot create the consumer", e))?;
        Ok(Self {
            name: format!("kafka:{}", config.topics.join(",")),
            config: config.clone(),
            consumer,
            shared,
            partitions: BTreeMap::new(),
            next_input: 0,
            ready: VecDeque::new(),
            changes: Vec::new(),
            stop,
            subscribed: false,
            caught_up_since: None,
            last_idle_check: Instant::now(),
            last_lag_report: Instant::now(),
            lag: Vec::new(),
            held: Vec::new(),
            pauses: Arc::default(),
        })
    }

    /// How many times a held-back tenant's partitions were paused, counted
    /// from now on as the source runs.
    pub fn pauses(&self) -> Arc<AtomicU64> {
        self.pauses.clone()
    }

    /// The first chunk in `ready` that may go out now. A held-back tenant's
    /// chunks wait, only with the tenant from the topic name (a partition is
    /// then one tenant's, and its order is kept), and never while a
    /// rebalance step waits: what was read goes out first.
    fn next_ready(&self) -> Option<usize> {
        if self.held.is_empty() || self.config.tenant_from != TenantFrom::Topic || self.waiting() {
            return (!self.ready.is_empty()).then_some(0);
        }
        self.ready
            .iter()
            .position(|(chunk, ..)| !matches!(&chunk.tenant, ChunkTenant::Fixed(t) if self.held.contains(t)))
    }

    fn subscribe(&mut self) -> Result<(), SourceError> {
        let topics: Vec<&str> = self.config.topics.iter().map(String::as_str).collect();
        self.consumer.subscribe(&topics).map_err(|e| kafka_error("cannot subscribe", e))?;
        self.subscribed = true;
        tracing::info!(topics = ?topics, group = %self.config.group_id, brokers = %self.config.brokers, "kafka: subscribed");
        Ok(())
    }

    /// Whether a rebalance step waits for the runtime (no polling meanwhile:
    /// a revoked partition's messages must not be read past its saved state,
    /// and an arriving one is not assigned yet).
    fn waiting(&self) -> bool {
        self.shared.lock().expect("kafka shared state").pending.is_some()
    }

    /// Applies assignments and revocations the rebalance callback recorded.
    fn apply_rebalances(&mut self) {
        apply_rebalances(&self.shared, &mut self.partitions, &mut self.next_input, &mut self.changes, &mut self.ready);
        self.apply_hold();
    }

    /// Pauses the partitions of held-back tenants' topics once
    /// `held_records` of them wait, and resumes those no longer held (only
    /// with the tenant taken from the topic name: otherwise a partition
    /// carries many tenants and none can be held back alone).
    fn apply_hold(&mut self) {
        if self.config.tenant_from != TenantFrom::Topic {
            return;
        }
        let mut waiting: BTreeMap<&(String, i32), usize> = BTreeMap::new();
        if !self.held.is_empty() {
            for (chunk, key, _) in &self.ready {
                *waiting.entry(key).or_default() += chunk.lines.len();
            }
        }
        let (mut pause, mut resume) = (TopicPartitionList::new(), TopicPartitionList::new());
        for (key, p) in self.partitions.iter_mut().filter(|(_, p)| p.assigned) {
            let held = self.config.tenant_of_topic(&p.topic).is_some_and(|t| self.held.iter().any(|h| **h == *t));
            let full = waiting.get(key).is_some_and(|&n| n >= self.config.held_records);
            if held && full && !p.paused {
                pause.add_partition(&p.topic, p.partition);
                p.paused = true;
            } else if !held && p.paused {
                resume.add_partition(&p.topic, p.partition);
                p.paused = false;
                p.last_data = Instant::now(); // paused is not idle
                // The fetch restarts at the next offset, which may lie inside
                // a record batch: make sure the broker serves it (see `Resume`).
                p.resume = (p.polled >= 0).then(Resume::new);
            }
        }
        for (list, what) in [(&pause, "pause"), (&resume, "resume")] {
            if list.count() == 0 {
                continue;
            }
            let result = if what == "pause" { self.consumer.pause(list) } else { self.consumer.resume(list) };
            if what == "pause" && result.is_ok() {
                self.pauses.fetch_add(1, Ordering::Relaxed);
            }
            match result {
                Ok(()) => {
                    tracing::info!(partitions = list.count(), "kafka: {what}d the partitions of held-back tenants")
                }
                Err(e) => tracing::warn!(error = %e, "kafka: cannot {what} partitions"),
            }
        }
    }

    fn tenant_of(&self, topic: &str, msg: &impl Message) -> ChunkTenant {
        match self.config.tenant_from {
            TenantFrom::Record => ChunkTenant::FromRecord,
            TenantFrom::Topic => match self.config.tenant_of_topic(topic) {
                Some(t) => ChunkTenant::Fixed(t.into()),
                None => ChunkTenant::Unresolved(
                    format!(
                        "topic {topic:?} against kafka.topic_tenant_pattern {:?}",
                        self.config.topic_tenant_pattern
                    )
                    .into(),
                ),
            },
            TenantFrom::Header => {
                let value = msg.headers().and_then(|h| {
                    h.iter()
                        .find(|h| h.key == self.config.tenant_header)
                        .and_then(|h| h.value)
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(str::to_string)
                });
                match value {
                    Some(t) => ChunkTenant::Fixed(t.into()),
                    None => ChunkTenant::Unresolved(
                        format!("header {:?} (kafka.tenant_header)", self.config.tenant_header).into(),
                    ),
                }
            }
        }
    }

    /// One poll round: up to `max_poll_records` messages, grouped into one
    /// chunk per run of (partition, tenant).
    fn poll_round(&mut self) -> Result<(), SourceError> {
        let ingest = now_us();
        let mut building: Option<(RawChunk, (String, i32), i64)> = None;
        let mut first = true;
        for _ in 0..self.config.max_poll_records {
            let timeout = if first { Duration::from_millis(100) } else { Duration::ZERO };
            first = false;
            if self.waiting() {
                break;
            }
            let Some(result) = self.consumer.poll(timeout) else { break };
            let msg = match result {
                Ok(m) => m,
                Err(KafkaError::PartitionEOF(_)) => continue,
                Err(e) => {
                    // Broker down, rebalance in progress …: librdkafka retries
                    // and reconnects by itself; say so and keep polling.
                    tracing::warn!(error = %e, "kafka: consumer error (retrying)");
                    break;
                }
            };
            let revoked = apply_rebalances(
                &self.shared,
                &mut self.partitions,
                &mut self.next_input,
                &mut self.changes,
                &mut self.ready,
            );
            if building.as_ref().is_some_and(|(_, k, _)| revoked.contains(k)) {
                building = None; // read again from the handed-over position if it comes back
            }
            let key = (msg.topic().to_string(), msg.partition());
            let tenant = self.tenant_of(&key.0, &msg);
            let Some(p) = self.partitions.get_mut(&key).filter(|p| p.assigned) else {
                // Fetched before a revocation: whoever owns the partition
                // now reads it from the committed offset.
                tracing::debug!(topic = %key.0, partition = key.1, "kafka: message of a partition not assigned here skipped");
                continue;
            };
            let offset = msg.offset();
            if offset < p.polled {
                // Already handed over (read again after seeking back): the
                // broker serves from before the resume offset, so what comes
                // next is contiguous.
                p.resume = None;
                continue;
            }
            if offset > p.polled && p.resume.is_some() {
                if seek_back(&self.consumer, p) {
                    continue;
                }
                tracing::warn!(
                    topic = %key.0,
                    partition = key.1,
                    missing_from = p.polled,
                    missing_to = offset - 1,
                    "kafka: offsets are not on the broker (compacted or past retention); reading on"
                );
            }
            p.resume = None;
            p.polled = offset + 1;
            p.last_data = Instant::now();
            if p.idle {
                p.idle = false;
                self.changes.push(InputChange::Opened(p.input));
            }
            let input = p.input;
            let same = building.as_ref().is_some_and(|(c, k, _)| *k == key && c.tenant == tenant);
            if !same {
                self.ready.extend(building.take());
                let source = format!("{}/{}", key.0, key.1);
                let chunk = RawChunk { source: source.into(), ingest_us: ingest, input, tenant, ..RawChunk::default() };
                building = Some((chunk, key.clone(), 0));
            }
            let (chunk, _, next) = building.as_mut().expect("set above");
            let payload = msg.payload().unwrap_or_default();
            let start = chunk.data.len();
            chunk.data.extend_from_slice(payload);
            chunk.lines.push((start, chunk.data.len()));
            chunk.positions.push(msg.offset() as u64);
            *next = msg.offset() + 1;
        }
        self.ready.extend(building);
        self.apply_rebalances();
        // A resumed partition that stays silent although the broker's fetch
        // responses show data beyond its offset: its resume offset may lie
        // in the last batch (see `Resume`).
        for p in self.partitions.values_mut().filter(|p| p.assigned) {
            if p.resume.is_some_and(|r| r.since.elapsed() >= RESUME_SILENCE)
                && fetched_end(&self.consumer, &p.topic, p.partition).is_some_and(|high| high > p.polled)
            {
                seek_back(&self.consumer, p);
            }
        }
        Ok(())
    }

    /// Consumer lag per assigned partition (the broker's high watermark minus
    /// the next offset to hand over), measured and logged every `LAG_EVERY`. Partitions of one
    /// topic are listed as `topic[partition]=lag`.
    fn report_lag(&mut self, now: bool) {
        const LAG_EVERY: Duration = Duration::from_secs(5);
        if !now && self.last_lag_report.elapsed() < LAG_EVERY {
            return;
        }
        self.last_lag_report = Instant::now();
        let mut total = 0i64;
        let mut parts = Vec::new();
        self.lag.clear();
        for p in self.partitions.values().filter(|p| p.assigned) {
            if let Ok((low, high)) = self.consumer.fetch_watermarks(&p.topic, p.partition, Duration::from_secs(2)) {
                let high = high.max(fetched_end(&self.consumer, &p.topic, p.partition).unwrap_or(-1));
                // From what was handed over: records waiting in the source
                // (a held-back tenant's) are lag too.
                let from = if p.returned >= 0 {
                    p.returned
                } else if p.polled >= 0 {
                    p.polled
                } else {
                    low
                };
                let lag = (high - from).max(0);
                total += lag;
                parts.push(format!("{}[{}]={lag}", p.topic, p.partition));
                self.lag.push((input_name(&p.topic, p.partition), lag));
            }
        }
        if !parts.is_empty() {
            tracing::info!(total, partitions = %parts.join(" "), "kafka: consumer lag");
        }
    }

    /// Whether a partition is read to its end (asks the broker).
    fn caught_up(&self, p: &PartitionState) -> bool {
        // The end as the last fetch response gave it counts too: tansu 0.6
        // answers a ListOffsets request with the start of its last batch.
        let fetched = fetched_end(&self.consumer, &p.topic, p.partition).unwrap_or(-1);
        match self.consumer.fetch_watermarks(&p.topic, p.partition, Duration::from_secs(5)) {
            Ok((low, high)) => {
                let high = high.max(fetched);
                p.polled >= high || (p.polled < 0 && low == high)
            }
            Err(e) => {
                tracing::debug!(error = %e, topic = %p.topic, partition = p.partition, "kafka: no watermarks");
                false
            }
        }
    }

    /// Marks partitions that are read to their end and have had no data
    /// for `idle_timeout` as idle (a partition that is merely slow to fetch
    /// keeps holding the watermark back); tells whether every assigned
    /// partition is read to its end.
    fn check_idle(&mut self) -> bool {
        if self.last_idle_check.elapsed() < Duration::from_millis(250) || self.waiting() {
            return false;
        }
        self.last_idle_check = Instant::now();
        let idle_after = Duration::from_millis(self.config.idle_timeout.millis() as u64);
        let candidates: Vec<(String, i32)> = self
            .partitions
            .iter()
            .filter(|(_, p)| p.assigned && !p.idle && !p.paused && p.last_data.elapsed() >= idle_after)
            .map(|(k, _)| k.clone())
            // Records of it still wait here (its tenant is held back).
            .filter(|k| !self.ready.iter().any(|(_, key, _)| key == k))
            .collect();
        for key in candidates {
            if self.caught_up(&self.partitions[&key]) {
                let p = self.partitions.get_mut(&key).expect("listed above");
                p.idle = true;
                self.changes.push(InputChange::Idle(p.input));
            }
        }
        if !self.config.exit_when_caught_up || !self.ready.is_empty() {
            return false;
        }
        let assigned: Vec<&PartitionState> = self.partitions.values().filter(|p| p.assigned).collect();
        if assigned.is_empty() {
            return false;
        }
        assigned.iter().all(|p| p.last_data.elapsed() >= Duration::from_millis(500) && self.caught_up(p))
    }
}

impl Drop for KafkaSource {
    /// Closing the consumer revokes its partitions through the callback:
    /// with nobody left to save state, it lets them go at once (the last
    /// checkpoint was taken when the run stopped). A rebalance step still
    /// waiting for the runtime is answered first: librdkafka's close waits
    /// for that answer and would never finish.
    fn drop(&mut self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.deferred = false;
            if shared.pending.take().is_some() {
                let _ = self.consumer.unassign();
            }
        }
    }
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        if !self.subscribed {
            self.subscribe()?;
        }
        if self.next_ready().is_none() && !self.stop.is_stopped() && !self.waiting() {
            self.poll_round()?;
            self.report_lag(false);
        }
        if let Some((chunk, key, next)) = self.next_ready().and_then(|i| self.ready.remove(i)) {
            if let Some(p) = self.partitions.get_mut(&key) {
                p.returned = next;
            }
            // Should the partition be revoked and come back, reading resumes
            // exactly after what the pipeline has (not at the committed
            // offset, which lags until the next checkpoint).
            self.shared.lock().expect("kafka shared state").start_at.insert(key, next);
            return Ok(Some(chunk));
        }
        if self.stop.is_stopped() {
            return Ok(None);
        }
        if self.check_idle() {
            // Caught up for long enough to be sure: end of input.
            let since = *self.caught_up_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(200) {
                tracing::info!("kafka: every assigned partition is read to its end (kafka.exit_when_caught_up)");
                self.report_lag(true);
                return Ok(None);
            }
        } else {
            self.caught_up_since = None;
        }
        Ok(Some(RawChunk { source: self.name.as_str().into(), ..RawChunk::default() }))
    }

    fn position(&self) -> Option<String> {
        // Every known partition, also those not read yet (offset -1): their
        // watermark input numbers must survive a restart, or a restored
        // watermark would keep a slot no partition maps to any more.
        let partitions = self
            .partitions
            .values()
            .map(|p| PartitionPosition {
                topic: p.topic.clone(),
                partition: p.partition,
                offset: p.returned,
                input: p.input,
            })
            .collect();
        Some(serde_json::to_string(&Position { partitions }).expect("serializable"))
    }

    fn restore(&mut self, position: &str) -> Result<(), SourceError> {
        let position: Position = serde_json::from_str(position)
            .map_err(|e| SourceError::Config(format!("not a Kafka source position: {e}")))?;
        let mut shared = self.shared.lock().expect("kafka shared state");
        for p in position.partitions {
            if p.offset >= 0 {
                shared.start_at.insert((p.topic.clone(), p.partition), p.offset);
            }
            self.next_input = self.next_input.max(p.input + 1);
            self.partitions
                .insert((p.topic.clone(), p.partition), PartitionState::new(p.topic, p.partition, p.input, p.offset));
        }
        Ok(())
    }

    fn commit(&mut self, position: &str) -> Result<(), SourceError> {
        let position: Position = serde_json::from_str(position)
            .map_err(|e| SourceError::Config(format!("not a Kafka source position: {e}")))?;
        let mut tpl = TopicPartitionList::new();
        for p in &position.partitions {
            // Only partitions this instance still owns; a moved partition is
            // committed by its new owner.
            if p.offset >= 0 && self.partitions.get(&(p.topic.clone(), p.partition)).is_some_and(|s| s.assigned) {
                tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(p.offset))
                    .map_err(|e| kafka_error("bad offset", e))?;
            }
        }
        if tpl.count() == 0 {
            return Ok(());
        }
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            // Not fatal: the checkpoint holds the offsets; the next commit
            // covers these too.
            tracing::warn!(error = %e, "kafka: offset commit failed (the checkpoint still holds the position)");
        }
        Ok(())
    }

    fn input_changes(&mut self) -> Vec<InputChange> {
        std::mem::take(&mut self.changes)
    }

    fn hold_back(&mut self, tenants: &[Arc<str>]) {
        self.held = tenants.to_vec();
        self.apply_hold();
    }

    fn lag(&self) -> Vec<(String, i64)> {
        self.lag.clone()
    }

    fn hand_over_inputs(&mut self) -> Option<String> {
        self.shared.lock().expect("kafka shared state").deferred = true;
        Some(self.config.state_scope().to_string())
    }

    fn handover(&mut self) -> Option<Handover> {
        if !self.ready.is_empty() {
            return None; // hand over what was read first
        }
        let pending = self.shared.lock().expect("kafka shared state").pending.clone()?;
        Some(match pending {
            Pending::Revoke(parts) => {
                Handover::Release(parts.iter().filter_map(|key| self.partitions.get(key)).map(|p| p.input).collect())
            }
            Pending::Assign(parts) => Handover::Acquire(
                parts
                    .into_iter()
                    .map(|(topic, partition)| {
                        let name = input_name(&topic, partition);
                        let input = match self.partitions.get(&(topic.clone(), partition)) {
                            Some(p) => p.input,
                            None => {
                                self.next_input += 1;
                                self.next_input - 1
                            }
                        };
                        self.partitions
                            .entry((topic.clone(), partition))
                            .or_insert_with(|| PartitionState::new(topic, partition, input, -1));
                        (input, name)
                    })
                    .collect(),
            ),
        })
    }

    fn released(&mut self) {
        let mut shared = self.shared.lock().expect("kafka shared state");
        let Some(Pending::Revoke(parts)) = shared.pending.take() else { return };
        if let Err(e) = self.consumer.unassign() {
            tracing::error!(error = %e, "kafka: unassigning partitions failed");
        }
        tracing::info!(partitions = ?parts, "kafka: state saved; partitions let go");
        for key in &parts {
            // The partition's state and offset now travel with it.
            shared.start_at.remove(key);
        }
        shared.revoked.extend(parts.iter().cloned());
        drop(shared);
        self.apply_rebalances();
        for key in &parts {
            if let Some(p) = self.partitions.get_mut(key) {
                // Whoever reads it next, this instance included, starts
                // where its state says, not where this instance stopped.
                p.returned = -1;
                p.polled = -1;
            }
        }
    }

    fn acquired(&mut self, starts: &[InputStart]) {
        let mut shared = self.shared.lock().expect("kafka shared state");
        let Some(Pending::Assign(parts)) = shared.pending.take() else { return };
        for (topic, partition) in &parts {
            let name = input_name(topic, *partition);
            let key = (topic.clone(), *partition);
            let start = starts.iter().find(|s| s.name == name);
            match start {
                Some(s) if s.offset >= 0 => shared.start_at.insert(key.clone(), s.offset),
                _ => shared.start_at.remove(&key),
            };
            if start.is_some_and(|s| s.idle) {
                shared.idle_on_assign.insert(key);
            }
        }
        assign(&self.consumer, &mut shared, parts);
        drop(shared);
        self.apply_rebalances();
    }

    fn input_positions(&self) -> Vec<InputPosition> {
        self.partitions
            .values()
            .filter(|p| p.assigned)
            .map(|p| InputPosition { input: p.input, name: input_name(&p.topic, p.partition), offset: p.returned })
            .collect()
    }
}

/// The end of a partition as the last fetch response reported it (the
/// client caches it; no request is sent).
///
/// rdkafka's safe API only offers `fetch_watermarks`, which asks the broker
/// with ListOffsets, and tansu 0.6 answers that with the start of its last
/// record batch rather than the end of the log.
#[allow(unsafe_code)]
fn fetched_end(consumer: &BaseConsumer<SourceContext>, topic: &str, partition: i32) -> Option<i64> {
    let topic = std::ffi::CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client handle is alive for as long as `consumer` is
    // borrowed; the topic is a NUL-terminated string that outlives the call;
    // librdkafka only writes the two out-parameters, which are valid i64s.
    let err = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Seeks a resumed partition back before its resume offset (see [`Resume`]);
/// false when it cannot go further back (the log starts there) or the seek
/// failed, and the resume is then given up.
fn seek_back(consumer: &BaseConsumer<SourceContext>, p: &mut PartitionState) -> bool {
    let Some(resume) = p.resume.take() else { return false };
    let low = consumer.fetch_watermarks(&p.topic, p.partition, Duration::from_secs(5)).map_or(0, |w| w.0);
    if p.polled <= low {
        return false;
    }
    let from = (p.polled - resume.back).max(low);
    tracing::debug!(topic = %p.topic, partition = p.partition, resume_at = p.polled, from, "kafka: the broker skipped the resume offset; seeking back");
    match consumer.seek(&p.topic, p.partition, Offset::Offset(from), Duration::from_secs(10)) {
        Ok(()) => {
            if from > low {
                p.resume = Some(Resume { back: resume.back.saturating_mul(4), since: Instant::now() });
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, topic = %p.topic, partition = p.partition, "kafka: seeking back failed");
            false
        }
    }
}

/// Applies assignments and revocations the rebalance callback recorded.
fn apply_rebalances(
    shared: &Mutex<Shared>,
    partitions: &mut BTreeMap<(String, i32), PartitionState>,
    next_input: &mut u32,
    changes: &mut Vec<InputChange>,
    ready: &mut VecDeque<(RawChunk, (String, i32), i64)>,
) -> Vec<(String, i32)> {
    let (assigned, revoked, start_at, idle) = {
        let mut s = shared.lock().expect("kafka shared state");
        (
            std::mem::take(&mut s.assigned),
            std::mem::take(&mut s.revoked),
            s.start_at.clone(),
            std::mem::take(&mut s.idle_on_assign),
        )
    };
    for key in &revoked {
        if let Some(p) = partitions.get_mut(key) {
            p.assigned = false;
            // Polled but not handed over: dropped, and read again from the
            // handed-over position by whoever gets the partition.
            p.polled = p.returned;
            changes.push(InputChange::Idle(p.input));
        }
    }
    ready.retain(|(_, key, _)| !revoked.contains(key));
    for key in assigned {
        let start = start_at.get(&key).copied();
        let p = partitions.entry(key.clone()).or_insert_with(|| {
            *next_input += 1;
            PartitionState::new(key.0.clone(), key.1, *next_input - 1, start.unwrap_or(-1))
        });
        p.assigned = true;
        // `paused` stays as it was: the client keeps a partition's pause
        // across a revocation, and `apply_hold` (right after) resumes it if
        // its tenant is no longer held.
        p.last_data = Instant::now();
        if let Some(start) = start {
            p.polled = start;
            p.returned = start;
        }
        p.resume = (p.polled >= 0).then(Resume::new);
        // One that was idle when its state was saved stays idle until data
        // comes (then it opens, as any idle partition does).
        p.idle = idle.contains(&key);
        if !p.idle {
            changes.push(InputChange::Opened(p.input));
        }
    }
    revoked
}

/// Messages whose delivery failed, with the reason.
#[derive(Debug, Default)]
struct SinkContext {
    failures: Mutex<Vec<String>>,
}

impl ClientContext for SinkContext {}

impl ProducerContext for SinkContext {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, msg)) = result {
            let what = format!("{}[{}]: {e}", msg.topic(), msg.partition());
            self.failures.lock().expect("sink failures").push(what);
        }
    }
}

/// Writes case files and dead letters to Kafka with an idempotent producer.
pub struct KafkaSink {
    producer: BaseProducer<SinkContext>,
    cases_topic: String,
    dead_letter_topic: String,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink").field("cases_topic", &self.cases_topic).finish_non_exhaustive()
    }
}

/// Creates the topics that do not exist yet; an existing topic is left as
/// it is. Replication is the broker's default.
pub fn ensure_topics(config: &KafkaConfig, topics: &[(&str, i32)]) -> Result<(), SourceError> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let topics: Vec<NewTopic<'_>> = topics
        .iter()
        .filter(|(name, _)| !name.is_empty())
        .map(|&(name, partitions)| NewTopic::new(name, partitions, TopicReplication::Fixed(-1)))
        .collect();
    if topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> =
        config.client_config()?.create().map_err(|e| kafka_error("cannot create the admin client", e))?;
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = futures_executor::block_on(admin.create_topics(&topics, &options))
        .map_err(|e| kafka_error("cannot create topics", e))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "kafka: topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => return Err(SourceError::Config(format!("kafka: cannot create topic {name}: {code}"))),
        }
    }
    Ok(())
}

impl KafkaSink {
    pub fn new(config: &KafkaConfig) -> Result<Self, SourceError> {
        if config.create_topics {
            ensure_topics(config, &[(&config.cases_topic, 3), (&config.dead_letter_topic, 3)])?;
        }
        let mut client = config.client_config()?;
        client.set("enable.idempotence", "true").set("acks", "all");
        set_default(&mut client, "linger.ms", "5");
        let producer = client
            .create_with_context(SinkContext::default())
            .map_err(|e| kafka_error("cannot create the producer", e))?;
        Ok(Self {
            producer,
            cases_topic: config.cases_topic.clone(),
            dead_letter_topic: config.dead_letter_topic.clone(),
        })
    }

    /// Queues a case file, keyed by tenant, with its idempotency key.
    pub fn send_case(&mut self, tenant: &str, idempotency_key: &str, kind: &str, payload: &[u8]) -> KafkaResult<()> {
        if self.cases_topic.is_empty() {
            return Ok(());
        }
        let headers = OwnedHeaders::new()
            .insert(Header { key: "idempotency_key", value: Some(idempotency_key) })
            .insert(Header { key: "kind", value: Some(kind) })
            .insert(Header { key: "tenant", value: Some(tenant) });
        let topic = self.cases_topic.clone();
        self.send(BaseRecord::to(&topic).key(tenant).payload(payload).headers(headers))
    }

    /// Queues a dead letter with its reason and origin in headers.
    pub fn send_dead_letter(&mut self, dl: &DeadLetter) -> KafkaResult<()> {
        if self.dead_letter_topic.is_empty() {
            return Ok(());
        }
        let (topic, partition) = dl.source.rsplit_once('/').unwrap_or((&dl.source, ""));
        let offset = dl.offset.to_string();
        let reason = dl.reason.to_string();
        let (payload, cut) = dead_letter_payload(&dl.record);
        let mut headers = OwnedHeaders::new()
            .insert(Header { key: "reason", value: Some(reason.as_str()) })
            .insert(Header { key: "reason_code", value: Some(dl.reason.code()) })
            .insert(Header { key: "source_topic", value: Some(topic) })
            .insert(Header { key: "source_partition", value: Some(partition) })
            .insert(Header { key: "source_offset", value: Some(offset.as_str()) });
        let original = dl.record.len().to_string();
        if cut {
            headers = headers.insert(Header { key: "truncated_from_bytes", value: Some(original.as_str()) });
        }
        let target = self.dead_letter_topic.clone();
        self.send(BaseRecord::<(), [u8]>::to(&target).payload(payload).headers(headers))
    }

    fn send<K: rdkafka::message::ToBytes + ?Sized>(&mut self, record: BaseRecord<'_, K, [u8]>) -> KafkaResult<()> {
        send_waiting(&self.producer, record)
    }

    /// Waits until the broker has acknowledged every message sent so far;
    /// fails if any was not delivered.
    pub fn confirm(&mut self, timeout: Duration) -> KafkaResult<()> {
        self.producer.flush(timeout)?;
        let failures = std::mem::take(&mut *self.producer.context().failures.lock().expect("sink failures"));
        if let Some(first) = failures.first() {
            tracing::error!(failed = failures.len(), first = %first, "kafka: deliveries failed");
            return Err(KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::Fail));
        }
        Ok(())
    }
}

/// Queues a record; when the producer's queue is full, serves delivery
/// reports until there is room (backpressure instead of an error).
fn send_waiting<C, K, P>(producer: &BaseProducer<C>, record: BaseRecord<'_, K, P>) -> KafkaResult<()>
where
    C: ProducerContext<DeliveryOpaque = ()>,
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    let mut record = record;
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull), r)) => {
                producer.poll(Duration::from_millis(10));
                record = r;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Most bytes of a record put on the dead-letter topic: a record too large
/// for the input is likely too large for the producer too (`message.max.bytes`
/// is 1 MB by default), and a refused dead letter would stop the run. The
/// dead-letter file always has the whole record.
const DEAD_LETTER_MAX_BYTES: usize = 512 * 1024;

/// The payload for the dead-letter topic, and whether it was cut.
fn dead_letter_payload(record: &[u8]) -> (&[u8], bool) {
    if record.len() <= DEAD_LETTER_MAX_BYTES { (record, false) } else { (&record[..DEAD_LETTER_MAX_BYTES], true) }
}

/// Produces the lines of NDJSON `data` to a topic, each keyed by the value
/// at the dotted JSON path `tenant_field` (so a tenant stays on one
/// partition; a line without it gets an empty key). Blank lines are skipped.
/// Returns how many were sent. For replays, benchmarks, tests and demos.
pub fn produce_lines(config: &KafkaConfig, topic: &str, data: &[u8], tenant_field: &str) -> Result<u64, SourceError> {
    let path: Vec<&str> = tenant_field.split('.').collect();
    let tenant_of = |line: &[u8]| -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        path.iter().try_fold(&v, |v, k| v.get(k))?.as_str().map(str::to_string)
    };
    let lines = data.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace));
    let mut client = config.client_config()?;
    client.set("enable.idempotence", "true").set("acks", "all");
    set_default(&mut client, "linger.ms", "20");
    set_default(&mut client, "batch.size", "1000000");
    set_default(&mut client, "queue.buffering.max.messages", "1000000");
    let producer: BaseProducer = client.create().map_err(|e| kafka_error("cannot create the producer", e))?;
    let mut n = 0u64;
    for line in lines {
        let key = tenant_of(line).unwrap_or_default();
        send_waiting(&producer, BaseRecord::to(topic).key(key.as_str()).payload(line))
            .map_err(|e| kafka_error("produce", e))?;
        n += 1;
    }
    producer.flush(Duration::from_secs(60)).map_err(|e| kafka_error("flush", e))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_dead_letters_are_cut_for_the_topic() {
        let small = vec![b'x'; 100];
        assert_eq!(dead_letter_payload(&small), (&small[..], false));
        let big = vec![b'x'; DEAD_LETTER_MAX_BYTES + 1];
        let (payload, cut) = dead_letter_payload(&big);
        assert!(cut);
        assert_eq!(payload.len(), DEAD_LETTER_MAX_BYTES);
    }

    #[test]
    fn tenant_from_topic_pattern() {
        let c = KafkaConfig::default();
        assert_eq!(c.tenant_of_topic("wazuh-alerts-acme"), Some("acme"));
        assert_eq!(c.tenant_of_topic("wazuh-alerts-"), None);
        assert_eq!(c.tenant_of_topic("other-acme"), None);
        let c = KafkaConfig { topic_tenant_pattern: "t.{tenant}.alerts".into(), ..KafkaConfig::default() };
        assert_eq!(c.tenant_of_topic("t.globex.alerts"), Some("globex"));
    }

    #[test]
    fn secrets_must_come_from_the_environment() {
        let mut c = KafkaConfig::default();
        c.properties.insert("sasl.password".into(), "hunter2".into());
        let errors = c.validate();
        assert!(errors.iter().any(|e| e.contains("sasl.password") && !e.contains("hunter2")), "{errors:?}");
        c.properties.insert("sasl.password".into(), "${SLUICE_TEST_UNSET_SECRET}".into());
        assert!(c.validate().is_empty());
        let err = c.client_config().unwrap_err().to_string();
        assert!(err.contains("SLUICE_TEST_UNSET_SECRET"), "{err}");
    }

    #[test]
    fn bad_settings_are_named() {
        let c = KafkaConfig {
            topics: vec![],
            tenant_from: TenantFrom::Topic,
            topic_tenant_pattern: "no-placeholder".into(),
            ..KafkaConfig::default()
        };
        let errors = c.validate();
        assert!(errors.iter().any(|e| e.contains("kafka.topics")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("kafka.topic_tenant_pattern")), "{errors:?}");
    }
}
