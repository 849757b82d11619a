"""PyTorch baseline for the 3D autoencoder step (medvae_4_1_3d layout, random weights): time and
peak device memory of forward + L1 + backward at SIZE^3, to set against
`medvae-fast bench --model medvae_4_1_3d --only ae_fwd_bwd [--recompute]` in the same run.

Variants (--only, comma list; default ref,nockpt):
  ref     the published model's forward, which wraps encode and decode in
          torch.utils.checkpoint (activations recomputed in the backward)
  nockpt  encode, sample, decode called directly (every activation kept)
  stage1  nockpt + LPIPS (VGG16 widths, random weights) averaged over the slices of all three
          axes + KL + the PatchGAN generator term over the same slices, backward, Adam step:
          the counterpart of `medvae-fast bench --model medvae_4_1_3d --only stage1_step`
          (like torch_baseline.py's 2D stage1, without the adaptive weight's extra gradients)

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
ap.add_argument("--only", default="ref,nockpt")
ap.add_argument("--threads", type=int, default=0)
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

if args.threads:
    torch.set_num_threads(args.threads)

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


def slices(v):
    """[N, C, D, H, W] -> the depth, height and width slices as one batch of 2D images (a cube)."""
    n, c, d, h, w = v.shape
    return torch.cat([v.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w),
                      v.permute(0, 3, 1, 2, 4).reshape(n * h, c, d, w),
                      v.permute(0, 4, 1, 2, 3).reshape(n * w, c, d, h)])


lp = disc = opt = None
if "stage1" in args.only.split(","):
    import torch.nn as nn  # noqa: E402
    from medvae.utils.vae import loss_components as lc  # noqa: E402

    class VGGLPIPS(nn.Module):
        """LPIPS with VGG16's widths and random weights (timing only), as torch_baseline.py."""

        def __init__(self):
            super().__init__()
            self.sc = lc.ScalingLayer()
            layers, cin = [], 3
            for v in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                    cin = v
            self.f = nn.Sequential(*layers)
            self.cuts = [4, 9, 16, 23, 30]
            self.lins = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in [64, 128, 256, 512, 512]])
            for p in self.parameters():
                p.requires_grad_(False)

        def forward(self, p_in, t_in):
            outs = []
            for inp in (p_in, t_in):
                h, i, fs = self.sc(inp), 0, []
                for c in self.cuts:
                    while i < c:
                        h = self.f[i](h)
                        i += 1
                    fs.append(h)
                outs.append(fs)
            return sum(lc.spatial_average(l((lc.normalize_tensor(p) - lc.normalize_tensor(q)) ** 2))
                       for l, p, q in zip(self.lins, *outs))

    lp = VGGLPIPS().to(dev).eval()
    disc = lc.NLayerDiscriminator(input_nc=1).to(dev)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-5, betas=(0.5, 0.9))


def stage1():
    opt.zero_grad(set_to_none=True)
    with amp:
        post = ae.encode(x)
        rec = ae.decode(post.sample())
        xs, rs = slices(x), slices(rec)
        loss = ((rec.float() - x).abs().mean() + lp(xs, rs).float().mean()
                + 1e-6 * post.kl().mean() - 0.5 * disc(rs).float().mean())
    loss.backward()
    opt.step()


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
variants = {"ref": ref, "nockpt": nockpt, "stage1": stage1}
for name in args.only.split(","):
    if name not in variants:
        sys.exit(f"--only: unknown variant {name!r} (ref, nockpt, stage1)")
    out[name] = measure(variants[name])
print(json.dumps(out))
