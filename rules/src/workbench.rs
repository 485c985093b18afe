//! The rule workbench: runs rules over a file of alerts, alone (no dedup,
//! no correlation), and reports every detection and each rule's cost.
//! `sluice rules test` prints it; the library tests compare it to files.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{RecordBatch, UInt32Array};
use arrow::compute::take_record_batch;
use sluice_operators::decode::{DecodeConfig, Decoder, RawChunk, TenantConfig};
use sluice_operators::detection::Detection;
use sluice_operators::operator::{AlertBatch, Context, Operator, Output};
use sluice_operators::schema::AlertColumns;
use sluice_operators::time::Rfc3339;

use crate::engine::{Compiled, Engine, to_table_rows};
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
    let mut op = Rules::new(engine, rules, lateness_ms, usize::MAX);
    let mut ctx = Context::default();
    let mut out: Vec<Output> = Vec::new();
    let mut report = Report::default();
    decode_lines(data, decode, tenant, |batch, lines, dead| {
        report.alerts += lines as u64;
        report.dead_letters += dead as u64;
        match batch {
            Some(batch) => op.process(AlertBatch::new(batch), &mut ctx, &mut out).map_err(state),
            None => Ok(()),
        }
    })?;
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

/// Decodes NDJSON bytes in chunks of [`CHUNK_LINES`], handing each decoded
/// batch (if any row decoded), its line count and its dead letters to `f`.
fn decode_lines(
    data: &[u8],
    decode: DecodeConfig,
    tenant: &TenantConfig,
    mut f: impl FnMut(Option<RecordBatch>, usize, usize) -> Result<(), RuleError>,
) -> Result<(), RuleError> {
    let state = |e: sluice_operators::Error| RuleError::State(e.to_string());
    let mut decoder = Decoder::new(decode, tenant).map_err(state)?;
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
        f(decoded.batch, part.len(), decoded.dead_letters.len())?;
    }
    Ok(())
}

/// What one rule cost over every tenant's alerts (`sluice rules bench`).
#[derive(Debug, Clone)]
pub struct BenchRule {
    pub rule: String,
    pub time: Duration,
    /// Result rows over all tenants.
    pub rows: usize,
}

/// A benchmark of rules over a file: each tenant's alerts are one window.
#[derive(Debug, Default)]
pub struct Bench {
    pub alerts: u64,
    pub dead_letters: u64,
    pub tenants: usize,
    /// Decoding into the `alerts` table (not part of the rules' time).
    pub decode: Duration,
    pub rules: Vec<BenchRule>,
    /// The `alerts` table, every tenant's rows (for `--export-table`).
    pub table: Vec<RecordBatch>,
}

/// Decodes NDJSON bytes into the `alerts` table and runs every rule once
/// per tenant (in its scope) over all of that tenant's alerts as one window.
pub fn bench(
    engine: &Engine,
    rules: &[Compiled],
    data: &[u8],
    decode: DecodeConfig,
    tenant: &TenantConfig,
) -> Result<Bench, RuleError> {
    let started = std::time::Instant::now();
    let mut out = Bench::default();
    let mut by_tenant: BTreeMap<String, Vec<RecordBatch>> = BTreeMap::new();
    let schema = engine.schema().clone();
    decode_lines(data, decode, tenant, |batch, lines, dead| {
        out.alerts += lines as u64;
        out.dead_letters += dead as u64;
        let Some(batch) = batch else { return Ok(()) };
        let table = to_table_rows(&batch, &schema)?;
        let cols = AlertColumns::new(&batch).map_err(|e| RuleError::State(e.to_string()))?;
        let mut rows: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
        for row in 0..batch.num_rows() {
            rows.entry(cols.tenant(row)).or_default().push(row as u32);
        }
        for (name, rows) in rows {
            let part = take_record_batch(&table, &UInt32Array::from(rows))
                .map_err(|e| RuleError::State(format!("split by tenant: {e}")))?;
            by_tenant.entry(name.to_string()).or_default().push(part);
        }
        out.table.push(table);
        Ok(())
    })?;
    out.decode = started.elapsed();
    out.tenants = by_tenant.len();
    for rule in rules {
        let started = std::time::Instant::now();
        let mut rows = 0;
        for (name, batches) in by_tenant.iter().filter(|(name, _)| rule.rule.scope.includes(name)) {
            let results = engine.evaluate(rule, batches.clone()).map_err(|e| match e {
                RuleError::Eval { rule, message } => {
                    RuleError::Eval { rule, message: format!("tenant {name}: {message}") }
                }
                e => e,
            })?;
            rows += results.iter().map(RecordBatch::num_rows).sum::<usize>();
        }
        out.rules.push(BenchRule { rule: rule.rule.name.clone(), time: started.elapsed(), rows });
    }
    Ok(out)
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
