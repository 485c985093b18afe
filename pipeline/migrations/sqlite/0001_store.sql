-- Sluice's store (SQLite): clusters and their versions, case files, the
-- outbox, verdicts, priors and the audit log. Times are µs since the epoch.
-- PostgreSQL has the same tables plus row-level security (../postgres).

-- Tenant names only: lets the dispatcher visit each tenant's outbox.
CREATE TABLE sluice_tenants (
    tenant TEXT PRIMARY KEY
);

CREATE TABLE clusters (
    tenant      TEXT    NOT NULL,
    cluster_id  TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    score       DOUBLE PRECISION NOT NULL,
    decision    TEXT    NOT NULL,
    first_seen  TEXT    NOT NULL,
    last_seen   TEXT    NOT NULL,
    signature   TEXT    NOT NULL,
    updated_us  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, cluster_id)
);

CREATE TABLE cluster_versions (
    tenant      TEXT    NOT NULL,
    cluster_id  TEXT    NOT NULL,
    version     BIGINT  NOT NULL,
    kind        TEXT    NOT NULL,
    score       DOUBLE PRECISION NOT NULL,
    decision    TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    created_us  BIGINT  NOT NULL,
    PRIMARY KEY (tenant, cluster_id, version)
);

-- The exact bytes every sink sends under the key: one content per key.
CREATE TABLE case_files (
    tenant           TEXT   NOT NULL,
    idempotency_key  TEXT   NOT NULL,
    cluster_id       TEXT   NOT NULL,
    version          BIGINT NOT NULL,
    kind             TEXT   NOT NULL,
    score            DOUBLE PRECISION NOT NULL,
    body             TEXT   NOT NULL,
    created_us       BIGINT NOT NULL,
    PRIMARY KEY (tenant, idempotency_key)
);

-- One row per (sink, case file). status: pending → delivered | parked;
-- deferred (over budget) goes back to pending when budget frees up.
CREATE TABLE outbox (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant           TEXT   NOT NULL,
    sink             TEXT   NOT NULL,
    idempotency_key  TEXT   NOT NULL,
    score            DOUBLE PRECISION NOT NULL,
    floor            BIGINT NOT NULL DEFAULT 0,
    status           TEXT   NOT NULL DEFAULT 'pending',
    attempts         BIGINT NOT NULL DEFAULT 0,
    next_attempt_us  BIGINT NOT NULL,
    last_error       TEXT,
    created_us       BIGINT NOT NULL,
    done_us          BIGINT,
    UNIQUE (tenant, sink, idempotency_key)
);
CREATE INDEX outbox_due ON outbox (tenant, sink, status, next_attempt_us);

CREATE TABLE verdicts (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant             TEXT   NOT NULL,
    cluster_id         TEXT   NOT NULL,
    version            BIGINT NOT NULL,
    idempotency_key    TEXT   NOT NULL,
    sink               TEXT   NOT NULL,
    verdict            TEXT   NOT NULL,
    confidence         DOUBLE PRECISION NOT NULL,
    body               TEXT   NOT NULL,
    prompt_tokens      BIGINT NOT NULL,
    completion_tokens  BIGINT NOT NULL,
    created_us         BIGINT NOT NULL,
    UNIQUE (tenant, sink, idempotency_key)
);

CREATE TABLE priors (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant      TEXT   NOT NULL,
    signature   TEXT   NOT NULL,
    verdict_id  BIGINT NOT NULL,
    reason      TEXT   NOT NULL,
    created_us  BIGINT NOT NULL,
    expires_us  BIGINT NOT NULL,
    revoked_us  BIGINT,
    revoked_by  TEXT
);

-- LLM tokens spent, whatever the outcome (budgets count them all).
CREATE TABLE llm_usage (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant   TEXT   NOT NULL,
    sink     TEXT   NOT NULL,
    at_us    BIGINT NOT NULL,
    tokens   BIGINT NOT NULL
);
CREATE INDEX llm_usage_by_time ON llm_usage (tenant, at_us);

-- Append-only: who did what, when, to which subject.
CREATE TABLE audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant   TEXT   NOT NULL,
    at_us    BIGINT NOT NULL,
    actor    TEXT   NOT NULL,
    action   TEXT   NOT NULL,
    subject  TEXT   NOT NULL,
    detail   TEXT   NOT NULL
);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
