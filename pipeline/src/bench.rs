//! `sluice bench`: throughput against the parse-only ceiling, peak RSS, and
//! triage latency under an offered load. Figures go to `BENCHMARKS.md`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Args;
use serde::Serialize;
use sluice_connectors::file::{FileOptions, FileSource};
use sluice_connectors::generator::{GeneratorConfig, write_stream};
use sluice_connectors::source::{Source, SourceError, StopFlag};
use sluice_operators::decode::{Decoder, RawChunk};
use sluice_pipeline::checkpoint::DirStore;
use sluice_pipeline::config::{Config, Format};
use sluice_pipeline::runtime::LatencySummary;
use sluice_pipeline::{CheckpointOptions, RunOptions, run};

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Alerts file to measure; generated (and kept) when absent.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// Alerts to generate when there is no input.
    #[arg(long, default_value_t = 2_000_000)]
    alerts: u64,
    #[arg(long, default_value_t = 5)]
    tenants: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Offered load for the latency run, alerts per wall-clock second.
    #[arg(long, default_value_t = 100_000.0)]
    offered_rate: f64,
    /// Seconds of the latency run (20 s of the default input gives ~90
    /// escalations and updates to take percentiles of).
    #[arg(long, default_value_t = 20.0)]
    latency_secs: f64,
    /// Config for the pipeline runs.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct Stage {
    name: &'static str,
    alerts_per_sec: f64,
    mb_per_sec: f64,
    secs: f64,
    /// Throughput as a ratio to parse-only in this same run.
    ratio_to_parse: f64,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    input: String,
    alerts: u64,
    bytes: u64,
    cores: usize,
    stages: Vec<Stage>,
    peak_rss_mib: f64,
    escalated: u64,
    offered_rate: f64,
    achieved_rate: f64,
    triage_latency_us: LatencySummary,
    /// The latency run again, checkpointing every second.
    triage_latency_checkpointing_us: LatencySummary,
    checkpoints: u64,
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

pub fn cmd_bench(a: BenchArgs) -> Result<()> {
    let mut config = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    config.output.format = Format::Quiet;
    let path = match &a.input {
        Some(p) => p.clone(),
        None => {
            let p = PathBuf::from(format!("target/bench-{}-{}-{}.json", a.tenants, a.alerts, a.seed));
            if !p.exists() {
                eprintln!("generating {} alerts into {} …", a.alerts, p.display());
                std::fs::create_dir_all("target")?;
                let cfg = GeneratorConfig {
                    tenants: a.tenants,
                    alerts: a.alerts,
                    seed: a.seed,
                    ..GeneratorConfig::default()
                };
                let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&p)?);
                write_stream(cfg, &mut out, &mut std::io::sink(), |_| {})?;
                std::io::Write::flush(&mut out)?;
            }
            p
        }
    };
    let path_str = path.to_str().context("input path is not UTF-8")?.to_string();
    let bytes = std::fs::metadata(&path)?.len();

    // 1. Full pipeline, file to escalations, all cores. First, so peak RSS
    //    is the pipeline's own.
    let stop = StopFlag::new();
    let source = Box::new(FileSource::open(&path_str, FileOptions::default(), stop.clone())?);
    let summary = run(&config, source, &RunOptions::default(), &stop, |_| Ok(()))?;
    let full_secs = summary.elapsed_secs;
    let peak_rss = peak_rss_mib();

    // 2. Parse only (the ceiling) and 3. decode to Arrow: one thread each,
    //    timing only the work on chunks already read.
    let mut buffers = simd_json::Buffers::default();
    let mut scratch = Vec::new();
    let mut decoder = Decoder::new(config.decode_config(), &config.tenant)?;
    let (mut parse_secs, mut decode_secs) = (0.0f64, 0.0f64);
    let (mut alerts, mut nodes, mut rows) = (0u64, 0usize, 0usize);
    let mut src = FileSource::open(&path_str, FileOptions::default(), StopFlag::new())?;
    while let Some(c) = src.next_chunk()? {
        alerts += c.lines.len() as u64;
        let t = Instant::now();
        for &(s, e) in &c.lines {
            scratch.clear();
            scratch.extend_from_slice(&c.data[s..e]);
            if let Ok(tape) = simd_json::to_tape_with_buffers(&mut scratch, &mut buffers) {
                nodes += tape.0.len();
            }
        }
        parse_secs += t.elapsed().as_secs_f64();
        let t = Instant::now();
        for part in c.lines.chunks(config.runtime.batch_size.get()) {
            let sub = RawChunk { lines: part.to_vec(), ..c.clone() };
            rows += decoder.decode(&sub)?.batch.map_or(0, |b| b.num_rows());
        }
        decode_secs += t.elapsed().as_secs_f64();
    }
    std::hint::black_box((nodes, rows));

    // 4. Triage latency at an offered load below capacity.
    let stop = StopFlag::new();
    let inner = FileSource::open(&path_str, FileOptions { block: 64 << 10, ..FileOptions::default() }, stop.clone())?;
    let limit = (a.offered_rate * a.latency_secs) as u64;
    let paced = Paced { inner, rate: a.offered_rate, sent: 0, limit, start: None };
    let latency = run(&config, Box::new(paced), &RunOptions::default(), &stop, |_| Ok(()))?;

    // 5. The same, checkpointing every second: does a checkpoint stall triage?
    let stop = StopFlag::new();
    let inner = FileSource::open(&path_str, FileOptions { block: 64 << 10, ..FileOptions::default() }, stop.clone())?;
    let paced = Paced { inner, rate: a.offered_rate, sent: 0, limit, start: None };
    let state = tempfile::tempdir()?;
    let options = RunOptions {
        checkpoint: Some(CheckpointOptions {
            store: std::sync::Arc::new(DirStore::new(state.path(), 2)?),
            interval: Duration::from_secs(1),
            fresh: true,
        }),
        ..RunOptions::default()
    };
    let checkpointed = run(&config, Box::new(paced), &options, &stop, |_| Ok(()))?;

    let mb = bytes as f64 / (1024.0 * 1024.0);
    let stage = |name, secs: f64| Stage {
        name,
        alerts_per_sec: alerts as f64 / secs,
        mb_per_sec: mb / secs,
        secs,
        ratio_to_parse: parse_secs / secs,
    };
    let report = BenchReport {
        input: path_str,
        alerts,
        bytes,
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        stages: vec![
            stage("parse_only_1_thread", parse_secs),
            stage("decode_to_arrow_1_thread", decode_secs),
            stage("full_pipeline", full_secs),
        ],
        peak_rss_mib: peak_rss,
        escalated: summary.escalated,
        offered_rate: a.offered_rate,
        achieved_rate: latency.alerts_per_sec,
        triage_latency_us: latency.triage_latency_us,
        triage_latency_checkpointing_us: checkpointed.triage_latency_us,
        checkpoints: checkpointed.checkpoints,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("input {} — {} alerts, {:.1} MiB, {} cores", report.input, alerts, mb, report.cores);
        println!("{:<26} {:>12} {:>10} {:>9} {:>8}", "stage", "alerts/s", "MiB/s", "secs", "×parse");
        for s in &report.stages {
            println!(
                "{:<26} {:>12.0} {:>10.1} {:>9.2} {:>8.2}",
                s.name, s.alerts_per_sec, s.mb_per_sec, s.secs, s.ratio_to_parse
            );
        }
        println!("peak RSS {:.0} MiB, {} escalated", report.peak_rss_mib, report.escalated);
        let l = &report.triage_latency_us;
        println!(
            "triage latency at {:.0} alerts/s offered ({:.0} achieved): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms over {} escalations",
            report.offered_rate,
            report.achieved_rate,
            l.p50 as f64 / 1e3,
            l.p99 as f64 / 1e3,
            l.p999 as f64 / 1e3,
            l.max as f64 / 1e3,
            l.count
        );
        let c = &report.triage_latency_checkpointing_us;
        println!(
            "  the same with a checkpoint every second ({} taken): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            report.checkpoints,
            c.p50 as f64 / 1e3,
            c.p99 as f64 / 1e3,
            c.p999 as f64 / 1e3,
            c.max as f64 / 1e3
        );
    }
    Ok(())
}

/// A source that hands out chunks no faster than `rate` records per second.
struct Paced {
    inner: FileSource,
    rate: f64,
    sent: u64,
    limit: u64,
    start: Option<Instant>,
}

impl Source for Paced {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        if self.sent >= self.limit {
            return Ok(None);
        }
        let start = *self.start.get_or_insert_with(Instant::now);
        let Some(mut chunk) = self.inner.next_chunk()? else { return Ok(None) };
        let due = Duration::from_secs_f64(self.sent as f64 / self.rate);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        chunk.ingest_us = sluice_connectors::source::now_us();
        self.sent += chunk.lines.len() as u64;
        Ok(Some(chunk))
    }
}
