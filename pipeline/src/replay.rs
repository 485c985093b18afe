//! `sluice replay`: history through a config at full speed.
//!
//! A file, or a time range of the Wazuh indexer (the `[opensearch]` source
//! in backfill mode), runs through the config's pipeline (rules, dedup,
//! correlation, scoring, hand-off policy) exactly as `sluice run` would,
//! but with no checkpoints, no store, no sinks and no admin server: only the
//! case files of what would have been escalated are written, for tuning
//! thresholds and rules on history. Results equal a live run over the same
//! alerts (the tests compare them). Progress goes to stderr: a bar redrawn
//! in place when stderr is a terminal, a line every few seconds otherwise.

use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use sluice_connectors::source::{InputChange, Source, SourceError};
use sluice_operators::decode::RawChunk;
use sluice_pipeline::config::{Format, InputKind, Switch};
use sluice_pipeline::output::{EventWriter, human_summary};
use sluice_pipeline::{RunOptions, run};

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// TOML config file whose rules and policy to replay through.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// A Wazuh alerts file (NDJSON).
    #[arg(long, short, conflicts_with = "opensearch")]
    input: Option<String>,
    /// Read the `[opensearch]` index pattern instead (a backfill of
    /// `--from`..`--to`, or of `opensearch.from`/`to`).
    #[arg(long)]
    opensearch: bool,
    /// Oldest alert timestamp (`2024-05-01T00:00:00Z` or epoch ms).
    #[arg(long, requires = "opensearch")]
    from: Option<String>,
    /// Newest alert timestamp, inclusive.
    #[arg(long, requires = "opensearch")]
    to: Option<String>,
    /// Where the case files of what would have been escalated go (NDJSON).
    #[arg(long, short)]
    output: String,
    /// Dead letters go here.
    #[arg(long, default_value = "sluice-replay-dead-letters.ndjson")]
    dead_letters: String,
    /// Late records go here.
    #[arg(long, default_value = "sluice-replay-late.ndjson")]
    late: String,
}

pub fn cmd_replay(
    a: ReplayArgs,
    load: impl Fn(Option<&std::path::Path>) -> Result<sluice_pipeline::config::Config>,
) -> Result<()> {
    let mut config = load(a.config.as_deref())?;
    match (&a.input, a.opensearch) {
        (Some(path), false) => {
            config.input.kind = InputKind::File;
            config.input.path = Some(path.clone());
            config.input.follow = false;
        }
        (None, true) => {
            let os = &mut config.opensearch;
            config.input.kind = InputKind::OpenSearch;
            os.mode = sluice_connectors::opensearch::Mode::Backfill;
            os.then_follow = false;
            if a.from.is_some() {
                os.from = a.from.clone();
            }
            if a.to.is_some() {
                os.to = a.to.clone();
            }
        }
        _ => bail!("replay needs --input FILE or --opensearch"),
    }
    // History only: nothing is handed off, nothing is kept.
    config.checkpoint.mode = Switch::Off;
    config.store.mode = Switch::Off;
    config.sinks.webhook.url.clear();
    config.sinks.llm.base_url.clear();
    config.output.format = Format::Quiet;
    config.output.cases = Some(a.output.clone());
    config.output.dead_letters = a.dead_letters;
    config.output.late = a.late;
    let errors = config.validate();
    if !errors.is_empty() {
        bail!("invalid settings:\n  - {}", errors.join("\n  - "));
    }
    let stop = crate::stop_on_signals();
    let total = a.input.as_deref().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len());
    let inner = crate::open_source(&config, &stop)?;
    let source = Box::new(Progress::new(inner, total));
    let mut writer = EventWriter::new(&config.output, std::io::sink(), false)?;
    let options = RunOptions::default();
    let summary = run(&config, source, &options, &stop, |e| writer.write(e))?;
    writer.finish()?;
    eprintln!();
    let mut err = BufWriter::new(std::io::stderr().lock());
    write!(err, "{}", human_summary(&summary))?;
    writeln!(err, "case files of what would have been escalated: {}", a.output)?;
    err.flush().context("writing the summary")?;
    Ok(())
}

/// A source that reports how far it has read, on stderr.
struct Progress {
    inner: Box<dyn Source>,
    /// File size, when known: the bar's 100 %.
    total_bytes: Option<u64>,
    bytes: u64,
    records: u64,
    started: Instant,
    last: Instant,
    terminal: bool,
}

impl Progress {
    fn new(inner: Box<dyn Source>, total_bytes: Option<u64>) -> Self {
        let now = Instant::now();
        Self {
            inner,
            total_bytes,
            bytes: 0,
            records: 0,
            started: now,
            last: now,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn report(&mut self, force: bool) {
        let every = if self.terminal { Duration::from_millis(200) } else { Duration::from_secs(5) };
        if !force && self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let rate = (self.records as f64 / secs) as u64;
        // Fraction done: bytes of the file, or alerts read against those
        // the indexer still has after the cursor (the lag).
        let lag: i64 = self.inner.lag().iter().map(|(_, n)| n).sum();
        let fraction = match self.total_bytes {
            Some(t) if t > 0 => Some(self.bytes as f64 / t as f64),
            _ if lag > 0 || self.records > 0 => Some(self.records as f64 / (self.records as f64 + lag as f64)),
            _ => None,
        };
        let pct = fraction.map(|f| (f.clamp(0.0, 1.0) * 100.0) as u32);
        if self.terminal {
            let filled = pct.unwrap_or(0) as usize * 30 / 100;
            eprint!(
                "\r[{}{}] {:>3}%  {} alerts  {}/s   ",
                "#".repeat(filled),
                "-".repeat(30 - filled),
                pct.unwrap_or(0),
                self.records,
                rate
            );
        } else {
            let pct = pct.map_or_else(String::new, |p| format!(" ({p}%)"));
            eprintln!("replay: {} alerts read{pct}, {rate}/s", self.records);
        }
    }
}

impl Source for Progress {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        let chunk = self.inner.next_chunk()?;
        match &chunk {
            Some(c) => {
                self.records += c.lines.len() as u64;
                self.bytes = self.bytes.max(c.base_offset + c.data.len() as u64);
                self.report(false);
            }
            None => self.report(true),
        }
        Ok(chunk)
    }

    fn input_changes(&mut self) -> Vec<InputChange> {
        self.inner.input_changes()
    }

    fn lag(&self) -> Vec<(String, i64)> {
        self.inner.lag()
    }
}
