#!/usr/bin/env python3
"""Check that files written by `medvae-fast convert` load in PyTorch with weights_only=True
and hold the same tensors as the source checkpoint.

usage: check_torch_write.py SOURCE.ckpt WRITTEN.(ckpt|bin)
"""
import sys

import torch


def state(path):
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return obj["state_dict"] if isinstance(obj, dict) and "state_dict" in obj else obj


src, written = state(sys.argv[1]), state(sys.argv[2])
# safetensors keeps no key order, so a round trip through it may reorder keys.
assert set(src.keys()) == set(written.keys()), "keys differ"
for k, v in src.items():
    w = written[k]
    assert w.shape == v.shape, f"{k}: shape {tuple(w.shape)} vs {tuple(v.shape)}"
    # A half-precision output must equal the source rounded to its type, exactly.
    assert torch.equal(w, v.to(w.dtype)), f"{k}: values differ"
print(f"ok: {len(src)} tensors load with weights_only=True and are identical")
