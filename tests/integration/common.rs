//! Shared helpers: sources over in-memory lines, runs that collect reports.

use std::path::PathBuf;

use sluice_connectors::generator::{GeneratorConfig, Label};
use sluice_connectors::source::{Source, SourceError, StopFlag};
use sluice_connectors::synthetic::GeneratorSource;
use sluice_operators::cluster::ClusterReport;
use sluice_operators::decode::RawChunk;
use sluice_operators::operator::ReportKind;
use sluice_pipeline::Config;
use sluice_pipeline::runtime::{Event, RunOptions, Summary, run};

pub fn data_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data").join(name)
}

/// A source over lines held in memory, handed out `per_chunk` at a time.
pub struct LinesSource {
    lines: Vec<Vec<u8>>,
    next: usize,
    per_chunk: usize,
    offset: u64,
}

impl LinesSource {
    pub fn new(lines: Vec<Vec<u8>>, per_chunk: usize) -> Self {
        Self { lines, next: 0, per_chunk: per_chunk.max(1), offset: 0 }
    }
}

impl Source for LinesSource {
    fn name(&self) -> &str {
        "memory"
    }
    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        if self.next >= self.lines.len() {
            return Ok(None);
        }
        let end = (self.next + self.per_chunk).min(self.lines.len());
        let mut data = Vec::new();
        for l in &self.lines[self.next..end] {
            data.extend_from_slice(l);
            data.push(b'\n');
        }
        self.next = end;
        let chunk = RawChunk::from_lines("memory", data, self.offset, 0);
        self.offset += chunk.data.len() as u64;
        Ok(Some(chunk))
    }
}

/// Generated alerts as lines, with their labels.
pub fn generate(tenants: usize, alerts: u64, seed: u64) -> (Vec<Vec<u8>>, Vec<Label>) {
    let mut source = GeneratorSource::new(
        // A low rate stretches the stream over hours of event time, past the
        // baseline warm-up, so campaigns escalate.
        GeneratorConfig { tenants, alerts, seed, rate: 4.0, ..GeneratorConfig::default() },
        4096,
        StopFlag::new(),
    )
    .unwrap();
    let labels = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = labels.clone();
    source = source.with_labels(move |l| sink.lock().unwrap().push(l));
    let mut lines = Vec::new();
    while let Some(chunk) = source.next_chunk().unwrap() {
        for &(s, e) in &chunk.lines {
            lines.push(chunk.data[s..e].to_vec());
        }
    }
    drop(source);
    let labels = std::mem::take(&mut *labels.lock().unwrap());
    (lines, labels)
}

/// Everything a run produced, in a comparable form.
#[derive(Debug, Default)]
pub struct Outcome {
    /// (kind, cluster id, version, score, decision) of every escalation and update.
    pub handoffs: Vec<(ReportKind, String, u64, String, String)>,
    /// Final state of every cluster (with members), sorted by cluster id.
    pub finals: Vec<ClusterReport>,
    pub dead_letters: u64,
    /// Alert ids of records reported late.
    pub late: Vec<String>,
    pub checkpoints: u64,
    pub summary: Summary,
}

pub fn run_lines(config: &Config, lines: Vec<Vec<u8>>, per_chunk: usize) -> Outcome {
    let options = RunOptions { track_members: true, report_all_closed: true, ..RunOptions::default() };
    let mut outcome = Outcome::default();
    let summary = run(config, Box::new(LinesSource::new(lines, per_chunk)), &options, &StopFlag::new(), |e| {
        match e {
            Event::Report(ReportKind::Close, r) => outcome.finals.push(*r),
            Event::Report(kind, r) => outcome.handoffs.push((
                kind,
                r.cluster_id.clone(),
                r.version,
                format!("{:.2}", r.score),
                r.decision.to_string(),
            )),
            Event::DeadLetter(_) => outcome.dead_letters += 1,
            Event::Late(l) => outcome.late.push(l.alert_id),
            Event::Checkpoint(_) => outcome.checkpoints += 1,
        }
        Ok(())
    })
    .unwrap();
    outcome.handoffs.sort_by(|a, b| (&a.1, a.2, a.0).cmp(&(&b.1, b.2, b.0)));
    outcome.finals.sort_by(|a, b| a.cluster_id.cmp(&b.cluster_id));
    outcome.summary = summary;
    outcome
}
