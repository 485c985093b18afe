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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub full_log: Option<String>,
    /// This alert plus its duplicates.
    pub count: u64,
}

/// The alert whose arrival produced a report, for triage latency.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Trigger {
    pub alert_id: String,
    /// When Sluice read that alert, µs since the epoch (wall clock).
    pub ingest_time_us: i64,
}

/// A cluster as reported to sinks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterReport {
    /// Deterministic hash of tenant and first alert, hex.
    pub cluster_id: String,
    /// Grows with every alert and every rule detection the cluster absorbs.
    pub version: u64,
    /// `cluster_id:version`: the receiver processes each key once.
    pub idempotency_key: String,
    pub tenant: String,
    pub score: f64,
    pub decision: Decision,
    pub reason: String,
    pub breakdown: Vec<ScoreLine>,
    pub first_seen: String,
    pub last_seen: String,
    /// Entities by kind (each list capped; `entities_truncated` says by how many).
    pub entities: BTreeMap<EntityKind, Vec<String>>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub entities_truncated: BTreeMap<EntityKind, u64>,
    /// MITRE tactics in order of first appearance.
    pub tactics: Vec<String>,
    pub max_level: u8,
    /// All alerts, duplicates included.
    pub alerts: u64,
    pub duplicates: u64,
    pub rules: Vec<RuleCount>,
    /// Correlation rules that fired into the cluster.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub detections: Vec<DetectionReport>,
    pub representatives: Vec<Representative>,
    /// Ids of clusters merged into this one.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub merged: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// What secret redaction replaced in the texts taken from alerts (see
    /// [`crate::redact`]).
    #[serde(default)]
    pub redaction: Redaction,
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
            for text in [&mut rep.user, &mut rep.full_log, &mut rep.agent].into_iter().flatten() {
                r.apply(text);
            }
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
}

/// Formats a cluster id.
pub fn cluster_id_hex(id: u64) -> String {
    format!("{id:016x}")
}
