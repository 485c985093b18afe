//! The rule workbench: runs rules over a file of alerts, alone (no dedup,
//! no correlation), and reports every detection and each rule's cost.
//! `sluice rules test` prints it; the library tests compare it to files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_operators::decode::{DecodeConfig, Decoder, RawChunk, TenantConfig};
use sluice_operators::detection::Detection;
use sluice_operators::operator::{AlertBatch, Context, Operator, Output};
use sluice_operators::time::Rfc3339;

use crate::engine::{Compiled, Engine};
use crate::error::RuleError;
use crate::operator::{RuleStats, Rules};

/// What a workbench run found.
#[derive(Debug, Default)]
pub struct Report {
    pub alerts: u64,
    pub dead_letters: u64,
    pub detections: Vec<Detection>,
    pub stats: BTreeMap<String, RuleStats>,
    pub elapsed: Duration,
}

/// Lines per decoded batch.
const CHUNK_LINES: usize = 4096;

/// Runs `rules` over the alerts file at `path` (`-` for stdin).
pub fn run_file(
    engine: Engine,
    rules: Vec<Compiled>,
    path: &Path,
    decode: DecodeConfig,
    tenant: &TenantConfig,
    lateness_ms: i64,
) -> Result<Report, RuleError> {
    let data = if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).map(|_| buf)
    } else {
        std::fs::read(path)
    }
    .map_err(|source| RuleError::Read { path: path.to_path_buf(), source })?;
    run_bytes(engine, rules, &data, decode, tenant, lateness_ms)
}

/// As [`run_file`], over NDJSON bytes.
pub fn run_bytes(
    engine: Engine,
    rules: Vec<Compiled>,
    data: &[u8],
    decode: DecodeConfig,
    tenant: &TenantConfig,
    lateness_ms: i64,
) -> Result<Report, RuleError> {
    let started = std::time::Instant::now();
    let state = |e: sluice_operators::Error| RuleError::State(e.to_string());
    let mut decoder = Decoder::new(decode, tenant).map_err(state)?;
    let mut op = Rules::new(engine, rules, lateness_ms, usize::MAX);
    let mut ctx = Context::default();
    let mut out: Vec<Output> = Vec::new();
    let mut report = Report::default();
    let mut lines = Vec::new();
    let mut start = 0;
    for (i, &b) in data.iter().enumerate() {
        if b == b'\n' {
            if i > start {
                lines.push((start, i));
            }
            start = i + 1;
        }
    }
    if start < data.len() {
        lines.push((start, data.len()));
    }
    for part in lines.chunks(CHUNK_LINES) {
        let base = part[0].0;
        let end = part[part.len() - 1].1;
        let chunk = RawChunk {
            source: Arc::from("workbench"),
            data: data[base..end].to_vec(),
            lines: part.iter().map(|&(s, e)| (s - base, e - base)).collect(),
            base_offset: base as u64,
            ..RawChunk::default()
        };
        let decoded = decoder.decode(&chunk).map_err(state)?;
        report.alerts += part.len() as u64;
        report.dead_letters += decoded.dead_letters.len() as u64;
        if let Some(batch) = decoded.batch {
            op.process(AlertBatch::new(batch), &mut ctx, &mut out).map_err(state)?;
        }
    }
    op.on_end(&mut ctx, &mut out).map_err(state)?;
    report.detections = out
        .into_iter()
        .filter_map(|o| match o {
            Output::Detection(d) => Some(*d),
            _ => None,
        })
        .collect();
    report.stats = op.stats().clone();
    report.elapsed = started.elapsed();
    Ok(report)
}

/// One detection as one stable line of text (the library's expected files).
pub fn detection_line(d: &Detection) -> String {
    let entities: Vec<String> = d.entities.iter().map(|(k, v)| format!("{}={v}", k.as_str())).collect();
    format!(
        "{} tenant={} window=[{}, {}) severity={} entities=[{}] alerts=[{}]{}",
        d.rule,
        d.tenant,
        Rfc3339(d.window_start),
        Rfc3339(d.window_end),
        d.severity,
        entities.join(" "),
        d.alert_ids.join(" "),
        d.summary.as_ref().map(|s| format!(" summary={s:?}")).unwrap_or_default()
    )
}
