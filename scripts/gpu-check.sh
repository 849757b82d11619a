#!/usr/bin/env bash
# gpu-check.sh — the one prepared command for a lent H100/H200: build, CUDA parity tests,
# golden verification on CUDA, kernel and training-step timings (ours and PyTorch eager on the
# same GPU). Every step is time-boxed and its status recorded; a failing step never stops the
# script. Logs go to $OUT/gpu-check/ (OUT defaults to ./out); a summary table is printed LAST.
# Meant to finish in under 8 minutes (MEDVAE_GPU_CHECK_BUDGET seconds, default 450).
#
#   scripts/gpu-check.sh            on the GPU machine, from the repository root
#   scripts/gpu-check.sh --quick    parity (kernels, model, stage 1, resume), conv timings and the
#                                   BF16 step with its kernel profile only (~1 min): a check after
#                                   a fix, when little device time is left (a cold start alone can
#                                   take 2 minutes)
#   scripts/gpu-check.sh --prepare  on a build machine (no GPU needed): build release binaries
#                                   and precompile the kernels for sm_90 into
#                                   target/gpu-prebuilt/, and fill .bench/ (baseline script,
#                                   medvae wheel, golden cases). The lent machines have no
#                                   cargo: carry both folders; the check then runs the prebuilt
#                                   binaries (as on the H200, 2026-11-27: ~2 min a call).
#
# Environment (all optional):
#   OUT                     output folder (default ./out)
#   MEDVAE_GOLDEN           golden cases (default: shared/golden or ../shared/golden)
#   MEDVAE_PREBUILT         prebuilt folder (default target/gpu-prebuilt)
#   MEDVAE_PTX_CACHE        kernel image cache (default: the prebuilt ptx-cache if present)
#   MEDVAE_NVRTC_DIR        where libnvrtc.so* lives, if not found automatically
#   MEDVAE_WHEEL            medvae wheel for the PyTorch baseline (else searched in shared/bench)
#   MEDVAE_GPU_CHECK_ARCH   architecture for --prepare (default sm_90)
#   MEDVAE_SKIP_TORCH       set to skip the PyTorch baseline (a rerun on the same machine kind)
set -u

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT" || exit 1
PREBUILT="${MEDVAE_PREBUILT:-$ROOT/target/gpu-prebuilt}"

# ------------------------------------------------------------------ --prepare (build machine)
if [ "${1:-}" = "--prepare" ]; then
  set -e
  arch="${MEDVAE_GPU_CHECK_ARCH:-sm_90}"
  # A fresh cache: images of older kernel sources would only add to what the device call carries.
  rm -rf "$PREBUILT/ptx-cache"
  mkdir -p "$PREBUILT/bin" "$PREBUILT/ptx-cache"
  cargo build --release -p medvae-fast
  cargo build --release -p medvae-runtime --example cuda_bench
  cargo build --release -p medvae-fast --example kernels
  # The parity test binary: ask cargo where it put it.
  parity="$(cargo test --release -p medvae-runtime --test cuda_parity --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*cuda_parity[^"]*\)".*/\1/p' | tail -1)"
  cp target/release/medvae-fast "$PREBUILT/bin/"
  cp target/release/examples/cuda_bench target/release/examples/kernels "$PREBUILT/bin/"
  [ -n "$parity" ] && cp "$parity" "$PREBUILT/bin/cuda_parity"
  for t in cuda_model cuda_stage1 cuda_stage2 cuda_lpips cuda_train data_parallel; do
    exe="$(cargo test --release -p medvae-model --test "$t" --no-run --message-format=json 2>/dev/null |
      sed -n "s/.*\"executable\":\"\([^\"]*$t[^\"]*\)\".*/\1/p" | tail -1)"
    [ -n "$exe" ] && cp "$exe" "$PREBUILT/bin/$t"
  done
  strip "$PREBUILT"/bin/* 2>/dev/null || true
  # Which source the binaries are: the device machine's copy of the tree has no .git to ask.
  { git rev-parse --short HEAD 2>/dev/null || echo unknown
    [ -n "$(git status --porcelain 2>/dev/null)" ] && echo "(with uncommitted changes)"
    date -u +%Y-%m-%dT%H:%MZ; } | paste -sd' ' >"$PREBUILT/COMMIT"
  # Precompiled kernel images (CUBIN for $arch): the GPU machine then needs no NVRTC. NVRTC
  # here comes from NVIDIA's wheel (scripts/install-nvrtc.sh installs it once, then only prints
  # the library path).
  eval "$(bash scripts/install-nvrtc.sh "${MEDVAE_NVRTC_DIR:-/opt/nvrtc}")" || true
  MEDVAE_PTX_CACHE="$PREBUILT/ptx-cache" "$PREBUILT/bin/kernels" warm-cache --arch "$arch" ||
    echo "warning: could not precompile kernels (is NVRTC on LD_LIBRARY_PATH? see scripts/install-nvrtc.sh)"
  # The static main-loop mix of the tensor-core kernels (instructions per MMA, from the SASS),
  # for the summary to show beside the measured rates.
  eval "$(bash scripts/install-nvrtc.sh "${MEDVAE_NVRTC_DIR:-/opt/nvrtc}" --with-nvdisasm)" || true
  mkdir -p .bench
  "$PREBUILT/bin/medvae-fast" kernels compile --arch sm_90 --sass --module conv_bf16 --module conv_wgmma \
    --module gemm_bf16 2>/dev/null | grep -B1 "main loop" | grep -v "^--" | paste - - |
    awk '{ for (i = 1; i <= NF; i++) { if ($i == "instr") n = $(i - 1); if ($i == "MMA") m = $(i - 1) }
           printf "%-28s %4d instr %3d MMA %6.1f other/MMA\n", $1, n, m, (n - m) / m }' \
    >.bench/sass-mainloops.txt || rm -f .bench/sass-mainloops.txt
  # What the check reads besides the binaries, in .bench/ (git-ignored; carry it too): the
  # PyTorch baseline script, the medvae wheel it imports, and the golden cases that fit the
  # device tool's 64 MiB (the 23 MB 3D autoencoder case is left out).
  mkdir -p .bench/golden
  for d in shared ../shared; do
    [ -f "$d/bench/torch_baseline.py" ] && cp "$d/bench/torch_baseline.py" .bench/
    if [ -d "$d/golden" ]; then
      cp "$d/golden/README.md" .bench/golden/ 2>/dev/null || true
      for sub in ops vit; do [ -d "$d/golden/$sub" ] && cp -r "$d/golden/$sub" .bench/golden/; done
      mkdir -p .bench/golden/modules
      find "$d/golden/modules" -name '*.safetensors' ! -name 'autoencoder_kl_3d*' \
        -exec cp {} .bench/golden/modules/ \; 2>/dev/null || true
    fi
  done
  py="$(command -v /opt/tb/bin/python || command -v python3 || true)"
  if [ -n "$py" ] && ! ls .bench/medvae-*.whl >/dev/null 2>&1; then
    "$py" -m pip download -q --no-deps medvae==0.1.7 -d .bench ||
      echo "warning: could not download the medvae wheel (the PyTorch baseline will be skipped)"
  fi
  du -sh "$PREBUILT" .bench
  ls -la "$PREBUILT/bin"
  echo "device call: carry [\"target/gpu-prebuilt\", \".bench\"], command:"
  echo "  MEDVAE_GOLDEN=\$PWD/.bench/golden bash scripts/gpu-check.sh"
  exit 0
fi

QUICK=""
[ "${1:-}" = "--quick" ] && QUICK=1

# ------------------------------------------------------------------ bookkeeping
OUT="${OUT:-$ROOT/out}"
LOG="$OUT/gpu-check"
mkdir -p "$LOG"
START=$(date +%s)
BUDGET="${MEDVAE_GPU_CHECK_BUDGET:-450}"
NAMES=()
STATES=()
SECS=()
NOTES=()

elapsed() { echo $(( $(date +%s) - START )); }
remaining() { echo $(( BUDGET - $(elapsed) )); }
record() { NAMES+=("$1"); STATES+=("$2"); SECS+=("$3"); NOTES+=("$4"); }

# run_step NAME LIMIT_SECONDS CMD... : time-boxed (never past the budget), logged, recorded.
run_step() {
  local name="$1" limit="$2"
  shift 2
  local left
  left=$(remaining)
  if [ "$left" -lt 15 ]; then
    record "$name" "SKIP" 0 "out of time budget"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit="$left"
  local t0=$SECONDS
  echo "== $name (limit ${limit}s): $*" | tee -a "$LOG/steps.log"
  timeout --kill-after=10 "$limit" "$@" >"$LOG/$name.log" 2>&1
  local rc=$?
  local dt=$(( SECONDS - t0 ))
  if [ $rc -eq 0 ] && grep -q "skipped: " "$LOG/$name.log"; then
    # the binaries pass without a usable GPU, saying why
    record "$name" "SKIP" "$dt" "$(grep -m1 -o 'skipped: .*' "$LOG/$name.log" | sed 's/^skipped: //' | cut -c1-70)"
  elif [ $rc -eq 0 ]; then
    record "$name" "OK" "$dt" "$(tail -n 1 "$LOG/$name.log" | cut -c1-70)"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    record "$name" "TIMEOUT" "$dt" "after ${limit}s, see $name.log"
  else
    record "$name" "FAIL" "$dt" "rc $rc: $(grep -m1 -iE 'error|panicked|fail' "$LOG/$name.log" | cut -c1-60)"
  fi
  return $rc
}

# ------------------------------------------------------------------ environment
{
  echo "date: $(date -u)"
  echo "host: $(hostname)"
  nvidia-smi 2>&1 || echo "nvidia-smi not available"
  echo "cargo: $(command -v cargo || echo none)"
  echo "python3: $(command -v python3 || echo none)"
} >"$LOG/environment.log" 2>&1
GPU_NAME="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)"
record "environment" "INFO" 0 "${GPU_NAME:-no nvidia-smi}"

# NVRTC: cudarc loads libnvrtc.so / libnvrtc.so.12; find one (torch ships it in its
# nvidia-cuda-nvrtc wheel) and expose it under the bare name too.
find_nvrtc() {
  local dirs=()
  [ -n "${MEDVAE_NVRTC_DIR:-}" ] && dirs+=("$MEDVAE_NVRTC_DIR" "$MEDVAE_NVRTC_DIR/nvidia/cuda_nvrtc/lib")
  dirs+=(/opt/nvrtc/nvidia/cuda_nvrtc/lib)
  if command -v python3 >/dev/null 2>&1; then
    while IFS= read -r d; do dirs+=("$d"); done < <(python3 - 2>/dev/null <<'PY'
import os, site, sys
roots = set(site.getsitepackages() + [site.getusersitepackages()] + sys.path)
for r in roots:
    for sub in ("nvidia/cuda_nvrtc/lib", "nvidia/cu13/lib", "torch/lib"):
        p = os.path.join(r, sub)
        if os.path.isdir(p):
            print(p)
PY
)
  fi
  dirs+=(/usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/lib/x86_64-linux-gnu)
  local d f
  for d in "${dirs[@]}"; do
    for f in "$d"/libnvrtc.so.12 "$d"/libnvrtc.so.13 "$d"/libnvrtc.so "$d"/libnvrtc.so.1[0-9]*; do
      [ -e "$f" ] && { echo "$f"; return 0; }
    done
  done
  return 1
}
if NVRTC_LIB="$(find_nvrtc)"; then
  mkdir -p "$OUT/nvrtc-lib"
  ln -sf "$NVRTC_LIB" "$OUT/nvrtc-lib/libnvrtc.so"
  export LD_LIBRARY_PATH="$OUT/nvrtc-lib:$(dirname "$NVRTC_LIB")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  record "nvrtc" "INFO" 0 "$NVRTC_LIB"
else
  record "nvrtc" "INFO" 0 "not found: needs the prebuilt kernel cache"
fi
if [ -z "${MEDVAE_PTX_CACHE:-}" ]; then
  if [ -d "$PREBUILT/ptx-cache" ]; then
    export MEDVAE_PTX_CACHE="$PREBUILT/ptx-cache"
  else
    export MEDVAE_PTX_CACHE="$OUT/ptx-cache"
  fi
fi

# ------------------------------------------------------------------ build (or prebuilt)
BIN=""
if command -v cargo >/dev/null 2>&1; then
  if run_step build 240 bash -c 'cargo build --release --offline -p medvae-fast &&
      cargo build --release --offline -p medvae-runtime --example cuda_bench &&
      cargo test --release --offline -p medvae-runtime --test cuda_parity --no-run &&
      cargo test --release --offline -p medvae-model --test cuda_model --test cuda_stage1 \
        --test cuda_stage2 --test cuda_lpips --test cuda_train --test data_parallel --no-run'; then
    BIN="$ROOT/target/release"
  fi
fi
if [ -z "$BIN" ] && [ -x "$PREBUILT/bin/medvae-fast" ]; then
  BIN="$PREBUILT/bin"
  record "prebuilt" "INFO" 0 "$BIN, built from $(cat "$PREBUILT/COMMIT" 2>/dev/null || echo 'an unrecorded commit')"
fi
if [ -z "$BIN" ]; then
  record "binaries" "FAIL" 0 "no cargo build and no $PREBUILT (run --prepare)"
fi
MEDVAE_BIN="$BIN/medvae-fast"
BENCH_BIN="$BIN/cuda_bench"
[ -x "$BENCH_BIN" ] || BENCH_BIN="$BIN/examples/cuda_bench"
if [ -x "$BIN/cuda_parity" ]; then
  PARITY_CMD=("$BIN/cuda_parity")
else
  PARITY_CMD=(cargo test --release --offline -p medvae-runtime --test cuda_parity --)
fi
# model-level parity binaries: prebuilt, else through cargo (run as: bash -c "$MODEL_TEST" BIN NAME).
MODEL_TEST='if [ -x "$0/$1" ]; then exec "$0/$1" --nocapture --test-threads 1;
  else exec cargo test --release --offline -p medvae-model --test "$1" -- --nocapture --test-threads 1; fi'

# ------------------------------------------------------------------ checks
if [ -n "$BIN" ]; then
  # Launches are timed one by one (MEDVAE_CUDA_PROFILE) so that the last test can list the
  # kernel entry points no parity test reached.
  run_step parity 150 env MEDVAE_CUDA_PROFILE=1 "${PARITY_CMD[@]}" --nocapture --test-threads 1 \
    --skip conv_tiles
  # The candidate conv tiles and the wgmma kernels, never yet run on a card, each in a process of
  # its own: a fault there (a trap, a bad address) poisons the CUDA context, and must not take
  # the checks of the kernels in use with it.
  run_step tile-parity 60 "${PARITY_CMD[@]}" --nocapture --test-threads 1 conv_tiles::every_streamed_tile
  run_step wgmma-parity 60 "${PARITY_CMD[@]}" --nocapture --test-threads 1 conv_tiles::wgmma
  # The streamed TF32 convolutions and GEMMs (conv_tf32.cu, gemm_tf32.cu; off by default, written
  # 2026-11-28 without a card), likewise apart.
  run_step tf32-parity 90 "${PARITY_CMD[@]}" --nocapture --test-threads 1 conv_tiles::tf32_streamed
  run_step model-parity 120 bash -c "$MODEL_TEST" "$BIN" cuda_model
  run_step lpips-parity 60 bash -c "$MODEL_TEST" "$BIN" cuda_lpips
  run_step stage1-parity 150 bash -c "$MODEL_TEST" "$BIN" cuda_stage1
  run_step stage2-parity 60 bash -c "$MODEL_TEST" "$BIN" cuda_stage2
  run_step train-resume 90 bash -c "$MODEL_TEST" "$BIN" cuda_train
  # Data-parallel replicas (2026-11-28, written without a card): two on cuda:0 in two threads.
  run_step data-parallel 60 bash -c "$MODEL_TEST" "$BIN" data_parallel
fi
if [ -n "$BIN" ] && [ -n "$QUICK" ]; then
  run_step bench-kernels 60 "$BENCH_BIN" --batch 8 --reps 10 --only conv,tiles --json "$LOG/bench-kernels.json"
  run_step ours-bf16 60 "$MEDVAE_BIN" bench --device cuda --precision bf16 \
    --model medvae_4_1_2d --size 256 --batch 8 --reps 5 --only encode,ae_fwd_bwd,stage1_step
  run_step profile-bf16 60 env MEDVAE_CUDA_PROFILE=1 "$MEDVAE_BIN" bench --device cuda \
    --precision bf16 --model medvae_4_1_2d --size 256 --batch 8 --reps 1 --only stage1_step
fi
if [ -n "$BIN" ] && [ -z "$QUICK" ]; then

  GOLDEN="${MEDVAE_GOLDEN:-}"
  for g in "$ROOT/shared/golden" "$ROOT/../shared/golden"; do
    [ -z "$GOLDEN" ] && [ -d "$g" ] && GOLDEN="$g"
  done
  if [ -n "$GOLDEN" ]; then
    run_step verify-cuda 90 "$MEDVAE_BIN" verify --golden "$GOLDEN" --device cuda
  else
    record "verify-cuda" "SKIP" 0 "no golden folder (set MEDVAE_GOLDEN)"
  fi

  # Inference on the bundled 2D samples: CUDA (fp32) against the CPU, same random weights; then
  # `decode` of z latents on both, and `eval`'s summaries.
  run_step infer-parity 90 bash -c '
    "$0" infer -i samples/2d -o "$1/infer-cpu" --modality xray --model medvae_4_1_2d \
      --random-weights --decode >/dev/null 2>&1 &&
    "$0" infer -i samples/2d -o "$1/infer-cuda" --modality xray --model medvae_4_1_2d \
      --random-weights --decode --device cuda &&
    python3 scripts/compare_nifti.py "$1/infer-cpu" "$1/infer-cuda" --tol 1e-4 &&
    "$0" infer -i samples/2d -o "$1/infer-cuda2" --modality xray --model medvae_4_1_2d \
      --random-weights --decode --device cuda:0,cuda:0 &&
    python3 scripts/compare_nifti.py "$1/infer-cpu" "$1/infer-cuda2" --tol 1e-4 &&
    "$0" infer -i samples/2d -o "$1/z" --modality xray --model medvae_4_1_2d \
      --random-weights --latent z >/dev/null 2>&1 &&
    "$0" decode -i "$1/z" -o "$1/decode-cpu" --model medvae_4_1_2d --random-weights >/dev/null 2>&1 &&
    "$0" decode -i "$1/z" -o "$1/decode-cuda" --model medvae_4_1_2d --random-weights --device cuda &&
    python3 scripts/compare_nifti.py "$1/decode-cpu" "$1/decode-cuda" --tol 1e-4 &&
    "$0" eval -i samples/2d --model medvae_4_1_2d --random-weights --json "$1/eval-cpu.json" >/dev/null 2>&1 &&
    "$0" eval -i samples/2d --model medvae_4_1_2d --random-weights --device cuda --json "$1/eval-cuda.json" &&
    python3 scripts/compare_eval_json.py "$1/eval-cpu.json" "$1/eval-cuda.json" --tol 1e-4' \
    "$MEDVAE_BIN" "${TMPDIR:-/tmp}/medvae-gpu-check"
  run_step bench-kernels 150 "$BENCH_BIN" --batch 8 --reps 10 --json "$LOG/bench-kernels.json"
  # The weight gradient's pixel split: blocks per SM the planner aims at (default 8, measured for
  # the mma.sync kernels on an H100). The wgmma kernels hold one block per SM, and every split
  # adds the whole dw tile atomically (~18M atomics a pass at 8), so fewer may win.
  run_step wgrad-splits 60 bash -c 'for b in 1 2 4 8; do echo "blocks/SM $b"
      MEDVAE_WGRAD_BLOCKS_PER_SM=$b "$0" --batch 8 --reps 10 --only conv | grep "Bf16 wgrad"; done' "$BENCH_BIN"

  for prec in tf32 bf16; do
    run_step "ours-$prec" 120 "$MEDVAE_BIN" bench --device cuda --precision "$prec" \
      --model medvae_4_1_2d --size 256 --batch 8 --reps 5 --only encode,ae_fwd_bwd,stage1_step
  done
  # The TF32 step on the streamed TF32 kernels (conv_tf32.cu: off by default until this A/B and
  # the parity above have run on a card; written 2026-11-28 without one).
  run_step ours-tf32-streamed 90 env MEDVAE_CONV_TF32=streamed "$MEDVAE_BIN" bench --device cuda \
    --precision tf32 --model medvae_4_1_2d --size 256 --batch 8 --reps 3 --only encode,ae_fwd_bwd,stage1_step
  # The same BF16 step with the older staged kernels, for the streamed/staged ratio of this run.
  run_step ours-bf16-staged 60 env MEDVAE_CONV_BF16=staged "$MEDVAE_BIN" bench --device cuda \
    --precision bf16 --model medvae_4_1_2d --size 256 --batch 8 --reps 3 --only ae_fwd_bwd,stage1_step
  # The same BF16 step with the thin (1-4 channel) SIMT convolutions on (off by default: slower
  # than the tensor-core kernels on the H200, 2026-11-28): their A/B.
  run_step ours-bf16-thin-on 60 env MEDVAE_CONV_THIN=on "$MEDVAE_BIN" bench --device cuda \
    --precision bf16 --model medvae_4_1_2d --size 256 --batch 8 --reps 3 --only ae_fwd_bwd,stage1_step
  # The data-parallel gradient average (peer-copy ring) of two ranks sharing the card: never
  # timed on a GPU yet; the host ring on the 2-core dev machine moves 0.34 GB/s per rank.
  run_step all-reduce 30 "$MEDVAE_BIN" bench --device cuda --only all_reduce --reps 5
  # Stage 2 (latent head through a ViT-B/16 BiomedCLIP-shaped tower, random weights).
  run_step ours-stage2 90 "$MEDVAE_BIN" bench --device cuda --precision bf16 \
    --model medvae_4_1_2d --size 256 --batch 8 --reps 3 --only stage2_step
  # The bundled quickstart finetune (200 steps, generator and discriminator) on CUDA and on the
  # CPU: the validation numbers must agree to rounding.
  # Run folders (checkpoints) stay out of $OUT: only logs come back.
  run_step finetune-cuda 90 bash -c 'set -o pipefail; "$0" finetune --config configs/quickstart_2d.yaml device=cuda \
      output_dir="$1/ft-cuda" overwrite=true 2>&1 | tail -n 4' "$MEDVAE_BIN" "${TMPDIR:-/tmp}/medvae-gpu-check"
  run_step finetune-cpu 120 bash -c 'set -o pipefail; "$0" finetune --config configs/quickstart_2d.yaml \
      output_dir="$1/ft-cpu" overwrite=true 2>&1 | tail -n 4' "$MEDVAE_BIN" "${TMPDIR:-/tmp}/medvae-gpu-check"
  # The 3D quickstart on CUDA (its slicing kernels were first written without a GPU).
  run_step finetune-3d-cuda 120 bash -c 'set -o pipefail; "$0" finetune --config configs/quickstart_3d.yaml \
      device=cuda output_dir="$1/ft-3d-cuda" overwrite=true 2>&1 | tail -n 4' "$MEDVAE_BIN" \
      "${TMPDIR:-/tmp}/medvae-gpu-check"
  # The same with the flash attention kernels instead of the GEMM path, and a kernel ranking.
  run_step ours-bf16-flash 90 env MEDVAE_ATTENTION=flash "$MEDVAE_BIN" bench --device cuda \
    --precision bf16 --model medvae_4_1_2d --size 256 --batch 8 --reps 3 --only ae_fwd_bwd
  # Out of memory must be a clear message naming the batch and size, not a crash.
  run_step oom-message 60 bash -c '"$0" bench --device cuda --precision bf16 --size 2048 --batch 64 \
    --reps 1 --only ae_fwd_bwd 2>&1 | grep -m1 "out of GPU memory"' "$MEDVAE_BIN"
  run_step profile-bf16 90 env MEDVAE_CUDA_PROFILE=1 "$MEDVAE_BIN" bench --device cuda \
    --precision bf16 --model medvae_4_1_2d --size 256 --batch 8 --reps 1 --only stage1_step
  # The BF16 step on each candidate block tile of the streamed mma.sync convolutions (forward and
  # weight gradient; the kernel-level sweep is the "tiles" part of bench-kernels), to choose
  # defaults. "off" is the mma.sync default tiles, "on", "overlap-all" and "s3" the other forms
  # of the Hopper wgmma kernels (the default on compute capability 9.0 is
  # MEDVAE_CONV_WGMMA=overlap, ours-bf16; "s3": 3-stage rings, two blocks per SM).
  run_step ours-bf16-tiles 140 bash -c 'rc=0; for t in off 256x128 128x128w4 128x128k64 on overlap-all s3; do
      printf "%s " "$t"; case $t in on|off|overlap-all|s3) export MEDVAE_CONV_WGMMA=$t; t=;; *) export MEDVAE_CONV_WGMMA=off;; esac
      if out="$(MEDVAE_CONV_TILE=$t MEDVAE_WGRAD_TILE=$t "$0" bench --device cuda --precision bf16 \
          --model medvae_4_1_2d --size 256 --batch 8 --reps 3 --only stage1_step 2>&1)"; then
        echo "$out" | grep -o "\"median_s\":[0-9.]*"
      else echo "failed: $(echo "$out" | tail -n 1 | cut -c1-90)"; rc=1; fi; done; exit $rc' "$MEDVAE_BIN"
  # Archive encoding: 6 copies of the MNI152 template (3 windows each) through the 3D model in
  # BF16 with --decode, reading ahead and writing behind (the default) against the stages one
  # after the other (MEDVAE_PIPELINE=off). Written 2026-11-29 without a card.
  run_step infer-overlap 150 bash -c 'set -o pipefail
    in="$1/overlap-in"; mkdir -p "$in"
    for i in 1 2 3 4 5 6; do cp samples/3d/mni152_t1_ras_u8.nii.gz "$in/mni_$i.nii.gz"; done
    for mode in on off; do rm -rf "$1/overlap-$mode"
      MEDVAE_PIPELINE=$mode "$0" infer -i "$in" -o "$1/overlap-$mode" --modality mri \
        --model medvae_4_1_3d --random-weights --decode --device cuda --precision bf16 2>&1 |
        grep -E "^(infer:|time in each stage)" | sed "s/^/pipeline $mode: /"; done' \
    "$MEDVAE_BIN" "${TMPDIR:-/tmp}/medvae-gpu-check"
fi

# ------------------------------------------------------------------ PyTorch eager baseline
TORCH_SCRIPT=""
for s in "$ROOT/.bench/torch_baseline.py" "$ROOT/shared/bench/torch_baseline.py" "$ROOT/../shared/bench/torch_baseline.py"; do
  [ -z "$TORCH_SCRIPT" ] && [ -f "$s" ] && TORCH_SCRIPT="$s"
done
if [ -n "${MEDVAE_SKIP_TORCH:-}" ] || [ -n "$QUICK" ]; then
  record "torch-baseline" "SKIP" 0 "MEDVAE_SKIP_TORCH set or --quick"
elif ! command -v python3 >/dev/null 2>&1 || ! python3 -c "import torch" >/dev/null 2>&1; then
  record "torch-baseline" "N/A" 0 "python3 with torch not available"
elif [ -z "$TORCH_SCRIPT" ]; then
  record "torch-baseline" "N/A" 0 "torch_baseline.py not found (shared/bench)"
else
  WHEEL="${MEDVAE_WHEEL:-}"
  if [ -z "$WHEEL" ]; then
    WHEEL="$(ls "$(dirname "$TORCH_SCRIPT")"/medvae-*.whl "$ROOT"/shared/bench/wheels/medvae-*.whl \
      "$ROOT"/.bench/medvae-*.whl 2>/dev/null | head -1)"
  fi
  if [ -z "$WHEEL" ] && ! python3 -c "import medvae" >/dev/null 2>&1; then
    record "torch-baseline" "N/A" 0 "no medvae wheel (MEDVAE_WHEEL) and medvae not installed"
  else
    wheel_arg=()
    [ -n "$WHEEL" ] && wheel_arg=(--medvae-wheel "$WHEEL")
    # The card's measured dense BF16 rate (cuBLAS), which issue #7's conv target refers to.
    run_step card-rate 30 python3 scripts/card_rate.py
    for prec in tf32 bf16; do
      run_step "torch-$prec" 100 python3 "$TORCH_SCRIPT" --device cuda --size 256 --batch 8 --reps 5 \
        --precision "$prec" --only encode,ae_fwd_bwd,stage1_step,conv3x3_128 "${wheel_arg[@]}"
    done
    run_step torch-stage2 90 python3 scripts/torch_stage2_bench.py --device cuda --precision bf16 \
      --size 256 --batch 8 --reps 3 "${wheel_arg[@]}"
    # 3D at 64³: time and peak memory of the AE step, ours (with and without recomputation)
    # against the published 3D model (which checkpoints encode and decode). The memory trace
    # names the allocation at each workload's peak (on stderr, in the log).
    if [ -n "$WHEEL" ] && [ -n "$BIN" ]; then
      run_step ours-3d 120 bash -c 'for r in "" --recompute; do MEDVAE_MEMORY_TRACE=1 "$0" bench --device cuda \
        --precision bf16 --model medvae_4_1_3d --size 64 --batch 1 --reps 3 --only ae_fwd_bwd,stage1_step $r |
        tail -n 1; done' "$MEDVAE_BIN"
      run_step torch-3d 60 python3 scripts/torch_3d_baseline.py --device cuda --size 64 \
        --precision bf16 --medvae-wheel "$WHEEL"
    fi
  fi
fi

# ------------------------------------------------------------------ summary (printed last)
{
  echo
  echo "gpu-check on ${GPU_NAME:-unknown GPU}, $(elapsed)s total, logs in $LOG"
  if [ -f "$LOG/bench-kernels.log" ]; then
    echo "-- kernel timings (median ms, TFLOP/s) --"
    grep -E "ms" "$LOG/bench-kernels.log" | grep -vE "^(error|warning)| tile " | head -80
    # The block-tile sweep, one line per shape and pass: the fastest tile against the default.
    if grep -q " tile " "$LOG/bench-kernels.log"; then
      echo "-- streamed BF16 block tiles (TFLOP/s): fastest vs the 128x128 default --"
      awk '$6 == "tile" { k = $2 " " $3 " " $8; if (!(k in bt) || $11 > bt[k]) { best[k] = $7; bt[k] = $11 }
             if ($7 == "128x128") def[k] = $11 }
           END { for (k in best) printf "%-28s %-11s %7.1f  (128x128 %7.1f)\n", k, best[k], bt[k], def[k] }' \
        "$LOG/bench-kernels.log" | sort
    fi
  fi
  if [ -f "$LOG/wgrad-splits.log" ]; then
    echo "-- BF16 weight gradient (TFLOP/s) by MEDVAE_WGRAD_BLOCKS_PER_SM --"
    awk '/^blocks\/SM/ { b = $2 } / wgrad / { printf "  %-22s blocks/SM %-2s %s\n", $2 " " $3, b, $(NF - 1) }' \
      "$LOG/wgrad-splits.log"
  fi
  if [ -s "$ROOT/.bench/sass-mainloops.txt" ]; then
    echo "-- main loops, static (SASS sm_90 at --prepare): instructions per k-tile --"
    grep -E "^conv_(fwd|wgrad)_bf16[sw]_128x128 |^conv_fwd_bf16w|^gemm_bf16s_128x128_nn" "$ROOT/.bench/sass-mainloops.txt"
  fi
  if [ -f "$LOG/card-rate.log" ] && [ -f "$LOG/bench-kernels.log" ]; then
    # Issue #7's first target as ratios: each BF16 convolution pass of bench-kernels against
    # the card's measured cuBLAS BF16 rate (default kernels, and the best tile or wgmma mode).
    python3 - "$LOG/card-rate.log" "$LOG/bench-kernels.log" <<'PY' || true
import json, re, sys
card = None
for line in open(sys.argv[1]):
    try:
        card = json.loads(line)["bf16_gemm_tflops"]
    except (ValueError, KeyError):
        pass
default, best = {}, {}
for line in open(sys.argv[2]):
    m = re.match(r"(conv3x3 \S+ \S+ b\d+) Bf16 (tile (\S+) )?(fwd|dgrad|wgrad)\s+[\d.]+ ms\s+([\d.]+) TFLOP/s", line)
    if not m:
        continue
    key, rate = f"{m.group(1)} {m.group(4)}", float(m.group(5))
    if m.group(2) is None:
        default[key] = rate
    if rate > best.get(key, (0, ""))[0]:
        best[key] = (rate, m.group(3) or "default")
if card and default:
    pct = sorted(100 * r / card for r in default.values())
    print(f"-- conv GEMMs vs the card's measured BF16 rate ({card:.0f} TFLOP/s, cuBLAS): "
          f"default kernels {pct[0]:.0f}-{pct[-1]:.0f} % (target >= 45 %)")
    for key in sorted(best):
        rate, which = best[key]
        print(f"   {key:<34} default {100 * default.get(key, 0) / card:5.1f} %  best {100 * rate / card:5.1f} % ({which})")
PY
  fi
  [ -f "$LOG/ours-bf16-tiles.log" ] && echo "-- ours  bf16 stage1_step by tile: $(tr '\n' ' ' <"$LOG/ours-bf16-tiles.log")"
  for prec in tf32 bf16; do
    [ -f "$LOG/torch-$prec.log" ] && echo "-- torch $prec: $(tail -n 1 "$LOG/torch-$prec.log" | cut -c1-300)"
    [ -f "$LOG/ours-$prec.log" ] && echo "-- ours  $prec: $(tail -n 1 "$LOG/ours-$prec.log" | cut -c1-400)"
  done
  [ -f "$LOG/infer-overlap.log" ] && grep "^pipeline" "$LOG/infer-overlap.log" | sed 's/^/-- infer 6 MNI volumes, bf16, --decode: /'
  [ -f "$LOG/ours-3d.log" ] && echo "-- ours  3d 64^3 bf16: $(grep -o '"median_s":[0-9.]*\|"peak_tensor_bytes":[0-9]*\|"recompute":[a-z]*' "$LOG/ours-3d.log" | tr '\n' ' ')"
  [ -f "$LOG/torch-3d.log" ] && echo "-- torch 3d 64^3 bf16: $(tail -n 1 "$LOG/torch-3d.log" | cut -c1-300)"
  if [ -f "$LOG/ours-3d.log" ] && [ -f "$LOG/torch-3d.log" ]; then
    # Issue #7's memory target, as one ratio: ours with recomputation against the checkpointed
    # reference, both AE forward + backward at 64³.
    python3 - "$LOG/ours-3d.log" "$LOG/torch-3d.log" <<'PY' || true
import json, sys
def objs(path):
    out = []
    for line in open(path):
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out
ours = [o for o in objs(sys.argv[1]) if o.get("recompute") and "ae_fwd_bwd" in o]
ref = [t for t in objs(sys.argv[2]) if t.get("ref", {}).get("peak_mem_bytes")]
if ours and ref:
    a, b = ours[-1]["ae_fwd_bwd"]["peak_tensor_bytes"], ref[-1]["ref"]["peak_mem_bytes"]
    verdict = "met" if a <= b else "NOT met"
    print(f"-- 3D 64^3 memory target, ours --recompute / torch checkpointed: "
          f"{a / 1e9:.2f} / {b / 1e9:.2f} GB = {a / b:.2f} ({verdict})")
PY
  fi
  [ -f "$LOG/ours-stage2.log" ] && echo "-- ours  stage2 b8 bf16: $(grep -o '"median_s":[0-9.]*\|"peak_tensor_bytes":[0-9]*' "$LOG/ours-stage2.log" | tr '\n' ' ')"
  [ -f "$LOG/torch-stage2.log" ] && echo "-- torch stage2 b8 bf16: $(grep -o '"median_s": [0-9.]*\|"peak_mem_bytes": [0-9]*' "$LOG/torch-stage2.log" | tr '\n' ' ')"
  for f in finetune-cuda finetune-cpu finetune-3d-cuda; do
    [ -f "$LOG/$f.log" ] && echo "-- $f: $(grep -E '^epoch' "$LOG/$f.log" | tail -n 1 | cut -c1-200)"
  done
  [ -f "$LOG/ours-bf16-flash.log" ] && echo "-- ours  bf16 flash attention: $(grep -o '"median_s":[0-9.]*' "$LOG/ours-bf16-flash.log" | head -1)"
  [ -f "$LOG/ours-bf16-staged.log" ] && echo "-- ours  bf16 staged kernels (ae_fwd_bwd, stage1_step): $(grep -o '"median_s":[0-9.]*' "$LOG/ours-bf16-staged.log" | tr '\n' ' ')"
  [ -f "$LOG/ours-tf32-streamed.log" ] && echo "-- ours  tf32 streamed kernels (encode, ae_fwd_bwd, stage1_step): $(grep -o '"median_s":[0-9.]*' "$LOG/ours-tf32-streamed.log" | tr '\n' ' ')"
  [ -f "$LOG/ours-bf16-thin-on.log" ] && echo "-- ours  bf16 thin convs on (ae_fwd_bwd, stage1_step): $(grep -o '"median_s":[0-9.]*' "$LOG/ours-bf16-thin-on.log" | tr '\n' ' ')"
  if [ -f "$LOG/profile-bf16.log" ]; then
    echo "-- kernel profile, bf16 stage1_step (serialised) --"
    grep -A12 "kernel profile" "$LOG/profile-bf16.log"
  fi
  for f in model-parity lpips-parity stage1-parity stage2-parity; do
    [ -f "$LOG/$f.log" ] && grep -E "rel err|worst" "$LOG/$f.log" | cut -c1-120
  done
  for f in tile-parity wgmma-parity tf32-parity; do
    [ -f "$LOG/$f.log" ] && awk -v f="$f" '/rel err/ { for (i = 1; i < NF; i++) if ($i == "err") {
        v = $(i + 1) + 0; n++; if (v >= m) { m = v; w = $0 } } }
      END { if (n) printf "-- %s: %d comparisons, worst: %s\n", f, n, substr(w, 1, 110) }' "$LOG/$f.log"
  done
  [ -f "$LOG/parity.log" ] && grep -o "kernel coverage: .*" "$LOG/parity.log" | cut -c1-400
  printf '%-16s %-8s %6s  %s\n' STEP STATUS SECS NOTE
  for i in "${!NAMES[@]}"; do
    printf '%-16s %-8s %6s  %s\n' "${NAMES[$i]}" "${STATES[$i]}" "${SECS[$i]}" "${NOTES[$i]}"
  done
} | tee "$LOG/summary.txt"
# The device tool returns at most 8 files: pack every log into one archive and leave only the
# archive and the summary in $OUT.
if tar -czf "$OUT/gpu-check-logs.tgz" -C "$OUT" gpu-check 2>/dev/null; then
  cp "$LOG/summary.txt" "$OUT/summary.txt"
  rm -rf "$LOG" "$OUT/nvrtc-lib" "$OUT/ptx-cache"
fi
exit 0
