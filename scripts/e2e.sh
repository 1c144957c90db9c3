#!/usr/bin/env bash
# Runs the end-to-end tests that drive Hearth with the published e2b npm SDK: envd on its own,
# then the whole platform (hearth dev on SQLite; hearth server on a throwaway PostgreSQL with
# two agents). Needs root, bin/envd, bin/hearth and bin/runsc.
set -euo pipefail
cd "$(dirname "$0")/.."
export ENVD_BIN="$PWD/bin/envd" HEARTH_BIN="$PWD/bin/hearth"

pgdir=""
cleanup() {
  if [ -n "$pgdir" ]; then
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$pgdir"
  fi
}
trap cleanup EXIT

# A throwaway PostgreSQL on loopback for the PostgreSQL-backed suite.
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pgbin" ] && id postgres >/dev/null 2>&1; then
  pgdir=$(mktemp -d /tmp/hearth-e2e-pg.XXXXXX)
  chown postgres "$pgdir"
  port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
  runuser -u postgres -- "$pgbin/initdb" -D "$pgdir/data" -A trust -U postgres >/dev/null
  runuser -u postgres -- "$pgbin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $pgdir -c fsync=off" start >/dev/null
  export HEARTH_E2E_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
elif [ "${HEARTH_REQUIRE_POSTGRES:-}" = 1 ]; then
  echo "e2e: PostgreSQL server binaries not found (install the postgresql package)" >&2
  exit 1
fi

# The test-only S3 server (gofakes3, e2e/s3server) the suites with `--artifacts s3://…` run
# their agents against; an S3 server named in HEARTH_E2E_GOFAKES3 already is used instead.
if [ -z "${HEARTH_E2E_GOFAKES3:-}" ]; then
  go=${GO:-go}
  command -v "$go" >/dev/null || go=/usr/local/go/bin/go
  "$go" build -o bin/s3server ./e2e/s3server
  export HEARTH_E2E_GOFAKES3="$PWD/bin/s3server"
fi

# Arguments, if any, replace the list of test files (and may add node --test flags, e.g.
# --test-name-pattern): scripts/e2e.sh --test-name-pattern 'two agents' ./platform.test.mjs
cd e2e
if [ "$#" -eq 0 ]; then
  set -- ./*.test.mjs
fi
node --test --test-concurrency=1 --test-timeout=600000 "$@"
