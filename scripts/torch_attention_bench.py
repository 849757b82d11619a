#!/usr/bin/env python3
"""PyTorch CPU baseline for benches/benches/attention.rs.

Single-head attention over all spatial positions (MedVAE AttnBlock core), batch 1, f32, at a
fixed thread count (default 2), for the shapes of the Rust bench:
  * t4096_c128 : 4096 tokens (64x64), 128 channels;
  * t9216_c512 : 9216 tokens (96x96: the mid block of a 4x model at 384x384), 512 channels.
Two implementations:
  * sdpa  : torch.nn.functional.scaled_dot_product_attention (PyTorch's fused flash CPU kernel);
  * naive : what medvae's AttnBlock does (bmm, scale, softmax over keys, bmm), which
            materialises the tokens x tokens matrix.
Each as `forward` (no grad) and `fwd_bwd` (forward + backward to q, k, v with a random
upstream gradient). Prints one JSON line per measurement with the median wall time in ms.
"""
import argparse
import json

import torch
import torch.nn.functional as F

from bench_timing import median_ms

SHAPES = {"t4096_c128": (4096, 128), "t9216_c512": (9216, 512)}


def emit(name, fn, args, **extra):
    med, best = median_ms(fn, args.warmup, args.iters)
    rec = {"bench": name, "median_ms": round(med, 3), "min_ms": round(best, 3),
           "threads": torch.get_num_threads(), "torch": torch.__version__}
    rec.update(extra)
    print(json.dumps(rec), flush=True)


def sdpa(q, k, v, scale):
    # (1, tokens, C) -> one head: (1, 1, tokens, C)
    return F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], scale=scale)[:, 0]


def naive(q, k, v, scale):
    # AttnBlock: w = bmm(q, k) * c^-0.5 (q as (b, hw, c), k as (b, c, hw)), softmax(dim=2),
    # h = bmm(v, w^T) -- written here on (b, hw, c) operands: softmax(q k^T s) v.
    w = torch.bmm(q, k.transpose(1, 2)) * scale
    w = torch.softmax(w, dim=2)
    return torch.bmm(w, v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=7)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--impls", default="sdpa,naive")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for shape_name in args.shapes.split(","):
        tokens, c = SHAPES[shape_name]
        scale = c ** -0.5
        q, k, v, g = (torch.randn(1, tokens, c) for _ in range(4))
        for impl_name in args.impls.split(","):
            impl = {"sdpa": sdpa, "naive": naive}[impl_name]

            def fwd():
                with torch.no_grad():
                    return impl(q, k, v, scale)

            qg, kg, vg = (t.clone().requires_grad_(True) for t in (q, k, v))

            def fwd_bwd():
                for t in (qg, kg, vg):
                    t.grad = None
                impl(qg, kg, vg, scale).backward(g)

            emit(f"attention_{shape_name}/{impl_name}/forward", fwd, args, tokens=tokens, channels=c)
            emit(f"attention_{shape_name}/{impl_name}/fwd_bwd", fwd_bwd, args, tokens=tokens, channels=c)


if __name__ == "__main__":
    main()
