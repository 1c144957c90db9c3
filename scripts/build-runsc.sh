#!/usr/bin/env bash
# Builds gVisor's runsc from its Go module at a pinned pseudo-version into OUT.
#
# Why from source: Debian's runsc is too old (no systrap platform, and its --network=sandbox
# misdetects the root netns on kernels >= 6.x). Why CGO_ENABLED=0: a dynamically linked runsc
# dies at boot because its ELF interpreter is missing inside its own pivot-rooted chroot.
#
# The build takes minutes, so the version that produced OUT is recorded in OUT.version and the
# script does nothing when both already match RUNSC_VERSION.
#
# Usage: scripts/build-runsc.sh OUT
set -euo pipefail

RUNSC_MODULE=gvisor.dev/gvisor/runsc
RUNSC_VERSION=v0.0.0-20260905035102-160fafc42237

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT" >&2
  exit 2
fi
out=$1
stamp="$out.version"

if [ -x "$out" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$RUNSC_MODULE@$RUNSC_VERSION" ]; then
  exit 0
fi

mkdir -p "$(dirname "$out")"
outdir=$(cd "$(dirname "$out")" && pwd)
# go install (not go build) because only install accepts pkg@version outside the main module,
# which keeps gVisor's dependencies out of Hearth's go.mod. GOBIN is a private temp dir so a
# half-built binary never appears at OUT.
gobin=$(mktemp -d "$outdir/.runsc-build.XXXXXX")
trap 'rm -rf "$gobin"' EXIT

echo "build-runsc: building $RUNSC_MODULE@$RUNSC_VERSION (several minutes when cold)" >&2
start=$(date +%s)
CGO_ENABLED=0 GOBIN="$gobin" go install -trimpath "$RUNSC_MODULE@$RUNSC_VERSION"

# Refuse a dynamically linked result: it would fail only later, at sandbox boot.
if command -v file >/dev/null 2>&1 && file "$gobin/runsc" | grep -q 'dynamically linked'; then
  echo "build-runsc: $gobin/runsc is dynamically linked; CGO_ENABLED=0 was not honoured" >&2
  exit 1
fi

rm -f "$stamp"
mv -f "$gobin/runsc" "$out"
printf '%s\n' "$RUNSC_MODULE@$RUNSC_VERSION" >"$stamp.tmp"
mv -f "$stamp.tmp" "$stamp"
echo "build-runsc: wrote $out in $(( $(date +%s) - start )) s" >&2
