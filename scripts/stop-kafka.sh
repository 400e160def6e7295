#!/usr/bin/env bash
# Stops the broker scripts/start-kafka.sh started (same KAFKA_PORT / KAFKA_DIR): SIGTERM, a
# controlled shutdown, then SIGKILL after 30 s. KAFKA_WIPE=1 also removes its data.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${KAFKA_PORT:-9092}
DIR=${KAFKA_DIR:-$ROOT/.stack/kafka-$PORT}
if [ -f "$DIR/kafka.pid" ]; then
  pid=$(cat "$DIR/kafka.pid")
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$DIR/kafka.pid"
  echo "kafka on 127.0.0.1:$PORT stopped"
else
  echo "no kafka running for $DIR"
fi
[ "${KAFKA_WIPE:-0}" = 1 ] && rm -rf "$DIR"
exit 0
