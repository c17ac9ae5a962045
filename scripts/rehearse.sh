#!/usr/bin/env bash
# README command 1: set up what is missing, then run the local release rehearsal end to end.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/bootstrap.sh"
exec "$ROOT/.venv/bin/llm-release" rehearse "$@"
