#!/usr/bin/env bash
# The browser test (tests/browser/): the quickstart driven by headless Chromium.
#
#   bash scripts/browser-test.sh
#
# Installs what it needs when it is missing: Debian's `chromium` (apt-get, as root
# or with passwordless sudo) and the npm packages of tests/browser/package-lock.json
# (`npm ci`, into tests/browser/node_modules). Uses the host binary the Makefile
# builds, building it only when it is missing. Outside CI a machine that cannot get
# a browser skips the test with a warning; in CI (CI=true) that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/mediation-host/target}"
BIN="$CARGO_TARGET_DIR/release/mediation-host"

say() { printf 'browser-test: %s\n' "$*" >&2; }

# The browser: Debian's package, never a download of Playwright's own.
if [ ! -x "$CHROMIUM" ]; then
  say "no browser at $CHROMIUM: installing Debian's chromium"
  if [ "$(id -u)" -eq 0 ]; then
    sudo=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    sudo=(false)
  fi
  if command -v apt-get >/dev/null; then
    "${sudo[@]}" apt-get update -q || say "apt-get update failed"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium || say "apt-get install chromium failed"
  fi
fi
if [ ! -x "$CHROMIUM" ]; then
  if [ "${CI:-}" = "true" ]; then
    say "FAILED: no browser at $CHROMIUM after trying to install Debian's chromium"
    exit 1
  fi
  say "SKIPPED: no browser at $CHROMIUM, and installing Debian's chromium (needs root or passwordless sudo) did not provide one"
  exit 0
fi

for tool in node npm; do
  command -v "$tool" >/dev/null || { say "FAILED: $tool is not installed (node 20 or newer is needed)"; exit 1; }
done
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  say "FAILED: node $(node --version) is too old; the test needs node 20 or newer"
  exit 1
fi

# playwright-core only drives the browser: it downloads nothing at install.
npm ci --prefix tests/browser --prefer-offline --no-audit --no-fund --loglevel=error

if [ ! -x "$BIN" ]; then
  say "no host binary at $BIN: building it"
  cargo build --release --locked -p mediation-host --bin mediation-host
fi

# The test bounds each of its waits; this bounds the whole run should something hang.
exec timeout --kill-after=10 300 node --test --test-reporter=tap tests/browser/
