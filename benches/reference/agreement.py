"""How closely two merged models agree, tensor by tensor (benches/compare-mergekit.sh).

    python3 agreement.py OURS THEIRS

Prints the share of values that are bit-identical, the share within one unit in the last place
of the stored dtype, and the largest absolute difference. Optional, never run by CI.
"""

import glob
import os
import sys

import torch
from safetensors.torch import load_file


def tensors(folder):
    out = {}
    for path in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        out.update(load_file(path))
    return out


def main():
    ours, theirs = tensors(sys.argv[1]), tensors(sys.argv[2])
    if ours.keys() != theirs.keys():
        missing = sorted(ours.keys() ^ theirs.keys())
        sys.exit(f"the models hold different tensors, e.g. {missing[:3]}")
    total = same = within_ulp = 0
    worst = 0.0
    for name, a in ours.items():
        b = theirs[name]
        if a.shape != b.shape:
            sys.exit(f"{name}: shape {tuple(a.shape)} here, {tuple(b.shape)} there")
        a32, b32 = a.float(), b.to(a.dtype).float()
        diff = (a32 - b32).abs()
        ulp = torch.finfo(a.dtype).eps * torch.maximum(a32.abs(), b32.abs()).clamp_min(
            torch.finfo(a.dtype).tiny
        )
        total += a.numel()
        same += int((a32 == b32).sum())
        within_ulp += int((diff <= ulp).sum())
        worst = max(worst, float(diff.max()))
    print(
        f"  agreement: {same / total:.6f} bit-identical, {within_ulp / total:.6f} within one "
        f"ulp, max |difference| {worst:.3g} over {total} values"
    )


if __name__ == "__main__":
    main()
