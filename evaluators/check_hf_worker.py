#!/usr/bin/env python3
"""End-to-end self-check of evaluators/hf_worker.py and evaluators/inplace_weights.py.

    python3 evaluators/check_hf_worker.py [--keep DIR] [--device cpu|cuda]

Builds tiny Llama models in a temporary directory (hidden size 64, 2 layers, vocabulary 256):
a float32 base with tied embeddings, two perturbed candidates (one of them sharded), broken
candidates (an unknown tensor name, a mis-shaped tensor), and a bfloat16 base and candidate
with an untied lm_head. It then runs hf_worker.py as a worker subprocess, sends it requests
over stdin, and checks that

* the perplexity differs between candidates and equals what a fresh from_pretrained of the
  same candidate gives (also in-process: the logits after load_in_place against a fresh load);
* a broken candidate gets an {"error"} reply naming the tensor, and the next request works;
* "items" limits the scored windows; "loads" stays 1; the worker exits 0 at end of input;
* command mode (--model-dir) agrees with worker mode; --text tokenizes with the base's
  tokenizer; bad arguments fail with clear messages.

Prints the measured differences and timings, then "ok". Exits 0 with a "skip:" line when
torch, transformers or safetensors cannot be imported.
"""

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "hf_worker.py")
SEQ_LEN = 32
WINDOWS = 8
VOCAB = 256


def say(message):
    print(message, flush=True)


def digest(path):
    import hashlib

    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check(condition, message):
    if not condition:
        raise AssertionError(message)


# ---------------------------------------------------------------------------------------------
# Tiny models


def tiny_config(tied, dtype):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        tie_word_embeddings=tied, bos_token_id=1, eos_token_id=2, pad_token_id=0,
        dtype=dtype,
    )


def make_model(torch, path, tied, dtype, seed, base=None, scale=0.0, shard=None):
    """A tiny Llama saved in path: random (seed), or base's weights plus noise of size scale."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(tied, str(dtype).replace("torch.", "")))
    if base is not None:
        model.load_state_dict(base.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            if base is None:
                p.normal_(0.0, 0.2)  # larger than the default init: scores that differ
            else:
                p.add_(torch.randn_like(p) * scale)
    model = model.to(dtype)
    kwargs = {"max_shard_size": shard} if shard else {}
    model.save_pretrained(path, safe_serialization=True, **kwargs)
    return model


def rewrite_checkpoint(torch, src, dst, change):
    """Copies model dir src to dst, with change(dict of tensors) applied to model.safetensors."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(os.path.join(dst, "model.safetensors"))
    change(tensors)
    save_file(tensors, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})


def save_word_tokenizer(path, special_tokens=False):
    """A word-level tokenizer over 255 words + [UNK] (256 ids), saved in path; with
    special_tokens, w1 and w2 are also its BOS and EOS (the tiny config's ids 1 and 2), which
    lm_eval needs."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0}
    for i in range(1, VOCAB):
        vocab[f"w{i}"] = i
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"bos_token": "w1", "eos_token": "w2", "pad_token": "[UNK]"} if special_tokens else {}
    PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", **special).save_pretrained(path)


# ---------------------------------------------------------------------------------------------
# Reference scores


def reference(torch, model_dir, ids, dtype="auto", windows=WINDOWS):
    """(mean loss, seconds of from_pretrained, logits) of a fresh from_pretrained of model_dir."""
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM

    started = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype if dtype == "auto" else getattr(torch, dtype))
    model.eval()
    seconds = time.monotonic() - started
    batch = torch.tensor(ids[: windows * SEQ_LEN]).view(windows, SEQ_LEN)
    with torch.no_grad():
        logits = model(input_ids=batch).logits
    losses = [F.cross_entropy(logits[i, :-1].float(), batch[i, 1:]).item() for i in range(windows)]
    return sum(losses) / windows, seconds, logits


class Worker:
    def __init__(self, argv):
        self.proc = subprocess.Popen(
            [sys.executable, WORKER] + argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.trial = 0

    def ask(self, model_dir, items=None):
        self.trial += 1
        request = {"trial_id": self.trial, "seed": 7, "params": {"x": 0.5},
                   "model_dir": model_dir, "items": items}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker exited: {self.proc.wait()}\n{self.proc.stderr.read()}")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        rest = self.proc.stdout.read()
        code = self.proc.wait(timeout=60)
        stderr = self.proc.stderr.read()
        check(rest == "", f"worker printed more than replies: {rest!r}")
        check(code == 0, f"worker exited with {code}:\n{stderr}")
        return stderr


def run_once(argv):
    proc = subprocess.run([sys.executable, WORKER] + argv, capture_output=True, text=True,
                          timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def scores_of(reply, what):
    check("scores" in reply, f"{what}: expected scores, got {reply}")
    return reply["scores"]


# ---------------------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", metavar="DIR", help="build the models in DIR and keep them")
    parser.add_argument("--device", default="cpu", help="device for the worker (default cpu)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import safetensors  # noqa: F401
        import torch
        import transformers
    except ImportError as e:
        say(f"skip: torch, transformers and safetensors are needed ({e})")
        return 0
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    say(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"device {args.device}")
    sys.path.insert(0, HERE)
    import inplace_weights

    root = args.keep or tempfile.mkdtemp(prefix="check_hf_worker.")
    os.makedirs(root, exist_ok=True)
    try:
        run_checks(torch, inplace_weights, root, args.device)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    say("ok")
    return 0


def run_checks(torch, inplace_weights, root, device):
    d = lambda name: os.path.join(root, name)  # noqa: E731
    dev = ["--device", device]

    # Models: a tied float32 base, two candidates (B sharded), broken copies; bf16 untied pair.
    base = make_model(torch, d("base"), tied=True, dtype=torch.float32, seed=1)
    save_word_tokenizer(d("base"))
    make_model(torch, d("cand_a"), True, torch.float32, 2, base=base, scale=0.05)
    make_model(torch, d("cand_b"), True, torch.float32, 3, base=base, scale=0.1, shard="100KB")
    check(os.path.isfile(d("cand_b/model.safetensors.index.json")), "cand_b is not sharded")
    from safetensors import safe_open

    with safe_open(d("cand_a/model.safetensors"), "pt") as f:
        names = set(f.keys())
    check("lm_head.weight" not in names, "the tied checkpoint holds lm_head.weight")

    def rename(t):
        t["model.layers.0.mlp.not_a_weight"] = t.pop("model.layers.0.mlp.up_proj.weight")

    def reshape(t):
        t["model.norm.weight"] = torch.ones(65)

    def drop(t):
        del t["model.layers.1.input_layernorm.weight"]

    def tied_copy(t):  # both names of the tied tensor, equal: accepted
        t["lm_head.weight"] = t["model.embed_tokens.weight"].clone()

    def tied_differ(t):  # both names, different values: from_pretrained would untie them
        t["lm_head.weight"] = t["model.embed_tokens.weight"] + 1.0

    rewrite_checkpoint(torch, d("cand_a"), d("tied_both"), tied_copy)
    rewrite_checkpoint(torch, d("cand_a"), d("tied_differ"), tied_differ)
    rewrite_checkpoint(torch, d("cand_a"), d("bad_name"), rename)
    rewrite_checkpoint(torch, d("cand_a"), d("bad_shape"), reshape)
    rewrite_checkpoint(torch, d("cand_a"), d("bad_missing"), drop)
    bf_base = make_model(torch, d("bf_base"), tied=False, dtype=torch.bfloat16, seed=4)
    make_model(torch, d("bf_cand"), False, torch.bfloat16, 5, base=bf_base, scale=0.05)

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (WINDOWS * SEQ_LEN + 5,), generator=gen).tolist()
    with open(d("tokens.txt"), "w") as f:
        for i in range(0, len(ids), 20):
            f.write(" ".join(map(str, ids[i:i + 20])) + "\n")

    # In process: the logits after load_in_place equal a fresh from_pretrained's.
    from transformers import AutoModelForCausalLM

    base_digest = digest(d("base/model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(d("base")).eval()
    batch = torch.tensor(ids[:2 * SEQ_LEN]).view(2, SEQ_LEN)
    logit_diffs = []
    for cand in ("cand_a", "cand_b", "cand_a"):
        n, seconds = inplace_weights.load_in_place(model, d(cand))
        fresh = AutoModelForCausalLM.from_pretrained(d(cand)).eval()
        with torch.no_grad():
            diff = (model(input_ids=batch).logits - fresh(input_ids=batch).logits).abs().max().item()
        logit_diffs.append(diff)
        check(diff <= 1e-5, f"{cand}: logits differ from a fresh load by {diff}")
    del fresh
    gc.collect()  # the fresh models mapped the candidates' files; load_in_place must not
    inplace_weights.load_in_place(model, d("cand_b"))
    if os.path.isfile("/proc/self/maps"):
        with open("/proc/self/maps") as f:
            maps = f.read()
        check(d("cand_") not in maps, "a candidate file is still mapped after load_in_place")
    check(model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
          "the tie between lm_head and embed_tokens was broken")
    before = model.model.norm.weight.clone()
    try:
        inplace_weights.load_in_place(model, d("bad_shape"))
        raise AssertionError("bad_shape was accepted")
    except inplace_weights.WeightLoadError as e:
        check("model.norm.weight" in str(e), f"error does not name the tensor: {e}")
    check(torch.equal(before, model.model.norm.weight), "a rejected candidate changed the model")
    say(f"in-process: max |logits(in place) - logits(from_pretrained)| = {max(logit_diffs):.3g} "
        f"over {len(logit_diffs)} loads ({n} tensors)")
    del model

    # The worker, float32.
    ref_a, fresh_a_s, _ = reference(torch, d("cand_a"), ids)
    ref_b, fresh_b_s, _ = reference(torch, d("cand_b"), ids)
    ref_b3, _, _ = reference(torch, d("cand_b"), ids, windows=3)
    w = Worker(["--base", d("base"), "--tokens", d("tokens.txt"), "--seq-len", str(SEQ_LEN),
                "--batch-size", "3"] + dev)
    a = scores_of(w.ask(d("cand_a")), "cand_a")
    b = scores_of(w.ask(d("cand_b")), "cand_b")
    errors = {}
    for bad, tensor in (("bad_name", "model.layers.0.mlp.not_a_weight"),
                        ("bad_shape", "model.norm.weight"),
                        ("bad_missing", "model.layers.1.input_layernorm.weight")):
        reply = w.ask(d(bad))
        check("error" in reply and tensor in reply["error"],
              f"{bad}: expected an error naming {tensor}, got {reply}")
        errors[bad] = reply["error"]
    missing_dir = w.ask(d("no_such_dir"))
    check("error" in missing_dir, f"a missing model_dir was accepted: {missing_dir}")
    a2 = scores_of(w.ask(d("cand_a")), "cand_a again")
    both = scores_of(w.ask(d("tied_both")), "tied_both")
    differ = w.ask(d("tied_differ"))
    check("error" in differ and "lm_head.weight" in differ["error"], f"tied_differ: {differ}")
    after_differ = scores_of(w.ask(d("cand_a")), "cand_a after tied_differ")
    check(after_differ["loss"] == a["loss"], "a refused tied_differ changed the model")
    errors["tied_differ"] = differ["error"]
    b3 = w.ask(d("cand_b"), items=3)
    bad_items = w.ask(d("cand_b"), items=0)
    check("error" in bad_items, f"items=0 was accepted: {bad_items}")
    log = w.close()
    check(b3["scores"]["windows"] == 3 and b3["scores"]["tokens"] == 3 * (SEQ_LEN - 1),
          f"items=3 scored {b3['scores']}")
    check(a["windows"] == WINDOWS and a["tokens"] == WINDOWS * (SEQ_LEN - 1), f"windows: {a}")
    check(abs(a["perplexity"] - b["perplexity"]) > 1e-3, f"same perplexity for A and B: {a} {b}")
    check(a2["loss"] == a["loss"], f"cand_a scored {a['loss']} then {a2['loss']}")
    check(both["loss"] == a["loss"], f"tied_both scored {both['loss']}, cand_a {a['loss']}")
    diffs = [abs(a["loss"] - ref_a), abs(b["loss"] - ref_b), abs(b3["scores"]["loss"] - ref_b3)]
    check(max(diffs) < 1e-5, f"worker losses differ from from_pretrained by {diffs}")
    check(abs(a["perplexity"] - math.exp(a["loss"])) < 1e-9 * a["perplexity"], "perplexity")
    check(all(s["loads"] == 1 for s in (a, b, a2, b3["scores"])), "the base was loaded again")
    check("loss" in b3.get("stderr", {}) and b3["stderr"]["loss"] > 0, f"stderr: {b3}")
    check("stdin closed" in log, "the worker did not log its exit")
    say(f"worker f32: perplexity A {a['perplexity']:.4f}, B {b['perplexity']:.4f}, "
        f"B items=3 {b3['scores']['perplexity']:.4f}; "
        f"max |loss(worker) - loss(from_pretrained)| = {max(diffs):.3g}")
    say(f"worker f32: in-place load {a['load_seconds'] * 1000:.1f} ms (A), "
        f"{b['load_seconds'] * 1000:.1f} ms (B, 2+ shards) vs from_pretrained "
        f"{fresh_a_s * 1000:.1f} ms (A), {fresh_b_s * 1000:.1f} ms (B)")
    for bad, message in errors.items():
        say(f"  {bad}: {message[:150]}")

    # Command mode agrees with worker mode.
    code, out, err = run_once(["--model-dir", d("cand_a"), "--tokens", d("tokens.txt"),
                               "--seq-len", str(SEQ_LEN), "--seed", "3", "--items", ""] + dev)
    check(code == 0, f"command mode exited {code}:\n{err}")
    lines = out.splitlines()
    check(len(lines) == 1, f"command mode printed {lines}")
    c = json.loads(lines[0])["scores"]
    check(abs(c["loss"] - a["loss"]) < 1e-5, f"command {c['loss']} vs worker {a['loss']}")
    say(f"command mode: loss diff vs worker {abs(c['loss'] - a['loss']):.3g}, "
        f"from_pretrained {c['load_seconds'] * 1000:.1f} ms")

    # bfloat16, untied lm_head.
    ref_bf, fresh_bf_s, _ = reference(torch, d("bf_cand"), ids)
    w = Worker(["--base", d("bf_base"), "--tokens", d("tokens.txt"), "--seq-len", str(SEQ_LEN)] + dev)
    bf0 = scores_of(w.ask(d("bf_base")), "bf_base")
    bf1 = scores_of(w.ask(d("bf_cand")), "bf_cand")
    w.close()
    check(abs(bf0["loss"] - bf1["loss"]) > 1e-4, "bf16: same loss for base and candidate")
    check(abs(bf1["loss"] - ref_bf) < 1e-5, f"bf16: worker {bf1['loss']} vs fresh {ref_bf}")
    say(f"worker bf16: perplexity base {bf0['perplexity']:.4f}, candidate {bf1['perplexity']:.4f}; "
        f"|loss diff| vs from_pretrained {abs(bf1['loss'] - ref_bf):.3g}; in-place load "
        f"{bf1['load_seconds'] * 1000:.1f} ms vs from_pretrained {fresh_bf_s * 1000:.1f} ms")
    # A float32 worker reading a bf16 candidate converts it (as from_pretrained(dtype=float32)).
    ref_bf32, _, _ = reference(torch, d("bf_cand"), ids, dtype="float32")
    w = Worker(["--base", d("bf_base"), "--tokens", d("tokens.txt"), "--seq-len", str(SEQ_LEN),
                "--dtype", "float32"] + dev)
    bf32 = scores_of(w.ask(d("bf_cand")), "bf_cand as float32")
    w.close()
    check(abs(bf32["loss"] - ref_bf32) < 1e-5, f"--dtype float32: {bf32['loss']} vs {ref_bf32}")

    # --text with the base's tokenizer.
    words = [f"w{i % (VOCAB - 1) + 1}" for i in ids]
    with open(d("corpus.txt"), "w") as f:
        f.write(" ".join(words) + "\n")
    w = Worker(["--base", d("base"), "--text", d("corpus.txt"), "--seq-len", str(SEQ_LEN),
                "--max-sequences", "4"] + dev)
    t = scores_of(w.ask(d("cand_a")), "text")
    w.close()
    check(t["windows"] == 4, f"--max-sequences 4 scored {t}")
    text_ids = [i % (VOCAB - 1) + 1 for i in ids]
    ref_t, _, _ = reference(torch, d("cand_a"), text_ids, windows=4)
    check(abs(t["loss"] - ref_t) < 1e-5, f"--text: {t['loss']} vs {ref_t}")
    say(f"--text: 4 windows, loss diff vs from_pretrained {abs(t['loss'] - ref_t):.3g}")

    # Argument validation.
    with open(d("big_ids.txt"), "w") as f:
        f.write("1 2 3\n4 300 5\n")
    cases = [
        (["--base", d("base"), "--tokens", d("tokens.txt"), "--seq-len", "1"], "--seq-len must be >= 2"),
        (["--base", d("base"), "--tokens", d("nope.txt")], "file not found"),
        (["--base", d("nope"), "--tokens", d("tokens.txt")], "no such directory"),
        (["--base", d("bf_base"), "--text", d("corpus.txt")], "has none"),
        (["--base", d("base"), "--tokens", d("big_ids.txt"), "--seq-len", "2"], "token id 300"),
        (["--tokens", d("tokens.txt")], "--base DIR"),
    ]
    for argv, expected in cases:
        code, out, err = run_once(argv + dev)
        check(code == 2 and expected in err, f"{argv}: expected exit 2 and {expected!r}, got "
              f"{code}:\n{err[-800:]}")
        if "token id 300" in expected:
            check("big_ids.txt" in err, f"the error does not name the file: {err[-400:]}")
            check(json.loads(out.splitlines()[-1])["error"], "no error reply")
    say(f"argument validation: {len(cases)} cases refused with clear messages")
    # On the CPU, from_pretrained maps the base's file copy-on-write: in-place loads must never
    # write through to it.
    check(digest(d("base/model.safetensors")) == base_digest, "the base's checkpoint changed")


if __name__ == "__main__":
    sys.exit(main())
