#!/usr/bin/env bash
# `medvae-fast data prepare` throughput against the reference MedVAE loaders on the same files,
# side by side in one run.
#
#   scripts/bench_prepare.sh [N_PNG=200] [VOLUME_COPIES=3]
#
# Generates N real-derived 512x512 PNGs (the sample CT/MR slices resized with Pillow's bicubic
# filter and put through the 8 flips/rotations) and VOLUME_COPIES copies of each sample NIfTI
# volume (MNI152 template, stat map, anatomical T1: MRI; the CT volume: CT), then times:
#   * medvae-fast (release) `data prepare` with --workers 1 and --workers $(nproc): decode,
#     preprocess and write f16 shards;
#   * the reference loaders (medvae.utils.loaders: load_2d_finetune, load_mri_3d_finetune,
#     load_ct_3d_finetune) called on every file, in one process (torch threads = 1, like a
#     DataLoader worker) and in a pool of $(nproc) processes. Each result is checked not to be
#     the all-zero image the reference returns on error.
# Reported: files/s for each and the ratio. The Rust numbers include process start, CSV
# reading and writing the shards; the Python numbers exclude interpreter start and imports.
#
# Environment: PYTHON (default /opt/tb/bin/python, needs torch, monai, nibabel, medvae),
# CARGO_TARGET_DIR (where the release binary is built), BENCH_DIR (work folder; default a new
# temp folder, removed at the end).
set -euo pipefail

N_PNG=${1:-200}
COPIES=${2:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-/opt/tb/bin/python}
CORES=$(nproc)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$TARGET/release/medvae-fast

if [[ -n "${BENCH_DIR:-}" ]]; then
  WORK=$BENCH_DIR
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d /tmp/medvae-bench-prepare.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi

echo "== building medvae-fast (release)"
(cd "$ROOT" && cargo build --release -q -p medvae-fast)

echo "== generating $N_PNG PNGs (512x512) and $COPIES copies of each sample volume in $WORK"
"$PY" - "$ROOT" "$WORK" "$N_PNG" "$COPIES" <<'EOF'
import shutil, sys
from pathlib import Path
import numpy as np
from PIL import Image

root, work, n_png, copies = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
(work / "png").mkdir(parents=True, exist_ok=True)
(work / "nii").mkdir(parents=True, exist_ok=True)
sources = []
for name in ["ct_slice_u16.png", "mr_slice_u8.png", "mr_slice_rgb.png"]:
    img = Image.open(root / "samples" / "2d" / name)
    if img.mode == "I;16":
        a = np.asarray(img, dtype=np.uint16).astype(np.float32)
        big = np.asarray(Image.fromarray(a, mode="F").resize((512, 512), Image.BICUBIC))
        sources.append(("I;16", np.clip(np.round(big), 0, 65535).astype(np.uint16)))
    else:
        sources.append((img.mode, np.asarray(img.resize((512, 512), Image.BICUBIC))))
rows = ["image_uuid,split"]
for i in range(n_png):
    mode, a = sources[i % len(sources)]
    k = (i // len(sources)) % 8
    a = np.rot90(a, k % 4)
    if k >= 4:
        a = a[:, ::-1]
    a = np.ascontiguousarray(a)
    if mode == "I;16":
        out = Image.frombytes("I;16", (a.shape[1], a.shape[0]), a.astype("<u2").tobytes())
    else:
        out = Image.fromarray(a, mode=mode)
    name = f"img{i:05d}.png"
    out.save(work / "png" / name)
    rows.append(f"{name},{'val' if i % 10 == 9 else 'train'}")
(work / "png.csv").write_text("\n".join(rows) + "\n")

mri = ["mni152_t1_ras_u8.nii.gz", "stat_las_f32.nii.gz", "anatomical_las_i16be.nii"]
ct = ["ct_small_vol_lps_i16.nii.gz"]
for kind, names in [("mri", mri), ("ct", ct)]:
    rows = ["image_uuid,split"]
    for c in range(copies):
        for name in names:
            dst = f"c{c}_{name}"
            shutil.copy(root / "samples" / "3d" / name, work / "nii" / dst)
            rows.append(f"{dst},train")
    (work / f"{kind}.csv").write_text("\n".join(rows) + "\n")
EOF

cat > "$WORK/png.yaml" <<EOF
datasets:
  - {csv: $WORK/png.csv, data_dir: $WORK/png, kind: png2d}
EOF
cat > "$WORK/nii.yaml" <<EOF
datasets:
  - {csv: $WORK/mri.csv, data_dir: $WORK/nii, kind: mri3d}
  - {csv: $WORK/ct.csv, data_dir: $WORK/nii, kind: ct3d}
EOF
N_VOL=$(( $(wc -l < "$WORK/mri.csv") + $(wc -l < "$WORK/ct.csv") - 2 ))

# Seconds taken by a command (wall clock).
seconds() {
  local t0 t1
  t0=$(date +%s.%N)
  "$@" > /dev/null || { echo "failed: $*" >&2; return 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", b - a }' 
}

# Reference loaders on every file of a CSV: prints the seconds taken.
reference() { # kind csv data_dir processes
  "$PY" - "$@" <<'EOF'
import os, sys, time, warnings
os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore")  # MONAI deprecation notices
import torch
torch.set_num_threads(1)
from multiprocessing import get_context
from medvae.utils.loaders import load_2d_finetune, load_mri_3d_finetune, load_ct_3d_finetune

kind, csv, data_dir, procs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
LOADERS = {"png2d": load_2d_finetune, "mri3d": load_mri_3d_finetune, "ct3d": load_ct_3d_finetune}

def load(path):
    torch.set_num_threads(1)
    x = LOADERS[kind](path)
    # the reference returns zeros instead of raising: a silent failure would flatter it
    if not bool(torch.any(x != 0)):
        raise SystemExit(f"reference loader failed on {path}")
    return tuple(x.shape)

paths = [os.path.join(data_dir, l.split(",")[0]) for l in open(csv).read().splitlines()[1:] if l]
load(paths[0])  # warm-up: lazy imports, first-call setup
t0 = time.perf_counter()
if procs == 1:
    shapes = [load(p) for p in paths]
else:
    with get_context("fork").Pool(procs) as pool:
        shapes = pool.map(load, paths, chunksize=4)
print(f"{time.perf_counter() - t0:.4f}")
EOF
}

rate() { awk -v n="$1" -v t="$2" 'BEGIN { printf "%.1f", n / t }'; }
ratio() { awk -v r="$1" -v p="$2" 'BEGIN { printf "%.2f", p / r }'; }

row() { # label files rust_seconds python_seconds
  printf "%-34s %8s files/s  %8s files/s  x%s\n" "$1" "$(rate "$2" "$3")" "$(rate "$2" "$4")" "$(ratio "$3" "$4")"
}

echo "== timing (machine: $(nproc) cores, $(uname -m); load now: $(cut -d' ' -f1-3 /proc/loadavg))"
printf "%-34s %16s  %16s  %s\n" "" "medvae-fast" "reference" "speed-up"
for workers in 1 "$CORES"; do
  rust_png=$(seconds "$BIN" data prepare --config "$WORK/png.yaml" --out "$WORK/out_png" --workers "$workers")
  ref_png=$(reference png2d "$WORK/png.csv" "$WORK/png" "$workers")
  row "PNG 512² -> 384² ($N_PNG), $workers worker(s)" "$N_PNG" "$rust_png" "$ref_png"
  rust_nii=$(seconds "$BIN" data prepare --config "$WORK/nii.yaml" --out "$WORK/out_nii" --workers "$workers")
  ref_mri=$(reference mri3d "$WORK/mri.csv" "$WORK/nii" "$workers")
  ref_ct=$(reference ct3d "$WORK/ct.csv" "$WORK/nii" "$workers")
  ref_nii=$(awk -v a="$ref_mri" -v b="$ref_ct" 'BEGIN { printf "%.4f", a + b }')
  row "NIfTI ($N_VOL volumes), $workers worker(s)" "$N_VOL" "$rust_nii" "$ref_nii"
done
