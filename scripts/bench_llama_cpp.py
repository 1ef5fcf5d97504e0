#!/usr/bin/env python3
"""Reference for `lore bench generate`: llama.cpp (llama-cpp-python) on the
same GGUF with the same thread count. Prompt speed, decode speed and time
to first token, from wall-clock times of completions of 1 and N tokens.

    pip install llama-cpp-python        # builds llama.cpp (10-20 min)
    python3 scripts/bench_llama_cpp.py MODEL.gguf [PROMPT_TOKENS] [GEN_TOKENS] [THREADS] [TEXT_FILE or - for stdin]

`lore bench generate --llama-cpp PYTHON` runs this script (built into the
binary) with lore's own benchmark text, in the same run as lore's figures.
On CPUs with AMX, build llama.cpp without it (its AMX path crashes on
batched prompts here):
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON \
      -DGGML_AVX512_BF16=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AMX_TILE=OFF \
      -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" pip install llama-cpp-python
"""
import json
import sys
import time

from llama_cpp import Llama

model = sys.argv[1]
prompt_tokens = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
gen_tokens = int(sys.argv[3]) if len(sys.argv) > 3 else 64
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2

llm = Llama(model_path=model, n_ctx=max(2048, prompt_tokens + gen_tokens + 16), n_threads=threads,
            n_threads_batch=threads, n_batch=512, verbose=False)
text_file = sys.argv[5] if len(sys.argv) > 5 else "corpora/handbook/docs/oncall/incident-response.md"
text = (sys.stdin.read() if text_file == "-" else open(text_file).read()) * 50
tokens = llm.tokenize(text.encode())[:prompt_tokens]


def completion_seconds(max_tokens):
    llm.reset()
    start = time.perf_counter()
    out = llm.create_completion(tokens, max_tokens=max_tokens, temperature=0.0, top_k=1)
    return time.perf_counter() - start, out["usage"]["completion_tokens"]


completion_seconds(1)  # warm-up
first, _ = completion_seconds(1)
full, produced = completion_seconds(gen_tokens)
decode = (full - first) / max(produced - 1, 1)
print(json.dumps({
    "model": model.rsplit("/", 1)[-1], "threads": threads,
    "prompt_tokens": len(tokens), "prompt_tokens_per_s": len(tokens) / first,
    "gen_tokens": produced, "gen_tokens_per_s": 1 / decode,
    "time_to_first_token_ms": first * 1000,
}))
