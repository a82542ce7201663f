#!/usr/bin/env bash
# Per-trial overhead of handing candidates to a transformers evaluator: everything a trial
# spends besides merging and scoring (writing the candidate, starting a process, loading it).
# The same 1.08 GB bf16 Llama-shaped base (8 blocks, width 2048, MLP 5632, vocabulary 32000) and
# two experts, merged with task_arithmetic, scored by evaluators/hf_worker.py on one 32-token
# window (so that scoring is negligible), three ways:
#
#   command, disk  a new process per trial loading the candidate with from_pretrained, the
#                  candidate written to the run directory (how mergesearch handed over before)
#   command, shm   the same, the candidate written to shared memory (/dev/shm)
#   resident, shm  one worker process holding the base model; each candidate written to
#                  shared memory and its tensors copied into the resident model in place
#
#   bash benches/handoff.sh [BINARY] [TRIALS] [DEVICE]
#
# BINARY defaults to target/release/mergesearch, TRIALS to 6, DEVICE (of the merger and of the
# transformers model) to cpu; with a GPU, cuda:0 (then add --gpus 0 runs). Needs python3 with
# torch, transformers and safetensors (set PYTHON to another interpreter). Prints, per way, the
# median seconds per trial of the merge, the hand-off and reload (evaluator time minus the
# worker's own scoring time), of which the load (from_pretrained, or the in-place copy) and the
# rest (writing the candidate, starting the process, importing torch), the first trial's hand-off
# and reload (a worker's includes loading the base), and the scoring. Run it on an idle machine:
# a compile beside it doubles every number.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/mergesearch}")
trials=${2:-6}
device=${3:-cpu}
python=${PYTHON:-python3}
[ -x "$bin" ] || { echo "no $bin: run cargo build --release first" >&2; exit 1; }
"$python" -c "import torch, transformers, safetensors" || { echo "needs $python with torch, transformers and safetensors" >&2; exit 1; }
work=$(mktemp -d -p "${TMPDIR:-/tmp}")
trap 'rm -rf "$work"' EXIT
torch_device=${device/cuda:*/cuda}
[ "$device" = cpu ] || torch_device=$device

shape=(--layers 8 --hidden 2048 --intermediate 5632 --vocab 32000 --dtype bf16)
"$bin" synth --out "$work/base" "${shape[@]}" >/dev/null
for e in 0 1; do "$bin" synth --out "$work/expert$e" --expert $e "${shape[@]}" >/dev/null; done
"$python" -c "print(' '.join(str(i * 7919 % 32000) for i in range(64)))" > "$work/tokens.txt"
worker=$(realpath evaluators/hf_worker.py)
corpus="\"--tokens\", \"$work/tokens.txt\", \"--seq-len\", \"32\", \"--max-sequences\", \"1\", \"--device\", \"$torch_device\""

space() { # $1: name, $2: the evaluator table
  cat > "$work/$1.toml" <<TOML
name = "$1"
seed = 0
[models]
base = "$work/base"
experts = ["$work/expert0", "$work/expert1"]
[merge]
method = "task_arithmetic"
[[params]]
name = "weight"
scope = "expert"
low = 0.0
high = 1.0
$2
objectives = { perplexity = "minimize" }
timeout_s = 600
[[objectives]]
name = "perplexity"
[budget]
trials = $trials
batch = 1
TOML
}
space command "[[evaluators]]
kind = \"command\"
argv = [\"$python\", \"$worker\", \"--model-dir\", \"{model_dir}\", $corpus]"
space resident "[[evaluators]]
kind = \"worker\"
argv = [\"$python\", \"$worker\", \"--base\", \"$work/base\", $corpus]"

mkdir -p "$work/disk"
run() { # $1: space, $2: run name, then extra flags
  local s=$1 name=$2; shift 2
  "$bin" run "$work/$s.toml" --optimizer random --device "$device" --out "$work/$name" "$@" >/dev/null 2>"$work/$name.log" \
    || { cat "$work/$name.log" >&2; exit 1; }
}
run command command-disk --scratch "$work/disk"
run command command-shm --scratch /dev/shm
run resident resident-shm --scratch /dev/shm

"$python" - "$work" <<'PY'
import json, statistics, sys
work = sys.argv[1]
print(f"{'way':<14}{'merge s':>9}{'hand-off + reload s':>21}{'of which load s':>17}"
      f"{'write, start s':>16}{'first trial s':>15}{'score s':>9}")
for name in ("command-disk", "command-shm", "resident-shm"):
    trials = [json.loads(l) for l in open(f"{work}/{name}/trials.jsonl")]
    latest = {t["id"]: t for t in trials}
    rows = [latest[i] for i in sorted(latest)]
    assert all(t["status"] == "ok" for t in rows), [t.get("error") for t in rows]
    overhead = [t["eval_seconds"] - t["scores"]["score_seconds"]["value"] for t in rows]
    load = [t["scores"]["load_seconds"]["value"] for t in rows]
    rest = [o - l for o, l in zip(overhead, load)]
    merge = statistics.median(t["merge_seconds"] for t in rows)
    score = statistics.median(t["scores"]["score_seconds"]["value"] for t in rows)
    later = lambda xs: statistics.median(xs[1:])
    print(f"{name:<14}{merge:>9.2f}{later(overhead):>21.2f}{later(load):>17.2f}{later(rest):>16.2f}"
          f"{overhead[0]:>15.2f}{score:>9.3f}")
PY
