#!/usr/bin/env bash
# Starts the ClickHouse engine (chdb-core, in-process ClickHouse 26.9) behind the project's
# HTTP test front (scripts/clickhouse-http-front.py) on 127.0.0.1:${CLICKHOUSE_PORT:-18123},
# data in .stack/clickhouse-PORT/. Test infrastructure: production points clickhouse.url at a
# real server. Pid in .stack/clickhouse-PORT.pid. Stop: kill "$(cat .stack/clickhouse-PORT.pid)".
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${CLICKHOUSE_PORT:-18123}
scripts/install-stack.sh >/dev/null
if [ -f .stack/clickhouse-$PORT.pid ] && kill -0 "$(cat .stack/clickhouse-$PORT.pid)" 2>/dev/null; then
  echo "ClickHouse front already running (pid $(cat .stack/clickhouse-$PORT.pid))"
else
  .stack/venv/bin/python scripts/clickhouse-http-front.py --data .stack/clickhouse-$PORT --port "$PORT" --quiet \
    > .stack/clickhouse-$PORT.log 2>&1 &
  echo $! > .stack/clickhouse-$PORT.pid
fi
for _ in $(seq 1 200); do
  curl -sf "http://127.0.0.1:$PORT/ping" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "ClickHouse (chdb) on http://127.0.0.1:$PORT (pid $(cat .stack/clickhouse-$PORT.pid))"
