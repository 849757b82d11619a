#!/usr/bin/env python3
"""Encode one large PNG at native resolution with the reference (medvae 0.1.7's
AutoencoderKL_2D, the published medvae_4_1_2d layout, random weights), the way
`medvae_inference` runs it: one image, no resizing, `forward(decode=False)`. Prints one JSON
line: seconds, peak RSS, or the error (the reference's mid-block attention materialises a
(H/4 * W/4)^2 matrix of float32).

    /opt/tb/bin/python scripts/torch_native_resolution.py IMAGE.png [--threads 2] [--decode]

Run it under `prlimit --as=BYTES` to turn an allocation beyond the machine into an error
instead of swapping. Compare with `/usr/bin/time -v medvae-fast infer -i IMAGE.png -o out.nii.gz
--model medvae_4_1_2d --random-weights --modality xray --threads 2`.
"""
import argparse
import json
import resource
import time

import torch
from medvae.models import AutoencoderKL_2D
from medvae.utils.loaders import load_2d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("image")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decode", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dd = dict(double_z=True, z_channels=1, resolution=384, in_channels=1, out_ch=1, ch=128,
              ch_mult=[1, 2, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
    model = AutoencoderKL_2D(ddconfig=dd, embed_dim=1).eval()
    img = load_2d(args.image, merge_channels=True).unsqueeze(0)
    out = {"engine": "pytorch", "torch": torch.__version__, "shape": list(img.shape),
           "threads": args.threads, "decode": args.decode}
    t0 = time.perf_counter()
    try:
        with torch.no_grad():
            model(img, sample_posterior=False, decode=args.decode)
        out["seconds"] = round(time.perf_counter() - t0, 2)
    except RuntimeError as e:
        out["error"] = str(e).splitlines()[0][:200]
        out["seconds_until_error"] = round(time.perf_counter() - t0, 2)
    out["max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
