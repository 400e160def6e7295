#!/usr/bin/env bash
# The model path's quality test on the real small model (SmolLM2-135M-Instruct + the committed
# adapter): a release build, because the debug test build's unoptimised dependencies make one
# answer take minutes. Not part of scripts/test.sh (CI): the release build alone is ~25 min on
# a 2-core machine. Usage: scripts/quality.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-small-model.sh
t0=$SECONDS
cargo test --release --locked --test model "$@" -- --ignored --nocapture
printf 'quality test: %ss\n' $((SECONDS - t0))
