#!/usr/bin/env bash
# Runs once, when the compose stack's PostgreSQL volume is created (from
# /docker-entrypoint-initdb.d, as the owner POSTGRES_USER).
# Creates Sluice's service login. Sluice's migrations (run with the owner's
# URL, SLUICE_STORE_ADMIN_URL) create the tables and the NOLOGIN role
# sluice_service with row-level security; the service login is a member
# of that role, so it can neither own, alter nor bypass the policies.
# The role is created here first so the grant can be made now; the
# migration's CREATE ROLE is IF NOT EXISTS.
set -euo pipefail
: "${SLUICE_DB_APP_PASSWORD:?the compose file passes it}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
     --set=app_password="$SLUICE_DB_APP_PASSWORD" <<'SQL'
DO $$ BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sluice_service') THEN
        CREATE ROLE sluice_service NOLOGIN NOBYPASSRLS;
    END IF;
END $$;
CREATE ROLE sluice_app LOGIN NOBYPASSRLS PASSWORD :'app_password';
GRANT sluice_service TO sluice_app;
SQL
