#!/usr/bin/env bash
# `make bench`: builds the benchmark and its in-sandbox load server, starts `hearth dev` on
# free loopback ports with its own data dir, network-slot prefix and pool (so it never meets
# a developer's hearth dev or the e2e tests), waits until the base template is listed, runs
# bench/ against it, and stops hearth dev. Needs root, bin/hearth, bin/envd and bin/runsc.
# Extra arguments go to the benchmark (e.g. -only pty -load-wrap "taskset -c 1");
# HEARTH_BENCH_DEV_ARGS adds flags to hearth dev (e.g. "--runsc /path/to/wrapper").
set -euo pipefail
cd "$(dirname "$0")/.."

data=${HEARTH_BENCH_DATA:-/var/lib/hearth-bench}
logs=${HEARTH_BENCH_LOGS:-/tmp/hearth-bench-logs}
key="e2b_$(printf 'be7c%.0s' {1..10})"
mkdir -p "$data" "$logs"

for b in bin/hearth bin/envd bin/codeinterp bin/runsc; do
  [ -x "$b" ] || { echo "bench: $b missing (make build runsc)" >&2; exit 1; }
done
# The codeinterp section builds code-interpreter-v1 with E2B's Template SDK (e2e/node_modules).
[ -d e2e/node_modules/e2b ] || (cd e2e && npm ci --no-audit --no-fund)
go build -o bin/hearth-bench ./bench
# hearth dev with the benchmark-only shared-transport proxy (the pty section's A/B), which
# the shipped bin/hearth leaves out (build tag benchproxy).
go build -tags benchproxy -o bin/hearth-bench-dev ./cmd/hearth
CGO_ENABLED=0 go build -trimpath -o bin/hearth-bench-loadserver ./bench/loadserver

# Five distinct free ports: all held open until all are chosen, so none is picked twice.
# shared is the benchmark-only proxy whose agent traffic shares the HTTP/2 RPC transport
# (the pty section's A/B; docs/benchmarks.md).
read -r api proxy agent agentproxy shared < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(5)]
for s in ss: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in ss])
for s in ss: s.close()')

# A fresh state each run but the cached base template (built on first use, about a minute).
rm -rf "$data/hearth.db" "$data/hearth.db-wal" "$data/hearth.db-shm" "$data/sandboxes" "$data/api-key"
# Templates built through the API in earlier runs are built again under new IDs.
find "$data/templates" -mindepth 1 -maxdepth 1 ! -name base -exec rm -rf {} + 2>/dev/null || true

log="$logs/hearth-dev.log"
agent_token=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
bin/hearth-bench-dev dev --data-dir "$data" --agent-token "$agent_token" --slot-prefix hbench --pool 10.238.0.0/16 --api-key "$key" \
  --listen "127.0.0.1:$api" --proxy-listen "127.0.0.1:$proxy" \
  --agent-listen "127.0.0.1:$agent" --agent-proxy-listen "127.0.0.1:$agentproxy" \
  --bench-shared-proxy-listen "127.0.0.1:$shared" \
  --default-timeout 10m --warm-pool base=1 --warm-pool-cpus 1 --warm-pool-memory-mib 512 ${HEARTH_BENCH_DEV_ARGS:-} >"$log" 2>&1 &
dev=$!
stop_dev() {
  if kill -0 "$dev" 2>/dev/null; then
    kill -TERM "$dev"
    for _ in $(seq 1 60); do kill -0 "$dev" 2>/dev/null || break; sleep 1; done
    kill -KILL "$dev" 2>/dev/null || true
  fi
  wait "$dev" 2>/dev/null || true
}
trap stop_dev EXIT

# Up to 20 minutes: the first run debootstraps the base template.
echo "bench: waiting for hearth dev (log: $log)" >&2
deadline=$((SECONDS + 1200))
until curl -fsS -H "X-API-Key: $key" "http://127.0.0.1:$api/templates" 2>/dev/null | grep -q '"templateID":"base"'; do
  if ! kill -0 "$dev" 2>/dev/null; then
    echo "bench: hearth dev exited; last lines of $log:" >&2
    tail -n 30 "$log" >&2
    exit 1
  fi
  if [ "$SECONDS" -gt "$deadline" ]; then
    echo "bench: base template not listed within 20 minutes" >&2
    exit 1
  fi
  sleep 1
done

bin/hearth-bench -api "http://127.0.0.1:$api" -proxy "http://127.0.0.1:$proxy" -shared-proxy "http://127.0.0.1:$shared" -hearth-pid "$dev" -agent "127.0.0.1:$agent" -agent-proxy "127.0.0.1:$agentproxy" \
  -agent-token "$agent_token" -sandboxes-dir "$data/sandboxes" -api-key "$key" -loadserver bin/hearth-bench-loadserver -repo "$PWD" "$@"
