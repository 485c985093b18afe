//! Verdict priors in the running pipeline: a confident false-positive
//! verdict on a cluster's signature lowers later clusters with that
//! signature, in that tenant only, and says so in their breakdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sluice_connectors::source::{Source, SourceError, StopFlag};
use sluice_operators::cluster::{ClusterReport, Decision};
use sluice_operators::correlate::Priors;
use sluice_operators::decode::RawChunk;
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

/// Two separate bursts of the same kind (same rules, same entity kinds),
/// seven hours apart on the same two web servers, from different addresses
/// and with different user names.
fn two_bursts() -> Vec<Vec<u8>> {
    let mut lines = Vec::new();
    // A quiet first hour so the tenant's baseline warm-up has passed.
    for i in 0..40 {
        lines.push(format!(
            r#"{{"timestamp":"2026-11-01T00:{:02}:{:02}.000+0000","rule":{{"level":3,"id":"5501","description":"PAM: Login session opened.","groups":["pam","syslog"]}},"agent":{{"id":"009","name":"ops-09"}},"manager":{{"name":"acme"}},"id":"q.{i}","full_log":"session opened"}}"#,
            i + 10,
            i % 60
        ));
    }
    let steps: [(u32, u8, &str, &str, &str, &str); 3] = [
        (
            31103,
            7,
            "SQL injection attempt.",
            r#""web","accesslog","attack","sql_injection""#,
            "T1190",
            "Initial Access",
        ),
        (5712, 10, "sshd: brute force", r#""syslog","sshd","authentication_failures""#, "T1110", "Credential Access"),
        (5902, 12, "New user added to the system.", r#""syslog","adduser""#, "T1136", "Persistence"),
    ];
    for (b, hour) in [(0, 1), (1, 8)] {
        for (i, (rule, level, descr, groups, technique, tactic)) in steps.iter().flat_map(|s| [s, s]).enumerate() {
            let host = 1 + i % 2;
            lines.push(format!(
                r#"{{"timestamp":"2026-11-01T{hour:02}:00:{:02}.000+0000","rule":{{"level":{level},"id":"{rule}","description":"{descr}","groups":[{groups}],"mitre":{{"id":["{technique}"],"tactic":["{tactic}"]}}}},"agent":{{"id":"00{host}","name":"web-{host}"}},"manager":{{"name":"acme"}},"id":"b{b}.{i}","full_log":"step {i}","data":{{"srcip":"203.0.113.{}","dstuser":"intruder{b}"}}}}"#,
                i * 5,
                10 + b
            ));
        }
    }
    lines.into_iter().map(String::into_bytes).collect()
}

/// Hands out lines one at a time, and holds line `gate` back until `open`
/// is set: a live stream, where the second burst comes hours later.
struct Gated {
    lines: LinesSource,
    next: usize,
    gate: usize,
    open: Arc<AtomicBool>,
}

impl Source for Gated {
    fn name(&self) -> &str {
        "gated"
    }
    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        if self.next == self.gate {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !self.open.load(Ordering::SeqCst) {
                assert!(Instant::now() < deadline, "the first burst never escalated");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        self.next += 1;
        self.lines.next_chunk()
    }
}

/// A prior made while the pipeline runs (as the LLM sink makes one from a
/// verdict) reaches it through its slot and acts on the next cluster.
#[test]
fn a_prior_made_while_running_keeps_the_next_cluster_of_its_kind_from_escalating() {
    let mut config = Config::default();
    // Without priors the second burst must escalate too. By default its
    // rules would be background on the two servers (a second source raised
    // them there), which lowers it for another reason than the prior.
    config.correlate.crowded_sources = 0;
    let escalations = |live_priors: bool| -> Vec<ClusterReport> {
        let slot: sluice_pipeline::runtime::PriorsSlot = Default::default();
        let options = RunOptions { priors: live_priors.then(|| slot.clone()), ..RunOptions::default() };
        let mut out = Vec::new();
        let mut priors = Priors::default();
        let lines = two_bursts();
        // The second burst starts after the quiet hour and the first burst.
        let open = Arc::new(AtomicBool::new(false));
        let source = Gated { gate: lines.len() - 6, lines: LinesSource::new(lines, 1), next: 0, open: open.clone() };
        run(&config, Box::new(source), &options, &StopFlag::new(), |e| {
            if let Event::Report(ReportKind::Escalate, r) = e {
                if live_priors {
                    priors.insert(&r.tenant, &r.signature, "prior #1: judged false_positive".into());
                    *slot.lock().unwrap() = Some(priors.clone());
                }
                out.push(*r);
                open.store(true, Ordering::SeqCst);
            }
            Ok(())
        })
        .unwrap();
        out
    };
    let without = escalations(false);
    assert_eq!(without.len(), 2, "both bursts escalate without priors: {without:#?}");
    assert_eq!(without[0].signature, without[1].signature, "the bursts are of one kind");
    let with = escalations(true);
    assert_eq!(with.len(), 1, "the second burst is lowered by the prior made from the first");
    assert_eq!(with[0].cluster_id, without[0].cluster_id);
}
