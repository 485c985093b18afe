//! Score: an explainable, additive priority for a cluster.
//!
//! Every point has a line in the breakdown naming the factor, the points and
//! why. Scoring is a pure function of the cluster's aggregates and the
//! weights, so the same cluster always gets the same score.

use serde::{Deserialize, Serialize};

use crate::mitre;

/// One line of a score breakdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
        }
    }
}

impl ScoreConfig {
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
        ] {
            if !v.is_finite() || v < 0.0 {
                errors.push(format!("score.{name} = {v} must be a finite number >= 0"));
            }
        }
        for (name, v) in [("tactic_min_level", self.tactic_min_level), ("diversity_min_level", self.diversity_min_level)] {
            if v > 16 {
                errors.push(format!("score.{name} = {v} is above the highest Wazuh level 16"));
            }
        }
        errors
    }
}

/// What the scorer reads from a cluster.
#[derive(Debug)]
pub struct ScoreInput<'a> {
    pub max_level: u8,
    pub max_level_rule: (u32, &'a str),
    /// Tactics of alerts at or above `tactic_min_level`, in order of first appearance.
    pub signal_tactics: &'a [&'a str],
    /// Distinct rules at or above `diversity_min_level`.
    pub strong_rules: usize,
    pub unique_alerts: u64,
}

/// A total and its breakdown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Score {
    pub total: f64,
    pub lines: Vec<ScoreLine>,
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

impl ScoreConfig {
    /// Scores a cluster. Zero-point factors get no line.
    pub fn score(&self, c: &ScoreInput<'_>) -> Score {
        let mut lines = Vec::new();
        let mut push = |factor: &str, points: f64, detail: String| {
            let points = round2(points);
            if points > 0.0 {
                lines.push(ScoreLine { factor: factor.to_string(), points, detail });
            }
        };
        push(
            "max_level",
            self.level_weight * f64::from(c.max_level),
            format!(
                "highest rule level {} (rule {}: {}) × {}",
                c.max_level, c.max_level_rule.0, c.max_level_rule.1, self.level_weight
            ),
        );
        let tactics = c.signal_tactics.len();
        if tactics > 1 {
            push(
                "tactic_breadth",
                self.tactic_weight * (tactics - 1) as f64,
                format!("{tactics} ATT&CK tactics ({}) × {} beyond the first", c.signal_tactics.join(", "), self.tactic_weight),
            );
        }
        let progression = mitre::progression(c.signal_tactics);
        if progression > 2 {
            push(
                "kill_chain",
                self.kill_chain_weight * (progression - 2) as f64,
                format!("tactics advance {progression} steps along the kill chain × {} beyond two", self.kill_chain_weight),
            );
        }
        if c.strong_rules > 1 {
            let raw = self.diversity_weight * (c.strong_rules - 1) as f64;
            push(
                "rule_diversity",
                raw.min(self.diversity_cap),
                format!(
                    "{} distinct rules at level ≥ {} × {} beyond the first (cap {})",
                    c.strong_rules, self.diversity_min_level, self.diversity_weight, self.diversity_cap
                ),
            );
        }
        if c.unique_alerts > 1 {
            let raw = self.volume_weight * (c.unique_alerts as f64).log2();
            push(
                "volume",
                raw.min(self.volume_cap),
                format!("{} distinct alerts: {} × log2 (cap {})", c.unique_alerts, self.volume_weight, self.volume_cap),
            );
        }
        let total = round2(lines.iter().map(|l| l.points).sum());
        Score { total, lines }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(level: u8, tactics: &'a [&'a str], strong: usize, alerts: u64) -> ScoreInput<'a> {
        ScoreInput {
            max_level: level,
            max_level_rule: (5712, "sshd: brute force"),
            signal_tactics: tactics,
            strong_rules: strong,
            unique_alerts: alerts,
        }
    }

    #[test]
    fn breakdown_adds_up_to_total() {
        let cfg = ScoreConfig::default();
        let tactics = ["Credential Access", "Privilege Escalation", "Persistence"];
        let s = cfg.score(&input(10, &tactics, 4, 64));
        let sum: f64 = s.lines.iter().map(|l| l.points).sum();
        assert!((sum - s.total).abs() < 1e-9);
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
    fn volume_is_capped() {
        let cfg = ScoreConfig::default();
        let s = cfg.score(&input(3, &[], 0, 1 << 40));
        let volume = s.lines.iter().find(|l| l.factor == "volume").unwrap();
        assert_eq!(volume.points, cfg.volume_cap);
    }
}
