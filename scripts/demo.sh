#!/usr/bin/env bash
# One-command demo: installs and starts the local stack (Apache Kafka 4.4 from Maven Central;
# SeaweedFS, S3 with Object Lock; ClickHouse as chdb behind the test front), builds and starts
# `mapper run` and both sinks, streams a realistic mix of detector events of all 16 detectors
# (deploy/demo/events.jsonl, two of them deliberately broken), then shows canonical events,
# audit events, dead letters, the metrics, the auditors' ClickHouse answers and a verified
# WORM trail. Stops everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
export KAFKA_PORT=${KAFKA_PORT:-19092}
BROKERS=127.0.0.1:$KAFKA_PORT
METRICS=127.0.0.1:${METRICS_PORT:-19464}
export S3_PORT=${S3_PORT:-19333} CLICKHOUSE_PORT=${CLICKHOUSE_PORT:-19123}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-llama-mapper-dev} AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-llama-mapper-dev-secret}
export LLAMA_MAPPER_KAFKA__BROKERS=$BROKERS
export LLAMA_MAPPER_CLICKHOUSE__URL=http://127.0.0.1:$CLICKHOUSE_PORT
# The demo events are from 2025; the default 90-day hot retention would expire them on insert.
export LLAMA_MAPPER_CLICKHOUSE__TTL_DAYS=3650
export LLAMA_MAPPER_S3__ENDPOINT=http://127.0.0.1:$S3_PORT LLAMA_MAPPER_S3__BUCKET=llama-mapper-demo
export LLAMA_MAPPER_S3__SIGNING_KEY_FILE=.stack/demo-trail.key LLAMA_MAPPER_S3__RETENTION_DAYS=1
export LLAMA_MAPPER_SINK__BATCH_TIMEOUT_MS=500
CH=http://127.0.0.1:$CLICKHOUSE_PORT/
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "building mapper (release)"
cargo build --release --locked --bin mapper
MAPPER=${CARGO_TARGET_DIR:-target}/release/mapper

# Installed before anything starts, so a failure half-way stops what did start.
cleanup() {
  for p in "${RUN_PID:-}" "${CH_PID:-}" "${S3_PID:-}"; do
    [ -n "$p" ] && kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
  done
  scripts/stop-kafka.sh >/dev/null 2>&1 || true
  for f in s3-$S3_PORT clickhouse-$CLICKHOUSE_PORT; do
    [ -f ".stack/$f.pid" ] && kill "$(cat ".stack/$f.pid")" 2>/dev/null || true
    rm -f ".stack/$f.pid"
  done
}
trap cleanup EXIT

say "starting the local stack"
# A fresh broker and store each run: the demo bucket is written with Object Lock.
KAFKA_FRESH=1 MAPPER=$MAPPER scripts/start-kafka.sh
rm -rf ".stack/s3-$S3_PORT" ".stack/clickhouse-$CLICKHOUSE_PORT"
scripts/start-s3.sh
scripts/start-clickhouse.sh
$MAPPER topics check --brokers "$BROKERS" --replication-factor 1

say "ClickHouse schema, trail signing key, Object Lock bucket"
$MAPPER clickhouse migrate
[ -f .stack/demo-trail.key ] || $MAPPER audit keygen --out .stack/demo-trail.key
for _ in $(seq 1 60); do $MAPPER audit init-bucket 2>/dev/null && break; sleep 0.5; done

say "starting the sinks (mapper sink clickhouse, mapper sink s3)"
$MAPPER sink clickhouse 2> .stack/sink-clickhouse.log &
CH_PID=$!
$MAPPER sink s3 2> .stack/sink-s3.log &
S3_PID=$!

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

sleep 3
say "auditors: incidents per control per day, tenant acme (ClickHouse, pre-aggregated)"
curl -s "$CH" --data-binary "SELECT day, control, uniqExactMerge(events) AS incidents FROM incidents_by_control_day
  WHERE tenant_id = 'acme' GROUP BY day, control ORDER BY day, incidents DESC LIMIT 8 FORMAT PrettyCompact"
say "auditors: detector coverage, tenant acme"
curl -s "$CH" --data-binary "SELECT detector, uniqExactMerge(events) AS events, max(last_seen) AS last_seen
  FROM detector_coverage_day WHERE tenant_id = 'acme' GROUP BY detector ORDER BY detector FORMAT PrettyCompact"
say "the WORM trail in S3, verified: hashes, links, signatures, retention, counts against ClickHouse"
$MAPPER audit verify
