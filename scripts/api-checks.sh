#!/usr/bin/env bash
# HTTP API checks against a real `lore serve` (part of `make test`):
#   1. the official `openai` Python client (chat streaming and not, models,
#      embeddings, a follow-up answered from the conversation) gets grounded
#      answers;
#   2. schemathesis fuzzes every endpoint from the served OpenAPI document:
#      no 5xx, no response that violates the schema.
# Needs: python3 with venv, a built lore (LORE_BIN), installed models.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lore=${LORE_BIN:-$root/target/release/lore}
venv=${LORE_API_VENV:-$HOME/.cache/lore/api-venv}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null && wait $server; rm -rf "$work"' EXIT

. "$root/scripts/serve-lib.sh"
need curl curl
python_env "$venv" "openai, schemathesis" "openai>=1.40" "schemathesis>=4,<5"

"$lore" --index "$work/index" ingest "$root/corpora/tiny" --json > /dev/null
# A second collection for the conversation check (a follow-up about paging).
"$lore" --index "$work/index" collection create handbook > /dev/null
"$lore" --index "$work/index" --collection handbook ingest "$root/corpora/handbook/docs" --json > /dev/null
port=$(free_port)
# Generated cases may ask for many samples, long answers and reflection at
# once: a lower per-request token budget keeps each one well inside the
# request timeout (bigger requests get a 400 that says why).
printf '[generator]\nmax_request_tokens = 256\n' > "$work/lore.toml"
LORE_API_KEYS="read:read-key,write:write-key" "$lore" --config "$work/lore.toml" --index "$work/index" serve \
    --addr "127.0.0.1:$port" --generator default --ingest-root "$root/corpora" &
server=$!
wait_up "$port"

echo "== openai client"
"$venv/bin/python" "$root/tests/api/openai_client.py" "http://127.0.0.1:$port/v1" read-key

echo "== schemathesis"
"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer write-key" \
    --checks all --max-examples "${LORE_FUZZ_EXAMPLES:-100}" --seed 1 \
    --exclude-checks positive_data_acceptance \
    --generation-deterministic --no-color

kill -TERM $server
wait $server
server=
echo "api checks: 2 passed, 0 failed"
