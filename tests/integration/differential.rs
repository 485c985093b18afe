//! The same input at any batch size and any shard count gives the same
//! clusters, scores and decisions.

use sluice_pipeline::Config;

use crate::common::{generate, run_lines};

#[test]
fn batch_size_and_shard_count_do_not_change_results() {
    let (lines, _) = generate(4, 40_000, 11);
    let reference = {
        let mut c = Config::default();
        c.runtime.shards = 1;
        c.runtime.decode_threads = 1;
        run_lines(&c, lines.clone(), 4096)
    };
    assert!(!reference.handoffs.is_empty(), "the scenario must escalate something");
    assert!(reference.finals.len() > 10);
    for batch in [1usize, 2, 7, 49, 50, 51, 100, 4096] {
        for shards in [1usize, 2, 4] {
            let mut c = Config::default();
            c.runtime.shards = shards;
            c.runtime.decode_threads = 2;
            c.runtime.batch_size = batch.try_into().unwrap();
            let got = run_lines(&c, lines.clone(), batch * 3);
            assert_eq!(got.handoffs, reference.handoffs, "hand-offs differ at batch {batch}, shards {shards}");
            assert_eq!(got.finals, reference.finals, "final clusters differ at batch {batch}, shards {shards}");
        }
    }
}

/// The same with the shipped correlation rules on: detections land at the
/// same place among each tenant's alerts, so clusters, scores, decisions and
/// the rules' own findings do not change either.
#[test]
fn batch_size_and_shard_count_do_not_change_results_with_rules() {
    let (lines, _) = generate(3, 20_000, 5);
    let config = |shards: usize, batch: usize| {
        let mut c = Config::default();
        c.rules.builtin = true;
        c.runtime.shards = shards;
        c.runtime.decode_threads = 2;
        c.runtime.batch_size = batch.try_into().unwrap();
        c
    };
    let reference = run_lines(&config(1, 4096), lines.clone(), 4096);
    let detections = reference.finals.iter().filter(|f| !f.detections.is_empty()).count();
    assert!(detections > 0, "the rules must fire into some cluster of the scenario");
    for (batch, shards) in [(1usize, 2usize), (7, 3), (50, 1), (4096, 4)] {
        let got = run_lines(&config(shards, batch), lines.clone(), batch * 3);
        assert_eq!(got.handoffs, reference.handoffs, "hand-offs differ at batch {batch}, shards {shards}");
        assert_eq!(got.finals, reference.finals, "final clusters differ at batch {batch}, shards {shards}");
    }
}
