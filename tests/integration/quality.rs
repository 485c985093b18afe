//! Quality gate on the default generated scenario with a fixed seed: the
//! numbers a SOC buys Sluice for. Runs in release mode (`cargo test --release`).

use sluice_connectors::generator::GeneratorConfig;
use sluice_connectors::source::StopFlag;
use sluice_connectors::synthetic::GeneratorSource;
use sluice_pipeline::Config;
use sluice_pipeline::eval::{evaluate_run, human};

#[test]
fn default_scenario_meets_the_quality_gate() {
    let config = Config::default();
    let generator = GeneratorConfig { tenants: 5, alerts: 1_000_000, seed: 2026, ..GeneratorConfig::default() };
    let labels = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = labels.clone();
    let source = GeneratorSource::new(generator, 4096, StopFlag::new())
        .unwrap()
        .with_labels(move |l| sink.lock().unwrap().push(l));
    let (report, summary) =
        evaluate_run(&config, Box::new(source), move || std::mem::take(&mut *labels.lock().unwrap())).unwrap();
    eprintln!("{}", human(&report));
    let q = &report.overall;
    assert_eq!(summary.alerts_read, 1_000_000);
    assert!(q.campaigns >= 30, "5 tenants × at least 6 campaign kinds, got {}", q.campaigns);
    assert!(q.campaign_recall >= 0.99, "campaign recall {:.3} < 0.99; missed {:?}", q.campaign_recall, q.missed);
    assert!(q.precision >= 0.90, "precision {:.3} < 0.90", q.precision);
    assert!(q.reduction >= 100.0, "reduction {:.1}× < 100×", q.reduction);
    assert!(q.fragmentation <= 1.5, "fragmentation {:.2} > 1.5", q.fragmentation);
    for (tenant, t) in &report.tenants {
        assert!(t.campaign_recall >= 0.99, "{tenant}: recall {:.3}", t.campaign_recall);
    }
}
