//! The source contract: something that yields chunks of raw alert records
//! with their positions.
//!
//! Sources run on their own thread and may block. They stop at end of input,
//! or as soon as the shared stop flag is raised (Ctrl-C), so the pipeline can
//! flush its open windows and exit cleanly.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use sluice_operators::decode::RawChunk;
use thiserror::Error;

/// Why a source could not go on.
#[derive(Debug, Error)]
pub enum SourceError {
    /// The input could not be opened or read. Retrying may help if the cause
    /// is transient (a file being rotated, a disk hiccup).
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The source was configured wrongly (the user's to fix).
    #[error("{0}")]
    Config(String),
}

/// A producer of raw alert records.
pub trait Source: Send {
    /// What this source reads, for dead letters and logs (`alerts.json`, `-`).
    fn name(&self) -> &str;

    /// The next chunk of records; `Ok(None)` at end of input or after stop.
    /// A source that is waiting for data returns an empty chunk now and then
    /// (every 100 ms or so), so the runtime can take checkpoints and commit.
    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError>;

    /// The position just after the last chunk returned, as JSON; `None` if
    /// this source cannot resume (stdin, the generator).
    fn position(&self) -> Option<String> {
        None
    }

    /// Resumes from a position taken by [`Source::position`], before the
    /// first chunk is read.
    fn restore(&mut self, _position: &str) -> Result<(), SourceError> {
        Err(SourceError::Config(format!("source {} cannot resume from a checkpoint", self.name())))
    }

    /// A checkpoint covering `position` is durable: acknowledge upstream
    /// (commit Kafka offsets). Nothing before it will be asked for again.
    fn commit(&mut self, _position: &str) -> Result<(), SourceError> {
        Ok(())
    }

    /// Inputs that appeared or went idle since the last call, for
    /// per-input watermarks.
    fn input_changes(&mut self) -> Vec<InputChange> {
        Vec::new()
    }

    /// Records behind the newest available, per input (`topic[partition]`),
    /// as last measured; empty for sources that cannot tell.
    fn lag(&self) -> Vec<(String, i64)> {
        Vec::new()
    }

    /// How far behind the newest available record the source reads, in
    /// seconds of event time, per input, as last measured; empty for
    /// sources that cannot tell.
    fn lag_seconds(&self) -> Vec<(String, f64)> {
        Vec::new()
    }

    /// The tenants to stop reading for now (their queue in the pipeline is
    /// full), replacing the previous set; an empty set reads all again. A
    /// source that can read one tenant apart from the others (a Kafka
    /// topic per tenant) pauses them; the default cannot, and the whole
    /// input then slows down once the pipeline's queues are full.
    fn hold_back(&mut self, _tenants: &[std::sync::Arc<str>]) {}

    /// For a source whose inputs move between instances (the partitions of
    /// a Kafka consumer group): from now on, stop at every move until the
    /// runtime has saved the state of the inputs that leave, or loaded the
    /// state of those that arrive (see [`Source::handover`]). Returns the
    /// scope that state is kept under (the consumer group); `None` for a
    /// source whose inputs never move (the default).
    fn hand_over_inputs(&mut self) -> Option<String> {
        None
    }

    /// A move of inputs waiting for the runtime, once every chunk read
    /// before it has been returned. It waits until [`Source::released`] or
    /// [`Source::acquired`] is called.
    fn handover(&mut self) -> Option<Handover> {
        None
    }

    /// The state of the inputs of [`Handover::Release`] is durable: let
    /// them go.
    fn released(&mut self) {}

    /// The state of the inputs of [`Handover::Acquire`] is loaded: read
    /// them, each from its start in `starts`, or else from where the group
    /// committed.
    fn acquired(&mut self, _starts: &[InputStart]) {}

    /// Where each input this instance owns stands: after the last chunk
    /// returned.
    fn input_positions(&self) -> Vec<InputPosition> {
        Vec::new()
    }
}

/// Inputs changing hands (see [`Source::hand_over_inputs`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handover {
    /// These inputs (by number) go to another instance: save what they
    /// own, then call [`Source::released`].
    Release(Vec<u32>),
    /// These inputs come here, as `(input number, input name)`: load what
    /// they own, then call [`Source::acquired`].
    Acquire(Vec<(u32, String)>),
}

/// Where an arriving input starts, from its saved state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputStart {
    /// `topic[partition]`.
    pub name: String,
    /// The next offset to read; -1: where the group committed.
    pub offset: i64,
    /// It was idle when its state was saved: it does not hold the watermark
    /// back until it has data again.
    pub idle: bool,
}

/// An input and the offset after the last record returned from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputPosition {
    pub input: u32,
    /// `topic[partition]`.
    pub name: String,
    /// The next offset to read; -1 when nothing was read yet.
    pub offset: i64,
}

/// A change in a multi-input source's set of inputs (`RawChunk::input`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputChange {
    /// A new input (an assigned partition): it holds the watermark back
    /// until it has data or goes idle.
    Opened(u32),
    /// The input has had no data for a while, or was revoked: it stops
    /// holding the watermark back.
    Idle(u32),
}

/// A flag raised once to ask sources to stop.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// The flag itself, for a signal handler to set.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.0.clone()
    }
}

/// Microseconds since the Unix epoch, wall clock (ingest time).
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}
