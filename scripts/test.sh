#!/usr/bin/env bash
# README command 2: set up what is missing, then run the whole test suite (it starts the real
# stack itself, once per session).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh" --tests
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
