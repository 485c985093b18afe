//! Golden end-to-end test: a small committed input, its exact escalated
//! clusters and decisions. Regenerate with `SLUICE_BLESS=1` and review the
//! diff of `tests/data/golden-clusters.json` by eye.

use serde_json::json;
use sluice_operators::cluster::Decision;
use sluice_pipeline::Config;

use crate::common::{data_path, run_lines};

#[test]
fn golden_clusters_and_decisions() {
    let input = std::fs::read(data_path("golden-input.ndjson")).unwrap();
    let lines: Vec<Vec<u8>> = input.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(<[u8]>::to_vec).collect();
    let out = run_lines(&Config::default(), lines, 1000);
    let escalated: Vec<_> = out
        .finals
        .iter()
        .filter(|f| f.decision == Decision::Escalate)
        .map(|f| {
            json!({
                "cluster_id": f.cluster_id,
                "tenant": f.tenant,
                "version": f.version,
                "score": f.score,
                "reason": f.reason,
                "first_seen": f.first_seen,
                "last_seen": f.last_seen,
                "tactics": f.tactics,
                "entities": f.entities,
                "rules": f.rules.iter().map(|r| format!("{}×{} L{}", r.rule_id, r.count, r.level)).collect::<Vec<_>>(),
                "breakdown": f.breakdown.iter().map(|l| format!("{} +{}: {}", l.factor, l.points, l.detail)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let s = &out.summary;
    let actual = json!({
        "summary": {
            "alerts_read": s.alerts_read, "dead_lettered": s.dead_lettered, "deduplicated": s.deduplicated,
            "clustered": s.clustered, "unclustered": s.unclustered, "clusters": s.clusters,
            "escalated": s.escalated, "updates": s.updates,
        },
        "decisions": {
            "escalate": out.finals.iter().filter(|f| f.decision == Decision::Escalate).count(),
            "review": out.finals.iter().filter(|f| f.decision == Decision::Review).count(),
            "suppress": out.finals.iter().filter(|f| f.decision == Decision::Suppress).count(),
        },
        "handoffs": out.handoffs.iter().map(|(k, id, v, score, d)| format!("{k:?} {id} v{v} score {score} {d}")).collect::<Vec<_>>(),
        "escalated_clusters": escalated,
    });
    let path = data_path("golden-clusters.json");
    let rendered = serde_json::to_string_pretty(&actual).unwrap() + "\n";
    if std::env::var_os("SLUICE_BLESS").is_some() {
        std::fs::write(&path, &rendered).unwrap();
        eprintln!("blessed {}", path.display());
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; create it with SLUICE_BLESS=1 and review it", path.display()));
    assert!(
        expected == rendered,
        "golden output changed; diff {} against a SLUICE_BLESS=1 run and review it",
        path.display()
    );
}
