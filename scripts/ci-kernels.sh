#!/usr/bin/env bash
# CI step: compile every CUDA kernel through NVRTC (from NVIDIA's PyPI wheels; no GPU, driver
# or toolkit needed) and report ptxas resources. A kernel that does not compile fails CI.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(bash scripts/install-nvrtc.sh "${MEDVAE_NVRTC_DIR:-/opt/nvrtc}")"
cargo build --release -p medvae-fast
./target/release/medvae-fast kernels compile --arch sm_80 --arch sm_90
