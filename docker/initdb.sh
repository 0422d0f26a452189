#!/usr/bin/env bash
# First start of the database container: migrations, then role passwords.
set -euo pipefail
DATABASE_URL="postgresql:///${POSTGRES_DB}?host=/var/run/postgresql&user=${POSTGRES_USER}" \
    flowtrack-worker migrate --dir /flowtrack/sql
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" <<SQL
ALTER ROLE authenticator PASSWORD '${AUTHENTICATOR_PASSWORD}';
ALTER ROLE flowtrack_worker PASSWORD '${WORKER_PASSWORD}';
SQL
