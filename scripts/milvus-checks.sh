#!/usr/bin/env bash
# Milvus checks (part of `make test`): a collection whose vectors live in a
# real Milvus server. Installs Milvus Lite (`milvus-lite` and `pymilvus`
# from PyPI) into a venv, then runs tests/milvus.rs, which starts and stops
# `milvus-lite server` on loopback ports itself: parity with the embedded
# graph on the shipped corpora, kill -9 of lore, a Milvus restart and an
# outage mid-ingest, a read-only replica, TLS through HAProxy. Builds lore
# with the `milvus` feature (the default build leaves it out).
# Needs: python3 with venv, installed models; installs haproxy and openssl.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${LORE_MILVUS_VENV:-$HOME/.cache/lore/milvus-venv}

. "$root/scripts/serve-lib.sh"
need haproxy haproxy   # TLS in front of Milvus Lite
need openssl openssl
python_env "$venv" "milvus_lite.adapter.grpc.server" "milvus-lite>=3.2.2,<4" "pymilvus>=3,<4"
export LORE_MILVUS_LITE="$venv/bin/milvus-lite"
cargo test --release --features milvus --test milvus -- --test-threads 1
