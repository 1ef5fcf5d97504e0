#!/usr/bin/env bash
# MCP checks (part of `make test`): the official MCP Python SDK as the
# client of `lore mcp` (stdio) and of POST /mcp on `lore serve` (streamable
# HTTP, keys required): every tool called, an access-listed document never
# reaching a key outside its group, bad arguments as tool errors.
# Needs: python3 with venv, a built lore (LORE_BIN), installed models.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lore=${LORE_BIN:-$root/target/release/lore}
venv=${LORE_MCP_VENV:-$HOME/.cache/lore/mcp-venv}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null && wait $server; rm -rf "$work"' EXIT

. "$root/scripts/serve-lib.sh"
need curl curl
python_env "$venv" "mcp, httpx2" "mcp>=2.3,<3"

mkdir -p "$work/docs"
cp "$root"/corpora/tiny/*.md "$work/docs/"
printf -- '---\ntitle: Salaries\naccess: [hr]\n---\n# Salaries\n\nThe wolframite salary band tops out at 91,000 a year.\n' > "$work/docs/secret.md"
"$lore" --index "$work/index" ingest "$work/docs" --json > /dev/null
hr_key=$("$lore" --index "$work/index" key create --role read --groups hr --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
plain_key=$("$lore" --index "$work/index" key create --role read --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
# The server holds its own copy: `lore mcp` opens the first one at once.
cp -r "$work/index" "$work/served"
port=$(free_port)
"$lore" --index "$work/served" serve --addr "127.0.0.1:$port" --generator light &
server=$!
wait_up "$port"

"$venv/bin/python" "$root/tests/api/mcp_client.py" "$lore" "$work/index" \
    "http://127.0.0.1:$port/mcp" "$hr_key" "$plain_key"

kill -TERM $server
wait $server
server=
echo "mcp checks: passed"
