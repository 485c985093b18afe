//! Event time: a record older than its input's watermark is counted and
//! reported on the late output, and kept out of correlation (whether its
//! window is still open would otherwise depend on how inputs interleave).

use sluice_pipeline::Config;

use crate::common::run_lines;

fn alert(id: &str, secs: i64) -> Vec<u8> {
    serde_json::json!({
        "timestamp": sluice_operators::time::Rfc3339(1_700_000_000_000 + secs * 1000).to_string(),
        "id": id,
        "rule": {"id": "5712", "level": 10, "description": "sshd: brute force", "mitre": {"tactic": ["Credential Access"]}},
        "agent": {"id": "001", "name": "web-1"},
        "manager": {"name": "acme"},
        "data": {"srcip": "203.0.113.7"},
        "full_log": format!("attempt {id}"),
    })
    .to_string()
    .into_bytes()
}

#[test]
fn late_records_are_counted_reported_and_kept_out_of_correlation() {
    // One alert every 10 s for 50 minutes, then one from minute 2.
    let mut lines: Vec<Vec<u8>> = (0..300).map(|i| alert(&format!("a{i}"), i * 10)).collect();
    lines.push(alert("straggler", 120));
    // In order but shuffled within the allowed lateness: not late.
    lines.push(alert("slightly-early", 2995 - 20));
    for batch in [1, 64, 4096] {
        let mut config = Config::default();
        config.runtime.batch_size = batch.try_into().unwrap();
        let out = run_lines(&config, lines.clone(), batch);
        assert_eq!(out.summary.late, 1, "batch {batch}");
        assert_eq!(out.late, ["straggler"], "batch {batch}");
        assert_eq!(out.summary.decoded, 302);
        let members = |id: &str| out.finals.iter().any(|f| f.members.as_ref().unwrap().iter().any(|m| m == id));
        assert!(!members("straggler"), "the late alert is in no cluster (batch {batch})");
        assert!(members("slightly-early"), "a record within the allowed lateness is correlated (batch {batch})");
    }
}
