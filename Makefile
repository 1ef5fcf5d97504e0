# lore — the two commands of the README, and the helpers behind them.
#
#   make demo   install models, build, ingest the sample handbook, search it and ask it
#   make test   install models, run the whole test suite (cargo tests, then
#               the library checks: the engine alone without default
#               features, cargo doc with warnings denied, the examples; then
#               the HTTP API checks: openai client + schemathesis, then the
#               MCP checks (the MCP Python SDK over stdio and HTTP), then the
#               web page in headless Chromium, then two read replicas behind
#               HAProxy through a rolling restart, then `lore bench all` on
#               reduced inputs, then a Milvus-backed collection against
#               Milvus Lite, built with the `milvus` feature)
#   make bench  the full benchmark report (`lore bench all`), to benches/all.json
#   make bench-scale   the 10k / 100k / 1M scale runs (SIZES=...), to benches/
#
# Builds go to a persistent target directory under the user's cache so that
# repeated runs (and CI on the same machine) reuse compiled dependencies.

CARGO_TARGET_DIR ?= $(HOME)/.cache/lore/target
export CARGO_TARGET_DIR
LORE := $(CARGO_TARGET_DIR)/release/lore
DEMO_INDEX ?= index
QUESTION ?= How quickly must a SEV1 page be acknowledged?

.PHONY: demo demo-note test lib-checks api-checks mcp-checks browser-checks screenshots models models-large build lint bench-embed load \
	bench bench-scale spark replica-checks milvus-checks

demo: demo-note models build
	$(LORE) --index $(DEMO_INDEX) ingest corpora/handbook/docs
	$(LORE) --index $(DEMO_INDEX) status
	$(LORE) --index $(DEMO_INDEX) search "$(QUESTION)" -k 3
	$(LORE) --index $(DEMO_INDEX) ask "$(QUESTION)"
	@echo
	@echo "lore: the binary is $(LORE)"
	@echo "lore: the index is $(abspath $(DEMO_INDEX))"
	@echo "lore: the models are in $${LORE_MODELS:-$$HOME/.cache/lore/models}"
	@echo "lore: try  $(LORE) --index $(DEMO_INDEX) ask \"your question\"  or  ... serve"

# Says up front what a first run costs.
demo-note:
	@if [ ! -x "$(LORE)" ]; then \
		echo "lore: first run: fetching the models (about 1 GB) and building lore in release mode;"; \
		echo "lore: on 2 cores that takes about 10 minutes. Later runs reuse both and take seconds."; \
	fi

test: models-large spark
	cargo test --release
	bash scripts/examples.sh
	LORE_BIN=$(LORE) bash scripts/api-checks.sh
	LORE_BIN=$(LORE) bash scripts/mcp-checks.sh
	LORE_BIN=$(LORE) bash scripts/browser-checks.sh
	LORE_BIN=$(LORE) bash scripts/replica-checks.sh
	LORE_BIN=$(LORE) bash scripts/bench-smoke.sh
	bash scripts/milvus-checks.sh

lib-checks: models
	bash scripts/examples.sh

milvus-checks: models
	bash scripts/milvus-checks.sh

replica-checks: models build
	LORE_BIN=$(LORE) bash scripts/replica-checks.sh

api-checks: models build
	LORE_BIN=$(LORE) bash scripts/api-checks.sh

mcp-checks: models build
	LORE_BIN=$(LORE) bash scripts/mcp-checks.sh

browser-checks: models build
	LORE_BIN=$(LORE) bash scripts/browser-checks.sh

# The README's screenshots of the web page, answered by the default model.
screenshots: models build
	LORE_BIN=$(LORE) LORE_SCREENSHOTS=$(CURDIR)/docs LORE_BROWSER_GENERATOR=default \
		bash scripts/browser-checks.sh

load: models build
	LORE_BIN=$(LORE) bash scripts/load.sh

models:
	bash scripts/install-models.sh

# The default models and the larger generator (`--generator large`, 1.1 GB).
models-large:
	bash scripts/install-models.sh --large

spark:
	bash scripts/install-spark.sh

build:
	cargo build --release

lint:
	cargo fmt --check
	cargo clippy --release --all-targets -- -D warnings
	cargo clippy --release --no-default-features -- -D warnings

bench-embed: models build
	$(LORE) bench embed --corpus ../shared/eval/scifact-dev/corpus.jsonl --chunks 128

bench: models build
	$(LORE) bench all --json benches/all.json

# The scale runs derive their collections from a real index of SciFact's
# 5,183 abstracts (9,142 chunks; about six minutes to embed, once).
SIZES ?= 10000 100000 1000000
SCALE_BASE ?= $(HOME)/.cache/lore/scale-base
SCALE_WORK ?= $(HOME)/.cache/lore/scale-work
bench-scale: models build
	test -d $(SCALE_BASE)/docs || $(LORE) --index $(SCALE_BASE) ingest ../shared/eval/scifact-dev/corpus.jsonl
	for n in $(SIZES); do \
		$(LORE) --index $(SCALE_BASE) bench scale --chunks $$n --work $(SCALE_WORK)/$$n \
			--json benches/scale-$$n.json || exit 1; \
	done
