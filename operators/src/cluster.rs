//! The cluster: the unit Sluice hands off.
//!
//! A cluster is one tenant's set of alerts linked by shared entities within
//! time windows. [`ClusterReport`] is its serializable snapshot, the content
//! of every escalation, update and close that leaves the correlate operator.

use crate::redact::Redaction;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::detection::DetectionReport;
use crate::score::ScoreLine;

/// Kinds of entity that link alerts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntityKind {
    Host,
    User,
    Ip,
    Process,
    Hash,
    Url,
}

impl EntityKind {
    pub const ALL: [EntityKind; 6] =
        [EntityKind::Host, EntityKind::User, EntityKind::Ip, EntityKind::Process, EntityKind::Hash, EntityKind::Url];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Host => "host",
            EntityKind::User => "user",
            EntityKind::Ip => "ip",
            EntityKind::Process => "process",
            EntityKind::Hash => "hash",
            EntityKind::Url => "url",
        }
    }
}

impl fmt::Display for EntityKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The hand-off decision for a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Escalate,
    Review,
    Suppress,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Decision::Escalate => "escalate",
            Decision::Review => "review",
            Decision::Suppress => "suppress",
        })
    }
}

/// A rule seen in a cluster, with how many alerts it raised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct RuleCount {
    pub rule_id: u32,
    pub level: u8,
    pub description: String,
    pub count: u64,
}

/// One distinct alert standing for its repeats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Representative {
    pub alert_id: String,
    pub event_time: String,
    pub rule_id: u32,
    pub level: u8,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// This alert plus its duplicates.
    pub count: u64,
}

/// The raw log line of a representative alert (cut to a bounded length).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Excerpt {
    pub alert_id: String,
    pub level: u8,
    pub full_log: String,
}

/// How a case file was fitted to its token budget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct CaseBudget {
    /// `handoff.max_case_tokens`.
    pub max_tokens: u64,
    /// Estimated tokens of the case file as sent (bytes / 4, rounded up).
    pub estimated_tokens: u64,
    /// Raw excerpts cut to fit, lowest level first.
    pub excerpts_cut: u64,
    /// Representative alerts cut to fit, after every excerpt.
    pub representatives_cut: u64,
}

/// The alert whose arrival produced a report, for triage latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Trigger {
    pub alert_id: String,
    /// When Sluice read that alert, µs since the epoch (wall clock).
    /// Absent from handed-off case files, whose bytes must not depend on
    /// when a report was made (a replay sends the same bytes).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingest_time_us: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// A cluster as reported to sinks: a case file.
///
/// Fields are in the order they are written: what never changes for a
/// cluster first (prompt-cache friendly), then the summary, then the
/// representative alerts, then raw excerpts, and what changes with every
/// version last. The whole file fits `handoff.max_case_tokens`: excerpts are
/// cut first, then representatives; the summary never.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterReport {
    pub tenant: String,
    /// Deterministic hash of tenant and first alert, hex.
    pub cluster_id: String,
    /// What kind of cluster this is, whatever its values: a hash of its rule
    /// ids, the correlation rules that fired into it and its entity kinds.
    /// Verdict priors match clusters on it.
    pub signature: String,
    pub first_seen: String,
    // ── summary ──
    pub score: f64,
    pub decision: Decision,
    pub reason: String,
    /// Every point of the score, explained.
    pub breakdown: Vec<ScoreLine>,
    pub last_seen: String,
    /// Entities by kind (each list capped; `entities_truncated` says by how many).
    pub entities: BTreeMap<EntityKind, Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub entities_truncated: BTreeMap<EntityKind, u64>,
    /// MITRE ATT&CK tactics in kill-chain order.
    pub tactics: Vec<String>,
    pub max_level: u8,
    /// All alerts, duplicates included.
    pub alerts: u64,
    pub duplicates: u64,
    pub rules: Vec<RuleCount>,
    /// Correlation rules that fired into the cluster.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub detections: Vec<DetectionReport>,
    /// Ids of clusters merged into this one.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub merged: Vec<String>,
    // ── evidence ──
    /// Distinct alerts standing for their repeats, oldest first.
    pub representatives: Vec<Representative>,
    /// Raw log lines of representatives, highest level first.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub excerpts: Vec<Excerpt>,
    // ── volatile ──
    /// Grows with every alert and every rule detection the cluster absorbs.
    pub version: u64,
    /// `cluster_id:version`: the receiver processes each key once.
    pub idempotency_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// What secret redaction replaced in the texts taken from alerts (see
    /// [`crate::redact`]).
    #[serde(default)]
    pub redaction: Redaction,
    /// How the case file was fitted to its token budget.
    #[serde(default)]
    pub budget: CaseBudget,
    /// Every member alert id; only when membership tracking is on (eval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
    #[serde(skip)]
    pub first_seen_ms: i64,
    #[serde(skip)]
    pub last_seen_ms: i64,
}

impl ClusterReport {
    /// Redacts secrets from every text the report took from alerts: entity
    /// values, representative alerts, rule descriptions and detections.
    pub fn redact_secrets(&mut self) {
        let mut r = Redaction::new();
        for values in self.entities.values_mut() {
            values.iter_mut().for_each(|v| r.apply(v));
        }
        for rep in &mut self.representatives {
            r.apply(&mut rep.description);
            for text in [&mut rep.user, &mut rep.agent].into_iter().flatten() {
                r.apply(text);
            }
        }
        for e in &mut self.excerpts {
            r.apply(&mut e.full_log);
        }
        for rule in &mut self.rules {
            r.apply(&mut rule.description);
        }
        for d in &mut self.detections {
            d.entities.iter_mut().for_each(|(_, v)| r.apply(v));
            if let Some(s) = &mut d.summary {
                r.apply(s);
            }
        }
        self.redaction = r;
    }

    /// Estimated tokens of the serialized case file: bytes / 4, rounded up
    /// (a common estimate for English and JSON with BPE tokenizers).
    ///
    /// Counted on the text as sent: `<`, `>` and `&` are written as
    /// `\u003c`…, six bytes each.
    pub fn estimated_tokens(&self) -> u64 {
        let text = serde_json::to_string(self).unwrap_or_default();
        let escaped = text.bytes().filter(|b| matches!(b, b'<' | b'>' | b'&')).count() as u64;
        (text.len() as u64 + 5 * escaped).div_ceil(4)
    }

    /// Cuts evidence until the case file fits `max_tokens`: raw excerpts
    /// first (lowest level first), then representatives (lowest level, then
    /// newest, first). The summary is never cut, so a cluster whose summary
    /// alone is larger goes out over budget, and `budget` says so.
    pub fn fit_to_budget(&mut self, max_tokens: u64) {
        self.budget = CaseBudget { max_tokens, ..CaseBudget::default() };
        let mut estimate = self.estimated_tokens();
        while estimate > max_tokens && self.excerpts.pop().is_some() {
            self.budget.excerpts_cut += 1;
            estimate = self.estimated_tokens();
        }
        while estimate > max_tokens && !self.representatives.is_empty() {
            let weakest = (0..self.representatives.len())
                .min_by_key(|&i| (self.representatives[i].level, std::cmp::Reverse(i)))
                .expect("not empty");
            self.representatives.remove(weakest);
            self.budget.representatives_cut += 1;
            estimate = self.estimated_tokens();
        }
        self.budget.estimated_tokens = estimate;
    }
}

/// Formats a cluster id.
pub fn cluster_id_hex(id: u64) -> String {
    format!("{id:016x}")
}
