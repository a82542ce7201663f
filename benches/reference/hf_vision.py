#!/usr/bin/env python3
"""Features of a vision encoder computed by Hugging Face transformers, for comparing with
mergesearch's encoder on the same weights and images (tests/vision.rs runs it where torch and
transformers are installed; CI does not).

    hf_vision.py features MODEL_DIR PIXELS_DIR OUT_DIR
        loads MODEL_DIR with transformers (ViTModel, CLIPVisionModel or
        CLIPVisionModelWithProjection, as its config.json names), checking that every weight
        the model has was in the checkpoint; reads the "pixels" tensor [n, channels, side, side]
        of PIXELS_DIR/model.safetensors; writes the features to OUT_DIR/model.safetensors as
        "features": ViT's normalized class token (last_hidden_state[:, 0]), CLIP's projected
        image embeddings (or its pooled output without a projection).

    hf_vision.py make vit|clip MODEL_DIR
        saves a tiny randomly initialized transformers model (seeded) with save_pretrained: a
        checkpoint written by transformers itself, with the parts mergesearch does not read
        (ViT's pooler); and its image processor's preprocessor_config.json (ViT: resized to
        16x16, bilinear; CLIP: shortest edge 16, bicubic, center crop 16x16).

    hf_vision.py preprocess MODEL_DIR IMAGES_DIR OUT_DIR
        prepares the .png/.jpg images of IMAGES_DIR (file-name order) with MODEL_DIR's image
        processor (transformers' PIL backend) and writes them to OUT_DIR/model.safetensors as
        "pixels".
"""

import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
import transformers

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48,
            image_size=16, patch_size=4, num_channels=3)


def load(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        architecture = json.load(f)["architectures"][0]
    cls = getattr(transformers, architecture)
    model, info = cls.from_pretrained(model_dir, output_loading_info=True)
    # ViT's pooler is not part of the features; every other weight must have come from the file.
    missing = [k for k in info["missing_keys"] if not k.startswith("pooler.")]
    if missing or info["mismatched_keys"]:
        sys.exit(f"{model_dir}: weights missing {missing}, mismatched {info['mismatched_keys']}")
    return model.eval()


def features(model_dir, pixels_dir, out_dir):
    model = load(model_dir)
    pixels = load_file(os.path.join(pixels_dir, "model.safetensors"))["pixels"]
    with torch.no_grad():
        out = model(pixel_values=pixels)
    if hasattr(out, "image_embeds"):
        result = out.image_embeds
    elif isinstance(model, transformers.CLIPVisionModel):
        result = out.pooler_output
    else:
        result = out.last_hidden_state[:, 0]
    os.makedirs(out_dir, exist_ok=True)
    save_file({"features": result.contiguous().float()}, os.path.join(out_dir, "model.safetensors"))


def make(family, model_dir):
    torch.manual_seed(3)
    if family == "vit":
        model = transformers.ViTModel(transformers.ViTConfig(**TINY))
    else:
        model = transformers.CLIPVisionModelWithProjection(
            transformers.CLIPVisionConfig(projection_dim=24, **TINY))
    # Layer norms away from their initial (1, 0), so that a swapped scale and shift shows.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(model_dir, safe_serialization=True)
    if family == "vit":
        processor = transformers.ViTImageProcessor(size={"height": 16, "width": 16})
    else:
        processor = transformers.CLIPImageProcessor(size={"shortest_edge": 16},
                                                    crop_size={"height": 16, "width": 16})
    processor.save_pretrained(model_dir)


def preprocess(model_dir, images_dir, out_dir):
    from PIL import Image

    processor = transformers.AutoImageProcessor.from_pretrained(model_dir)
    names = sorted(n for n in os.listdir(images_dir)
                   if n.lower().endswith((".png", ".jpg", ".jpeg")))
    images = [Image.open(os.path.join(images_dir, n)).convert("RGB") for n in names]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]
    os.makedirs(out_dir, exist_ok=True)
    save_file({"pixels": pixels.contiguous().float()}, os.path.join(out_dir, "model.safetensors"))


def main(argv):
    if argv[:1] == ["features"] and len(argv) == 4:
        features(*argv[1:])
    elif argv[:1] == ["make"] and len(argv) == 3 and argv[1] in ("vit", "clip"):
        make(argv[1], argv[2])
    elif argv[:1] == ["preprocess"] and len(argv) == 4:
        preprocess(*argv[1:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
