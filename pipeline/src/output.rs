//! What a person or a tool sees: escalations on stdout, the run summary, and
//! the NDJSON files (case files, dead letters, late records).

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use sluice_connectors::ndjson::NdjsonWriter;
use sluice_operators::cluster::ClusterReport;
use sluice_operators::operator::ReportKind;

use crate::config::{Format, OutputConfig};
use crate::runtime::{Event, Summary};
use crate::sinks::json_safe;

/// A case file line: the report plus what kind of hand-off it is (last:
/// it changes between versions).
#[derive(serde::Serialize)]
struct CaseLine<'a> {
    #[serde(flatten)]
    report: &'a ClusterReport,
    kind: ReportKind,
}

/// The JSON Schema of a case file line, as published in
/// `docs/case-file.schema.json` (a test keeps the two equal).
pub fn case_file_schema() -> serde_json::Value {
    /// A Sluice case file: one cluster's state at a hand-off (`escalate`,
    /// `update`) or when it closes (`close`). Texts taken from alerts are
    /// redacted (see `redaction`); `idempotency_key` = `cluster_id:version`
    /// names one content only.
    #[derive(schemars::JsonSchema)]
    #[schemars(title = "Sluice case file")]
    #[allow(dead_code)] // only its schema is used
    struct CaseFile {
        #[serde(flatten)]
        report: ClusterReport,
        kind: ReportKind,
    }
    serde_json::to_value(schemars::schema_for!(CaseFile)).expect("a schema serializes")
}

/// One NDJSON case file line for a report.
///
/// `<`, `>` and `&` are escaped (`\u003c`…) in every case file, so a case
/// file can be fenced in a prompt (`<case_file>…</case_file>`) and nothing
/// taken from an alert can close the fence.
pub fn case_json(kind: ReportKind, report: &ClusterReport) -> String {
    json_safe(&serde_json::to_string(&CaseLine { report, kind }).expect("a cluster report always serializes"))
}

/// A case file line without the volatile part (the wall-clock moment the
/// triggering alert was read): a report re-emitted after a restart is byte
/// for byte what was sent before, so a receiver can check an idempotency key
/// against its content.
pub fn stable_case_json(kind: ReportKind, report: &ClusterReport) -> String {
    let mut report = report.clone();
    if let Some(trigger) = &mut report.trigger {
        trigger.ingest_time_us = 0;
    }
    case_json(kind, &report)
}

/// A few lines describing a report, for a person.
pub fn human(kind: ReportKind, r: &ClusterReport) -> String {
    let mut s = String::new();
    let head = match kind {
        ReportKind::Escalate => "ESCALATE",
        ReportKind::Update => "UPDATE  ",
        ReportKind::Close => "FINAL   ",
    };
    let _ = writeln!(
        s,
        "{head} [{}] cluster {} v{}  score {:.1}  {} alerts ({} duplicates), max level {}",
        r.tenant, r.cluster_id, r.version, r.score, r.alerts, r.duplicates, r.max_level
    );
    let _ = writeln!(s, "         window   {} .. {}", r.first_seen, r.last_seen);
    if !r.tactics.is_empty() {
        let _ = writeln!(s, "         tactics  {}", r.tactics.join(" → "));
    }
    let entities: Vec<String> = r
        .entities
        .iter()
        .map(|(k, v)| {
            let more = r.entities_truncated.get(k).map_or(String::new(), |n| format!(" +{n}"));
            let shown: Vec<&str> = v.iter().take(5).map(String::as_str).collect();
            let extra = v.len().saturating_sub(5);
            format!("{k}: {}{}{more}", shown.join(", "), if extra > 0 { format!(" +{extra}") } else { String::new() })
        })
        .collect();
    let _ = writeln!(s, "         entities {}", entities.join(" | "));
    let mut rules: Vec<_> = r.rules.iter().collect();
    rules.sort_by(|a, b| b.level.cmp(&a.level).then(b.count.cmp(&a.count)));
    let top: Vec<String> = rules.iter().take(4).map(|r| format!("{}×{} (L{})", r.rule_id, r.count, r.level)).collect();
    let _ = writeln!(
        s,
        "         rules    {}{}",
        top.join(", "),
        if rules.len() > 4 { format!(" +{} more", rules.len() - 4) } else { String::new() }
    );
    let why: Vec<String> = r.breakdown.iter().map(|l| format!("{} +{}", l.factor, l.points)).collect();
    let _ = writeln!(s, "         why      {} — {}", why.join(", "), r.reason);
    s
}

/// The end-of-run summary, for a person.
pub fn human_summary(s: &Summary) -> String {
    let mut out = String::new();
    let l = &s.triage_latency_us;
    let _ = writeln!(out, "── summary ───────────────────────────────────────────");
    let _ = writeln!(out, "alerts read        {:>12}", s.alerts_read);
    let _ = writeln!(out, "dead-lettered      {:>12}", s.dead_lettered);
    let _ = writeln!(out, "late               {:>12}", s.late);
    let _ = writeln!(out, "deduplicated       {:>12}", s.deduplicated);
    let _ = writeln!(out, "clustered          {:>12}   (unclustered low-level: {})", s.clustered, s.unclustered);
    let _ = writeln!(
        out,
        "clusters           {:>12}   ({} merged; final decisions: escalate {}, review {}, suppress {})",
        s.clusters, s.merged, s.closed_escalate, s.closed_review, s.closed_suppress
    );
    let _ = writeln!(out, "escalated          {:>12}   (+{} updates)", s.escalated, s.updates);
    let _ = writeln!(out, "reduction          {:>12.1}×  alerts read per escalated cluster", s.reduction);
    let _ = writeln!(
        out,
        "triage latency     p50 {:.2} ms, p99 {:.2} ms ({} escalations/updates)",
        l.p50 as f64 / 1000.0,
        l.p99 as f64 / 1000.0,
        l.count
    );
    let _ = writeln!(out, "throughput         {:>12.0} alerts/s over {:.2} s", s.alerts_per_sec, s.elapsed_secs);
    out
}

/// Writes events where the config says: stdout, case file, dead letters, late.
pub struct EventWriter<W: Write> {
    format: Format,
    stdout: W,
    cases: Option<NdjsonWriter>,
    dead_letters_path: String,
    dead_letters: Option<NdjsonWriter>,
    late_path: String,
    late: Option<NdjsonWriter>,
    /// Print `close` reports too (final state of escalated clusters).
    pub show_final: bool,
    /// Append to existing files (a run resuming from a checkpoint).
    append: bool,
}

impl<W: Write> std::fmt::Debug for EventWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWriter").field("format", &self.format).finish_non_exhaustive()
    }
}

impl<W: Write> EventWriter<W> {
    /// Opens the configured files; `append` keeps what they hold (a run
    /// resuming from a checkpoint), otherwise they start empty.
    pub fn new(config: &OutputConfig, stdout: W, append: bool) -> std::io::Result<Self> {
        let open = |p: &str| NdjsonWriter::open(Path::new(p), append);
        Ok(Self {
            format: config.format,
            stdout,
            cases: config.cases.as_deref().map(open).transpose()?,
            dead_letters_path: config.dead_letters.clone(),
            dead_letters: None,
            late_path: config.late.clone(),
            late: None,
            show_final: false,
            append,
        })
    }

    /// Handles one event; returning is the acknowledgement (data flushed).
    pub fn write(&mut self, event: Event) -> std::io::Result<()> {
        match event {
            Event::Report(kind, report) => {
                if let Some(cases) = &mut self.cases {
                    cases.write_line(&case_json(kind, &report))?;
                    cases.flush()?;
                }
                if kind != ReportKind::Close || self.show_final {
                    match self.format {
                        Format::Human => self.stdout.write_all(human(kind, &report).as_bytes())?,
                        Format::Json => writeln!(self.stdout, "{}", case_json(kind, &report))?,
                        Format::Quiet => {}
                    }
                    self.stdout.flush()?;
                }
            }
            Event::DeadLetter(dl) => {
                tracing::warn!(source = %dl.source, offset = dl.offset, reason = %dl.reason, "dead letter");
                if self.dead_letters.is_none() {
                    self.dead_letters = Some(NdjsonWriter::open(Path::new(&self.dead_letters_path), self.append)?);
                }
                let w = self.dead_letters.as_mut().expect("opened above");
                w.write_line(&dl.to_json())?;
                w.flush()?;
            }
            Event::Late(late) => {
                if self.late.is_none() {
                    self.late = Some(NdjsonWriter::open(Path::new(&self.late_path), self.append)?);
                }
                let w = self.late.as_mut().expect("opened above");
                w.write_line(&serde_json::to_string(&late).expect("serializable"))?;
            }
            Event::Checkpoint(_) => {
                for w in [&mut self.cases, &mut self.dead_letters, &mut self.late].into_iter().flatten() {
                    w.sync()?;
                }
                self.stdout.flush()?;
            }
        }
        Ok(())
    }

    /// Flushes all files.
    pub fn finish(&mut self) -> std::io::Result<()> {
        for w in [&mut self.cases, &mut self.dead_letters, &mut self.late].into_iter().flatten() {
            w.flush()?;
        }
        self.stdout.flush()
    }

    /// Where dead letters went, if any were written.
    pub fn dead_letter_file(&self) -> Option<&str> {
        self.dead_letters.as_ref().map(NdjsonWriter::path)
    }

    /// Where late records went, if any were written.
    pub fn late_file(&self) -> Option<&str> {
        self.late.as_ref().map(NdjsonWriter::path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_case_file_schema_is_the_one_the_code_writes() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/case-file.schema.json");
        let schema = serde_json::to_string_pretty(&case_file_schema()).unwrap() + "\n";
        if std::env::var("SLUICE_BLESS").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &schema).unwrap();
        }
        let published = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(published == schema, "{} is out of date: run with SLUICE_BLESS=1 and review the diff", path.display());
    }
}
