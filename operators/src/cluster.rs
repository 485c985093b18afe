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
    /// ids, the correlation rules that fired into it and its entity kinds;
    /// for a cluster one broad actor drives (more distinct rules than
    /// `score.actor_min_rules`), of that actor's role and rules and the
    /// correlation rules. Verdict priors match clusters on it.
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
        tokens(sent_bytes(self))
    }

    /// Cuts evidence until the case file fits `max_tokens`: raw excerpts
    /// first (lowest level first), then representatives (lowest level, then
    /// newest, first). The summary is never cut, so a cluster whose summary
    /// alone is larger goes out over budget, and `budget` says so.
    ///
    /// The case file is serialized once; each cut takes its item's bytes
    /// off the total, which comes to exactly what the smaller file
    /// serializes to (with `estimated_tokens` itself still 0).
    pub fn fit_to_budget(&mut self, max_tokens: u64) {
        self.budget = CaseBudget { max_tokens, ..CaseBudget::default() };
        // Bytes of everything but `budget`, which counts the cuts and so is
        // measured again each time (it may grow by a digit).
        let mut rest = sent_bytes(self) - sent_bytes(&self.budget);
        let fits = |rest: u64, budget: &CaseBudget| tokens(rest + sent_bytes(budget)) <= max_tokens;
        while !fits(rest, &self.budget)
            && let Some(excerpt) = self.excerpts.pop()
        {
            self.budget.excerpts_cut += 1;
            rest = match self.excerpts.is_empty() {
                // The empty list is left out of the file altogether.
                true => sent_bytes(self) - sent_bytes(&self.budget),
                // The excerpt and the comma before it.
                false => rest - sent_bytes(&excerpt) - 1,
            };
        }
        while !fits(rest, &self.budget) && !self.representatives.is_empty() {
            let weakest = (0..self.representatives.len())
                .min_by_key(|&i| (self.representatives[i].level, std::cmp::Reverse(i)))
                .expect("not empty");
            let rep = self.representatives.remove(weakest);
            self.budget.representatives_cut += 1;
            // The representative and a comma, unless it was the only one.
            rest -= sent_bytes(&rep) + u64::from(!self.representatives.is_empty());
        }
        self.budget.estimated_tokens = tokens(rest + sent_bytes(&self.budget));
    }
}

/// Bytes of `value` serialized as JSON and sent with `<`, `>` and `&`
/// escaped (six bytes each).
fn sent_bytes(value: &impl Serialize) -> u64 {
    let text = serde_json::to_vec(value).unwrap_or_default();
    let escaped = text.iter().filter(|b| matches!(b, b'<' | b'>' | b'&')).count() as u64;
    text.len() as u64 + 5 * escaped
}

/// Estimated tokens of `bytes` of text: a quarter, rounded up.
fn tokens(bytes: u64) -> u64 {
    bytes.div_ceil(4)
}

/// Formats a cluster id.
pub fn cluster_id_hex(id: u64) -> String {
    format!("{id:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(excerpts: usize, representatives: usize) -> ClusterReport {
        let rep = |i: usize| Representative {
            alert_id: format!("1700000000.{i}"),
            event_time: "2026-11-01T00:00:00.000Z".into(),
            rule_id: 5710,
            level: (i % 12) as u8,
            description: "sshd: Attempt to login using a non-existent user <x> & co".into(),
            agent: Some("web-01".into()),
            src_ip: i.is_multiple_of(2).then(|| format!("203.0.113.{i}")),
            user: None,
            count: i as u64 + 1,
        };
        ClusterReport {
            tenant: "acme".into(),
            cluster_id: cluster_id_hex(7),
            signature: "0123456789abcdef".into(),
            first_seen: "2026-11-01T00:00:00.000Z".into(),
            score: 71.0,
            decision: Decision::Escalate,
            reason: "score 71 ≥ escalate threshold 65".into(),
            breakdown: Vec::new(),
            last_seen: "2026-11-01T01:00:00.000Z".into(),
            entities: BTreeMap::from([(EntityKind::Host, vec!["web-01".to_string()])]),
            entities_truncated: BTreeMap::new(),
            tactics: vec!["Initial Access".into()],
            max_level: 10,
            alerts: 100,
            duplicates: 10,
            rules: Vec::new(),
            detections: Vec::new(),
            merged: Vec::new(),
            representatives: (0..representatives).map(rep).collect(),
            excerpts: (0..excerpts)
                .map(|i| Excerpt {
                    alert_id: format!("1700000000.{i}"),
                    level: (i % 7) as u8,
                    full_log: format!("GET /index.php?id={i}<script>&x=1 HTTP/1.1 400 {}", "x".repeat(i * 3)),
                })
                .collect(),
            version: 110,
            idempotency_key: format!("{}:110", cluster_id_hex(7)),
            trigger: None,
            redaction: Redaction::default(),
            budget: CaseBudget::default(),
            members: None,
            first_seen_ms: 0,
            last_seen_ms: 0,
        }
    }

    #[test]
    fn a_case_is_cut_to_its_budget_excerpts_first_and_its_estimate_is_exact() {
        let full = report(12, 15).estimated_tokens();
        let summary = report(0, 0).estimated_tokens();
        let mut seen_both_cut = false;
        for max in 0..=full + 10 {
            let mut r = report(12, 15);
            r.fit_to_budget(max);
            let b = r.budget.clone();
            // The estimate is the case file's own, as sent.
            let mut again = r.clone();
            again.budget.estimated_tokens = 0;
            assert_eq!(b.estimated_tokens, again.estimated_tokens(), "budget {max}");
            // It fits, unless the summary alone does not.
            assert!(b.estimated_tokens <= max || (r.excerpts.is_empty() && r.representatives.is_empty()), "{max}");
            assert_eq!(
                (b.excerpts_cut as usize, b.representatives_cut as usize),
                (12 - r.excerpts.len(), 15 - r.representatives.len())
            );
            // Excerpts go first; the summary stays whole.
            assert!(b.representatives_cut == 0 || r.excerpts.is_empty(), "{max}: {b:?}");
            assert_eq!((r.score, r.alerts, r.tactics.len()), (71.0, 100, 1));
            // Nothing is cut from a case that fits (counted with this
            // budget's own `max_tokens`, whose digits are part of the file).
            let mut uncut = report(12, 15);
            uncut.budget.max_tokens = max;
            let fits = uncut.estimated_tokens() <= max;
            assert_eq!(fits, (b.excerpts_cut, b.representatives_cut) == (0, 0), "budget {max}");
            if max < summary {
                assert!(r.representatives.is_empty() && b.estimated_tokens > max);
            }
            seen_both_cut |= b.representatives_cut > 0 && !r.representatives.is_empty();
        }
        assert!(seen_both_cut, "some budget cuts a few representatives, not all");
    }
}
