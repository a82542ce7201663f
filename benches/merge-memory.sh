#!/usr/bin/env bash
# Peak memory and time of `mergesearch merge` on a 1.07 GB bf16 model with 4 experts (the README's
# "Memory" figures): writes the models to a scratch folder (5.4 GB; removed at the end), merges
# them with task arithmetic and with TIES under GNU time, and prints each merge's seconds and
# peak resident set size.
#
#   bash benches/merge-memory.sh [BINARY] [SCRATCH]
#
# BINARY defaults to target/release/mergesearch (built with `cargo build --release`), SCRATCH to
# a fresh folder under the system's temp dir.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/mergesearch}
scratch=${2:-$(mktemp -d)}
trap 'rm -rf "$scratch"' EXIT
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "needs GNU time (/usr/bin/time)" >&2; exit 1; }

# 16 blocks of width 2048 and a 32000-row embedding and head: 533M parameters, 1.07 GB in bf16.
shape=(--layers 16 --hidden 2048 --vocab 32000 --dtype bf16)
"$bin" synth --out "$scratch/base" "${shape[@]}"
for e in 0 1 2 3; do
  "$bin" synth --out "$scratch/expert$e" --expert "$e" "${shape[@]}"
done
for method in task_arithmetic ties; do
  {
    echo "method = \"$method\""
    echo "base = \"base\""
    echo "granularity = \"layer\""
    echo "[params]"
    echo "lambda = 1.0"
    for e in 0 1 2 3; do
      echo "[[experts]]"
      echo "path = \"expert$e\""
      echo "weight = 0.25"
      [ "$method" = ties ] && echo "density = 0.2"
    done
  } > "$scratch/$method.toml"
  /usr/bin/time -f "$method: %e s, peak RSS %M KB" \
    "$bin" merge "$scratch/$method.toml" --out "$scratch/merged-$method" 2>&1 | grep "peak RSS"
  rm -rf "$scratch/merged-$method"
done
