#!/usr/bin/env bash
# The library checks of `make test`: the engine alone compiles
# (`--no-default-features`), the API docs build with warnings denied, and
# each example in examples/ runs to success on the shipped handbook with
# the light generator. Needs: cargo, installed models.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export LORE_GENERATOR=light
corpus=corpora/handbook/docs

# `check`, not `build`: the engine alone must compile, and its check
# artifacts are the ones `cargo doc --no-default-features` needs below, so
# the dependencies are compiled once for both (a full optimised build of
# the other feature set took 6 minutes on 2 cores for no further check).
echo "== cargo check --no-default-features (the engine alone)"
cargo check --release --no-default-features --lib
echo "== cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps
RUSTDOCFLAGS="-D warnings" cargo doc --release --no-deps --no-default-features

run() {
    echo "== example $1"
    out=$(cargo run -q --release --example "$@")
    printf '%s\n' "$out" | head -12
}
run ask "$corpus" "How quickly must a SEV1 page be acknowledged?"
run remote_embedder "$corpus" "who approves a rollback?"
run shared_engine "$corpus" "How quickly must a SEV1 page be acknowledged?"
echo "examples: 3 passed"
