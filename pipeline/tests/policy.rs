//! Per-tenant policy: each override changes its own tenant and no other,
//! a disabled tenant's alerts are counted and set aside, and a policy
//! directory reloads while running (a bad file keeps the policy in force).

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::cli::{free_port, lines_of, wait_for};
use sluice_connectors::generator::GeneratorConfig;
use sluice_connectors::source::StopFlag;
use sluice_connectors::synthetic::GeneratorSource;
use sluice_operators::operator::ReportKind;
use sluice_pipeline::metrics::Metrics;
use sluice_pipeline::{Config, Event, RunOptions, Summary, run};

/// A run: its summary, its metrics and the escalated cluster ids per tenant.
struct Outcome {
    summary: Summary,
    metrics: Arc<Metrics>,
    escalated: BTreeMap<String, Vec<String>>,
}

fn run_with(policy: &str) -> Outcome {
    let mut config = Config::parse(policy, "policy.toml").unwrap();
    config.admin.listen = String::new();
    let generator = GeneratorConfig { tenants: 2, alerts: 200_000, seed: 7, ..GeneratorConfig::default() };
    let source = GeneratorSource::new(generator, 4096, StopFlag::new()).unwrap();
    let metrics = Arc::new(Metrics::new(500));
    let options = RunOptions { metrics: Some(metrics.clone()), ..RunOptions::default() };
    let mut escalated: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let summary = run(&config, Box::new(source), &options, &StopFlag::new(), |e| {
        if let Event::Report(ReportKind::Escalate, r) = e {
            escalated.entry(r.tenant.clone()).or_default().push(r.cluster_id.clone());
        }
        Ok(())
    })
    .unwrap();
    Outcome { summary, metrics, escalated }
}

fn baseline() -> &'static Outcome {
    static B: OnceLock<Outcome> = OnceLock::new();
    B.get_or_init(|| {
        let b = run_with("");
        assert!(b.escalated.get("acme").is_some_and(|e| !e.is_empty()), "acme escalates without a policy");
        assert!(b.escalated.get("globex").is_some_and(|e| !e.is_empty()), "globex escalates without a policy");
        b
    })
}

fn counter(s: &Summary, tenant: &str, metric: &str) -> u64 {
    s.tenants.get(tenant).and_then(|c| c.get(metric)).copied().unwrap_or(0)
}

#[test]
fn a_disabled_tenant_is_counted_and_set_aside_and_the_others_are_untouched() {
    let base = baseline();
    let got = run_with("[policy.tenants.globex]\nenabled = false\n");
    assert_eq!(got.escalated.get("globex"), None, "nothing of a disabled tenant is handed off");
    assert_eq!(counter(&got.summary, "globex", "dedup.records_in"), 0);
    let disabled = got.metrics.tenant_events()["globex"].disabled;
    assert_eq!(disabled, counter(&base.summary, "globex", "dedup.records_in"), "every globex alert is counted");
    assert_eq!(got.escalated.get("acme"), base.escalated.get("acme"), "acme is not affected");
    let text = sluice_pipeline::admin::prometheus::render(&got.metrics, None, 100);
    assert!(text.contains(&format!("sluice_tenant_disabled_records_total{{tenant=\"globex\"}} {disabled}\n")));
}

#[test]
fn thresholds_apply_to_their_tenant_only() {
    let base = baseline();
    let strict = run_with("[policy.tenants.acme]\nescalate_threshold = 1000\n");
    assert_eq!(strict.escalated.get("acme"), None, "no acme cluster reaches 1000");
    assert_eq!(strict.escalated.get("globex"), base.escalated.get("globex"));
    let eager = run_with("[policy.tenants.acme]\nescalate_threshold = 30\nreview_threshold = 20\n");
    let (more, before) = (eager.escalated["acme"].len(), base.escalated["acme"].len());
    assert!(more > before, "a lower threshold escalates more: {more} vs {before}");
    assert_eq!(eager.escalated.get("globex"), base.escalated.get("globex"));
}

#[test]
fn a_dedup_window_applies_to_its_tenant_only() {
    let base = baseline();
    let got = run_with("[policy.tenants.acme]\ndedup_window = \"1s\"\n");
    let (short, before) =
        (counter(&got.summary, "acme", "dedup.duplicates"), counter(&base.summary, "acme", "dedup.duplicates"));
    assert!(short < before, "a 1 s window folds fewer repeats: {short} vs {before}");
    assert_eq!(
        counter(&got.summary, "globex", "dedup.duplicates"),
        counter(&base.summary, "globex", "dedup.duplicates")
    );
}

#[test]
fn enabled_rules_apply_to_their_tenant_only() {
    let all = run_with("[rules]\nbuiltin = true\n");
    let detections = |o: &Outcome, t: &str| counter(&o.summary, t, "correlate.detections");
    assert!(detections(&all, "acme") > 0 && detections(&all, "globex") > 0, "the shipped rules detect in both");
    let none = run_with("[rules]\nbuiltin = true\n[policy.tenants.acme]\nrules = []\n");
    assert_eq!(detections(&none, "acme"), 0, "acme runs no rule");
    assert_eq!(detections(&none, "globex"), detections(&all, "globex"));
}

#[test]
fn bad_policies_are_refused_with_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("acme.toml"), "escalate_threshold = 50\nthreshold = 3\n").unwrap();
    std::fs::write(dir.path().join("globex.toml"), "review_threshold = 99\n").unwrap();
    let text = format!("[policy]\ndir = {:?}\n[policy.tenants.initech]\nenabled = false\n", dir.path());
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(err.contains("acme.toml") && err.contains("threshold"), "{err}");
    // Both files' problems are reported, not only the first.
    std::fs::write(dir.path().join("acme.toml"), "escalate_threshold = 50\n").unwrap();
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(err.contains("globex") && err.contains("review_threshold 99"), "{err}");
    std::fs::write(dir.path().join("initech.toml"), "enabled = true\n").unwrap();
    std::fs::write(dir.path().join("globex.toml"), "review_threshold = 10\n").unwrap();
    let err = Config::parse(&text, "sluice.toml").unwrap_err().to_string();
    assert!(err.contains("initech.toml") && err.contains("keep one"), "{err}");
}

/// The policy directory reloads while running: disabling a tenant takes
/// effect on the alerts that follow; a bad file is refused and the policy
/// in force stays.
#[test]
fn a_policy_directory_reloads_while_running() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants.d");
    std::fs::create_dir(&tenants).unwrap();
    std::fs::write(tenants.join("acme.toml"), "escalate_threshold = 70\n").unwrap();
    let port = free_port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(&config, format!("[policy]\ndir = {tenants:?}\n[admin]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    let input = dir.path().join("alerts.json");
    let alert = |i: u32, tenant: &str| {
        format!(
            r#"{{"timestamp":"2026-11-01T10:00:{:02}.000+0000","rule":{{"level":5,"id":"5716","groups":["sshd"]}},"agent":{{"id":"001","name":"web-01"}},"manager":{{"name":"{tenant}"}},"id":"r.{tenant}.{i}","full_log":"line {i}"}}"#,
            i % 60
        ) + "\n"
    };
    let mut f = std::fs::File::create(&input).unwrap();
    for i in 0..10 {
        f.write_all(alert(i, "acme").as_bytes()).unwrap();
    }
    f.flush().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .env("SLUICE_LOG", "info")
        .current_dir(dir.path())
        .args(["run", "--follow", "--format", "quiet", "--config", config.to_str().unwrap()])
        .args(["--input", input.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stderr.take().unwrap());
    let mut log = Vec::new();
    let metric = |name: &str| -> Option<f64> {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut r = agent.get(format!("http://127.0.0.1:{port}/metrics")).call().ok()?;
        let text = r.body_mut().read_to_string().ok()?;
        text.lines().find(|l| l.starts_with(name)).and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
    };
    let poll = |name: &str, want: f64| -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if metric(name) == Some(want) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    };
    let ok = (|| {
        if !wait_for(&rx, &mut log, "per-tenant policy reloads") {
            return Err("the policy watcher did not start");
        }
        if !poll("sluice_operator_records_in_total{operator=\"dedup\",tenant=\"acme\"}", 10.0) {
            return Err("the first 10 acme alerts were not processed");
        }
        // A bad file: refused, the policy in force stays.
        std::fs::write(tenants.join("acme.toml"), "enabled = \"no\"\n").unwrap();
        if !wait_for(&rx, &mut log, "policy not reloaded") {
            return Err("a bad policy file was not refused");
        }
        if !poll("sluice_config_reload_refused{what=\"policy\"}", 1.0) {
            return Err("the refused reload is not in the metrics");
        }
        // Disable acme: the alerts that follow are set aside. The policy is
        // in force once the source has sent it down the pipeline (counted
        // as applied), ahead of every alert it reads after that.
        std::fs::write(tenants.join("acme.toml"), "enabled = false\n").unwrap();
        if !wait_for(&rx, &mut log, "policy reloaded") {
            return Err("the policy change was not loaded");
        }
        if !poll("sluice_config_reloads_total{what=\"policy\",outcome=\"applied\"}", 1.0)
            || !poll("sluice_config_reload_refused{what=\"policy\"}", 0.0)
            || !poll("sluice_config_reloads_total{what=\"policy\",outcome=\"refused\"}", 1.0)
        {
            return Err("the applied reload is not in the metrics");
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&input).unwrap();
        for i in 10..15 {
            f.write_all(alert(i, "acme").as_bytes()).unwrap();
        }
        f.flush().unwrap();
        if !poll("sluice_tenant_disabled_records_total{tenant=\"acme\"}", 5.0) {
            return Err("the alerts after the reload were not set aside");
        }
        Ok(())
    })();
    let _ = child.kill();
    let _ = child.wait();
    if let Err(why) = ok {
        panic!("{why}; log:\n{}", log.join("\n"));
    }
    assert!(log.iter().any(|l| l.contains("policy not reloaded") && l.contains("acme.toml")), "{log:?}");
}

#[test]
fn entity_windows_apply_to_their_tenant_only() {
    let base = baseline();
    let got = run_with("[policy.tenants.acme.entity_windows]\nhost = \"1m\"\nuser = \"1m\"\nip = \"1m\"\n");
    let created = |o: &Outcome, t: &str| counter(&o.summary, t, "correlate.clusters_created");
    assert_ne!(created(&got, "acme"), created(base, "acme"), "one-minute windows link differently");
    assert_eq!(created(&got, "globex"), created(base, "globex"));
    assert_eq!(got.escalated.get("globex"), base.escalated.get("globex"));
    // Only the length of a kind that has a global window can change.
    let err = Config::parse("[policy.tenants.acme.entity_windows]\nprocess = \"1h\"\n", "c.toml").unwrap_err();
    assert!(err.to_string().contains("policy.tenants.acme.entity_windows") && err.to_string().contains("process"));
}
