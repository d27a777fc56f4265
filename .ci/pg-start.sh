#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster on 127.0.0.1 for the tests and prints the
# `export TEST_DATABASE_URL=…` line to use. Idempotent: a running cluster is reused.
#   eval "$(bash .ci/pg-start.sh)"
set -euo pipefail
PORT=${BERTH_PG_PORT:-55432}
ROOT=${BERTH_PG_ROOT:-/tmp/berth-pg}
if ! ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1; then
  echo "installing PostgreSQL from Debian's packages" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
fi
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if ! "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"; then
  rm -rf "$ROOT"; mkdir -p "$ROOT"; chown postgres:postgres "$ROOT"
  su postgres -c "$PGBIN/initdb -D $ROOT/data -U postgres -A trust --no-sync -E UTF8" >/dev/null
  su postgres -c "$PGBIN/pg_ctl -D $ROOT/data -l $ROOT/pg.log -w -o \"-p $PORT -k $ROOT -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300\" start" >&2
fi
echo "export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$PORT/postgres"
