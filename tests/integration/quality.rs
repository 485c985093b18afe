//! Quality on the default generated scenario with a fixed seed: the numbers
//! a SOC buys Sluice for. Runs in release mode (`cargo test --release`).
//!
//! Two tests: the floor this revision holds (a regression guard, run in CI),
//! and the gate issue 2 asks for, which is not met yet and is therefore
//! ignored: `cargo test --release -- --ignored quality_gate` shows the gap.
//! Campaign recall, reduction and fragmentation are met; precision is not
//! (0.63), because the generated web noise (SQL-injection and scanner
//! traffic on every web server) scores like the web-exploit campaign on rule
//! evidence alone, in long-lived clusters of the web server.

use sluice_connectors::generator::GeneratorConfig;
use sluice_connectors::source::StopFlag;
use sluice_connectors::synthetic::GeneratorSource;
use sluice_pipeline::Config;
use sluice_pipeline::eval::{EvalReport, evaluate_run, human};

fn evaluate_default_scenario() -> EvalReport {
    let config = Config::default();
    let generator = GeneratorConfig { tenants: 5, alerts: 1_000_000, seed: 2026, ..GeneratorConfig::default() };
    let labels = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = labels.clone();
    let source = GeneratorSource::new(generator, 4096, StopFlag::new())
        .unwrap()
        .with_labels(move |l| sink.lock().unwrap().push(l));
    let (report, summary) =
        evaluate_run(&config, Box::new(source), move || std::mem::take(&mut *labels.lock().unwrap()), None).unwrap();
    eprintln!("{}", human(&report));
    assert_eq!(summary.alerts_read, 1_000_000);
    assert!(report.overall.campaigns >= 30, "5 tenants × 6 campaign kinds, got {}", report.overall.campaigns);
    report
}

#[test]
fn default_scenario_holds_the_quality_floor() {
    let q = evaluate_default_scenario().overall;
    assert!(q.campaign_recall >= 0.99, "campaign recall {:.3} < 0.99; missed {:?}", q.campaign_recall, q.missed);
    assert!(q.step_recall >= 0.85, "step recall {:.3} < 0.85", q.step_recall);
    // 0.63 since duplicates count only with the alert they repeat (before,
    // a stale entry counted some in an older cluster, which made 0.70).
    assert!(q.precision >= 0.60, "precision {:.3} < 0.60", q.precision);
    assert!(q.reduction >= 100.0, "reduction {:.1}× < 100×", q.reduction);
    assert!(q.fragmentation <= 1.5, "fragmentation {:.2} > 1.5", q.fragmentation);
}

#[test]
#[ignore = "issue 2's gate is not met yet: precision is below 0.90 (see the module docs)"]
fn quality_gate_of_issue_2() {
    let q = evaluate_default_scenario().overall;
    assert!(q.campaign_recall >= 0.99, "campaign recall {:.3} < 0.99; missed {:?}", q.campaign_recall, q.missed);
    assert!(q.precision >= 0.90, "precision {:.3} < 0.90", q.precision);
    assert!(q.reduction >= 100.0, "reduction {:.1}× < 100×", q.reduction);
    assert!(q.fragmentation <= 1.5, "fragmentation {:.2} > 1.5", q.fragmentation);
}
