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
    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError>;
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
}

/// Microseconds since the Unix epoch, wall clock (ingest time).
pub fn now_us() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}
