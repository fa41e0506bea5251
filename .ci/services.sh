#!/usr/bin/env bash
# Start and configure the loopback services the test-suite needs. Idempotent; safe to re-run.
# Kafka (tansu) and NATS (nats-server 2.15) are spawned by the test fixtures themselves.
set -euo pipefail
cd "$(dirname "$0")/.."

wait_port() {  # host port name seconds
    for _ in $(seq 1 "$4"); do
        (echo >"/dev/tcp/$1/$2") 2>/dev/null && return 0
        sleep 1
    done
    echo "error: $3 is not listening on $1:$2" >&2
    return 1
}

# RabbitMQ
if ! (echo >/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    rabbitmq-server -detached || true
fi
rabbitmqctl -q await_startup >/dev/null 2>&1 || true
wait_port 127.0.0.1 5672 RabbitMQ 60

# PostgreSQL
if ! (echo >/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
wait_port 127.0.0.1 5432 PostgreSQL 60

# MariaDB
if ! (echo >/dev/tcp/127.0.0.1/3306) 2>/dev/null; then
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
wait_port 127.0.0.1 3306 MariaDB 60

# Headless Chromium for the saga web page's browser test (Debian's package; Playwright drives it).
# curl for the documentation's shell examples.
# node and npm for the official AsyncAPI parser (tests/asyncapi/).
missing=""
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
command -v npm >/dev/null 2>&1 || missing="$missing nodejs npm"
if [ -n "$missing" ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

# The official AsyncAPI parser the AsyncAPI tests run (pinned by tests/asyncapi's lockfile).
if [ ! -d tests/asyncapi/node_modules/@asyncapi/parser ]; then
    npm ci --prefix tests/asyncapi --no-audit --no-fund --loglevel=error
fi

# What change data capture needs: wal_level=logical on PostgreSQL, the ROW binlog on MariaDB.
bash .ci/postgres-setup.sh
bash .ci/mariadb-setup.sh
exit 0
