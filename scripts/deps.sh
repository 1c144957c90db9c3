#!/usr/bin/env bash
# Installs what Hearth's build, tests and dev mode need and the machine lacks. Idempotent and
# quick when everything is present, so `make dev` and `make test` call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
# command -> Debian package providing it
declare -A cmds=(
  [ip]=iproute2
  [nft]=nftables
  [tc]=iproute2
  [curl]=curl
  [node]=nodejs
  [npm]=npm
  [debootstrap]=debootstrap
  [mkfs.ext4]=e2fsprogs
  [nsenter]=util-linux
  [qemu-system-x86_64]=qemu-system-x86
  [qemu-img]=qemu-utils
  [chromium]=chromium # the browser tests: the dashboard (internal/web) and port previews (e2e/previews.test.mjs)
)
for c in "${!cmds[@]}"; do
  command -v "$c" >/dev/null 2>&1 || need_apt+=("${cmds[$c]}")
done
# The QEMU runtime's initramfs needs a static busybox (the dynamic one from busybox is no use).
# (ldd succeeds only on dynamically linked executables.)
if [ ! -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then need_apt+=(busybox-static); fi
# The code interpreter's tests run real kernels with Debian's python (not another python3 on
# PATH): ipykernel, and matplotlib and pandas for plots and DataFrames.
for mod in ipykernel:python3-ipykernel matplotlib:python3-matplotlib pandas:python3-pandas; do
  /usr/bin/python3 -c "import ${mod%%:*}" >/dev/null 2>&1 || need_apt+=("${mod#*:}")
done
# PostgreSQL's server binaries, for the store's and the end-to-end tests' throwaway databases.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "deps: missing ${need_apt[*]}; run as root or install them with apt-get" >&2
    exit 1
  fi
  echo "deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
fi

# The QEMU runtime fetches Debian's cloud kernel with `apt-get download`, which needs package
# lists; a fresh machine may have none.
if [ "$(id -u)" -eq 0 ] && ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
  echo "deps: apt-get update (package lists for the guest kernel)"
  apt-get update -qq
fi

# The end-to-end tests drive Hearth with the published e2b SDK, pinned in e2e/package-lock.json.
if [ ! -d e2e/node_modules/e2b ] || [ e2e/package-lock.json -nt e2e/node_modules/.package-lock.json ]; then
  echo "deps: installing npm packages for the end-to-end tests"
  (cd e2e && npm ci --no-audit --no-fund --loglevel=error)
fi
