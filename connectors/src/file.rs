//! File source: a Wazuh `alerts.json` (or any NDJSON file, or stdin).
//!
//! Reads large blocks and cuts them at the last newline, so a chunk never
//! splits a record. With `follow`, it behaves like `tail -F`: at end of file
//! it waits for more, notices truncation (starts again from the top) and
//! rotation (drains the old file, then opens the new one at the path), and a
//! partial last line waits for its newline instead of being decoded early.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sluice_operators::decode::RawChunk;

use crate::source::{Source, SourceError, StopFlag, now_us};

/// Default block size read at once.
pub const DEFAULT_BLOCK: usize = 1 << 20;

/// Options of a [`FileSource`].
#[derive(Clone, Debug)]
pub struct FileOptions {
    /// Keep reading as the file grows, across rotation and truncation.
    pub follow: bool,
    /// How often to look for new data at end of file when following.
    pub poll: Duration,
    /// Bytes read per block.
    pub block: usize,
}

impl Default for FileOptions {
    fn default() -> Self {
        Self { follow: false, poll: Duration::from_millis(200), block: DEFAULT_BLOCK }
    }
}

enum Input {
    File { file: File, identity: Option<(u64, u64)> },
    Stdin(std::io::Stdin),
}

/// Reads NDJSON records from a path, or stdin for `-`.
pub struct FileSource {
    path: Option<PathBuf>,
    name: String,
    input: Option<Input>,
    options: FileOptions,
    stop: StopFlag,
    /// Bytes read but not yet emitted (a partial last line).
    pending: Vec<u8>,
    /// Offset in the current file of `pending[0]`.
    pending_offset: u64,
    /// Offset in the current file of the next byte to read.
    read_offset: u64,
    eof: bool,
}

impl std::fmt::Debug for FileSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSource").field("name", &self.name).field("offset", &self.read_offset).finish()
    }
}

#[cfg(unix)]
fn identity(file: &File) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    file.metadata().ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn identity(_file: &File) -> Option<(u64, u64)> {
    None
}

impl FileSource {
    /// Opens `path` (`-` for stdin). Without `follow`, a missing file is an
    /// error; with it, the source waits for the file to appear.
    pub fn open(path: &str, options: FileOptions, stop: StopFlag) -> Result<Self, SourceError> {
        let mut source = Self {
            path: (path != "-").then(|| PathBuf::from(path)),
            name: path.to_string(),
            input: None,
            options,
            stop,
            pending: Vec::new(),
            pending_offset: 0,
            read_offset: 0,
            eof: false,
        };
        match &source.path {
            None => source.input = Some(Input::Stdin(std::io::stdin())),
            Some(p) => match File::open(p) {
                Ok(file) => source.input = Some(Input::File { identity: identity(&file), file }),
                Err(e) if source.options.follow && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SourceError::Io { path: path.to_string(), source: e }),
            },
        }
        Ok(source)
    }

    fn io_err(&self, e: std::io::Error) -> SourceError {
        SourceError::Io { path: self.name.clone(), source: e }
    }

    fn read_block(&mut self) -> Result<usize, SourceError> {
        let block = self.options.block;
        let start = self.pending.len();
        let n = match &mut self.input {
            // Appends without zero-filling the buffer first.
            Some(Input::File { file, .. }) => {
                self.pending.reserve(block);
                Read::take(&mut *file, block as u64).read_to_end(&mut self.pending)
            }
            // One read: a pipe hands over what it has without waiting for a full block.
            Some(Input::Stdin(s)) => {
                self.pending.resize(start + block, 0);
                s.lock().read(&mut self.pending[start..])
            }
            None => Ok(0),
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => {
                self.pending.truncate(start);
                return Err(self.io_err(e));
            }
        };
        self.pending.truncate(start + n);
        self.read_offset += n as u64;
        Ok(n)
    }

    /// Cuts `pending` at its last newline (or entirely when `all`) into a chunk.
    fn take_chunk(&mut self, all: bool) -> Option<RawChunk> {
        let cut =
            if all { self.pending.len() } else { self.pending.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1) };
        if cut == 0 {
            return None;
        }
        let rest = self.pending.split_off(cut);
        let data = std::mem::replace(&mut self.pending, rest);
        let base = self.pending_offset;
        self.pending_offset += cut as u64;
        let chunk = RawChunk::from_lines(&self.name, data, base, now_us());
        (!chunk.lines.is_empty()).then_some(chunk)
    }

    /// When following at EOF: has the path been truncated or replaced?
    fn check_rotation(&mut self) -> Result<bool, SourceError> {
        let Some(path) = self.path.clone() else { return Ok(false) };
        let Some(Input::File { file, identity: id }) = &self.input else {
            // Waiting for the file to appear.
            return match File::open(&path) {
                Ok(file) => {
                    self.input = Some(Input::File { identity: identity(&file), file });
                    self.reset_offsets();
                    Ok(true)
                }
                Err(_) => Ok(false),
            };
        };
        let len = file.metadata().map_err(|e| self.io_err(e))?.len();
        if len < self.read_offset {
            tracing::warn!(path = %self.name, offset = self.read_offset, len, "file truncated; reading from the start");
            let Some(Input::File { file, .. }) = &mut self.input else { unreachable!() };
            file.seek(SeekFrom::Start(0))
                .map_err(|e| SourceError::Io { path: path.display().to_string(), source: e })?;
            self.reset_offsets();
            return Ok(true);
        }
        let id = *id;
        if let Ok(new) = File::open(&path)
            && identity(&new) != id
        {
            tracing::info!(path = %self.name, "file rotated; opening the new one");
            self.input = Some(Input::File { identity: identity(&new), file: new });
            self.reset_offsets();
            return Ok(true);
        }
        Ok(false)
    }

    fn reset_offsets(&mut self) {
        // A partial line of the old file is lost with it, as with `tail -F`;
        // say so rather than glue it to the new file's first line.
        if !self.pending.is_empty() {
            tracing::warn!(path = %self.name, bytes = self.pending.len(), "partial last line of the previous file dropped at rotation");
            self.pending.clear();
        }
        self.pending_offset = 0;
        self.read_offset = 0;
    }
}

/// Where a file source is: the offset of the first byte not yet handed over,
/// in the file with this identity.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct FilePosition {
    offset: u64,
    identity: Option<(u64, u64)>,
}

impl Source for FileSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn position(&self) -> Option<String> {
        let Some(Input::File { identity, .. }) = &self.input else { return None };
        let position = FilePosition { offset: self.pending_offset, identity: *identity };
        Some(serde_json::to_string(&position).expect("serializable"))
    }

    fn restore(&mut self, position: &str) -> Result<(), SourceError> {
        let position: FilePosition = serde_json::from_str(position)
            .map_err(|e| SourceError::Config(format!("not a file source position: {e}")))?;
        let Some(Input::File { file, identity }) = &mut self.input else {
            return Err(SourceError::Config(format!("{} cannot resume: it is not a regular file", self.name)));
        };
        let len = file.metadata().map_err(|e| SourceError::Io { path: self.name.clone(), source: e })?.len();
        if *identity != position.identity || len < position.offset {
            // Rotated or truncated since the checkpoint: the old file's tail
            // is gone; read the new one from its start, as `tail -F` would.
            tracing::warn!(path = %self.name, offset = position.offset, len, "file changed since the checkpoint; reading it from the start");
            return Ok(());
        }
        file.seek(SeekFrom::Start(position.offset))
            .map_err(|e| SourceError::Io { path: self.name.clone(), source: e })?;
        self.pending_offset = position.offset;
        self.read_offset = position.offset;
        tracing::info!(path = %self.name, offset = position.offset, "resuming the file where the checkpoint left it");
        Ok(())
    }

    fn next_chunk(&mut self) -> Result<Option<RawChunk>, SourceError> {
        loop {
            if self.stop.is_stopped() {
                // Hand over the complete lines. A partial last line of a file
                // stays where it is (a resumed run reads it whole); stdin's
                // cannot be read again, so it goes too.
                return Ok(self.take_chunk(self.path.is_none()));
            }
            if self.eof {
                return Ok(None);
            }
            let n = if self.input.is_some() { self.read_block()? } else { 0 };
            if n > 0 {
                if let Some(chunk) = self.take_chunk(false) {
                    return Ok(Some(chunk));
                }
                continue;
            }
            // End of the data available now.
            if !self.options.follow {
                self.eof = true;
                return Ok(self.take_chunk(true));
            }
            // Rotation: drain what is complete in the old file first.
            if let Some(chunk) = self.take_chunk(false) {
                return Ok(Some(chunk));
            }
            if !self.check_rotation()? {
                std::thread::sleep(self.options.poll);
                // Nothing new: hand back an empty chunk, so the runtime can
                // take checkpoints and publish metrics while the file is idle.
                return Ok(Some(RawChunk { source: Arc::from(self.name.as_str()), ..RawChunk::default() }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn lines_of(chunk: &RawChunk) -> Vec<(u64, String)> {
        chunk
            .lines
            .iter()
            .map(|&(s, e)| (chunk.base_offset + s as u64, String::from_utf8_lossy(&chunk.data[s..e]).into_owned()))
            .collect()
    }

    fn drain(src: &mut FileSource) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        while let Some(c) = src.next_chunk().unwrap() {
            out.extend(lines_of(&c));
        }
        out
    }

    #[test]
    fn records_keep_their_byte_offsets_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        std::fs::write(&path, "{\"a\":1}\r\n\n{\"b\":22}\n{\"c\":3}").unwrap();
        let opts = FileOptions { block: 4, ..FileOptions::default() };
        let mut src = FileSource::open(path.to_str().unwrap(), opts, StopFlag::new()).unwrap();
        assert_eq!(
            drain(&mut src),
            [(0, "{\"a\":1}".to_string()), (10, "{\"b\":22}".to_string()), (19, "{\"c\":3}".to_string())]
        );
    }

    #[test]
    fn missing_file_is_an_error_naming_it() {
        let err = FileSource::open("/nonexistent/alerts.json", FileOptions::default(), StopFlag::new()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/alerts.json"), "{err}");
    }

    #[test]
    fn follow_survives_truncation_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.json");
        std::fs::write(&path, "one\ntwo\npart").unwrap();
        let stop = StopFlag::new();
        let opts = FileOptions { follow: true, poll: Duration::from_millis(5), block: 64 };
        let mut src = FileSource::open(path.to_str().unwrap(), opts, stop.clone()).unwrap();
        assert_eq!(lines_of(&src.next_chunk().unwrap().unwrap()), [(0, "one".into()), (4, "two".into())]);

        // The partial line completes: it is emitted whole.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"ial\n").unwrap();
        assert_eq!(lines_of(&src.next_chunk().unwrap().unwrap()), [(8, "partial".into())]);

        // Truncation: start again from the top of the file.
        std::fs::write(&path, "new\n").unwrap();
        assert_eq!(lines_of(&src.next_chunk().unwrap().unwrap()), [(0, "new".into())]);

        // Rotation: the old file moves away, a new one appears at the path.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"last-of-old\n").unwrap();
        std::fs::rename(&path, dir.path().join("alerts.json.1")).unwrap();
        std::fs::write(&path, "rotated\n").unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.extend(lines_of(&src.next_chunk().unwrap().unwrap()).into_iter().map(|(_, l)| l));
        }
        assert_eq!(seen, ["last-of-old", "rotated"]);

        stop.stop();
        assert!(src.next_chunk().unwrap().is_none());
    }
}
