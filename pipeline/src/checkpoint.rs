//! Checkpoints: every operator's state and every source position, written
//! atomically, so a restarted Sluice continues as if it had never stopped.
//!
//! A checkpoint is taken on a barrier that flows with the data (see
//! `runtime.rs`): the source thread records its position and sends the
//! barrier after its last chunk; each shard snapshots its operators when the
//! barrier reaches it, after everything before it and nothing after. When
//! every part has arrived, the caller's sinks are flushed, the checkpoint is
//! written durably, and only then is the source told to commit its position
//! upstream (Kafka offsets). A crash at any point therefore replays from the
//! last durable checkpoint, re-emitting the same reports with the same
//! idempotency keys.
//!
//! **Per partition.** With Kafka, state is owned by partitions: a tenant's
//! state belongs to the partition its alerts arrive on (tenants are keyed
//! to partitions). A checkpoint is then written as one [`PartCheckpoint`]
//! per partition (its offset, its watermark, its tenants' state) under the
//! consumer group's name, and whichever instance of the group is assigned
//! the partition next loads it. On a rebalance Sluice saves the partitions
//! it is about to lose before letting them go.
//!
//! On disk (or in a database row) a checkpoint is framed: the magic
//! `SLUICECP`, a format version, the body length, an xxh3 checksum and the
//! postcard body. A checkpoint that fails any check is refused with the place
//! it was read from and the reason; it is never half-loaded.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use sluice_operators::time::EventTime;

use crate::watermark::WatermarkTracker;

const MAGIC: &[u8; 8] = b"SLUICECP";
/// A partition's state (see [`PartCheckpoint`]).
const PART_MAGIC: &[u8; 8] = b"SLUICEPT";
/// Bump when the body layout changes; older checkpoints are then refused.
pub const FORMAT_VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 8 + 8;

/// One operator's snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorState {
    pub operator: String,
    /// As one byte string (not a sequence of numbers): large states encode
    /// and decode at memory speed.
    #[serde(with = "serde_bytes")]
    pub state: Vec<u8>,
}

/// Everything needed to resume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Increases by one per checkpoint of a run and across restarts.
    pub id: u64,
    /// Wall clock when it was taken, ms since the epoch (for people).
    pub created_unix_ms: i64,
    /// The Sluice version that wrote it.
    pub writer: String,
    /// What the source reads (`alerts.json`, `kafka:wazuh-alerts-.*`); a
    /// checkpoint of one source is refused for another.
    pub source: String,
    /// The source's position after the last record the state covers (JSON,
    /// source-specific).
    pub position: Option<String>,
    /// The router's watermarks.
    pub watermark: WatermarkTracker,
    /// Per shard, per operator, in chain order. Tenants are placed on shards
    /// by hash, so a checkpoint is only valid for the same shard count.
    pub shards: Vec<Vec<OperatorState>>,
}

/// One tenant's state in each operator that holds some.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantState {
    pub tenant: String,
    pub operators: Vec<OperatorState>,
}

/// What one Kafka partition owns: enough for any instance of the consumer
/// group to carry on reading it exactly where the state ends.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PartCheckpoint {
    /// The id of the checkpoint it was part of.
    pub id: u64,
    pub created_unix_ms: i64,
    pub writer: String,
    /// What the source reads (as [`Checkpoint::source`]).
    pub source: String,
    /// The partition, `topic[partition]`.
    pub input: String,
    /// The next offset to read; -1 when nothing was read yet.
    pub offset: i64,
    /// The newest event time read from the partition (its watermark input).
    pub newest: Option<EventTime>,
    /// The partition was idle (read to its end and quiet): it does not hold
    /// the watermark back on its next owner until it has data again.
    pub idle: bool,
    /// The state of the tenants whose alerts arrive on this partition.
    pub tenants: Vec<TenantState>,
}

impl PartCheckpoint {
    pub fn encode(&self) -> Vec<u8> {
        frame(PART_MAGIC, &postcard::to_stdvec(self).expect("a checkpoint always serializes"))
    }

    /// Just the checkpoint id of framed bytes (checked whole, decoded only
    /// as far as the id, which comes first): the tenants' state can be
    /// large.
    pub fn peek_id(bytes: &[u8], origin: &str) -> Result<u64, CheckpointError> {
        let body = unframe(PART_MAGIC, bytes, origin)?;
        postcard::take_from_bytes::<u64>(body).map(|(id, _)| id).map_err(|e| CheckpointError::Invalid {
            origin: origin.to_string(),
            reason: format!("undecodable body: {e}"),
        })
    }

    pub fn decode(bytes: &[u8], origin: &str) -> Result<Self, CheckpointError> {
        let body = unframe(PART_MAGIC, bytes, origin)?;
        postcard::from_bytes(body).map_err(|e| CheckpointError::Invalid {
            origin: origin.to_string(),
            reason: format!("undecodable body: {e}"),
        })
    }
}

/// `body` behind the magic, the format version, its length and checksum.
fn frame(magic: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&xxhash_rust::xxh3::xxh3_64(body).to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// The body of framed bytes, every check passed; `origin` names where they
/// came from in errors.
fn unframe<'b>(magic: &[u8; 8], bytes: &'b [u8], origin: &str) -> Result<&'b [u8], CheckpointError> {
    let bad = |reason: String| CheckpointError::Invalid { origin: origin.to_string(), reason };
    if bytes.len() < HEADER || &bytes[..8] != magic {
        return Err(bad("not a Sluice checkpoint (bad magic or shorter than its header)".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != FORMAT_VERSION {
        return Err(bad(format!("format version {version}; this build reads version {FORMAT_VERSION}")));
    }
    let len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let sum = u64::from_le_bytes(bytes[20..28].try_into().expect("8 bytes"));
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(bad(format!("truncated: the header says {len} body bytes, the file has {}", body.len())));
    }
    if xxhash_rust::xxh3::xxh3_64(body) != sum {
        return Err(bad("checksum mismatch: the body is corrupt".into()));
    }
    Ok(body)
}

impl Checkpoint {
    /// The framed bytes.
    pub fn encode(&self) -> Vec<u8> {
        frame(MAGIC, &postcard::to_stdvec(self).expect("a checkpoint always serializes"))
    }

    /// Decodes framed bytes; `origin` names where they came from in errors.
    pub fn decode(bytes: &[u8], origin: &str) -> Result<Self, CheckpointError> {
        let body = unframe(MAGIC, bytes, origin)?;
        postcard::from_bytes(body).map_err(|e| CheckpointError::Invalid {
            origin: origin.to_string(),
            reason: format!("undecodable body: {e}"),
        })
    }
}

/// Why a checkpoint could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(
        "checkpoint {origin} cannot be used: {reason}. Fix or move it away, or start without state with --fresh-state"
    )]
    Invalid { origin: String, reason: String },
    #[error("checkpoint store {place}: {source}")]
    Io {
        place: String,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint store {place}: {message}")]
    Store { place: String, message: String },
    #[error(
        "checkpoint store {place}: partition {input} now belongs to another instance ({owner}); this one was \
         dropped from its group, so its state of the partition is not written"
    )]
    Fenced { place: String, input: String, owner: String },
}

/// Where checkpoints are kept.
pub trait CheckpointStore: Send + Sync + std::fmt::Debug {
    /// Where, for logs and errors.
    fn describe(&self) -> String;
    /// The newest checkpoint, if any. A newest checkpoint that is unreadable
    /// is an error, never skipped in favour of an older one.
    fn load_latest(&self) -> Result<Option<Checkpoint>, CheckpointError>;
    /// The id of the newest checkpoint, without reading it.
    fn latest_id(&self) -> Result<Option<u64>, CheckpointError>;
    /// Writes a checkpoint durably and atomically; returns where.
    fn save(&self, checkpoint: &Checkpoint) -> Result<String, CheckpointError>;
    /// Removes every checkpoint (`--fresh-state`).
    fn clear(&self) -> Result<(), CheckpointError>;

    /// Makes `owner` (one running instance) the owner of these partitions
    /// under `scope`: from now on only its writes of their state are taken.
    /// Called when partitions arrive, before their state is read, so that an
    /// instance the group dropped without noticing can no longer overwrite
    /// the new owner's state.
    fn claim_parts(&self, scope: &str, inputs: &[String], owner: &str) -> Result<(), CheckpointError>;
    /// Writes the state of each partition under `scope` (the consumer
    /// group), each durably and atomically: a partition's state is the new
    /// one or the one before, never a mix. A partition claimed by another
    /// owner since is refused ([`CheckpointError::Fenced`]).
    fn save_parts(&self, scope: &str, parts: &[PartCheckpoint], owner: &str) -> Result<String, CheckpointError>;
    /// The latest state of one partition (`topic[partition]`) under `scope`.
    fn load_part(&self, scope: &str, input: &str) -> Result<Option<PartCheckpoint>, CheckpointError>;
    /// The highest checkpoint id among the partitions' states under `scope`.
    fn latest_part_id(&self, scope: &str) -> Result<Option<u64>, CheckpointError>;
    /// Removes every partition's state under `scope` (`--fresh-state`: for
    /// the whole group).
    fn clear_parts(&self, scope: &str) -> Result<(), CheckpointError>;
}

/// Checkpoints as files in a local directory: written to a temporary file,
/// synced, renamed into place, directory synced. The newest few are kept.
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    keep: usize,
}

impl DirStore {
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| CheckpointError::Io { place: dir.display().to_string(), source })?;
        Ok(Self { dir, keep: keep.max(1) })
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
        let place = path.display().to_string();
        move |source| CheckpointError::Io { place, source }
    }

    /// `(id, path)` of every checkpoint file, oldest first.
    fn list(&self) -> Result<Vec<(u64, PathBuf)>, CheckpointError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(self.io(&self.dir))? {
            let path = entry.map_err(self.io(&self.dir))?.path();
            let id = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix("checkpoint-"))
                .and_then(|n| n.strip_suffix(".sluice"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(id) = id {
                out.push((id, path));
            }
        }
        out.sort();
        Ok(out)
    }
}

impl CheckpointStore for DirStore {
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }

    fn latest_id(&self) -> Result<Option<u64>, CheckpointError> {
        Ok(self.list()?.pop().map(|(id, _)| id))
    }

    fn load_latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        let Some((_, path)) = self.list()?.pop() else { return Ok(None) };
        let bytes = fs::read(&path).map_err(self.io(&path))?;
        Checkpoint::decode(&bytes, &path.display().to_string()).map(Some)
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<String, CheckpointError> {
        let path = self.dir.join(format!("checkpoint-{:020}.sluice", checkpoint.id));
        let tmp = self.dir.join(format!(".checkpoint-{:020}.tmp", checkpoint.id));
        {
            let mut f = fs::File::create(&tmp).map_err(self.io(&tmp))?;
            f.write_all(&checkpoint.encode()).map_err(self.io(&tmp))?;
            f.sync_all().map_err(self.io(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(self.io(&path))?;
        // The rename is durable once the directory is.
        fs::File::open(&self.dir).and_then(|d| d.sync_all()).map_err(self.io(&self.dir))?;
        let all = self.list()?;
        for (_, old) in all.iter().take(all.len().saturating_sub(self.keep)) {
            let _ = fs::remove_file(old);
        }
        Ok(path.display().to_string())
    }

    fn clear(&self) -> Result<(), CheckpointError> {
        for (_, path) in self.list()? {
            fs::remove_file(&path).map_err(self.io(&path))?;
        }
        Ok(())
    }

    fn claim_parts(&self, scope: &str, inputs: &[String], owner: &str) -> Result<(), CheckpointError> {
        let dir = self.parts_dir_created(scope)?;
        for input in inputs {
            let path = dir.join(format!("{}.owner", file_safe(input)));
            let tmp = dir.join(format!(".{}.{}.owner.tmp", file_safe(input), std::process::id()));
            fs::write(&tmp, owner).and_then(|()| fs::File::open(&tmp)?.sync_all()).map_err(self.io(&tmp))?;
            fs::rename(&tmp, &path).map_err(self.io(&path))?;
        }
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(self.io(&dir))?;
        Ok(())
    }

    fn save_parts(&self, scope: &str, parts: &[PartCheckpoint], owner: &str) -> Result<String, CheckpointError> {
        let dir = self.parts_dir_created(scope)?;
        // Checked before writing (a file system offers no compare-and-swap
        // across files: a claim landing between the check and the rename
        // still loses to this write; PostgreSQL checks in the same
        // transaction).
        for part in parts {
            let path = dir.join(format!("{}.owner", file_safe(&part.input)));
            match fs::read_to_string(&path) {
                Ok(current) if current != owner => {
                    return Err(CheckpointError::Fenced {
                        place: dir.display().to_string(),
                        input: part.input.clone(),
                        owner: current,
                    });
                }
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(self.io(&path)(e)),
                _ => {}
            }
        }
        for part in parts {
            let path = dir.join(format!("{}.sluice", file_safe(&part.input)));
            // Its own name per process: instances sharing the directory
            // never write into one temporary file.
            let tmp = dir.join(format!(".{}.{}.tmp", file_safe(&part.input), std::process::id()));
            {
                let mut f = fs::File::create(&tmp).map_err(self.io(&tmp))?;
                f.write_all(&part.encode()).map_err(self.io(&tmp))?;
                f.sync_all().map_err(self.io(&tmp))?;
            }
            fs::rename(&tmp, &path).map_err(self.io(&path))?;
        }
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(self.io(&dir))?;
        Ok(dir.display().to_string())
    }

    fn load_part(&self, scope: &str, input: &str) -> Result<Option<PartCheckpoint>, CheckpointError> {
        let path = self.parts_dir(scope).join(format!("{}.sluice", file_safe(input)));
        match fs::read(&path) {
            Ok(bytes) => PartCheckpoint::decode(&bytes, &path.display().to_string()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&path)(e)),
        }
    }

    fn latest_part_id(&self, scope: &str) -> Result<Option<u64>, CheckpointError> {
        let dir = self.parts_dir(scope);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io(&dir)(e)),
        };
        let mut latest = None;
        for entry in entries {
            let path = entry.map_err(self.io(&dir))?.path();
            if path.extension().is_some_and(|e| e == "sluice") {
                let bytes = fs::read(&path).map_err(self.io(&path))?;
                let id = PartCheckpoint::peek_id(&bytes, &path.display().to_string())?;
                latest = latest.max(Some(id));
            }
        }
        Ok(latest)
    }

    fn clear_parts(&self, scope: &str) -> Result<(), CheckpointError> {
        let dir = self.parts_dir(scope);
        match fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(&dir)(e)),
            _ => Ok(()),
        }
    }
}

impl DirStore {
    /// `partitions/<scope>/` under the directory.
    fn parts_dir(&self, scope: &str) -> PathBuf {
        self.dir.join("partitions").join(file_safe(scope))
    }

    /// [`DirStore::parts_dir`], created (durably) if missing.
    fn parts_dir_created(&self, scope: &str) -> Result<PathBuf, CheckpointError> {
        let dir = self.parts_dir(scope);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(self.io(&dir))?;
            // The new directories are durable once their parents are.
            for parent in [dir.parent(), dir.parent().and_then(Path::parent)].into_iter().flatten() {
                fs::File::open(parent).and_then(|d| d.sync_all()).map_err(self.io(parent))?;
            }
        }
        Ok(dir)
    }
}

/// A name as one safe file name: anything but ASCII letters, digits, `.`,
/// `_` and `-` is written `%XX`.
fn file_safe(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Checkpoints as rows of a PostgreSQL table (through sqlx), keyed by
/// instance, so instances can share one database. Written in one
/// transaction with the pruning of older rows: a checkpoint row is either
/// complete or absent.
pub struct PgStore {
    runtime: tokio::runtime::Runtime,
    pool: sqlx::PgPool,
    instance: String,
    keep: i64,
    /// Where, for people: the host and database, never the password.
    place: String,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("place", &self.place).field("instance", &self.instance).finish()
    }
}

const PG_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sluice_checkpoints (
    instance   TEXT        NOT NULL,
    id         BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    body       BYTEA       NOT NULL,
    PRIMARY KEY (instance, id)
)";

/// `body` is NULL for a partition claimed before its first checkpoint.
const PG_PARTS_SCHEMA: &str = "CREATE TABLE IF NOT EXISTS sluice_partition_state (
    scope      TEXT        NOT NULL,
    input      TEXT        NOT NULL,
    owner      TEXT        NOT NULL,
    id         BIGINT      NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    body       BYTEA,
    PRIMARY KEY (scope, input)
)";

impl PgStore {
    /// Connects (the URL comes from the environment: it holds a password),
    /// and creates the table if needed.
    pub fn connect(url: &str, instance: &str, keep: usize) -> Result<Self, CheckpointError> {
        let place = match url.parse::<sqlx::postgres::PgConnectOptions>() {
            Ok(o) => format!(
                "postgres://{}:{}/{} (instance {instance})",
                o.get_host(),
                o.get_port(),
                o.get_database().unwrap_or("")
            ),
            Err(_) => format!("postgres (instance {instance})"),
        };
        let store_err = |message: String| CheckpointError::Store { place: place.clone(), message };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| store_err(format!("cannot start the database runtime: {e}")))?;
        let pool = runtime
            .block_on(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(std::time::Duration::from_secs(10))
                    .connect(url),
            )
            .map_err(|e| store_err(format!("cannot connect: {}", redact(&e.to_string(), url))))?;
        runtime
            .block_on(sqlx::query(PG_SCHEMA).execute(&pool))
            .map_err(|e| store_err(format!("cannot create table sluice_checkpoints: {e}")))?;
        runtime
            .block_on(sqlx::query(PG_PARTS_SCHEMA).execute(&pool))
            .map_err(|e| store_err(format!("cannot create table sluice_partition_state: {e}")))?;
        Ok(Self { runtime, pool, instance: instance.to_string(), keep: keep.max(1) as i64, place })
    }

    fn err(&self, what: &str, e: sqlx::Error) -> CheckpointError {
        CheckpointError::Store { place: self.place.clone(), message: format!("{what}: {e}") }
    }
}

/// An error message with the connection URL (and so its password) removed.
fn redact(message: &str, url: &str) -> String {
    message.replace(url, "<SLUICE_POSTGRES_URL>")
}

impl CheckpointStore for PgStore {
    fn describe(&self) -> String {
        self.place.clone()
    }

    fn latest_id(&self) -> Result<Option<u64>, CheckpointError> {
        let id: Option<i64> = self
            .runtime
            .block_on(
                sqlx::query_scalar("SELECT max(id) FROM sluice_checkpoints WHERE instance = $1")
                    .bind(&self.instance)
                    .fetch_one(&self.pool),
            )
            .map_err(|e| self.err("cannot read checkpoints", e))?;
        Ok(id.map(|id| id as u64))
    }

    fn load_latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        use sqlx::Row;
        let row = self
            .runtime
            .block_on(
                sqlx::query("SELECT id, body FROM sluice_checkpoints WHERE instance = $1 ORDER BY id DESC LIMIT 1")
                    .bind(&self.instance)
                    .fetch_optional(&self.pool),
            )
            .map_err(|e| self.err("cannot read checkpoints", e))?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.get("id");
        let body: Vec<u8> = row.get("body");
        Checkpoint::decode(&body, &format!("{} row id {id}", self.place)).map(Some)
    }

    fn save(&self, checkpoint: &Checkpoint) -> Result<String, CheckpointError> {
        let body = checkpoint.encode();
        let id = checkpoint.id as i64;
        self.runtime
            .block_on(async {
                let mut tx = self.pool.begin().await?;
                sqlx::query("INSERT INTO sluice_checkpoints (instance, id, body) VALUES ($1, $2, $3)")
                    .bind(&self.instance)
                    .bind(id)
                    .bind(&body)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM sluice_checkpoints WHERE instance = $1 AND id <= $2")
                    .bind(&self.instance)
                    .bind(id - self.keep)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await
            })
            .map_err(|e| self.err("cannot write a checkpoint", e))?;
        Ok(format!("{} row id {id}", self.place))
    }

    fn clear(&self) -> Result<(), CheckpointError> {
        self.runtime
            .block_on(
                sqlx::query("DELETE FROM sluice_checkpoints WHERE instance = $1")
                    .bind(&self.instance)
                    .execute(&self.pool),
            )
            .map_err(|e| self.err("cannot remove checkpoints", e))?;
        Ok(())
    }

    fn claim_parts(&self, scope: &str, inputs: &[String], owner: &str) -> Result<(), CheckpointError> {
        self.runtime
            .block_on(async {
                let mut tx = self.pool.begin().await?;
                for input in inputs {
                    sqlx::query(
                        "INSERT INTO sluice_partition_state (scope, input, owner, id, body) VALUES ($1, $2, $3, 0, NULL) \
                         ON CONFLICT (scope, input) DO UPDATE SET owner = EXCLUDED.owner",
                    )
                    .bind(scope)
                    .bind(input)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            })
            .map_err(|e| self.err("cannot claim partitions", e))
    }

    fn save_parts(&self, scope: &str, parts: &[PartCheckpoint], owner: &str) -> Result<String, CheckpointError> {
        // Every row only if this owner still holds it, in one transaction:
        // a partition claimed by another instance fails the whole write.
        let fenced = self
            .runtime
            .block_on(async {
                let mut tx = self.pool.begin().await?;
                for part in parts {
                    let written = sqlx::query(
                        "INSERT INTO sluice_partition_state (scope, input, owner, id, body) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (scope, input) DO UPDATE \
                         SET id = EXCLUDED.id, body = EXCLUDED.body, created_at = now() \
                         WHERE sluice_partition_state.owner = EXCLUDED.owner",
                    )
                    .bind(scope)
                    .bind(&part.input)
                    .bind(owner)
                    .bind(part.id as i64)
                    .bind(part.encode())
                    .execute(&mut *tx)
                    .await?;
                    if written.rows_affected() == 0 {
                        let holder: String = sqlx::query_scalar(
                            "SELECT owner FROM sluice_partition_state WHERE scope = $1 AND input = $2",
                        )
                        .bind(scope)
                        .bind(&part.input)
                        .fetch_one(&mut *tx)
                        .await?;
                        // Now, not when the connection is next used: the
                        // refused upsert locked the other owner's row.
                        tx.rollback().await?;
                        return Ok::<_, sqlx::Error>(Some((part.input.clone(), holder)));
                    }
                }
                tx.commit().await?;
                Ok(None)
            })
            .map_err(|e| self.err("cannot write the partitions' state", e))?;
        if let Some((input, owner)) = fenced {
            return Err(CheckpointError::Fenced { place: self.place.clone(), input, owner });
        }
        Ok(format!("{} table sluice_partition_state, scope {scope}", self.place))
    }

    fn load_part(&self, scope: &str, input: &str) -> Result<Option<PartCheckpoint>, CheckpointError> {
        let body: Option<Vec<u8>> = self
            .runtime
            .block_on(
                sqlx::query_scalar(
                    "SELECT body FROM sluice_partition_state WHERE scope = $1 AND input = $2 AND body IS NOT NULL",
                )
                .bind(scope)
                .bind(input)
                .fetch_optional(&self.pool),
            )
            .map_err(|e| self.err("cannot read a partition's state", e))?;
        let origin = format!("{} partition {input} of {scope}", self.place);
        body.map(|b| PartCheckpoint::decode(&b, &origin)).transpose()
    }

    fn latest_part_id(&self, scope: &str) -> Result<Option<u64>, CheckpointError> {
        let id: Option<i64> = self
            .runtime
            .block_on(
                sqlx::query_scalar("SELECT max(id) FROM sluice_partition_state WHERE scope = $1 AND body IS NOT NULL")
                    .bind(scope)
                    .fetch_one(&self.pool),
            )
            .map_err(|e| self.err("cannot read the partitions' state", e))?;
        Ok(id.map(|id| id as u64))
    }

    fn clear_parts(&self, scope: &str) -> Result<(), CheckpointError> {
        self.runtime
            .block_on(
                sqlx::query("DELETE FROM sluice_partition_state WHERE scope = $1").bind(scope).execute(&self.pool),
            )
            .map_err(|e| self.err("cannot remove the partitions' state", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: u64) -> Checkpoint {
        let mut watermark = WatermarkTracker::new(2, 30_000, 10_000);
        watermark.observe(1, 1_000_000);
        Checkpoint {
            id,
            created_unix_ms: 1,
            writer: "test".into(),
            source: "alerts.json".into(),
            position: Some(r#"{"offset":42}"#.into()),
            watermark,
            shards: vec![vec![OperatorState { operator: "dedup".into(), state: vec![1, 2, 3] }]],
        }
    }

    #[test]
    fn round_trips_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path(), 2).unwrap();
        assert_eq!(store.load_latest().unwrap(), None);
        for id in 1..=4 {
            store.save(&sample(id)).unwrap();
        }
        assert_eq!(store.load_latest().unwrap(), Some(sample(4)));
        assert_eq!(store.latest_id().unwrap(), Some(4));
        assert_eq!(store.list().unwrap().len(), 2, "older checkpoints are pruned");
        store.clear().unwrap();
        assert_eq!(store.load_latest().unwrap(), None);
    }

    #[test]
    fn every_kind_of_damage_is_refused_with_the_file_and_reason() {
        let good = sample(7).encode();
        let cases: [(Vec<u8>, &str); 4] = [
            (b"{\"not\":\"a checkpoint\"}".to_vec(), "bad magic"),
            (good[..good.len() - 3].to_vec(), "truncated"),
            (
                {
                    let mut b = good.clone();
                    *b.last_mut().unwrap() ^= 0xff;
                    b
                },
                "checksum",
            ),
            (
                {
                    let mut b = good.clone();
                    b[8] = 99;
                    b
                },
                "format version 99",
            ),
        ];
        for (bytes, want) in cases {
            let dir = tempfile::tempdir().unwrap();
            let store = DirStore::new(dir.path(), 2).unwrap();
            std::fs::write(dir.path().join("checkpoint-00000000000000000007.sluice"), &bytes).unwrap();
            let err = store.load_latest().unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
            assert!(err.contains("checkpoint-00000000000000000007.sluice"), "{err}");
            assert!(err.contains("--fresh-state"), "{err}");
        }
    }

    #[test]
    fn partitions_state_is_kept_per_group_and_partition() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path(), 2).unwrap();
        let part = |id: u64, input: &str| PartCheckpoint {
            id,
            created_unix_ms: 1,
            writer: "test".into(),
            source: "kafka:wazuh-alerts".into(),
            input: input.into(),
            offset: 10 * id as i64,
            newest: Some(5),
            idle: false,
            tenants: vec![TenantState {
                tenant: "acme".into(),
                operators: vec![OperatorState { operator: "dedup".into(), state: vec![id as u8] }],
            }],
        };
        assert_eq!(store.load_part("sluice", "wazuh-alerts[0]").unwrap(), None);
        assert_eq!(store.latest_part_id("sluice").unwrap(), None);
        let both = ["wazuh-alerts[0]".to_string(), "wazuh-alerts[1]".to_string()];
        store.claim_parts("sluice", &both, "a").unwrap();
        assert_eq!(store.load_part("sluice", "wazuh-alerts[0]").unwrap(), None, "a claim holds no state");
        store.save_parts("sluice", &[part(1, "wazuh-alerts[0]"), part(1, "wazuh-alerts[1]")], "a").unwrap();
        store.save_parts("sluice", &[part(2, "wazuh-alerts[0]")], "a").unwrap();
        store.save_parts("other/group", &[part(7, "wazuh-alerts[0]")], "z").unwrap();
        // Another instance takes partition 0 over: the old owner's writes
        // of it are refused from then on, naming who holds it.
        store.claim_parts("sluice", &both[..1], "b").unwrap();
        let err = store.save_parts("sluice", &[part(3, "wazuh-alerts[0]")], "a").unwrap_err();
        assert!(
            matches!(&err, CheckpointError::Fenced { input, owner, .. } if input == "wazuh-alerts[0]" && owner == "b")
        );
        store.save_parts("sluice", &[part(3, "wazuh-alerts[1]")], "a").unwrap();
        store.save_parts("sluice", &[part(2, "wazuh-alerts[1]")], "a").unwrap();
        assert_eq!(store.load_part("sluice", "wazuh-alerts[0]").unwrap(), Some(part(2, "wazuh-alerts[0]")));
        assert_eq!(store.load_part("sluice", "wazuh-alerts[1]").unwrap(), Some(part(2, "wazuh-alerts[1]")));
        assert_eq!(store.latest_part_id("sluice").unwrap(), Some(2));
        assert_eq!(store.load_part("other/group", "wazuh-alerts[0]").unwrap(), Some(part(7, "wazuh-alerts[0]")));
        // A damaged partition state is refused, naming its file.
        let file = dir.path().join("partitions/sluice/wazuh-alerts%5B1%5D.sluice");
        std::fs::write(&file, b"garbage").unwrap();
        let err = store.load_part("sluice", "wazuh-alerts[1]").unwrap_err().to_string();
        assert!(err.contains("wazuh-alerts%5B1%5D.sluice") && err.contains("--fresh-state"), "{err}");
        store.clear_parts("sluice").unwrap();
        assert_eq!(store.load_part("sluice", "wazuh-alerts[0]").unwrap(), None);
        assert!(store.load_part("other/group", "wazuh-alerts[0]").unwrap().is_some(), "other groups keep theirs");
    }

    #[test]
    fn a_corrupt_newest_checkpoint_is_not_skipped_for_an_older_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(dir.path(), 3).unwrap();
        store.save(&sample(1)).unwrap();
        std::fs::write(dir.path().join("checkpoint-00000000000000000002.sluice"), b"garbage").unwrap();
        assert!(store.load_latest().is_err());
    }
}
