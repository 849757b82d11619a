"""Generates the small torch.save fixtures used by runtime/tests/checkpoint.rs.

Run with a PyTorch interpreter from this directory's parent crate root:
    /opt/tb/bin/python runtime/tests/data/gen_checkpoint_fixtures.py
Every file is deterministic (fixed seeds); the expected tensors are written as safetensors
(contiguous copies made by torch itself), so the Rust reader is checked against torch's own
view semantics, not against itself.
"""
import argparse
import os
import pathlib
import sys

import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent
# The command the hostile fixtures would run if unpickled by Python; the Rust test checks that
# this marker never appears.
EXPLOIT_MARKER = "/tmp/medvae_checkpoint_exploit_marker"


class SystemCall:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __reduce__(self):
        return (os.system, (f"touch {EXPLOIT_MARKER}",))


class Payload:
    """A user class: loading it would import and construct arbitrary code."""

    def __init__(self):
        self.value = 42


class TinyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.lin = torch.nn.Linear(4, 5)


def trained_net():
    """A tiny module after one Adam step, so that the optimizer state holds tensors."""
    torch.manual_seed(7)
    net = TinyNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-1, 1)
        net.bn.running_var.uniform_(0.5, 2)
        net.bn.num_batches_tracked.fill_(17)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, betas=(0.5, 0.9))
    for p in net.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3)
    return net, opt.state_dict(), sched.state_dict()


def varied_state_dict(net):
    """A real module state_dict (OrderedDict with _metadata, int64 num_batches_tracked) plus
    tensors in every supported storage type, non-contiguous views and shared storages."""
    sd = net.state_dict()
    base = torch.randn(6, 8)
    sd["extra.transposed"] = base.t()  # stride (1, 8): gathered
    sd["extra.row_slice"] = base[2:5]  # offset 16, contiguous
    sd["extra.col_step"] = base[:, 1::3]  # offset 1, stride (8, 3)
    sd["extra.shared_same"] = base  # same storage as the three views above
    sd["extra.expanded"] = torch.randn(3, 1).expand(3, 4)  # stride 0
    sd["extra.f64"] = torch.randn(2, 3, dtype=torch.float64)
    sd["extra.bf16"] = torch.randn(5).to(torch.bfloat16)
    sd["extra.f16_permuted"] = torch.randn(2, 3, 4).half().permute(2, 0, 1)
    sd["extra.i32"] = torch.tensor([[1, -2], [3, 2**31 - 1]], dtype=torch.int32)
    sd["extra.u8"] = torch.tensor([0, 7, 255], dtype=torch.uint8)
    sd["extra.bool"] = torch.tensor([True, False, True])
    sd["extra.scalar"] = torch.tensor(3.5)
    sd["extra.empty"] = torch.zeros(0, 4)
    return sd


def expected_tensors(sd):
    out = {}
    for k, v in sd.items():
        v = v.contiguous().clone()
        if v.is_floating_point():
            # f32, converted by torch (round to nearest even): the reader's f64/f16/bf16 -> f32
            # conversion is checked against torch's, not against itself.
            out[k] = v.float()
        else:
            out[k] = v.to(torch.int64)
    return out


def lightning_like(sd, opt_state, sched_state):
    """The extra entries a Lightning checkpoint carries: optimizer state with tensors nested in
    dicts and lists, hyper-parameters holding arbitrary objects, callbacks, loops."""
    return {
        "epoch": 3,
        "global_step": 1234,
        "pytorch-lightning_version": "2.4.0",
        "state_dict": sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 4}}}},
        "callbacks": {
            "ModelCheckpoint{'monitor': 'val/rec_loss', 'mode': 'min'}": {
                "best_model_score": torch.tensor(0.25),
                "best_model_path": "/ckpt/epoch=3.ckpt",
                "best_k_models": {"/ckpt/epoch=3.ckpt": torch.tensor(0.25)},
                "kth_value": torch.tensor(float("inf")),
            }
        },
        "optimizer_states": [opt_state],
        "lr_schedulers": [sched_state],
        "hparams_name": "kwargs",
        "hyper_parameters": {
            "embed_dim": 1,
            "ddconfig": {"ch_mult": (1, 2, 2), "double_z": True, "dropout": 0.0},
            "big": 2**70,
            "neg": -(2**40),
            "raw": b"\x00\x01\xff",
            "tags": {3, 1, 2},
            "dtype": torch.float16,
            "path": pathlib.PurePosixPath("/data/train"),
            "config_object": Payload(),  # unknown class outside the state_dict: skipped
        },
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(HERE))
    out = pathlib.Path(ap.parse_args().out)
    net, opt_state, sched_state = trained_net()
    sd = varied_state_dict(net)
    save_file(expected_tensors(sd), str(out / "varied_expected.safetensors"))
    torch.save(lightning_like(sd, opt_state, sched_state), out / "lightning_full.ckpt")
    torch.save(sd, out / "varied_protocol5.pt", pickle_protocol=5)
    torch.save({"state_dict": {"w": torch.ones(2)}, "hook": SystemCall()}, out / "forbidden_os_system.ckpt")
    torch.save({"w": torch.ones(2), "payload": Payload()}, out / "forbidden_custom_class.pt")
    torch.save({"w": torch.ones(2)}, out / "legacy_format.pt", _use_new_zipfile_serialization=False)
    print("fixtures written to", out)


if __name__ == "__main__":
    sys.exit(main())
