//! Sigma correlations run end to end on DataFusion: `temporal` matches its
//! rules in any order, `temporal_ordered` only in order, both only within
//! the timespan; `event_count` counts per group. (The shipped Sigma rules
//! and their fixtures are checked by `tests/library.rs`.)

use std::path::Path;

use sluice_operators::decode::{DecodeConfig, TenantConfig};
use sluice_rules::rule::parse_file;
use sluice_rules::workbench::run_bytes;
use sluice_rules::{Engine, Limits, compile_all};

/// An sshd failure or success from `ip` at second `s` after 10:00.
fn line(id: usize, s: u32, ip: &str, success: bool) -> String {
    let (rule, group) = if success { (5715, "authentication_success") } else { (5716, "authentication_failed") };
    format!(
        r#"{{"timestamp":"2026-11-01T10:{:02}:{:02}.000+0000","rule":{{"level":5,"id":"{rule}","groups":["sshd","{group}"]}},"agent":{{"id":"001","name":"web-01"}},"manager":{{"name":"acme"}},"id":"a.{id}","decoder":{{"name":"sshd"}},"data":{{"srcip":"{ip}","dstuser":"root"}}}}"#,
        s / 60,
        s % 60
    )
}

const RULES: &str = r#"
title: sshd failure
name: failure
logsource: { product: linux, service: sshd }
detection:
  selection: { rule.id: '5716' }
  condition: selection
---
title: sshd success
name: success
logsource: { product: linux, service: sshd }
detection:
  selection:
    rule.groups: authentication_success
  condition: selection
"#;

fn correlation(kind: &str, extra: &str) -> String {
    format!(
        "{RULES}---\ntitle: t\ncorrelation:\n  type: {kind}\n  rules: [failure, success]\n  group-by: [srcip]\n  timespan: 4m\n{extra}"
    )
}

/// The source addresses a correlation fires for over these lines.
fn fired(sigma: &str, lines: &[String]) -> Vec<String> {
    let rules = parse_file(sigma, Path::new("t.yml"), Limits::default()).unwrap();
    let engine = Engine::new(&[]).unwrap();
    let compiled = compile_all(&engine, rules).unwrap();
    // In time order, as Wazuh writes them (`line` puts the timestamp first).
    let mut lines = lines.to_vec();
    lines.sort_by(|a, b| a[14..37].cmp(&b[14..37]));
    let data = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    let report =
        run_bytes(engine, compiled, data.as_bytes(), DecodeConfig::default(), &TenantConfig::default(), 0).unwrap();
    let mut ips: Vec<String> = report.detections.iter().map(|d| d.entities[0].1.clone()).collect();
    ips.dedup();
    ips
}

#[test]
fn temporal_matches_in_any_order_and_temporal_ordered_only_in_order() {
    let lines = vec![
        // .1: failure then success, 30 s apart.
        line(1, 30, "192.0.2.1", false),
        line(2, 60, "192.0.2.1", true),
        // .2: success then failure.
        line(3, 40, "192.0.2.2", true),
        line(4, 70, "192.0.2.2", false),
        // .3: failure, and a success ten minutes later: outside the timespan.
        line(5, 50, "192.0.2.3", false),
        line(6, 650, "192.0.2.3", true),
        // .4: failures only.
        line(7, 80, "192.0.2.4", false),
        line(8, 90, "192.0.2.4", false),
    ];
    assert_eq!(fired(&correlation("temporal", ""), &lines), ["192.0.2.1", "192.0.2.2"]);
    assert_eq!(fired(&correlation("temporal_ordered", ""), &lines), ["192.0.2.1"]);
}

#[test]
fn event_count_counts_per_group_within_the_timespan() {
    let sigma = format!(
        "{RULES}---\ntitle: t\ncorrelation:\n  type: event_count\n  rules: [failure]\n  group-by: [srcip]\n  \
         timespan: 2m\n  condition: {{ gte: 3 }}\n"
    );
    let mut lines = Vec::new();
    // Three failures within a minute from .1; three spread over six minutes from .2.
    for (i, (s, ip)) in [
        (10, "192.0.2.1"),
        (30, "192.0.2.1"),
        (50, "192.0.2.1"),
        (10, "192.0.2.2"),
        (190, "192.0.2.2"),
        (370, "192.0.2.2"),
    ]
    .into_iter()
    .enumerate()
    {
        lines.push(line(i, s, ip, false));
    }
    assert_eq!(fired(&sigma, &lines), ["192.0.2.1"]);
}
