#!/usr/bin/env bash
# Side-by-side CPU timing of the model workloads: medvae-fast bench vs PyTorch
# (shared/bench/torch_baseline.py), same machine, same thread count, same config
# (medvae_4_1_2d, random weights), interleaved ROUNDS times. Prints both JSON lines per round
# and the ratios (medvae-fast / PyTorch; < 1 is faster).
#
#   PYTHON=/opt/tb/bin/python ROUNDS=2 scripts/bench-model.sh [SIZE] [THREADS]
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-128}
THREADS=${2:-2}
ROUNDS=${ROUNDS:-2}
PYTHON=${PYTHON:-python3}
BASELINE=${BASELINE:-../shared/bench/torch_baseline.py}
cargo build --release -q -p medvae-fast
BIN=${CARGO_TARGET_DIR:-target}/release/medvae-fast
for r in $(seq "$ROUNDS"); do
  ours=$(/usr/bin/time -f '%M' -o /tmp/bench-ours.rss "$BIN" bench --size "$SIZE" --threads "$THREADS" --only encode,ae_fwd_bwd)
  theirs=$(OMP_NUM_THREADS=$THREADS /usr/bin/time -f '%M' -o /tmp/bench-torch.rss "$PYTHON" "$BASELINE" \
    --device cpu --threads "$THREADS" --size "$SIZE" --only encode,ae_fwd_bwd | tail -n 1)
  echo "round $r medvae-fast: $ours (max RSS $(cat /tmp/bench-ours.rss) KiB)"
  echo "round $r pytorch:     $theirs (max RSS $(cat /tmp/bench-torch.rss) KiB)"
  "$PYTHON" - "$ours" "$theirs" <<'PY'
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for k in ("encode", "ae_fwd_bwd"):
    for stat in ("median_s", "min_s"):
        print(f"  {k:11s} {stat:8s} medvae-fast {a[k][stat]:.3f} s  pytorch {b[k][stat]:.3f} s  ratio {a[k][stat]/b[k][stat]:.2f}")
PY
done
