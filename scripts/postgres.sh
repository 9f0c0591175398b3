#!/usr/bin/env bash
# Install (from Debian's packages) and start a PostgreSQL server on loopback for
# the test suite, with a role that may create one database per test module.
# Prints the SQLAlchemy URL to use as CMBTASK_TEST_PG_URL.
set -euo pipefail
PGPORT="${CMBTASK_PG_PORT:-55432}"
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq postgresql >/dev/null
fi
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
DATA="${CMBTASK_PG_DATA:-/var/tmp/cmbtask-pg}"
if [ ! -s "$DATA/PG_VERSION" ]; then
  mkdir -p "$DATA"; chown postgres:postgres "$DATA"
  runuser -u postgres -- "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
fi
if ! runuser -u postgres -- "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
  runuser -u postgres -- "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w \
    -o "-p $PGPORT -k /tmp -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off" start >/dev/null
fi
psql_() { runuser -u postgres -- "$BIN/psql" -h 127.0.0.1 -p "$PGPORT" -U postgres -qtAX "$@"; }
if [ "$(psql_ -c "select 1 from pg_roles where rolname='cmbtask'")" != "1" ]; then
  psql_ -c "create role cmbtask login createdb password 'cmbtask'"
fi
# Tests drop their databases WITH (FORCE), which must also end an autovacuum
# worker that happens to be in one: that needs pg_signal_backend.
if [ "$(psql_ -c "select pg_has_role('cmbtask', 'pg_signal_backend', 'member')")" != "t" ]; then
  psql_ -c "grant pg_signal_backend to cmbtask"
fi
echo "postgresql+asyncpg://cmbtask:cmbtask@127.0.0.1:$PGPORT/postgres"
