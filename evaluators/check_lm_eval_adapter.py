#!/usr/bin/env python3
"""End-to-end check of evaluators/lm_eval_adapter.py against the real lm-evaluation-harness.

    python3 evaluators/check_lm_eval_adapter.py [--keep DIR]

Builds, in a temporary directory, a tiny Llama base with a word-level tokenizer, two perturbed
candidates of it, and a local multiple-choice task (task YAML + JSON lines, so nothing is
downloaded). It then checks that

* command mode (a new model per candidate) gives each candidate its own score;
* a resident worker (--worker --resident --base: the model created once, each candidate's
  tensors copied in place) gives every candidate exactly the command mode's score and standard
  error, in any order, the base included, with one model load in all;
* a plain worker (--worker) agrees as well.

Prints the scores and timings, then "ok". Exits 0 with a "skip:" line when torch,
transformers or lm_eval cannot be imported. Not run in CI (it needs lm_eval: pip install
"lm-eval[hf]").
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ADAPTER = os.path.join(HERE, "lm_eval_adapter.py")
sys.path.insert(0, HERE)

TASK = "mergesearch_tiny_mc"
DOCS = 40


def write_task(root):
    """A 4-way multiple-choice task over the tokenizer's words, as lm_eval task YAML + JSONL."""
    rng = random.Random(5)
    data = os.path.join(root, "tiny_mc.jsonl")
    with open(data, "w") as f:
        for _ in range(DOCS):
            words = [f"w{rng.randrange(1, 255)}" for _ in range(6)]
            choices = [f"w{rng.randrange(1, 255)} w{rng.randrange(1, 255)}" for _ in range(4)]
            f.write(json.dumps({"question": " ".join(words), "choices": choices,
                                "answer": rng.randrange(4)}) + "\n")
    tasks = os.path.join(root, "tasks")
    os.makedirs(tasks)
    with open(os.path.join(tasks, f"{TASK}.yaml"), "w") as f:
        f.write(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
""")
    return tasks


def common_args(tasks):
    return ["--tasks", TASK, "--include-path", tasks, "--device", "cpu", "--batch-size", "4",
            "--dtype", "float32", "--seed", "3", "--bootstrap-iters", "0"]


def command_mode(model_dir, tasks):
    out = subprocess.run([sys.executable, ADAPTER, "--model-dir", model_dir] + common_args(tasks),
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise AssertionError(f"command mode on {model_dir}: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker_mode(extra, model_dirs, tasks):
    proc = subprocess.Popen([sys.executable, ADAPTER, "--worker"] + extra + common_args(tasks),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    replies = []
    for i, d in enumerate(model_dirs):
        proc.stdin.write(json.dumps({"trial_id": i, "seed": 3, "params": {}, "model_dir": d}) + "\n")
        proc.stdin.flush()
        replies.append(json.loads(proc.stdout.readline()))
    proc.stdin.close()
    stderr = proc.stderr.read()
    if proc.wait() != 0:
        raise AssertionError(f"worker {extra}: exit {proc.returncode}: {stderr[-2000:]}")
    for r in replies:
        if "error" in r:
            raise AssertionError(f"worker {extra}: {r['error']}\n{stderr[-2000:]}")
    return replies, stderr


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--keep", metavar="DIR", help="build in DIR and keep it")
    args = parser.parse_args()
    try:
        import torch
        import lm_eval  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as e:
        print(f"skip: {e}")
        return 0
    from check_hf_worker import make_model, save_word_tokenizer

    root = args.keep or tempfile.mkdtemp(prefix="check-lm-eval-")
    os.makedirs(root, exist_ok=True)
    tasks = write_task(root)
    base = make_model(torch, os.path.join(root, "base"), True, torch.float32, 1)
    save_word_tokenizer(os.path.join(root, "base"), special_tokens=True)
    dirs = [os.path.join(root, "base")]
    for i, scale in enumerate((0.3, 0.6)):
        d = os.path.join(root, f"candidate{i}")
        make_model(torch, d, True, torch.float32, 10 + i, base=base, scale=scale)
        save_word_tokenizer(d, special_tokens=True)
        dirs.append(d)

    started = time.monotonic()
    expected = [command_mode(d, tasks) for d in dirs]
    command_seconds = (time.monotonic() - started) / len(dirs)
    values = [e["scores"][TASK] for e in expected]
    print(f"command mode: {TASK} acc {values} ({command_seconds:.1f} s per candidate)")
    assert len(set(values)) > 1, f"the candidates should score differently: {values}"

    order = [1, 2, 0, 2, 1]  # candidates, the base after them, and back: in place each time
    started = time.monotonic()
    resident, log = worker_mode(["--resident", "--base", dirs[0]], [dirs[i] for i in order], tasks)
    resident_seconds = (time.monotonic() - started) / len(order)
    for i, reply in zip(order, resident):
        want = expected[i]
        assert reply["scores"][TASK] == want["scores"][TASK], (i, reply, want)
        assert reply.get("stderr", {}).get(TASK) == want.get("stderr", {}).get(TASK), (i, reply, want)
    assert "resident model ready" in log, log[-2000:]
    print(f"resident worker: {[r['scores'][TASK] for r in resident]} for candidates {order}, "
          f"equal to command mode ({resident_seconds:.1f} s per request, model created once)")

    plain, _ = worker_mode([], dirs, tasks)
    for want, reply in zip(expected, plain):
        assert reply["scores"][TASK] == want["scores"][TASK], (reply, want)
    print("plain worker: equal to command mode")
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
