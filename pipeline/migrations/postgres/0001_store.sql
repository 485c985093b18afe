-- Sluice's store (PostgreSQL): clusters and their versions, case files, the
-- outbox, verdicts, priors and the audit log. Times are µs since the epoch.
-- The same tables as ../sqlite, plus row-level security per tenant.

-- Tenant names only: lets the dispatcher visit each tenant's outbox.
CREATE TABLE IF NOT EXISTS sluice_tenants (
    tenant TEXT PRIMARY KEY
);

CREATE TABLE IF NOT EXISTS clusters (
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

CREATE TABLE IF NOT EXISTS cluster_versions (
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
CREATE TABLE IF NOT EXISTS case_files (
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
CREATE TABLE IF NOT EXISTS outbox (
    id               BIGSERIAL PRIMARY KEY,
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
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (tenant, sink, status, next_attempt_us);

CREATE TABLE IF NOT EXISTS verdicts (
    id                 BIGSERIAL PRIMARY KEY,
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

CREATE TABLE IF NOT EXISTS priors (
    id          BIGSERIAL PRIMARY KEY,
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
CREATE TABLE IF NOT EXISTS llm_usage (
    id       BIGSERIAL PRIMARY KEY,
    tenant   TEXT   NOT NULL,
    sink     TEXT   NOT NULL,
    at_us    BIGINT NOT NULL,
    tokens   BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS llm_usage_by_time ON llm_usage (tenant, at_us);

-- Append-only: who did what, when, to which subject.
CREATE TABLE IF NOT EXISTS audit_log (
    id       BIGSERIAL PRIMARY KEY,
    tenant   TEXT   NOT NULL,
    at_us    BIGINT NOT NULL,
    actor    TEXT   NOT NULL,
    action   TEXT   NOT NULL,
    subject  TEXT   NOT NULL,
    detail   TEXT   NOT NULL
);
-- Row-level security. Migrations run as an admin role (the owner); the
-- service runs as a member of sluice_service, which owns nothing, so it can
-- neither disable nor bypass the policies. Every statement of the service
-- runs in a transaction that first sets app.tenant_id; with it unset, the
-- policies match no row.
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_service') THEN
        CREATE ROLE sluice_service NOLOGIN NOBYPASSRLS;
    END IF;
END $$;

DO $$
DECLARE t TEXT;
BEGIN
    FOREACH t IN ARRAY ARRAY['clusters', 'cluster_versions', 'case_files', 'outbox', 'verdicts', 'priors', 'llm_usage', 'audit_log'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %I', t);
        EXECUTE format('CREATE POLICY tenant_isolation ON %I
            USING (tenant = current_setting(''app.tenant_id'', true))
            WITH CHECK (tenant = current_setting(''app.tenant_id'', true))', t);
    END LOOP;
END $$;

GRANT SELECT, INSERT ON sluice_tenants TO sluice_service;
GRANT SELECT, INSERT, UPDATE ON clusters, cluster_versions, case_files, outbox, verdicts, priors TO sluice_service;
-- The audit log and the token ledger are append-only for the service.
GRANT SELECT, INSERT ON audit_log, llm_usage TO sluice_service;
-- The service checks at start that the schema is migrated.
GRANT SELECT ON _sqlx_migrations TO sluice_service;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO sluice_service;
