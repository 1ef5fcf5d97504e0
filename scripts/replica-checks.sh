#!/usr/bin/env bash
# Read replicas behind HAProxy (Debian's package, installed when missing):
# a rolling restart onto a new snapshot under load drops no request.
set -euo pipefail
cd "$(dirname "$0")/.."
LORE_BIN=${LORE_BIN:-lore}
if ! command -v haproxy >/dev/null; then
  echo "replica-checks: installing haproxy" >&2
  (apt-get install -y -qq haproxy >/dev/null 2>&1 || sudo apt-get install -y -qq haproxy >/dev/null) \
    || { apt-get update -qq && apt-get install -y -qq haproxy >/dev/null; }
fi
python3 tests/replicas/check_replicas.py "$LORE_BIN" "$PWD"
