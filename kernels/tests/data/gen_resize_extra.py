"""Extra PyTorch references for the antialiased bicubic resize kernel (kernels/tests/resize.rs).

Covers what the two shared golden cases do not: N > 1, C > 1, odd and non-integer ratios,
one axis unchanged, identity size, 1-pixel inputs and outputs, mixed up/down scaling.
Computed in float64, stored as float32 (NCHW), like the shared golden files.
Usage: /opt/tb/bin/python gen_resize_extra.py   (writes resize_extra.safetensors beside itself)
"""
import json
import os

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

torch.manual_seed(1234)
torch.set_default_dtype(torch.float64)

CASES = [
    ("down_n2_c3", (2, 3, 13, 9), (5, 4)),
    ("identity", (1, 2, 7, 11), (7, 11)),
    ("one_pixel_up", (1, 1, 1, 1), (5, 3)),
    ("down_to_one_pixel", (1, 1, 9, 6), (1, 1)),
    ("row_up_width_down", (1, 2, 1, 8), (3, 3)),
    ("width_only", (1, 1, 10, 12), (10, 5)),
    ("height_only", (1, 1, 6, 4), (15, 4)),
    ("up_c3", (1, 3, 17, 23), (50, 41)),
    ("down_n2", (2, 1, 61, 45), (20, 24)),
    ("mixed_odd", (1, 2, 37, 29), (16, 61)),
]

tensors, meta = {}, []
for name, shape, size in CASES:
    x = torch.randn(shape).float().double().requires_grad_(True)
    y = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False)
    g = torch.randn(y.shape).float().double()
    (y * g).sum().backward()
    tensors.update({f"{name}.in.x": x.detach(), f"{name}.out.y": y.detach(),
                    f"{name}.gout.y": g, f"{name}.grad.in.x": x.grad})
    meta.append({"name": name, "size": list(size)})
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "resize_extra.safetensors")
save_file({k: v.contiguous().float() for k, v in tensors.items()}, out,
          metadata={"cases": json.dumps(meta), "torch": torch.__version__})
print(out, len(tensors), "tensors")
