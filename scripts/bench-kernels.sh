#!/usr/bin/env bash
# Compare the CPU kernels with PyTorch on the same machine and thread count.
#
# Runs the criterion benches `conv` (and `norm`, if benches/benches/norm.rs exists) and then
# scripts/torch_kernels_bench.py, ROUNDS times back to back (the machine is noisy: compare
# rounds, not single numbers), and prints ours / PyTorch per bench:
#   conv3x3_128/{forward,fwd_bwd}     Conv2d(128, 128, 3, padding=1) on 1x128x128x128
#   conv3x3s2_128/{forward,fwd_bwd}   F.pad(0,1,0,1) + Conv2d(128, 128, 3, stride=2)
#   gn_silu_128/{forward,fwd_bwd}     GroupNorm(32, 128) + SiLU (criterion groups whose name
#                                     contains "gn_silu")
# PyTorch is timed in channels_last (our layout) and NCHW; the ratio uses the faster one.
#
# Environment: THREADS (default 2), ROUNDS (default 2), TORCH_PYTHON (default
# /opt/tb/bin/python), CARGO_TARGET_DIR (criterion results are read from there).
set -euo pipefail
cd "$(dirname "$0")/.."

THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-2}
TORCH_PYTHON=${TORCH_PYTHON:-/opt/tb/bin/python}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
export RAYON_NUM_THREADS=$THREADS

benches=(conv)
[[ -f benches/benches/norm.rs ]] && benches+=(norm)

results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
echo "date: $(date -Is)  host: $(uname -n)  threads: $THREADS  rounds: $ROUNDS"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)  load: $(cut -d' ' -f1-3 /proc/loadavg)"

for round in $(seq 1 "$ROUNDS"); do
  marker="$results/start-$round"
  touch "$marker"
  for b in "${benches[@]}"; do
    echo "== round $round: cargo bench --bench $b" >&2
    cargo bench -q -p medvae-benches --bench "$b" -- --noplot >&2
  done
  # Criterion keeps only its latest estimate per bench: record this round's medians now.
  find "$TARGET_DIR/criterion" -path '*/new/estimates.json' -newer "$marker" |
    while read -r f; do
      id=${f#"$TARGET_DIR/criterion/"}
      id=${id%/new/estimates.json}
      median_ns=$("$TORCH_PYTHON" -c 'import json,sys; print(json.load(open(sys.argv[1]))["median"]["point_estimate"])' "$f")
      printf '%s\t%s\n' "$id" "$median_ns"
    done >"$results/ours-$round.tsv"
  echo "== round $round: PyTorch ($TORCH_PYTHON)" >&2
  "$TORCH_PYTHON" scripts/torch_kernels_bench.py --threads "$THREADS" >"$results/torch-$round.jsonl"
  echo "load after round $round: $(cut -d' ' -f1-3 /proc/loadavg)"
done

"$TORCH_PYTHON" - "$results" "$ROUNDS" <<'PY'
import json, sys
results, rounds = sys.argv[1], int(sys.argv[2])
print(f"{'round':>5} {'bench':<28} {'ours ms':>9} {'torch CL':>9} {'torch NCHW':>10} {'ratio':>6}")
for r in range(1, rounds + 1):
    torch = {}
    for line in open(f"{results}/torch-{r}.jsonl"):
        rec = json.loads(line)
        torch.setdefault(rec["bench"], {})[rec["memory_format"]] = rec["median_ms"]
    for line in sorted(open(f"{results}/ours-{r}.tsv")):
        crit_id, median_ns = line.rstrip("\n").split("\t")
        group, _, bench = crit_id.rpartition("/")
        key = f"gn_silu_128/{bench}" if "gn_silu" in group else f"{group}/{bench}"
        ours = float(median_ns) / 1e6
        t = torch.get(key, {})
        cl, nchw = t.get("channels_last"), t.get("nchw")
        best = min(v for v in (cl, nchw) if v is not None) if t else None
        ratio = f"{ours / best:6.2f}" if best else "     -"
        fmt = lambda v: f"{v:9.2f}" if v is not None else "        -"
        print(f"{r:>5} {crit_id:<28} {ours:9.2f} {fmt(cl)} {fmt(nchw):>10} {ratio}")
print("ratio = ours / min(torch channels_last, torch NCHW); < 1 means faster than PyTorch")
PY
