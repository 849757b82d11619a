"""PyTorch baseline for the 3D autoencoder step (medvae_4_1_3d layout, random weights): time and
peak device memory of forward + L1 + backward at SIZE^3, to set against
`medvae-fast bench --model medvae_4_1_3d --only ae_fwd_bwd [--recompute]` in the same run.

Two variants:
  ref     the published model's forward, which wraps encode and decode in
          torch.utils.checkpoint (activations recomputed in the backward)
  nockpt  encode, sample, decode called directly (every activation kept)

Usage: python scripts/torch_3d_baseline.py --device cuda --size 64 --precision bf16 \
           --medvae-wheel .bench/medvae-0.1.7-py3-none-any.whl
Prints one JSON line. Imports only the medvae model modules (no heavy package __init__).
"""
import argparse
import json
import os
import sys
import time
import types
import zipfile

ap = argparse.ArgumentParser()
ap.add_argument("--device", default="cuda")
ap.add_argument("--size", type=int, default=64)
ap.add_argument("--batch", type=int, default=1)
ap.add_argument("--reps", type=int, default=5)
ap.add_argument("--precision", default="fp32", choices=["fp32", "tf32", "bf16"])
ap.add_argument("--medvae-wheel", required=True)
args = ap.parse_args()

import torch  # noqa: E402

wheel = os.path.abspath(args.medvae_wheel)
if not zipfile.is_zipfile(wheel):
    sys.exit(f"--medvae-wheel {wheel}: not a wheel")
sys.path.insert(0, wheel)
for name, sub in [("medvae", ""), ("medvae.utils", "utils"), ("medvae.utils.vae", "utils/vae"),
                  ("medvae.models", "models")]:
    module = types.ModuleType(name)
    module.__path__ = [os.path.join(wheel, "medvae", sub) if sub else os.path.join(wheel, "medvae")]
    sys.modules[name] = module
from medvae.models.autoencoder_kl_3d import AutoencoderKL  # noqa: E402

dev = torch.device(args.device)
tf32 = args.precision == "tf32"
torch.backends.cuda.matmul.allow_tf32 = tf32
torch.backends.cudnn.allow_tf32 = tf32
torch.backends.cudnn.benchmark = True
torch.manual_seed(0)
# The medvae_4_1_3d layout (the published 3D YAML): 4x downsampling, 1 latent channel.
cfg = dict(double_z=True, z_channels=1, resolution=args.size, in_channels=1, out_ch=1, ch=128,
           ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
ae = AutoencoderKL(ddconfig=cfg, embed_dim=1).to(dev)
x = torch.randn(args.batch, 1, args.size, args.size, args.size, device=dev)
amp = torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")


def ref():
    with amp:
        rec, _, _ = ae(x)
        loss = (rec.float() - x).abs().mean()
    loss.backward()


def nockpt():
    with amp:
        post = ae.encode(x)
        rec = ae.decode(post.sample())
        loss = (rec.float() - x).abs().mean()
    loss.backward()


cuda = dev.type == "cuda"


def sync():
    if cuda:
        torch.cuda.synchronize()


def measure(fn):
    ae.zero_grad(set_to_none=True)
    fn()
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.reps):
        ae.zero_grad(set_to_none=True)
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return {"median_s": times[len(times) // 2], "min_s": times[0], "max_s": times[-1],
            "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None}


out = {"torch": torch.__version__, "device_name": torch.cuda.get_device_name() if cuda else "cpu",
       "size": args.size,
       "batch": args.batch, "precision": args.precision}
for name, fn in [("ref", ref), ("nockpt", nockpt)]:
    out[name] = measure(fn)
print(json.dumps(out))
