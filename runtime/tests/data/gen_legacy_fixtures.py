"""Generates the legacy (pre-1.6, non-zip) torch.save fixtures used by runtime/tests/torch_legacy.rs.

Run with a PyTorch interpreter from the repository root:
    /opt/tb/bin/python runtime/tests/data/gen_legacy_fixtures.py
Tensor values are deterministic (fixed seeds); the bytes are not quite, since legacy storage
keys are memory addresses. The expected tensors are written as safetensors
(contiguous f32 / i64 copies made by torch itself), so the Rust reader is checked against torch's
own view and dtype-conversion semantics, not against itself.
"""
import argparse
import os
import pathlib
import sys

import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
# Written by the hostile fixture's command if Python unpickled it; the Rust test checks that
# it never appears.
EXPLOIT_MARKER = "/tmp/medvae_legacy_exploit_marker"


class SystemCall:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __reduce__(self):
        return (os.system, (f"touch {EXPLOIT_MARKER}",))


class Payload:
    """A user class outside the state dict: an inert placeholder for the reader."""

    def __init__(self):
        self.value = 42


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)


def legacy_save(obj, path, **kw):
    torch.save(obj, path, _use_new_zipfile_serialization=False, **kw)


def plain_state_dict():
    """Every storage type the reader supports, strided views and shared storages."""
    torch.manual_seed(11)
    base = torch.randn(5, 6)
    return {
        "f32": torch.randn(3, 4),
        "f16": torch.randn(2, 5).half(),
        "bf16": torch.randn(7).to(torch.bfloat16),
        "f64": torch.randn(2, 3, dtype=torch.float64),
        "i64": torch.tensor([[0, -1, 2**40], [-(2**62), 5, 6]], dtype=torch.int64),
        "i32": torch.tensor([3, -4, 2**31 - 1], dtype=torch.int32),
        "u8": torch.tensor([0, 9, 255], dtype=torch.uint8),
        "base": base,  # shares its storage with the three views below
        "base_t": base.t(),  # stride (1, 6): gathered
        "base_rows": base[1:4],  # storage offset 6
        "base_cols": base[:, 1::2],  # offset 1, stride (6, 2)
        "f16_permuted": torch.randn(2, 3, 4).half().permute(2, 0, 1),
        "expanded": torch.randn(3, 1).expand(3, 4),  # stride 0
        "scalar": torch.tensor(2.25),
        "empty": torch.zeros(0, 3),
    }


def wrapped_checkpoint():
    """A training checkpoint: a real module state dict under `state_dict`, plus optimizer
    state with tensors, a user object and an `nn.Module` class (a legacy 'module' id)."""
    torch.manual_seed(5)
    net = TinyNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.num_batches_tracked.fill_(9)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    sd = net.state_dict()
    ckpt = {
        "epoch": 3,
        "state_dict": sd,
        "optimizer": opt.state_dict(),
        "arch": TinyNet,
        "config_object": Payload(),
    }
    return ckpt, sd


# VGG16 `features` indices of the 13 convolutions, by LPIPS slice (torchvision layout).
VGG16_CONVS = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
VGG16_WIDTHS = [64, 128, 256, 512, 512]
LPIPS_TINY_WIDTHS = [4, 4, 4, 4, 4]


def lpips_files():
    """LPIPS-shaped weights in the legacy format: a `vgg.pth` look-alike (lin0..lin4 at the real
    VGG16 widths, as in the lpips wheel) and a torchvision-like VGG16 `features` state dict at
    tiny widths (model/tests/losses.rs loads them through Lpips::load_lin / load_vgg16)."""
    torch.manual_seed(23)
    lin = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1) * 0.2 for k, c in enumerate(VGG16_WIDTHS)}
    vgg = {}
    cin = 3
    for width, convs in zip(LPIPS_TINY_WIDTHS, VGG16_CONVS):
        for i in convs:
            vgg[f"features.{i}.weight"] = torch.randn(width, cin, 3, 3) * 0.3
            vgg[f"features.{i}.bias"] = torch.randn(width) * 0.1
            cin = width
    return lin, vgg


def expected(prefix, sd):
    out = {}
    for k, v in sd.items():
        v = v.contiguous().clone()
        out[prefix + k] = v.float() if v.is_floating_point() else v.to(torch.int64)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE))
    out = pathlib.Path(ap.parse_args().out)
    plain = plain_state_dict()
    ckpt, wrapped = wrapped_checkpoint()
    legacy_save(plain, out / "legacy_plain.pt")
    legacy_save(plain, out / "legacy_plain_protocol4.pt", pickle_protocol=4)
    legacy_save(ckpt, out / "legacy_wrapped.ckpt")
    legacy_save({"state_dict": {"w": torch.ones(2)}, "hook": SystemCall()}, out / "legacy_os_system.pt")
    save_file({**expected("plain.", plain), **expected("wrapped.", wrapped)}, str(out / "legacy_expected.safetensors"))
    lin, vgg = lpips_files()
    legacy_save(lin, out / "legacy_lpips_lin.pth")
    legacy_save(vgg, out / "legacy_lpips_vgg16_tiny.pth")
    save_file({**lin, **vgg}, str(out / "legacy_lpips_expected.safetensors"))
    # Check the fixtures round-trip through torch's own legacy loader.
    for name in ["legacy_plain.pt", "legacy_plain_protocol4.pt"]:
        back = torch.load(out / name, weights_only=False)  # our own trusted files
        assert all(torch.equal(back[k], plain[k]) for k in plain), name
    print("legacy fixtures written to", out)


if __name__ == "__main__":
    sys.exit(main())
