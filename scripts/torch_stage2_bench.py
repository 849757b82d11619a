#!/usr/bin/env python3
"""PyTorch eager baseline of `medvae-fast bench --only stage2_step`: one stage-2 training step.

The medvae AutoencoderKL of medvae_4_1_2d (random weights) frozen except its latent head
(channel_ds, channel_proj); the BiomedCLIP latent loss through a ViT-B/16 image tower shaped as
BiomedCLIP's (timm when importable, else the equivalent module of torch_vit_bench.py; random
weights, frozen):
  image  = clamp((x + 1) / 2, 0, 1), expanded to 3 channels;
  latent = mean_c(latent_head(z) / 4.6), expanded to 3 channels;
  both   : Resize(224, bicubic, antialias) -> CenterCrop(224) -> CLIP Normalize -> tower;
  loss   = sum_b ||f(image_b) - f(latent_b)||^2 / B; backward into the head; Adam.
The image branch runs without autograd state (nothing in it is trained), as in the engine.

Prints one JSON line in the format of `medvae-fast bench` (median/min/max seconds).
  python3 scripts/torch_stage2_bench.py --device cuda --precision bf16 --batch 8 --size 256
"""
import argparse
import importlib.util
import json
import os
import sys
import time
import types
import zipfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_vit_bench import build as build_tower  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def medvae_autoencoder_class(wheel):
    """medvae.models.autoencoder_kl.AutoencoderKL without running medvae/__init__ (which
    imports the whole training stack)."""
    if wheel:
        root = os.path.abspath(wheel)
        if not zipfile.is_zipfile(root):
            sys.exit(f"--medvae-wheel {root}: not a wheel/zip")
        sys.path.insert(0, root)
        base = os.path.join(root, "medvae")
    else:
        spec = importlib.util.find_spec("medvae")
        if spec is None:
            sys.exit("medvae not installed: pip install medvae, or pass --medvae-wheel")
        base = list(spec.submodule_search_locations)[0]
    for name, sub in [("medvae", ""), ("medvae.utils", "utils"), ("medvae.utils.vae", "utils/vae"),
                      ("medvae.models", "models")]:
        m = types.ModuleType(name)
        m.__path__ = [os.path.join(base, sub) if sub else base]
        sys.modules[name] = m
    from medvae.models.autoencoder_kl import AutoencoderKL

    return AutoencoderKL


def clip_transform(img, size, mean, std):
    """torchvision Resize(size, bicubic, antialias) + CenterCrop(size) + Normalize on a
    [N, 3, H, W] tensor."""
    h, w = img.shape[-2:]
    nh, nw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    if (nh, nw) != (h, w):
        img = F.interpolate(img, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    img = img[..., top:top + size, left:left + size]
    return (img - mean) / std


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--medvae-wheel", default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    tf32 = a.precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)

    AutoencoderKL = medvae_autoencoder_class(a.medvae_wheel)
    cfg = dict(double_z=True, z_channels=1, resolution=512, in_channels=1, out_ch=1, ch=128,
               ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    ae = AutoencoderKL(ddconfig=cfg, embed_dim=1).to(dev).requires_grad_(False)
    head = list(ae.channel_ds.parameters()) + list(ae.channel_proj.parameters())
    for p in head:
        p.requires_grad_(True)
    tower, impl = build_tower()
    tower = tower.to(dev).eval().requires_grad_(False)
    opt = torch.optim.Adam(head, lr=1e-4, betas=(0.5, 0.9))
    mean = torch.tensor(CLIP_MEAN, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=dev).view(1, 3, 1, 1)
    amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=a.precision == "bf16")
    x = torch.randn(a.batch, 1, a.size, a.size, device=dev)

    def features(img):
        return tower(clip_transform(img.expand(-1, 3, -1, -1), 224, mean, std)).float()

    def step():
        opt.zero_grad(set_to_none=True)
        with amp:
            with torch.no_grad():
                z = ae.encode(x).sample()
                f_image = features(((x + 1) / 2).clamp(0, 1))
            latent = ae.channel_proj(ae.channel_ds(z) + z)
            f_latent = features((latent.float() / 4.6).mean(1, keepdim=True))
            loss = ((f_image - f_latent) ** 2).sum(1).mean()
        loss.backward()
        opt.step()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    step()
    step()
    sync()
    ts = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        step()
        sync()
        ts.append(time.perf_counter() - t0)
    ts.sort()
    med = ts[len(ts) // 2]
    res = {"engine": "torch", "torch": torch.__version__, "tower": impl, "device": str(dev),
           "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
           "threads": torch.get_num_threads(), "size": a.size, "batch": a.batch,
           "precision": a.precision,
           "stage2_step": {"median_s": med, "min_s": ts[0], "max_s": ts[-1], "img_per_s": a.batch / med}}
    if dev.type == "cuda":
        res["peak_mem_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
