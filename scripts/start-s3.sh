#!/usr/bin/env bash
# Starts SeaweedFS (`weed mini`: S3 API with Object Lock) on 127.0.0.1:${S3_PORT:-18333} with
# its data in .stack/s3-PORT/ (kept between runs; delete it for a fresh store). Credentials
# are AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (defaults below). Pid in .stack/s3-PORT.pid,
# log in .stack/s3-PORT.log. Stop: kill "$(cat .stack/s3-PORT.pid)".
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${S3_PORT:-18333}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-llama-mapper-dev}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-llama-mapper-dev-secret}
scripts/install-stack.sh >/dev/null
if [ -f .stack/s3-$PORT.pid ] && kill -0 "$(cat .stack/s3-$PORT.pid)" 2>/dev/null; then
  echo "SeaweedFS already running (pid $(cat .stack/s3-$PORT.pid))"
else
  mkdir -p .stack/s3-$PORT
  # Every internal port is pinned next to the S3 port so that nothing binds a default port.
  B=$((PORT + 1))
  .stack/bin/weed mini -dir=.stack/s3-$PORT -ip=127.0.0.1 -ip.bind=127.0.0.1 -admin.ui=false -webdav=false \
    -s3.port.iceberg=0 -s3.port.lance=0 -s3.port=$PORT -s3.port.grpc=$B \
    -master.port=$((B + 1)) -master.port.grpc=$((B + 2)) -volume.port=$((B + 3)) -volume.port.grpc=$((B + 4)) \
    -filer.port=$((B + 5)) -filer.port.grpc=$((B + 6)) -admin.port=$((B + 7)) -admin.port.grpc=$((B + 8)) \
    > .stack/s3-$PORT.log 2>&1 &
  echo $! > .stack/s3-$PORT.pid
fi
for _ in $(seq 1 300); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
echo "SeaweedFS S3 on http://127.0.0.1:$PORT (pid $(cat .stack/s3-$PORT.pid))"
