#!/usr/bin/env bash
# Load run on loopback: wrk with 16 connections for 30 s on /v1/search,
# first alone (the baseline), then while generations run back to back on
# /v1/ask. Prints wrk's latency distributions (p50/p99) and error counts
# (socket errors, non-2xx), and how many generations were answered.
#   LORE_BIN=path/to/lore bash scripts/load.sh [CORPUS] [SECONDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lore=${LORE_BIN:-$root/target/release/lore}
corpus=${1:-$root/corpora/handbook/docs}
seconds=${2:-30}
command -v wrk > /dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
work=$(mktemp -d)
server=
asker=
trap '[ -n "$asker" ] && kill $asker 2>/dev/null; [ -n "$server" ] && kill $server 2>/dev/null && wait $server; rm -rf "$work"' EXIT

"$lore" --index "$work/index" ingest "$corpus" --json > /dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$lore" --index "$work/index" serve --addr "127.0.0.1:$port" 2> "$work/server.log" &
server=$!
until curl -sf "http://127.0.0.1:$port/healthz" > /dev/null; do sleep 0.5; done

cat > "$work/search.lua" <<'LUA'
local queries = {"how do I rotate API keys", "SEV1 acknowledgement time",
  "travel expenses per diem", "laptop screen lock", "database failover steps",
  "phishing simulation", "parental leave", "on-call handover"}
local n = 0
request = function()
  n = n + 1
  local body = string.format('{"query": "%s", "k": 5}', queries[n % #queries + 1])
  return wrk.format("POST", "/v1/search", {["Content-Type"] = "application/json"}, body)
end
LUA

echo "== baseline: /v1/search alone"
wrk -t2 -c16 -d"${seconds}s" --latency -s "$work/search.lua" "http://127.0.0.1:$port"

echo "== /v1/search while generations run"
(while true; do
    curl -s -o /dev/null -w "ask %{http_code} %{time_total}s\n" "http://127.0.0.1:$port/v1/ask" \
        -H 'Content-Type: application/json' \
        -d '{"question": "How fast must a SEV1 page be acknowledged?", "max_tokens": 64}'
done) > "$work/asks.log" &
asker=$!
sleep 2
wrk -t2 -c16 -d"${seconds}s" --latency -s "$work/search.lua" "http://127.0.0.1:$port"
kill $asker; asker=
echo "generations during the run: $(grep -c '^ask 200' "$work/asks.log") answered," \
     "$(grep -vc '^ask 200' "$work/asks.log") other"
curl -s "http://127.0.0.1:$port/metrics" | grep -E '^lore_http_requests_total\{route="/v1/(search|ask)"'
