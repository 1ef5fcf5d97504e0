#!/usr/bin/env python3
"""Writes tests/fixtures/embedding_parity.json: reference vectors from
sentence-transformers for the texts below, which the parity test compares
lore's encoder against (cosine >= 0.999).

    pip install sentence-transformers
    python3 scripts/make_parity_fixture.py [MODEL_DIR]

MODEL_DIR defaults to $LORE_MODELS/all-minilm-l6-v2 (scripts/install-models.sh).
"""
import json
import os
import sys

from sentence_transformers import SentenceTransformer

models = os.environ.get("LORE_MODELS", os.path.expanduser("~/.cache/lore/models"))
model_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(models, "all-minilm-l6-v2")

long_text = " ".join(
    f"Paragraph {i}: the on-call engineer acknowledges the page within five minutes, "
    f"opens an incident channel, and records every mitigation step in the timeline."
    for i in range(40)
)
texts = [
    "Hello",
    "How do I rotate the database credentials?",
    "The quick brown fox jumps over the lazy dog.",
    "Runbooks > Paging\n\nIf the pager fires twice in ten minutes, escalate to the secondary.",
    "fn main() {\n    println!(\"{}\", 40 + 2);\n}",
    "Ünïcödé, emoji 🚀 and CJK 漢字 mixed with ASCII text.",
    "Vitamin D deficiency is associated with an increased risk of respiratory infections in adults.",
    "   leading and trailing whitespace   ",
    long_text,  # truncated at 256 tokens
    "a " * 300,
]
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = 256
vectors = model.encode(texts, normalize_embeddings=True)
out = {
    "model": "sentence-transformers/all-MiniLM-L6-v2",
    "max_seq_length": 256,
    "texts": texts,
    "vectors": [[round(float(x), 7) for x in v] for v in vectors],
}
path = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "embedding_parity.json")
with open(path, "w") as f:
    json.dump(out, f)
print(f"wrote {len(texts)} vectors to {os.path.normpath(path)}")
