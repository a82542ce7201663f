#!/usr/bin/env bash
# `mergesearch merge` next to `mergekit-yaml` on the same machine, the same models and the same
# merge: a 1.08 GB bf16 Llama-shaped base (8 blocks, width 2048, MLP 5632, vocabulary 32000) and 4
# experts, merged with task_arithmetic and with TIES (density 0.2). Prints each tool's wall time
# and peak resident set size, and how closely the two merged models agree.
#
#   bash benches/compare-mergekit.sh [BINARY] [DEVICE] [SCRATCH]
#
# BINARY defaults to target/release/mergesearch (`cargo build --release`), DEVICE to cpu (or
# cuda:0: then mergekit runs with --cuda), SCRATCH to a fresh temp folder (6.5 GB; removed at the
# end). mergekit is optional and never installed by the project: set MERGEKIT to its
# `mergekit-yaml` (e.g. from a scratch virtual environment: `pip install mergekit`); without it
# only mergesearch runs. The agreement check needs python3 with torch and safetensors (the
# Python of MERGEKIT's environment is used when there is one). Needs GNU time (/usr/bin/time).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/mergesearch}
device=${2:-cpu}
scratch=${3:-$(mktemp -d)}
trap 'rm -rf "$scratch"' EXIT
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (/usr/bin/time)" >&2; exit 1; }
mergekit=${MERGEKIT:-$(command -v mergekit-yaml || true)}
python=python3
[ -n "$mergekit" ] && [ -x "$(dirname "$mergekit")/python3" ] && python="$(dirname "$mergekit")/python3"
cuda_flag=()
[ "$device" != cpu ] && cuda_flag=(--cuda)

shape=(--layers 8 --hidden 2048 --intermediate 5632 --vocab 32000 --dtype bf16)
"$bin" synth --out "$scratch/base" "${shape[@]}"
for e in 0 1 2 3; do
  "$bin" synth --out "$scratch/expert$e" --expert "$e" "${shape[@]}"
done
echo "models: $(du -sh "$scratch/base" | cut -f1) each, a base and 4 experts; device $device; $(nproc) cores"

for method in task_arithmetic ties; do
  # mergesearch's config.
  {
    echo "method = \"$method\""
    echo "base = \"base\""
    echo "[params]"
    echo "lambda = 1.0"
    for e in 0 1 2 3; do
      echo "[[experts]]"
      echo "path = \"expert$e\""
      echo "weight = 0.25"
      [ "$method" = ties ] && echo "density = 0.2"
    done
  } > "$scratch/$method.toml"
  # The same merge for mergekit, computed in f32 (as mergesearch does) and written as bf16.
  {
    echo "merge_method: $method"
    echo "base_model: $scratch/base"
    echo "dtype: float32"
    echo "out_dtype: bfloat16"
    echo "parameters: {lambda: 1.0}"
    echo "models:"
    for e in 0 1 2 3; do
      echo "  - model: $scratch/expert$e"
      if [ "$method" = ties ]; then
        echo "    parameters: {weight: 0.25, density: 0.2}"
      else
        echo "    parameters: {weight: 0.25}"
      fi
    done
  } > "$scratch/$method.yml"

  sync
  /usr/bin/time -f "$method  mergesearch   %e s  peak RSS %M KB" \
    "$bin" merge "$scratch/$method.toml" --out "$scratch/ours-$method" --device "$device" \
    2>&1 >/dev/null | grep "peak RSS"
  if [ -n "$mergekit" ]; then
    sync
    /usr/bin/time -f "$method  mergekit-yaml %e s  peak RSS %M KB" \
      "$mergekit" "$scratch/$method.yml" "$scratch/theirs-$method" --no-copy-tokenizer \
      "${cuda_flag[@]}" 2>&1 >/dev/null | grep "peak RSS"
    "$python" benches/reference/agreement.py "$scratch/ours-$method" "$scratch/theirs-$method" \
      || echo "$method  agreement check failed (python3 with torch and safetensors?)"
    rm -rf "$scratch/theirs-$method"
  fi
  rm -rf "$scratch/ours-$method"
done
