#!/usr/bin/env bash
# `lore bench all` on reduced inputs: the report is produced from a fresh
# clone and has every section. (The full run is `make bench`.)
set -euo pipefail
LORE_BIN=${LORE_BIN:-lore}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$LORE_BIN" bench all --beir corpora/pubmedqa --beir-docs 100 --queries 50 \
  --graph-vectors 5000 --generators light --conversations 2 --qa-limit 3 --json "$out/all.json" | tee "$out/table.txt"
python3 - "$out/all.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
for key in ["machine", "chunking", "embedding", "ingest_cold", "ingest_unchanged", "search",
            "graph", "graph_scaled", "generators", "disk_bytes_per_1k_chunks", "peak_rss_bytes"]:
    assert key in r, f"bench all: no {key}"
assert r["embedding"]["baseline"] and r["embedding"]["ratio"] > 0, r["embedding"]
assert r["ingest_cold"]["report"]["chunks_embedded"] > 0, r["ingest_cold"]
assert r["ingest_unchanged"]["report"]["chunks_embedded"] == 0, r["ingest_unchanged"]
assert {c["mode"] for c in r["search"]} == {"dense", "bm25", "hybrid"}, r["search"]
assert r["graph_scaled"]["recall_at_10"] > 0.9, r["graph_scaled"]
assert r["generators"][0]["gen_tokens_per_s"] > 0, r["generators"]
qa = r["qa"][0]["report"]
assert qa["answerable"] == 3 and qa["far"] == 3 and len(qa["rows"]) == 6, qa
assert 0 <= qa["fact"] <= 1 and qa["median_seconds"] > 0, qa
conv = r["conversations"][0]
assert conv["conversations"] == 2 and conv["rewrite_ms"] > 0 and conv["ratio"] > 0, conv
assert r["peak_rss_bytes"] > 0 and r["disk_bytes_per_1k_chunks"] > 0
print("bench-smoke: the report has every section")
PY
