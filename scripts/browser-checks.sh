#!/usr/bin/env bash
# The web page in a real browser (part of `make test`): headless Chromium,
# driven through WebDriver by selenium, against a live `lore serve` on the
# handbook with read and write keys. Installs Debian's chromium and
# chromium-driver when missing. LORE_SCREENSHOTS=DIR saves the README's
# screenshots there; LORE_BROWSER_GENERATOR picks the model (default: the
# default one: the page must show a cited answer, and the light model's
# answers are too often withdrawn by the answer check to rely on).
# Needs: a built lore (LORE_BIN), installed models, python3 with venv.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
lore=${LORE_BIN:-$root/target/release/lore}
venv=${LORE_API_VENV:-$HOME/.cache/lore/api-venv}
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill $server 2>/dev/null && wait $server; rm -rf "$work"' EXIT

. "$root/scripts/serve-lib.sh"
need curl curl
need chromium chromium
need chromedriver chromium-driver
python_env "$venv" selenium "selenium>=4.20,<5"

"$lore" --index "$work/index" ingest "$root/corpora/handbook/docs" --json > /dev/null
# A second collection, for the page's collection picker.
"$lore" --index "$work/index" collection create papers > /dev/null
"$lore" --index "$work/index" --collection papers ingest "$root/corpora/tiny" --json > /dev/null
port=$(free_port)
# One generation at a time and no queue: the test makes the page meet a 429.
printf '[server]\ngenerations = 1\nqueue = 0\n' > "$work/lore.toml"
LORE_API_KEYS="read:page-read-key,write:page-write-key" "$lore" --config "$work/lore.toml" --index "$work/index" serve \
    --addr "127.0.0.1:$port" --generator "${LORE_BROWSER_GENERATOR:-default}" &
server=$!
wait_up "$port"

echo "== browser"
"$venv/bin/python" "$root/tests/browser/test_page.py" "http://127.0.0.1:$port" \
    page-read-key page-write-key "How quickly must a SEV1 page be acknowledged?" ${LORE_SCREENSHOTS:+"$LORE_SCREENSHOTS"}

kill -TERM $server
wait $server
server=
echo "browser checks: passed"
