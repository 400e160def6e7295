#!/usr/bin/env bash
# End-to-end smoke run of the training pipeline on a CPU, on the tiny random model:
# dataset build -> tiny model -> LoRA training -> evaluation -> PEFT adapter,
# hub-cache entry and merged model. Proves the plumbing, not the accuracy.
#
#   PYTHON=/path/to/venv/bin/python training/smoke.sh [WORK_DIR] [extra train_lora.py flags]
#
# WORK_DIR defaults to a fresh /tmp directory; nothing is written in the repo.
# Needs the mapper binary (target/debug/mapper or `cargo build` first, or MAPPER=).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-python3}"
mapper="${MAPPER:-$root/target/debug/mapper}"
work="${1:-$(mktemp -d /tmp/mapper-smoke.XXXXXX)}"
shift || true

mkdir -p "$work"
cd "$root"
echo "== work dir $work"

t0=$(date +%s%3N)
"$mapper" dataset build --out "$work/data" >/dev/null
t1=$(date +%s%3N)
"$python" "$here/make_tiny_llama.py" --out "$work/tiny-llama" --dataset "$work/data" --seed 0
t2=$(date +%s%3N)
"$python" "$here/train_lora.py" \
    --base "$work/tiny-llama" --data "$work/data" --out "$work/adapter" \
    --epochs 1 --batch-size 8 --device cpu --threads 1 --seed 0 \
    --hub-cache "$work/hf-hub" --adapter-id local/mapper-lora --revision v0.1.0 \
    --merged-out "$work/merged" "$@"
t3=$(date +%s%3N)

echo "== timings (ms): dataset $((t1 - t0)), tiny model $((t2 - t1)), train+eval $((t3 - t2))"
echo "== tiny model: $(du -sk "$work/tiny-llama" | cut -f1) KiB"
echo "== mistral.rs: HF_HUB_CACHE=$work/hf-hub, base $work/tiny-llama, LoRA id local/mapper-lora"
find "$work/hf-hub" -type f | sort
