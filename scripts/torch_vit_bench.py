#!/usr/bin/env python3
"""PyTorch CPU baseline for the BiomedCLIP image tower (model/tests/vit.rs,
`vit_b16_forward_backward_timing`).

ViT-B/16 at 224x224 (timm `vit_base_patch16_224`, class-token pooling, open_clip's bias-free
Linear 768->512 head), frozen, batch 2, f32, at a fixed thread count (default 2):
  * forward : no grad;
  * fwd_bwd : forward + backward to the input image (what the stage-2 loss needs).
Uses timm when importable, else an equivalent module built here (same ops: LayerNorm eps 1e-6,
fused qkv with bias, scaled_dot_product_attention, exact GELU). Prints one JSON line per
measurement with the median wall time in ms.
"""
import argparse
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_timing import median_ms


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(self.norm1(x)).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        x = x + self.proj(a.transpose(1, 2).reshape(b, n, c))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Tower(nn.Module):
    def __init__(self, size=224, patch=16, d=768, depth=12, heads=12, embed=512):
        super().__init__()
        self.patch = nn.Conv2d(3, d, patch, patch)
        self.cls = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos = nn.Parameter(torch.randn(1, 1 + (size // patch) ** 2, d) * 0.02)
        self.blocks = nn.Sequential(*[Block(d, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(d, eps=1e-6)
        self.head = nn.Linear(d, embed, bias=False)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


def build():
    try:
        import timm

        trunk = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
        head = nn.Linear(768, 512, bias=False)
        return nn.Sequential(trunk, head), "timm"
    except ImportError:
        return Tower(), "local"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, impl = build()
    model.eval().requires_grad_(False)
    x = torch.randn(args.batch, 3, 224, 224)
    g = torch.randn(args.batch, 512)

    def forward():
        with torch.no_grad():
            model(x)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        (model(xi) * g).sum().backward()

    for name, fn in [("forward", forward), ("fwd_bwd", fwd_bwd)]:
        med, best = median_ms(fn, args.warmup, args.iters)
        print(json.dumps({"bench": f"vit_b16_b{args.batch}_{name}", "median_ms": round(med, 1),
                          "min_ms": round(best, 1), "threads": torch.get_num_threads(),
                          "impl": impl, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
