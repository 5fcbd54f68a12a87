#!/usr/bin/env bash
# Installs everything qbox needs on a fresh Debian 12 machine, idempotently.
# Debian packages come from the machine's configured mirror; Python packages from PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  crun runc catatonit skopeo umoci buildah mmdebstrap debootstrap
  iproute2 nftables uidmap util-linux procps psmisc e2fsprogs libseccomp2
  ca-certificates
  git
  runsc
  docker-registry busybox-static
  postgresql
  chromium
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

# docker-registry is there for the tests, which start their own on 127.0.0.1:
# Debian's service would listen on :5000 on every interface.
if [ -d /run/systemd/system ] && [ "$(id -u)" -eq 0 ] &&
   { systemctl is-enabled --quiet docker-registry 2>/dev/null ||
     systemctl is-active --quiet docker-registry 2>/dev/null; }; then
  echo "setup: disabling Debian's docker-registry service"
  systemctl disable --now docker-registry >/dev/null 2>&1 ||
    echo "setup: could not disable docker-registry.service; stop it yourself" >&2
fi

# postgresql brings Debian's server (initdb, pg_ctl under /usr/lib/postgresql/<version>/bin):
# the tests start a throw-away cluster of their own on a free port (tests/postgres.py), and
# several replicas may share one database (docs/operations.md). Debian's own cluster is left
# as Debian sets it up (on localhost:5432), for an operator who wants it.

# --- gVisor (runsc): see docs/isolation.md ---------------------------------
# Debian 12's runsc (2022-12) cannot stat a named path in images with
# coreutils >= 9 (`ls /etc`, `stat` fail: statx with AT_NO_AUTOMOUNT is
# EINVAL) and knows only the slow ptrace platform. Debian 13's build
# (2024-07: systrap, statx fixed) is one static binary without dependencies.
# It comes from the machine's own Debian mirror through apt, with a private
# package list, so the host's sources stay as they are.
# QBOX_RUNSC_UPGRADE=0 keeps Debian 12's.
RUNSC_MIN_VERSION="0.0~20240729"
if [ "${QBOX_RUNSC_UPGRADE:-1}" = 1 ] && [ "$(id -u)" -eq 0 ] &&
   dpkg --compare-versions "$(dpkg-query -W -f='${Version}' runsc)" lt "$RUNSC_MIN_VERSION"; then
  mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Codename: bookworm' \
             'Created-By: Packages' 'Component: main' | head -n 1)
  if [ -z "$mirror" ]; then
    echo "setup: no Debian 12 mirror in apt's lists; keeping Debian 12's runsc" >&2
  else
    apt_dir=/var/cache/qbox/apt-trixie
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
    echo "deb ${mirror%/} trixie main" > "$apt_dir/sources.list"
    apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir")
    echo "setup: upgrading runsc to Debian 13's build"
    apt-get "${apt_opts[@]}" update -qq
    rm -f "$apt_dir"/runsc_*.deb
    (cd "$apt_dir" && apt-get "${apt_opts[@]}" download -qq runsc 2>/dev/null)
    dpkg -i "$apt_dir"/runsc_*.deb >/dev/null
  fi
fi

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.qbox-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[server,dev,shell]'
  touch "$stamp"
fi
# --- the dashboard's front-end packages (package.json, pinned in package-lock.json) ----
# From the npm registry, never a CDN: the control plane serves them itself
# (src/qbox/server/web/assets.py). The browser tests drive Debian's chromium
# (above) with Playwright and check pages with axe-core from node_modules.
if ! command -v npm >/dev/null 2>&1; then
  echo "setup: installing nodejs and npm"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
fi
npm_stamp=node_modules/.qbox-installed
if [ ! -f "$npm_stamp" ] || [ package-lock.json -nt "$npm_stamp" ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch "$npm_stamp"
fi
vendor=src/qbox/server/web/static/vendor
mkdir -p "$vendor"
for file in htmx.org/dist/htmx.min.js @xterm/xterm/lib/xterm.js @xterm/xterm/css/xterm.css \
            @xterm/addon-fit/lib/addon-fit.js; do
  cmp -s "node_modules/$file" "$vendor/$(basename "$file")" || cp "node_modules/$file" "$vendor/"
done

echo "setup: ok"
