#!/usr/bin/env bash
# One-command demo: installs and starts the local stack (tansu, a Kafka-protocol broker),
# builds and starts `mapper run`, streams a realistic mix of detector events of all 16
# detectors (deploy/demo/events.jsonl, two of them deliberately broken), then shows canonical
# events, audit events, dead letters and the metrics. Stops everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export KAFKA_PORT=${KAFKA_PORT:-19092}
BROKERS=127.0.0.1:$KAFKA_PORT
METRICS=127.0.0.1:${METRICS_PORT:-19464}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building mapper (release)"
cargo build --release --locked --bin mapper
MAPPER=target/release/mapper

say "starting the local stack"
MAPPER=$MAPPER scripts/start-kafka.sh
cleanup() {
  [ -n "${RUN_PID:-}" ] && kill "$RUN_PID" 2>/dev/null && wait "$RUN_PID" 2>/dev/null || true
  [ -f ".stack/tansu-$KAFKA_PORT.pid" ] && kill "$(cat ".stack/tansu-$KAFKA_PORT.pid")" 2>/dev/null || true
  rm -f ".stack/tansu-$KAFKA_PORT.pid"
}
trap cleanup EXIT
$MAPPER topics check --brokers "$BROKERS" --replication-factor 1

say "starting mapper run (exactly-once, metrics on $METRICS)"
LLAMA_MAPPER_LOG__FORMAT=json $MAPPER run --brokers "$BROKERS" --group demo --instance-id demo \
  --metrics-addr "$METRICS" 2> .stack/mapper-run.log &
RUN_PID=$!
for _ in $(seq 1 100); do curl -sf "http://$METRICS/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
echo "ready: $(curl -s "http://$METRICS/readyz")"

say "streaming $(wc -l < deploy/demo/events.jsonl) detector events"
$MAPPER produce --brokers "$BROKERS" --input deploy/demo/events.jsonl
sleep 3

say "canonical events (mapper.canonical.v1), first 3"
$MAPPER tail --brokers "$BROKERS" --topic mapper.canonical.v1 --max 3 --idle-secs 5
say "audit events (mapper.audit.v1), first 2"
$MAPPER tail --brokers "$BROKERS" --topic mapper.audit.v1 --max 2 --idle-secs 5
say "dead letters (mapper.dlq.v1), with their headers"
$MAPPER tail --brokers "$BROKERS" --topic mapper.dlq.v1 --headers --idle-secs 3
say "counts"
for t in mapper.canonical.v1 mapper.audit.v1 mapper.dlq.v1; do
  printf '%-22s %s records\n' "$t" "$($MAPPER tail --brokers "$BROKERS" --topic $t --idle-secs 3 | wc -l)"
done
say "metrics (http://$METRICS/metrics)"
curl -s "http://$METRICS/metrics" | grep -E '^mapper_(events|dlq|labels|transactions|schema_valid_ratio|fallback_ratio|batch_size_count|end_to_end_latency_seconds_count)'
say "log lines carry metadata only (last 3)"
tail -n 3 .stack/mapper-run.log
