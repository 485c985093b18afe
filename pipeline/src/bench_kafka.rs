//! `sluice bench-kafka`: the Kafka path against its ceiling on this machine.
//!
//! In one run, over the same topic: a bare rdkafka consumer that only counts
//! messages (the ceiling of the Kafka path here), then Sluice's whole
//! pipeline, Kafka source to Kafka sink, with checkpoints on. The ratio says
//! whether Sluice or the broker path is the bottleneck.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use clap::Args;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use serde::Serialize;
use sluice_connectors::kafka::{KafkaConfig, KafkaSink, KafkaSource, produce_lines};
use sluice_connectors::source::StopFlag;
use sluice_pipeline::checkpoint::DirStore;
use sluice_pipeline::config::{Config, InputKind};
use sluice_pipeline::runtime::Event;
use sluice_pipeline::{CheckpointOptions, RunOptions, run};

#[derive(Args, Debug)]
pub struct BenchKafkaArgs {
    /// Kafka brokers.
    #[arg(long, value_name = "BROKERS")]
    kafka: String,
    /// Topic to read (created and filled with generated alerts when empty).
    #[arg(long, default_value = "sluice-bench")]
    topic: String,
    /// Alerts to generate into an empty topic.
    #[arg(long, default_value_t = 500_000)]
    alerts: u64,
    #[arg(long, default_value_t = 5)]
    tenants: usize,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Print the results as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Serialize)]
struct KafkaBench {
    topic: String,
    messages: u64,
    bare_consumer_per_sec: f64,
    pipeline_per_sec: f64,
    /// Pipeline throughput as a ratio to the bare consumer's, same run.
    ratio: f64,
    escalations: u64,
    checkpoints: u64,
}

pub fn cmd_bench_kafka(a: BenchKafkaArgs) -> Result<()> {
    let base = KafkaConfig { brokers: a.kafka.clone(), ..KafkaConfig::default() };
    let mut total = topic_size(&base, &a.topic)?;
    if total == 0 {
        eprintln!("filling {} with {} generated alerts over {} partitions", a.topic, a.alerts, a.partitions);
        sluice_connectors::kafka::ensure_topics(&base, &[(&a.topic, a.partitions)])?;
        let cfg = sluice_connectors::generator::GeneratorConfig {
            tenants: a.tenants,
            alerts: a.alerts,
            seed: 42,
            rate: 50.0,
            ..Default::default()
        };
        let mut data = Vec::new();
        sluice_connectors::generator::write_stream(cfg, &mut data, &mut std::io::sink(), |_| {})?;
        produce_lines(&base, &a.topic, &data, "manager.name")?;
        total = topic_size(&base, &a.topic)?;
    }
    let run_id = std::process::id();

    // The ceiling: count every message, nothing else.
    let (counted, secs) = bare_count(&base, &a.topic, &format!("bench-bare-{run_id}"), total)?;
    let bare = counted as f64 / secs;
    total = counted;
    eprintln!("bare consumer: {counted} messages at {bare:.0}/s");

    // The whole pipeline, Kafka to Kafka, with checkpoints.
    let state = tempfile::tempdir()?;
    let mut config = Config::default();
    config.input.kind = InputKind::Kafka;
    config.kafka = KafkaConfig {
        topics: vec![a.topic.clone()],
        group_id: format!("bench-pipeline-{run_id}"),
        exit_when_caught_up: true,
        idle_timeout: sluice_operators::time::Duration::from_secs(1),
        cases_topic: "sluice.cases.bench".into(),
        ..base.clone()
    };
    let options = RunOptions {
        checkpoint: Some(CheckpointOptions {
            store: std::sync::Arc::new(DirStore::new(state.path(), 3)?),
            interval: Duration::from_secs(10),
            fresh: true,
        }),
        ..RunOptions::default()
    };
    let stop = StopFlag::new();
    let source = KafkaSource::new(&config.kafka, stop.clone())?;
    let mut sink = KafkaSink::new(&config.kafka)?;
    let started = Instant::now();
    let summary = run(&config, Box::new(source), &options, &stop, |e| {
        let r = match &e {
            Event::Report(kind, report) => sink.send_case(
                &report.tenant,
                &report.idempotency_key,
                &format!("{kind:?}"),
                sluice_pipeline::output::stable_case_json(*kind, report).as_bytes(),
            ),
            Event::Checkpoint(_) => sink.confirm(Duration::from_secs(60)),
            _ => Ok(()),
        };
        r.map_err(|e| std::io::Error::other(e.to_string()))
    })?;
    sink.confirm(Duration::from_secs(60))?;
    // Up to the last record read, as for the bare consumer: the quiet spell
    // that tells the run it is caught up is not counted for either.
    let secs = summary.reading_secs;
    tracing::debug!(total_secs = started.elapsed().as_secs_f64(), secs, "pipeline run");
    if summary.alerts_read != total {
        bail!("the pipeline read {} of {total} messages", summary.alerts_read);
    }
    let piped = summary.alerts_read as f64 / secs;
    let report = KafkaBench {
        topic: a.topic,
        messages: total,
        bare_consumer_per_sec: bare,
        pipeline_per_sec: piped,
        ratio: piped / bare,
        escalations: summary.escalated,
        checkpoints: summary.checkpoints,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "kafka bench: {} messages; bare consumer {:.0}/s; pipeline (source → operators → sink) {:.0}/s; \
             ratio {:.2}; {} escalations, {} checkpoints",
            report.messages,
            report.bare_consumer_per_sec,
            report.pipeline_per_sec,
            report.ratio,
            report.escalations,
            report.checkpoints
        );
    }
    Ok(())
}

fn topic_size(config: &KafkaConfig, topic: &str) -> Result<u64> {
    let consumer: BaseConsumer =
        ClientConfig::new().set("bootstrap.servers", &config.brokers).create().context("kafka client")?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let mut total = 0u64;
    for t in metadata.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(10))?;
            total += (high - low).max(0) as u64;
        }
    }
    Ok(total)
}

/// Counts messages until `total` are read and no more come for a second
/// (a broker's high watermark may lag the last batch); returns the count
/// and the seconds until the last message.
fn bare_count(config: &KafkaConfig, topic: &str, group: &str, total: u64) -> Result<(u64, f64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &config.brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut n = 0u64;
    let mut bytes = 0usize;
    let started = Instant::now();
    let mut last = started;
    loop {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("bare consumer read {n} of {total} messages in 10 minutes");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(m) => {
                bytes += m?.payload().map_or(0, <[u8]>::len);
                n += 1;
                last = Instant::now();
            }
            None if n >= total && last.elapsed() > Duration::from_secs(1) => break,
            None => {}
        }
    }
    std::hint::black_box(bytes);
    Ok((n, (last - started).as_secs_f64()))
}
