#!/usr/bin/env bash
# The project's test command (README): lint, then every test, against the real local stack
# when one is needed. Usage: scripts/test.sh [extra nextest/cargo test args]
#
# One Apache Kafka broker serves the whole run (every test makes its own topics and groups;
# the fault tests start brokers of their own); it is stopped when this script exits.
set -euo pipefail
cd "$(dirname "$0")/.."

phase() { printf '\n== %s\n' "$*"; }
timed() { local t0=$SECONDS; "$@"; printf '   (%ss)\n' $((SECONDS - t0)); }

phase "local stack (Apache Kafka from Maven Central, SeaweedFS, chdb)"
timed scripts/install-stack.sh

phase "Apache Kafka for the run"
KAFKA_PORT=${MAPPER_TEST_KAFKA_PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
export KAFKA_PORT
export KAFKA_DIR=${TMPDIR:-/tmp}/mapper-test-kafka-$KAFKA_PORT
trap 'KAFKA_WIPE=1 scripts/stop-kafka.sh >/dev/null 2>&1 || true' EXIT
KAFKA_FRESH=1 KAFKA_HEAP=768m KAFKA_WATCH_PID=$$ scripts/start-kafka.sh
export MAPPER_TEST_KAFKA=127.0.0.1:$KAFKA_PORT

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
