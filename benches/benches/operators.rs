//! Criterion benches, one group per operator, on generated Wazuh alerts.
//!
//! `cargo bench -p sluice-benches` — throughput is in alerts (elements).
//! The `parse_only` group (simd-json to a tape, nothing else) is the ceiling
//! every other figure is compared to in `BENCHMARKS.md`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sluice_connectors::generator::{Generator, GeneratorConfig};
use sluice_operators::correlate::{Correlate, CorrelateConfig};
use sluice_operators::decode::{DecodeConfig, Decoder, RawChunk, TenantConfig};
use sluice_operators::dedup::{Dedup, DedupConfig};
use sluice_operators::handoff::HandoffConfig;
use sluice_operators::operator::{AlertBatch, Context, Operator, Output};
use sluice_operators::score::ScoreConfig;

const ALERTS: usize = 20_000;
const BATCH: usize = 4096;

fn input() -> Vec<RawChunk> {
    let mut g =
        Generator::new(GeneratorConfig { tenants: 5, alerts: ALERTS as u64, seed: 7, ..GeneratorConfig::default() })
            .expect("valid generator config");
    let mut data = Vec::new();
    while g.next_into(&mut data).is_some() {}
    let all = RawChunk::from_lines("bench", data, 0, 0);
    all.lines.chunks(BATCH).map(|lines| RawChunk { lines: lines.to_vec(), ..all.clone() }).collect()
}

fn decoded(chunks: &[RawChunk]) -> Vec<AlertBatch> {
    let mut d = Decoder::new(DecodeConfig::default(), &TenantConfig::default()).expect("decoder");
    chunks.iter().filter_map(|c| d.decode(c).expect("decode").batch).map(AlertBatch::new).collect()
}

fn bench(c: &mut Criterion) {
    let chunks = input();
    let bytes: usize = chunks.iter().flat_map(|c| c.lines.iter().map(|(s, e)| e - s)).sum();

    let mut g = c.benchmark_group("parse_only");
    g.throughput(Throughput::Elements(ALERTS as u64));
    g.bench_function(BenchmarkId::new("simd_json_tape", ALERTS), |b| {
        let mut buffers = simd_json::Buffers::default();
        let mut scratch = Vec::new();
        b.iter(|| {
            let mut nodes = 0;
            for c in &chunks {
                for &(s, e) in &c.lines {
                    scratch.clear();
                    scratch.extend_from_slice(&c.data[s..e]);
                    nodes += simd_json::to_tape_with_buffers(&mut scratch, &mut buffers).map_or(0, |t| t.0.len());
                }
            }
            nodes
        })
    });
    g.finish();

    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(ALERTS as u64));
    g.bench_function(BenchmarkId::new("to_arrow", format!("{ALERTS}x{}B", bytes / ALERTS)), |b| {
        let mut d = Decoder::new(DecodeConfig::default(), &TenantConfig::default()).expect("decoder");
        b.iter(|| chunks.iter().map(|c| d.decode(c).expect("decode").batch.map_or(0, |b| b.num_rows())).sum::<usize>())
    });
    g.finish();

    let batches = decoded(&chunks);
    let mut g = c.benchmark_group("dedup");
    g.throughput(Throughput::Elements(ALERTS as u64));
    g.bench_function(BenchmarkId::new("default_fields", ALERTS), |b| {
        b.iter(|| {
            let mut op = Dedup::new(DedupConfig::default()).expect("dedup");
            let mut ctx = Context::default();
            let mut out: Vec<Output> = Vec::new();
            for batch in &batches {
                op.process(batch.clone(), &mut ctx, &mut out).expect("process");
            }
            out.len()
        })
    });
    g.finish();

    // Correlate reads dedup's marks: feed it dedup's output.
    let mut dedup = Dedup::new(DedupConfig::default()).expect("dedup");
    let mut marked = Vec::new();
    for batch in &batches {
        let mut out = Vec::new();
        dedup.process(batch.clone(), &mut Context::default(), &mut out).expect("process");
        marked.extend(out.into_iter().filter_map(|o| if let Output::Batch(b) = o { Some(b) } else { None }));
    }
    let mut g = c.benchmark_group("correlate");
    g.throughput(Throughput::Elements(ALERTS as u64));
    g.bench_function(BenchmarkId::new("score_and_handoff", ALERTS), |b| {
        b.iter(|| {
            let mut op = Correlate::new(CorrelateConfig::default(), ScoreConfig::default(), HandoffConfig::default())
                .expect("correlate");
            let mut ctx = Context::default();
            let mut out: Vec<Output> = Vec::new();
            for batch in &marked {
                op.process(batch.clone(), &mut ctx, &mut out).expect("process");
            }
            op.on_end(&mut ctx, &mut out).expect("end");
            out.len()
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
