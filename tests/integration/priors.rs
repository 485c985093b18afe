//! Verdict priors in the running pipeline: a confident false-positive
//! verdict on a cluster's signature lowers later clusters with that
//! signature, in that tenant only, and says so in their breakdown.

use sluice_connectors::source::StopFlag;
use sluice_operators::cluster::{ClusterReport, Decision};
use sluice_operators::correlate::Priors;
use sluice_operators::operator::ReportKind;
use sluice_pipeline::Config;
use sluice_pipeline::runtime::{Event, RunOptions, run};

use crate::common::{LinesSource, generate};

/// Every escalation and update of a run.
fn handoffs(config: &Config, lines: Vec<Vec<u8>>, priors: Option<Priors>) -> Vec<ClusterReport> {
    let options = RunOptions {
        priors: priors.map(|p| std::sync::Arc::new(std::sync::Mutex::new(Some(p)))),
        ..RunOptions::default()
    };
    let mut out = Vec::new();
    run(config, Box::new(LinesSource::new(lines, 4096)), &options, &StopFlag::new(), |e| {
        if let Event::Report(kind, r) = e
            && kind != ReportKind::Close
        {
            out.push(*r);
        }
        Ok(())
    })
    .unwrap();
    out
}

#[test]
fn a_prior_keeps_its_signature_from_escalating_in_its_tenant_only() {
    let (lines, _) = generate(3, 150_000, 5);
    let config = Config::default();
    let base = handoffs(&config, lines.clone(), None);
    let first = base.iter().find(|r| r.decision == Decision::Escalate).expect("an escalation");
    let (tenant, signature) = (first.tenant.clone(), first.signature.clone());
    let mut priors = Priors::default();
    assert!(priors.insert(&tenant, &signature, "prior #7: judged false_positive (confidence 0.95)".into()));
    // The same signature in another tenant is not that tenant's prior.
    let with = handoffs(&config, lines, Some(priors));
    assert!(
        !with.iter().any(|r| r.tenant == tenant && r.signature == signature),
        "a cluster with the prior's signature was still handed off"
    );
    let others = |v: &[ClusterReport]| -> Vec<(String, u64, String)> {
        v.iter()
            .filter(|r| r.tenant != tenant)
            .map(|r| (r.cluster_id.clone(), r.version, format!("{:.2}", r.score)))
            .collect()
    };
    assert_eq!(others(&base), others(&with), "other tenants' hand-offs do not change");
    // Any report of that tenant that does carry a prior line says which.
    for r in with.iter().filter(|r| r.tenant == tenant) {
        if let Some(line) = r.breakdown.iter().find(|l| l.factor == "prior_false_positive") {
            assert!(line.detail.contains("prior #7"), "{}", line.detail);
        }
    }
}
