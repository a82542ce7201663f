#!/usr/bin/env bash
# Layer-wise AdaMerging on a CLIP ViT-B/32 vision tower (88M parameters, transformers' default
# CLIPVisionConfig, random weights; two experts, two tasks of 16 unlabeled 224x224 images), by
# `mergesearch adamerge` and by the same step in PyTorch (benches/reference/clip_adamerging.py),
# on the same files and machine, one after the other:
#
#   bash benches/vision_step.sh [BINARY] [STEPS] [DEVICE]
#
# BINARY defaults to target/release/mergesearch, STEPS to 4, DEVICE to cpu. Needs python3 (or
# PYTHON) with torch, transformers, safetensors and pillow. Prints ms per step of each (after
# the first step); both use THREADS threads (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/mergesearch}")
steps=${2:-4}
device=${3:-cpu}
python=${PYTHON:-python3}
export THREADS=${THREADS:-2} RAYON_NUM_THREADS=${THREADS:-2}
work=$(mktemp -d -p "${TMPDIR:-/tmp}")
trap 'rm -rf "$work"' EXIT
"$python" benches/reference/clip_adamerging.py make "$work" 2>/dev/null
"$bin" adamerge "$work/space.toml" --granularity layer --steps "$steps" --batch 16 \
  --device "$device" --out "$work/run" | grep "ms per step" | sed 's/; run in.*//; s/^/mergesearch: /'
"$python" benches/reference/clip_adamerging.py step "$work" --steps "$steps" 2>/dev/null
