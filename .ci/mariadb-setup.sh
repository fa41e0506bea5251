#!/usr/bin/env bash
# Configure the local MariaDB for the outbox relay tests: the row binlog the relay reads.
# Writes /etc/mysql/mariadb.conf.d/99-choreo.cnf (and includes that folder from my.cnf), then
# restarts mariadbd only if the running server does not have the settings yet. Idempotent.
set -euo pipefail
CONF_DIR=/etc/mysql/mariadb.conf.d
CONF="$CONF_DIR/99-choreo.cnf"
MYCNF=/etc/mysql/my.cnf
mysql_q() { mysql -h 127.0.0.1 -P 3306 -uroot -N -B -e "$1"; }

mkdir -p "$CONF_DIR"
cat > "$CONF" <<'CNF'
[mysqld]
log_bin = /var/lib/mysql/mariadb-bin
binlog_format = ROW
binlog_row_image = FULL
server_id = 1
binlog_row_metadata = FULL
expire_logs_days = 1
CNF
if ! grep -q "^!includedir $CONF_DIR" "$MYCNF"; then
    printf '\n!includedir %s/\n' "$CONF_DIR" >> "$MYCNF"
fi

# Column names in the binlog (dynamic, also set in the file for the next restart).
mysql_q "SET GLOBAL binlog_row_metadata = FULL"
settings="$(mysql_q "SELECT CONCAT(IF(@@log_bin, 1, 0), '/', @@binlog_format, '/', @@binlog_row_image)")"
if [ "$settings" = "1/ROW/FULL" ]; then
    echo "mariadb-setup: binlog already ROW/FULL"
    exit 0
fi
mariadb-admin -h 127.0.0.1 -uroot shutdown
for _ in $(seq 1 60); do
    if ! mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then break; fi
    sleep 0.5
done
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
setsid /usr/sbin/mariadbd --user=mysql >/dev/null 2>&1 < /dev/null &
for _ in $(seq 1 120); do
    if mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; then break; fi
    sleep 0.5
done
settings="$(mysql_q "SELECT CONCAT(IF(@@log_bin, 1, 0), '/', @@binlog_format, '/', @@binlog_row_image)")"
if [ "$settings" != "1/ROW/FULL" ]; then
    echo "mariadb-setup: the server still reports log_bin/format/image = $settings" >&2
    exit 1
fi
echo "mariadb-setup: binlog ROW/FULL, server restarted with $CONF"
