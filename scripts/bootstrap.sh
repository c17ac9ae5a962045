#!/usr/bin/env bash
# Idempotent set-up used by both README commands: system packages where missing (Debian's
# prometheus and docker-registry, python3-venv, libpython), then .venv from requirements/lock.txt
# with the project installed in it. Re-running is cheap: the venv is rebuilt only when the lock
# changes. `--tests` also installs what only the test suite uses: Debian's chromium, which the
# browser tests of the Airflow UI drive through Playwright (no browser download), and Debian's
# postgresql, which the release-records tests run as a throwaway server.
set -euo pipefail

FOR_TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests) FOR_TESTS=1 ;;
    *) echo "usage: bootstrap.sh [--tests]" >&2; exit 2 ;;
  esac
done

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${LLM_RELEASE_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3}"
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

log() { printf '[bootstrap] %s\n' "$*" >&2; }

apt_install() {
  log "installing Debian packages: $*"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v "$PYTHON" >/dev/null || { log "need Python 3.11+ as $PYTHON"; exit 1; }
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)'; then
  log "need Python 3.11 or newer, found $("$PYTHON" --version)"; exit 1
fi
PYVER="$("$PYTHON" -c 'import sys; print(f"{sys.version_info.major}.{sys.version_info.minor}")')"

pkgs=()
command -v prometheus >/dev/null || [ -x /usr/bin/prometheus ] || pkgs+=(prometheus)
# The OCI registry the artifact-store tests publish to (CNCF distribution, run by the tests).
command -v docker-registry >/dev/null || [ -x /usr/bin/docker-registry ] || pkgs+=(docker-registry)
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || pkgs+=("python${PYVER}-venv")
if [ "$FOR_TESTS" = 1 ] && ! [ -x /usr/bin/chromium ]; then pkgs+=(chromium); fi
# The release-records tests run a throwaway PostgreSQL server (initdb/pg_ctl, not on PATH).
if [ "$FOR_TESTS" = 1 ] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then pkgs+=(postgresql); fi
# Triton's Python-backend stub links libpython dynamically; Debian's python3 is static.
if ! "$PYTHON" - <<'PY' 2>/dev/null
import ctypes, sys, sysconfig
name = sysconfig.get_config_var("INSTSONAME") or f"libpython{sys.version_info.major}.{sys.version_info.minor}.so.1.0"
ctypes.CDLL(name)
PY
then pkgs+=("libpython${PYVER}"); fi
if [ "${#pkgs[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || { log "missing ${pkgs[*]} and no apt-get to install them"; exit 1; }
  apt_install "${pkgs[@]}"
fi

LOCK="$ROOT/requirements/lock.txt"
STAMP="$VENV/.llm-release-lock"
want="$(cat "$LOCK" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  log "creating $VENV from requirements/lock.txt (first run takes a few minutes)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  PIPLOG="$VENV/bootstrap-pip.log"
  pip_quiet() {
    if ! "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" >>"$PIPLOG" 2>&1; then
      tail -n 40 "$PIPLOG" >&2; log "pip install $* failed (full log: $PIPLOG)"; exit 1
    fi
  }
  pip_quiet "$(grep '^pip==' "$LOCK")"
  pip_quiet -r "$LOCK"
  pip_quiet --no-deps --no-build-isolation -e "$ROOT"
  echo "$want" > "$STAMP"
  log "ready: $VENV"
fi

# The gateway's control plane (xds_server) runs from a venv of its own: the generated Envoy API
# it needs ships top-level packages that would shadow ones the project's venv depends on.
XDS_VENV="${LLM_RELEASE_XDS_VENV:-$ROOT/.venv-xds}"
XDS_LOCK="$ROOT/requirements/xds-server.txt"
XDS_STAMP="$XDS_VENV/.llm-release-lock"
want_xds="$(sha256sum "$XDS_LOCK" | cut -d' ' -f1)"
if [ ! -x "$XDS_VENV/bin/python" ] || [ "$(cat "$XDS_STAMP" 2>/dev/null)" != "$want_xds" ]; then
  log "creating $XDS_VENV from requirements/xds-server.txt"
  rm -rf "$XDS_VENV"
  "$PYTHON" -m venv "$XDS_VENV"
  XDS_PIPLOG="$XDS_VENV/bootstrap-pip.log"
  if ! "$XDS_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$XDS_LOCK" >>"$XDS_PIPLOG" 2>&1; then
    tail -n 40 "$XDS_PIPLOG" >&2; log "pip install -r $XDS_LOCK failed (full log: $XDS_PIPLOG)"; exit 1
  fi
  echo "$want_xds" > "$XDS_STAMP"
  log "ready: $XDS_VENV"
fi
