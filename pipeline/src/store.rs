//! The store: clusters and their versions, case files, the outbox, verdicts,
//! priors and an append-only audit log, through sqlx.
//!
//! SQLite by default (a file next to the checkpoint state), PostgreSQL when
//! configured. The migrations are the files under `pipeline/migrations/`
//! (embedded in the binary and applied at start; `sqlx migrate run --source
//! pipeline/migrations/postgres` applies the same files by hand).
//!
//! **Exactly once.** A hand-off is written in one transaction with its
//! cluster version: the case file (its exact bytes, once per idempotency key)
//! and one outbox row per sink. Dispatchers ([`crate::sinks`]) then deliver
//! outbox rows and mark them done when the sink acknowledges. A crash before
//! the commit replays the report from the source, and the insert finds the
//! key already there; a crash after it leaves the row pending, and it is sent
//! again with the same bytes. A receiver may see a key twice, never two
//! contents under one key.
//!
//! **Tenants.** On PostgreSQL every tenant-owned table has row-level
//! security; every statement here runs in a transaction that first sets
//! `app.tenant_id`, so the service role reads and writes one tenant at a time.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sluice_connectors::source::now_us;
use sluice_operators::cluster::ClusterReport;
use sluice_operators::correlate::Priors;
use sluice_operators::operator::ReportKind;
use sluice_operators::time::Rfc3339;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, Row};

use crate::config::Switch;

/// `[store]` settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `auto`: on when a hand-off sink is configured or checkpoints are on.
    pub mode: Switch,
    pub backend: StoreBackend,
    /// The SQLite file; empty: `sluice.db` in `checkpoint.dir`.
    pub path: String,
    /// With `backend = "postgres"`: the environment variable holding the
    /// service's connection URL (a role that is a member of `sluice_service`).
    pub postgres_url_env: String,
    /// With `backend = "postgres"`: the environment variable holding an admin
    /// URL (the tables' owner) that runs the migrations. When it is not set,
    /// the service URL runs them.
    pub postgres_admin_url_env: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            mode: Switch::Auto,
            backend: StoreBackend::Sqlite,
            path: String::new(),
            postgres_url_env: "SLUICE_STORE_URL".into(),
            postgres_admin_url_env: "SLUICE_STORE_ADMIN_URL".into(),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StoreBackend {
    #[default]
    Sqlite,
    Postgres,
}

/// A store operation that failed, with where and what.
#[derive(Debug, thiserror::Error)]
#[error("store {place}: {what}: {message}")]
pub struct StoreError {
    pub place: String,
    pub what: String,
    pub message: String,
}

/// Outbox row states.
pub mod status {
    pub const PENDING: &str = "pending";
    pub const DELIVERED: &str = "delivered";
    pub const PARKED: &str = "parked";
    pub const DEFERRED: &str = "deferred";
}

/// One case waiting in the outbox for a sink.
#[derive(Clone, Debug)]
pub struct Pending {
    pub id: i64,
    pub tenant: String,
    pub sink: String,
    pub idempotency_key: String,
    pub score: f64,
    /// Over the safety floor: never held back by a budget.
    pub floor: bool,
    pub attempts: i64,
    pub kind: String,
    pub cluster_id: String,
    pub version: i64,
    /// The case file, byte for byte what every sink sends under the key.
    pub body: String,
}

/// A verdict from the investigation stage, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VerdictRecord {
    pub verdict: String,
    pub confidence: f64,
    /// The whole validated answer, JSON.
    pub body: String,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

/// When a verdict becomes a prior: false positive, at least this
/// confident; it lasts `ttl_us`.
#[derive(Clone, Debug, PartialEq)]
pub struct PriorPolicy {
    pub min_confidence: f64,
    pub ttl_us: i64,
}

impl PriorPolicy {
    fn makes_prior(&self, v: &VerdictRecord) -> bool {
        v.verdict == "false_positive" && v.confidence >= self.min_confidence
    }
}

/// A cluster's history as rows of text (see [`Store::history`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterHistory {
    /// version, kind, score, decision, reason
    pub versions: Vec<Vec<String>>,
    /// idempotency key, sink, status, attempts, last error
    pub handoffs: Vec<Vec<String>>,
    /// idempotency key, sink, verdict, confidence, answer
    pub verdicts: Vec<Vec<String>>,
    /// at (µs), actor, action, subject, detail
    pub audit: Vec<Vec<String>>,
}

/// A prior as stored.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PriorRow {
    pub id: i64,
    pub signature: String,
    pub reason: String,
    pub created_us: i64,
    pub expires_us: i64,
    pub revoked_us: Option<i64>,
    pub revoked_by: String,
}

/// A tenant's hand-offs over a time range (see [`Store::analytics`]).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StoreAnalytics {
    pub verdicts: BTreeMap<String, i64>,
    pub llm_tokens: i64,
    pub outbox: BTreeMap<String, i64>,
    /// Sorted; µs.
    pub first_alert_to_handoff_us: Vec<i64>,
}

/// Outbox counts by sink and status.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct OutboxCounts {
    pub rows: Vec<(String, String, i64)>,
}

impl OutboxCounts {
    pub fn get(&self, sink: &str, status: &str) -> i64 {
        self.rows.iter().filter(|(s, st, _)| s == sink && st == status).map(|r| r.2).sum()
    }
}

/// The store. Cheap to share between threads (`Arc`).
pub struct Store {
    runtime: tokio::runtime::Runtime,
    pool: AnyPool,
    backend: StoreBackend,
    /// Where, for people: the file, or host and database (never a password).
    place: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("place", &self.place).finish_non_exhaustive()
    }
}

/// The migrations of a backend, embedded: the same files `sqlx migrate` reads.
fn migrator(backend: StoreBackend) -> Migrator {
    let files: &[(i64, &str, &str)] = match backend {
        StoreBackend::Sqlite => &[(1, "store", include_str!("../migrations/sqlite/0001_store.sql"))],
        StoreBackend::Postgres => &[(1, "store", include_str!("../migrations/postgres/0001_store.sql"))],
    };
    Migrator {
        migrations: Cow::Owned(
            files
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(*v, Cow::Borrowed(d), MigrationType::Simple, Cow::Borrowed(sql), false)
                })
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

/// A connection URL's host and database, for messages (no credentials).
fn place_of_url(url: &str) -> String {
    match url.parse::<sqlx::postgres::PgConnectOptions>() {
        Ok(o) => format!("postgres://{}:{}/{}", o.get_host(), o.get_port(), o.get_database().unwrap_or("")),
        Err(_) => "postgres".into(),
    }
}

impl Store {
    /// Opens (and migrates) the configured store. `state_dir` is where the
    /// SQLite file goes when `store.path` is empty.
    pub fn open(config: &StoreConfig, state_dir: &str) -> Result<Store, StoreError> {
        match config.backend {
            StoreBackend::Sqlite => {
                let path = if config.path.is_empty() {
                    Path::new(state_dir).join("sluice.db")
                } else {
                    PathBuf::from(&config.path)
                };
                Self::open_sqlite(&path)
            }
            StoreBackend::Postgres => {
                let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
                let url = env(&config.postgres_url_env).ok_or_else(|| StoreError {
                    place: "postgres".into(),
                    what: "connect".into(),
                    message: format!(
                        "store.backend = \"postgres\" needs the connection URL in ${}",
                        config.postgres_url_env
                    ),
                })?;
                let admin = env(&config.postgres_admin_url_env);
                Self::open_postgres(&url, admin.as_deref())
            }
        }
    }

    /// A SQLite store in `path` (created with its directory if missing).
    pub fn open_sqlite(path: &Path) -> Result<Store, StoreError> {
        let place = path.display().to_string();
        let err = |what: &str, message: String| StoreError { place: place.clone(), what: what.into(), message };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err("create directory", e.to_string()))?;
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let runtime = runtime().map_err(|e| err("start", e))?;
        let pool = runtime
            .block_on(
                AnyPoolOptions::new()
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // Durable commits; writers wait for each other
                            // instead of failing.
                            sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                            sqlx::query("PRAGMA synchronous = FULL").execute(&mut *conn).await?;
                            Ok(())
                        })
                    })
                    .connect(&url),
            )
            .map_err(|e| err("open", e.to_string()))?;
        runtime
            .block_on(sqlx::query("PRAGMA journal_mode = WAL").execute(&pool))
            .map_err(|e| err("set WAL mode", e.to_string()))?;
        let store = Store { runtime, pool, backend: StoreBackend::Sqlite, place };
        store.migrate(&store.pool)?;
        Ok(store)
    }

    /// A PostgreSQL store. `admin_url`, when given, runs the migrations (the
    /// tables' owner); the service connects with `url`.
    pub fn open_postgres(url: &str, admin_url: Option<&str>) -> Result<Store, StoreError> {
        let place = place_of_url(url);
        let err = |what: &str, message: String| StoreError { place: place.clone(), what: what.into(), message };
        let hide = |e: sqlx::Error| {
            let mut m = e.to_string().replace(url, "<store url>");
            if let Some(a) = admin_url {
                m = m.replace(a, "<store admin url>");
            }
            m
        };
        let runtime = runtime().map_err(|e| err("start", e))?;
        let connect = |runtime: &tokio::runtime::Runtime, u: &str, n: u32| {
            runtime.block_on(
                AnyPoolOptions::new().max_connections(n).acquire_timeout(std::time::Duration::from_secs(10)).connect(u),
            )
        };
        let pool = connect(&runtime, url, 4).map_err(|e| err("connect", hide(e)))?;
        let store = Store { runtime, pool, backend: StoreBackend::Postgres, place: place.clone() };
        match admin_url {
            Some(a) => {
                let admin = connect(&store.runtime, a, 1).map_err(|e| err("connect (admin)", hide(e)))?;
                store.migrate(&admin)?;
                store.runtime.block_on(admin.close());
            }
            // The service role owns nothing and cannot migrate: check that
            // the owner did (or, when the service URL is the owner's, do it).
            None if !store.migrated() => store.migrate(&store.pool).map_err(|e| StoreError {
                message: format!(
                    "{}; the schema is not migrated: set $SLUICE_STORE_ADMIN_URL (store.postgres_admin_url_env) \
                     to the tables' owner, or run `sqlx migrate run --source pipeline/migrations/postgres`",
                    e.message
                ),
                ..e
            })?,
            None => {}
        }
        Ok(store)
    }

    /// Whether every embedded migration is applied.
    fn migrated(&self) -> bool {
        let latest = migrator(self.backend).iter().map(|m| m.version).max().unwrap_or(0);
        let applied: Result<Option<i64>, sqlx::Error> = self.runtime.block_on(
            sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&self.pool),
        );
        applied.ok().flatten().is_some_and(|v| v >= latest)
    }

    fn migrate(&self, pool: &AnyPool) -> Result<(), StoreError> {
        self.runtime
            .block_on(migrator(self.backend).run(pool))
            .map_err(|e| self.error("apply migrations", e.to_string()))
    }

    fn error(&self, what: &str, message: String) -> StoreError {
        StoreError { place: self.place.clone(), what: what.into(), message }
    }

    pub fn describe(&self) -> &str {
        &self.place
    }

    pub fn backend(&self) -> StoreBackend {
        self.backend
    }

    /// Runs `f` in a transaction scoped to `tenant` (row-level security on
    /// PostgreSQL), committing when it succeeds.
    fn in_tenant<T>(
        &self,
        tenant: &str,
        what: &str,
        f: impl for<'c> FnOnce(
            &'c mut sqlx::AnyConnection,
        ) -> std::pin::Pin<Box<dyn Future<Output = Result<T, sqlx::Error>> + 'c>>,
    ) -> Result<T, StoreError> {
        self.runtime
            .block_on(async {
                let mut tx = self.pool.begin().await?;
                if self.backend == StoreBackend::Postgres {
                    sqlx::query("SELECT set_config('app.tenant_id', $1, true)").bind(tenant).execute(&mut *tx).await?;
                }
                let out = f(&mut tx).await?;
                tx.commit().await?;
                Ok(out)
            })
            .map_err(|e: sqlx::Error| self.error(what, format!("tenant {tenant}: {e}")))
    }

    /// Rows of a tenant-scoped query: `$1` is the tenant and `$2`, when
    /// given, `arg`. Each row becomes a `T` through `row`.
    fn tenant_rows<T: 'static>(
        &self,
        tenant: &str,
        what: &str,
        sql: &'static str,
        arg: Option<&str>,
        row: fn(&AnyRow) -> Result<T, sqlx::Error>,
    ) -> Result<Vec<T>, StoreError> {
        let (t, arg) = (tenant.to_string(), arg.map(str::to_string));
        self.in_tenant(tenant, what, move |c| {
            Box::pin(async move {
                let mut query = sqlx::query(sql).bind(&t);
                if let Some(arg) = &arg {
                    query = query.bind(arg);
                }
                query.fetch_all(&mut *c).await?.iter().map(row).collect()
            })
        })
    }

    /// Records a report: the cluster's latest state, its version, and for a
    /// hand-off the case file and one outbox row per sink, in one
    /// transaction. Returns whether the case file is new (a replayed report
    /// finds its key already there and changes nothing) and, for a hand-off,
    /// the case file as stored: what every sink sends under its key.
    pub fn record(
        &self,
        kind: ReportKind,
        report: &ClusterReport,
        body: &str,
        sinks: &[&str],
        floor: bool,
        now_us: i64,
    ) -> Result<(bool, Option<String>), StoreError> {
        let kind_name = kind_name(kind);
        let r = report.clone();
        let body = body.to_string();
        let sinks: Vec<String> = sinks.iter().map(|s| s.to_string()).collect();
        let tenant = report.tenant.clone();
        self.in_tenant(&tenant, "record a cluster version", move |c| {
            Box::pin(async move {
                let t = r.tenant.as_str();
                let decision = r.decision.to_string();
                let signature = r.signature.clone();
                sqlx::query("INSERT INTO sluice_tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind(t)
                    .execute(&mut *c)
                    .await?;
                sqlx::query(
                    "INSERT INTO clusters (tenant, cluster_id, version, score, decision, first_seen, last_seen, signature, updated_us)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                     ON CONFLICT (tenant, cluster_id) DO UPDATE SET version = excluded.version, score = excluded.score,
                        decision = excluded.decision, last_seen = excluded.last_seen, signature = excluded.signature,
                        updated_us = excluded.updated_us
                     WHERE clusters.version <= excluded.version",
                )
                .bind(t)
                .bind(&r.cluster_id)
                .bind(r.version as i64)
                .bind(r.score)
                .bind(&decision)
                .bind(&r.first_seen)
                .bind(&r.last_seen)
                .bind(&signature)
                .bind(now_us)
                .execute(&mut *c)
                .await?;
                sqlx::query(
                    "INSERT INTO cluster_versions (tenant, cluster_id, version, kind, score, decision, reason, created_us)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(t)
                .bind(&r.cluster_id)
                .bind(r.version as i64)
                .bind(kind_name)
                .bind(r.score)
                .bind(&decision)
                .bind(&r.reason)
                .bind(now_us)
                .execute(&mut *c)
                .await?;
                if kind == ReportKind::Close {
                    audit(&mut *c, t, now_us, "sluice", "close", &r.idempotency_key, &format!("{decision}: {}", r.reason))
                        .await?;
                    return Ok((false, None));
                }
                let inserted = sqlx::query(
                    "INSERT INTO case_files (tenant, idempotency_key, cluster_id, version, kind, score, body, created_us)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                )
                .bind(t)
                .bind(&r.idempotency_key)
                .bind(&r.cluster_id)
                .bind(r.version as i64)
                .bind(kind_name)
                .bind(r.score)
                .bind(&body)
                .bind(now_us)
                .execute(&mut *c)
                .await?
                .rows_affected()
                    == 1;
                if !inserted {
                    let stored: String =
                        sqlx::query_scalar("SELECT body FROM case_files WHERE tenant = $1 AND idempotency_key = $2")
                            .bind(t)
                            .bind(&r.idempotency_key)
                            .fetch_one(&mut *c)
                            .await?;
                    return Ok((false, Some(stored)));
                }
                for sink in &sinks {
                    sqlx::query(
                        "INSERT INTO outbox (tenant, sink, idempotency_key, score, floor, next_attempt_us, created_us)
                         VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT DO NOTHING",
                    )
                    .bind(t)
                    .bind(sink)
                    .bind(&r.idempotency_key)
                    .bind(r.score)
                    .bind(floor as i64)
                    .bind(now_us)
                    .execute(&mut *c)
                    .await?;
                }
                let to = if sinks.is_empty() { "no sink configured".to_string() } else { sinks.join(", ") };
                audit(&mut *c, t, now_us, "sluice", kind_name, &r.idempotency_key, &format!("{}; to {to}", r.reason))
                    .await?;
                Ok((true, Some(body)))
            })
        })
    }

    /// Every tenant that has something in the store.
    pub fn tenants(&self) -> Result<Vec<String>, StoreError> {
        self.runtime
            .block_on(sqlx::query_scalar("SELECT tenant FROM sluice_tenants ORDER BY tenant").fetch_all(&self.pool))
            .map_err(|e| self.error("list tenants", e.to_string()))
    }

    /// Up to `limit` cases due for `sink` in `tenant`: pending rows whose
    /// next attempt is due, plus deferred ones when `include_deferred`;
    /// safety-floor cases first, then the highest scores, then the oldest.
    ///
    /// The rows are claimed for `lease_us`: their next attempt moves that far
    /// ahead, so another dispatcher on the same store (another instance on
    /// PostgreSQL, where concurrent claims also skip each other's locked
    /// rows) does not take them meanwhile. Delivering, retrying or parking
    /// a case ends the lease; after a crash the case is due again once it
    /// runs out.
    pub fn due(
        &self,
        tenant: &str,
        sink: &str,
        now_us: i64,
        limit: i64,
        include_deferred: bool,
        lease_us: i64,
    ) -> Result<Vec<Pending>, StoreError> {
        let (sink, t) = (sink.to_string(), tenant.to_string());
        let lock = if self.backend == StoreBackend::Postgres { " FOR UPDATE OF o SKIP LOCKED" } else { "" };
        let sql = format!(
            "SELECT o.id, o.tenant, o.sink, o.idempotency_key, o.score, o.floor, o.attempts,
                    f.kind, f.cluster_id, f.version, f.body
             FROM outbox o JOIN case_files f ON f.tenant = o.tenant AND f.idempotency_key = o.idempotency_key
             WHERE o.tenant = $5 AND o.sink = $1 AND o.next_attempt_us <= $2
               AND (o.status = 'pending' OR (o.status = 'deferred' AND $3 = 1))
             ORDER BY o.floor DESC, o.score DESC, o.id
             LIMIT $4{lock}"
        );
        self.in_tenant(tenant, "read the outbox", move |c| {
            Box::pin(async move {
                // On SQLite, take the write lock first (see `external_verdict`).
                sqlx::query("UPDATE outbox SET next_attempt_us = next_attempt_us WHERE id = -1")
                    .execute(&mut *c)
                    .await?;
                let rows: Vec<AnyRow> = sqlx::query(&sql)
                    .bind(&sink)
                    .bind(now_us)
                    .bind(include_deferred as i64)
                    .bind(limit)
                    .bind(&t)
                    .fetch_all(&mut *c)
                    .await?;
                let cases = rows.iter().map(pending_of).collect::<Result<Vec<_>, _>>()?;
                for case in &cases {
                    sqlx::query("UPDATE outbox SET next_attempt_us = $1 WHERE tenant = $2 AND id = $3")
                        .bind(now_us.saturating_add(lease_us))
                        .bind(&t)
                        .bind(case.id)
                        .execute(&mut *c)
                        .await?;
                }
                Ok(cases)
            })
        })
    }

    /// Marks a case delivered (the sink acknowledged it), with a verdict
    /// when the sink returned one, and audits it. A confident
    /// false-positive verdict becomes a prior on the case's signature (per
    /// `policy`); returns whether one was made.
    pub fn delivered(
        &self,
        case: &Pending,
        actor: &str,
        detail: &str,
        verdict: Option<&VerdictRecord>,
        policy: &PriorPolicy,
        now_us: i64,
    ) -> Result<bool, StoreError> {
        let case = case.clone();
        let (actor, detail, verdict, policy) =
            (actor.to_string(), detail.to_string(), verdict.cloned(), policy.clone());
        self.in_tenant(&case.tenant.clone(), "mark a case delivered", move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, done_us = $1, last_error = NULL
                     WHERE id = $2 AND tenant = $3",
                )
                .bind(now_us)
                .bind(case.id)
                .bind(&case.tenant)
                .execute(&mut *c)
                .await?;
                audit(&mut *c, &case.tenant, now_us, &actor, "handoff", &case.idempotency_key, &detail).await?;
                match verdict {
                    Some(v) => insert_verdict(&mut *c, &case, &actor, &v, &policy, now_us).await,
                    None => Ok(false),
                }
            })
        })
    }

    /// A verdict from outside (an investigation platform that got the case
    /// by webhook), on a case file in the store. Returns whether it made a
    /// prior; an unknown key is an error naming it.
    pub fn external_verdict(
        &self,
        tenant: &str,
        key: &str,
        actor: &str,
        verdict: &VerdictRecord,
        policy: &PriorPolicy,
        now_us: i64,
    ) -> Result<bool, StoreError> {
        let (t, key, actor, v, policy) =
            (tenant.to_string(), key.to_string(), actor.to_string(), verdict.clone(), policy.clone());
        self.in_tenant(tenant, "record a verdict", move |c| {
            Box::pin(async move {
                // Write first, so SQLite takes its write lock (waiting for
                // the pipeline if need be) before this transaction reads.
                sqlx::query("INSERT INTO sluice_tenants (tenant) VALUES ($1) ON CONFLICT DO NOTHING")
                    .bind(&t)
                    .execute(&mut *c)
                    .await?;
                let row: Option<AnyRow> = sqlx::query(
                    "SELECT cluster_id, version, kind, body, score FROM case_files WHERE tenant = $1 AND idempotency_key = $2",
                )
                .bind(&t)
                .bind(&key)
                .fetch_optional(&mut *c)
                .await?;
                let Some(row) = row else {
                    return Err(sqlx::Error::Protocol(format!("no case file {key} in tenant {t}")));
                };
                let case = Pending {
                    id: 0,
                    tenant: t.clone(),
                    sink: "external".into(),
                    idempotency_key: key.clone(),
                    score: row.try_get(4)?,
                    floor: false,
                    attempts: 0,
                    kind: row.try_get(2)?,
                    cluster_id: row.try_get(0)?,
                    version: row.try_get(1)?,
                    body: row.try_get(3)?,
                };
                insert_verdict(&mut *c, &case, &actor, &v, &policy, now_us).await
            })
        })
    }

    /// A cluster's history: its versions, hand-offs, verdicts and audit
    /// trail, oldest first.
    pub fn history(&self, tenant: &str, cluster_id: &str) -> Result<ClusterHistory, StoreError> {
        let (t, id) = (tenant.to_string(), cluster_id.to_string());
        self.in_tenant(tenant, "read a cluster's history", move |c| {
            Box::pin(async move {
                let strings = |rows: Vec<AnyRow>, n: usize| -> Result<Vec<Vec<String>>, sqlx::Error> {
                    rows.iter()
                        .map(|r| {
                            (0..n)
                                .map(|i| {
                                    r.try_get::<String, _>(i)
                                        .or_else(|_| r.try_get::<i64, _>(i).map(|v| v.to_string()))
                                        .or_else(|_| r.try_get::<f64, _>(i).map(|v| v.to_string()))
                                })
                                .collect()
                        })
                        .collect()
                };
                // Each part: five columns, bound to the tenant and to the
                // cluster id (the audit log: to its idempotency keys).
                let parts = [
                    (
                        "SELECT version, kind, score, decision, reason FROM cluster_versions
                      WHERE tenant = $1 AND cluster_id = $2 ORDER BY version",
                        id.clone(),
                    ),
                    (
                        "SELECT o.idempotency_key, o.sink, o.status, o.attempts, COALESCE(o.last_error, '')
                      FROM outbox o JOIN case_files f ON f.tenant = o.tenant AND f.idempotency_key = o.idempotency_key
                      WHERE o.tenant = $1 AND f.cluster_id = $2 ORDER BY o.id",
                        id.clone(),
                    ),
                    (
                        "SELECT idempotency_key, sink, verdict, confidence, body FROM verdicts
                      WHERE tenant = $1 AND cluster_id = $2 ORDER BY id",
                        id.clone(),
                    ),
                    (
                        "SELECT at_us, actor, action, subject, detail FROM audit_log
                      WHERE tenant = $1 AND subject LIKE $2 ORDER BY id",
                        format!("{id}:%"),
                    ),
                ];
                let mut found = Vec::with_capacity(parts.len());
                for (sql, key) in parts {
                    let rows = sqlx::query(sql).bind(&t).bind(key).fetch_all(&mut *c).await?;
                    found.push(strings(rows, 5)?);
                }
                let [versions, handoffs, verdicts, audit]: [Vec<Vec<String>>; 4] =
                    found.try_into().expect("four parts");
                Ok(ClusterHistory { versions, handoffs, verdicts, audit })
            })
        })
    }

    /// Every tenant's active priors (not revoked, not expired), as the
    /// pipeline applies them.
    pub fn active_priors(&self, now_us: i64) -> Result<Priors, StoreError> {
        let mut priors = Priors::default();
        for tenant in self.tenants()? {
            for p in self.priors(&tenant)? {
                if p.revoked_us.is_none() && p.expires_us > now_us {
                    let until = Rfc3339(p.expires_us / 1000).to_string();
                    let description = format!("prior #{}: {}, until {}", p.id, p.reason, &until[..10]);
                    priors.insert(&tenant, &p.signature, description);
                }
            }
        }
        Ok(priors)
    }

    /// A tenant's priors, newest first, revoked and expired ones included.
    pub fn priors(&self, tenant: &str) -> Result<Vec<PriorRow>, StoreError> {
        self.tenant_rows(
            tenant,
            "list priors",
            "SELECT id, signature, reason, created_us, expires_us, revoked_us, COALESCE(revoked_by, '')
             FROM priors WHERE tenant = $1 ORDER BY id DESC",
            None,
            |r| {
                Ok(PriorRow {
                    id: r.try_get(0)?,
                    signature: r.try_get(1)?,
                    reason: r.try_get(2)?,
                    created_us: r.try_get(3)?,
                    expires_us: r.try_get(4)?,
                    revoked_us: r.try_get(5)?,
                    revoked_by: r.try_get(6)?,
                })
            },
        )
    }

    /// Revokes a prior (audited); false when the tenant has no such active
    /// prior.
    pub fn revoke_prior(&self, tenant: &str, id: i64, actor: &str, now_us: i64) -> Result<bool, StoreError> {
        let (t, actor) = (tenant.to_string(), actor.to_string());
        self.in_tenant(tenant, "revoke a prior", move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE priors SET revoked_us = $1, revoked_by = $2 WHERE tenant = $3 AND id = $4 AND revoked_us IS NULL",
                )
                .bind(now_us)
                .bind(&actor)
                .bind(&t)
                .bind(id)
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n > 0 {
                    audit(&mut *c, &t, now_us, &actor, "prior_revoked", &format!("prior #{id}"), "").await?;
                }
                Ok(n > 0)
            })
        })
    }

    /// A failed attempt: try again at `next_us`.
    pub fn retry(&self, case: &Pending, error: &str, next_us: i64) -> Result<(), StoreError> {
        let (id, error, t) = (case.id, error.to_string(), case.tenant.clone());
        self.in_tenant(&case.tenant, "schedule a retry", move |c| {
            Box::pin(async move {
                sqlx::query(
                    "UPDATE outbox SET status = 'pending', attempts = attempts + 1, next_attempt_us = $1, last_error = $2
                     WHERE id = $3 AND tenant = $4",
                )
                .bind(next_us)
                .bind(&error)
                .bind(id)
                .bind(&t)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
    }

    /// Gives up on a case for now: it stays in the store, parked, with the
    /// reason (`sluice outbox retry` sends it again).
    pub fn park(&self, case: &Pending, actor: &str, reason: &str, now_us: i64) -> Result<(), StoreError> {
        self.set_status(case, status::PARKED, actor, "parked", reason, now_us)
    }

    /// Holds a case back (over budget) with the reason; it goes out when
    /// budget frees up.
    pub fn defer(&self, case: &Pending, actor: &str, reason: &str, now_us: i64) -> Result<(), StoreError> {
        self.set_status(case, status::DEFERRED, actor, "deferred", reason, now_us)
    }

    fn set_status(
        &self,
        case: &Pending,
        new: &'static str,
        actor: &str,
        action: &'static str,
        reason: &str,
        now_us: i64,
    ) -> Result<(), StoreError> {
        let case = case.clone();
        let (actor, reason) = (actor.to_string(), reason.to_string());
        self.in_tenant(&case.tenant.clone(), "update the outbox", move |c| {
            Box::pin(async move {
                // The outcome ends the case's lease.
                sqlx::query("UPDATE outbox SET next_attempt_us = $1 WHERE id = $2 AND tenant = $3")
                    .bind(now_us)
                    .bind(case.id)
                    .bind(&case.tenant)
                    .execute(&mut *c)
                    .await?;
                let changed = sqlx::query(
                    "UPDATE outbox SET status = $1, last_error = $2 WHERE id = $3 AND tenant = $4 AND status <> $1",
                )
                .bind(new)
                .bind(&reason)
                .bind(case.id)
                .bind(&case.tenant)
                .execute(&mut *c)
                .await?
                .rows_affected();
                // Deferring again for the same reason is not news.
                if changed > 0 {
                    audit(&mut *c, &case.tenant, now_us, &actor, action, &case.idempotency_key, &reason).await?;
                }
                Ok(())
            })
        })
    }

    /// Puts parked cases of a tenant back in the queue (`sink` empty: all).
    pub fn requeue_parked(&self, tenant: &str, sink: &str, actor: &str, now_us: i64) -> Result<u64, StoreError> {
        let (t, sink, actor) = (tenant.to_string(), sink.to_string(), actor.to_string());
        self.in_tenant(tenant, "requeue parked cases", move |c| {
            Box::pin(async move {
                let n = sqlx::query(
                    "UPDATE outbox SET status = 'pending', attempts = 0, next_attempt_us = $1
                     WHERE tenant = $3 AND status = 'parked' AND ($2 = '' OR sink = $2)",
                )
                .bind(now_us)
                .bind(&sink)
                .bind(&t)
                .execute(&mut *c)
                .await?
                .rows_affected();
                if n > 0 {
                    audit(&mut *c, &t, now_us, &actor, "requeue", &format!("{n} parked case(s)"), &sink).await?;
                }
                Ok(n)
            })
        })
    }

    /// Appends to a tenant's audit log.
    pub fn audit(
        &self,
        tenant: &str,
        actor: &str,
        action: &str,
        subject: &str,
        detail: &str,
    ) -> Result<(), StoreError> {
        let (t, actor, action, subject, detail) =
            (tenant.to_string(), actor.to_string(), action.to_string(), subject.to_string(), detail.to_string());
        self.in_tenant(tenant, "append to the audit log", move |c| {
            Box::pin(async move { audit(c, &t, now_us(), &actor, &action, &subject, &detail).await })
        })
    }

    /// Cases of a tenant still pending for a sink (due now or later).
    pub fn pending_count(&self, tenant: &str, sink: &str) -> Result<i64, StoreError> {
        let (sink, t) = (sink.to_string(), tenant.to_string());
        self.in_tenant(tenant, "count pending cases", move |c| {
            Box::pin(async move {
                sqlx::query_scalar("SELECT count(*) FROM outbox WHERE tenant = $2 AND sink = $1 AND status = 'pending'")
                    .bind(&sink)
                    .bind(&t)
                    .fetch_one(&mut *c)
                    .await
            })
        })
    }

    /// Outbox rows by sink and status, over every tenant.
    pub fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let mut counts = OutboxCounts::default();
        for tenant in self.tenants()? {
            let rows = self.tenant_rows(
                &tenant,
                "count the outbox",
                "SELECT sink, status, count(*) AS n FROM outbox WHERE tenant = $1 GROUP BY sink, status",
                None,
                |r| Ok((r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?, r.try_get::<i64, _>(2)?)),
            )?;
            for (sink, st, n) in rows {
                match counts.rows.iter_mut().find(|(s, x, _)| *s == sink && *x == st) {
                    Some(r) => r.2 += n,
                    None => counts.rows.push((sink, st, n)),
                }
            }
        }
        counts.rows.sort();
        Ok(counts)
    }

    /// A tenant's outbox rows with the given status: (sink, key, reason).
    pub fn outbox_rows(&self, tenant: &str, status: &str) -> Result<Vec<(String, String, String)>, StoreError> {
        self.tenant_rows(
            tenant,
            "list the outbox",
            "SELECT sink, idempotency_key, COALESCE(last_error, '') FROM outbox WHERE tenant = $1 AND status = $2
             ORDER BY floor DESC, score DESC, id",
            Some(status),
            |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
        )
    }

    /// Hand-offs (delivered outbox rows) of a tenant's sink since `since_us`.
    pub fn delivered_since(&self, tenant: &str, sink: &str, since_us: i64) -> Result<i64, StoreError> {
        let (sink, t) = (sink.to_string(), tenant.to_string());
        self.in_tenant(tenant, "count hand-offs", move |c| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "SELECT count(*) FROM outbox WHERE tenant = $3 AND sink = $1 AND status = 'delivered' AND done_us >= $2",
                )
                .bind(&sink)
                .bind(since_us)
                .bind(&t)
                    .fetch_one(&mut *c)
                    .await
            })
        })
    }

    /// Cases a tenant's sink took since `since_us` that have no verdict yet.
    pub fn open_investigations(&self, tenant: &str, sink: &str, since_us: i64) -> Result<i64, StoreError> {
        let (sink, t) = (sink.to_string(), tenant.to_string());
        self.in_tenant(tenant, "count open investigations", move |c| {
            Box::pin(async move {
                sqlx::query_scalar(
                    "SELECT count(*) FROM outbox o
                     WHERE o.tenant = $1 AND o.sink = $2 AND o.status = 'delivered' AND o.done_us >= $3
                       AND NOT EXISTS (SELECT 1 FROM verdicts v WHERE v.tenant = o.tenant AND v.idempotency_key = o.idempotency_key)",
                )
                .bind(&t)
                .bind(&sink)
                .bind(since_us)
                .fetch_one(&mut *c)
                .await
            })
        })
    }

    /// Records LLM tokens a tenant's case used (whatever the outcome).
    pub fn record_usage(&self, tenant: &str, sink: &str, tokens: i64, now_us: i64) -> Result<(), StoreError> {
        let (t, sink) = (tenant.to_string(), sink.to_string());
        self.in_tenant(tenant, "record token usage", move |c| {
            Box::pin(async move {
                sqlx::query("INSERT INTO llm_usage (tenant, sink, at_us, tokens) VALUES ($1, $2, $3, $4)")
                    .bind(&t)
                    .bind(&sink)
                    .bind(now_us)
                    .bind(tokens)
                    .execute(&mut *c)
                    .await?;
                Ok(())
            })
        })
    }

    /// LLM tokens a tenant used since `since_us`.
    pub fn tokens_since(&self, tenant: &str, since_us: i64) -> Result<i64, StoreError> {
        let t = tenant.to_string();
        self.in_tenant(tenant, "sum tokens", move |c| {
            Box::pin(async move {
                let n: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(SUM(tokens) AS BIGINT) FROM llm_usage WHERE tenant = $2 AND at_us >= $1",
                )
                .bind(since_us)
                .bind(&t)
                .fetch_one(&mut *c)
                .await?;
                Ok(n.unwrap_or(0))
            })
        })
    }

    /// A tenant's verdicts: (idempotency key, verdict, confidence).
    pub fn verdicts(&self, tenant: &str) -> Result<Vec<(String, String, f64)>, StoreError> {
        self.tenant_rows(
            tenant,
            "list verdicts",
            "SELECT idempotency_key, verdict, confidence FROM verdicts WHERE tenant = $1 ORDER BY id",
            None,
            |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
        )
    }

    /// What the store knows of a tenant's hand-offs between `from_us` and
    /// `to_us` (wall clock): verdicts by outcome, tokens used, outbox rows
    /// by status (delivered ones by delivery time), and for each delivered
    /// case the time from its cluster's first alert (event time) to the
    /// delivery.
    pub fn analytics(&self, tenant: &str, from_us: i64, to_us: i64) -> Result<StoreAnalytics, StoreError> {
        let t = tenant.to_string();
        self.in_tenant(tenant, "compute analytics", move |c| {
            Box::pin(async move {
                let mut a = StoreAnalytics::default();
                let verdicts = sqlx::query(
                    "SELECT verdict, count(*) FROM verdicts WHERE tenant = $1 AND created_us >= $2 AND created_us < $3
                     GROUP BY verdict ORDER BY verdict",
                )
                .bind(&t)
                .bind(from_us)
                .bind(to_us)
                .fetch_all(&mut *c)
                .await?;
                for r in verdicts {
                    a.verdicts.insert(r.try_get(0)?, r.try_get(1)?);
                }
                let tokens: Option<i64> = sqlx::query_scalar(
                    "SELECT CAST(SUM(tokens) AS BIGINT) FROM llm_usage WHERE tenant = $1 AND at_us >= $2 AND at_us < $3",
                )
                .bind(&t)
                .bind(from_us)
                .bind(to_us)
                .fetch_one(&mut *c)
                .await?;
                a.llm_tokens = tokens.unwrap_or(0);
                let outbox = sqlx::query(
                    "SELECT status, count(*) FROM outbox WHERE tenant = $1
                       AND COALESCE(done_us, created_us) >= $2 AND COALESCE(done_us, created_us) < $3
                     GROUP BY status ORDER BY status",
                )
                .bind(&t)
                .bind(from_us)
                .bind(to_us)
                .fetch_all(&mut *c)
                .await?;
                for r in outbox {
                    a.outbox.insert(r.try_get(0)?, r.try_get(1)?);
                }
                let delays = sqlx::query(
                    "SELECT o.done_us, c.first_seen FROM outbox o
                       JOIN case_files f ON f.tenant = o.tenant AND f.idempotency_key = o.idempotency_key
                       JOIN clusters c ON c.tenant = f.tenant AND c.cluster_id = f.cluster_id
                     WHERE o.tenant = $1 AND o.status = 'delivered' AND o.done_us >= $2 AND o.done_us < $3
                       AND f.kind = 'escalate'",
                )
                .bind(&t)
                .bind(from_us)
                .bind(to_us)
                .fetch_all(&mut *c)
                .await?;
                for r in delays {
                    let done: i64 = r.try_get(0)?;
                    let first: String = r.try_get(1)?;
                    if let Ok(first) = humantime::parse_rfc3339_weak(&first) {
                        let first_us = first.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64);
                        a.first_alert_to_handoff_us.push((done - first_us).max(0));
                    }
                }
                a.first_alert_to_handoff_us.sort_unstable();
                Ok(a)
            })
        })
    }

    /// A tenant's audit log, oldest first: (actor, action, subject, detail).
    pub fn audit_log(&self, tenant: &str) -> Result<Vec<(String, String, String, String)>, StoreError> {
        self.tenant_rows(
            tenant,
            "read the audit log",
            "SELECT actor, action, subject, detail FROM audit_log WHERE tenant = $1 ORDER BY id",
            None,
            |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?)),
        )
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    sqlx::any::install_default_drivers();
    // Several threads (the pipeline's caller, each sink's dispatcher) call
    // `block_on`; on a current-thread runtime they take turns driving it.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the database runtime: {e}"))
}

fn kind_name(kind: ReportKind) -> &'static str {
    match kind {
        ReportKind::Escalate => "escalate",
        ReportKind::Update => "update",
        ReportKind::Close => "close",
    }
}

fn pending_of(r: &AnyRow) -> Result<Pending, sqlx::Error> {
    Ok(Pending {
        id: r.try_get(0)?,
        tenant: r.try_get(1)?,
        sink: r.try_get(2)?,
        idempotency_key: r.try_get(3)?,
        score: r.try_get(4)?,
        floor: r.try_get::<i64, _>(5)? != 0,
        attempts: r.try_get(6)?,
        kind: r.try_get(7)?,
        cluster_id: r.try_get(8)?,
        version: r.try_get(9)?,
        body: r.try_get(10)?,
    })
}

/// Stores a verdict on a case and audits it; a confident false positive
/// also makes a prior on the case's signature. Returns whether it did.
async fn insert_verdict(
    c: &mut sqlx::AnyConnection,
    case: &Pending,
    actor: &str,
    v: &VerdictRecord,
    policy: &PriorPolicy,
    now_us: i64,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO verdicts (tenant, cluster_id, version, idempotency_key, sink, verdict, confidence, body,
            prompt_tokens, completion_tokens, created_us)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
    )
    .bind(&case.tenant)
    .bind(&case.cluster_id)
    .bind(case.version)
    .bind(&case.idempotency_key)
    .bind(&case.sink)
    .bind(&v.verdict)
    .bind(v.confidence)
    .bind(&v.body)
    .bind(v.prompt_tokens)
    .bind(v.completion_tokens)
    .bind(now_us)
    .execute(&mut *c)
    .await?
    .rows_affected()
        == 1;
    if !inserted {
        return Ok(false);
    }
    let detail = format!("{} (confidence {:.2})", v.verdict, v.confidence);
    audit(&mut *c, &case.tenant, now_us, actor, "verdict", &case.idempotency_key, &detail).await?;
    let signature = serde_json::from_str::<serde_json::Value>(&case.body)
        .ok()
        .and_then(|b| b["signature"].as_str().map(str::to_string));
    let Some(signature) = signature.filter(|_| policy.makes_prior(v)) else { return Ok(false) };
    // One active prior per signature: a later verdict does not extend it
    // (the model sees the prior's line in the breakdown and could keep
    // renewing its own judgement).
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM priors WHERE tenant = $1 AND signature = $2 AND revoked_us IS NULL AND expires_us > $3",
    )
    .bind(&case.tenant)
    .bind(&signature)
    .bind(now_us)
    .fetch_one(&mut *c)
    .await?;
    if active > 0 {
        return Ok(false);
    }
    let verdict_id: i64 =
        sqlx::query_scalar("SELECT id FROM verdicts WHERE tenant = $1 AND sink = $2 AND idempotency_key = $3")
            .bind(&case.tenant)
            .bind(&case.sink)
            .bind(&case.idempotency_key)
            .fetch_one(&mut *c)
            .await?;
    let reason =
        format!("judged {} (confidence {:.2}) by {actor} on case {}", v.verdict, v.confidence, case.idempotency_key);
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO priors (tenant, signature, verdict_id, reason, created_us, expires_us)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&case.tenant)
    .bind(&signature)
    .bind(verdict_id)
    .bind(&reason)
    .bind(now_us)
    .bind(now_us.saturating_add(policy.ttl_us))
    .fetch_one(&mut *c)
    .await?;
    let detail = format!("signature {signature}: {reason}");
    audit(&mut *c, &case.tenant, now_us, actor, "prior_created", &format!("prior #{id}"), &detail).await?;
    Ok(true)
}

async fn audit(
    c: &mut sqlx::AnyConnection,
    tenant: &str,
    at_us: i64,
    actor: &str,
    action: &str,
    subject: &str,
    detail: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (tenant, at_us, actor, action, subject, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(tenant)
    .bind(at_us)
    .bind(actor)
    .bind(action)
    .bind(subject)
    .bind(detail)
    .execute(c)
    .await?;
    Ok(())
}
