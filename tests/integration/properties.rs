//! Invariants over random input: tenants never mix, counts add up.

use std::collections::BTreeSet;

use proptest::prelude::*;
use sluice_pipeline::Config;

use crate::common::run_lines;

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const HOSTS: [&str; 4] = ["h1", "h2", "h3", "h4"];
const IPS: [&str; 3] = ["10.0.0.1", "10.0.0.2", "203.0.113.9"];
const USERS: [&str; 3] = ["alice", "bob", "root"];

/// One random alert: (tenant, seconds, level, host, ip, user, log variant).
type Spec = (usize, i64, u8, usize, usize, usize, u8);

fn alert_line(i: usize, (tenant, t, level, host, ip, user, log): Spec) -> Vec<u8> {
    let tenant = TENANTS[tenant];
    let tactic = ["Credential Access", "Execution", "Persistence", "Impact"][usize::from(level) % 4];
    serde_json::json!({
        "timestamp": sluice_operators::time::Rfc3339(1_700_000_000_000 + t * 1000).to_string(),
        // The tenant is in the id so membership can be checked.
        "id": format!("{tenant}-{i}"),
        "rule": {"id": (5700 + u32::from(level)).to_string(), "level": level, "description": "r",
                 "mitre": {"tactic": [tactic]}},
        "agent": {"id": "001", "name": HOSTS[host]},
        "manager": {"name": tenant},
        "data": {"srcip": IPS[ip], "dstuser": USERS[user]},
        "full_log": format!("event {log} from {}", IPS[ip]),
    })
    .to_string()
    .into_bytes()
}

fn input() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(
        prop_oneof![
            9 => (0..3usize, 0..4000i64, 0..16u8, 0..4usize, 0..3usize, 0..3usize, 0..4u8).prop_map(Some),
            1 => Just(None),
        ],
        1..400,
    )
    .prop_map(|items| {
        items
            .into_iter()
            .enumerate()
            .map(|(i, it)| match it {
                Some(spec) => alert_line(i, spec),
                None => format!("garbage {i} {{").into_bytes(),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_cluster_mixes_tenants_and_counts_add_up(lines in input(), shards in 1usize..4) {
        let mut config = Config::default();
        config.runtime.shards = shards;
        config.runtime.batch_size = 17.try_into().unwrap();
        let garbage = lines.iter().filter(|l| l.starts_with(b"garbage")).count() as u64;
        let out = run_lines(&config, lines.clone(), 23);
        let s = &out.summary;
        prop_assert_eq!(s.alerts_read, lines.len() as u64);
        prop_assert_eq!(s.alerts_read, s.decoded + s.dead_lettered);
        prop_assert_eq!(s.dead_lettered, garbage);
        prop_assert_eq!(out.dead_letters, garbage);
        let passed: u64 = s.tenants.values().map(|m| m.get("dedup.passed").copied().unwrap_or(0)).sum();
        prop_assert_eq!(s.decoded, passed + s.deduplicated + s.late);
        prop_assert_eq!(s.decoded, s.clustered + s.unclustered + s.late);
        // Every cluster created ends merged into another or closed with a decision.
        prop_assert_eq!(s.clusters, s.merged + s.closed_escalate + s.closed_review + s.closed_suppress);
        prop_assert_eq!(out.finals.len() as u64, s.clusters - s.merged);
        let mut seen = BTreeSet::new();
        let mut members_total = 0u64;
        for f in &out.finals {
            let members = f.members.as_ref().unwrap();
            members_total += members.len() as u64;
            prop_assert_eq!(members.len() as u64, f.alerts);
            for m in members {
                prop_assert!(m.starts_with(&format!("{}-", f.tenant)), "cluster of {} holds {}", f.tenant, m);
                prop_assert!(seen.insert(m.clone()), "alert {} in two clusters", m);
            }
        }
        prop_assert_eq!(members_total, s.clustered);
    }
}
