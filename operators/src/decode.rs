//! Decode: raw Wazuh alert lines → Arrow alert batches, with simd-json.
//!
//! One [`Decoder`] per decoding thread; it owns reusable parse buffers and
//! column builders so the hot path allocates little per record. Each record is
//! parsed and fully validated before any column is appended, so a bad record
//! never leaves a half-written row: it becomes a [`DeadLetter`] with its
//! reason and byte offset, and the rest of the chunk goes on.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, ListBuilder, RecordBatch, StringBuilder, StringDictionaryBuilder,
    TimestampMicrosecondBuilder, TimestampMillisecondBuilder, UInt8Builder, UInt32Builder,
};
use arrow::datatypes::{Int32Type, SchemaRef};
use serde::{Deserialize, Serialize};
use simd_json::prelude::*;
use simd_json::{Buffers, ErrorType, Tape};

use crate::dead_letter::{DeadLetter, Reason};
use crate::error::{Error, Result};
use crate::hash::{FastMap, stable_hash};
use crate::schema::alert_schema;
use crate::time::parse_timestamp;

/// A chunk of raw records as a source read them: one buffer, line spans into
/// it, and the byte offset of the buffer's start in the source.
#[derive(Debug, Clone, Default)]
pub struct RawChunk {
    pub source: Arc<str>,
    pub data: Vec<u8>,
    /// `(start, end)` of each record in `data`, without the line terminator.
    pub lines: Vec<(usize, usize)>,
    /// Offset of `data[0]` in the source.
    pub base_offset: u64,
    /// Wall-clock time the chunk was read, µs since the epoch.
    pub ingest_us: i64,
    /// Which of the source's inputs (a Kafka partition, say) the chunk came
    /// from; each input has its own watermark. 0 for single-input sources.
    pub input: u32,
    /// Where the records' tenant comes from.
    pub tenant: ChunkTenant,
    /// The position of each record in its input (a Kafka offset), aligned
    /// with `lines`. Empty: positions are byte offsets, `base_offset + start`.
    pub positions: Vec<u64>,
}

/// The tenant of a chunk's records, when the source knows it better than
/// the record does (a Kafka topic `wazuh-alerts-{tenant}`, a header).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChunkTenant {
    /// Read it from the record, as `tenant.field` / `tenant.static` say.
    #[default]
    FromRecord,
    /// Every record of the chunk belongs to this tenant.
    Fixed(Arc<str>),
    /// The source looked for the tenant (the string says where) and found
    /// none: every record is dead-lettered, never given a default tenant.
    Unresolved(Arc<str>),
}

impl RawChunk {
    /// Builds a chunk from newline-separated bytes (a trailing partial line is
    /// treated as a record). Blank lines are skipped.
    pub fn from_lines(source: &str, data: Vec<u8>, base_offset: u64, ingest_us: i64) -> Self {
        let mut lines = Vec::with_capacity(data.len() / 512);
        let mut start = 0;
        for i in memchr::memchr_iter(b'\n', &data) {
            push_line(&data, start, i, &mut lines);
            start = i + 1;
        }
        push_line(&data, start, data.len(), &mut lines);
        Self { source: source.into(), data, lines, base_offset, ingest_us, ..Self::default() }
    }

    /// The position of record `i` in its input, for dead letters.
    pub fn position(&self, i: usize) -> u64 {
        self.positions.get(i).copied().unwrap_or_else(|| self.base_offset + self.lines[i].0 as u64)
    }
}

/// Pushes `data[start..end]` (minus a trailing `\r`) unless it is blank.
pub fn push_line(data: &[u8], start: usize, end: usize, lines: &mut Vec<(usize, usize)>) {
    let end = if end > start && data[end - 1] == b'\r' { end - 1 } else { end };
    // A record starts with `{` almost always; only then is the blank check skipped.
    if data.get(start) == Some(&b'{') || data[start..end].iter().any(|b| !b.is_ascii_whitespace()) {
        lines.push((start, end));
    }
}

/// Where the tenant of a record comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Dotted JSON path of the tenant field (default `manager.name`; MSSPs
    /// often set `agent.labels.tenant`). Records without it are dead-lettered.
    #[serde(default = "default_tenant_field")]
    pub field: String,
    /// A fixed tenant for every record, for single-tenant installs. When set,
    /// `field` is ignored.
    #[serde(default, rename = "static")]
    pub static_tenant: Option<String>,
}

fn default_tenant_field() -> String {
    "manager.name".into()
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self { field: default_tenant_field(), static_tenant: None }
    }
}

/// Which JSON paths feed each typed column; the first present path wins. A
/// path goes through arrays: it matches the first element that has the key.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnSources {
    pub src_ip: Vec<String>,
    pub dst_ip: Vec<String>,
    pub src_user: Vec<String>,
    pub dst_user: Vec<String>,
    pub process: Vec<String>,
    /// A value like `SHA1=..,MD5=..,SHA256=..` (Sysmon `hashes`) yields its SHA256.
    pub file_hash: Vec<String>,
    pub url: Vec<String>,
}

fn paths(p: &[&str]) -> Vec<String> {
    p.iter().map(|s| s.to_string()).collect()
}

impl Default for ColumnSources {
    fn default() -> Self {
        Self {
            src_ip: paths(&["data.srcip", "data.src_ip", "data.win.eventdata.ipAddress"]),
            dst_ip: paths(&["data.dstip", "data.dest_ip", "data.dst_ip", "data.ms-graph.evidence.ipAddress"]),
            src_user: paths(&[
                "data.srcuser",
                "data.win.eventdata.subjectUserName",
                "data.ms-graph.evidence.loggedOnUsers.accountName",
                "data.ms-graph.evidence.userAccount.accountName",
                "data.win.eventdata.user",
            ]),
            dst_user: paths(&["data.dstuser", "data.win.eventdata.targetUserName", "syscheck.uname_after"]),
            process: paths(&["data.win.eventdata.image", "data.audit.exe", "predecoder.program_name"]),
            file_hash: paths(&[
                "syscheck.sha256_after",
                "data.win.eventdata.hashes",
                "data.virustotal.source.sha256",
                "data.virustotal.source.sha1",
            ]),
            url: paths(&["data.url"]),
        }
    }
}

/// Decoder settings (`[decode]` in the config file).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeConfig {
    /// Largest record accepted, in bytes; larger ones are dead-lettered.
    pub max_record_bytes: usize,
    /// Deepest JSON nesting accepted; deeper records are dead-lettered.
    pub max_depth: usize,
    /// JSON paths feeding the typed entity columns.
    pub columns: ColumnSources,
    /// Extra typed columns: JSON path → column name (nullable Utf8), e.g.
    /// `"data.win.eventdata.targetUserName" = "target_user"`.
    pub fields: BTreeMap<String, String>,
    /// Extra columns of some tenants (their policy's `fields`): tenant →
    /// JSON path → column name. A name also in `fields` takes this path for
    /// the tenant; a name only here is null for every other tenant. Not a
    /// `[decode]` key.
    #[serde(skip)]
    pub tenant_fields: BTreeMap<String, BTreeMap<String, String>>,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        Self {
            max_record_bytes: 1 << 20,
            max_depth: 64,
            columns: ColumnSources::default(),
            fields: BTreeMap::new(),
            tenant_fields: BTreeMap::new(),
        }
    }
}

impl DecodeConfig {
    /// Every problem with this config, not only the first.
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if self.max_record_bytes == 0 {
            errors.push("decode.max_record_bytes must be > 0".to_string());
        }
        if self.max_depth < 4 {
            errors.push(format!("decode.max_depth = {} is below 4; Wazuh alerts nest 4 deep", self.max_depth));
        }
        let base = alert_schema(&[]);
        let sets = std::iter::once(("decode.fields".to_string(), &self.fields))
            .chain(self.tenant_fields.iter().map(|(t, f)| (format!("policy.tenants.{t}.fields"), f)));
        for (key, fields) in sets {
            for (path, name) in fields {
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    errors.push(format!("{key}: {path:?} is not a dotted JSON path"));
                }
                if base.field_with_name(name).is_ok() {
                    errors.push(format!("{key}.{path:?}: column name {name:?} is already a built-in column"));
                }
            }
            let mut names: Vec<&String> = fields.values().collect();
            names.sort();
            for pair in names.windows(2) {
                if pair[0] == pair[1] {
                    errors.push(format!("{key}: column name {:?} is used twice", pair[0]));
                }
            }
        }
        errors
    }

    /// The extra columns, in schema order: `fields` in path order, then the
    /// names only some tenants have, sorted.
    pub fn extra_columns(&self) -> Vec<String> {
        let mut names: Vec<String> = self.fields.values().cloned().collect();
        let mut tenant_only: Vec<&String> =
            self.tenant_fields.values().flat_map(|f| f.values()).filter(|n| !names.contains(n)).collect();
        tenant_only.sort();
        tenant_only.dedup();
        names.extend(tenant_only.into_iter().cloned());
        names
    }
}

/// Counters of one decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DecodeStats {
    pub read: u64,
    pub decoded: u64,
    pub dead_lettered: u64,
}

/// Output of decoding one chunk.
#[derive(Debug)]
pub struct Decoded {
    /// `None` when no record of the chunk survived.
    pub batch: Option<RecordBatch>,
    pub dead_letters: Vec<DeadLetter>,
}

/// Every JSON path the decoder reads, compiled into a trie that is walked
/// once per record: one pass over the relevant objects instead of one
/// linear key search per path.
#[derive(Debug, Default)]
struct PathIndex {
    nodes: Vec<TrieNode>,
    /// Slot → dotted path, for error messages.
    paths: Vec<String>,
}

#[derive(Debug, Default)]
struct TrieNode {
    key: String,
    children: Vec<usize>,
    slot: Option<usize>,
}

/// Values found for each slot of a [`PathIndex`] in one record.
type Slots<'t, 'i> = Vec<Option<TapeValue<'t, 'i>>>;

impl PathIndex {
    fn new() -> Self {
        Self { nodes: vec![TrieNode::default()], paths: Vec::new() }
    }

    /// The slot of a dotted path, added if new.
    fn slot(&mut self, dotted: &str) -> usize {
        let mut node = 0;
        for key in dotted.split('.') {
            let existing = self.nodes[node].children.iter().copied().find(|&c| self.nodes[c].key == key);
            node = match existing {
                Some(c) => c,
                None => {
                    self.nodes.push(TrieNode { key: key.to_string(), ..TrieNode::default() });
                    let c = self.nodes.len() - 1;
                    self.nodes[node].children.push(c);
                    c
                }
            };
        }
        *self.nodes[node].slot.get_or_insert_with(|| {
            self.paths.push(dotted.to_string());
            self.paths.len() - 1
        })
    }

    fn path(&self, slot: usize) -> &str {
        &self.paths[slot]
    }

    /// Finds every indexed path in `root`; the first occurrence of a key wins.
    fn collect<'t, 'i>(&self, root: TapeValue<'t, 'i>, out: &mut Slots<'t, 'i>) {
        out.clear();
        out.resize(self.paths.len(), None);
        self.walk(0, root, out);
    }

    fn walk<'t, 'i>(&self, node: usize, value: TapeValue<'t, 'i>, out: &mut Slots<'t, 'i>) {
        // A path goes through arrays: `evidence.ipAddress` matches the first
        // element of `evidence` that has an `ipAddress`.
        if let Some(array) = value.as_array() {
            for element in array.iter() {
                self.walk(node, element, out);
            }
            return;
        }
        let Some(object) = value.as_object() else { return };
        let children = &self.nodes[node].children;
        for (key, v) in object.iter() {
            let Some(&c) = children.iter().find(|&&c| self.nodes[c].key == key) else { continue };
            let child = &self.nodes[c];
            if let Some(slot) = child.slot
                && out[slot].is_none()
            {
                out[slot] = Some(v);
            }
            if !child.children.is_empty() {
                self.walk(c, v, out);
            }
        }
    }
}

/// Slots of the fixed Wazuh fields.
#[derive(Debug)]
struct FieldSlots {
    timestamp: usize,
    at_timestamp: usize,
    id: usize,
    rule_id: usize,
    rule_level: usize,
    rule_description: usize,
    rule_groups: usize,
    mitre_tactic: usize,
    mitre_id: usize,
    agent_id: usize,
    agent_name: usize,
    agent_ip: usize,
    manager: usize,
    decoder: usize,
    location: usize,
    full_log: usize,
    tenant: usize,
    src_ip: Vec<usize>,
    dst_ip: Vec<usize>,
    src_user: Vec<usize>,
    dst_user: Vec<usize>,
    process: Vec<usize>,
    file_hash: Vec<usize>,
    url: Vec<usize>,
    win_event_id: usize,
    win_channel: usize,
    /// Per extra column, the slot of its path (`None`: null).
    extra: Vec<Option<usize>>,
    /// The same for tenants with their own extra fields.
    tenant_extra: FastMap<Box<str>, Vec<Option<usize>>>,
}

/// Stateful simd-json → Arrow decoder. Not shared between threads.
pub struct Decoder {
    config: DecodeConfig,
    schema: SchemaRef,
    tenant_static: Option<Arc<str>>,
    index: PathIndex,
    slots: FieldSlots,
    scratch: Vec<u8>,
    buffers: Buffers,
    tape: Option<Tape<'static>>,
    b: Builders,
    stats: DecodeStats,
}

struct Builders {
    tenant: StringDictionaryBuilder<Int32Type>,
    event_time: TimestampMillisecondBuilder,
    ingest_time: TimestampMicrosecondBuilder,
    alert_id: StringBuilder,
    rule_id: UInt32Builder,
    rule_level: UInt8Builder,
    rule_description: StringDictionaryBuilder<Int32Type>,
    rule_groups: ListBuilder<StringDictionaryBuilder<Int32Type>>,
    mitre_tactics: ListBuilder<StringDictionaryBuilder<Int32Type>>,
    mitre_techniques: ListBuilder<StringDictionaryBuilder<Int32Type>>,
    agent_id: StringDictionaryBuilder<Int32Type>,
    agent_name: StringDictionaryBuilder<Int32Type>,
    agent_ip: StringDictionaryBuilder<Int32Type>,
    manager: StringDictionaryBuilder<Int32Type>,
    decoder: StringDictionaryBuilder<Int32Type>,
    location: StringDictionaryBuilder<Int32Type>,
    src_ip: StringBuilder,
    dst_ip: StringBuilder,
    src_user: StringBuilder,
    dst_user: StringBuilder,
    process: StringBuilder,
    file_hash: StringBuilder,
    url: StringBuilder,
    win_event_id: StringDictionaryBuilder<Int32Type>,
    win_channel: StringDictionaryBuilder<Int32Type>,
    full_log: StringBuilder,
    raw: BinaryBuilder,
    extra: Vec<StringBuilder>,
}

impl Builders {
    fn new(extra: usize) -> Self {
        let dict = StringDictionaryBuilder::<Int32Type>::new;
        let list = || ListBuilder::new(StringDictionaryBuilder::<Int32Type>::new());
        Self {
            tenant: dict(),
            event_time: TimestampMillisecondBuilder::new().with_timezone("UTC"),
            ingest_time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            alert_id: StringBuilder::new(),
            rule_id: UInt32Builder::new(),
            rule_level: UInt8Builder::new(),
            rule_description: dict(),
            rule_groups: list(),
            mitre_tactics: list(),
            mitre_techniques: list(),
            agent_id: dict(),
            agent_name: dict(),
            agent_ip: dict(),
            manager: dict(),
            decoder: dict(),
            location: dict(),
            src_ip: StringBuilder::new(),
            dst_ip: StringBuilder::new(),
            src_user: StringBuilder::new(),
            dst_user: StringBuilder::new(),
            process: StringBuilder::new(),
            file_hash: StringBuilder::new(),
            url: StringBuilder::new(),
            win_event_id: dict(),
            win_channel: dict(),
            full_log: StringBuilder::new(),
            raw: BinaryBuilder::new(),
            extra: (0..extra).map(|_| StringBuilder::new()).collect(),
        }
    }

    fn finish(&mut self) -> Vec<ArrayRef> {
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.tenant.finish()),
            Arc::new(self.event_time.finish()),
            Arc::new(self.ingest_time.finish()),
            Arc::new(self.alert_id.finish()),
            Arc::new(self.rule_id.finish()),
            Arc::new(self.rule_level.finish()),
            Arc::new(self.rule_description.finish()),
            Arc::new(self.rule_groups.finish()),
            Arc::new(self.mitre_tactics.finish()),
            Arc::new(self.mitre_techniques.finish()),
            Arc::new(self.agent_id.finish()),
            Arc::new(self.agent_name.finish()),
            Arc::new(self.agent_ip.finish()),
            Arc::new(self.manager.finish()),
            Arc::new(self.decoder.finish()),
            Arc::new(self.location.finish()),
            Arc::new(self.src_ip.finish()),
            Arc::new(self.dst_ip.finish()),
            Arc::new(self.src_user.finish()),
            Arc::new(self.dst_user.finish()),
            Arc::new(self.process.finish()),
            Arc::new(self.file_hash.finish()),
            Arc::new(self.url.finish()),
            Arc::new(self.win_event_id.finish()),
            Arc::new(self.win_channel.finish()),
            Arc::new(self.full_log.finish()),
            Arc::new(self.raw.finish()),
        ];
        cols.extend(self.extra.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef));
        cols
    }
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder").field("config", &self.config).field("stats", &self.stats).finish_non_exhaustive()
    }
}

type TapeValue<'t, 'i> = simd_json::tape::Value<'t, 'i>;

/// A field that must be a string (or absent / null).
fn opt_string<'i>(index: &PathIndex, slots: &Slots<'_, 'i>, slot: usize) -> Result<Option<&'i str>, Reason> {
    match slots[slot] {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => match v.into_string() {
            Some(s) => Ok(Some(s)),
            None => Err(Reason::WrongType { field: index.path(slot).to_string(), expected: "string" }),
        },
    }
}

/// First present, non-empty string among `candidates`; objects and arrays
/// are a type error.
fn first_string<'i>(index: &PathIndex, slots: &Slots<'_, 'i>, candidates: &[usize]) -> Result<Option<&'i str>, Reason> {
    for &slot in candidates {
        if let Some(s) = opt_string(index, slots, slot)?.filter(|s| !s.is_empty()) {
            return Ok(Some(s));
        }
    }
    Ok(None)
}

/// `SHA256=…` out of a Sysmon `hashes` value, or the value itself.
fn sha256_of(value: &str) -> &str {
    match value.find("SHA256=") {
        Some(i) => {
            let rest = &value[i + 7..];
            rest.split([',', ' ']).next().unwrap_or(rest)
        }
        None => value,
    }
}

/// The validated fields of one record, borrowed from the parse tape.
struct Fields<'i> {
    tenant: &'i str,
    event_time: i64,
    alert_id: Option<&'i str>,
    rule_id: u32,
    rule_level: u8,
    rule_description: Option<&'i str>,
    agent_id: Option<&'i str>,
    agent_name: Option<&'i str>,
    agent_ip: Option<&'i str>,
    manager: Option<&'i str>,
    decoder: Option<&'i str>,
    location: Option<&'i str>,
    src_ip: Option<&'i str>,
    dst_ip: Option<&'i str>,
    src_user: Option<&'i str>,
    dst_user: Option<&'i str>,
    process: Option<&'i str>,
    /// Lower-cased: tools disagree on the case of hex digests.
    file_hash: Option<String>,
    url: Option<&'i str>,
    win_event_id: Option<Text<'i>>,
    win_channel: Option<Text<'i>>,
    full_log: Option<&'i str>,
}

/// A field read leniently: a string as it is, an integer as its digits.
enum Text<'i> {
    Str(&'i str),
    Number(String),
}

impl Text<'_> {
    fn as_str(&self) -> &str {
        match self {
            Text::Str(s) => s,
            Text::Number(n) => n,
        }
    }
}

/// A field only some alerts have, that no alert is refused for: a string,
/// or an integer as text; anything else (a fraction, a boolean, an object,
/// `null`) reads as absent.
fn lenient_text<'i>(slots: &Slots<'_, 'i>, slot: usize) -> Option<Text<'i>> {
    let v = slots[slot]?;
    if let Some(s) = v.into_string() {
        return Some(Text::Str(s));
    }
    v.as_i64().map(|n| Text::Number(n.to_string())).or_else(|| v.as_u64().map(|n| Text::Number(n.to_string())))
}

type TapeArray<'t, 'i> = simd_json::tape::Array<'t, 'i>;

/// An array of strings (absent or null: `None`), checked before any column
/// is written so a bad element dead-letters the whole record.
fn string_array<'t, 'i>(
    index: &PathIndex,
    slots: &Slots<'t, 'i>,
    slot: usize,
) -> Result<Option<TapeArray<'t, 'i>>, Reason> {
    let Some(v) = slots[slot] else { return Ok(None) };
    if v.is_null() {
        return Ok(None);
    }
    let wrong = || Reason::WrongType { field: index.path(slot).to_string(), expected: "array of strings" };
    let arr = v.as_array().ok_or_else(wrong)?;
    if arr.iter().any(|e| e.as_str().is_none()) {
        return Err(wrong());
    }
    Ok(Some(arr))
}

fn uint_field(
    index: &PathIndex,
    slots: &Slots<'_, '_>,
    slot: usize,
    max: u64,
    expected: &'static str,
) -> Result<u64, Reason> {
    let v = slots[slot].ok_or_else(|| Reason::MissingField { field: index.path(slot).to_string() })?;
    let n = v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse::<u64>().ok()));
    match n {
        Some(n) if n <= max => Ok(n),
        _ => Err(Reason::WrongType { field: index.path(slot).to_string(), expected }),
    }
}

fn depth_of(bytes: &[u8], structural: &[u32]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for &i in structural {
        match bytes.get(i as usize) {
            Some(b'{' | b'[') => {
                depth += 1;
                max = max.max(depth);
            }
            Some(b'}' | b']') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

impl Decoder {
    /// Builds a decoder; fails if the config is invalid.
    pub fn new(config: DecodeConfig, tenant: &TenantConfig) -> Result<Self> {
        let errors = config.validate();
        if !errors.is_empty() {
            return Err(Error::Config(errors.join("; ")));
        }
        if tenant.static_tenant.is_none() && tenant.field.trim().is_empty() {
            return Err(Error::Config("tenant.field is empty and tenant.static is not set".into()));
        }
        let extra_names = config.extra_columns();
        let mut index = PathIndex::new();
        let mut all = |v: &[String]| v.iter().map(|p| index.slot(p)).collect::<Vec<_>>();
        let c = &config.columns;
        let (src_ip, dst_ip, src_user, dst_user) = (all(&c.src_ip), all(&c.dst_ip), all(&c.src_user), all(&c.dst_user));
        let (process, file_hash, url) = (all(&c.process), all(&c.file_hash), all(&c.url));
        let column = |name: &String| extra_names.iter().position(|n| n == name).expect("every name is a column");
        let mut extra = vec![None; extra_names.len()];
        for (path, name) in &config.fields {
            extra[column(name)] = Some(index.slot(path));
        }
        let tenant_extra = config
            .tenant_fields
            .iter()
            .map(|(tenant, fields)| {
                let mut own = extra.clone();
                for (path, name) in fields {
                    own[column(name)] = Some(index.slot(path));
                }
                (Box::from(tenant.as_str()), own)
            })
            .collect();
        let slots = FieldSlots {
            timestamp: index.slot("timestamp"),
            at_timestamp: index.slot("@timestamp"),
            id: index.slot("id"),
            rule_id: index.slot("rule.id"),
            rule_level: index.slot("rule.level"),
            rule_description: index.slot("rule.description"),
            rule_groups: index.slot("rule.groups"),
            mitre_tactic: index.slot("rule.mitre.tactic"),
            mitre_id: index.slot("rule.mitre.id"),
            agent_id: index.slot("agent.id"),
            agent_name: index.slot("agent.name"),
            agent_ip: index.slot("agent.ip"),
            manager: index.slot("manager.name"),
            decoder: index.slot("decoder.name"),
            location: index.slot("location"),
            full_log: index.slot("full_log"),
            tenant: index.slot(&tenant.field),
            src_ip,
            dst_ip,
            src_user,
            dst_user,
            process,
            file_hash,
            url,
            win_event_id: index.slot("data.win.system.eventID"),
            win_channel: index.slot("data.win.system.channel"),
            extra,
            tenant_extra,
        };
        Ok(Self {
            schema: alert_schema(&extra_names),
            tenant_static: tenant.static_tenant.as_deref().map(Arc::from),
            index,
            slots,
            b: Builders::new(extra_names.len()),
            config,
            scratch: Vec::new(),
            buffers: Buffers::default(),
            tape: Some(Tape::null().reset()),
            stats: DecodeStats::default(),
        })
    }

    /// The schema of the batches this decoder produces.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Counters since this decoder was built.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    /// Decodes every record of `chunk`; bad records become dead letters.
    pub fn decode(&mut self, chunk: &RawChunk) -> Result<Decoded> {
        let mut dead_letters = Vec::new();
        let mut rows = 0usize;
        let fixed = match &chunk.tenant {
            ChunkTenant::FromRecord => self.tenant_static.clone(),
            ChunkTenant::Fixed(t) => Some(t.clone()),
            ChunkTenant::Unresolved(_) => None,
        };
        // `finish` leaves the builders empty and without capacity: size the
        // byte columns for this chunk up front instead of regrowing them
        // (each doubling copies and touches fresh pages).
        let (n, bytes) = (chunk.lines.len(), chunk.data.len());
        self.b.raw = BinaryBuilder::with_capacity(n, bytes);
        self.b.full_log = StringBuilder::with_capacity(n, bytes / 2);
        for (i, &(start, end)) in chunk.lines.iter().enumerate() {
            self.stats.read += 1;
            let record = &chunk.data[start..end];
            let result = match &chunk.tenant {
                ChunkTenant::Unresolved(field) => Err(Reason::NoTenant { field: field.to_string() }),
                _ => self.decode_record(record, fixed.as_deref(), chunk.ingest_us),
            };
            match result {
                Ok(()) => {
                    rows += 1;
                    self.stats.decoded += 1;
                }
                Err(reason) => {
                    self.stats.dead_lettered += 1;
                    dead_letters.push(DeadLetter {
                        source: chunk.source.clone(),
                        offset: chunk.position(i),
                        reason,
                        record: record.to_vec(),
                    });
                }
            }
        }
        let batch = if rows == 0 {
            // Builders are empty; nothing to finish.
            None
        } else {
            Some(RecordBatch::try_new(self.schema.clone(), self.b.finish())?)
        };
        Ok(Decoded { batch, dead_letters })
    }

    fn decode_record(&mut self, record: &[u8], fixed: Option<&str>, ingest_us: i64) -> Result<(), Reason> {
        if record.len() > self.config.max_record_bytes {
            return Err(Reason::TooLarge { bytes: record.len(), limit: self.config.max_record_bytes });
        }
        // simd-json rewrites its input while unescaping, so parse a copy and
        // keep `record` untouched for the `raw` column.
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(record);
        let mut tape = self.tape.take().unwrap_or_else(|| Tape::null().reset()).reset();
        let result = match simd_json::fill_tape(&mut scratch, &mut self.buffers, &mut tape) {
            Err(e) => Err(match e.error() {
                ErrorType::InvalidUtf8 => Reason::InvalidUtf8,
                _ => Reason::NotJson { detail: e.to_string() },
            }),
            Ok(()) => self.append_parsed(tape.as_value(), record, fixed, ingest_us),
        };
        self.tape = Some(tape.reset());
        self.scratch = scratch;
        result
    }

    fn append_parsed(
        &mut self,
        root: TapeValue<'_, '_>,
        record: &[u8],
        fixed: Option<&str>,
        ingest_us: i64,
    ) -> Result<(), Reason> {
        let depth = depth_of(record, self.buffers.structural_indexes());
        if depth > self.config.max_depth {
            return Err(Reason::TooDeep { depth, limit: self.config.max_depth });
        }
        if !root.is_object() {
            return Err(Reason::NotObject);
        }
        let mut slots = Vec::with_capacity(self.index.paths.len());
        self.index.collect(root, &mut slots);
        let (ix, sl) = (&self.index, &self.slots);
        let fields = self.extract(&slots, fixed.is_some())?;
        let tenant = fixed.unwrap_or(fields.tenant);
        let extra_slots =
            if sl.tenant_extra.is_empty() { &sl.extra } else { sl.tenant_extra.get(tenant).unwrap_or(&sl.extra) };
        let mut extras: Vec<Option<&str>> = Vec::with_capacity(extra_slots.len());
        for slot in extra_slots {
            extras.push(match slot {
                Some(slot) => first_string(ix, &slots, &[*slot])?,
                None => None,
            });
        }
        let groups = string_array(ix, &slots, sl.rule_groups)?;
        let tactics = string_array(ix, &slots, sl.mitre_tactic)?;
        let techniques = string_array(ix, &slots, sl.mitre_id)?;
        append(&mut self.b, tenant, &fields, groups, tactics, techniques, &extras, record, ingest_us);
        Ok(())
    }

    fn extract<'i>(&self, slots: &Slots<'_, 'i>, tenant_fixed: bool) -> Result<Fields<'i>, Reason> {
        let (ix, sl) = (&self.index, &self.slots);
        let tenant = match tenant_fixed {
            true => "",
            false => match opt_string(ix, slots, sl.tenant)? {
                Some(t) if !t.trim().is_empty() => t,
                _ => return Err(Reason::NoTenant { field: format!("field `{}` (tenant.field)", ix.path(sl.tenant)) }),
            },
        };
        let ts = match opt_string(ix, slots, sl.timestamp)? {
            Some(ts) => ts,
            None => opt_string(ix, slots, sl.at_timestamp)?
                .ok_or_else(|| Reason::MissingField { field: "timestamp".into() })?,
        };
        let event_time = parse_timestamp(ts).ok_or_else(|| Reason::BadTimestamp { value: ts.into() })?;
        let alert_id = match slots[sl.id] {
            None => None,
            Some(v) => Some(v.into_string().ok_or(Reason::WrongType { field: "id".into(), expected: "string" })?),
        };
        let rule_id = uint_field(ix, slots, sl.rule_id, u64::from(u32::MAX), "unsigned integer")? as u32;
        let rule_level = uint_field(ix, slots, sl.rule_level, 16, "integer level 0-16")? as u8;
        Ok(Fields {
            tenant,
            event_time,
            alert_id,
            rule_id,
            rule_level,
            rule_description: opt_string(ix, slots, sl.rule_description)?,
            agent_id: opt_string(ix, slots, sl.agent_id)?,
            agent_name: opt_string(ix, slots, sl.agent_name)?,
            agent_ip: opt_string(ix, slots, sl.agent_ip)?,
            manager: opt_string(ix, slots, sl.manager)?,
            decoder: opt_string(ix, slots, sl.decoder)?,
            location: opt_string(ix, slots, sl.location)?,
            src_ip: first_string(ix, slots, &sl.src_ip)?,
            dst_ip: first_string(ix, slots, &sl.dst_ip)?,
            src_user: first_string(ix, slots, &sl.src_user)?,
            dst_user: first_string(ix, slots, &sl.dst_user)?,
            process: first_string(ix, slots, &sl.process)?,
            file_hash: first_string(ix, slots, &sl.file_hash)?.map(|h| sha256_of(h).to_ascii_lowercase()),
            url: first_string(ix, slots, &sl.url)?,
            win_event_id: lenient_text(slots, sl.win_event_id),
            win_channel: lenient_text(slots, sl.win_channel),
            full_log: opt_string(ix, slots, sl.full_log)?,
        })
    }
}

fn dict_opt(b: &mut StringDictionaryBuilder<Int32Type>, v: Option<&str>) {
    match v {
        Some(s) => {
            b.append_value(s);
        }
        None => b.append_null(),
    }
}

fn list(b: &mut ListBuilder<StringDictionaryBuilder<Int32Type>>, values: Option<TapeArray<'_, '_>>) {
    for v in values.iter().flat_map(|a| a.iter()).filter_map(|e| e.into_string()) {
        b.values().append_value(v);
    }
    b.append(true);
}

#[allow(clippy::too_many_arguments)]
fn append(
    b: &mut Builders,
    tenant: &str,
    f: &Fields<'_>,
    groups: Option<TapeArray<'_, '_>>,
    tactics: Option<TapeArray<'_, '_>>,
    techniques: Option<TapeArray<'_, '_>>,
    extras: &[Option<&str>],
    record: &[u8],
    ingest_us: i64,
) {
    b.tenant.append_value(tenant);
    b.event_time.append_value(f.event_time);
    b.ingest_time.append_value(ingest_us);
    match f.alert_id {
        Some(id) => b.alert_id.append_value(id),
        // Keep the column non-null: an alert without `id` is named by its content hash.
        None => b.alert_id.append_value(format!("sluice-{:016x}", stable_hash(record))),
    }
    b.rule_id.append_value(f.rule_id);
    b.rule_level.append_value(f.rule_level);
    dict_opt(&mut b.rule_description, f.rule_description);
    list(&mut b.rule_groups, groups);
    list(&mut b.mitre_tactics, tactics);
    list(&mut b.mitre_techniques, techniques);
    dict_opt(&mut b.agent_id, f.agent_id);
    dict_opt(&mut b.agent_name, f.agent_name);
    dict_opt(&mut b.agent_ip, f.agent_ip);
    dict_opt(&mut b.manager, f.manager);
    dict_opt(&mut b.decoder, f.decoder);
    dict_opt(&mut b.location, f.location);
    b.src_ip.append_option(f.src_ip);
    b.dst_ip.append_option(f.dst_ip);
    b.src_user.append_option(f.src_user);
    b.dst_user.append_option(f.dst_user);
    b.process.append_option(f.process);
    b.file_hash.append_option(f.file_hash.as_deref());
    b.url.append_option(f.url);
    dict_opt(&mut b.win_event_id, f.win_event_id.as_ref().map(Text::as_str));
    dict_opt(&mut b.win_channel, f.win_channel.as_ref().map(Text::as_str));
    b.full_log.append_option(f.full_log);
    b.raw.append_value(record);
    for (builder, v) in b.extra.iter_mut().zip(extras) {
        builder.append_option(*v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{AlertColumns, col, opt_str};
    use arrow::array::{Array, AsArray};

    const SAMPLE: &str = include_str!("../../tests/data/wazuh-sample-alert-5712.ndjson");
    const MALFORMED: &str = include_str!("../../tests/data/wazuh-sample-malformed.txt");

    fn decode(lines: &str, tenant: TenantConfig) -> Decoded {
        decode_bytes(lines.as_bytes(), tenant)
    }

    fn decode_bytes(lines: &[u8], tenant: TenantConfig) -> Decoded {
        let mut d = Decoder::new(DecodeConfig::default(), &tenant).unwrap();
        d.decode(&RawChunk::from_lines("test", lines.to_vec(), 100, 7)).unwrap()
    }

    #[test]
    fn real_sample_alert_decodes_with_every_field_right() {
        let out = decode(SAMPLE, TenantConfig::default());
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        let batch = out.batch.unwrap();
        assert_eq!(batch.num_rows(), 1);
        let c = AlertColumns::new(&batch).unwrap();
        assert_eq!(c.tenant(0), "localhost.localdomain");
        assert_eq!(c.event_time.value(0), 1_652_272_159_905);
        assert_eq!(c.ingest_time.value(0), 7);
        assert_eq!(c.alert_id.value(0), "1652272159.1549653");
        assert_eq!(c.rule_id.value(0), 5712);
        assert_eq!(c.rule_level.value(0), 10);
        assert_eq!(
            c.rule_description(0),
            Some("sshd: brute force trying to get access to the system. Non existent user.")
        );
        assert_eq!(c.tactics(0).collect::<Vec<_>>(), ["Credential Access"]);
        assert_eq!(c.agent_id(0), Some("000"));
        assert_eq!(c.agent_name(0), Some("localhost.localdomain"));
        assert_eq!(opt_str(c.src_ip, 0), Some("172.17.1.1"));
        assert_eq!(opt_str(c.src_user, 0), Some("paco"));
        assert_eq!(opt_str(c.dst_user, 0), None);
        assert_eq!(opt_str(c.process, 0), Some("sshd"));
        assert_eq!(
            opt_str(c.full_log, 0),
            Some("May 11 12:29:18 localhost sshd[17584]: Invalid user paco from 172.17.1.1 port 56404")
        );
        assert_eq!(c.raw.value(0), SAMPLE.trim_end().as_bytes());
        let groups = batch.column_by_name(col::RULE_GROUPS).unwrap().as_list::<i32>().value(0);
        let groups = arrow::compute::cast(&groups, &arrow::datatypes::DataType::Utf8).unwrap();
        let groups: Vec<_> = groups.as_string::<i32>().iter().flatten().collect();
        assert_eq!(groups, ["syslog", "sshd", "authentication_failures"]);
        let techniques = batch.column_by_name(col::MITRE_TECHNIQUES).unwrap().as_list::<i32>().value(0);
        assert_eq!(techniques.len(), 1);
        for name in [col::DECODER, col::LOCATION, col::MANAGER] {
            assert!(!batch.column_by_name(name).unwrap().is_null(0), "{name}");
        }
    }

    #[test]
    fn malformed_sample_is_dead_lettered_with_offset_and_the_rest_goes_on() {
        let input = format!("{}\n{}{}", SAMPLE.trim_end(), MALFORMED.trim_end(), "\n");
        let out = decode(&input, TenantConfig::default());
        assert_eq!(out.batch.as_ref().map(|b| b.num_rows()), Some(1));
        assert_eq!(out.dead_letters.len(), 1);
        let dl = &out.dead_letters[0];
        assert_eq!(dl.reason.code(), "not_json");
        assert_eq!(dl.offset, 100 + SAMPLE.trim_end().len() as u64 + 1);
        assert_eq!(dl.record, MALFORMED.trim_end().as_bytes());
        assert!(dl.reason.to_string().starts_with("not JSON"), "{}", dl.reason);
    }

    #[test]
    fn every_kind_of_bad_record_has_its_reason() {
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"not json at all".to_vec(), "not_json"),
            (b"[1,2,3]".to_vec(), "not_object"),
            (br#"{"rule":{"id":"1","level":3},"manager":{"name":"a"}}"#.to_vec(), "missing_field"),
            (br#"{"timestamp":"soon","rule":{"id":"1","level":3},"manager":{"name":"a"}}"#.to_vec(), "bad_timestamp"),
            (br#"{"timestamp":"2022-05-11T12:29:19.905+0000","rule":{"id":"1","level":"high"},"manager":{"name":"a"}}"#.to_vec(), "wrong_type"),
            (br#"{"timestamp":"2022-05-11T12:29:19.905+0000","rule":{"id":"1","level":3,"groups":"x"},"manager":{"name":"a"}}"#.to_vec(), "wrong_type"),
            (br#"{"timestamp":"2022-05-11T12:29:19.905+0000","rule":{"id":"1","level":3}}"#.to_vec(), "no_tenant"),
            (b"{\"timestamp\":\"\xff\xfe\"}".to_vec(), "invalid_utf8"),
            (deep.into_bytes(), "too_deep"),
        ];
        for (record, code) in cases {
            let out = decode_bytes(&record, TenantConfig::default());
            assert!(out.batch.is_none(), "{code}");
            assert_eq!(out.dead_letters.len(), 1, "{code}");
            assert_eq!(out.dead_letters[0].reason.code(), code, "{}", out.dead_letters[0].reason);
        }
        let mut small =
            Decoder::new(DecodeConfig { max_record_bytes: 10, ..DecodeConfig::default() }, &TenantConfig::default())
                .unwrap();
        let out = small.decode(&RawChunk::from_lines("t", SAMPLE.as_bytes().to_vec(), 0, 0)).unwrap();
        assert_eq!(out.dead_letters[0].reason.code(), "too_large");
    }

    #[test]
    fn tenant_from_configured_field_or_static_value() {
        let line = r#"{"timestamp":"2022-05-11T12:29:19.905+0000","rule":{"id":"5715","level":3},"agent":{"labels":{"tenant":"acme"}},"manager":{"name":"mgr"}}"#;
        let by_label = decode(line, TenantConfig { field: "agent.labels.tenant".into(), static_tenant: None });
        assert_eq!(AlertColumns::new(by_label.batch.as_ref().unwrap()).unwrap().tenant(0), "acme");
        let fixed = decode(line, TenantConfig { field: "nowhere".into(), static_tenant: Some("solo".into()) });
        assert_eq!(AlertColumns::new(fixed.batch.as_ref().unwrap()).unwrap().tenant(0), "solo");
        let missing = decode(line, TenantConfig { field: "agent.labels.customer".into(), static_tenant: None });
        assert_eq!(missing.dead_letters[0].reason.code(), "no_tenant");
    }

    #[test]
    fn extra_fields_become_columns_and_sysmon_hashes_yield_sha256() {
        let line = r#"{"timestamp":"2022-05-11T12:29:19.905+0000","rule":{"id":"92213","level":15},"manager":{"name":"m"},"data":{"win":{"eventdata":{"hashes":"SHA1=AA,MD5=BB,SHA256=CC11,IMPHASH=DD","targetUserName":"bob"}}}}"#;
        let mut fields = BTreeMap::new();
        fields.insert("data.win.eventdata.targetUserName".to_string(), "target_user".to_string());
        let mut d = Decoder::new(DecodeConfig { fields, ..DecodeConfig::default() }, &TenantConfig::default()).unwrap();
        let batch = d.decode(&RawChunk::from_lines("t", line.as_bytes().to_vec(), 0, 0)).unwrap().batch.unwrap();
        let c = AlertColumns::new(&batch).unwrap();
        assert_eq!(opt_str(c.file_hash, 0), Some("cc11"));
        assert_eq!(batch.column_by_name("target_user").unwrap().as_string::<i32>().value(0), "bob");
        assert_eq!(d.stats(), DecodeStats { read: 1, decoded: 1, dead_lettered: 0 });
    }

    #[test]
    fn the_windows_event_id_and_channel_are_columns_and_never_refuse_an_alert() {
        let line = |system: &str| {
            format!(
                r#"{{"timestamp":"2022-05-11T12:29:19.905+0000","rule":{{"id":"60122","level":5}},"manager":{{"name":"m"}},"data":{{"win":{{"system":{system}}}}}}}"#
            )
        };
        let input = [
            line(r#"{"eventID":"4625","channel":"Security"}"#),
            line(r#"{"eventID":7045,"channel":"System"}"#),
            line(r#"{"eventID":{"odd":1},"channel":null}"#),
            line(r#"{"computer":"dc-01"}"#),
            line(r#"{"eventID":4625.5,"channel":true}"#),
            line(r#"{"eventID":-1,"channel":""}"#),
        ]
        .join("\n");
        let out = decode(&input, TenantConfig::default());
        assert!(out.dead_letters.is_empty(), "{:?}", out.dead_letters);
        let batch = out.batch.unwrap();
        let text = |name: &str| -> Vec<Option<String>> {
            let column =
                arrow::compute::cast(batch.column_by_name(name).unwrap(), &arrow::datatypes::DataType::Utf8).unwrap();
            column.as_string::<i32>().iter().map(|v| v.map(str::to_string)).collect()
        };
        let some = |s: &str| Some(s.to_string());
        assert_eq!(text(col::WIN_EVENT_ID), [some("4625"), some("7045"), None, None, None, some("-1")]);
        assert_eq!(text(col::WIN_CHANNEL), [some("Security"), some("System"), None, None, None, some("")]);
    }

    #[test]
    fn a_tenants_own_fields_are_its_alone() {
        let line = |tenant: &str| {
            format!(
                r#"{{"timestamp":"2022-05-11T12:29:19.905+0000","rule":{{"id":"1","level":3}},"manager":{{"name":"{tenant}"}},"data":{{"srcport":"22","win":{{"eventdata":{{"targetUserName":"bob"}}}},"custom":{{"user":"alice"}}}}}}"#
            )
        };
        let mut fields = BTreeMap::new();
        fields.insert("data.srcport".to_string(), "src_port".to_string());
        fields.insert("data.win.eventdata.targetUserName".to_string(), "target_user".to_string());
        let mut tenant_fields = BTreeMap::new();
        // acme: its own column, and its own path for a global one.
        tenant_fields.insert(
            "acme".to_string(),
            BTreeMap::from([
                ("data.custom.user".to_string(), "target_user".to_string()),
                ("data.win.eventdata.targetUserName".to_string(), "win_user".to_string()),
            ]),
        );
        let config = DecodeConfig { fields, tenant_fields, ..DecodeConfig::default() };
        assert_eq!(config.extra_columns(), ["src_port", "target_user", "win_user"]);
        let mut d = Decoder::new(config, &TenantConfig::default()).unwrap();
        let text = format!("{}\n{}\n", line("acme"), line("globex"));
        let batch = d.decode(&RawChunk::from_lines("t", text.into_bytes(), 0, 0)).unwrap().batch.unwrap();
        let col = |name: &str| {
            let c = batch.column_by_name(name).unwrap().as_string::<i32>().clone();
            (0..2).map(|i| c.is_valid(i).then(|| c.value(i).to_string())).collect::<Vec<_>>()
        };
        assert_eq!(col("src_port"), [Some("22".into()), Some("22".into())], "global: everyone");
        assert_eq!(col("target_user"), [Some("alice".into()), Some("bob".into())], "acme's own path");
        assert_eq!(col("win_user"), [Some("bob".into()), None], "acme's alone");
    }

    #[test]
    fn a_tenants_fields_are_checked_like_the_global_ones() {
        let mut tenant_fields = BTreeMap::new();
        tenant_fields.insert(
            "acme".to_string(),
            BTreeMap::from([
                ("data..x".to_string(), "x".to_string()),
                ("data.y".to_string(), "rule_id".to_string()),
                ("data.a".to_string(), "twice".to_string()),
                ("data.b".to_string(), "twice".to_string()),
            ]),
        );
        let errors = DecodeConfig { tenant_fields, ..DecodeConfig::default() }.validate();
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().all(|e| e.starts_with("policy.tenants.acme.fields")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("\"data..x\" is not a dotted JSON path")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("\"rule_id\" is already a built-in column")), "{errors:?}");
        assert!(errors.iter().any(|e| e.contains("\"twice\" is used twice")), "{errors:?}");
    }

    #[test]
    fn config_errors_are_all_reported() {
        let mut fields = BTreeMap::new();
        fields.insert("data..x".to_string(), "rule_id".to_string());
        let errors = DecodeConfig { max_record_bytes: 0, fields, ..DecodeConfig::default() }.validate();
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
