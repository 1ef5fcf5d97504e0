#!/usr/bin/env python3
"""Distributed ingest for lore on Apache Spark.

Reads a corpus (a folder tree, or JSON lines of documents), spreads it over
the executors, runs `lore embed` on every partition (the chunker and the
embedder of `lore ingest`, bit for bit), and writes the import rows as
shards (`part-*`). Then, on the machine that holds the index:

    cat OUT/part-* | lore import --prune -

(`--prune`: documents that are no longer in the corpus are removed; chunks
whose ids are already stored are not written again.)

Local, on this machine's cores:

    python3 scripts/spark/lore_spark.py --master 'local[2]' --input corpora --output /tmp/rows

On a cluster (standalone, YARN or Kubernetes), with `lore` and its models
installed on every worker (LORE_MODELS pointing at them):

    spark-submit --master spark://HOST:7077 scripts/spark/lore_spark.py \\
        --input hdfs:///corpus --output hdfs:///lore-rows --lore /opt/lore/bin/lore

A folder is read recursively (hidden files and folders left out, as ingest
does; .gitignore files are not read). Each file becomes one document named
by its path: the canonical local path for local files, as `lore ingest`
names them, so both give the same ids; the URI otherwise. Files that are
not UTF-8 (PDF) travel as base64. JSON lines input is taken as documents in
`lore embed`'s format ({"path", "text" or "base64", "id", "metadata"}).
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import threading
import time
from urllib.parse import unquote, urlparse


def document(path, content):
    """One file as a `lore embed` document."""
    uri = urlparse(path)
    name = os.path.realpath(unquote(uri.path)) if uri.scheme in ("", "file") else path
    try:
        return {"path": name, "text": bytes(content).decode("utf-8")}
    except UnicodeDecodeError:
        return {"path": name, "base64": base64.b64encode(bytes(content)).decode("ascii")}


def visible(path, root):
    """Whether `path` (a URI under `root`) has no hidden component."""
    relative = unquote(urlparse(path).path)[len(unquote(urlparse(root).path)):]
    return not any(part.startswith(".") for part in relative.split("/") if part)


def embed_partition(lore, env, chunks, skipped):
    """A mapPartitions function: the partition's documents through one
    `lore embed` process, its rows out."""

    def run(documents):
        proc = subprocess.Popen(
            [lore, "embed"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env)
        errors = []

        def feed():
            try:
                for doc in documents:
                    proc.stdin.write((json.dumps(doc) + "\n").encode("utf-8"))
            finally:
                proc.stdin.close()

        def drain():
            for line in proc.stderr:
                errors.append(line.decode("utf-8", "replace").rstrip())

        threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
        for t in threads:
            t.start()
        for line in proc.stdout:
            chunks.add(1)
            yield line.decode("utf-8").rstrip("\n")
        for t in threads:
            t.join()
        code = proc.wait()
        for line in errors:
            if ": line " in line:
                skipped.add(1)
                print(line, file=sys.stderr)
        # 3: done, some lines skipped (each reported above).
        if code not in (0, 3):
            raise RuntimeError(f"lore embed exited with {code}: " + " | ".join(errors[-5:]))

    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder (local path or URI) or .jsonl of documents")
    parser.add_argument("--output", required=True, help="folder for the row shards (must not exist)")
    parser.add_argument("--master", default=None, help="Spark master (default: spark-submit's)")
    parser.add_argument("--lore", default="lore", help="the lore binary on the executors")
    parser.add_argument("--partitions", type=int, default=0, help="default: 4 per core")
    parser.add_argument("--threads", type=int, default=1, help="threads of each lore embed")
    parser.add_argument("--report", default=None, help="write the job's counts and rate here (JSON)")
    args = parser.parse_args()

    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName("lore-embed")
    if args.master:
        builder = builder.master(args.master)
    spark = builder.getOrCreate()
    sc = spark.sparkContext
    sc.setLogLevel("WARN")
    started = time.time()
    root = args.input if "://" in args.input else "file://" + os.path.realpath(args.input)
    if args.input.endswith((".jsonl", ".ndjson")):
        docs = sc.textFile(root).filter(lambda l: l.strip()).map(json.loads)
    else:
        files = (spark.read.format("binaryFile").option("recursiveFileLookup", "true")
                 .load(root).select("path", "content").rdd)
        docs = (files.filter(lambda r: visible(r.path, root))
                .map(lambda r: document(r.path, r.content)))
    # One copy of each document (by id, else path), so its rows stay together.
    docs = docs.keyBy(lambda d: d.get("id") or d["path"]).reduceByKey(lambda a, b: b).values()
    partitions = args.partitions or 4 * sc.defaultParallelism
    env = dict(os.environ, LORE_THREADS=str(args.threads))
    chunks, skipped = sc.accumulator(0), sc.accumulator(0)
    documents = sc.accumulator(0)

    def count(doc):
        documents.add(1)
        return doc

    rows = docs.map(count).repartition(partitions).mapPartitions(
        embed_partition(args.lore, env, chunks, skipped))
    rows.saveAsTextFile(args.output)
    seconds = time.time() - started
    report = {
        "master": sc.master,
        "executor_slots": sc.defaultParallelism,
        "partitions": partitions,
        "documents": documents.value,
        "chunks": chunks.value,
        "skipped_lines": skipped.value,
        "seconds": seconds,
        "chunks_per_s": chunks.value / seconds if seconds else 0.0,
        "chunks_per_s_per_slot": chunks.value / seconds / sc.defaultParallelism if seconds else 0.0,
    }
    print(json.dumps(report), file=sys.stderr)
    if args.report:
        with open(args.report, "w") as out:
            json.dump(report, out, indent=2)
    spark.stop()


if __name__ == "__main__":
    main()
