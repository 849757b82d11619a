"""PNG fixtures of every colour type / bit depth and what the reference MedVAE 2D loaders make
of them, for runtime/tests/image2d.rs.

The PNGs are written byte by byte (zlib + struct) so that the exact colour type, bit depth,
tRNS chunk and interlacing are under control. For each PNG `NAME.png`, `image2d_refs.safetensors`
holds (float32, [C, H, W]):
  NAME.to_tensor      torchvision ToTensor of PIL.Image.open (int16 'I;16' cast to float)
  NAME.load_2d        medvae load_2d(path, merge_channels=False)
  NAME.load_2d_merge  medvae load_2d(path, merge_channels=True)
  NAME.finetune_small the load_2d_finetune pipeline (same medvae/torchvision/MONAI transforms)
                      with Resize((11, 9)) instead of (384, 384), merge_channels=False
Metadata `cases` lists the names; `palette.png` is there to be refused (the reference would
read palette indices) and has no tensors.

Needs torch, torchvision, monai, Pillow and the medvae 0.1.7 loaders: either `pip install
medvae` or unzip its wheel and point MEDVAE_LOADERS at medvae/utils/loaders.py.
Usage: python gen_image2d_refs.py   (writes beside itself)
"""
import importlib.util
import json
import os
import struct
import sys
import types
import zlib

import numpy as np
import torch
import torchvision
from PIL import Image
from safetensors.torch import save_file


def reference_loaders():
    path = os.environ.get("MEDVAE_LOADERS")
    if path is None:
        import medvae.utils.loaders as L
        return L
    # the wheel's loaders.py imports polars for unrelated CSV helpers: stub it
    pl = types.ModuleType("polars")
    pl.DataFrame = object
    sys.modules.setdefault("polars", pl)
    spec = importlib.util.spec_from_file_location("medvae_loaders", path)
    L = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(L)
    return L


L = reference_loaders()
HERE = os.path.dirname(os.path.abspath(__file__))
H, W = 10, 12
ADAM7 = [(0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2), (0, 1, 2, 2), (1, 0, 2, 1)]  # (y0, x0, dy, dx)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def row_bytes(px, depth):
    """One scanline of samples (array [w, ch] of ints) at the given bit depth."""
    flat = px.reshape(-1)
    if depth == 16:
        return flat.astype(">u2").tobytes()
    if depth == 8:
        return flat.astype(np.uint8).tobytes()
    bits = "".join(format(int(v), f"0{depth}b") for v in flat)
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8], 2) for i in range(0, len(bits), 8))


def write_png(name, px, depth, ctype, extra=b"", interlace=False):
    """px: [H, W, ch] integer samples."""
    h, w = px.shape[:2]
    if interlace:
        raw = b""
        for y0, x0, dy, dx in ADAM7:
            sub = px[y0::dy, x0::dx]
            if sub.shape[0] and sub.shape[1]:
                raw += b"".join(b"\x00" + row_bytes(r, depth) for r in sub)
    else:
        raw = b"".join(b"\x00" + row_bytes(r, depth) for r in px)
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0)
    with open(os.path.join(HERE, name + ".png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + extra + chunk(b"IDAT", zlib.compress(raw))
                + chunk(b"IEND", b""))


rng = np.random.default_rng(2024)
smooth = np.add.outer(np.linspace(0, 1, H), np.linspace(0, 1, W)) / 2  # keeps bicubic overshoot mild
u16 = (rng.integers(0, 65536, (H, W, 4)) * 0.3 + smooth[..., None] * 45000).astype(np.uint16)
u8 = (u16 >> 8).astype(np.uint8) ^ rng.integers(0, 32, (H, W, 4), dtype=np.uint8)
ct = (smooth * 2200 + rng.integers(0, 300, (H, W))).astype(np.uint16)[..., None]

CASES = []


def case(name, *args, **kw):
    write_png(name, *args, **kw)
    CASES.append(name)


for d in (1, 2, 4):
    case(f"grey{d}", u8[..., :1] % (1 << d), d, 0)
case("grey8", u8[..., :1], 8, 0)
case("grey16_wraps", u16[..., :1], 16, 0)  # values above 32767: 'I;16' read as int16 wraps
case("grey16_ct", ct, 16, 0)
case("grey_alpha8", u8[..., :2], 8, 4)
case("grey_alpha16", u16[..., :2], 16, 4)  # Pillow opens this as RGBA (L, L, L, A)
case("rgb8", u8[..., :3], 8, 2)
case("rgb16", u16[..., :3], 16, 2)  # Pillow keeps the high byte of each sample
case("rgba8", u8, 8, 6)
case("rgba16", u16, 16, 6)
case("grey8_trns", u8[..., :1], 8, 0, extra=chunk(b"tRNS", struct.pack(">H", int(u8[0, 0, 0]))))
case("rgb8_trns", u8[..., :3], 8, 2, extra=chunk(b"tRNS", struct.pack(">HHH", *map(int, u8[0, 0, :3]))))
case("grey16_trns", ct, 16, 0, extra=chunk(b"tRNS", struct.pack(">H", int(ct[0, 0, 0]))))
case("grey8_interlaced", u8[..., :1], 8, 0, interlace=True)
case("rgb16_interlaced", u16[..., :3], 16, 2, interlace=True)
case("grey8_constant", np.full((H, W, 1), 77, np.uint8), 8, 0)
case("grey16_constant", np.full((H, W, 1), 1500, np.uint16), 16, 0)
case("rgb8_one_constant_channel", np.concatenate([u8[..., :2], np.full((H, W, 1), 9, np.uint8)], -1), 8, 2)
write_png("palette", u8[..., :1] % 16, 4, 3, extra=chunk(b"PLTE", bytes(rng.integers(0, 256, 48, dtype=np.uint8))))

small_finetune = L.Compose(transforms=[
    L.MonaiImageOpen(),
    torchvision.transforms.ToTensor(),
    torchvision.transforms.Resize((11, 9), interpolation=3, antialias=True),
    L.ScaleIntensity(channel_wise=True, minv=0, maxv=1),
    L.MonaiNormalize(mean=[0.5], std=[0.5]),
], lazy=True)

tensors = {}
for name in CASES:
    path = os.path.join(HERE, name + ".png")
    pil = Image.open(path)
    tensors[name + ".to_tensor"] = torchvision.transforms.ToTensor()(pil).float()
    tensors[name + ".load_2d"] = L.load_2d(path, merge_channels=False)
    tensors[name + ".load_2d_merge"] = L.load_2d(path, merge_channels=True)
    tensors[name + ".finetune_small"] = small_finetune(path).as_tensor()
    print(name, pil.mode, tuple(tensors[name + ".to_tensor"].shape))
save_file({k: v.float().contiguous() for k, v in tensors.items()}, os.path.join(HERE, "image2d_refs.safetensors"),
          metadata={"cases": json.dumps(CASES), "finetune_small_size": "[11, 9]"})
