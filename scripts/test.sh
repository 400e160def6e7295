#!/usr/bin/env bash
# The project's test command (README): lint, then every test, against the real local stack
# when one is needed. Usage: scripts/test.sh [extra nextest/cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."

phase() { printf '\n== %s\n' "$*"; }
timed() { local t0=$SECONDS; "$@"; printf '   (%ss)\n' $((SECONDS - t0)); }

phase "local stack"
# The Kafka tests start their own tansu broker per test (free loopback ports); this makes sure
# the binary is there before tests run in parallel.
timed scripts/install-stack.sh

phase "ClickHouse test front selftest (chdb engine over HTTP)"
timed .stack/venv/bin/python scripts/clickhouse-front-selftest.py

phase "format"
timed cargo fmt --check
phase "clippy"
timed cargo clippy --all-targets --locked -- -D warnings
phase "tests"
if cargo nextest --version >/dev/null 2>&1; then
  timed cargo nextest run --locked --no-fail-fast "$@"
else
  timed cargo test --locked --no-fail-fast "$@"
fi
