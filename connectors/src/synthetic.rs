//! Generator source: the synthetic Wazuh stream as a [`Source`], for the
//! embedded default of `sluice run`, for `sluice eval` and for benchmarks.

use sluice_operators::decode::RawChunk;

use crate::generator::{Generator, GeneratorConfig, GeneratorError, Label};
use crate::source::{Source, SourceError, StopFlag, now_us};

/// Streams generated alerts in chunks; labels go to an optional callback.
pub struct GeneratorSource {
    generator: Generator,
    lines_per_chunk: usize,
    offset: u64,
    stop: StopFlag,
    on_label: Option<Box<dyn FnMut(Label) + Send>>,
}

impl std::fmt::Debug for GeneratorSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorSource").field("offset", &self.offset).finish_non_exhaustive()
    }
}

impl GeneratorSource {
    pub fn new(config: GeneratorConfig, lines_per_chunk: usize, stop: StopFlag) -> Result<Self, GeneratorError> {
        Ok(Self {
            generator: Generator::new(config)?,
            lines_per_chunk: lines_per_chunk.max(1),
            offset: 0,
            stop,
            on_label: None,
        })
    }

    /// Receives the label of every campaign alert, in stream order.
    pub fn with_labels(mut self, f: impl FnMut(Label) + Send + 'static) -> Self {
        self.on_label = Some(Box::new(f));
        self
    }
}

impl Source for GeneratorSource {
    fn name(&self) -> &str {
        "generator"
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        if self.stop.is_stopped() {
            return Ok(None);
        }
        let mut data = Vec::with_capacity(self.lines_per_chunk * 900);
        let mut lines = Vec::with_capacity(self.lines_per_chunk);
        while lines.len() < self.lines_per_chunk {
            let start = data.len();
            match self.generator.next_into(&mut data) {
                None => break,
                Some(label) => {
                    // Every generated line ends in '\n'.
                    lines.push((start, data.len() - 1));
                    if let (Some(label), Some(f)) = (label, self.on_label.as_mut()) {
                        f(label);
                    }
                }
            }
        }
        if lines.is_empty() {
            return Ok(None);
        }
        let chunk = RawChunk {
            source: "generator".into(),
            base_offset: self.offset,
            ingest_us: now_us(),
            lines,
            data,
            ..RawChunk::default()
        };
        self.offset += chunk.data.len() as u64;
        Ok(Some(chunk))
    }
}
