#!/usr/bin/env bash
# Installs everything qbox needs on a fresh Debian 12 machine, idempotently.
# Debian packages come from the machine's configured mirror; Python packages from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  crun runc catatonit skopeo umoci mmdebstrap debootstrap
  iproute2 nftables uidmap util-linux procps psmisc
  ca-certificates
)

need_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages (${need_apt[*]}); run as root" >&2
    exit 1
  fi
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.qbox-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[server,dev]'
  touch "$stamp"
fi
echo "setup: ok"
