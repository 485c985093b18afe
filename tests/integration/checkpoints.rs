//! Checkpoints: a run stopped (cleanly or by a failure) at arbitrary points
//! and resumed from its checkpoints delivers the same hand-offs and ends
//! with the same clusters as one uninterrupted run; no idempotency key is
//! ever delivered with two different contents.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_connectors::file::{FileOptions, FileSource};
use sluice_connectors::source::{Source, SourceError, StopFlag};
use sluice_operators::decode::RawChunk;
use sluice_operators::operator::ReportKind;
use sluice_pipeline::checkpoint::{CheckpointStore, DirStore};
use sluice_pipeline::output::stable_case_json;
use sluice_pipeline::runtime::{CheckpointOptions, Event, RunError, RunOptions, run};
use sluice_pipeline::{Config, Summary};

use crate::common::generate;

/// How a run is cut short.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// Ctrl-C: the source is asked to stop (a final checkpoint is taken).
    Stop,
    /// The source fails (no final checkpoint; replays from the last one).
    Fail,
}

/// A file source that is cut short after `after` chunks.
struct Interrupted {
    inner: FileSource,
    after: Option<usize>,
    cut: Cut,
    stop: StopFlag,
    chunks: usize,
}

impl Source for Interrupted {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        self.chunks += 1;
        if self.after.is_some_and(|a| self.chunks > a) {
            match self.cut {
                Cut::Stop => self.stop.stop(),
                Cut::Fail => return Err(SourceError::Config("simulated crash".into())),
            }
        }
        self.inner.next_chunk()
    }
    fn position(&self) -> Option<String> {
        self.inner.position()
    }
    fn restore(&mut self, position: &str) -> Result<(), SourceError> {
        self.inner.restore(position)
    }
}

/// What reached the sinks: content by idempotency key (hand-offs) and by
/// cluster (final states).
#[derive(Default, Debug)]
struct Delivered {
    handoffs: BTreeMap<String, String>,
    finals: BTreeMap<String, String>,
    conflicts: Vec<String>,
}

impl Delivered {
    fn add(&mut self, event: &Event) {
        let Event::Report(kind, r) = event else { return };
        let content = stable_case_json(*kind, r);
        let (map, key) = match kind {
            ReportKind::Close => (&mut self.finals, r.cluster_id.clone()),
            _ => (&mut self.handoffs, r.idempotency_key.clone()),
        };
        if let Some(before) = map.insert(key.clone(), content.clone())
            && before != content
            && *kind != ReportKind::Close
        {
            self.conflicts.push(key);
        }
    }
}

fn config() -> Config {
    let mut c = Config::default();
    c.runtime.shards = 2;
    c
}

fn file_source(path: &str, stop: &StopFlag) -> FileSource {
    let opts = FileOptions { block: 32 * 1024, ..FileOptions::default() };
    FileSource::open(path, opts, stop.clone()).unwrap()
}

fn run_once(
    path: &str,
    store: &Arc<DirStore>,
    after: Option<usize>,
    cut: Cut,
    out: &mut Delivered,
) -> Result<Summary, RunError> {
    let stop = StopFlag::new();
    let source = Interrupted { inner: file_source(path, &stop), after, cut, stop: stop.clone(), chunks: 0 };
    let options = RunOptions {
        checkpoint: Some(CheckpointOptions { store: store.clone(), interval: Duration::ZERO, fresh: false }),
        ..RunOptions::default()
    };
    run(&config(), Box::new(source), &options, &stop, |e| {
        out.add(&e);
        Ok(())
    })
}

fn fixture() -> (tempfile::TempDir, String, Delivered) {
    let dir = tempfile::tempdir().unwrap();
    let (lines, _) = generate(3, 20_000, 11);
    let path = dir.path().join("alerts.json");
    let mut text = Vec::new();
    for l in &lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    std::fs::write(&path, text).unwrap();
    let path = path.display().to_string();
    let mut reference = Delivered::default();
    let stop = StopFlag::new();
    let summary = run(&config(), Box::new(file_source(&path, &stop)), &RunOptions::default(), &stop, |e| {
        reference.add(&e);
        Ok(())
    })
    .unwrap();
    assert!(summary.escalated > 0, "the fixture must escalate something: {summary:?}");
    assert!(reference.conflicts.is_empty());
    (dir, path, reference)
}

fn resume_until_done(cut: Cut, cuts: &[usize]) {
    let (dir, path, reference) = fixture();
    let store = Arc::new(DirStore::new(dir.path().join("state"), 3).unwrap());
    let mut delivered = Delivered::default();
    for &after in cuts {
        let result = run_once(&path, &store, Some(after), cut, &mut delivered);
        match cut {
            Cut::Stop => assert!(result.is_ok(), "{result:?}"),
            Cut::Fail => assert!(result.is_err(), "the simulated crash must fail the run"),
        }
        assert!(store.load_latest().unwrap().is_some(), "a checkpoint exists after the cut at {after}");
    }
    let last = run_once(&path, &store, None, cut, &mut delivered).unwrap();
    assert!(last.restored_from.is_some());
    assert!(delivered.conflicts.is_empty(), "keys delivered with two contents: {:?}", delivered.conflicts);
    assert_eq!(
        delivered.handoffs.keys().collect::<Vec<_>>(),
        reference.handoffs.keys().collect::<Vec<_>>(),
        "the same hand-offs as an uninterrupted run"
    );
    let differing = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| -> Vec<String> {
        a.iter().filter(|(k, v)| b.get(*k) != Some(*v)).map(|(k, _)| k.clone()).collect()
    };
    assert_eq!(differing(&delivered.handoffs, &reference.handoffs), Vec::<String>::new(), "hand-off contents");
    assert_eq!(differing(&delivered.finals, &reference.finals), Vec::<String>::new(), "final clusters");
    assert_eq!(delivered.finals.len(), reference.finals.len());
}

#[test]
fn stopped_and_resumed_runs_equal_one_uninterrupted_run() {
    resume_until_done(Cut::Stop, &[5, 1, 17, 40]);
}

#[test]
fn crashed_and_resumed_runs_equal_one_uninterrupted_run() {
    resume_until_done(Cut::Fail, &[9, 3, 30]);
}

#[test]
fn a_checkpoint_of_another_shard_count_or_source_is_refused_by_name() {
    let (dir, path, _) = fixture();
    let store = Arc::new(DirStore::new(dir.path().join("state"), 3).unwrap());
    run_once(&path, &store, Some(3), Cut::Stop, &mut Delivered::default()).unwrap();
    let stop = StopFlag::new();
    let mut other = config();
    other.runtime.shards = 3;
    let options = RunOptions {
        checkpoint: Some(CheckpointOptions { store: store.clone(), interval: Duration::ZERO, fresh: false }),
        ..RunOptions::default()
    };
    let err = run(&other, Box::new(file_source(&path, &stop)), &options, &stop, |_| Ok(())).unwrap_err().to_string();
    assert!(err.contains("2 shards") && err.contains("runtime.shards = 2"), "{err}");
    assert!(err.contains("--fresh-state"), "{err}");
    // --fresh-state starts over.
    let fresh = RunOptions {
        checkpoint: Some(CheckpointOptions { store: store.clone(), interval: Duration::from_secs(3600), fresh: true }),
        ..RunOptions::default()
    };
    let summary = run(&other, Box::new(file_source(&path, &stop)), &fresh, &stop, |_| Ok(())).unwrap();
    assert_eq!(summary.restored_from, None);
    assert_eq!(summary.alerts_read, 20_000);
}
