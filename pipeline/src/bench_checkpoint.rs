//! `sluice bench-checkpoint`: what a checkpoint costs with a large live
//! state (by default 1 M dedup entries and 100 k open clusters), whole (a
//! file or OpenSearch run) and per partition (a Kafka run: each tenant
//! snapshot apart, one part per partition, and what taking the partitions
//! over on another instance costs).

use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Args;
use serde::Serialize;
use sluice_operators::decode::{Decoder, RawChunk};
use sluice_operators::operator::{Context, Output};
use sluice_pipeline::checkpoint::{Checkpoint, CheckpointStore, DirStore, OperatorState, PartCheckpoint};
use sluice_pipeline::config::Config;
use sluice_pipeline::runtime::{absorb_tenant, build_chain, snapshot_tenant};
use sluice_pipeline::watermark::WatermarkTracker;

#[derive(Args, Debug)]
pub struct BenchCheckpointArgs {
    /// Live dedup entries to build (spread over the tenants).
    #[arg(long, default_value_t = 1_000_000)]
    dedup_entries: u64,
    /// Open clusters to build (spread over the tenants).
    #[arg(long, default_value_t = 100_000)]
    clusters: u64,
    /// Tenants (per-tenant state caps apply: 200 k dedup entries, 50 k clusters).
    #[arg(long, default_value_t = 5)]
    tenants: u64,
    /// Kafka partitions the tenants are spread over (per-partition state).
    #[arg(long, default_value_t = 4)]
    partitions: u64,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct CheckpointBench {
    dedup_entries: u64,
    open_clusters: u64,
    snapshot_ms: f64,
    encode_ms: f64,
    /// Encode + write + fsync + rename, on the checkpoint thread.
    save_ms: f64,
    total_ms: f64,
    bytes: usize,
    /// The same state kept per partition, as a Kafka run keeps it.
    per_partition: PartitionedBench,
}

#[derive(Debug, Serialize)]
struct PartitionedBench {
    partitions: u64,
    /// Each tenant's state apart (on the shards: they pause this long).
    snapshot_ms: f64,
    /// Encode, write and fsync every part.
    save_ms: f64,
    total_ms: f64,
    bytes: usize,
    /// Another instance taking every partition over: read and decode the
    /// parts, and absorb their tenants into a fresh chain.
    take_over_ms: f64,
}

pub fn cmd_bench_checkpoint(a: BenchCheckpointArgs) -> Result<()> {
    let config = Config::default();
    let mut chain = build_chain(&config, &config.decode, config.correlate.clone())?;
    let mut decoder = Decoder::new(config.decode.clone(), &config.tenant)?;
    let mut ctx = Context::default();
    let mut out: Vec<Output> = Vec::new();
    // All within one dedup window and with no watermark, so nothing expires.
    let base_ms = 1_793_491_200_000i64;
    let total = a.dedup_entries.max(a.clusters);
    let mut lines = Vec::with_capacity(4096);
    let started = Instant::now();
    for i in 0..total {
        let tenant = i % a.tenants;
        let t = sluice_operators::time::Rfc3339(base_ms + (i * 200 / total) as i64 * 1000).to_string();
        // The first `clusters` alerts each open a cluster (level 7, own host
        // and address); the rest are low-level, each a new dedup entry.
        let (level, host) = if i < a.clusters { (7, format!("h{i}")) } else { (3, format!("h{}", i % 97)) };
        lines.push(format!(
            r#"{{"timestamp":"{t}","id":"{i}","rule":{{"id":"5716","level":{level},"description":"sshd: authentication failed."}},"agent":{{"id":"1","name":"{host}"}},"manager":{{"name":"tenant-{tenant}"}},"data":{{"srcip":"10.{}.{}.{}"}},"full_log":"event {i} on {host}"}}"#,
            (i >> 16) & 255,
            (i >> 8) & 255,
            i & 255
        ));
        if lines.len() == 4096 || i + 1 == total {
            let chunk = RawChunk::from_lines("bench", lines.join("\n").into_bytes(), 0, 0);
            lines.clear();
            if let Some(batch) = decoder.decode(&chunk)?.batch {
                chain.process(sluice_operators::operator::AlertBatch::new(batch), &mut ctx, &mut out)?;
                out.clear();
            }
        }
    }
    let dedup_entries = ctx.counters.total("dedup", "passed");
    let open_clusters = ctx.counters.total("correlate", "clusters_created");
    eprintln!(
        "built {dedup_entries} dedup entries and {open_clusters} clusters in {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let t0 = Instant::now();
    let mut operators = Vec::new();
    for op in chain.operators() {
        let t = Instant::now();
        let state = op.snapshot()?;
        eprintln!(
            "  {}: {:.1} MB in {:.0} ms",
            op.name(),
            state.len() as f64 / 1e6,
            t.elapsed().as_secs_f64() * 1000.0
        );
        operators.push(OperatorState { operator: op.name().to_string(), state });
    }
    let snapshot = t0.elapsed();
    let checkpoint = Checkpoint {
        id: 1,
        created_unix_ms: 0,
        writer: "bench".into(),
        source: "bench".into(),
        position: None,
        watermark: WatermarkTracker::new(1, 30_000, 10_000),
        shards: vec![operators],
    };
    let t1 = Instant::now();
    let bytes = checkpoint.encode().len();
    let encode = t1.elapsed();
    let dir = tempfile::tempdir()?;
    let store = DirStore::new(dir.path(), 1)?;
    let t2 = Instant::now();
    store.save(&checkpoint)?; // encode, write, fsync, rename, fsync the directory
    let save = t2.elapsed();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;

    // Per partition: tenant i on partition i % partitions.
    let partitions = a.partitions.max(1);
    let t3 = Instant::now();
    let mut parts: Vec<PartCheckpoint> = (0..partitions)
        .map(|p| PartCheckpoint {
            id: 1,
            created_unix_ms: 0,
            writer: "bench".into(),
            source: "bench".into(),
            input: format!("bench[{p}]"),
            offset: 0,
            newest: None,
            idle: false,
            tenants: Vec::new(),
        })
        .collect();
    for tenant in 0..a.tenants {
        if let Some(state) = snapshot_tenant(&chain, &format!("tenant-{tenant}"))? {
            parts[(tenant % partitions) as usize].tenants.push(state);
        }
    }
    let part_snapshot = t3.elapsed();
    let part_bytes = parts.iter().map(|p| p.encode().len()).sum();
    let t4 = Instant::now();
    store.save_parts("bench", &parts, "bench")?;
    let part_save = t4.elapsed();
    drop(parts);
    let t5 = Instant::now();
    let mut fresh = build_chain(&config, &config.decode, config.correlate.clone())?;
    for p in 0..partitions {
        let part = store.load_part("bench", &format!("bench[{p}]"))?.expect("saved above");
        for tenant in part.tenants {
            absorb_tenant(&mut fresh, tenant)?;
        }
    }
    let take_over = t5.elapsed();
    let per_partition = PartitionedBench {
        partitions,
        snapshot_ms: ms(part_snapshot),
        save_ms: ms(part_save),
        total_ms: ms(part_snapshot + part_save),
        bytes: part_bytes,
        take_over_ms: ms(take_over),
    };

    let report = CheckpointBench {
        dedup_entries,
        open_clusters,
        snapshot_ms: ms(snapshot),
        encode_ms: ms(encode),
        save_ms: ms(save),
        total_ms: ms(snapshot + save),
        bytes,
        per_partition,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "checkpoint of {} dedup entries + {} open clusters: {:.1} MB; snapshot {:.0} ms (on the shards: \
             they pause this long), save {:.0} ms (of which encode {:.0} ms; on the checkpoint thread), total {:.0} ms",
            report.dedup_entries,
            report.open_clusters,
            report.bytes as f64 / 1e6,
            report.snapshot_ms,
            report.save_ms,
            report.encode_ms,
            report.total_ms
        );
        let p = &report.per_partition;
        println!(
            "per partition ({} partitions, as with Kafka): {:.1} MB; snapshot {:.0} ms, save {:.0} ms, total {:.0} ms; \
             another instance taking them all over (load + absorb): {:.0} ms",
            p.partitions,
            p.bytes as f64 / 1e6,
            p.snapshot_ms,
            p.save_ms,
            p.total_ms,
            p.take_over_ms
        );
    }
    Ok(())
}
