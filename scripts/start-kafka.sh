#!/usr/bin/env bash
# Starts Apache Kafka (KRaft: one node that is both broker and controller) on 127.0.0.1, from
# the jars scripts/install-stack.sh fetched from Maven Central into .stack/kafka/libs.
#
#   KAFKA_PORT             client listener (default 9092)
#   KAFKA_CONTROLLER_PORT  controller listener (default KAFKA_PORT + 1)
#   KAFKA_DIR              config, data, log and pid file (default .stack/kafka-$KAFKA_PORT)
#   KAFKA_HEAP             JVM heap (default 512m)
#   KAFKA_FRESH=1          start from empty storage (default: keep the data of an earlier run)
#   KAFKA_WATCH_PID        stop the broker when this process ends (used by the test harness)
#   MAPPER                 a mapper binary: then topics/*.yaml are created with `mapper topics apply`
#
# Idempotent: a broker already running for KAFKA_DIR is reused. Prints one line when ready:
#   kafka ready on 127.0.0.1:9092 (pid 1234, dir .stack/kafka-9092) in 6s
# Stop it with scripts/stop-kafka.sh (same environment).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PORT=${KAFKA_PORT:-9092}
CPORT=${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
DIR=${KAFKA_DIR:-$ROOT/.stack/kafka-$PORT}
HEAP=${KAFKA_HEAP:-512m}
LIBS=$ROOT/.stack/kafka/libs
JAVA=${JAVA_HOME:+$JAVA_HOME/bin/}java
t0=$SECONDS

[ -d "$LIBS" ] || "$ROOT/scripts/install-stack.sh" >&2

if [ -f "$DIR/kafka.pid" ] && kill -0 "$(cat "$DIR/kafka.pid")" 2>/dev/null; then
  echo "kafka already running on 127.0.0.1:$PORT (pid $(cat "$DIR/kafka.pid"), dir $DIR)"
  exit 0
fi
[ "${KAFKA_FRESH:-0}" = 1 ] && rm -rf "$DIR"
mkdir -p "$DIR/data"

# A single-node cluster for development and tests: every internal topic with one replica,
# few partitions (they are created on first use, and 50 of each cost seconds), no rebalance
# delay (a consumer group starts at once), topics only as topics/*.yaml or a test defines them.
cat > "$DIR/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/data
auto.create.topics.enable=false
num.partitions=1
default.replication.factor=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=6
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=6
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
PROPS

if [ ! -f "$DIR/data/meta.properties" ]; then
  cluster_id=$(python3 -c 'import base64, uuid; print(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))')
  "$JAVA" -Dlog4j2.configurationFile="$ROOT/scripts/kafka/tools-log4j2.yaml" -cp "$LIBS/*" \
    kafka.tools.StorageTool format -t "$cluster_id" -c "$DIR/server.properties" > "$DIR/format.log" 2>&1 \
    || { cat "$DIR/format.log" >&2; exit 1; }
fi

# setsid + no inherited descriptors: the broker outlives this script and never holds the
# caller's pipes open.
: > "$DIR/kafka.log"
setsid "$JAVA" -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
  -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.yaml" -cp "$LIBS/*" \
  kafka.Kafka "$DIR/server.properties" < /dev/null >> "$DIR/kafka.log" 2>&1 &
pid=$!
echo "$pid" > "$DIR/kafka.pid"

if [ -n "${KAFKA_WATCH_PID:-}" ]; then
  watch=$KAFKA_WATCH_PID
  setsid bash -c "while kill -0 $watch 2>/dev/null && kill -0 $pid 2>/dev/null; do sleep 1; done; kill -9 $pid 2>/dev/null" \
    < /dev/null > /dev/null 2>&1 &
fi

for _ in $(seq 1 600); do
  if grep -q "Kafka Server started" "$DIR/kafka.log" 2>/dev/null \
      && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    break
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "kafka exited during start-up; the end of $DIR/kafka.log:" >&2
    tail -n 40 "$DIR/kafka.log" >&2
    exit 1
  fi
  sleep 0.1
done
if ! grep -q "Kafka Server started" "$DIR/kafka.log"; then
  echo "kafka did not start within 60s; the end of $DIR/kafka.log:" >&2
  tail -n 40 "$DIR/kafka.log" >&2
  kill "$pid" 2>/dev/null || true
  exit 1
fi

if [ -n "${MAPPER:-}" ]; then
  "$MAPPER" topics apply --brokers "127.0.0.1:$PORT" --dir "$ROOT/topics" --replication-factor 1 >/dev/null
fi
echo "kafka ready on 127.0.0.1:$PORT (pid $pid, dir $DIR) in $((SECONDS - t0))s"
