#!/usr/bin/env python3
"""Answer quality of `lore ask` on a corpus's questions.jsonl
({question, answer, source}; answer is a string or a list of acceptable
spellings) and optional out-of-corpus.jsonl ({question}).

    python3 scripts/ask_quality.py LORE_BINARY INDEX corpora/handbook [extra lore ask flags...]

LIMIT=N (environment) asks only the first N questions of each file, for
quick per-technique comparisons.

Reports: share of answers containing the gold fact (case- and
punctuation-insensitive), share citing the gold source, abstention rate on
out-of-corpus questions.
"""
import json
import os
import re
import subprocess
import sys

lore, index, corpus, *flags = sys.argv[1:]
limit = int(os.environ.get("LIMIT", "0")) or None


def norm(s):
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def ask(question):
    out = subprocess.run([lore, "--index", index, "ask", question, "--json", *flags],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


fact = cited = n = 0
for line in open(os.path.join(corpus, "questions.jsonl")).readlines()[:limit]:
    q = json.loads(line)
    r = ask(q["question"])
    n += 1
    answers = q["answer"] if isinstance(q["answer"], list) else [q["answer"]]
    has_fact = any(norm(a) in norm(r["answer"]) for a in answers)
    has_source = any(c["path"].endswith(q["source"]) for c in r["citations"])
    fact += has_fact
    cited += has_source
    print(f"{'F' if has_fact else '-'}{'C' if has_source else '-'} {q['question']!r} -> {r['answer'][:100]!r}", flush=True)
print(f"gold fact in answer: {fact}/{n} = {fact / n:.0%}; gold source cited: {cited}/{n} = {cited / n:.0%}")
ooc_path = os.path.join(corpus, "out-of-corpus.jsonl")
if os.path.exists(ooc_path):
    qs = [json.loads(l)["question"] for l in open(ooc_path).readlines()[:limit]]
    abstained = sum(ask(q)["abstained"] for q in qs)
    print(f"out-of-corpus abstained: {abstained}/{len(qs)} = {abstained / len(qs):.0%}")
