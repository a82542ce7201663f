#!/usr/bin/env bash
# The merge engine's checks on a machine with one NVIDIA GPU, from a built binary (no compiler
# needed there), in under 5 minutes on an H200:
#
#   1. `check-device`: the CUDA kernels against the host engine, every method, f32/bf16/f16,
#      several shapes (must be bit-identical);
#   2. `bench merge` on the device: every method's candidate throughput next to a device copy of
#      the same bytes, 508 MB f32 and 1.08 GB bf16 models with 4 experts;
#   3. a 7B-shaped model (Llama-2 7B's shapes, bf16) with 3 experts: seconds per candidate for
#      task_arithmetic and ties, and peak device memory;
#   4. `mergesearch merge --device` of a 1.08 GB bf16 4-expert config, next to `mergekit-yaml
#      --cuda` when MERGEKIT names one (benches/compare-mergekit.sh).
#
#   bash benches/gpu-check.sh BINARY [DEVICE]
#
# BINARY is built with `cargo build --release --features cuda` (a .gz is unpacked first); DEVICE
# defaults to cuda:0. burn and cubecl compile their kernels through NVRTC, found under
# /usr/local/cuda/lib64.
set -uo pipefail
cd "$(dirname "$0")/.."
bin=${1:?usage: gpu-check.sh BINARY [DEVICE]}
device=${2:-cuda:0}
if [[ "$bin" == *.gz ]]; then
  unpacked=$(mktemp)
  gunzip -c "$bin" > "$unpacked" && chmod +x "$unpacked"
  bin=$unpacked
fi
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
status=0
step() {
  echo
  echo "== $1"
  shift
  local start=$SECONDS
  "$@" || { echo "FAILED (exit $?): $*"; status=1; }
  echo "   ($((SECONDS - start)) s)"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
step "CUDA kernels vs the host engine" "$bin" check-device --device "$device"
step "candidates, 508 MB f32, 4 experts" \
  "$bin" bench merge --device "$device" --mb 508 --dtype f32 --reps 5
step "candidates, 1.08 GB bf16 Llama, 4 experts" \
  "$bin" bench merge --device "$device" --layers 8 --hidden 2048 --intermediate 5632 \
  --vocab 32000 --dtype bf16 --reps 5
step "candidates, 7B-shaped bf16, 3 experts" \
  "$bin" bench merge --device "$device" --layers 32 --hidden 4096 --intermediate 11008 \
  --vocab 32000 --dtype bf16 --experts 3 --methods task_arithmetic,ties --reps 3
step "streaming merge, 1.08 GB bf16, 4 experts" bash benches/compare-mergekit.sh "$bin" "$device"
exit $status
