#!/usr/bin/env python3
"""A CLIP ViT-B/32 AdaMerging step in PyTorch, next to `mergesearch adamerge` on the same files
(benches/vision_step.sh runs both; optional, never in CI).

    clip_adamerging.py make DIR      a random CLIP ViT-B/32 vision tower with projection
                                     (transformers' default CLIPVisionConfig) as base and two
                                     experts (base + noise), its preprocessor config, two tasks'
                                     zero-shot-style heads [10, 512], 16 random 224x224 PNGs per
                                     task, tasks.toml and space.toml for mergesearch
    clip_adamerging.py step DIR [--steps N] [--batch B]
                                     layer-wise AdaMerging steps as a PyTorch user writes them
                                     (FusionBench-style: merged weights as a function of the
                                     coefficients through torch.func.functional_call, unit
                                     features, logits 100 * cos, summed mean entropies, Adam,
                                     clamp to [0, 1]); prints ms per step (after the first)
"""

import argparse
import os
import re
import sys
import time

import torch

TASKS = ("alpha", "beta")
CLASSES = 10
IMAGES = 16
BLOCK = re.compile(r"encoder\.layers\.(\d+)\.")


def make(root):
    import numpy as np
    from PIL import Image
    from safetensors.torch import save_file
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(projection_dim=512)
    base = CLIPVisionModelWithProjection(config)
    base.save_pretrained(os.path.join(root, "base"))
    processor = CLIPImageProcessor()
    processor.save_pretrained(os.path.join(root, "base"))
    for e in range(2):
        expert = CLIPVisionModelWithProjection(config)
        expert.load_state_dict(base.state_dict())
        with torch.no_grad():
            for p in expert.parameters():
                p.add_(0.01 * torch.randn_like(p))
        expert.save_pretrained(os.path.join(root, f"expert{e}"))
        processor.save_pretrained(os.path.join(root, f"expert{e}"))
    rng = np.random.default_rng(0)
    tasks = []
    for t in TASKS:
        head = torch.nn.functional.normalize(torch.randn(CLASSES, 512), dim=1) * 100.0
        os.makedirs(os.path.join(root, "heads"), exist_ok=True)
        save_file({"weight": head.contiguous()}, os.path.join(root, "heads", f"{t}.safetensors"))
        folder = os.path.join(root, "images", t)
        os.makedirs(folder, exist_ok=True)
        for i in range(IMAGES):
            pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:03}.png"))
        tasks.append(f'[[tasks]]\nname = "{t}"\nhead = "heads/{t}.safetensors"\n'
                     f'test = "images/{t}"\n')
    with open(os.path.join(root, "tasks.toml"), "w") as f:
        f.write("unit_features = true\n" + "\n".join(tasks))
    with open(os.path.join(root, "space.toml"), "w") as f:
        f.write(f"""name = "clip-b32"
seed = 0
[models]
base = "{root}/base"
experts = ["{root}/expert0", "{root}/expert1"]
tasks = "{root}/tasks.toml"
[merge]
method = "task_arithmetic"
granularity = "layer"
[[params]]
name = "weight"
scope = "expert_group"
low = 0.0
high = 1.0
[[evaluators]]
kind = "vision"
benchmark = "{root}/tasks.toml"
split = "test"
metrics = ["entropy"]
[[objectives]]
name = "mean/entropy"
""")


def group_of(name):
    m = BLOCK.search(name)
    if m:
        return 1 + int(m.group(1))
    return 0 if "embeddings" in name or "pre_layrnorm" in name else 13


def step(root, steps, batch):
    from PIL import Image
    from safetensors.torch import load_file
    from torch.func import functional_call
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    model = CLIPVisionModelWithProjection.from_pretrained(os.path.join(root, "base")).eval()
    base = {k: v.detach() for k, v in model.named_parameters()}
    experts = []
    for e in range(2):
        m = CLIPVisionModelWithProjection.from_pretrained(os.path.join(root, f"expert{e}"))
        experts.append({k: v.detach() - base[k] for k, v in m.named_parameters()})
    names = list(base)
    groups = [group_of(n) for n in names]
    lam = torch.full((14, 2), 0.3, requires_grad=True)
    opt = torch.optim.Adam([lam], lr=1e-3)
    processor = CLIPImageProcessor.from_pretrained(os.path.join(root, "base"))
    heads, pixels = [], []
    for t in TASKS:
        heads.append(load_file(os.path.join(root, "heads", f"{t}.safetensors"))["weight"])
        folder = os.path.join(root, "images", t)
        images = [Image.open(os.path.join(folder, n)).convert("RGB") for n in sorted(os.listdir(folder))]
        pixels.append(processor(images=images[:batch], return_tensors="pt")["pixel_values"])
    x = torch.cat(pixels)
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        merged = {n: base[n] + sum(lam[g, i] * experts[i][n] for i in range(2))
                  for n, g in zip(names, groups)}
        feats = functional_call(model, merged, (x,)).image_embeds
        feats = feats / feats.norm(dim=1, keepdim=True)
        loss = 0.0
        for t, head in enumerate(heads):
            logits = feats[t * batch:(t + 1) * batch] @ head.T
            p = logits.log_softmax(1)
            loss = loss + (-(p.exp() * p).sum(1)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            lam.clamp_(0.0, 1.0)
        times.append(time.perf_counter() - started)
    later = times[1:] or times
    print(f"pytorch {torch.__version__}, {torch.get_num_threads()} threads: "
          f"{1e3 * sum(later) / len(later):.1f} ms per step (first {1e3 * times[0]:.1f} ms)")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("make", "step"))
    parser.add_argument("dir")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=IMAGES)
    args = parser.parse_args(argv)
    if args.command == "make":
        make(os.path.abspath(args.dir))
    else:
        step(os.path.abspath(args.dir), args.steps, args.batch)


if __name__ == "__main__":
    main(sys.argv[1:])
