#!/usr/bin/env bash
# Runs every Go fuzz target in the repository for a bounded number of inputs each (FUZZTIME,
# default 40000x), starting from its checked-in corpus (testdata/fuzz/<Target>/). A count, not
# a duration: with a duration Go 1.26's coordinator can report its own deadline as a failure
# ("context deadline exceeded", go.dev/issue/75804) when a starved worker answers late. Targets are found, not
# listed, so a new parser's fuzz target runs in `make test` the day it is written.
# A failing input is written to testdata/fuzz/<Target>/ by go test: check it in with the fix.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-40000x}
n=0
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  echo "fuzz: $name in $pkg for $fuzztime"
  go test -count=1 -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" "$pkg"
  n=$((n + 1))
done < <(git grep -o -e '^func Fuzz[A-Za-z0-9_]*' -- '*_test.go' | sed 's/:func /:/' | sort -u)
if [ "$n" -eq 0 ]; then
  echo "fuzz: no fuzz targets found" >&2
  exit 1
fi
echo "fuzz: $n targets, no failures"
