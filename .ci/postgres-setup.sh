#!/usr/bin/env bash
# Configure the local PostgreSQL cluster for the outbox relay tests: wal_level = logical.
# Idempotent: does nothing when wal_level is already logical. Run as root on the CI machine.
set -euo pipefail
PGHOST="${PGHOST:-127.0.0.1}"
PGUSER="${PGUSER:-postgres}"
psql_q() { psql -h "$PGHOST" -U "$PGUSER" -d postgres -Atqc "$1"; }

current="$(psql_q 'SHOW wal_level')"
if [ "$current" = "logical" ]; then
    echo "postgres-setup: wal_level is already logical"
    exit 0
fi
psql_q "ALTER SYSTEM SET wal_level = logical"
version="$(ls /etc/postgresql | head -n1)"
pg_ctlcluster --skip-systemctl-redirect "$version" main restart
for _ in $(seq 1 60); do
    if pg_isready -h "$PGHOST" -q; then break; fi
    sleep 0.5
done
current="$(psql_q 'SHOW wal_level')"
if [ "$current" != "logical" ]; then
    echo "postgres-setup: wal_level is still $current after the restart" >&2
    exit 1
fi
echo "postgres-setup: wal_level = logical (cluster $version/main restarted)"
