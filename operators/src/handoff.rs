//! Hand-off decision: which clusters reach the LLM stage, and when.
//!
//! A cluster is escalated the moment its score crosses the threshold (early
//! fire, not at window end). Once handed off, it is sent again only when it
//! gains a tactic or enough score. Everything else is `review` or `suppress`,
//! kept and counted, never silently dropped.

use serde::{Deserialize, Serialize};

use crate::cluster::Decision;
use crate::operator::ReportKind;

/// `[handoff]` settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// Escalate as soon as the score reaches this.
    pub escalate_threshold: f64,
    /// Below escalation but at or above this: `review`; below: `suppress`.
    pub review_threshold: f64,
    /// A handed-off cluster is sent again when its score has grown this much …
    pub update_score_delta: f64,
    /// … or when it gains a new ATT&CK tactic.
    pub update_on_new_tactic: bool,
    /// Most estimated tokens of a case file: raw excerpts are cut first,
    /// then representative alerts; the summary never.
    pub max_case_tokens: u64,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            escalate_threshold: 65.0,
            review_threshold: 40.0,
            update_score_delta: 15.0,
            update_on_new_tactic: true,
            max_case_tokens: 6000,
        }
    }
}

impl HandoffConfig {
    pub fn validate(&self) -> Vec<String> {
        let mut errors = Vec::new();
        if !(self.escalate_threshold.is_finite() && self.review_threshold.is_finite()) {
            errors.push("handoff thresholds must be finite numbers".into());
        } else if self.review_threshold > self.escalate_threshold {
            errors.push(format!(
                "handoff.review_threshold ({}) is above handoff.escalate_threshold ({})",
                self.review_threshold, self.escalate_threshold
            ));
        }
        if self.max_case_tokens < 500 {
            errors.push(format!(
                "handoff.max_case_tokens = {} is too small for a case summary (≥ 500)",
                self.max_case_tokens
            ));
        }
        if !(self.update_score_delta.is_finite() && self.update_score_delta > 0.0) {
            errors.push("handoff.update_score_delta must be > 0".into());
        }
        errors
    }

    /// The decision for a score, and why.
    pub fn decide(&self, score: f64, handed_off: bool) -> (Decision, String) {
        if handed_off || score >= self.escalate_threshold {
            let why = if score >= self.escalate_threshold {
                format!("score {score} ≥ escalate threshold {}", self.escalate_threshold)
            } else {
                format!("escalated earlier; score now {score}")
            };
            (Decision::Escalate, why)
        } else if score >= self.review_threshold {
            (
                Decision::Review,
                format!("score {score} in review band [{}, {})", self.review_threshold, self.escalate_threshold),
            )
        } else {
            (Decision::Suppress, format!("score {score} below review threshold {}", self.review_threshold))
        }
    }

    /// [`HandoffConfig::decide`], except that a cluster with a score line
    /// over the safety floor is never `suppress`ed: it is at least `review`.
    pub fn decide_with_floor(
        &self,
        score: f64,
        handed_off: bool,
        floor: Option<&crate::score::ScoreLine>,
    ) -> (Decision, String) {
        match (self.decide(score, handed_off), floor) {
            ((Decision::Suppress, why), Some(line)) => {
                (Decision::Review, format!("{why}, but never suppressed: {} is over the safety floor", line.factor))
            }
            (decided, _) => decided,
        }
    }

    /// Whether a change to a cluster must be reported now.
    /// `handed` is the (score, tactic count) of the last hand-off, if any.
    pub fn report_for(&self, score: f64, tactics: usize, handed: Option<(f64, usize)>) -> Option<ReportKind> {
        match handed {
            None if score >= self.escalate_threshold => Some(ReportKind::Escalate),
            None => None,
            Some((last_score, last_tactics)) => {
                let new_tactic = self.update_on_new_tactic && tactics > last_tactics;
                let grew = score >= last_score + self.update_score_delta;
                (new_tactic || grew).then_some(ReportKind::Update)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escalates_once_then_updates_on_progress() {
        let h = HandoffConfig { escalate_threshold: 70.0, ..HandoffConfig::default() };
        assert_eq!(h.report_for(69.9, 3, None), None);
        assert_eq!(h.report_for(70.0, 3, None), Some(ReportKind::Escalate));
        assert_eq!(h.report_for(80.0, 3, Some((70.0, 3))), None);
        assert_eq!(h.report_for(71.0, 4, Some((70.0, 3))), Some(ReportKind::Update));
        assert_eq!(h.report_for(85.0, 3, Some((70.0, 3))), Some(ReportKind::Update));
    }

    #[test]
    fn decisions_follow_thresholds() {
        let h = HandoffConfig { escalate_threshold: 70.0, review_threshold: 40.0, ..HandoffConfig::default() };
        assert_eq!(h.decide(10.0, false).0, Decision::Suppress);
        assert_eq!(h.decide(45.0, false).0, Decision::Review);
        assert_eq!(h.decide(75.0, false).0, Decision::Escalate);
        // Once handed off, a cluster stays escalated.
        assert_eq!(h.decide(45.0, true).0, Decision::Escalate);
        assert!(!HandoffConfig { review_threshold: 90.0, ..h }.validate().is_empty());
    }
}
