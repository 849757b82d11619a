#!/usr/bin/env python3
"""Full-size check of the BiomedCLIP image tower (the golden tower is tiny).

Builds open_clip's BiomedCLIP vision tower (timm `vit_base_patch16_224`, class-token pooling,
bias-free Linear 768->512; random weights), and writes to OUT_DIR:
  * vit/vit_b16_full.safetensors : a case in the golden format (float64 reference computed by
    PyTorch, stored as float32), run with `medvae-fast verify --golden OUT_DIR`;
  * open_clip_pytorch_model.bin  : the tower's weights under open_clip's `visual.*` keys (plus a
    dummy text key), a real `torch.save` file for the checkpoint loader.
Needs torch, safetensors, timm and open_clip (`pip install timm open_clip_torch`).

Usage: python scripts/make_vit_full_case.py OUT_DIR [--batch 2]
"""
import argparse
import json
import os

import torch
import torch.nn as nn
from safetensors.torch import save_file


def main():
    import timm
    from open_clip.timm_model import TimmModel

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    tm = TimmModel.__new__(TimmModel)
    nn.Module.__init__(tm)
    tm.trunk = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    tm.head = nn.Sequential()
    tm.head.add_module("drop", nn.Dropout(0.0))
    tm.head.add_module("proj", nn.Linear(768, 512, bias=False))
    with torch.no_grad():
        tm.trunk.cls_token.normal_(0, 0.02)
        tm.trunk.pos_embed.normal_(0, 0.02)
    tm = tm.double().eval().requires_grad_(False)
    x = torch.randn(a.batch, 3, 224, 224, dtype=torch.float64, requires_grad=True)
    g = torch.randn(a.batch, 512, dtype=torch.float64)
    f = tm.head(tm.trunk(x))
    (gx,) = torch.autograd.grad((f * g).sum(), [x])
    t = {"in.x": x.detach(), "gout.features": g, "out.features": f.detach(), "grad.in.x": gx}
    for k, v in tm.state_dict().items():
        t["param." + k] = v
    t = {k: v.float().contiguous() for k, v in t.items()}
    case = {"module": "open_clip TimmModel(vit_base_patch16_224)", "img_size": 224, "patch": 16,
            "width": 768, "depth": 12, "heads": 12, "embed_dim": 512, "proj_bias": False,
            "notes": "full-size tower, random weights (scripts/make_vit_full_case.py)"}
    os.makedirs(os.path.join(a.out, "vit"), exist_ok=True)
    save_file(t, os.path.join(a.out, "vit", "vit_b16_full.safetensors"), {"case": json.dumps(case)})
    sd = {"visual." + k: v.float() for k, v in tm.state_dict().items()}
    sd["text.transformer.embeddings.word_embeddings.weight"] = torch.zeros(4, 8)
    sd["logit_scale"] = torch.tensor(4.6)
    torch.save(sd, os.path.join(a.out, "open_clip_pytorch_model.bin"))
    print("wrote", a.out)


if __name__ == "__main__":
    main()
