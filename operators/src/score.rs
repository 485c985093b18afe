//! Score: an explainable, additive priority for a cluster.
//!
//! Every point has a line in the breakdown naming the factor, the points and
//! why. Scoring is a pure function of the cluster's aggregates and the
//! weights, so the same cluster always gets the same score.

use serde::{Deserialize, Serialize};

use crate::cluster::EntityKind;
use crate::intel::Finding;
use crate::inventory::Criticality;
use crate::mitre;

/// One line of a score breakdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ScoreLine {
    /// Stable factor name, e.g. `max_level`.
    pub factor: String,
    pub points: f64,
    /// Human explanation: what in the cluster earned the points.
    pub detail: String,
}

/// `[score]` weights. Defaults are tuned on the generated scenario (see
/// `sluice eval`) and meant to be adjusted per install.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ScoreConfig {
    /// Points per level of the highest Wazuh rule level in the cluster.
    pub level_weight: f64,
    /// Points per distinct ATT&CK tactic beyond the first …
    pub tactic_weight: f64,
    /// … counting only tactics of alerts at or above this level.
    pub tactic_min_level: u8,
    /// Points per step of forward kill-chain progression beyond the first two.
    pub kill_chain_weight: f64,
    /// Points per distinct rule at or above `diversity_min_level`, beyond the first.
    pub diversity_weight: f64,
    pub diversity_min_level: u8,
    pub diversity_cap: f64,
    /// Points per doubling of distinct (non-duplicate) alerts, capped.
    pub volume_weight: f64,
    pub volume_cap: f64,
    /// An everyday rule (common in the tenant, routine on its host or
    /// background there) counts at this fraction of its level.
    pub common_level_factor: f64,
    /// Points per host beyond the first (one entity reaching several hosts:
    /// lateral movement, spreading malware), capped.
    pub spread_weight: f64,
    pub spread_cap: f64,
    /// Points per distinct rule raised by one actor (source ip or user)
    /// beyond `actor_min_rules`, capped: one actor doing many different
    /// things to one target is how an intrusion looks. Actors seen on many
    /// hosts (scanners, service accounts) are not counted.
    pub actor_weight: f64,
    pub actor_min_rules: usize,
    /// An actor's rules count only at or above this level: a user's own
    /// logons and logoffs on their workstation say nothing.
    pub actor_min_level: u8,
    pub actor_cap: f64,
    /// Points per severity point (0–100) of a correlation rule that fired
    /// into the cluster; each rule counts once, at its highest severity.
    pub detection_weight: f64,
    /// Cap on the points of all correlation rules together.
    pub detection_cap: f64,
    /// Points taken off a cluster whose signature matches a verdict prior
    /// (a confident false-positive verdict on the same kind of cluster).
    pub prior_penalty: f64,
    /// Points per distinct IOC hit among the cluster's entities (threat
    /// intel, see [`crate::intel`]), capped; the line is `threat_intel`.
    pub threat_intel_points: f64,
    pub threat_intel_cap: f64,
    /// Points for the most critical inventory host in the cluster, by its
    /// criticality. The line is `critical_asset` for `critical` (a floor
    /// factor by default) and `asset_criticality` for the other levels.
    pub criticality_points: CriticalityPoints,
    /// Points when a privileged user of the inventory is in the cluster.
    pub privileged_user_points: f64,
    /// Points taken off when a known scanner or service account of the
    /// inventory is in the cluster (0: named in the breakdown, no points).
    /// They never lower a cluster over the safety floor. Either way such an
    /// actor is not counted by `actor_breadth`.
    pub known_scanner_penalty: f64,
    pub service_account_penalty: f64,
    /// Score factors that put a cluster over the safety floor: a prior never
    /// lowers it and a budget never holds it back.
    pub floor_factors: Vec<String>,
}

/// `[score.criticality_points]`: points by host criticality.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CriticalityPoints {
    pub low: f64,
    pub medium: f64,
    pub high: f64,
    pub critical: f64,
}

impl Default for CriticalityPoints {
    fn default() -> Self {
        Self { low: 0.0, medium: 5.0, high: 15.0, critical: 30.0 }
    }
}

impl CriticalityPoints {
    pub fn get(&self, c: Criticality) -> f64 {
        match c {
            Criticality::Low => self.low,
            Criticality::Medium => self.medium,
            Criticality::High => self.high,
            Criticality::Critical => self.critical,
        }
    }
}

impl Default for ScoreConfig {
    fn default() -> Self {
        Self {
            level_weight: 3.0,
            tactic_weight: 8.0,
            tactic_min_level: 4,
            kill_chain_weight: 6.0,
            diversity_weight: 5.0,
            diversity_min_level: 6,
            diversity_cap: 20.0,
            volume_weight: 2.0,
            volume_cap: 10.0,
            common_level_factor: 0.5,
            spread_weight: 6.0,
            spread_cap: 18.0,
            actor_weight: 8.0,
            actor_min_rules: 3,
            actor_min_level: 4,
            actor_cap: 24.0,
            detection_weight: 0.5,
            detection_cap: 60.0,
            prior_penalty: 40.0,
            threat_intel_points: 50.0,
            threat_intel_cap: 100.0,
            criticality_points: CriticalityPoints::default(),
            privileged_user_points: 15.0,
            known_scanner_penalty: 0.0,
            service_account_penalty: 0.0,
            floor_factors: vec!["threat_intel".into(), "critical_asset".into()],
        }
    }
}

impl ScoreConfig {
    /// Whether a score factor puts a cluster over the safety floor.
    pub fn is_floor_factor(&self, factor: &str) -> bool {
        self.floor_factors.iter().any(|f| f == factor)
    }

    /// Whether a breakdown has a line over the safety floor.
    pub fn over_floor(&self, breakdown: &[ScoreLine]) -> bool {
        breakdown.iter().any(|l| l.points > 0.0 && self.is_floor_factor(&l.factor))
    }

    /// The first line of a breakdown that is over the safety floor, if any.
    pub fn floor_line<'a>(&self, breakdown: &'a [ScoreLine]) -> Option<&'a ScoreLine> {
        breakdown.iter().find(|l| l.points > 0.0 && self.is_floor_factor(&l.factor))
    }

    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for (name, v) in [
            ("level_weight", self.level_weight),
            ("tactic_weight", self.tactic_weight),
            ("kill_chain_weight", self.kill_chain_weight),
            ("diversity_weight", self.diversity_weight),
            ("diversity_cap", self.diversity_cap),
            ("volume_weight", self.volume_weight),
            ("volume_cap", self.volume_cap),
            ("common_level_factor", self.common_level_factor),
            ("spread_weight", self.spread_weight),
            ("spread_cap", self.spread_cap),
            ("actor_weight", self.actor_weight),
            ("actor_cap", self.actor_cap),
            ("detection_weight", self.detection_weight),
            ("detection_cap", self.detection_cap),
            ("prior_penalty", self.prior_penalty),
            ("threat_intel_points", self.threat_intel_points),
            ("threat_intel_cap", self.threat_intel_cap),
            ("criticality_points.low", self.criticality_points.low),
            ("criticality_points.medium", self.criticality_points.medium),
            ("criticality_points.high", self.criticality_points.high),
            ("criticality_points.critical", self.criticality_points.critical),
            ("privileged_user_points", self.privileged_user_points),
            ("known_scanner_penalty", self.known_scanner_penalty),
            ("service_account_penalty", self.service_account_penalty),
        ] {
            if !v.is_finite() || v < 0.0 {
                errors.push(format!("score.{name} = {v} must be a finite number >= 0"));
            }
        }
        for (name, v) in
            [("tactic_min_level", self.tactic_min_level), ("diversity_min_level", self.diversity_min_level)]
        {
            if v > 16 {
                errors.push(format!("score.{name} = {v} is above the highest Wazuh level 16"));
            }
        }
        errors
    }
}

/// A rule, as the scorer names it.
#[derive(Debug, Clone, Copy)]
pub struct RuleRef<'a> {
    pub level: u8,
    pub rule_id: u32,
    pub description: &'a str,
}

/// What the scorer reads from a cluster.
#[derive(Debug)]
pub struct ScoreInput<'a> {
    /// The highest-level rule that is not everyday (see `common_level_factor`).
    pub top_rule: Option<RuleRef<'a>>,
    /// The highest-level everyday rule.
    pub top_common_rule: Option<RuleRef<'a>>,
    /// Tactics of uncommon alerts at or above `tactic_min_level`, in order of first appearance.
    pub signal_tactics: &'a [&'a str],
    /// Distinct uncommon rules at or above `diversity_min_level`.
    pub strong_rules: usize,
    pub unique_alerts: u64,
    /// Distinct hosts in the cluster.
    pub hosts: usize,
    /// The source ip or user behind the most distinct rules, and how many.
    pub actor: Option<(&'a str, usize)>,
    /// Correlation rules that fired into the cluster: name, highest
    /// severity, windows fired.
    pub detections: &'a [(&'a str, u8, u64)],
    /// The verdict prior matching the cluster's signature, described.
    pub prior: Option<&'a str>,
    /// Points the prior takes off instead of `prior_penalty`: the part of
    /// the score that actors it judged brought (see `correlate`).
    pub prior_points: Option<f64>,
    /// What threat intel and the inventory know about the cluster's
    /// entities: entity kind, value, finding.
    pub intel: &'a [(EntityKind, &'a str, &'a Finding)],
}

/// At most this many entities are named in one breakdown line.
const NAMED: usize = 5;

/// `items` joined with `; `, the first [`NAMED`] of them and how many more.
fn named(items: impl ExactSizeIterator<Item = String>) -> String {
    let n = items.len();
    let mut out: Vec<String> = items.take(NAMED).collect();
    if n > NAMED {
        out.push(format!("and {} more", n - NAMED));
    }
    out.join("; ")
}

/// A total and its breakdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Score {
    pub total: f64,
    pub lines: Vec<ScoreLine>,
}

/// An IOC as the scorer names it: kind, value, source.
type IocHit<'a> = (&'a str, &'a str, &'a str);

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl ScoreConfig {
    /// Scores a cluster with its explanation. Zero-point factors get no line.
    pub fn score(&self, c: &ScoreInput<'_>) -> Score {
        self.compute(c, true).0
    }

    /// The total only, without building the explanation (the per-alert path).
    pub fn total(&self, c: &ScoreInput<'_>) -> f64 {
        self.compute(c, false).0.total
    }

    /// The total, and whether a prior or an inventory penalty would have
    /// lowered it but the cluster is over the safety floor (only known when
    /// `c.prior` or a known scanner or service account is there).
    pub fn total_and_floor(&self, c: &ScoreInput<'_>) -> (f64, bool) {
        let (score, floor) = self.compute(c, false);
        (score.total, floor)
    }

    fn compute(&self, c: &ScoreInput<'_>, explain: bool) -> (Score, bool) {
        let mut lines = Vec::new();
        let mut total = 0.0;
        let mut floor = false;
        let known = |f: fn(&Finding) -> bool| -> Vec<(EntityKind, &str, &Finding)> {
            c.intel.iter().filter(|(_, _, x)| f(x)).copied().collect()
        };
        let scanners = known(|f| matches!(f, Finding::KnownScanner { .. }));
        let service = known(|f| matches!(f, Finding::ServiceAccount { .. }));
        // Only a prior or a penalty needs to know (kept off the per-alert path).
        let lowers = c.prior.is_some() || !scanners.is_empty() || !service.is_empty();
        let mut push = |factor: &str, points: f64, detail: &dyn Fn() -> String| {
            let points = round2(points);
            if points > 0.0 {
                total += points;
                floor |= lowers && self.is_floor_factor(factor);
                if explain {
                    lines.push(ScoreLine { factor: factor.to_string(), points, detail: detail() });
                }
            }
        };
        let uncommon = c.top_rule.map(|r| (self.level_weight * f64::from(r.level), r));
        let common = c.top_common_rule.map(|r| (self.level_weight * f64::from(r.level) * self.common_level_factor, r));
        match (uncommon, common) {
            (Some((p, r)), c2) if c2.is_none_or(|(q, _)| p >= q) => push("max_level", p, &|| {
                format!(
                    "highest rule level {} (rule {}: {}) × {}",
                    r.level, r.rule_id, r.description, self.level_weight
                )
            }),
            (_, Some((q, r))) => push("max_level", q, &|| {
                format!(
                    "highest rule level {} (rule {}: {}) × {}, × {} because the rule is everyday here (common in the tenant, routine on its host or raised there by many sources)",
                    r.level, r.rule_id, r.description, self.level_weight, self.common_level_factor
                )
            }),
            _ => {}
        }
        let tactics = c.signal_tactics.len();
        if tactics > 1 {
            push("tactic_breadth", self.tactic_weight * (tactics - 1) as f64, &|| {
                format!(
                    "{tactics} ATT&CK tactics ({}) × {} beyond the first",
                    c.signal_tactics.join(", "),
                    self.tactic_weight
                )
            });
        }
        let progression = mitre::progression(c.signal_tactics);
        if progression > 2 {
            push("kill_chain", self.kill_chain_weight * (progression - 2) as f64, &|| {
                format!(
                    "tactics advance {progression} steps along the kill chain × {} beyond two",
                    self.kill_chain_weight
                )
            });
        }
        if c.strong_rules > 1 {
            let raw = self.diversity_weight * (c.strong_rules - 1) as f64;
            push("rule_diversity", raw.min(self.diversity_cap), &|| {
                format!(
                    "{} distinct rules at level ≥ {} × {} beyond the first (cap {})",
                    c.strong_rules, self.diversity_min_level, self.diversity_weight, self.diversity_cap
                )
            });
        }
        if c.unique_alerts > 1 {
            let raw = self.volume_weight * (c.unique_alerts as f64).log2();
            push("volume", raw.min(self.volume_cap), &|| {
                format!("{} distinct alerts: {} × log2 (cap {})", c.unique_alerts, self.volume_weight, self.volume_cap)
            });
        }
        if c.hosts > 1 {
            let raw = self.spread_weight * (c.hosts - 1) as f64;
            push("spread", raw.min(self.spread_cap), &|| {
                format!("{} hosts × {} beyond the first (cap {})", c.hosts, self.spread_weight, self.spread_cap)
            });
        }
        if let Some((who, n)) = c.actor.filter(|(_, n)| *n > self.actor_min_rules) {
            let raw = self.actor_weight * (n - self.actor_min_rules) as f64;
            push("actor_breadth", raw.min(self.actor_cap), &|| {
                format!(
                    "{who} raised {n} distinct rules × {} beyond {} (cap {})",
                    self.actor_weight, self.actor_min_rules, self.actor_cap
                )
            });
        }
        let mut rule_points = 0.0;
        for &(rule, severity, count) in c.detections {
            let left = (self.detection_cap - rule_points).max(0.0);
            let points = (self.detection_weight * f64::from(severity)).min(left);
            rule_points += points;
            push("correlation_rule", points, &|| {
                let times = if count > 1 { format!(", fired in {count} windows") } else { String::new() };
                format!(
                    "rule {rule} (severity {severity}{times}) × {} (all rules capped at {})",
                    self.detection_weight, self.detection_cap
                )
            });
        }
        let iocs: Vec<(EntityKind, &str, IocHit<'_>)> = c
            .intel
            .iter()
            .filter_map(|&(k, v, f)| match f {
                Finding::Ioc { kind, ioc, source } => Some((k, v, (kind.as_str(), ioc.as_str(), source.as_str()))),
                _ => None,
            })
            .collect();
        if !iocs.is_empty() {
            let n = iocs.len();
            push("threat_intel", (self.threat_intel_points * n as f64).min(self.threat_intel_cap), &|| {
                let hits = named(iocs.iter().map(|(k, v, (kind, ioc, source))| {
                    if v == ioc || (*kind == k.as_str() && v.eq_ignore_ascii_case(ioc)) {
                        format!("{kind} {ioc} is an IOC ({source})")
                    } else {
                        format!("{k} {v} matches {kind} IOC {ioc} ({source})")
                    }
                }));
                format!("{n} IOC hit(s): {hits}; × {} (cap {})", self.threat_intel_points, self.threat_intel_cap)
            });
        }
        let top_asset = c
            .intel
            .iter()
            .filter_map(|&(k, v, f)| match f {
                Finding::Asset { criticality, source } => Some((*criticality, k, v, source.as_str())),
                _ => None,
            })
            .max_by(|a, b| a.0.cmp(&b.0).then(b.2.cmp(a.2)));
        if let Some((crit, kind, value, source)) = top_asset {
            let factor = if crit == Criticality::Critical { "critical_asset" } else { "asset_criticality" };
            push(factor, self.criticality_points.get(crit), &|| {
                let assets = c.intel.iter().filter(|(_, _, f)| matches!(f, Finding::Asset { .. })).count();
                let others = if assets > 1 {
                    format!(" (the most critical of {assets} inventory hosts)")
                } else {
                    String::new()
                };
                format!("{kind} {value} is {} in the inventory ({source}){others}", crit.as_str())
            });
        }
        let privileged = known(|f| matches!(f, Finding::PrivilegedUser { .. }));
        if !privileged.is_empty() {
            push("privileged_user", self.privileged_user_points, &|| {
                let users = named(privileged.iter().map(|(_, v, f)| match f {
                    Finding::PrivilegedUser { source } => format!("{v} ({source})"),
                    _ => v.to_string(),
                }));
                format!("privileged user(s) in the inventory: {users}")
            });
        }
        for (factor, list, penalty, what) in [
            ("known_scanner", &scanners, self.known_scanner_penalty, "known scanner"),
            ("service_account", &service, self.service_account_penalty, "service account"),
        ] {
            if list.is_empty() {
                continue;
            }
            let who = named(list.iter().map(|(k, v, f)| match f {
                Finding::KnownScanner { source } | Finding::ServiceAccount { source } => format!("{k} {v} ({source})"),
                _ => format!("{k} {v}"),
            }));
            let (points, why) = if penalty == 0.0 {
                (0.0, String::new())
            } else if floor {
                (0.0, "; no points off: the cluster is over the safety floor".to_string())
            } else {
                (round2(-penalty.min(total)), format!("; −{penalty} points"))
            };
            total += points;
            if explain {
                let detail = format!("{what}(s) in the inventory: {who}; not counted as an actor{why}");
                lines.push(ScoreLine { factor: factor.into(), points, detail });
            }
        }
        if let Some(prior) = c.prior {
            let penalty = c.prior_points.unwrap_or(self.prior_penalty);
            let points = if floor { 0.0 } else { round2(-penalty.min(total)) };
            total += points;
            if explain {
                let detail = if floor {
                    format!("{prior}; not applied: the cluster is over the safety floor")
                } else {
                    format!("{prior}: −{} points", round2(penalty))
                };
                lines.push(ScoreLine { factor: "prior_false_positive".into(), points, detail });
            }
        }
        (Score { total: round2(total), lines }, floor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(level: u8, tactics: &'a [&'a str], strong: usize, alerts: u64) -> ScoreInput<'a> {
        ScoreInput {
            top_rule: Some(RuleRef { level, rule_id: 5712, description: "sshd: brute force" }),
            top_common_rule: None,
            signal_tactics: tactics,
            strong_rules: strong,
            unique_alerts: alerts,
            hosts: 1,
            actor: None,
            detections: &[],
            prior: None,
            prior_points: None,
            intel: &[],
        }
    }

    #[test]
    fn a_prior_lowers_the_score_and_says_why_but_never_below_the_safety_floor() {
        let cfg = ScoreConfig::default();
        let base = cfg.score(&input(12, &["Initial Access", "Execution"], 3, 40));
        let prior = "judged false_positive (confidence 0.95) by llm:m on 2026-11-20, prior #3";
        let lowered =
            cfg.score(&ScoreInput { prior: Some(prior), ..input(12, &["Initial Access", "Execution"], 3, 40) });
        assert_eq!(lowered.total, base.total - 40.0);
        let line = lowered.lines.last().unwrap();
        assert_eq!(line.factor, "prior_false_positive");
        assert_eq!(line.points, -40.0);
        assert!(line.detail.contains("prior #3"), "{}", line.detail);
        assert_eq!(cfg.total(&ScoreInput { prior: Some(prior), ..input(12, &[], 0, 1) }), 0.0, "never below zero");
        // Over the safety floor, the prior is shown but not applied.
        let floor = ScoreConfig { floor_factors: vec!["max_level".into()], ..ScoreConfig::default() };
        let kept = floor.score(&ScoreInput { prior: Some(prior), ..input(12, &[], 0, 1) });
        assert_eq!(kept.total, floor.score(&input(12, &[], 0, 1)).total);
        assert!(kept.lines.last().unwrap().detail.contains("safety floor"));
        // A prior that knows what its judged actors brought takes just that.
        let exact = cfg.score(&ScoreInput {
            prior: Some(prior),
            prior_points: Some(12.5),
            ..input(12, &["Initial Access", "Execution"], 3, 40)
        });
        assert_eq!(exact.total, base.total - 12.5);
        assert!(exact.lines.last().unwrap().detail.ends_with("−12.5 points"));
    }

    #[test]
    fn common_rules_count_at_a_discount_and_say_so() {
        let cfg = ScoreConfig::default();
        let mut i = input(4, &[], 0, 1);
        i.top_common_rule = Some(RuleRef { level: 15, rule_id: 92213, description: "dropped exe" });
        let s = cfg.score(&i);
        assert_eq!(s.lines[0].points, 22.5);
        assert!(s.lines[0].detail.contains("everyday here"), "{}", s.lines[0].detail);
        i.top_rule = Some(RuleRef { level: 12, rule_id: 87105, description: "VirusTotal" });
        assert_eq!(cfg.score(&i).lines[0].points, 36.0);
    }

    #[test]
    fn breakdown_adds_up_to_total() {
        let cfg = ScoreConfig::default();
        let tactics = ["Credential Access", "Privilege Escalation", "Persistence"];
        let s = cfg.score(&input(10, &tactics, 4, 64));
        let sum: f64 = s.lines.iter().map(|l| l.points).sum();
        assert!((sum - s.total).abs() < 1e-9);
        assert_eq!(cfg.total(&input(10, &tactics, 4, 64)), s.total);
        assert!(s.lines.iter().all(|l| l.points > 0.0 && !l.detail.is_empty()));
        let factors: Vec<&str> = s.lines.iter().map(|l| l.factor.as_str()).collect();
        assert_eq!(factors, ["max_level", "tactic_breadth", "rule_diversity", "volume"]);
    }

    #[test]
    fn more_evidence_never_lowers_the_score() {
        let cfg = ScoreConfig::default();
        let one = cfg.score(&input(7, &["Initial Access"], 1, 3)).total;
        let two = cfg.score(&input(7, &["Initial Access", "Execution"], 2, 4)).total;
        let three = cfg.score(&input(12, &["Initial Access", "Execution", "Persistence"], 3, 9)).total;
        assert!(one < two && two < three, "{one} {two} {three}");
    }

    #[test]
    fn correlation_rules_count_once_each_and_are_capped_together() {
        let cfg = ScoreConfig::default();
        let base = cfg.total(&input(5, &[], 0, 1));
        let one = [("brute-force-then-login", 80u8, 3u64)];
        let with_one = cfg.score(&ScoreInput { detections: &one, ..input(5, &[], 0, 1) });
        assert_eq!(with_one.total, base + 40.0);
        let line = with_one.lines.iter().find(|l| l.factor == "correlation_rule").expect("a line for the rule");
        assert!(line.detail.contains("brute-force-then-login") && line.detail.contains("3 windows"), "{}", line.detail);
        let three = [("a", 100u8, 1u64), ("b", 100, 1), ("c", 100, 1)];
        let capped = cfg.score(&ScoreInput { detections: &three, ..input(5, &[], 0, 1) });
        assert_eq!(capped.total, base + cfg.detection_cap);
        let sum: f64 = capped.lines.iter().map(|l| l.points).sum();
        assert!((sum - capped.total).abs() < 1e-9, "the breakdown adds up");
    }

    #[test]
    fn volume_is_capped() {
        let cfg = ScoreConfig::default();
        let s = cfg.score(&input(3, &[], 0, 1 << 40));
        let volume = s.lines.iter().find(|l| l.factor == "volume").unwrap();
        assert_eq!(volume.points, cfg.volume_cap);
    }
}
