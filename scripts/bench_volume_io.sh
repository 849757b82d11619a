#!/usr/bin/env bash
# The file side of 3D inference against the reference, side by side in one run: reading and
# preprocessing a CT volume (medvae-fast's `load_inference` against medvae 0.1.7's `load_ct_3d`,
# MONAI) and writing a float32 .nii.gz of the preprocessed size (ours against nibabel).
#
#   scripts/bench_volume_io.sh [REPS=3]
#
# Writes a 512x512x300 int16 CT-like volume in LPS order (80 MB gzipped) with nibabel, then runs
# `cargo bench -p medvae-benches --bench volume_io` on it (criterion, 10 samples, 2 threads)
# and scripts/torch_volume_io_bench.py (REPS repetitions, 1 torch thread: loading is
# single-threaded in both). Criterion's estimates and the reference's times are printed last.
#
# Environment: PYTHON (default /opt/tb/bin/python; needs numpy, nibabel, torch, monai,
# torchvision, polars, pillow and the medvae wheel installed with --no-deps), BENCH_DIR (work
# folder; default a new temp folder, removed at the end).
set -euo pipefail

REPS=${1:-3}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-/opt/tb/bin/python}
if [[ -n "${BENCH_DIR:-}" ]]; then
  WORK=$BENCH_DIR
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d /tmp/medvae-bench-volume-io.XXXXXX)
  trap 'rm -rf "$WORK"' EXIT
fi
VOL=$WORK/ct_512x512x300_lps_i16.nii.gz

echo "== $(date -u +%FT%TZ) on $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
[[ -f $VOL ]] || "$PY" "$ROOT/scripts/torch_volume_io_bench.py" --make "$VOL"
echo "== medvae-fast (criterion)"
(cd "$ROOT" && MEDVAE_BENCH_VOLUME=$VOL RAYON_NUM_THREADS=2 \
  cargo bench -q -p medvae-benches --bench volume_io 2>&1) | tee "$WORK/ours.log" | grep -E "^volume_io|time:|preprocessed"
echo "== reference (medvae 0.1.7 load_ct_3d, nibabel save)"
"$PY" "$ROOT/scripts/torch_volume_io_bench.py" "$VOL" --reps "$REPS" 2>/dev/null | tee "$WORK/ref.json"
echo "== summary (seconds)"
"$PY" - "$WORK/ours.log" "$WORK/ref.json" <<'PYEOF'
import json, re, sys
ours = {}
name = None
for line in open(sys.argv[1]):
    m = re.match(r"volume_io/(\S+)", line.strip())
    if m:
        name = m.group(1)
    m = re.search(r"time:\s+\[(\S+) (\S+) (\S+) (\S+) (\S+) (\S+)\]", line)
    if m and name:
        v, unit = float(m.group(3)), m.group(4)
        ours[name] = v / 1000 if unit == "ms" else v
ref = json.loads(open(sys.argv[2]).read())
rows = [("read + preprocess CT", ours.get("load_inference_ct"), min(ref["load_ct_3d_s"])),
        ("write float32 .nii.gz", ours.get("write_nii_gz"), min(ref["nib_save_gz_s"]))]
print(f"{'':24} {'medvae-fast':>12} {'reference (min)':>16} {'ratio':>6}")
for what, o, r in rows:
    print(f"{what:24} {o:12.2f} {r:16.2f} {o / r:6.2f}")
PYEOF
