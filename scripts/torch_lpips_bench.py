#!/usr/bin/env python3
"""PyTorch CPU baseline for benches/benches/lpips.rs.

LPIPS with the VGG16 backbone, as medvae's `LPIPS` computes it (ScalingLayer, torchvision
vgg16().features[0:30] in five slices, normalize_tensor, squared difference, 1x1 lin layers,
spatial average, sum), with random weights (no download), eval mode, at 2x1x128x128 (the
1-channel images broadcast to 3 channels through the scaling layer). Two measurements:
  * forward      : no gradient;
  * fwd_bwd_input: forward with the input requiring grad, backward of p.sum() to the input
                   (the stage-1 loss' perceptual term: only the reconstruction needs a gradient).
Prints one JSON line per measurement with the median wall time in ms.
"""
import argparse
import json

import torch
import torch.nn as nn
from torchvision.models import vgg16

from bench_timing import median_ms

# The reference's components (medvae.utils.vae.loss_components), restated to avoid its
# checkpoint download in LPIPS.__init__.
SHIFT = torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None]
SCALE = torch.tensor([0.458, 0.448, 0.450])[None, :, None, None]
CUTS = [(0, 4), (4, 9), (9, 16), (16, 23), (23, 30)]
WIDTHS = [64, 128, 256, 512, 512]


class Lpips(nn.Module):
    def __init__(self):
        super().__init__()
        feats = vgg16(weights=None).features
        self.slices = nn.ModuleList(nn.Sequential(*[feats[j] for j in range(a, b)]) for a, b in CUTS)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in WIDTHS)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, a, b):
        fa, fb = (a - SHIFT) / SCALE, (b - SHIFT) / SCALE
        val = 0
        for s, lin in zip(self.slices, self.lins):
            fa, fb = s(fa), s(fb)
            na = fa / (torch.sqrt(torch.sum(fa ** 2, dim=1, keepdim=True)) + 1e-10)
            nb = fb / (torch.sqrt(torch.sum(fb ** 2, dim=1, keepdim=True)) + 1e-10)
            val = val + lin((na - nb) ** 2).mean([2, 3], keepdim=True)
        return val


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = Lpips().eval()
    x = torch.randn(2, 1, 128, 128)
    y = torch.randn(2, 1, 128, 128)

    def forward():
        with torch.no_grad():
            return net(x, y)

    def fwd_bwd():
        xi = x.clone().requires_grad_(True)
        net(xi, y).sum().backward()
        return xi.grad

    for name, fn in [("forward", forward), ("fwd_bwd_input", fwd_bwd)]:
        med, best = median_ms(fn, args.warmup, args.iters)
        print(json.dumps({"bench": f"lpips_vgg16_2x1x128x128/{name}", "median_ms": round(med, 3),
                          "min_ms": round(best, 3), "threads": torch.get_num_threads(),
                          "torch": torch.__version__}), flush=True)


if __name__ == "__main__":
    main()
