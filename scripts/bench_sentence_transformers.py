#!/usr/bin/env python3
"""Baseline for `lore bench embed`: sentence-transformers (PyTorch CPU) on the
same chunks. Usage:

    lore bench embed --dump-chunks /tmp/chunks.json
    python3 scripts/bench_sentence_transformers.py /tmp/chunks.json [MODEL_DIR] [THREADS]

MODEL_DIR defaults to $LORE_MODELS/all-minilm-l6-v2. Needs
`pip install sentence-transformers` (not needed by lore itself or its tests).
"""
import json
import os
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

chunks = json.load(open(sys.argv[1]))
models = os.environ.get("LORE_MODELS", os.path.expanduser("~/.cache/lore/models"))
model_dir = sys.argv[2] if len(sys.argv) > 2 else os.path.join(models, "all-minilm-l6-v2")
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 2
torch.set_num_threads(threads)
model = SentenceTransformer(model_dir, device="cpu")
model.max_seq_length = 256
tokens = sum(len(model.tokenizer(c, truncation=True, max_length=256)["input_ids"]) for c in chunks)
model.encode(chunks[:4], batch_size=16)
start = time.perf_counter()
model.encode(chunks, batch_size=16, normalize_embeddings=True)
seconds = time.perf_counter() - start
print(json.dumps({"backend": "sentence-transformers", "threads": threads, "chunks": len(chunks),
                  "tokens": tokens, "seconds": seconds, "chunks_per_s": len(chunks) / seconds,
                  "tokens_per_s": tokens / seconds}))
