#!/usr/bin/env bash
# Answer quality and time of another lore build beside this one's default
# and large generators, one corpus at a time, each run right after the
# other (the machine's drift between runs then touches all three alike).
# The other build reads its own index (index layouts change between
# builds): it is ingested from the corpus's folder once, under OUT.
#
#   bash scripts/qa_against_build.sh OTHER_LORE OUT NAME:INDEX:FOLDER:QUESTIONS_DIR...
#
# OTHER_LORE  a lore binary, e.g. one built from an older commit:
#             git worktree add /tmp/old COMMIT
#             (cd /tmp/old && CARGO_TARGET_DIR=/tmp/old-target cargo build --release)
# INDEX       this build's index of FOLDER (ingested here when missing)
# QUESTIONS_DIR  holds questions.jsonl and out-of-corpus.jsonl (follow-ups
#             are left out: a build before conversations cannot ask them)
#
# This build is LORE_BIN (default: where `make` builds it,
# $CARGO_TARGET_DIR or ~/.cache/lore/target, then release/lore).
# Writes OUT/{other,default,large}-NAME.json (`lore eval --qa --json`, k = 3,
# --max-tokens 96) and prints one table line per corpus and build.
set -euo pipefail
other=${1:?usage: qa_against_build.sh OTHER_LORE OUT NAME:INDEX:FOLDER:QUESTIONS_DIR...}
out=${2:?usage: qa_against_build.sh OTHER_LORE OUT NAME:INDEX:FOLDER:QUESTIONS_DIR...}
shift 2
lore=${LORE_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/lore/target}/release/lore}
mkdir -p "$out"
for spec in "$@"; do
    IFS=: read -r name index folder questions <<<"$spec"
    qa=(--qa "$questions/questions.jsonl" --qa "$questions/out-of-corpus.jsonl" --max-tokens 96 --json)
    [ -d "$out/index-$name" ] || "$other" --index "$out/index-$name" ingest "$folder" >/dev/null
    [ -d "$index" ] || "$lore" --index "$index" ingest "$folder" >/dev/null
    "$other" --index "$out/index-$name" eval "${qa[@]}" >"$out/other-$name.json"
    "$lore" --index "$index" eval "${qa[@]}" -k 3 --generator default >"$out/default-$name.json"
    "$lore" --index "$index" eval "${qa[@]}" -k 3 --generator large >"$out/large-$name.json"
done
python3 - "$out" "$@" <<'EOF'
import json, statistics, sys

out = sys.argv[1]
print("corpus | build | fact | cited | answerable abstained | near | far | median s (all) | median s (answerable)")
for spec in sys.argv[2:]:
    name = spec.split(":")[0]
    for build in ("other", "default", "large"):
        report = json.load(open(f"{out}/{build}-{name}.json"))
        rows = (report[0] if isinstance(report, list) else report)["rows"]
        kind = lambda k: [r for r in rows if r["kind"] == k]
        count = lambda rs, key: sum(1 for r in rs if r.get(key))
        ans, near, far = kind("answerable"), kind("near"), kind("far")
        median = lambda rs: statistics.median(r["seconds"] for r in rs) if rs else float("nan")
        print(f"{name} | {build} | {count(ans, 'fact')}/{len(ans)} | {count(ans, 'cited')} | "
              f"{count(ans, 'abstained')} | {count(near, 'abstained')}/{len(near)} | "
              f"{count(far, 'abstained')}/{len(far)} | {median(rows):.2f} | {median(ans):.2f}")
EOF
