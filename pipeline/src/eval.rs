//! Triage quality as numbers: reduction, recall, precision, fragmentation.
//!
//! Input: the labels written by the generator (alert id → campaign and step)
//! and the final state of every escalated cluster, with its member alert ids.
//!
//! * **reduction** = alerts in / escalations handed off,
//! * **campaign recall** = campaigns with an alert in an escalated cluster,
//! * **step recall** = campaign steps with an alert in an escalated cluster,
//! * **precision** = escalated clusters holding at least one campaign alert,
//! * **fragmentation** = escalated clusters per recalled campaign (1 is ideal).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use serde::Serialize;
use sluice_connectors::generator::Label;
use sluice_connectors::source::{Source, StopFlag};
use sluice_operators::cluster::ClusterReport;
use sluice_operators::operator::ReportKind;

use crate::config::Config;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use sluice_operators::correlate::Priors;

use crate::runtime::{Event, PriorsSlot, RunError, RunOptions, Summary, run};

/// An investigation stage that knows the labels: it judges every escalated
/// cluster without a campaign alert a confident false positive, which makes
/// a prior on its signature at once (as the LLM sink's verdicts do). For
/// measuring what priors do to later clusters.
#[derive(Debug, Clone)]
pub struct Oracle {
    /// The labels so far (a generator source adds them as it goes).
    pub labels: Arc<Mutex<Vec<Label>>>,
}

/// Runs the pipeline with membership tracking and scores the result.
/// `labels` is called after the run (a generator source fills them as it goes).
pub fn evaluate_run(
    config: &Config,
    source: Box<dyn Source>,
    labels: impl FnOnce() -> Vec<Label>,
    oracle: Option<Oracle>,
    mut handoffs: Option<&mut dyn std::io::Write>,
) -> Result<(EvalReport, Summary), RunError> {
    // Every closed cluster, not only escalated ones: a missed campaign's
    // alerts are then found wherever they went.
    let mut config = config.clone();
    config.correlate.report_all_closed = true;
    let config = &config;
    let stop = StopFlag::new();
    let slot: Option<PriorsSlot> = oracle.as_ref().map(|_| Arc::new(Mutex::new(None)));
    let options = RunOptions {
        track_members: true,
        progress: Some(std::time::Duration::from_secs(10)),
        priors: slot.clone(),
        ..RunOptions::default()
    };
    let mut finals = Vec::new();
    // (tenant, cluster id) of every cluster handed off: a closed cluster
    // counts as escalated only if it was (its closing decision may say
    // escalate for one that crossed the threshold during the warm-up and
    // never got another alert).
    let mut handed = HandoffSet::new();
    let mut escalations: BTreeMap<String, u64> = BTreeMap::new();
    let mut campaign_alerts: HashSet<String> = HashSet::new();
    let mut seen_labels = 0;
    let mut priors = Priors::default();
    let summary = run(config, source, &options, &stop, |e| {
        match e {
            Event::Report(ReportKind::Close, r) => finals.push(*r),
            Event::Report(kind @ (ReportKind::Escalate | ReportKind::Update), r) => {
                handed.entry(r.tenant.clone()).or_default().insert(r.cluster_id.clone());
                if let Some(w) = handoffs.as_mut() {
                    let line = serde_json::json!({
                        "kind": if kind == ReportKind::Escalate { "escalate" } else { "update" },
                        "tenant": r.tenant,
                        "cluster_id": r.cluster_id,
                        "score": r.score,
                        "signature": r.signature,
                        "last_seen": r.last_seen,
                        "breakdown": r.breakdown,
                    });
                    writeln!(w, "{line}")?;
                }
                if kind == ReportKind::Escalate {
                    *escalations.entry(r.tenant.clone()).or_default() += 1;
                }
                // Every hand-off reaches the investigation stage, updates too.
                if let (Some(oracle), Some(slot)) = (&oracle, &slot) {
                    let labels = oracle.labels.lock().expect("labels lock");
                    campaign_alerts.extend(labels[seen_labels..].iter().map(|l| l.alert_id.clone()));
                    seen_labels = labels.len();
                    let campaign = r.members.iter().flatten().any(|m| campaign_alerts.contains(m));
                    if !campaign && !priors.contains(&r.tenant, &r.signature) {
                        let n: usize = priors.0.values().map(|p| p.len()).sum();
                        priors.insert(
                            &r.tenant,
                            &r.signature,
                            format!("prior #{}: judged false_positive by the oracle", n + 1),
                        );
                        *slot.lock().expect("priors slot") = Some(priors.clone());
                    }
                }
            }
            _ => {}
        }
        Ok(())
    })?;
    let alerts: BTreeMap<String, u64> =
        summary.tenants.iter().map(|(t, m)| (t.clone(), m.get("dedup.records_in").copied().unwrap_or(0))).collect();
    let labels = labels();
    Ok((evaluate(&labels, &finals, &handed, &alerts, &escalations), summary))
}

/// Clusters handed off: tenant → cluster ids.
pub type HandoffSet = BTreeMap<String, HashSet<String>>;

/// Quality figures for one tenant or overall.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Quality {
    pub alerts: u64,
    pub escalations: u64,
    pub escalated_clusters: u64,
    pub campaigns: u64,
    pub campaigns_recalled: u64,
    pub steps: u64,
    pub steps_recalled: u64,
    pub true_positive_clusters: u64,
    pub reduction: f64,
    pub campaign_recall: f64,
    pub step_recall: f64,
    pub precision: f64,
    pub fragmentation: f64,
    /// Campaign ids that no escalated cluster reached.
    pub missed: Vec<String>,
    /// Where each missed campaign's alerts went: what to tune against.
    pub missed_detail: Vec<Missed>,
    /// Escalated clusters holding no campaign alert: what to tune against.
    pub false_positives: Vec<FalsePositive>,
}

/// An escalated cluster holding no campaign alert, described enough to see
/// why it escalated.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FalsePositive {
    pub cluster_id: String,
    pub tenant: String,
    pub score: f64,
    pub alerts: u64,
    /// The largest score lines, `factor +points`.
    pub top_factors: Vec<String>,
    /// The most frequent rules, `id×count description`.
    pub top_rules: Vec<String>,
    /// The first values of each entity kind.
    pub entities: BTreeMap<String, Vec<String>>,
}

impl FalsePositive {
    fn of(r: &ClusterReport) -> Self {
        let mut rules: Vec<_> = r.rules.iter().collect();
        rules.sort_by(|a, b| b.count.cmp(&a.count).then(a.rule_id.cmp(&b.rule_id)));
        FalsePositive {
            cluster_id: r.cluster_id.clone(),
            tenant: r.tenant.clone(),
            score: r.score,
            alerts: r.alerts,
            top_factors: top_factors(r),
            top_rules: rules.iter().take(3).map(|x| format!("{}×{} {}", x.rule_id, x.count, x.description)).collect(),
            entities: r
                .entities
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.iter().take(2).cloned().collect()))
                .collect(),
        }
    }
}

/// A campaign that no escalated cluster reached, and the clusters that
/// hold its alerts (largest share first).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Missed {
    pub campaign: String,
    pub tenant: String,
    pub alerts: u64,
    /// Its alerts in no cluster: below the linking level with no live
    /// cluster to attach to, or late, dead-lettered or of a disabled tenant.
    pub unclustered: u64,
    pub clusters: Vec<MissedIn>,
}

/// A cluster holding alerts of a missed campaign.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct MissedIn {
    pub cluster_id: String,
    pub decision: String,
    pub score: f64,
    pub alerts: u64,
    /// The campaign's alerts in it.
    pub campaign_alerts: u64,
    pub top_factors: Vec<String>,
}

/// The largest score lines of a report, `factor +points`, then every line
/// that lowered it (`factor -points`): why it scored what it did.
fn top_factors(r: &ClusterReport) -> Vec<String> {
    let mut lines: Vec<_> = r.breakdown.iter().filter(|l| l.points > 0.0).collect();
    lines.sort_by(|a, b| b.points.total_cmp(&a.points));
    let top = lines.iter().take(4).map(|l| format!("{} +{}", l.factor, l.points));
    let lowered = r.breakdown.iter().filter(|l| l.points < 0.0).map(|l| format!("{} {}", l.factor, l.points));
    top.chain(lowered).collect()
}

/// The whole evaluation.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EvalReport {
    pub overall: Quality,
    pub tenants: BTreeMap<String, Quality>,
}

#[derive(Default)]
struct Acc {
    alerts: u64,
    escalations: u64,
    clusters: u64,
    tp_clusters: u64,
    campaigns: BTreeSet<String>,
    steps: BTreeSet<(String, u8)>,
    recalled: BTreeSet<String>,
    steps_recalled: BTreeSet<(String, u8)>,
    /// Campaign → escalated clusters holding its alerts.
    clusters_per_campaign: BTreeMap<String, BTreeSet<String>>,
    false_positives: Vec<FalsePositive>,
    missed_detail: Vec<Missed>,
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

impl Acc {
    fn quality(&self) -> Quality {
        let frag: Vec<usize> = self.clusters_per_campaign.values().map(BTreeSet::len).collect();
        Quality {
            alerts: self.alerts,
            escalations: self.escalations,
            escalated_clusters: self.clusters,
            campaigns: self.campaigns.len() as u64,
            campaigns_recalled: self.recalled.len() as u64,
            steps: self.steps.len() as u64,
            steps_recalled: self.steps_recalled.len() as u64,
            true_positive_clusters: self.tp_clusters,
            reduction: if self.escalations == 0 {
                self.alerts as f64
            } else {
                ratio(self.alerts as f64, self.escalations as f64)
            },
            campaign_recall: ratio(self.recalled.len() as f64, self.campaigns.len() as f64),
            step_recall: ratio(self.steps_recalled.len() as f64, self.steps.len() as f64),
            precision: ratio(self.tp_clusters as f64, self.clusters as f64),
            fragmentation: ratio(frag.iter().sum::<usize>() as f64, frag.len() as f64),
            missed: self.campaigns.difference(&self.recalled).cloned().collect(),
            missed_detail: self.missed_detail.clone(),
            false_positives: self.false_positives.clone(),
        }
    }

    fn merge(&mut self, o: &Acc) {
        self.alerts += o.alerts;
        self.escalations += o.escalations;
        self.clusters += o.clusters;
        self.tp_clusters += o.tp_clusters;
        self.campaigns.extend(o.campaigns.iter().cloned());
        self.steps.extend(o.steps.iter().cloned());
        self.recalled.extend(o.recalled.iter().cloned());
        self.steps_recalled.extend(o.steps_recalled.iter().cloned());
        for (k, v) in &o.clusters_per_campaign {
            self.clusters_per_campaign.entry(k.clone()).or_default().extend(v.iter().cloned());
        }
        self.false_positives.extend(o.false_positives.iter().cloned());
        self.missed_detail.extend(o.missed_detail.iter().cloned());
    }
}

/// Scores the final escalated clusters against the labels.
///
/// `alerts_per_tenant` counts every alert read; `escalations_per_tenant`
/// counts escalations handed off. `finals` are the final reports of
/// clusters, with members; those `handed` off (by tenant and id, or by an id
/// they absorbed) are the escalated ones, the rest only say where missed
/// campaigns went.
pub fn evaluate(
    labels: &[Label],
    finals: &[ClusterReport],
    handed: &HandoffSet,
    alerts_per_tenant: &BTreeMap<String, u64>,
    escalations_per_tenant: &BTreeMap<String, u64>,
) -> EvalReport {
    // Alert ids are unique per Wazuh manager, not across tenants: key by both.
    let by_alert: HashMap<(&str, &str), &Label> =
        labels.iter().map(|l| ((l.tenant.as_str(), l.alert_id.as_str()), l)).collect();
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for (tenant, n) in alerts_per_tenant {
        acc.entry(tenant.clone()).or_default().alerts = *n;
    }
    for (tenant, n) in escalations_per_tenant {
        acc.entry(tenant.clone()).or_default().escalations = *n;
    }
    for l in labels {
        let a = acc.entry(l.tenant.clone()).or_default();
        a.campaigns.insert(l.campaign.clone());
        a.steps.insert((l.campaign.clone(), l.step));
    }
    let was_handed = |r: &ClusterReport| {
        handed
            .get(&r.tenant)
            .is_some_and(|ids| std::iter::once(&r.cluster_id).chain(&r.merged).any(|id| ids.contains(id)))
    };
    for r in finals.iter().filter(|r| was_handed(r)) {
        let a = acc.entry(r.tenant.clone()).or_default();
        a.clusters += 1;
        let mut tp = false;
        for m in r.members.iter().flatten() {
            if let Some(l) = by_alert.get(&(r.tenant.as_str(), m.as_str())) {
                tp = true;
                a.recalled.insert(l.campaign.clone());
                a.steps_recalled.insert((l.campaign.clone(), l.step));
                a.clusters_per_campaign.entry(l.campaign.clone()).or_default().insert(r.cluster_id.clone());
            }
        }
        a.tp_clusters += u64::from(tp);
        if !tp {
            a.false_positives.push(FalsePositive::of(r));
        }
    }
    // Where the missed campaigns' alerts went (clusters of any decision).
    let missed: BTreeSet<(String, String)> = acc
        .iter()
        .flat_map(|(t, a)| a.campaigns.difference(&a.recalled).map(move |c| (t.clone(), c.clone())))
        .collect();
    if !missed.is_empty() {
        let mut found: BTreeMap<(&str, &str), Vec<MissedIn>> = BTreeMap::new();
        let missed_set: HashSet<(&str, &str)> = missed.iter().map(|(t, c)| (t.as_str(), c.as_str())).collect();
        let is_missed = |t: &str, c: &str| missed_set.contains(&(t, c));
        for r in finals {
            let mut mine: BTreeMap<&str, u64> = BTreeMap::new();
            for m in r.members.iter().flatten() {
                if let Some(l) = by_alert.get(&(r.tenant.as_str(), m.as_str()))
                    && is_missed(&l.tenant, &l.campaign)
                {
                    *mine.entry(l.campaign.as_str()).or_default() += 1;
                }
            }
            for (campaign, n) in mine {
                found.entry((r.tenant.as_str(), campaign)).or_default().push(MissedIn {
                    cluster_id: r.cluster_id.clone(),
                    decision: r.decision.to_string(),
                    score: r.score,
                    alerts: r.alerts,
                    campaign_alerts: n,
                    top_factors: top_factors(r),
                });
            }
        }
        for (tenant, campaign) in &missed {
            let alerts = labels.iter().filter(|l| &l.tenant == tenant && &l.campaign == campaign).count() as u64;
            let mut clusters = found.remove(&(tenant.as_str(), campaign.as_str())).unwrap_or_default();
            clusters.sort_by(|a, b| b.campaign_alerts.cmp(&a.campaign_alerts).then(a.cluster_id.cmp(&b.cluster_id)));
            let clustered: u64 = clusters.iter().map(|c| c.campaign_alerts).sum();
            let a = acc.get_mut(tenant).expect("a missed campaign's tenant has an entry");
            a.missed_detail.push(Missed {
                campaign: campaign.clone(),
                tenant: tenant.clone(),
                alerts,
                unclustered: alerts.saturating_sub(clustered),
                clusters,
            });
        }
    }
    let mut overall = Acc::default();
    for a in acc.values() {
        overall.merge(a);
    }
    EvalReport { overall: overall.quality(), tenants: acc.iter().map(|(t, a)| (t.clone(), a.quality())).collect() }
}

/// A table for a person.
pub fn human(report: &EvalReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<12} {:>10} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "tenant", "alerts", "esc", "reduction", "recall", "steps", "precision", "frag"
    );
    let row = |s: &mut String, name: &str, q: &Quality| {
        let _ = writeln!(
            s,
            "{:<12} {:>10} {:>6} {:>9.0}× {:>9.3} {:>9.3} {:>9.3} {:>9.2}",
            name, q.alerts, q.escalations, q.reduction, q.campaign_recall, q.step_recall, q.precision, q.fragmentation
        );
    };
    for (t, q) in &report.tenants {
        row(&mut s, t, q);
    }
    row(&mut s, "OVERALL", &report.overall);
    if !report.overall.missed.is_empty() {
        let _ = writeln!(s, "missed campaigns: {}", report.overall.missed.join(", "));
        for m in &report.overall.missed_detail {
            let _ = writeln!(s, "  {} ({} alerts, {} in no cluster):", m.campaign, m.alerts, m.unclustered);
            for c in &m.clusters {
                let _ = writeln!(
                    s,
                    "      {} in {} ({}, score {}, {} alerts): {}",
                    c.campaign_alerts,
                    c.cluster_id,
                    c.decision,
                    c.score,
                    c.alerts,
                    c.top_factors.join(", ")
                );
            }
        }
    }
    if !report.overall.false_positives.is_empty() {
        let _ = writeln!(s, "escalated clusters without a campaign alert:");
        for fp in &report.overall.false_positives {
            let _ = writeln!(
                s,
                "  [{}] {} score {} ({} alerts): {}\n      rules: {}",
                fp.tenant,
                fp.cluster_id,
                fp.score,
                fp.alerts,
                fp.top_factors.join(", "),
                fp.top_rules.join("; ")
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_connectors::generator::CampaignKind;
    use sluice_operators::cluster::Decision;

    #[test]
    fn a_missed_cluster_shows_its_largest_lines_and_every_line_that_lowered_it() {
        let line = |factor: &str, points: f64| sluice_operators::score::ScoreLine {
            factor: factor.into(),
            points,
            detail: String::new(),
        };
        let mut r = cluster("c", &["a"]);
        r.breakdown = ["max_level", "volume", "spread", "tactic_breadth", "actor_breadth"]
            .iter()
            .zip([30.0, 10.0, 6.0, 8.0, 24.0])
            .map(|(f, p)| line(f, p))
            .chain([line("prior_false_positive", -38.0)])
            .collect();
        assert_eq!(
            top_factors(&r),
            ["max_level +30", "actor_breadth +24", "volume +10", "tactic_breadth +8", "prior_false_positive -38"]
        );
    }

    fn label(id: &str, campaign: &str, step: u8) -> Label {
        Label {
            alert_id: id.into(),
            tenant: "acme".into(),
            campaign: campaign.into(),
            kind: CampaignKind::SshBruteforce,
            step,
            step_name: format!("step {step}"),
        }
    }

    fn cluster(id: &str, members: &[&str]) -> ClusterReport {
        ClusterReport {
            cluster_id: id.into(),
            version: 1,
            idempotency_key: format!("{id}:1"),
            tenant: "acme".into(),
            signature: String::new(),
            score: 99.0,
            decision: Decision::Escalate,
            reason: String::new(),
            breakdown: vec![],
            first_seen: String::new(),
            last_seen: String::new(),
            entities: BTreeMap::new(),
            entities_truncated: BTreeMap::new(),
            tactics: vec![],
            max_level: 10,
            alerts: members.len() as u64,
            duplicates: 0,
            rules: vec![],
            detections: vec![],
            representatives: vec![],
            excerpts: vec![],
            merged: vec![],
            trigger: None,
            redaction: Default::default(),
            budget: Default::default(),
            members: Some(members.iter().map(|s| s.to_string()).collect()),
            first_seen_ms: 0,
            last_seen_ms: 0,
        }
    }

    fn ids(list: &[&str]) -> HandoffSet {
        BTreeMap::from([("acme".to_string(), list.iter().map(|id| id.to_string()).collect())])
    }

    #[test]
    fn a_cluster_counts_as_escalated_when_it_or_one_it_absorbed_was_handed_off() {
        let labels = vec![label("a1", "c1", 1)];
        let mut merged = cluster("root", &["a1"]);
        merged.merged = vec!["handed".into()];
        let alerts = BTreeMap::from([("acme".to_string(), 10)]);
        let q = evaluate(&labels, &[merged], &ids(&["handed"]), &alerts, &BTreeMap::new()).overall;
        assert_eq!((q.escalated_clusters, q.campaigns_recalled), (1, 1));
        let other_tenant: HandoffSet = BTreeMap::from([("globex".to_string(), HashSet::from(["handed".to_string()]))]);
        let mut merged = cluster("root", &["a1"]);
        merged.merged = vec!["handed".into()];
        let q = evaluate(&labels, &[merged], &other_tenant, &alerts, &BTreeMap::new()).overall;
        assert_eq!(q.escalated_clusters, 0, "ids are per tenant");
    }

    #[test]
    fn metrics_follow_their_definitions() {
        let labels = vec![label("a1", "c1", 1), label("a2", "c1", 2), label("b1", "c2", 1), label("b2", "c2", 2)];
        // c1 split over two clusters (step 1 and 2), c2 missed, one noise cluster.
        let finals = vec![cluster("x", &["a1", "n1"]), cluster("y", &["a2"]), cluster("z", &["n2", "n3"])];
        let alerts = BTreeMap::from([("acme".to_string(), 1000)]);
        let esc = BTreeMap::from([("acme".to_string(), 4)]);
        let q = evaluate(&labels, &finals, &ids(&["x", "y", "z"]), &alerts, &esc).overall;
        assert_eq!(q.reduction, 250.0);
        assert_eq!(q.campaign_recall, 0.5);
        assert_eq!(q.step_recall, 0.5);
        assert!((q.precision - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(q.fragmentation, 2.0);
        assert_eq!(q.missed, ["c2"]);
        let fps: Vec<&str> = q.false_positives.iter().map(|f| f.cluster_id.as_str()).collect();
        assert_eq!(fps, ["z"], "the noise cluster is listed, and only it");
        assert_eq!(q.missed_detail.len(), 1);
        assert_eq!((q.missed_detail[0].alerts, q.missed_detail[0].unclustered), (2, 2), "c2 is in no cluster");
    }

    #[test]
    fn a_missed_campaign_lists_the_clusters_its_alerts_went_to() {
        let labels = vec![label("a1", "c1", 1), label("b1", "c2", 1), label("b2", "c2", 2), label("b3", "c2", 3)];
        let mut quiet = cluster("q", &["b1", "b2", "n1"]);
        quiet.decision = Decision::Review;
        quiet.score = 40.0;
        let mut other = cluster("r", &["b3"]);
        other.decision = Decision::Suppress;
        // Over the threshold at close but never handed off (it crossed it
        // during the warm-up and got no alert after): not escalated.
        let unsent = cluster("u", &["n2"]);
        let finals = vec![cluster("x", &["a1"]), other, quiet, unsent];
        let alerts = BTreeMap::from([("acme".to_string(), 100)]);
        let q = evaluate(&labels, &finals, &ids(&["x"]), &alerts, &BTreeMap::new()).overall;
        assert!(q.false_positives.is_empty(), "{:?}", q.false_positives);
        // Clusters of any decision count for where alerts went, never for
        // precision or recall.
        assert_eq!((q.escalated_clusters, q.campaigns_recalled), (1, 1));
        let m = &q.missed_detail[..];
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].campaign.as_str(), m[0].alerts, m[0].unclustered), ("c2", 3, 0));
        let went: Vec<(&str, &str, u64)> =
            m[0].clusters.iter().map(|c| (c.cluster_id.as_str(), c.decision.as_str(), c.campaign_alerts)).collect();
        assert_eq!(went, [("q", "review", 2), ("r", "suppress", 1)], "largest share first");
        assert!(
            human(&EvalReport { overall: q.clone(), tenants: BTreeMap::new() }).contains("2 in q (review, score 40")
        );
    }
}
