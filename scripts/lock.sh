#!/usr/bin/env bash
# Re-resolve requirements/requirements.in into requirements/lock.txt (run by a person, on purpose).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q --upgrade pip setuptools wheel
"$TMP/venv/bin/pip" install -q -r "$ROOT/requirements/requirements.in"
{
  echo "# Exact versions of every package both README commands install (pip freeze of a resolved"
  echo "# environment; regenerate with scripts/lock.sh). Airflow needs a constraints-style lock."
  "$TMP/venv/bin/pip" freeze --all | grep -E '^(pip|setuptools|wheel)=='
  "$TMP/venv/bin/pip" freeze | grep -v -E '^(-e |pip==|setuptools==|wheel==)'
} > "$ROOT/requirements/lock.txt"
echo "wrote requirements/lock.txt"
