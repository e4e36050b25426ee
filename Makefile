# The two commands of the README: `make run` and `make test`.
#
# Builds reuse one target directory outside the clone, so a fresh clone (CI) starts
# warm, and everything builds in one profile (release): tests, benchmarks and the
# binary share their artifacts.

CACHE ?= $(HOME)/.cache/mediation-host
export CARGO_TARGET_DIR ?= $(CACHE)/target
CONFIG ?= config.toml
BIN := $(CARGO_TARGET_DIR)/release/mediation-host

.PHONY: run test setup build lint unit brokers browser bench bench-brokers

## Run the host on the quickstart configuration (no broker needed).
run: build
	$(BIN) run --config $(CONFIG)

## Formatting, lints and every test, the browser test included.
test: lint unit browser

setup:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2

build: setup
	cargo build --release --locked -p mediation-host --bin mediation-host

lint: setup
	cargo fmt --all --check
	cargo clippy --release --locked --workspace --all-targets -- -D warnings

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
