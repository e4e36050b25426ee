# The two commands of the README: `make run` and `make test`.
#
# Builds reuse one target directory outside the clone, so a fresh clone (CI) starts
# warm, and everything builds in one profile (release): tests, benchmarks and the
# binary share their artifacts.

CACHE ?= $(HOME)/.cache/mediation-host
export CARGO_TARGET_DIR ?= $(CACHE)/target
CONFIG ?= config.toml
BIN := $(CARGO_TARGET_DIR)/release/mediation-host

.PHONY: run test setup build lint unit brokers browser bench bench-brokers fuzz-setup fuzz fuzz-smoke

## Run the host on the quickstart configuration (no broker needed).
run: build
	$(BIN) run --config $(CONFIG)

## Formatting, lints and every test, the browser test included, and a few seconds of each fuzz target.
test: lint unit browser fuzz-smoke

setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

build: setup
	cargo build --release --locked -p mediation-host --bin mediation-host

## Formatting, clippy, and the module layers: no two of the host's top-level modules may
## import each other, even through others (tests/layers.rs names the imports that would).
lint: setup
	cargo fmt --all --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings
	cargo test --release --locked -p mediation-host --test layers

unit: setup brokers
	cargo test --release --locked --workspace

## The real brokers the broker tests run against, and the fault proxy the fault tests put
## between host and broker (docs/brokers.md); seconds when warm.
brokers:
	bash scripts/brokers.sh up rabbitmq mosquitto kafka artemis toxiproxy

## Headless Chromium against the real binary (installs Debian's chromium when missing).
browser: build
	bash scripts/browser-test.sh

## Criterion benchmarks (not part of `make test`: numbers go to docs/benchmarks.md).
bench: setup
	cargo bench --locked -p mediation-host --bench pipeline

## Broker benchmarks, one broker per call (not part of `make test`; docs/benchmarks.md, "Brokers"):
## `make bench-brokers BROKER=rabbitmq` (or kafka, mqtt, artemis).
BROKER ?= rabbitmq
bench-brokers: setup
	bash scripts/bench-brokers.sh $(BROKER)

## Fuzzing (docs/testing.md, "Fuzzing"): `cargo fuzz` on nightly, every target `cargo fuzz list`
## names, `FUZZ_SECONDS` each (not part of `make test`). New inputs go to a corpus under the cache;
## crashes to fuzz/artifacts/<target>/.
##
## Without a sanitizer: the targets run only safe Rust (the host's C libraries are linked, never
## called), where AddressSanitizer finds nothing that a panic or an assertion does not, and it
## would double the build and slow every run. The fuzz build has a target directory of its own
## in the cache (nightly and the coverage flags share no artifact with the stable build), so a
## fresh clone starts warm.
FUZZ_TARGET_DIR ?= $(CACHE)/fuzz-target
FUZZ_CORPUS ?= $(CACHE)/fuzz-corpus
FUZZ_SECONDS ?= 60
FUZZ_SMOKE_SECONDS ?= 3
FUZZ := CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) cargo +nightly fuzz
FUZZ_BUILD := --sanitizer none
## cargo-fuzz, pinned, built once into the cache (a new machine has no ~/.cargo/bin of ours).
CARGO_FUZZ_VERSION := 0.13.2
TOOLS := $(CACHE)/tools
export PATH := $(TOOLS)/bin:$(PATH)

fuzz-setup:
	@$(TOOLS)/bin/cargo-fuzz --version 2>/dev/null | grep -qx 'cargo-fuzz $(CARGO_FUZZ_VERSION)' || \
		cargo install --locked --root $(TOOLS) --version $(CARGO_FUZZ_VERSION) cargo-fuzz
	@rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal

## The committed corpus seeds each run and stays as it is; what a run adds is kept in the cache.
fuzz: fuzz-setup
	$(FUZZ) build $(FUZZ_BUILD)
	for target in $$($(FUZZ) list); do \
		mkdir -p $(FUZZ_CORPUS)/$$target && \
		$(FUZZ) run $(FUZZ_BUILD) $$target $(FUZZ_CORPUS)/$$target fuzz/corpus/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## Part of `make test`: the committed corpus, then FUZZ_SMOKE_SECONDS of new inputs per target;
## a target's output is shown when it fails, its last line otherwise.
fuzz-smoke: fuzz-setup
	$(FUZZ) build $(FUZZ_BUILD)
	for target in $$($(FUZZ) list); do \
		scratch=$$(mktemp -d) && \
		if ! $(FUZZ) run $(FUZZ_BUILD) $$target $$scratch fuzz/corpus/$$target -- \
			-max_total_time=$(FUZZ_SMOKE_SECONDS) >$$scratch.log 2>&1; then \
			cat $$scratch.log; rm -rf $$scratch $$scratch.log; exit 1; \
		fi; \
		echo "$$target: $$(tail -n 1 $$scratch.log)"; rm -rf $$scratch $$scratch.log; \
	done
