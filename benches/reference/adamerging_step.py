#!/usr/bin/env python3
"""PyTorch reference for the zoo's AdaMerging step and zoo scoring (optional; never run by CI).

The same computations as mergesearch's `cargo bench --bench zoo_step`, written as a PyTorch user
would write them (eager mode, the FusionBench way: merged weights as a function of the
coefficients, `torch.func.functional_call`-style), on the zoo's real models:

* **AdaMerging step** (layer-wise by default): merge `theta = theta_base + sum_i lambda[g, i] *
  tau_i` for every tensor of group `g`, run the encoder once on `tasks x batch` unlabeled images,
  each task's head on its own rows, the sum over tasks of the mean prediction entropy, backward,
  one Adam step on the coefficients, clamp to [0, 1].
* **Scoring**: the encoder with given weights on `items` images of every task, each task's head,
  and per item: correct, log-probability of the label, entropy, brought to the host.

Usage (torch is not a dependency of mergesearch; install it anywhere, e.g. a venv):

    python benches/reference/adamerging_step.py --zoo results/zoo [--device cuda] [--json]
    python benches/reference/adamerging_step.py --inputs FILE.safetensors   # check agreement

`--inputs` reads the batch, coefficients and labels the Rust bench wrote
(`MERGESEARCH_BENCH_DUMP`), and prints the loss, gradient and scores next to the Rust values
stored in the same file, so both programs are shown to compute the same thing.

Reads safetensors with the standard library and torch only.
"""

import argparse
import json
import math
import re
import struct
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "I64": torch.int64}
BLOCK = re.compile(r"^(.*?(?:^|\.)(?:layers|layer|h|blocks|block))\.(\d+)(?:\.|$)")
EMBEDDING = re.compile(r"(?i)embed|wte|wpe|cls_token|class_token|pos_emb|patch|shared\.weight")
IMAGE_SIZE = 16


def read_safetensors(path):
    """Every tensor of one safetensors file, as float32 (int64 kept), by name."""
    raw = Path(path).read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    body = memoryview(raw)[8 + length :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in DTYPES:
            sys.exit(f"{path}: tensor {name} has dtype {info['dtype']}, which this script does not read")
        start, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[start:end]), dtype=DTYPES[info["dtype"]])
        t = t.reshape(info["shape"])
        out[name] = t if t.dtype == torch.int64 else t.float()
    return out


def model_file(directory):
    path = Path(directory) / "model.safetensors"
    if not path.exists():
        sys.exit(f"{path}: missing (the zoo's models are single files; build it with `mergesearch zoo build`)")
    return path


def layer_groups(names, granularity):
    """Group index of every tensor, as mergesearch's `layer` / `model` granularities find them."""
    if granularity == "task":
        return [0] * len(names), 1
    keys = []
    for name in names:
        m = BLOCK.match(name)
        if m:
            keys.append(("block", m.group(1), int(m.group(2))))
        elif EMBEDDING.search(name):
            keys.append(("embeddings",))
        else:
            keys.append(("head",))
    order = [("embeddings",)] + sorted({k for k in keys if k[0] == "block"}, key=lambda k: (k[1], k[2])) + [("head",)]
    order = [k for k in order if k in keys]
    return [order.index(k) for k in keys], len(order)


class Zoo:
    """The zoo's base, task vectors, heads and encoder shape, on `device`."""

    def __init__(self, zoo, device):
        manifest = json.loads((Path(zoo) / "zoo.json").read_text())
        self.config = manifest["config"]["encoder"]
        if self.config["kind"] != "vit":
            sys.exit(f"{zoo}: encoder kind {self.config['kind']!r}; this reference implements the zoo's ViT only")
        base = read_safetensors(model_file(Path(zoo) / manifest["base"]))
        self.names = list(base.keys())
        self.base = [base[n].to(device) for n in self.names]
        experts = [read_safetensors(model_file(Path(zoo) / t["expert"])) for t in manifest["tasks"]]
        # tau[t]: [experts, numel] for tensor t.
        self.taus = [
            torch.stack([(e[n] - base[n]).reshape(-1) for e in experts]).to(device) for n in self.names
        ]
        heads = read_safetensors(model_file(Path(zoo) / manifest["heads"]))
        self.heads = [
            (heads[f"{t['head']}.weight"].to(device), heads[f"{t['head']}.bias"].to(device))
            for t in manifest["tasks"]
        ]
        self.tasks = [t["name"] for t in manifest["tasks"]]
        self.eval_examples = manifest["config"]["eval_examples"]

    def merged(self, coefficients, groups):
        """Merged tensors by name for coefficients `[groups, experts]`."""
        return {
            n: (b.reshape(-1) + coefficients[g] @ tau).reshape(b.shape)
            for n, b, tau, g in zip(self.names, self.base, self.taus, groups)
        }


def encoder(w, images, config):
    """The zoo's pre-norm ViT: features (the normalized class token) of `images` [batch, 256]."""
    dim, heads, p = config["dim"], config["heads"], config["patch"]
    batch = images.shape[0]
    side = IMAGE_SIZE // p
    x = images.reshape(batch, side, p, side, p).transpose(2, 3).reshape(batch, side * side, p * p)
    pre = "vit.embeddings."
    x = F.linear(x, w[pre + "patch_embeddings.projection.weight"], w[pre + "patch_embeddings.projection.bias"])
    cls = w[pre + "cls_token"].expand(batch, 1, dim)
    x = torch.cat([cls, x], 1) + w[pre + "position_embeddings"]
    tokens = x.shape[1]
    hd = dim // heads
    for i in range(config["depth"]):
        q = f"vit.encoder.layer.{i}."
        lin = lambda h, name: F.linear(h, w[q + name + ".weight"], w[q + name + ".bias"])
        h = F.layer_norm(x, (dim,), w[q + "layernorm_before.weight"], w[q + "layernorm_before.bias"], 1e-5)
        split = lambda t: t.reshape(batch, tokens, heads, hd).transpose(1, 2)
        qq = split(lin(h, "attention.attention.query"))
        kk = split(lin(h, "attention.attention.key"))
        vv = split(lin(h, "attention.attention.value"))
        scores = qq @ kk.transpose(2, 3) / math.sqrt(hd)
        attended = (scores.softmax(3) @ vv).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + lin(attended, "attention.output.dense")
        h = F.layer_norm(x, (dim,), w[q + "layernorm_after.weight"], w[q + "layernorm_after.bias"], 1e-5)
        x = x + lin(F.gelu(lin(h, "intermediate.dense")), "output.dense")
    x = F.layer_norm(x, (dim,), w["vit.layernorm.weight"], w["vit.layernorm.bias"], 1e-5)
    return x[:, 0]


def entropy_loss(zoo, w, images, per_task):
    """Sum over tasks of each task's mean prediction entropy, and the per-task entropies."""
    features = encoder(w, images, zoo.config)
    per = []
    for t, (weight, bias) in enumerate(zoo.heads):
        log_p = F.linear(features[t * per_task : (t + 1) * per_task], weight, bias).log_softmax(1)
        per.append(-(log_p.exp() * log_p).sum(1).mean())
    per = torch.stack(per)
    return per.sum(), per


def score(zoo, w, images, labels, per_task):
    """Per item: correct, log-probability of the label, entropy (on the host)."""
    with torch.inference_mode():
        features = encoder(w, images, zoo.config)
        out = []
        for t, (weight, bias) in enumerate(zoo.heads):
            rows = slice(t * per_task, (t + 1) * per_task)
            log_p = F.linear(features[rows], weight, bias).log_softmax(1)
            y = labels[rows]
            correct = log_p.argmax(1) == y
            picked = log_p.gather(1, y[:, None])[:, 0]
            entropy = -(log_p.exp() * log_p).sum(1)
            out.append((correct, picked, entropy))
        return [(c.cpu(), p.cpu(), e.cpu()) for c, p, e in out]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device, reps, f):
    """Median milliseconds of `reps` calls of `f` after two warm-up calls."""
    f()
    f()
    times = []
    for _ in range(reps):
        sync(device)
        start = time.perf_counter()
        f()
        sync(device)
        times.append(1e3 * (time.perf_counter() - start))
    times.sort()
    return times[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zoo", default="results/zoo", help="the zoo directory (default results/zoo)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--granularity", choices=["layer", "task"], default="layer")
    parser.add_argument("--batch", type=int, default=16, help="unlabeled images per task per step")
    parser.add_argument("--items", type=int, default=100, help="images per task per scoring")
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    parser.add_argument("--inputs", help="a batch written by the Rust bench: check agreement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    zoo = Zoo(args.zoo, device)
    groups, n_groups = layer_groups(zoo.names, args.granularity)
    k = len(zoo.tasks)
    lam = torch.full((n_groups, k), 0.3, device=device, requires_grad=True)
    optimizer = torch.optim.Adam([lam], lr=1e-3)
    pixels = IMAGE_SIZE * IMAGE_SIZE
    step_images = torch.rand(k * args.batch, pixels, device=device)
    score_images = torch.rand(k * args.items, pixels, device=device)
    score_labels = torch.zeros(k * args.items, dtype=torch.int64, device=device)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss, _ = entropy_loss(zoo, zoo.merged(lam, groups), step_images, args.batch)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            lam.clamp_(0.0, 1.0)

    with torch.no_grad():
        fixed = {n: t.detach() for n, t in zoo.merged(lam.detach(), groups).items()}
    result = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "granularity": args.granularity,
        "coefficients": n_groups * k,
        "step_ms": timed(device, args.reps, step),
        "score_ms": timed(device, args.reps, lambda: score(zoo, fixed, score_images, score_labels, args.items)),
        "score_items": k * args.items,
    }
    if args.inputs:
        result["agreement"] = agreement(zoo, args.inputs, device)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


def agreement(zoo, path, device):
    """Loss, gradient and scores on the Rust bench's inputs, and their largest differences."""
    inputs = {n: t.to(device) for n, t in read_safetensors(path).items()}
    lam = inputs["coefficients"].clone().requires_grad_(True)
    n_groups = lam.shape[0]
    groups, found = layer_groups(zoo.names, "layer" if n_groups > 1 else "task")
    if found != n_groups:
        sys.exit(f"{path}: {n_groups} coefficient groups, but the zoo's tensors form {found}")
    per_task = inputs["step_images"].shape[0] // len(zoo.tasks)
    loss, _ = entropy_loss(zoo, zoo.merged(lam, groups), inputs["step_images"], per_task)
    loss.backward()
    items = inputs["score_images"].shape[0] // len(zoo.tasks)
    fixed = {n: t.detach() for n, t in zoo.merged(lam.detach(), groups).items()}
    scored = score(zoo, fixed, inputs["score_images"], inputs["score_labels"].long(), items)
    log_p = torch.cat([p for _, p, _ in scored])
    correct = torch.cat([c for c, _, _ in scored]).float()
    return {
        "loss": loss.item(),
        "loss_rust": inputs["loss"].item(),
        "gradient_max_abs_diff": (lam.grad - inputs["gradient"]).abs().max().item(),
        "gradient_max_abs": lam.grad.abs().max().item(),
        "log_p_max_abs_diff": (log_p - inputs["log_p_true"].cpu()).abs().max().item(),
        "accuracy": correct.mean().item(),
        "accuracy_rust": inputs["correct"].float().mean().item(),
    }


if __name__ == "__main__":
    main()
