#!/usr/bin/env bash
# Starts tansu (Kafka protocol, in-memory storage) on 127.0.0.1:${KAFKA_PORT:-9092} and creates
# the topics of topics/*.yaml. Writes its pid to .stack/tansu-PORT.pid, its log to .stack/tansu-PORT.log.
# Stop: kill "$(cat .stack/tansu-PORT.pid)".
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${KAFKA_PORT:-9092}
scripts/install-stack.sh >/dev/null
if [ -f .stack/tansu-$PORT.pid ] && kill -0 "$(cat .stack/tansu-$PORT.pid)" 2>/dev/null; then
  echo "tansu already running (pid $(cat .stack/tansu-$PORT.pid))"
else
  .stack/bin/tansu broker --listener-url "tcp://127.0.0.1:$PORT" --advertised-listener-url "tcp://127.0.0.1:$PORT" \
    --storage-engine memory://tansu/ > .stack/tansu-$PORT.log 2>&1 &
  echo $! > .stack/tansu-$PORT.pid
fi
for _ in $(seq 1 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
# Topics: with the mapper binary at hand (MAPPER=path), `mapper topics apply` creates them with
# their configs; otherwise tansu's own CLI creates them with partitions only.
if [ -n "${MAPPER:-}" ]; then
  "$MAPPER" topics apply --brokers "127.0.0.1:$PORT" --replication-factor 1 >/dev/null
else
for f in topics/*.yaml; do
  name=$(sed -n 's/^name: *//p' "$f"); parts=$(sed -n 's/^partitions: *//p' "$f")
  .stack/bin/tansu topic create --broker "tcp://127.0.0.1:$PORT" --partitions "$parts" "$name" >/dev/null 2>&1 || true
done
fi
echo "tansu listening on 127.0.0.1:$PORT (pid $(cat .stack/tansu-$PORT.pid))"
