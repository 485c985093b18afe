//! NDJSON output files: case files, dead letters, late records, labels.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// A buffered NDJSON writer that names its file in every error.
#[derive(Debug)]
pub struct NdjsonWriter {
    path: String,
    out: BufWriter<File>,
    lines: u64,
}

impl NdjsonWriter {
    /// Creates (truncates) `path`, creating parent directories.
    pub fn create(path: &Path) -> std::io::Result<Self> {
        Self::open(path, false)
    }

    /// Opens `path` for writing, appending to what is there when `append`
    /// (a run resuming from a checkpoint continues its files).
    pub fn open(path: &Path, append: bool) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
        Ok(Self { path: path.display().to_string(), out: BufWriter::with_capacity(1 << 16, file), lines: 0 })
    }

    /// Writes one line (a newline is appended).
    pub fn write_line(&mut self, line: &str) -> std::io::Result<()> {
        self.out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", self.path)))?;
        self.lines += 1;
        Ok(())
    }

    /// Flushes to the OS: what is written is what a reader sees.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush().map_err(|e| std::io::Error::new(e.kind(), format!("cannot write {}: {e}", self.path)))
    }

    /// Flushes and syncs to disk: what is written survives a crash.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.flush()?;
        self.out
            .get_ref()
            .sync_data()
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot sync {}: {e}", self.path)))
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn path(&self) -> &str {
        &self.path
    }
}
