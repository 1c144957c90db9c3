#!/usr/bin/env bash
# Runs the end-to-end tests that drive Hearth with the published e2b npm SDK.
set -euo pipefail
cd "$(dirname "$0")/.."
export ENVD_BIN="$PWD/bin/envd"
cd e2e
node --test --test-concurrency=1 --test-timeout=120000 ./*.test.mjs
