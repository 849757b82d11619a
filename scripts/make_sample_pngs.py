#!/opt/tb/bin/python
"""Make the derived sample PNGs in samples/2d/derived/ from the three real slices in samples/2d/.

Every derived image is a lossless geometric transform (flip, rotation, transpose, crop) or a
simple re-encoding (window to 8 bits, added opaque alpha) of a real slice, so the samples stay
real data while giving the quickstart and the tests enough files for train/val/test splits.
Deterministic: running it again rewrites byte-identical files (same Pillow and zlib).

    /opt/tb/bin/python scripts/make_sample_pngs.py            # from the repository root
"""

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "samples" / "2d"
OUT = SRC / "derived"


def load(name: str) -> np.ndarray:
    """The real slice as a numpy array in its stored dtype (uint16 for I;16, uint8 otherwise)."""
    img = Image.open(SRC / name)
    if img.mode == "I;16":
        return np.asarray(img, dtype=np.uint16)
    return np.asarray(img)


def save(arr: np.ndarray, name: str, mode: str) -> None:
    arr = np.ascontiguousarray(arr)
    if mode == "I;16":
        img = Image.frombytes("I;16", (arr.shape[1], arr.shape[0]), arr.astype("<u2").tobytes())
    else:
        img = Image.fromarray(arr, mode=mode)
    # optimize=False and no metadata keep the bytes a function of the pixels only.
    img.save(OUT / name, format="PNG", optimize=False)
    print(f"{OUT.relative_to(ROOT) / name}: {mode} {arr.shape[1]}x{arr.shape[0]}")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    ct = load("ct_slice_u16.png")  # 128x128, HU + 1024
    mr = load("mr_slice_u8.png")  # 64x64
    rgb = load("mr_slice_rgb.png")  # 64x64x3

    save(ct[:, ::-1], "ct_slice_u16_fliplr.png", "I;16")
    save(np.rot90(ct, 1), "ct_slice_u16_rot90.png", "I;16")
    save(ct[16:112, 8:104], "ct_slice_u16_crop96.png", "I;16")
    # Soft-tissue window [-160, 240] HU to 8 bits, as a viewer would export it.
    hu = ct.astype(np.float64) - 1024.0
    windowed = np.clip((hu + 160.0) / 400.0, 0.0, 1.0) * 255.0
    save(np.round(windowed).astype(np.uint8), "ct_slice_u8_window.png", "L")
    save(mr[::-1, :], "mr_slice_u8_flipud.png", "L")
    save(np.rot90(mr, 3), "mr_slice_u8_rot270.png", "L")
    save(mr[8:56, 4:52], "mr_slice_u8_crop48.png", "L")
    save(np.transpose(rgb, (1, 0, 2)), "mr_slice_rgb_transpose.png", "RGB")
    # RGBA with a fully opaque (constant) alpha channel: a common export that must be accepted.
    alpha = np.full(rgb.shape[:2] + (1,), 255, dtype=np.uint8)
    save(np.concatenate([rgb[::-1, ::-1], alpha], axis=2), "mr_slice_rgba_rot180.png", "RGBA")


if __name__ == "__main__":
    main()
