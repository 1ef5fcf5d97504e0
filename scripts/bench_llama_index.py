#!/usr/bin/env python3
"""Ingestion against LlamaIndex, whole process, same files, same threads.

    python3 scripts/bench_llama_index.py LORE_BIN DOCS_DIR MODEL_DIR [THREADS]

Runs, one after the other on the same folder of text files: `lore ingest`
into a fresh index, then a LlamaIndex pipeline doing the same work
(SimpleDirectoryReader, SentenceSplitter at lore's chunk size and overlap,
HuggingFaceEmbedding on the same sentence-transformers model directory,
VectorStoreIndex persisted to disk), each as its own process, timed from
start to exit. Prints one JSON line: seconds and chunks of each, and the
ratio. Needs `pip install llama-index-core llama-index-embeddings-huggingface`
(not needed by lore itself or its tests).
"""
import json
import os
import subprocess
import sys
import tempfile
import time

PIPELINE = r'''
import sys, torch
torch.set_num_threads(int(sys.argv[4]))
from llama_index.core import SimpleDirectoryReader, VectorStoreIndex, Settings
from llama_index.core.node_parser import SentenceSplitter
from llama_index.embeddings.huggingface import HuggingFaceEmbedding
Settings.embed_model = HuggingFaceEmbedding(model_name=sys.argv[2], device="cpu", embed_batch_size=32)
Settings.llm = None
docs = SimpleDirectoryReader(sys.argv[1], recursive=True).load_data()
nodes = SentenceSplitter(chunk_size=256, chunk_overlap=32).get_nodes_from_documents(docs)
index = VectorStoreIndex(nodes, show_progress=False)
index.storage_context.persist(persist_dir=sys.argv[3])
print(len(nodes))
'''


def timed(cmd, env=None):
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, out.stdout


def main():
    lore, docs, model = sys.argv[1:4]
    threads = sys.argv[4] if len(sys.argv) > 4 else "2"
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads,
               TOKENIZERS_PARALLELISM="false")
    with tempfile.TemporaryDirectory() as work:
        index = os.path.join(work, "lore-index")
        lore_s, out = timed([lore, "--threads", threads, "--index", index, "ingest", docs, "--json"])
        lore_chunks = json.loads(out)["chunks_embedded"]
        persist = os.path.join(work, "llama-index")
        li_s, out = timed([sys.executable, "-c", PIPELINE, docs, model, persist, threads], env=env)
        li_chunks = int(out.strip().splitlines()[-1])
    print(json.dumps({"files": sum(len(f) for _, _, f in os.walk(docs)), "threads": int(threads),
                      "lore_s": round(lore_s, 1), "lore_chunks": lore_chunks,
                      "llama_index_s": round(li_s, 1), "llama_index_chunks": li_chunks,
                      "ratio": round(li_s / lore_s, 2)}))


if __name__ == "__main__":
    main()
