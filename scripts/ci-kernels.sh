#!/usr/bin/env bash
# CI step: compile every CUDA kernel through NVRTC (from NVIDIA's PyPI wheels; no GPU, driver
# or toolkit needed) and report ptxas resources. A kernel that does not compile fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."
# nvdisasm is optional: without it only the SASS report below is skipped.
eval "$(bash scripts/install-nvrtc.sh "${MEDVAE_NVRTC_DIR:-/opt/nvrtc}" --with-nvdisasm)"
cargo build --release -p medvae-fast
./target/release/medvae-fast kernels compile --arch sm_80 --arch sm_90
# The main-loop instruction mix of the tensor-core GEMM kernels (a report, not a gate: the
# count depends on the ptxas release). Issue-bound loops show here before any card runs them.
if [ -n "${MEDVAE_NVDISASM:-}" ]; then
  echo "== main loops of the tensor-core kernels (sm_90 SASS)"
  ./target/release/medvae-fast kernels compile --arch sm_90 --sass \
    --module conv_bf16 --module conv_wgmma --module gemm_bf16 | grep -B1 "main loop"
fi
